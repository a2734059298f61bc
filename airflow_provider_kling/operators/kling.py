"""Operator that submits a Kling generation to RunComfy (and optionally waits for the video)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_kling.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    KLING_TEXT_TO_VIDEO_MODEL,
)
from airflow_provider_kling.links.kling import KlingVideoLink
from airflow_provider_kling.waiting import KlingWaitingMixin, default_deferrable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.models import KlingResult
    from airflow_provider_kling.resume import RequestRecord


class KlingTextToVideoOperator(KlingWaitingMixin, BaseOperator):
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

    @property
    def result_xcom_keys(self) -> tuple[str, ...]:
        """Where the "Kling video" link finds the result: XCom ``result``, when the task waits for it."""
        return ("result",) if self.wait_for_completion else ()

    @property
    def wait_interval(self) -> float:
        return float(self.poll_interval)

    def retry_waits_for_same_request(self) -> bool:
        return self.resume

    def request_id_on_resume(self, context: Context) -> str | None:
        ti = context["ti"]
        value = ti.xcom_pull(task_ids=ti.task_id, key="request_id", map_indexes=ti.map_index)
        return value if isinstance(value, str) else None

    def build_input(self) -> dict[str, Any]:
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
        if not self.wait_for_completion:
            self._forget_request(context)
            return request_id
        from airflow_provider_kling.wait_plan import WaitLimits

        with self._every_exit_cancels(context, request_id):
            limits = WaitLimits.starting(time.time(), self.timeout, self.queue_timeout)
            if self.deferrable:
                result = self.check_then_defer(context, request_id, self.with_execution_timeout(context, limits))
            else:
                result = self.wait_on_worker(request_id, self.wait_plan(limits))
        return self._finish(context, result)

    def _submit_or_resume(self, context: Context, body: dict[str, Any]) -> str:
        """Resume the request of an earlier try when it can be, else submit (and record it at once)."""
        from airflow_provider_kling.exceptions import KlingSubmitOutcomeUnknownError
        from airflow_provider_kling.resume import input_fingerprint  # at run time: see tests/test_parse_cost.py

        fingerprint = input_fingerprint(self.model, body)
        record = self._request_record(context) if self.resume else None
        resumed = self._resumable_request(record.load(), fingerprint) if record is not None else None
        if resumed is not None:
            return resumed
        if record is not None:  # a worker killed from here to the save below leaves this mark
            record.save({"fingerprint": fingerprint, "submitting_since": time.time()})
        try:
            request_id = self.hook.submit(body, model=self.model).request_id
        except KlingSubmitOutcomeUnknownError:
            raise  # the mark stays: a later run must not pay again blindly either
        except BaseException:
            if record is not None:
                record.forget()  # RunComfy certainly created nothing
            raise
        if record is not None:
            record.save({"request_id": request_id, "fingerprint": fingerprint})
        self.log.info("Submitted Kling request %s to %s", request_id, self.model)
        return request_id

    def _request_record(self, context: Context) -> RequestRecord:
        from airflow_provider_kling.resume import request_record

        return request_record(context)

    def _resumable_request(self, recorded: dict[str, Any] | None, fingerprint: str) -> str | None:
        """The request an earlier try submitted, if it is queued, running or succeeded."""
        from airflow_provider_kling.exceptions import KlingNotFoundError
        from airflow_provider_kling.states import ResultStatus

        recorded = recorded or {}
        request_id = str(recorded.get("request_id") or "")
        if not request_id:
            self._check_no_submit_was_interrupted(recorded, fingerprint)
            return None
        if recorded.get("fingerprint") != fingerprint:
            self.log.warning("An earlier try submitted Kling request %s for another input; submitting anew", request_id)
            return None
        try:
            status = self.hook.get_status(request_id)
        except KlingNotFoundError:
            self.log.warning("Kling request %s of an earlier try has expired; submitting anew", request_id)
            return None
        if not status.status.is_finished:
            self.log.info(
                "Resuming Kling request %s (%s) submitted by an earlier try: not submitting (nor paying) again",
                request_id,
                status.status.value,
            )
            return request_id
        result = self.hook.get_result(request_id)
        if result.status is ResultStatus.SUCCEEDED:
            self.log.info("Kling request %s of an earlier try already succeeded: using it", request_id)
            return request_id
        self.log.warning(
            "Kling request %s of an earlier try ended %s; submitting anew", request_id, result.status.value
        )
        return None

    def _check_no_submit_was_interrupted(self, recorded: dict[str, Any], fingerprint: str) -> None:
        from airflow_provider_kling.exceptions import KlingSubmitOutcomeUnknownError

        since = recorded.get("submitting_since")
        if since is None or recorded.get("fingerprint") != fingerprint:
            return
        when = datetime.fromtimestamp(float(since), tz=timezone.utc).isoformat(timespec="seconds")
        if self.if_submit_interrupted == "submit":
            self.log.warning(
                "An earlier try was stopped while its submit was in flight (since %s): it may have created a "
                "request that is billed; submitting anew, as if_submit_interrupted='submit' asks",
                when,
            )
            return
        raise KlingSubmitOutcomeUnknownError(
            f"An earlier try of this task was stopped (its worker died) while its submit to {self.model} was in "
            f"flight, since {when}: a request may exist and be billed, and RunComfy offers no way to find it. "
            "Not submitting again, so that you do not pay twice: check your RunComfy request history, then run "
            "the task again with if_submit_interrupted='submit' (or resume=False) to generate anew."
        )

    def _forget_request(self, context: Context) -> None:
        """Drop the record once the task succeeds, so that clearing it later generates anew."""
        if not self.resume:
            return
        try:
            self._request_record(context).forget()
        except Exception as err:  # noqa: BLE001 - the video is done; a stale record only costs a status call
            self.log.warning("Could not drop the record of the submitted Kling request: %s", err)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger fired: return the ``request_id``, or raise its typed error."""
        from airflow_provider_kling.triggers.kling import result_from_event  # the trigger module is not parse-cheap

        return self._finish(context, result_from_event(event))

    def _finish(self, context: Context, result: KlingResult) -> str:
        context["ti"].xcom_push(key="result", value=result)
        self._forget_request(context)
        self.log.info("Kling request %s succeeded: %s", result["request_id"], result["video_url"])
        return str(result["request_id"])
