"""
The waiting part of a task (the operator, the sensor): :class:`TaskWaiter` holds the try's current
wait, so that a user's stop (``on_kill``, from another thread) knows what was last seen; it checks
before deferring, defers to the trigger, waits on a worker, and runs the exit rule when a wait ends
without a video. :func:`why_a_worker_must_end` says when a success must still end on a worker.

The top of the waiting layers: it imports the trigger. Read when a task runs, not when a DAG file
is parsed.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.wait_plan import (
    Exit,
    ExitAction,
    WaitLimits,
    on_exit,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from airflow.providers.common.compat.sdk import BaseOperator, Context

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingResult
    from airflow_provider_kling.spend import Ending, Spend

from airflow_provider_kling.exit_rule import end_wait, ending_of, exit_of, retry_follows
from airflow_provider_kling.follow import follow
from airflow_provider_kling.wait import Logger, RequestWait

if TYPE_CHECKING:
    from airflow_provider_kling.wait import EndInTriggerer


#: Added to the trigger's own deadline for Airflow's deferral timeout, which only backs it up:
#: Airflow's timeout skips ``execute_complete``, so the trigger should act first.
DEFERRAL_TIMEOUT_MARGIN = 300.0


class TaskWaiter:
    """
    The waiting part of a task (the operator, the sensor): held, not inherited.

    :param task: the task, for its log, ``defer`` and ``execution_timeout``.
    :param wait: the options every wait of this task has (its request id is filled in later).
    :param retry_resumes: whether a retry of the task waits for the same request.
    :param budget: the budget the task spends from, if any; ``model``: its model, for the metrics.
    """

    def __init__(
        self,
        task: BaseOperator,
        wait: RequestWait,
        *,
        retry_resumes: bool,
        budget: str | None = None,
        model: str | None = None,
    ) -> None:
        self.task = task
        self.template = wait
        self.retry_resumes = retry_resumes
        self.budget = budget
        self.model = model
        #: The wait this try is in, as last seen; ``None`` outside one. Read by :meth:`on_kill`.
        self.current: RequestWait | None = None
        #: A user's stop already dealt with the request.
        self.killed = False
        #: The request whose video is ready: what fails after (storing it) ends no wait.
        self.video_ready: str | None = None

    @property
    def log(self) -> Logger:
        return self.task.log

    @cached_property
    def hook(self) -> KlingHook:
        return self.template.hook()

    @cached_property
    def spend(self) -> Spend:
        """The task's budget and metrics."""
        from airflow_provider_kling.spend import Spend

        return Spend.of_task(self.hook, self.task, budget=self.budget, model=self.model)

    def done(self, result: KlingResult) -> KlingResult:
        """The request succeeded: count it and settle its reservation."""
        self.spend.ended(result["request_id"], "succeeded", result)
        return result

    def start(self, request_id: str, limits: WaitLimits) -> RequestWait:
        return replace(self.template, request_id=request_id, plan=self.template.plan._replace(limits=limits))

    def _seen(self, wait: RequestWait) -> None:
        self.current = wait

    def check(self, wait: RequestWait) -> KlingResult | RequestWait:
        """
        Poll while a poll is due (a status call, then the result once finished); never sleep. A poll
        that fails for a transient reason leaves the request waiting, as last seen: a sensor pokes
        again, a task about to defer defers (its trigger polls on).
        """
        from airflow_provider_kling.exceptions import KlingError
        from airflow_provider_kling.retry import is_transient

        latest = [wait]

        def seen(polled: RequestWait) -> None:
            latest[0] = polled
            self._seen(polled)

        try:
            found = follow(self.hook, wait, log=self.log, on_progress=seen)
        except KlingError as err:
            if not is_transient(err):
                raise
            self.log.warning("Could not poll Kling request %s (%s): it is taken as still waiting", wait.request_id, err)
            return latest[0]
        return found if isinstance(found, RequestWait) else self._with_timings(found.require_video(wait.request_id))

    def on_worker(self, wait: RequestWait) -> KlingResult:
        """Wait here, holding the worker slot, until the request finishes."""
        found = follow(self.hook, wait, log=self.log, on_progress=self._seen, sleep=self.hook.sleep)
        assert not isinstance(found, RequestWait)  # follow() sleeps until the end when given a sleep
        return self._with_timings(found.require_video(wait.request_id))

    def _with_timings(self, result: KlingResult) -> KlingResult:
        if self.current is not None:
            result["timings"] = self.current.timings(result.get("created_at"))
        return result

    def check_then_defer(
        self,
        context: Context,
        wait: RequestWait,
        carry: Mapping[str, Any] | None = None,
        end_task: EndInTriggerer | None = None,
        before_defer: Callable[[], object] | None = None,
    ) -> KlingResult:
        """
        The result if the request is already done; else hand the wait to the triggerer (raises
        ``TaskDeferred``); ``carry`` comes back in the trigger's event, and with ``end_task`` a
        success ends the task in the triggerer. ``before_defer`` is called last before deferring.
        """
        wait = replace(wait, plan=wait.plan._replace(limits=self.with_execution_timeout(context, wait.plan.limits)))
        found = self.check(wait)
        if not isinstance(found, RequestWait):
            return found
        from airflow_provider_kling.triggers.kling import KlingRequestTrigger  # airflow.triggers: not parse-cheap

        state = found.seen.describe() if found.seen is not None else "not seen yet"
        self.log.info("Kling request %s is %s: waiting in the triggerer", found.request_id, state)
        deadline = found.plan.limits.deadline
        left = None if deadline is None else max(deadline - time.time(), 0.0)
        if before_defer is not None:
            before_defer()
        self.task.defer(
            trigger=KlingRequestTrigger(replace(found, carry=dict(carry or {}), end_task=end_task)),
            method_name="execute_complete",
            timeout=None if left is None else timedelta(seconds=left + DEFERRAL_TIMEOUT_MARGIN),
        )
        raise AssertionError("unreachable: defer() raises")  # pragma: no cover

    def with_execution_timeout(self, context: Context, limits: WaitLimits) -> WaitLimits:
        """
        ``limits`` with the task's ``execution_timeout`` as a deadline too: the trigger's limits.

        Airflow does not enforce ``execution_timeout`` while a task is deferred (apache/airflow
        #61467), so the trigger does: it is the same deadline, and its queued request is cancelled.
        """
        timeout = self.task.execution_timeout
        if not timeout:
            return limits
        started = getattr(context.get("ti"), "start_date", None)
        ends = (started.timestamp() if started is not None else time.time()) + timeout.total_seconds()
        return limits._replace(deadline=ends if limits.deadline is None else min(limits.deadline, ends))

    @contextmanager
    def exits(self, context: Context, request_id: str | Callable[[], str | None]) -> Iterator[None]:
        """
        Around a wait: when it ends without a video, the exit rule deals with the request.

        ``request_id`` may be a function, called only if the wait ends badly (a task resumed after
        deferring looks it up then).
        """
        from airflow_provider_kling.exceptions import KlingError

        self.killed = False
        self.video_ready = None
        if isinstance(request_id, str):
            self.current = replace(self.template, request_id=request_id)
        try:
            yield
        except BaseException as err:
            if self.video_ready is not None:
                raise  # the request finished with a video (counted then); storing it failed: a retry fetches it
            exit = exit_of(err)
            if exit is not None or isinstance(err, KlingError):
                self._record_error(context, err)
            rid = None
            if not self.killed and (exit is not None or isinstance(err, KlingError)):
                rid = request_id if isinstance(request_id, str) else request_id()
            if rid and exit is not None:
                last = self.current if self.current is not None and self.current.request_id == rid else None
                ended = end_wait(
                    self.hook,
                    last or replace(self.template, request_id=rid),
                    exit,
                    log=self.log,
                    next_try_resumes=self.retry_resumes and retry_follows(context, err),
                    why=type(err).__name__,
                )
                self._ended(rid, ending_of(err, ended))
            elif rid:
                self._ended(rid, ending_of(err, None))
            raise
        finally:
            self.current = None

    def _record_error(self, context: Context, err: BaseException) -> None:
        """The error that ended this wait, in XCom (``kling_error``) for the UI; never in its way."""
        from airflow_provider_kling.take import ERROR_XCOM, error_record

        try:
            context["ti"].xcom_push(key=ERROR_XCOM, value=error_record(err))
        except Exception as failed:  # noqa: BLE001 - the task's own error is what matters
            self.log.debug("Could not record the error in XCom: %s", failed)

    def on_kill(self) -> None:
        """A user stopped the task (or its ``execution_timeout`` passed): the exit rule, once."""
        wait = self.current
        if wait is None or self.killed:
            return
        if on_exit(Exit.KILLED, last_state=wait.last_state, next_try_resumes=False,
                   cancel_on_kill=wait.cancel_on_kill) is ExitAction.NOTHING:  # fmt: skip
            return
        self.killed = True  # once: Airflow may both raise into the wait and call on_kill
        ended = end_wait(self.hook, wait, Exit.KILLED, log=self.log, why="the task was stopped")
        self._ended(wait.request_id, ending_of(None, ended))

    def _ended(self, request_id: str, ending: Ending | None) -> None:
        if ending is not None:
            self.spend.ended(request_id, ending)


def why_a_worker_must_end(task: BaseOperator) -> str | None:
    """
    Why a success must still end on a worker, if it must: what only a worker run reports. Airflow
    refuses to load a DAG whose task sets ``end_from_trigger`` while a listener is registered; this
    task decides when it runs instead, so the same DAG loads everywhere and lineage is never lost.
    """
    if task.outlets:
        return "the task has outlets, whose asset events only a worker run emits"
    try:
        from airflow.sdk.listener import get_listener_manager
    except ImportError:  # Airflow 2
        from airflow.listeners.listener import get_listener_manager  # type: ignore[no-redef,assignment,unused-ignore]
    if get_listener_manager().has_listeners:
        return "a listener is registered (OpenLineage, say), and listeners see only a task that ends on a worker"
    return None


def end_in_triggerer(task: Any, returns: Any) -> EndInTriggerer | None:
    """How the trigger ends ``task`` once the video is ready, or ``None`` when a worker must (said in the log)."""
    from airflow_provider_kling.wait import EndInTriggerer

    why = why_a_worker_must_end(task)
    if why:
        task.log.info("The task resumes on a worker when the video is ready, not in the triggerer: %s", why)
        return None
    return EndInTriggerer(store=task.video_store, returns=returns, tags=task.spend.tags)
