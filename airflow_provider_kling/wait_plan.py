"""
One way to wait for a request: a pure planner that says what to do next.

Four things wait for a RunComfy request: :func:`~airflow_provider_kling.follow.follow` on a
worker (the polling operator, the poking sensor, and the ``kling`` command through ``wait_for``),
the trigger, and the operator's and the sensor's check before deferring. Each is a thin loop that
does the I/O this module asks for, so they all follow the same rules:

- **fixed rate**: the next poll is due a poll interval after the *start* of the last one, so a slow
  answer does not push every later poll back;
- **adaptive interval**: far back in the queue, the interval grows with the queue position, up to
  ``max_interval``;
- **result call near the front**: running, or queued near the front, the result call alone says
  whether the request is done, which saves the separate call after the last status;
- **limits**: an overall deadline and a limit on time spent queued, both absolute Unix times, so a
  restarted triggerer keeps them; a limit is acted on only after a poll made at or after it;
- **exits**: a wait that ends without success cancels a queued request (free), unless the next try
  of the task will resume it (:func:`on_exit`).

Nothing here does I/O or reads a clock: every function takes ``now``. The values are named tuples:
immutable, and cheap to define in a module a DAG file imports at every parse.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal, NamedTuple

from airflow_provider_kling.constants import DEFAULT_MAX_POLL_INTERVAL, DEFAULT_POLL_INTERVAL
from airflow_provider_kling.states import CancelOutcome, RequestStatus

Limit = Literal["deadline", "queue"]

#: Queue positions up to this one are polled through the result call (the position no longer
#: changes the interval much); further back, through the status call, which tells the position.
NEAR_FRONT = 5


class Call(str, Enum):
    """The call a poll makes."""

    STATUS = "status"
    RESULT = "result"


class Seen(NamedTuple):
    """
    What one poll saw.

    :param state: the request's state (a result call's ``succeeded``/``failed`` read as ``completed``).
    :param queue_position: the queue position, when a status call told it.
    :param at: when the poll started (Unix seconds).
    """

    state: RequestStatus
    queue_position: int | None = None
    at: float = 0.0

    def describe(self) -> str:
        """``in_queue at queue position 3``, ``in_progress``: the state as the logs name it."""
        if self.queue_position is not None and self.state is RequestStatus.IN_QUEUE:
            return f"{self.state.value} at queue position {self.queue_position}"
        return self.state.value


class Poll(NamedTuple):
    """Make ``call`` at ``at`` (Unix seconds; at once when that has passed)."""

    call: Call
    at: float


class GiveUp(NamedTuple):
    """Stop waiting at ``limit``: cancel the request first (free while it is queued)."""

    limit: Limit


Step = Poll | GiveUp


class PollSettings(NamedTuple):
    """
    :param interval: seconds between polls.
    :param max_interval: far back in the queue, polls are ``interval`` times the queue position
        apart, at most this many seconds.
    """

    interval: float = DEFAULT_POLL_INTERVAL
    max_interval: float = DEFAULT_MAX_POLL_INTERVAL

    def seconds_after(self, seen: Seen) -> float:
        """
        Seconds from ``seen`` to the next poll.

        Every request ahead must start before this one can, so a far-back request is polled less
        often; near the front, or running, it is polled every ``interval``. A request finishes only
        after running, so its end is still seen within ``interval`` unless it both starts and
        finishes within one long wait, which is at most ``max_interval``.
        """
        position = seen.queue_position
        if seen.state is RequestStatus.IN_QUEUE and position is not None and position > 1:
            return min(max(self.max_interval, self.interval), self.interval * position)
        return self.interval


class WaitLimits(NamedTuple):
    """
    :param deadline: Unix time after which waiting stops, whatever the request's state.
    :param queue_deadline: Unix time after which a request still ``in_queue`` is cancelled
        (free: a queued request is not billed); a running request is no longer bound by it.
    """

    deadline: float | None = None
    queue_deadline: float | None = None

    @classmethod
    def starting(cls, now: float, timeout: float | None, queue_timeout: float | None = None) -> WaitLimits:
        """Limits ``timeout`` and ``queue_timeout`` seconds after ``now`` (``None``: no limit)."""
        return cls(
            deadline=None if timeout is None else now + timeout,
            queue_deadline=None if queue_timeout is None else now + queue_timeout,
        )

    def passed(self, state: RequestStatus, now: float) -> Limit | None:
        """The limit that has passed at ``now`` for a request in ``state``, if any."""
        if self.deadline is not None and now >= self.deadline:
            return "deadline"
        if state is RequestStatus.IN_QUEUE and self.queue_deadline is not None and now >= self.queue_deadline:
            return "queue"
        return None

    def next_for(self, state: RequestStatus) -> float | None:
        """The earliest limit that binds a request in ``state``."""
        bound = [self.deadline]
        if state is RequestStatus.IN_QUEUE:
            bound.append(self.queue_deadline)
        return min((limit for limit in bound if limit is not None), default=None)

    def without_queue_limit(self) -> WaitLimits:
        return self._replace(queue_deadline=None)


class WaitPlan(NamedTuple):
    """The rules of one wait: poll settings and limits. :meth:`next_step` says what to do next."""

    settings: PollSettings = PollSettings()
    limits: WaitLimits = WaitLimits()

    def next_step(self, seen: Seen | None, now: float) -> Step:
        """
        What to do after seeing ``seen`` (``None``: nothing yet), at ``now``.

        The first poll is a status call, at once (it tells the queue position). A status call that
        says the request finished is followed at once by the result call. A passed limit is acted
        on only once a poll was made at or after it, so a request that finished just in time is
        not cancelled; until then the next poll is moved forward to the limit.
        """
        if seen is None:
            return Poll(Call.STATUS, now)
        if seen.state.is_finished:
            return Poll(Call.RESULT, now)
        limit = self.limits.passed(seen.state, seen.at)
        if limit is not None:
            return GiveUp(limit)
        due = seen.at + self.settings.seconds_after(seen)
        bound = self.limits.next_for(seen.state)
        if bound is not None:
            due = min(due, bound)
        return Poll(Call.RESULT if near_front(seen) else Call.STATUS, due)

    def after_give_up(self, step: GiveUp, outcome: CancelOutcome | None, seen: Seen) -> tuple[WaitPlan, Seen] | None:
        """
        The plan and state to go on with after cancelling at ``step``, or ``None`` to stop waiting.

        A request that left the queue just as its queue limit passed cannot be cancelled and will be
        billed anyway: dropping it then would waste the money, so the wait goes on to the deadline.
        """
        if step.limit == "queue" and outcome is CancelOutcome.NOT_CANCELLABLE:
            running = seen._replace(state=RequestStatus.IN_PROGRESS, queue_position=None)
            return self._replace(limits=self.limits.without_queue_limit()), running
        return None


def near_front(seen: Seen) -> bool:
    """Whether to poll the result call: running, or queued near the front (see :data:`NEAR_FRONT`)."""
    return seen.state is not RequestStatus.IN_QUEUE or (seen.queue_position or 0) <= NEAR_FRONT


def give_up_message(request_id: str, limit: Limit, outcome: CancelOutcome | None) -> str:
    """Why a request was given up on, and whether it will be billed."""
    if outcome is CancelOutcome.CANCELLED:
        fate = "it was still queued and has been cancelled, so it will not be billed"
    elif outcome is CancelOutcome.NOT_CANCELLABLE:
        fate = "it was already running and could not be cancelled, so it will still be billed"
    else:
        fate = "cancelling it failed, so it may still run and be billed"
    what = "did not finish before its deadline" if limit == "deadline" else "stayed queued past its queue limit"
    return f"Kling request {request_id} {what}; {fate}"


class Exit(str, Enum):
    """How a wait ended without a video."""

    #: The plan's own limit (``timeout``, ``queue_timeout``) passed: the planner gives up, cancelling
    #: whatever the state (a running request answers ``not_cancellable``, which the give-up reports).
    LIMIT = "limit"
    #: The request finished without a video (failed, or cancelled on the server): nothing to cancel.
    FINISHED = "finished"
    #: Airflow's limit passed: the sensor's ``timeout``, ``execution_timeout``, a deferral timeout.
    TIMEOUT = "timeout"
    #: A user stopped the task (marked it failed or success, cleared it).
    KILLED = "killed"
    #: Anything else: polls kept failing, the trigger failed, the worker's code raised.
    ERROR = "error"
    #: A later try of the task has another input (its parameters or its map index's item changed):
    #: the request an earlier try waited for is nobody's any more.
    ABANDONED = "abandoned"


class ExitAction(str, Enum):
    """What becomes of the request when its wait ends without a video."""

    #: Cancel it: free while queued; a request that started meanwhile answers ``not_cancellable``.
    CANCEL = "cancel"
    #: It was seen running: it cannot be cancelled and will be billed; the log names it.
    SAY_BILLED = "say_billed"
    #: Leave it: the next try of the task waits for the same request (resumes it).
    KEEP = "keep"
    #: Nothing to do: it finished, was already cancelled, or the user asked not to cancel.
    NOTHING = "nothing"


def on_exit(
    exit: Exit, *, last_state: RequestStatus | None, next_try_resumes: bool, cancel_on_kill: bool = True
) -> ExitAction:
    """
    What a wait that ended by ``exit`` does to its request: the decision of the exit rule
    (:func:`airflow_provider_kling.exit_rule.end_wait`, which acts on it).

    Nobody waits for a request after its wait ends, so it would be billed for nothing: it is
    cancelled (free while queued). The exceptions: a request known to be finished; one seen running
    (states only move forward, so it cannot be queued again: the log says it is billed); a user's
    stop with ``cancel_on_kill=False``; and an error with a retry to come that resumes the same
    request, which must find it alive.

    :param last_state: the request's last state seen, ``None`` when unknown.
    :param next_try_resumes: a retry of the task will follow, and will wait for this same request.
    """
    if exit is Exit.LIMIT:
        return ExitAction.CANCEL
    if exit is Exit.FINISHED or (last_state is not None and last_state.is_finished):
        return ExitAction.NOTHING
    if exit is Exit.KILLED and not cancel_on_kill:
        return ExitAction.NOTHING
    if exit is Exit.ERROR and next_try_resumes:
        return ExitAction.KEEP
    if last_state is RequestStatus.IN_PROGRESS:
        return ExitAction.SAY_BILLED
    return ExitAction.CANCEL
