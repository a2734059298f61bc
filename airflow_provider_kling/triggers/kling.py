"""Trigger that waits for a RunComfy generation request in Airflow's triggerer."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kling.constants import DEFAULT_CONN_ID, DEFAULT_MAX_POLL_INTERVAL, DEFAULT_POLL_INTERVAL
from airflow_provider_kling.exceptions import (
    KlingError,
    KlingRequestCancelled,
    KlingRequestFailed,
    KlingUnusableVideoError,
    KlingWaitTimeout,
)
from airflow_provider_kling.states import RequestStatus
from airflow_provider_kling.untrusted import video_url_problem
from airflow_provider_kling.wait_plan import PollSettings, Seen, WaitLimits, WaitPlan

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_kling.hooks.kling import KlingAsyncHook
    from airflow_provider_kling.models import KlingResult, ResultResponse

#: ``status`` values of the events :class:`KlingRequestTrigger` yields.
EVENT_SUCCESS = "success"
EVENT_STATUSES = (EVENT_SUCCESS, "failed", "cancelled", "timeout", "error")
#: Whether this Airflow calls a trigger's ``on_kill`` when a user stops a deferred task (3.3+).
TRIGGER_ON_KILL = "on_kill" in vars(BaseTrigger)


class KlingRequestTrigger(BaseTrigger):
    """
    Poll a RunComfy request until it finishes, then fire one event with its outcome.

    The event is ``{"status": "success", "request_id", "message", "result"}`` with the
    :class:`~airflow_provider_kling.models.KlingResult`, or ``{"status": "failed" | "cancelled" |
    "timeout" | "error", "request_id", "message", "error"}`` where ``error`` rebuilds the typed
    exception (:meth:`~airflow_provider_kling.exceptions.KlingError.from_event`). It polls as the
    :class:`~airflow_provider_kling.wait_plan.WaitPlan` says, like every other waiter.

    :param request_id: the RunComfy request to wait for.
    :param kling_conn_id: the ``kling`` connection; only its id is serialized, never the token.
    :param poll_interval: seconds between polls.
    :param max_poll_interval: while the request is far back in the queue, polls are
        ``poll_interval`` times its queue position apart, at most this many seconds.
    :param deadline: absolute time (Unix seconds) after which waiting stops: a queued request is
        cancelled and the event is ``timeout``. Absolute, so a triggerer restart does not extend it.
    :param queue_deadline: absolute time (Unix seconds) after which a request still queued is
        cancelled (free) and the event is ``timeout``; a running request is not bound by it.
    :param include_cost: ask the result call for the request's ``cost``.
    :param cancel_on_kill: cancel a queued request when a user marks the task failed, success
        or clears it (Airflow 3.3+ calls ``on_kill``; a triggerer restart or a move to another
        triggerer does not).
    :param hook_params: extra keyword arguments for :class:`KlingAsyncHook` (timeouts, retries).
    :param last_status: the state the task saw just before deferring (``in_queue`` or
        ``in_progress``); with ``last_queue_position`` and ``last_polled_at`` (Unix seconds), the
        trigger's first poll comes when the plan says the next is due, instead of repeating it at once.
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

    @classmethod
    def continuing(
        cls,
        request_id: str,
        plan: WaitPlan,
        seen: Seen,
        *,
        kling_conn_id: str = DEFAULT_CONN_ID,
        include_cost: bool = False,
        cancel_on_kill: bool = True,
        hook_params: dict[str, Any] | None = None,
    ) -> KlingRequestTrigger:
        """The trigger that goes on with ``plan`` from a task's last poll (``seen``): the one way tasks defer."""
        return cls(
            request_id=request_id,
            kling_conn_id=kling_conn_id,
            poll_interval=plan.settings.interval,
            max_poll_interval=plan.settings.max_interval,
            deadline=plan.limits.deadline,
            queue_deadline=plan.limits.queue_deadline,
            include_cost=include_cost,
            cancel_on_kill=cancel_on_kill,
            hook_params=hook_params,
            last_status=seen.state.value,
            last_queue_position=seen.queue_position,
            last_polled_at=seen.at,
        )

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

    @property
    def plan(self) -> WaitPlan:
        """The rules of this wait, rebuilt from the serialized arguments."""
        return WaitPlan(
            PollSettings(self.poll_interval, self.max_poll_interval), WaitLimits(self.deadline, self.queue_deadline)
        )

    def seen_by_task(self) -> Seen | None:
        """What the task saw before deferring, if it saw the request still waiting."""
        if self.last_status not in (RequestStatus.IN_QUEUE.value, RequestStatus.IN_PROGRESS.value):
            return None
        return Seen(RequestStatus(self.last_status), self.last_queue_position, self.last_polled_at or 0.0)

    def _hook(self) -> KlingAsyncHook:
        from airflow_provider_kling.hooks.kling import KlingAsyncHook

        return KlingAsyncHook(self.kling_conn_id, **self.hook_params)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        rid = self.request_id
        if self.cancel_on_kill and not TRIGGER_ON_KILL:
            self.log.info(
                "This Airflow does not tell triggers when a user stops a deferred task (Airflow 3.3+ does): "
                "stopping this task will not cancel Kling request %s; `kling cancel %s` does",
                rid,
                rid,
            )
        seen = self.seen_by_task()
        # The task logged the state it handed over (on the worker, where a line is cheap).
        progress = _ProgressLog(self, logged=seen.state if seen else None)
        try:
            async with self._hook() as hook:
                result = await hook.follow(
                    rid, self.plan, seen=seen, include_cost=self.include_cost, on_progress=progress.observe
                )
        except KlingWaitTimeout as timeout:
            yield TriggerEvent(error_event(rid, "timeout", timeout))
            return
        except KlingError as err:
            self.log.error("Waiting for Kling request %s failed: %s", rid, err)
            yield TriggerEvent(error_event(rid, "error", err))
            return
        # Airflow logs the event itself ("Trigger fired event"): its message says how long the
        # wait took, so the outcome needs no line of its own here.
        yield TriggerEvent(outcome_event(rid, result, waited=progress.waited()))

    async def on_kill(self) -> None:
        """Cancel the request when a user stops the task (not on a triggerer restart)."""
        if self.cancel_on_kill:
            async with self._hook() as hook:
                await hook.cancel_best_effort(self.request_id)


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

    def observe(self, seen: Seen) -> None:
        if seen.state is not self._last and not seen.state.is_finished:
            self._last = seen.state
            self._trigger.log.info(
                "Kling request %s is %s (%.0fs waited)", self._trigger.request_id, seen.describe(), self.waited()
            )

    def waited(self) -> float:
        """Seconds since the wait began."""
        return time.monotonic() - self._started


