"""Trigger that waits for a RunComfy generation request in Airflow's triggerer."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kling.exceptions import KlingError, KlingUnusableVideoError, KlingWaitTimeout
from airflow_provider_kling.exit_rule import end_wait_async
from airflow_provider_kling.follow import follow_async
from airflow_provider_kling.untrusted import video_url_problem
from airflow_provider_kling.wait import RequestWait
from airflow_provider_kling.wait_plan import Exit

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from airflow_provider_kling.models import KlingResult, ResultResponse
    from airflow_provider_kling.states import RequestStatus

#: The ``outcome`` of a success event; any other names the error's type.
SUCCEEDED = "succeeded"
#: Whether this Airflow calls a trigger's ``on_kill`` when a user stops a deferred task (3.3+).
TRIGGER_ON_KILL = "on_kill" in vars(BaseTrigger)


class KlingRequestTrigger(BaseTrigger):
    """
    Poll a RunComfy request until it finishes, then fire one event with its outcome.

    The event's one discriminator is ``outcome``: ``{"outcome": "succeeded", "request_id",
    "message", "result"}`` with the :class:`~airflow_provider_kling.models.KlingResult`, or
    ``{"outcome": "<the error's type>", "request_id", "message", "fields"}``, which rebuilds the
    typed exception (:meth:`~airflow_provider_kling.exceptions.KlingError.from_event`). It polls as
    the wait's plan says, like every other waiter, and a user's stop goes through the exit rule.

    :param wait: the wait to carry on: a :class:`~airflow_provider_kling.wait.RequestWait`, or its
        ``to_dict()``. Its deadlines are absolute times, so a triggerer restart does not extend
        them, and its last poll says when the next is due. Only the connection's id is in it, never
        the token.
    :param legacy: the keyword arguments a trigger of an earlier release serialized
        (``request_id``, ``poll_interval``, ``last_status``...): a task deferred before an upgrade
        carries on after it.
    """

    def __init__(self, wait: RequestWait | Mapping[str, Any] | None = None, **legacy: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.wait = wait if isinstance(wait, RequestWait) else RequestWait.from_dict(wait or legacy)
        #: The wait as last seen, for ``on_kill``.
        self._latest = self.wait

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"wait": self.wait.to_dict()}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        rid = self.wait.request_id
        if self.wait.cancel_on_kill and not TRIGGER_ON_KILL:
            self.log.info(
                "This Airflow does not tell triggers when a user stops a deferred task (Airflow 3.3+ does): "
                "stopping this task will not cancel Kling request %s; `kling cancel %s` does",
                rid,
                rid,
            )
        # The task logged the state it handed over (on the worker, where a line is cheap).
        progress = _ProgressLog(self, logged=self.wait.last_state)
        try:
            async with self.wait.async_hook() as hook:
                result = await follow_async(hook, self.wait, log=self.log, on_progress=progress.observe)
        except KlingError as err:
            if not isinstance(err, KlingWaitTimeout):  # the give-up logged what became of the request
                self.log.error("Waiting for Kling request %s failed: %s", rid, err)
            yield TriggerEvent(error_event(rid, err))
            return
        # Airflow logs the event itself ("Trigger fired event"): its message says how long the
        # wait took, so the outcome needs no line of its own here.
        event = outcome_event(rid, result, waited=progress.waited(), seen_by=self._latest)
        if self.wait.end_task is not None and event["outcome"] == SUCCEEDED:
            from asgiref.sync import sync_to_async

            # The copy (hashing, writing) and the ledger run in a thread: this loop goes on polling
            # the triggerer's other waits meanwhile.
            yield await sync_to_async(self._end_task, thread_sensitive=False)(event)
            return
        yield TriggerEvent(event)

    def _end_task(self, event: dict[str, Any]) -> TriggerEvent:
        """
        The video is ready: store it, count it, and end the task here, with its XComs
        (``TaskSuccessEvent``), so no worker runs again. If storing fails, the task resumes on a
        worker with the plain event instead, and stores it there (and fails and retries there if
        it must).
        """
        from airflow.triggers.base import TaskSuccessEvent

        from airflow_provider_kling.spend import Spend

        end = self.wait.end_task
        assert end is not None
        result, rid = event["result"], event["request_id"]
        hook = self.wait.hook()
        if end.store is not None:
            try:
                result["stored"] = end.store.save(hook, result, log=self.log)
            except Exception as err:  # noqa: BLE001 - the worker stores it, and reports its error if it fails too
                self.log.warning(
                    "Could not store the video of Kling request %s here (%s): the task resumes on a worker to store it",
                    rid,
                    err,
                )
                return TriggerEvent(event)
        spend = Spend(hook, tags=end.tags)
        try:
            counted = spend.ended_once(rid, "succeeded", result)
        except Exception as err:  # noqa: BLE001 - a worker counts it instead, exactly once
            self.log.warning(
                "Could not record the end of Kling request %s in the budget ledger (%s): the task resumes on a "
                "worker, which records it",
                rid,
                err,
            )
            return TriggerEvent(event)  # the video is stored: the worker does not store it again
        if counted and end.store is not None:
            spend.stored(result.get("finished_at"), result["stored"])
        xcoms: dict[str, Any] = {"result": result}
        if end.returns is not None:
            xcoms["return_value"] = rid if end.returns == "request_id" else result
        ended = TaskSuccessEvent(xcoms=xcoms)
        # Airflow's triggerer reads only the state and the XComs; dag.test() resumes the task with
        # the payload instead, so it carries the outcome, marked as counted already.
        ended.payload = {**event, "counted": True}
        self.log.info("Kling request %s succeeded: the task ends here, in the triggerer, with no worker run", rid)
        return ended

    async def on_kill(self) -> None:
        """A user stopped the task (not a triggerer restart): the exit rule, from the last poll."""
        async with self.wait.async_hook() as hook:
            await end_wait_async(hook, self._latest, Exit.KILLED, log=self.log, why="the task was stopped")


class _ProgressLog:
    """
    Each waiting state once, at DEBUG (with queue position and elapsed time); the event's message
    says how long the request queued and rendered.

    In a triggerer with thousands of waits an INFO line costs Airflow's logging about as much CPU
    as a poll costs this trigger, and a line per wait and state was a quarter of the trigger's
    CPU: what a user must see (the account down, an exit, a failure, the outcome) is at INFO, the
    progress of each wait is not.
    """

    def __init__(self, trigger: KlingRequestTrigger, logged: RequestStatus | None = None) -> None:
        self._trigger = trigger
        self._started = time.monotonic()
        self._last = logged

    def observe(self, wait: RequestWait) -> None:
        self._trigger._latest = wait
        seen = wait.seen
        if seen is not None and seen.state is not self._last and not seen.state.is_finished:
            self._last = seen.state
            self._trigger.log.debug(
                "Kling request %s is %s (%.0fs waited)", wait.request_id, seen.describe(), self.waited()
            )

    def waited(self) -> float:
        """Seconds since the wait began."""
        return time.monotonic() - self._started


def outcome_event(
    request_id: str, result: ResultResponse, *, waited: float, seen_by: RequestWait | None = None
) -> dict[str, Any]:
    """The event for a finished request's result, ``waited`` seconds in (``seen_by``: the wait, for its timings)."""
    try:
        summary = result.require_video(request_id)
    except KlingError as err:
        return error_event(request_id, err)
    message = f"Kling request {request_id} succeeded after {waited:.0f}s"
    event: dict[str, Any] = {"outcome": SUCCEEDED, "request_id": request_id, "message": message, "result": summary}
    if seen_by is not None:
        timings = summary["timings"] = seen_by.timings(summary.get("created_at"))
        if timings:
            said = (
                f"{name} {timings[f'{name}_seconds']:.0f}s"
                for name in ("queued", "rendering")
                if f"{name}_seconds" in timings
            )
            event["message"] = f"{message} ({', '.join(said)})"
        if seen_by.carry:
            event["carry"] = dict(seen_by.carry)
    return event


