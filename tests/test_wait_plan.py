"""The wait planner as a table: what was seen, at what time -> what to do. No HTTP, no sleeps."""

from __future__ import annotations

import pytest

from airflow_provider_kling.states import CancelOutcome, RequestStatus
from airflow_provider_kling.wait_plan import (
    NEAR_FRONT,
    Call,
    Exit,
    ExitAction,
    GiveUp,
    Poll,
    PollSettings,
    Seen,
    WaitLimits,
    WaitPlan,
    give_up_message,
    on_exit,
)

QUEUED, RUNNING, DONE, CANCELLED = (
    RequestStatus.IN_QUEUE,
    RequestStatus.IN_PROGRESS,
    RequestStatus.COMPLETED,
    RequestStatus.CANCELLED,
)
EVERY_5S = PollSettings(interval=5, max_interval=30)
NO_LIMITS = WaitPlan(EVERY_5S)


def seen(state: RequestStatus, position: int | None = None, at: float = 100.0) -> Seen:
    return Seen(state, position, at)


def row(name: str, plan: WaitPlan, last: Seen | None, now: float, step: Poll | GiveUp):
    return pytest.param(plan, last, now, step, id=name)


NEXT_STEPS = [
    row("first poll: status, at once", NO_LIMITS, None, 100, Poll(Call.STATUS, 100)),
    row("status says finished: the result, at once", NO_LIMITS, seen(DONE), 101, Poll(Call.RESULT, 101)),
    row("cancelled on the server: the result, at once", NO_LIMITS, seen(CANCELLED), 101, Poll(Call.RESULT, 101)),
    # Fixed rate: due one interval after the *start* of the last poll, however long it took.
    row("running: the result call every interval", NO_LIMITS, seen(RUNNING), 103, Poll(Call.RESULT, 105)),
    row("a poll that is overdue comes at once", NO_LIMITS, seen(RUNNING), 140, Poll(Call.RESULT, 105)),
    row("queued near the front: the result call", NO_LIMITS, seen(QUEUED, NEAR_FRONT), 101,
        Poll(Call.RESULT, 100 + 5 * NEAR_FRONT)),
    row("queued at 1: every interval", NO_LIMITS, seen(QUEUED, 1), 101, Poll(Call.RESULT, 105)),
    row("queued, position unknown (result call): every interval", NO_LIMITS, seen(QUEUED), 101,
        Poll(Call.RESULT, 105)),
    # Adaptive: far back, the interval grows with the position (status call: it tells the position).
    row("queued at 6: status, 6 intervals on", NO_LIMITS, seen(QUEUED, 6), 101, Poll(Call.STATUS, 130)),
    row("queued at 50: status, capped at max_interval", NO_LIMITS, seen(QUEUED, 50), 101, Poll(Call.STATUS, 130)),
    row("max_interval below the interval: the interval", WaitPlan(PollSettings(5, 1)), seen(QUEUED, 50), 101,
        Poll(Call.STATUS, 105)),
    # Limits: the next poll moves forward to a limit; the limit is acted on after a poll at or past it.
    row("deadline ahead of the next poll: poll at the deadline", WaitPlan(EVERY_5S, WaitLimits(deadline=102)),
        seen(RUNNING), 101, Poll(Call.RESULT, 102)),
    row("deadline passed since the last poll: one last look first", WaitPlan(EVERY_5S, WaitLimits(deadline=102)),
        seen(RUNNING, at=101), 103, Poll(Call.RESULT, 102)),
    row("deadline passed at the last poll: give up", WaitPlan(EVERY_5S, WaitLimits(deadline=102)),
        seen(RUNNING, at=102), 102.1, GiveUp("deadline")),
    row("queue limit passed, still queued: give up", WaitPlan(EVERY_5S, WaitLimits(queue_deadline=100)),
        seen(QUEUED, 2), 100.1, GiveUp("queue")),
    row("queue limit passed, running: it binds no more", WaitPlan(EVERY_5S, WaitLimits(queue_deadline=100)),
        seen(RUNNING), 100.1, Poll(Call.RESULT, 105)),
    row("queue limit ahead, running: not a reason to poll early", WaitPlan(EVERY_5S, WaitLimits(queue_deadline=101)),
        seen(RUNNING), 100.1, Poll(Call.RESULT, 105)),
    row("queue limit ahead, queued: poll at the limit", WaitPlan(EVERY_5S, WaitLimits(queue_deadline=101)),
        seen(QUEUED, 9), 100.1, Poll(Call.STATUS, 101)),
    row("both passed: the deadline wins", WaitPlan(EVERY_5S, WaitLimits(deadline=90, queue_deadline=80)),
        seen(QUEUED, 2), 100.1, GiveUp("deadline")),
    row("a finished request is fetched even past the deadline", WaitPlan(EVERY_5S, WaitLimits(deadline=90)),
        seen(DONE), 100.1, Poll(Call.RESULT, 100.1)),
]  # fmt: skip