def outcome_event(request_id: str, result: ResultResponse, *, waited: float) -> dict[str, Any]:
    """The event for a finished request's result, ``waited`` seconds in."""
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


def error_event(request_id: str, status: str, err: KlingError) -> dict[str, Any]:
    return {"status": status, "request_id": request_id, "message": str(err), "error": err.to_event()}


def result_from_event(event: Any) -> KlingResult:
    """
    Turn a :class:`KlingRequestTrigger` event into the task's result, or raise its typed error.

    Anything that is not an event this trigger sends fails loudly: a cancelled or unknown
    outcome must never turn a task green.
    """
    if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
        raise KlingError(f"Unexpected event from KlingRequestTrigger: {str(event)[:300]!r}")
    if event["status"] == EVENT_SUCCESS:
        result = event.get("result")
        problem = video_url_problem(result.get("video_url")) if isinstance(result, dict) else "there is no result"
        if problem is not None:
            raise KlingUnusableVideoError(
                f"KlingRequestTrigger reported success without a usable video ({problem})",
                request_id=str(event.get("request_id") or ""),
                body=str(event),
            )
        return result  # type: ignore[return-value]  # the trigger built it from a KlingResult
    error = event.get("error")
    if isinstance(error, dict):
        raise KlingError.from_event(error)
    raise KlingError(str(event.get("message") or f"Kling request ended with status {event['status']}"))