def error_event(request_id: str, err: KlingError) -> dict[str, Any]:
    """The event for a wait that ended with ``err``: its ``outcome`` is the error's type."""
    return {"request_id": request_id, **err.to_event()}


def result_from_event(event: Any) -> KlingResult:
    """
    Turn a :class:`KlingRequestTrigger` event into the task's result, or raise its typed error.

    Events of the earlier release (``status`` and ``error``) are read too: a task deferred before
    an upgrade resumes after it. Anything that is not an event this trigger sends fails loudly: a
    cancelled or unknown outcome must never turn a task green.
    """
    if isinstance(event, dict) and "outcome" not in event and event.get("status") in LEGACY_STATUSES:
        event = _from_legacy(event)
    if not isinstance(event, dict) or not isinstance(event.get("outcome"), str):
        raise KlingError(f"Unexpected event from KlingRequestTrigger: {str(event)[:300]!r}")
    if event["outcome"] != SUCCEEDED:
        raise KlingError.from_event(event)
    result = event.get("result")
    problem = video_url_problem(result.get("video_url")) if isinstance(result, dict) else "there is no result"
    if problem is not None:
        raise KlingUnusableVideoError(
            f"KlingRequestTrigger reported success without a usable video ({problem})",
            request_id=str(event.get("request_id") or ""),
            body=str(event),
        )
    return result  # type: ignore[return-value]  # the trigger built it from a KlingResult


#: ``status`` of the earlier release's events, which had ``status`` and ``error`` where ``outcome`` is now.
LEGACY_STATUSES = ("success", "failed", "cancelled", "timeout", "error")


def _from_legacy(event: dict[str, Any]) -> dict[str, Any]:
    if event["status"] == "success":
        return {**event, "outcome": SUCCEEDED}
    error = event.get("error")
    if not isinstance(error, dict):
        message = str(event.get("message") or f"Kling request ended with status {event['status']}")
        return {"outcome": "KlingError", "message": message}
    return {"request_id": event.get("request_id"), **error, "outcome": error.get("error_type")}
