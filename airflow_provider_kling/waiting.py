"""
How a task waits for a request: what :class:`KlingTextToVideoOperator` and :class:`KlingRequestSensor`
share, so that they wait, defer and end alike.

- The check before deferring and the wait on a worker are :meth:`KlingHook.follow
  <airflow_provider_kling.hooks.kling.KlingHook.follow>` over one
  :class:`~airflow_provider_kling.wait_plan.WaitPlan`; the trigger follows the same plan.
- Deferring is one constructor, :meth:`KlingRequestTrigger.continuing
  <airflow_provider_kling.triggers.kling.KlingRequestTrigger.continuing>`, from the task's last poll.
- Every exit without a video goes through :meth:`KlingWaitingMixin._every_exit_cancels`, which
  applies :func:`~airflow_provider_kling.wait_plan.on_exit`: a queued request that nobody
  will wait for any more is cancelled (free), and the log says so; a running one is named as billed.

This module is imported when a DAG file is parsed, as the operator's and the sensor's base: it
defines the mixin and nothing else at import, and reads the planner (``wait_plan``) and the
exception types when a task runs (about 3 ms less at every parse; ``tests/test_parse_cost.py``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.providers.common.compat.sdk import BaseOperator, Context

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingResult
    from airflow_provider_kling.states import RequestStatus
    from airflow_provider_kling.wait_plan import Exit, ExitAction, Seen, WaitLimits, WaitPlan

    _TaskBase = BaseOperator
else:
    _TaskBase = object


def default_deferrable() -> bool:
    """``[operators] default_deferrable``: whether a task of this provider waits in the triggerer unless told."""
    from airflow.providers.common.compat.sdk import conf

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


#: Added to the trigger's own deadline for Airflow's deferral timeout, which only backs it up:
#: Airflow's timeout skips ``execute_complete``, so the trigger should act first.
DEFERRAL_TIMEOUT_MARGIN = 300.0


class KlingWaitingMixin(_TaskBase):
    """
    Waiting for a RunComfy request from a task: on the worker, or deferred to the triggerer.

    The task sets ``kling_conn_id``, ``deferrable``, ``max_poll_interval``, ``queue_timeout``,
    ``include_cost``, ``cancel_on_kill`` and ``hook_params``, and says its poll interval, whether
    a retry waits for the same request, and which request it waited for once resumed.
    """

    kling_conn_id: str
    deferrable: bool
    max_poll_interval: float
    queue_timeout: float | None
    include_cost: bool
    cancel_on_kill: bool
    hook_params: dict[str, Any]

    #: The request this task is waiting for on the worker, and what was last seen of it.
    _waiting_on: str | None = None
    _last_seen: Seen | None = None
    #: A user's stop (or an execution timeout) already dealt with the request.
    _killed = False

    # --- what each task says ------------------------------------------------------------------

    @property
    def wait_interval(self) -> float:
        """Seconds between polls."""
        raise NotImplementedError

    def retry_waits_for_same_request(self) -> bool:
        """Whether a retry of this task waits for the request this try waited for (resumes it)."""
        raise NotImplementedError

    def request_id_on_resume(self, context: Context) -> str | None:
        """The request this task deferred for, after it was resumed on a worker."""
        raise NotImplementedError

    # --- the hook and the plan ----------------------------------------------------------------

    @cached_property
    def hook(self) -> KlingHook:
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(self.kling_conn_id, **self.hook_params)

    def wait_plan(self, limits: WaitLimits) -> WaitPlan:
        from airflow_provider_kling.wait_plan import PollSettings, WaitPlan

        return WaitPlan(PollSettings(self.wait_interval, self.max_poll_interval), limits)

    def _remember(self, seen: Seen) -> None:
        self._last_seen = seen

    @property
    def _last_state(self) -> RequestStatus | None:
        return self._last_seen.state if self._last_seen is not None else None

    def check(self, request_id: str, plan: WaitPlan) -> KlingResult | Seen:
        """Poll while a poll is due (a status call, then the result once finished); never sleep."""
        from airflow_provider_kling.models import ResultResponse

        found = self.hook.follow(
            request_id, plan, seen=self._last_seen, include_cost=self.include_cost, on_progress=self._remember
        )
        return found.require_video(request_id) if isinstance(found, ResultResponse) else found

    def wait_on_worker(self, request_id: str, plan: WaitPlan) -> KlingResult:
        """Wait here, holding the worker slot, until the request finishes."""
        from airflow_provider_kling.wait_plan import Seen

        result = self.hook.follow(
            request_id, plan, include_cost=self.include_cost, on_progress=self._remember, sleep=self.hook.sleep
        )
        assert not isinstance(result, Seen)  # follow() sleeps until the end when given a sleep
        return result.require_video(request_id)

    def check_then_defer(self, context: Context, request_id: str, limits: WaitLimits) -> KlingResult:
        """Return the result if the request is already done; else defer to the triggerer (raises ``TaskDeferred``)."""
        from airflow_provider_kling.wait_plan import Seen

        found = self.check(request_id, self.wait_plan(limits))
        if not isinstance(found, Seen):
            return found
        self.defer_until_done(context, request_id, found, limits)
        raise AssertionError("unreachable: defer() raises")  # pragma: no cover

    def with_execution_timeout(self, context: Context, limits: WaitLimits) -> WaitLimits:
        """
        ``limits`` with the task's ``execution_timeout`` as a deadline too: the trigger's limits.

        Airflow does not enforce ``execution_timeout`` while a task is deferred (apache/airflow
        #61467), so the trigger does: it is the same deadline, and its queued request is cancelled.
        """
        if not self.execution_timeout:
            return limits
        started = getattr(context.get("ti"), "start_date", None)
        begun = started.timestamp() if started is not None else time.time()
        ends = begun + self.execution_timeout.total_seconds()
        return limits._replace(deadline=ends if limits.deadline is None else min(limits.deadline, ends))

    def defer_until_done(self, context: Context, request_id: str, seen: Seen, limits: WaitLimits) -> None:
        """Hand the wait to the triggerer, from the task's last poll; logs the state handed over."""
        from airflow_provider_kling.triggers.kling import KlingRequestTrigger  # airflow.triggers: not parse-cheap

        self.log.info("Kling request %s is %s: waiting in the triggerer", request_id, seen.describe())
        trigger = KlingRequestTrigger.continuing(
            request_id,
            self.wait_plan(limits),
            seen,
            kling_conn_id=self.kling_conn_id,
            include_cost=self.include_cost,
            cancel_on_kill=self.cancel_on_kill,
            hook_params=self.hook_params,
        )
        left = None if limits.deadline is None else max(limits.deadline - time.time(), 0.0)
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=None if left is None else timedelta(seconds=left + DEFERRAL_TIMEOUT_MARGIN),
        )

    # --- every exit -----------------------------------------------------------------------------

    @contextmanager
    def _every_exit_cancels(self, context: Context, request_id: str | None) -> Iterator[None]:
        """
        Around a wait: when it ends without a video, do what :func:`on_exit` says to the request.

        A deferral or a reschedule is no exit; a user's stop goes through :meth:`on_kill`. With no
        ``request_id`` (a task resumed after deferring), it is looked up only if the wait ends badly.
        """
        from airflow_provider_kling.wait_plan import on_exit

        self._waiting_on = request_id
        self._killed = False
        try:
            yield
        except BaseException as err:
            exit = _exit_of(err)
            if exit is not None and not self._killed:
                rid = request_id or self.request_id_on_resume(context)
                resumes = self.retry_waits_for_same_request() and _retry_follows(context, err)
                if rid:
                    self._act_on_exit(rid, on_exit(exit, last_state=self._last_state, next_try_resumes=resumes), err)
            raise
        finally:
            self._waiting_on = None

    def _act_on_exit(self, request_id: str, action: ExitAction, why: BaseException | str) -> None:
        from airflow_provider_kling.wait_plan import ExitAction

        reason = why if isinstance(why, str) else type(why).__name__
        if action is ExitAction.CANCEL:
            self.log.warning(
                "The wait for Kling request %s ended without a video (%s): cancelling it, since nobody will "
                "wait for it any more",
                request_id,
                reason,
            )
            self.hook.cancel_best_effort(request_id)
        elif action is ExitAction.SAY_BILLED:
            self.log.warning(
                "The wait for Kling request %s ended without a video (%s); it is already running and cannot be "
                "cancelled: it will still be billed. `kling download %s FILE` fetches the video once it is done",
                request_id,
                reason,
                request_id,
            )
        elif action is ExitAction.KEEP:
            self.log.info(
                "Kling request %s is left to run: the next try of this task resumes it instead of paying again",
                request_id,
            )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after the trigger; an Airflow deferral timeout or a trigger failure is an exit too."""
        with self._every_exit_cancels(context, None):
            return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """A user stopped the task (or its ``execution_timeout`` passed): cancel a queued request."""
        request_id = self._waiting_on
        if not request_id or self._killed:
            return
        from airflow_provider_kling.wait_plan import Exit, ExitAction, on_exit

        action = on_exit(
            Exit.KILLED, last_state=self._last_state, next_try_resumes=False, cancel_on_kill=self.cancel_on_kill
        )
        if action is not ExitAction.NOTHING:
            self._killed = True  # once: Airflow may both raise into the wait and call on_kill
            self._act_on_exit(request_id, action, "the task was stopped")


def _exit_of(err: BaseException) -> Exit | None:
    """How a wait ended, for an exception that ends it; ``None`` for one that does not or that
    :meth:`KlingWaitingMixin.on_kill` handles (a deferral, a reschedule, a user's stop)."""
    # Imported when a wait ends, not when a DAG file is parsed.
    from airflow.providers.common.compat.sdk import (
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
        TaskDeferred,
    )

    from airflow_provider_kling.exceptions import (
        KlingRequestCancelled,
        KlingRequestFailed,
        KlingUnusableVideoError,
        KlingWaitTimeout,
    )
    from airflow_provider_kling.wait_plan import Exit

    if isinstance(err, (TaskDeferred, _reschedule_exception(), KeyboardInterrupt, SystemExit, GeneratorExit)):
        return None
    if type(err).__name__ == "AirflowTaskTerminated":  # SIGTERM: Airflow calls on_kill
        return None
    if isinstance(err, KlingWaitTimeout):
        return Exit.LIMIT
    if isinstance(err, (KlingRequestFailed, KlingRequestCancelled, KlingUnusableVideoError)):
        return Exit.FINISHED  # a finished request's outcome: nothing left to cancel
    if isinstance(err, (AirflowSensorTimeout, AirflowTaskTimeout, AirflowSkipException, *_deferral_timeout())):
        return Exit.TIMEOUT
    return Exit.ERROR


def _reschedule_exception() -> type[BaseException]:
    try:
        from airflow.sdk.exceptions import AirflowRescheduleException
    except ImportError:  # Airflow 2
        from airflow.exceptions import AirflowRescheduleException
    return AirflowRescheduleException


def _deferral_timeout() -> tuple[type[BaseException], ...]:
    """Airflow's deferral timeout (3.x; Airflow 2 reports it as a ``TaskDeferralError``, an error here)."""
    try:
        from airflow.sdk.exceptions import TaskDeferralTimeout
    except ImportError:  # Airflow 2
        return ()
    return (TaskDeferralTimeout,)


def _retry_follows(context: Context, err: BaseException) -> bool:
    """Whether Airflow will run this task again after ``err``."""
    from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout

    if isinstance(err, (AirflowFailException, AirflowSensorTimeout)):
        return False
    ti = context.get("ti")
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    return isinstance(try_number, int) and isinstance(max_tries, int) and try_number <= max_tries
