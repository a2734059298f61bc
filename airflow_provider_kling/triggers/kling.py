"""Trigger that waits for a RunComfy generation request in Airflow's triggerer."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kling.constants import DEFAULT_CONN_ID, DEFAULT_MAX_POLL_INTERVAL, DEFAULT_POLL_INTERVAL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_kling.hooks.kling import KlingAsyncHook
    from airflow_provider_kling.models import RequestStatus, StatusResponse

#: ``status`` values of the events :class:`KlingRequestTrigger` yields.
EVENT_SUCCESS = "success"
EVENT_STATUSES = (EVENT_SUCCESS, "failed", "cancelled", "timeout", "error")
#: Queue positions up to this one are polled through the result call (the position no longer
#: changes the polling interval much); further back, through the status call.
NEAR_FRONT = 5
#: Whether this Airflow calls a trigger's ``on_kill`` when a user stops a deferred task (3.3+).
TRIGGER_ON_KILL = "on_kill" in vars(BaseTrigger)


class KlingRequestTrigger(BaseTrigger):
    """
    Poll a RunComfy request until it finishes, then fire one event with its outcome.

    The event is ``{"status": "success", "request_id", "message", "result"}`` with the
    JSON-able result summary, or ``{"status": "failed" | "cancelled" | "timeout" | "error",
    "request_id", "message", "error"}`` where ``error`` rebuilds the typed exception
    (:meth:`~airflow_provider_kling.exceptions.KlingError.from_event`).

    :param request_id: the RunComfy request to wait for.
    :param kling_conn_id: the ``kling`` connection; only its id is serialized, never the token.
    :param poll_interval: seconds between status calls.
    :param max_poll_interval: while the request is far back in the queue, status calls are
        ``poll_interval`` times its queue position apart, at most this many seconds.
    :param deadline: absolute time (Unix seconds) after which waiting stops: a queued request is
        cancelled and the event is ``timeout``. Absolute, so a triggerer restart does not extend it.
    :param queue_deadline: absolute time (Unix seconds) after which a request still queued is
        cancelled (free) and the event is ``timeout``; a running request is not bound by it.
    :param include_cost: ask the result call for the request's ``cost``.
    :param cancel_on_kill: cancel a queued request when a user marks the task failed, success
        or clears it (Airflow 3.3+ calls ``on_kill``; a triggerer restart does not).
    :param hook_params: extra keyword arguments for :class:`KlingAsyncHook` (timeouts, retries).
    :param last_status: the status the task saw just before deferring (``in_queue`` or
        ``in_progress``); with ``last_queue_position`` and ``last_polled_at`` (Unix seconds), the
        trigger's first poll comes when that poll says the next is due, instead of repeating it at once.
    :param last_queue_position: the queue position the task saw with ``last_status``.
    :param last_polled_at: when the task saw ``last_status``.
    """

    def __init__(
        self,
        request_id: str,
        kling_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        deadline: float | None = None,
        queue_deadline: float | None = None,
        include_cost: bool = False,
        cancel_on_kill: bool = True,
        hook_params: dict[str, Any] | None = None,
        last_status: str | None = None,
        last_queue_position: int | None = None,
        last_polled_at: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.request_id = request_id
        self.kling_conn_id = kling_conn_id
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.deadline = deadline
        self.queue_deadline = queue_deadline
        self.include_cost = include_cost
        self.cancel_on_kill = cancel_on_kill
        self.hook_params = dict(hook_params or {})
        self.last_status = last_status
        self.last_queue_position = last_queue_position
        self.last_polled_at = last_polled_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "kling_conn_id": self.kling_conn_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "deadline": self.deadline,
                "queue_deadline": self.queue_deadline,
                "include_cost": self.include_cost,
                "cancel_on_kill": self.cancel_on_kill,
                "hook_params": self.hook_params,
                "last_status": self.last_status,
                "last_queue_position": self.last_queue_position,
                "last_polled_at": self.last_polled_at,
            },
        )

    def _hook(self) -> KlingAsyncHook:
        from airflow_provider_kling.hooks.kling import KlingAsyncHook

        return KlingAsyncHook(self.kling_conn_id, **self.hook_params)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_kling.deadlines import WaitLimits, poll_seconds
        from airflow_provider_kling.exceptions import KlingError, KlingRequestTimeout

        rid = self.request_id
        limits = WaitLimits(self.deadline, self.queue_deadline)
        if self.cancel_on_kill and not TRIGGER_ON_KILL:
            self.log.info(
                "This Airflow does not tell triggers when a user stops a deferred task (Airflow 3.3+ does): "
                "stopping this task will not cancel Kling request %s; `kling cancel %s` does",
                rid,
                rid,
            )
        try:
            async with self._hook() as hook:
                seen = self._seen_by_task()
                # The task logged the state it handed over (on the worker, where a line is cheap).
                progress = _ProgressLog(self, logged=seen[0] if seen else None)
                state, position = seen if seen else (None, None)
                polled_at = self.last_polled_at or 0.0
                by_result = False
                while True:
                    if state is not None:
                        # Far back in the queue, the status call tells the position (and so how
                        # long to sleep); nearer the front, the result call alone says whether it
                        # is done. The next poll is due counted from the start of the last one, so
                        # a slow answer does not push every later poll back.
                        by_result = by_result or _near_front(state, position)
                        due = polled_at + poll_seconds(state, position, self.poll_interval, self.max_poll_interval)
                        await asyncio.sleep(limits.sleep_seconds(max(due - time.time(), 0.0)))
                    polled_at = time.time()
                    state, position, result = await self._poll(hook, by_result)
                    if result is not None:
                        # Airflow logs the event itself ("Trigger fired event"): its message says
                        # how long the wait took, so the outcome needs no line of its own here.
                        yield TriggerEvent(outcome_event(rid, result, waited=progress.waited()))
                        return
                    progress.observe(state, position)
                    limit = limits.passed(state)
                    if limit is not None:
                        try:
                            await hook.give_up(rid, limit)
                        except KlingRequestTimeout as timeout:
                            yield TriggerEvent(error_event(rid, "timeout", timeout))
                            return
                        limits = limits.without_queue_limit()
        except KlingError as err:
            self.log.error("Waiting for Kling request %s failed: %s", rid, err)
            yield TriggerEvent(error_event(rid, "error", err))

    def _seen_by_task(self) -> tuple[RequestStatus, int | None] | None:
        """What the task saw before deferring, if it saw the request still waiting."""
        from airflow_provider_kling.models import RequestStatus

        if self.last_status not in (RequestStatus.IN_QUEUE.value, RequestStatus.IN_PROGRESS.value):
            return None
        return RequestStatus(self.last_status), self.last_queue_position

    async def _poll(self, hook: KlingAsyncHook, by_result: bool) -> tuple[RequestStatus, int | None, Any]:
        """
        One poll: the state, the queue position (status call only) and the final result, if any.

        The result call answers ``in_queue``/``in_progress`` until the request is done, then the
        result itself, so polling it directly saves the separate call after the last status.
        """
        from airflow_provider_kling.models import RequestStatus, ResultStatus

        if by_result:
            result = await hook.get_result(self.request_id, include_cost=self.include_cost)
            if result.status is ResultStatus.CANCELLED:
                return RequestStatus.CANCELLED, None, result
            if result.status.is_terminal:
                return RequestStatus.COMPLETED, None, result
            return RequestStatus(result.status.value), None, None
        status = await hook.get_status(self.request_id)
        if status.status.is_finished:
            return status.status, None, await hook.get_result(self.request_id, include_cost=self.include_cost)
        return status.status, status.queue_position, None

    async def on_kill(self) -> None:
        """Cancel the request when a user stops the task (not on a triggerer restart)."""
        if self.cancel_on_kill:
            async with self._hook() as hook:
                await hook.cancel_best_effort(self.request_id)


def hand_off(log: Any, request_id: str, status: StatusResponse, polled_at: float) -> dict[str, Any]:
    """
    Log, on the worker, the state a task hands to its trigger; return the trigger's ``last_*`` arguments.

    :param status: the task's last status answer, made at ``polled_at`` (Unix seconds).
    """
    log.info(
        "Kling request %s is %s: waiting in the triggerer",
        request_id,
        describe_state(status.status, status.queue_position),
    )
    return {
        "last_status": status.status.value,
        "last_queue_position": status.queue_position,
        "last_polled_at": polled_at,
    }


def describe_state(state: RequestStatus, queue_position: int | None) -> str:
    """``in_queue at queue position 3``, ``in_progress``: a state as the logs name it."""
    return f"{state.value} at queue position {queue_position}" if queue_position is not None else state.value


def _near_front(state: RequestStatus, position: int | None) -> bool:
    """Whether to poll the result call: running, or queued near the front (see :data:`NEAR_FRONT`)."""
    from airflow_provider_kling.models import RequestStatus

    return state is not RequestStatus.IN_QUEUE or (position or 0) <= NEAR_FRONT


class _ProgressLog:
    """
    Logs each waiting state once (with queue position and elapsed time), not a line per poll.

    In a triggerer with thousands of waits a log line costs more than a poll, so the final state
    is left to the event's message.
    """

    def __init__(self, trigger: KlingRequestTrigger, logged: RequestStatus | None = None) -> None:
        self._trigger = trigger
        self._started = time.monotonic()
        self._last = logged

    def observe(self, state: RequestStatus, queue_position: int | None) -> None:
        if state is not self._last:
            self._last = state
            self._trigger.log.info(
                "Kling request %s is %s (%.0fs waited)",
                self._trigger.request_id,
                describe_state(state, queue_position),
                self.waited(),
            )

    def waited(self) -> float:
        """Seconds since the wait began."""
        return time.monotonic() - self._started


def outcome_event(request_id: str, result: Any, *, waited: float) -> dict[str, Any]:
    """The event for a finished request's result (a :class:`ResultResponse`), ``waited`` seconds in."""
    from airflow_provider_kling.exceptions import KlingError, KlingRequestCancelled, KlingRequestFailed

    try:
        summary = result.require_video(request_id)
    except KlingRequestFailed as err:
        return error_event(request_id, "failed", err)
    except KlingRequestCancelled as err:
        return error_event(request_id, "cancelled", err)
    except KlingError as err:
        return error_event(request_id, "error", err)
    return {
        "status": EVENT_SUCCESS,
        "request_id": request_id,
        "message": f"Kling request {request_id} succeeded after {waited:.0f}s",
        "result": summary,
    }


def error_event(request_id: str, status: str, err: Any) -> dict[str, Any]:
    return {"status": status, "request_id": request_id, "message": str(err), "error": err.to_event()}


def result_from_event(event: Any) -> dict[str, Any]:
    """
    Turn a :class:`KlingRequestTrigger` event into the task's result, or raise its typed error.

    Anything that is not an event this trigger sends fails loudly: a cancelled or unknown
    outcome must never turn a task green.
    """
    from airflow_provider_kling.exceptions import KlingError

    if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
        raise KlingError(f"Unexpected event from KlingRequestTrigger: {str(event)[:300]!r}")
    if event["status"] == EVENT_SUCCESS:
        result = event.get("result")
        if not isinstance(result, dict) or not result.get("video_url"):
            raise KlingError(f"KlingRequestTrigger reported success without a video: {str(event)[:300]!r}")
        return result
    error = event.get("error")
    if isinstance(error, dict):
        raise KlingError.from_event(error)
    raise KlingError(str(event.get("message") or f"Kling request ended with status {event['status']}"))
