"""
One wait for one request: the value every waiter holds, the loop that follows it, and the one
rule for how a wait ends.

- :class:`RequestWait` is the whole state of a wait: the request, the plan (poll settings and
  limits), what the last poll saw, and the options. It is immutable; each poll makes the next one.
  It serializes to plain JSON (:meth:`RequestWait.to_dict`), so the operator, the sensor, the
  trigger and the ``kling`` command hold the same thing, and a deferred task hands it to the
  trigger as one argument.
- :func:`follow` and :func:`follow_async` poll as the plan says
  (:meth:`~airflow_provider_kling.wait_plan.WaitPlan.next_step`), on a worker and in the triggerer.
- :func:`end_wait` and :func:`end_wait_async` are the exit rule: every cancel the provider decides on
  goes through them (the plan's give-up, a task's failed exit, ``execution_timeout``, a user's stop,
  the trigger's ``on_kill``, Ctrl-C in ``kling``). Apart from the explicit ``kling cancel``, nothing
  else calls the hook's ``cancel``.
- :class:`TaskWaiter` is the part of a task (operator or sensor) that waits: it holds the try's
  current wait, so that a user's stop (``on_kill``, from another thread) knows what was last seen.

This module is read when a task runs, not when a DAG file is parsed: the hooks, the models and
Airflow's exceptions are imported inside the functions that need them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from airflow_provider_kling.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
)
from airflow_provider_kling.states import CancelOutcome, RequestStatus
from airflow_provider_kling.wait_plan import (
    Call,
    Exit,
    ExitAction,
    GiveUp,
    PollSettings,
    Seen,
    WaitLimits,
    WaitPlan,
    give_up_message,
    on_exit,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from airflow.providers.common.compat.sdk import BaseOperator, Context

    from airflow_provider_kling.exceptions import KlingError
    from airflow_provider_kling.hooks.client import KlingClient
    from airflow_provider_kling.hooks.kling import KlingAsyncHook, KlingHook
    from airflow_provider_kling.models import KlingResult, ResultResponse, StatusResponse
    from airflow_provider_kling.spend import Ending, Spend
    from airflow_provider_kling.store import VideoStore

#: A logger: the standard library's, or Airflow's structured one (a task's or a trigger's ``log``).
Logger = Any

#: Added to the trigger's own deadline for Airflow's deferral timeout, which only backs it up:
#: Airflow's timeout skips ``execute_complete``, so the trigger should act first.
DEFERRAL_TIMEOUT_MARGIN = 300.0


@dataclass(frozen=True)
class EndInTriggerer:
    """
    How the trigger ends a task whose video is ready, without a worker run (``finish_in_triggerer``).

    :param store: where the video goes first (the operator's ``destination``); ``None``: not stored.
    :param returns: the return value to push: ``"request_id"`` (the operator), ``"result"``
        (``@task.kling``), or ``None`` (``do_xcom_push=False``).
    :param tags: the task's metric tags (``model``, ``dag_id``, ``task_id``).
    """

    store: VideoStore | None = None
    returns: Literal["request_id", "result"] | None = "request_id"
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": None if self.store is None else self.store.to_dict(),
            "returns": self.returns,
            "tags": dict(self.tags),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EndInTriggerer:
        from airflow_provider_kling.store import VideoStore

        store = data.get("store")
        returns = data.get("returns")
        return cls(
            store=VideoStore.from_dict(store) if store else None,
            returns=returns if returns in ("request_id", "result") else None,
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
        )


@dataclass(frozen=True)
class RequestWait:
    """
    Everything about one wait for one request, as plain data.

    :param request_id: the RunComfy request waited for.
    :param plan: how to poll and when to give up.
    :param seen: what the last poll saw; ``None`` before the first.
    :param kling_conn_id: the ``kling`` connection; only its id, never the token.
    :param include_cost: ask the result call for the request's ``cost``.
    :param cancel_on_kill: whether a user's stop cancels a queued request.
    :param hook_params: extra keyword arguments for the hook (timeouts, retries).
    :param running_since: when a poll first saw the request running (Unix seconds), for the
        ``kling.queued`` and ``kling.rendering`` timers.
    :param carry: plain data the task gets back with the trigger's event (what lineage says of the
        generation): it travels in the wait, since ``dag.test()`` drops a deferral's own kwargs.
    :param end_task: set when the trigger ends the task itself once the video is ready
        (``finish_in_triggerer``): no worker runs again for a success.
    """

    request_id: str
    plan: WaitPlan = field(default_factory=WaitPlan)
    seen: Seen | None = None
    kling_conn_id: str = DEFAULT_CONN_ID
    include_cost: bool = False
    cancel_on_kill: bool = True
    hook_params: Mapping[str, Any] = field(default_factory=dict)
    running_since: float | None = None
    carry: Mapping[str, Any] = field(default_factory=dict)
    end_task: EndInTriggerer | None = None

    def saw(self, seen: Seen) -> RequestWait:
        running = seen.state is RequestStatus.IN_PROGRESS and self.running_since is None
        return replace(self, seen=seen, running_since=seen.at if running else self.running_since)

    def timings(self, created_at: str | None, now: float | None = None) -> dict[str, float]:
        """Seconds queued and rendering, as this wait saw them (to a poll interval), where known."""
        found: dict[str, float] = {}
        if self.running_since is None:
            return found
        found["rendering_seconds"] = max((time.time() if now is None else now) - self.running_since, 0.0)
        created = unix_time(created_at)
        if created is not None:
            found["queued_seconds"] = max(self.running_since - created, 0.0)
        return found

    @property
    def last_state(self) -> RequestStatus | None:
        return self.seen.state if self.seen is not None else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: what a trigger serializes."""
        seen = self.seen
        return {
            "request_id": self.request_id,
            "poll_interval": self.plan.settings.interval,
            "max_poll_interval": self.plan.settings.max_interval,
            "deadline": self.plan.limits.deadline,
            "queue_deadline": self.plan.limits.queue_deadline,
            "seen": None if seen is None else {**seen._asdict(), "state": seen.state.value},
            "kling_conn_id": self.kling_conn_id,
            "include_cost": self.include_cost,
            "cancel_on_kill": self.cancel_on_kill,
            "hook_params": dict(self.hook_params),
            "running_since": self.running_since,
            "carry": dict(self.carry),
            "end_task": None if self.end_task is None else self.end_task.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestWait:
        """
        Read :meth:`to_dict`'s output, or the keyword arguments a trigger of release 0.x serialized
        (``last_status``, ``last_queue_position``, ``last_polled_at``): a task deferred before an
        upgrade is resumed by the new code.
        """
        defaults = PollSettings()
        seen = data.get("seen")
        if seen is None and data.get("last_status") is not None:  # the earlier trigger's flat form
            seen = {"state": data["last_status"], "queue_position": data.get("last_queue_position"),
                    "at": data.get("last_polled_at")}  # fmt: skip
        return cls(
            request_id=str(data["request_id"]),
            plan=WaitPlan(
                PollSettings(
                    float(data.get("poll_interval", defaults.interval)),
                    float(data.get("max_poll_interval", defaults.max_interval)),
                ),
                WaitLimits(data.get("deadline"), data.get("queue_deadline")),
            ),
            seen=_waiting_seen(seen),
            kling_conn_id=str(data.get("kling_conn_id") or DEFAULT_CONN_ID),
            include_cost=bool(data.get("include_cost", False)),
            cancel_on_kill=bool(data.get("cancel_on_kill", True)),
            hook_params=dict(data.get("hook_params") or {}),
            running_since=data.get("running_since"),
            carry=dict(data.get("carry") or {}),
            end_task=EndInTriggerer.from_dict(data["end_task"]) if data.get("end_task") else None,
        )

    def hook(self) -> KlingHook:
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(self.kling_conn_id, **self.hook_params)

    def async_hook(self) -> KlingAsyncHook:
        from airflow_provider_kling.hooks.kling import KlingAsyncHook

        return KlingAsyncHook(self.kling_conn_id, **self.hook_params)


def _waiting_seen(data: Mapping[str, Any] | None) -> Seen | None:
    """A serialized poll, if it saw the request still waiting (a finished one is polled again)."""
    if not data or data.get("state") not in (RequestStatus.IN_QUEUE.value, RequestStatus.IN_PROGRESS.value):
        return None
    return Seen(RequestStatus(data["state"]), data.get("queue_position"), float(data.get("at") or 0.0))


def unix_time(iso: str | None) -> float | None:
    """An ISO 8601 time as RunComfy writes it (``Z``, or no zone: UTC) in Unix seconds; ``None`` if unreadable."""
    if not iso:
        return None
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def observed(answer: StatusResponse | ResultResponse, at: float) -> tuple[Seen, ResultResponse | None]:
    """What a status or result answer, asked for at ``at``, says: the state, and the final result if any."""
    from airflow_provider_kling.models import StatusResponse

    if isinstance(answer, StatusResponse):
        return Seen(answer.status, answer.queue_position, at), None
    return Seen(answer.status.request_status, None, at), answer if answer.status.is_terminal else None


# --- the loop: only the I/O the plan asks for ---------------------------------------------------


def follow(
    hook: KlingClient,
    wait: RequestWait,
    *,
    log: Logger | None,
    on_progress: Callable[[RequestWait], object] | None = None,
    sleep: Callable[[float], object] | None = None,
) -> ResultResponse | RequestWait:
    """
    Poll as ``wait.plan`` says, from ``wait.seen``, until the request finishes.

    :param log: where the exit rule says what became of the request at a limit.
    :param on_progress: called with the wait after every poll.
    :param sleep: how to wait between polls; ``None`` does not wait: the loop returns the wait as
        last seen as soon as the next poll is not due yet (a sensor's poke, a check before deferring).
    :return: the result of the finished request (whatever its outcome), or, without ``sleep``,
        the wait when the request is still waiting.
    :raises KlingWaitTimeout: a limit of the plan passed; the exit rule has dealt with the request.
    :raises KlingError: a poll failed for good (:func:`outage_pause`).
    """
    from airflow_provider_kling.exceptions import KlingError

    missed = 0
    while True:
        step = wait.plan.next_step(wait.seen, time.time())
        if isinstance(step, GiveUp):
            wait = going_on(wait, step, end_wait(hook, wait, Exit.LIMIT, log=log).outcome)
            continue
        delay = step.at - time.time()
        if delay > 0:
            if sleep is None:
                return wait
            sleep(delay)
        at = time.time()
        try:
            if step.call is Call.STATUS:
                seen, result = observed(hook.get_status(wait.request_id), at)
            else:
                seen, result = observed(hook.get_result(wait.request_id, include_cost=wait.include_cost), at)
        except KlingError as err:
            if sleep is None:
                raise  # a single check (a poke): its caller decides
            missed += 1
            sleep(outage_pause(wait, err, missed, log))
            continue
        missed = back_from_outage(wait, missed, log)
        wait = wait.saw(seen)
        if on_progress is not None:
            on_progress(wait)
        if result is not None:
            return result


async def follow_async(
    hook: KlingAsyncHook,
    wait: RequestWait,
    *,
    log: Logger | None,
    on_progress: Callable[[RequestWait], object] | None = None,
) -> ResultResponse:
    """:func:`follow` in an event loop, sleeping there until the request finishes."""
    import asyncio

    from airflow_provider_kling.exceptions import KlingError

    missed = 0
    while True:
        step = wait.plan.next_step(wait.seen, time.time())
        if isinstance(step, GiveUp):
            wait = going_on(wait, step, (await end_wait_async(hook, wait, Exit.LIMIT, log=log)).outcome)
            continue
        delay = step.at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        at = time.time()
        try:
            if step.call is Call.STATUS:
                seen, result = observed(await hook.get_status(wait.request_id), at)
            else:
                seen, result = observed(await hook.get_result(wait.request_id, include_cost=wait.include_cost), at)
        except KlingError as err:
            missed += 1
            await asyncio.sleep(outage_pause(wait, err, missed, log))
            continue
        missed = back_from_outage(wait, missed, log)
        wait = wait.saw(seen)
        if on_progress is not None:
            on_progress(wait)
        if result is not None:
            return result


def outage_pause(wait: RequestWait, err: KlingError, missed: int, log: Logger | None) -> float:
    """
    A poll failed after the hook's own retries: the seconds to pause before polling again, when
    the failure is transient (connection refused, a timeout, 429, 5xx) and the wait's deadline has
    not passed. An outage of the API then costs a wait some polls, never the task's try: a trigger
    that gave up after its retries (about 8 s) would send the task to a worker to fail, and each
    retry to a worker again. The pause doubles from the poll interval to ``max_poll_interval``.

    :raises Exception: ``err`` itself, when it is not transient or the deadline has passed.
    """
    from airflow_provider_kling.retry import is_transient

    deadline = wait.plan.limits.deadline
    if not is_transient(err) or (deadline is not None and time.time() >= deadline):
        raise err
    settings = wait.plan.settings
    pause = float(min(max(settings.max_interval, settings.interval), settings.interval * 2 ** (missed - 1)))
    if deadline is not None:
        pause = max(min(pause, deadline - time.time()), 0.0)
    if log is not None and missed == 1:
        log.warning(
            "Could not poll Kling request %s (%s): the wait goes on, polling again every %.0f s at most, until the "
            "API answers or the wait's deadline",
            wait.request_id,
            err,
            settings.max_interval,
        )
    return pause


def back_from_outage(wait: RequestWait, missed: int, log: Logger | None) -> int:
    """After a poll that answered: say so if polls had failed before it. Returns the new count of missed polls."""
    if missed and log is not None:
        log.info("Kling request %s answered again after %d failed polls", wait.request_id, missed)
    return 0


def wait_for(
    hook: KlingClient,
    request_id: str,
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    timeout: float | None = DEFAULT_TIMEOUT,
    queue_timeout: float | None = None,
    include_cost: bool = False,
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
    on_progress: Callable[[RequestWait], object] | None = None,
) -> ResultResponse:
    """
    Block until the request finishes and return its result (whatever its outcome); ``KlingHook.wait``.

    :param poll_interval: seconds between polls.
    :param timeout: seconds to wait in all; ``None`` for no limit.
    :param queue_timeout: seconds the request may stay queued; then it is cancelled (free).
    :param include_cost: ask the result call for the request's ``cost``.
    :param max_poll_interval: the longest wait between polls while far back in the queue.
    :param on_progress: called with the wait after every poll (a progress display, for instance).
    :raises KlingWaitTimeout: not finished within ``timeout`` seconds, or still queued after
        ``queue_timeout``; a queued request is cancelled first, so it is not billed.
    """
    plan = WaitPlan(
        PollSettings(poll_interval, max_poll_interval), WaitLimits.starting(time.time(), timeout, queue_timeout)
    )
    wait = RequestWait(request_id, plan, include_cost=include_cost)
    result = follow(hook, wait, log=hook.log, on_progress=on_progress, sleep=hook.sleep)
    assert not isinstance(result, RequestWait)  # follow() sleeps until the end when given a sleep
    return result


def going_on(wait: RequestWait, step: GiveUp, outcome: CancelOutcome | None) -> RequestWait:
    """The wait to go on with after giving up at ``step``; raises :class:`KlingWaitTimeout` when it stops there."""
    assert wait.seen is not None  # a limit is acted on only after a poll
    after = wait.plan.after_give_up(step, outcome, wait.seen)
    if after is None:
        from airflow_provider_kling.exceptions import KlingWaitTimeout

        rid = wait.request_id
        cancel_outcome = None if outcome is None else outcome.value
        raise KlingWaitTimeout(give_up_message(rid, step.limit, outcome), request_id=rid, cancel_outcome=cancel_outcome)
    plan, seen = after
    return replace(wait, plan=plan, seen=seen)


# --- the exit rule ----------------------------------------------------------------------------


class WaitEnd(NamedTuple):
    """What the exit rule did: its decision, the cancel's answer (``None``: no cancel, or it failed), why it failed."""

    action: ExitAction
    outcome: CancelOutcome | None = None
    error: str | None = None


def end_wait(
    hook: KlingClient,
    wait: RequestWait,
    exit: Exit,
    *,
    log: Logger | None,
    next_try_resumes: bool = False,
    why: str = "",
) -> WaitEnd:
    """
    The exit rule: do to the request what :func:`~airflow_provider_kling.wait_plan.on_exit`
    decides for a wait that ended by ``exit``, and say so in ``log``.

    A cancel that fails is logged, never raised: the wait's own outcome is what the task reports.
    """
    from airflow_provider_kling.exceptions import KlingError

    action = _decide(wait, exit, next_try_resumes, why, log)
    if action is not ExitAction.CANCEL:
        return WaitEnd(action)
    try:
        answer = hook.cancel(wait.request_id)
    except KlingError as err:
        return _cancel_failed(log, wait.request_id, err)
    return WaitEnd(action, _cancelled(log, wait.request_id, answer.outcome))


async def end_wait_async(
    hook: KlingAsyncHook,
    wait: RequestWait,
    exit: Exit,
    *,
    log: Logger | None,
    next_try_resumes: bool = False,
    why: str = "",
) -> WaitEnd:
    """:func:`end_wait` in an event loop (the trigger's give-up and ``on_kill``)."""
    from airflow_provider_kling.exceptions import KlingError

    action = _decide(wait, exit, next_try_resumes, why, log)
    if action is not ExitAction.CANCEL:
        return WaitEnd(action)
    try:
        answer = await hook.cancel(wait.request_id)
    except KlingError as err:
        return _cancel_failed(log, wait.request_id, err)
    return WaitEnd(action, _cancelled(log, wait.request_id, answer.outcome))


def _decide(wait: RequestWait, exit: Exit, next_try_resumes: bool, why: str, log: Logger | None) -> ExitAction:
    rid = wait.request_id
    action = on_exit(
        exit, last_state=wait.last_state, next_try_resumes=next_try_resumes, cancel_on_kill=wait.cancel_on_kill
    )
    if log is None or exit is Exit.LIMIT:  # the give-up's own message says what became of it
        return action
    reason = f" ({why})" if why else ""
    if action is ExitAction.CANCEL:
        log.warning(
            "The wait for Kling request %s ended without a video%s: cancelling it, since nobody will wait for it "
            "any more",
            rid,
            reason,
        )
    elif action is ExitAction.SAY_BILLED:
        log.warning(
            "The wait for Kling request %s ended without a video%s; it is already running and cannot be "
            "cancelled: it will still be billed. `kling download %s FILE` fetches the video once it is done",
            rid,
            reason,
            rid,
        )
    elif action is ExitAction.KEEP:
        log.info("Kling request %s is left to run: the next try of this task resumes it instead of paying again", rid)
    return action


def _cancelled(log: Logger | None, request_id: str, outcome: CancelOutcome) -> CancelOutcome:
    if log is None:
        return outcome
    if outcome is CancelOutcome.CANCELLED:
        log.info("Cancelled Kling request %s: it was still queued, so it will not be billed", request_id)
    else:
        log.warning("Kling request %s is already running and cannot be cancelled: it will still be billed", request_id)
    return outcome


def _cancel_failed(log: Logger | None, request_id: str, err: Exception) -> WaitEnd:
    if log is not None:
        log.warning("Could not cancel Kling request %s: %s", request_id, err)
    return WaitEnd(ExitAction.CANCEL, error=str(err))


def exit_of(err: BaseException) -> Exit | None:
    """
    How a wait ended, for an exception that ends it; ``None`` for one that does not end it (a
    deferral, a reschedule), that a user's stop explains (``on_kill`` acts), or that the exit
    rule already dealt with (a limit of the plan).
    """
    from airflow.providers.common.compat.sdk import (
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
        TaskDeferred,
    )

    from airflow_provider_kling.exceptions import KlingGenerationError, KlingUnusableVideoError, KlingWaitTimeout

    if isinstance(err, (TaskDeferred, KlingWaitTimeout, KeyboardInterrupt, SystemExit, GeneratorExit)):
        return None
    if isinstance(err, (*_airflow_3_only("AirflowRescheduleException", "AirflowTaskTerminated"), _reschedule())):
        return None  # AirflowTaskTerminated: a SIGTERM, for which Airflow calls on_kill
    if isinstance(err, (KlingGenerationError, KlingUnusableVideoError)):
        return Exit.FINISHED  # failed or cancelled on the server, or a success without a usable video
    if isinstance(err, (AirflowSensorTimeout, AirflowTaskTimeout, AirflowSkipException)):
        return Exit.TIMEOUT
    if isinstance(err, _airflow_3_only("TaskDeferralTimeout")):
        return Exit.TIMEOUT  # Airflow 2 reports a deferral timeout as a TaskDeferralError: an error here
    return Exit.ERROR


def _airflow_3_only(*names: str) -> tuple[type[BaseException], ...]:
    try:
        import airflow.sdk.exceptions as sdk_exceptions
    except ImportError:  # Airflow 2
        return ()
    return tuple(getattr(sdk_exceptions, name) for name in names if hasattr(sdk_exceptions, name))


def _reschedule() -> type[BaseException]:
    try:
        from airflow.sdk.exceptions import AirflowRescheduleException
    except ImportError:  # Airflow 2
        from airflow.exceptions import AirflowRescheduleException
    return AirflowRescheduleException


def retry_follows(context: Context, err: BaseException) -> bool:
    """Whether Airflow will run this task again after ``err``."""
    from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout

    if isinstance(err, (AirflowFailException, AirflowSensorTimeout)):
        return False
    ti = context.get("ti")
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    return isinstance(try_number, int) and isinstance(max_tries, int) and try_number <= max_tries


# --- a task's wait ------------------------------------------------------------------------------


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


def ending_of(err: BaseException | None, ended: WaitEnd | None) -> Ending | None:
    """How a request ended, for the ledger and the metrics, from the error that ended its wait and the
    exit rule's action; ``None`` when it did not end (kept for the next try, or the cancel failed)."""
    from airflow_provider_kling.exceptions import (
        KlingRequestCancelled,
        KlingRequestFailed,
        KlingUnusableVideoError,
        KlingWaitTimeout,
    )

    if isinstance(err, KlingRequestFailed):
        return "failed"
    if isinstance(err, KlingRequestCancelled):
        return "cancelled"
    if isinstance(err, KlingUnusableVideoError):
        return "billed_without_video"  # it succeeded, and was paid for
    outcome = err.cancel_outcome if isinstance(err, KlingWaitTimeout) else None
    if ended is not None:
        outcome = ended.outcome.value if ended.outcome is not None else None
        if ended.action is ExitAction.SAY_BILLED:
            outcome = CancelOutcome.NOT_CANCELLABLE.value
    if outcome == CancelOutcome.CANCELLED.value:
        return "cancelled"
    if outcome == CancelOutcome.NOT_CANCELLABLE.value:
        return "billed_without_video"
    return None
