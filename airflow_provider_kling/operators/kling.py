"""Operator that submits a Kling generation to RunComfy (and optionally waits for the video)."""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_kling.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    KLING_TEXT_TO_VIDEO_MODEL,
    default_deferrable,
)
from airflow_provider_kling.links.kling import KlingVideoLink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingResult, ValidBody
    from airflow_provider_kling.resume import RequestRecord, SubmitOnce
    from airflow_provider_kling.spend import Spend
    from airflow_provider_kling.wait import TaskWaiter


class KlingTextToVideoOperator(BaseOperator):
    """
    Submit a Kling 1.6 Pro text-to-video generation to RunComfy; return its ``request_id``.

    The input is validated before any request is sent. With ``wait_for_completion`` the task also
    waits for the video (in the triggerer when ``deferrable``, holding no worker slot) and pushes
    the result summary (``request_id``, ``status``, ``video_url``, ``output``, ...) as XCom
    ``result``; the ``request_id`` is always the return value.

    :param prompt: what the video shows (1 to 2,500 characters). Templated.
    :param duration: seconds of video, 5 or 10; billing is per second. Templated.
    :param aspect_ratio: ``"16:9"``, ``"9:16"`` or ``"1:1"``. Templated.
    :param negative_prompt: what the video should avoid (up to 2,500 characters). Templated.
    :param cfg_scale: prompt strength from 0 to 1. Templated.
    :param model: RunComfy model path. Inputs of other models than Kling 1.6 Pro text-to-video
        are sent as given in ``input``. Templated.
    :param input: extra input fields, merged over the ones above; for other models, the whole
        input. Templated.
    :param kling_conn_id: the ``kling`` connection holding the API base URL and token.
    :param wait_for_completion: wait for the video instead of returning once submitted.
    :param deferrable: wait in Airflow's triggerer, freeing the worker slot. Defaults to
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks while waiting.
    :param max_poll_interval: while the request is far back in the queue, checks are
        ``poll_interval`` times its queue position apart, at most this many seconds.
    :param timeout: seconds to wait for the video; past it a queued request is cancelled and
        the task fails. When deferred, ``execution_timeout`` is enforced the same way (Airflow
        does not enforce it while a task is deferred).
    :param queue_timeout: seconds the request may stay queued before it is cancelled (free: a
        queued request is not billed) and the task fails; ``None`` for no separate limit.
    :param resume: on a retry, resume the request an earlier try of this task submitted when it is
        queued, running or succeeded (same model and input), instead of paying for a new one.
    :param if_submit_interrupted: what a retry does when an earlier try was stopped (its worker
        killed) while its submit was in flight, so that a request may exist, be billed, and cannot
        be found: ``"fail"`` (default) fails the task saying so, ``"submit"`` pays for a new one.
    :param include_cost: ask RunComfy for the request's cost in the result.
    :param cancel_on_kill: cancel a queued request when the task is stopped by a user. Whatever
        this says, a wait that ends without a video (a timeout, or an error on the last try)
        cancels a queued request that nobody would wait for any more.
    :param hook_params: extra keyword arguments for the hook (timeouts, retries).
    :param budget: the budget of the ``kling`` connection this generation spends from: checked and
        reserved in one atomic step before the paid submit, and refused with
        ``KlingBudgetExceededError`` (never retried) when a cap would be passed. Templated.
    :param max_paid_submits: the most generations this task pays for across all of its tries (a
        model that keeps failing is not paid for again and again by retries); ``None`` for no cap.
    :param lineage_prompt: put the prompt itself in the OpenLineage run facet; by default only its
        SHA-256 is there.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "duration",
        "aspect_ratio",
        "negative_prompt",
        "cfg_scale",
        "model",
        "input",
        "kling_conn_id",
        "budget",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"input": "json"}
    ui_color = "#f0e4ff"
    operator_extra_links = (KlingVideoLink(),)

    def __init__(
        self,
        *,
        prompt: str | None = None,
        duration: int | str = 5,
        aspect_ratio: str = "16:9",
        negative_prompt: str = "",
        cfg_scale: float | str = 0.5,
        model: str = KLING_TEXT_TO_VIDEO_MODEL,
        input: dict[str, Any] | None = None,
        kling_conn_id: str = DEFAULT_CONN_ID,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        queue_timeout: float | None = None,
        resume: bool = True,
        if_submit_interrupted: Literal["fail", "submit"] = "fail",
        include_cost: bool = False,
        cancel_on_kill: bool = True,
        hook_params: dict[str, Any] | None = None,
        budget: str | None = None,
        max_paid_submits: int | None = None,
        lineage_prompt: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt
        self.duration = duration
        self.aspect_ratio = aspect_ratio
        self.negative_prompt = negative_prompt
        self.cfg_scale = cfg_scale
        self.model = model
        self.input = input
        self.kling_conn_id = kling_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.timeout = timeout
        self.queue_timeout = queue_timeout
        self.resume = resume
        self.if_submit_interrupted = if_submit_interrupted
        self.include_cost = include_cost
        self.cancel_on_kill = cancel_on_kill
        self.hook_params = hook_params or {}
        self.budget = budget
        self.max_paid_submits = max_paid_submits
        self.lineage_prompt = lineage_prompt
        #: What lineage says of this try's generation (``lineage.generation_facts``), once submitted.
        self._lineage: dict[str, Any] | None = None
        self._cost: Any = None

    @property
    def result_xcom_keys(self) -> tuple[str, ...]:
        """Where the "Kling video" link finds the result: XCom ``result``, when the task waits for it."""
        return ("result",) if self.wait_for_completion else ()

    @cached_property
    def waiter(self) -> TaskWaiter:
        """How this task waits (read when it runs, once its fields are rendered)."""
        from airflow_provider_kling.wait import RequestWait, TaskWaiter
        from airflow_provider_kling.wait_plan import PollSettings, WaitPlan

        options = RequestWait(
            request_id="",
            plan=WaitPlan(PollSettings(float(self.poll_interval), float(self.max_poll_interval))),
            kling_conn_id=self.kling_conn_id,
            include_cost=self.include_cost or self.budget is not None,  # a budget settles what was spent
            cancel_on_kill=self.cancel_on_kill,
            hook_params=self.hook_params,
        )
        return TaskWaiter(self, options, retry_resumes=self.resume, budget=self.budget, model=self.model)

    @property
    def hook(self) -> KlingHook:
        return self.waiter.hook

    def build_input(self) -> ValidBody:
        """The validated JSON body to submit.

        :raises KlingInputError: naming each bad field and what it allows.
        """
        from airflow_provider_kling.models import input_body

        fields = {
            "prompt": self.prompt,
            "duration": self.duration,
            "aspect_ratio": self.aspect_ratio,
            "negative_prompt": self.negative_prompt,
            "cfg_scale": self.cfg_scale,
        }
        return input_body(self.model, fields, self.input)

    def execute(self, context: Context) -> str:
        body = self.build_input()
        request_id = self._submit_or_resume(context, body)
        context["ti"].xcom_push(key="request_id", value=request_id)
        from airflow_provider_kling.lineage import generation_facts

        self._lineage = generation_facts(
            model=self.model, request_id=request_id, body=body, share_prompt=self.lineage_prompt
        )
        if not self.wait_for_completion:
            self._hand_off_request(context, request_id)
            return request_id
        from airflow_provider_kling.wait_plan import WaitLimits

        waiter = self.waiter
        wait = waiter.start(request_id, WaitLimits.starting(time.time(), self.timeout, self.queue_timeout))
        with waiter.exits(context, request_id):
            if self.deferrable:
                result = waiter.check_then_defer(context, wait, carry={"lineage": self._lineage})
            else:
                result = waiter.on_worker(wait)
        return self._finish(context, result)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger fired: return the ``request_id``, or raise its typed error."""
        from airflow_provider_kling.triggers.kling import result_from_event  # the trigger module is not parse-cheap

        carried = event.get("carry") if isinstance(event, dict) else None
        self._lineage = carried.get("lineage") if isinstance(carried, dict) else None
        return self._finish(context, result_from_event(event))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the ``kling_generation`` run facet (model, request, input fingerprint, seconds, cost)."""
        from airflow_provider_kling.lineage import generation_lineage

        return generation_lineage(self._lineage, self._cost)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after the trigger; an Airflow deferral timeout or a trigger failure is an exit too."""
        with self.waiter.exits(context, lambda: self._request_id_of_this_try(context)):
            return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """A user stopped the task (or its ``execution_timeout`` passed): the exit rule decides."""
        self.waiter.on_kill()

    def _request_id_of_this_try(self, context: Context) -> str | None:
        ti = context["ti"]
        value = ti.xcom_pull(task_ids=ti.task_id, key="request_id", map_indexes=ti.map_index)
        return value if isinstance(value, str) else None

    def _submit_or_resume(self, context: Context, body: ValidBody) -> str:
        """Resume the request of an earlier try when it can be, else submit (and record it at once)."""
        return self._submission(context).submit_or_resume(body)

    def _submission(self, context: Context) -> SubmitOnce:
        from airflow_provider_kling.resume import SubmitOnce

        record = self._request_record(context) if self.resume else None
        ti = context.get("ti")
        holder = "/".join(str(getattr(ti, key, "")) for key in ("dag_id", "run_id", "task_id", "map_index"))
        return SubmitOnce(
            self.hook,
            record,
            self.model,
            self.if_submit_interrupted,
            log=self.log,
            operator=self,
            spend=self.spend,
            holder=holder,
            max_paid_submits=self.max_paid_submits,
        )

    @property
    def spend(self) -> Spend:
        """This task's budget and metrics."""
        return self.waiter.spend

    def _request_record(self, context: Context) -> RequestRecord:
        from airflow_provider_kling.resume import request_record

        return request_record(context)

    def _hand_off_request(self, context: Context, request_id: str) -> None:
        """Submit only: the request goes on after this task, so the record stays, marked as handed off."""
        self._submission(context).handed_off(request_id)

    def _finish(self, context: Context, result: KlingResult) -> str:
        submission = self._submission(context)
        if submission.first_to_count(result["request_id"]):
            self.waiter.done(result)
        self._cost = result.get("cost")
        context["ti"].xcom_push(key="result", value=result)
        submission.finished()
        self.log.info("Kling request %s succeeded: %s", result["request_id"], result["video_url"])
        return str(result["request_id"])
