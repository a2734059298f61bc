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
    from airflow_provider_kling.records import RequestRecord
    from airflow_provider_kling.resume import SubmitOnce
    from airflow_provider_kling.spend import Spend
    from airflow_provider_kling.store import VideoStore
    from airflow_provider_kling.task_wait import TaskWaiter
    from airflow_provider_kling.wait import EndInTriggerer


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
    :param budget_reserved_by: the task id of a film's reservation
        (:class:`~airflow_provider_kling.operators.film_budget.KlingFilmBudgetOperator`, as a
        storyboard makes it): this shot spends the reservation that task made for it before the
        film's first shot was paid, instead of reserving its own. Needs ``budget``.
    :param max_paid_submits: the most generations this task pays for across all of its tries (a
        model that keeps failing is not paid for again and again by retries); ``None`` for no cap.
    :param lineage_prompt: put the prompt itself in the OpenLineage run facet; by default only its
        SHA-256 is there.
    :param destination: store the video here once it is ready (a local path or an
        ``ObjectStoragePath`` URI such as ``s3://bucket/x.mp4``), as
        :class:`~airflow_provider_kling.transfers.kling_to_storage.KlingVideoToStorageOperator`
        does: whole or not at all, its ``uri``, ``size_bytes`` and ``sha256`` in the result's
        ``stored``. One task then generates and stores. ``{request_id}`` in it is replaced by the
        request's id. Needs ``wait_for_completion``. Templated.
    :param storage_conn_id: the Airflow connection of the destination's object store. Templated.
    :param overwrite: replace an existing ``destination``; refused by default. An existing
        ``destination`` (without ``{request_id}``), a storage connection that does not exist, or a
        local folder that cannot be made or written is refused before the paid submit.
    :param verify: what a stored video must be besides playable (it always must be: a web page or
        a file FFmpeg cannot decode is refused, and a retry fetches it again without paying):
        ``"warn"`` (default) stores a video whose aspect ratio or duration is not the one asked
        for, says so in the log, the ``kling.shape_mismatch`` metric and the facts' ``mismatch``;
        ``"strict"`` refuses it and fails the task (``KlingVideoShapeError``, never retried).
    :param poster: store a poster frame (``<name>.jpg``, a frame a third of the way in) beside the
        stored video; its URI is ``stored["poster"]``.
    :param finish_in_triggerer: end the task in the triggerer once the video is ready (and stored,
        with ``destination``), as Airflow's ``end_from_trigger`` does: a generation then costs one
        worker run, the submit. Needs ``deferrable`` and ``wait_for_completion``. Every other end
        (a failure, a timeout) still resumes on a worker, and so does a success when a listener is
        registered (OpenLineage) or the task has outlets, which only a worker run reports.
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
        "destination",
        "storage_conn_id",
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
        budget_reserved_by: str | None = None,
        max_paid_submits: int | None = None,
        lineage_prompt: bool = False,
        destination: str | None = None,
        storage_conn_id: str | None = None,
        overwrite: bool = False,
        verify: Literal["warn", "strict"] = "warn",
        poster: bool = True,
        finish_in_triggerer: bool = False,
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
        self.budget_reserved_by = budget_reserved_by
        self.max_paid_submits = max_paid_submits
        self.lineage_prompt = lineage_prompt
        self.destination = destination
        self.storage_conn_id = storage_conn_id
        self.overwrite = overwrite
        self.verify = verify
        self.poster = poster
        self.finish_in_triggerer = finish_in_triggerer
        _check_layout(self)
        #: What lineage says of this try's generation (``lineage.generation_facts``), once submitted.
        self._lineage: dict[str, Any] | None = None
        self._cost: Any = None
        #: What this try stored (``stored``: where, and the video's facts), for lineage.
        self._stored: dict[str, Any] | None = None
        #: The shape the input asks for (``duration``, ``aspect_ratio``), to check the video against.
        self._expect: dict[str, Any] | None = None

    @property
    def result_xcom_keys(self) -> tuple[str, ...]:
        """Where the "Kling video" link finds the result: XCom ``result``, when the task waits for it."""
        return ("result",) if self.wait_for_completion else ()

    @cached_property
    def waiter(self) -> TaskWaiter:
        """How this task waits (read when it runs, once its fields are rendered)."""
        from airflow_provider_kling.task_wait import TaskWaiter
        from airflow_provider_kling.wait import RequestWait
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
        from airflow_provider_kling.worker_run import timed

        with timed(self.log, lambda: self.spend):  # where this run spends its time: a log line, kling.worker_run.*
            return self._submit_and_wait(context)

    def _submit_and_wait(self, context: Context) -> str:
        from airflow_provider_kling.worker_run import load_run_modules, phase

        load_run_modules()
        from airflow_provider_kling.lineage import generation_facts
        from airflow_provider_kling.media import ExpectedShape
        from airflow_provider_kling.take import push_take

        with phase("checks"):
            body = self.build_input()
            if self.budget_reserved_by:
                from airflow_provider_kling.film import film_shot

                self.spend.film_shot = film_shot(context, str(self.budget_reserved_by), self.task_id)
            expect = ExpectedShape.of_input(body)
            self._expect = expect.to_dict() if expect is not None else None
        with phase("connection"):
            _ = self.hook.target  # read once, here: the submit and the budget use it
        request_id = self._submit_or_resume(context, body)
        with phase("record"):
            context["ti"].xcom_push(key="request_id", value=request_id)
            push_take(context["ti"], self.model, request_id, body, waits=self.wait_for_completion)
        self._lineage = generation_facts(
            model=self.model, request_id=request_id, body=body, share_prompt=self.lineage_prompt
        )
        if not self.wait_for_completion:
            self._submission(context).handed_off(request_id)  # the request goes on: its record stays
            return request_id
        from airflow_provider_kling.wait_plan import WaitLimits

        waiter = self.waiter
        wait = waiter.start(request_id, WaitLimits.starting(time.time(), self.timeout, self.queue_timeout))
        with waiter.exits(context, request_id):
            if self.deferrable:
                end = self._end_in_triggerer()
                # A later try must tell a task the triggerer ended from one stopped before it deferred.
                marks = self._submission(context).ends_in_triggerer if end is not None and self.resume else None
                carry = {"lineage": self._lineage, "expect": self._expect}
                with phase("deferral"):
                    result = waiter.check_then_defer(context, wait, carry=carry, end_task=end, before_defer=marks)
            else:
                result = waiter.on_worker(wait)
        return self._finish(context, result)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger fired: return the ``request_id``, or raise its typed error."""
        from airflow_provider_kling.triggers.kling import result_from_event  # the trigger module is not parse-cheap

        self.__dict__.pop("_submit_once", None)  # a resumed run reads the record anew (dag.test resumes in-process)
        carried = event.get("carry") if isinstance(event, dict) else None
        self._lineage = carried.get("lineage") if isinstance(carried, dict) else None
        self._expect = carried.get("expect") if isinstance(carried, dict) else None
        counted = isinstance(event, dict) and event.get("counted") is True  # dag.test(): the trigger ended it
        return self._finish(context, result_from_event(event), counted=counted)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the ``kling_generation`` run facet (model, request, input fingerprint, seconds, cost)."""
        from airflow_provider_kling.lineage import generation_lineage

        return generation_lineage(self._lineage, self._cost, stored=self._stored)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after the trigger; an Airflow deferral timeout or a trigger failure is an exit too."""
        if self.finish_in_triggerer and self.resume:  # this try ends here, on a worker, not in the triggerer
            self._submission(context).resumed_on_worker()
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
        """Resume an earlier try's request, else check where the video will land, then pay and record it."""
        store = self.video_store
        return self._submission(context).submit_or_resume(body, before_paying=store.check if store else None)

    def _submission(self, context: Context) -> SubmitOnce:
        from airflow_provider_kling.resume import SubmitOnce

        return SubmitOnce.of_this_try(self, context, lambda: self._request_record(context) if self.resume else None)

    @property
    def spend(self) -> Spend:
        """This task's budget and metrics."""
        return self.waiter.spend

    def _request_record(self, context: Context) -> RequestRecord:
        from airflow_provider_kling.records import request_record

        return request_record(context)

    #: What the task returns, and so what a trigger that ends it pushes as ``return_value``.
    _returns: ClassVar[Literal["request_id", "result"]] = "request_id"

    @property
    def video_store(self) -> VideoStore | None:
        """Where the video goes (rendered ``destination``), if anywhere."""
        from airflow_provider_kling.store import VideoStore

        return VideoStore.of_task(self) if self.destination else None

    def _end_in_triggerer(self) -> EndInTriggerer | None:
        """How the trigger ends this task once the video is ready, or ``None`` for a worker run (and why)."""
        from airflow_provider_kling.task_wait import end_in_triggerer

        return (
            end_in_triggerer(self, self._returns if self.do_xcom_push else None) if self.finish_in_triggerer else None
        )

    def _finish(self, context: Context, result: KlingResult, *, counted: bool = False) -> str:
        self.waiter.video_ready = result["request_id"]
        submission = self._submission(context)
        # Counted before the store: the request is billed whether or not its video lands here, and
        # a retry after a failed store (which fetches the video again) must not count it twice.
        if not counted and submission.first_to_count(result["request_id"]):
            self.waiter.done(result)
        store = self.video_store
        if store is not None and not result.get("stored"):
            result["stored"] = store.save_once(
                self.hook, result, submission.delivered_stored(result["request_id"]), self
            )
        if result.get("stored"):
            from airflow_provider_kling.store import describe_asset_events

            describe_asset_events(self, context, result["stored"])
        self._stored = result.get("stored") or None
        self._cost = result.get("cost")
        context["ti"].xcom_push(key="result", value=result)
        submission.finished(result.get("stored"))
        self.log.info("Kling request %s succeeded: %s", result["request_id"], result["video_url"])
        return str(result["request_id"])


def _check_layout(task: KlingTextToVideoOperator) -> None:
    """``destination`` and ``finish_in_triggerer`` need a task that waits (in the triggerer, for the latter)."""
    problem = None
    if task.budget_reserved_by and not task.budget:
        problem = "budget_reserved_by needs budget (the budget the film was reserved from)"
    elif task.destination and not task.wait_for_completion:
        problem = "destination needs wait_for_completion=True (the task stores the video it waited for)"
    elif task.finish_in_triggerer and not (task.wait_for_completion and task.deferrable):
        problem = "finish_in_triggerer needs wait_for_completion=True and deferrable=True (the trigger ends the task)"
    if problem:
        from airflow_provider_kling.exceptions import KlingInputError

        raise KlingInputError(f"{task.task_id}: {problem}")