@pytest.mark.parametrize(("plan", "last", "now", "step"), NEXT_STEPS)
def test_next_step(plan: WaitPlan, last: Seen | None, now: float, step: Poll | GiveUp) -> None:
    assert plan.next_step(last, now) == step


def test_a_stale_hand_off_is_polled_at_once() -> None:
    # A triggerer restart recreates the trigger an hour after the task's poll: the poll is overdue.
    step = NO_LIMITS.next_step(seen(QUEUED, 50, at=100), now=3700)
    assert isinstance(step, Poll)
    assert step.at <= 3700


@pytest.mark.parametrize(
    ("limit", "outcome", "goes_on"),
    [
        ("queue", CancelOutcome.CANCELLED, False),
        ("queue", None, False),  # the cancel failed: stop, saying it may be billed
        ("queue", CancelOutcome.NOT_CANCELLABLE, True),  # it just started: paid for anyway, so wait for it
        ("deadline", CancelOutcome.NOT_CANCELLABLE, False),
        ("deadline", CancelOutcome.CANCELLED, False),
    ],
)
def test_after_giving_up(limit, outcome, goes_on) -> None:
    plan = WaitPlan(EVERY_5S, WaitLimits(deadline=1000, queue_deadline=100))
    going_on = plan.after_give_up(GiveUp(limit), outcome, seen(QUEUED, 2, at=100))
    assert (going_on is not None) is goes_on
    if going_on is not None:
        plan, now_seen = going_on
        assert plan.limits == WaitLimits(deadline=1000)
        assert now_seen == Seen(RUNNING, None, 100)
        assert plan.next_step(now_seen, 101) == Poll(Call.RESULT, 105)


def test_limits_start_from_the_time_given() -> None:
    assert WaitLimits.starting(1000, 60, 30) == WaitLimits(deadline=1060, queue_deadline=1030)
    assert WaitLimits.starting(1000, None) == WaitLimits()


@pytest.mark.parametrize(
    ("limit", "outcome", "words"),
    [
        ("deadline", CancelOutcome.CANCELLED, "did not finish before its deadline; it was still queued and has been "
                                              "cancelled, so it will not be billed"),
        ("deadline", CancelOutcome.NOT_CANCELLABLE, "did not finish before its deadline; it was already running and "
                                                    "could not be cancelled, so it will still be billed"),
        ("queue", None, "stayed queued past its queue limit; cancelling it failed, so it may still run and be billed"),
    ],
)  # fmt: skip
def test_give_up_message_says_whether_it_is_billed(limit, outcome, words) -> None:
    assert give_up_message("r-1", limit, outcome) == f"Kling request r-1 {words}"


EXITS = [
    # exit, last state, a retry resumes it, cancel_on_kill -> action
    (Exit.TIMEOUT, QUEUED, False, True, ExitAction.CANCEL),
    (Exit.TIMEOUT, None, False, True, ExitAction.CANCEL),
    (Exit.TIMEOUT, QUEUED, True, True, ExitAction.CANCEL),  # a timeout is final for this request
    (Exit.TIMEOUT, RUNNING, False, True, ExitAction.SAY_BILLED),
    (Exit.ERROR, QUEUED, True, True, ExitAction.KEEP),  # the next try resumes it
    (Exit.ERROR, QUEUED, False, True, ExitAction.CANCEL),  # the last try: nobody will wait for it
    (Exit.ERROR, RUNNING, False, True, ExitAction.SAY_BILLED),
    (Exit.ERROR, DONE, False, True, ExitAction.NOTHING),
    (Exit.KILLED, QUEUED, False, True, ExitAction.CANCEL),
    (Exit.KILLED, QUEUED, False, False, ExitAction.NOTHING),
    (Exit.KILLED, RUNNING, False, True, ExitAction.SAY_BILLED),
    (Exit.LIMIT, QUEUED, False, True, ExitAction.CANCEL),  # the planner gives up: cancel, whatever the state
    (Exit.LIMIT, RUNNING, False, True, ExitAction.CANCEL),  # a running one answers not_cancellable, and is named billed
    (Exit.FINISHED, None, False, True, ExitAction.NOTHING),
    (Exit.TIMEOUT, CANCELLED, False, True, ExitAction.NOTHING),
]


@pytest.mark.parametrize(("exit", "last_state", "resumes", "cancel_on_kill", "action"), EXITS)
def test_every_exit(exit, last_state, resumes, cancel_on_kill, action) -> None:
    assert on_exit(exit, last_state=last_state, next_try_resumes=resumes, cancel_on_kill=cancel_on_kill) is action
