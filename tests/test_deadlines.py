from __future__ import annotations

from airflow_provider_kling.deadlines import WaitLimits, give_up_message, keeps_waiting
from airflow_provider_kling.models import CancelOutcome, RequestStatus

QUEUED, RUNNING = RequestStatus.IN_QUEUE, RequestStatus.IN_PROGRESS


def test_the_queue_limit_binds_only_a_queued_request():
    limits = WaitLimits(deadline=100.0, queue_deadline=10.0)
    assert limits.passed(QUEUED, now=9.0) is None
    assert limits.passed(QUEUED, now=10.0) == "queue"
    assert limits.passed(RUNNING, now=50.0) is None
    assert limits.passed(RUNNING, now=100.0) == "deadline"
    assert limits.passed(QUEUED, now=100.0) == "deadline"


def test_no_limits_never_pass():
    assert WaitLimits().passed(QUEUED, now=1e12) is None


def test_sleep_is_cut_short_by_a_limit_ahead_but_not_by_one_behind():
    limits = WaitLimits(deadline=100.0, queue_deadline=10.0)
    assert limits.sleep_seconds(5.0, now=0.0) == 5.0
    assert limits.sleep_seconds(5.0, now=8.0) == 2.0
    # The queue limit is behind for a running request: poll at the interval, not in a busy loop.
    assert limits.sleep_seconds(5.0, now=20.0) == 5.0
    assert limits.sleep_seconds(5.0, now=98.5) == 1.5


def test_limits_are_absolute_so_a_restart_keeps_them():
    limits = WaitLimits.starting_now(60, 30)
    assert limits.deadline is not None
    assert limits.queue_deadline is not None
    assert 29 < limits.deadline - limits.queue_deadline < 31
    assert WaitLimits(limits.deadline, limits.queue_deadline) == limits


def test_a_request_that_left_the_queue_is_kept_since_it_is_billed_anyway():
    assert keeps_waiting("queue", CancelOutcome.NOT_CANCELLABLE)
    assert not keeps_waiting("queue", CancelOutcome.CANCELLED)
    assert not keeps_waiting("deadline", CancelOutcome.NOT_CANCELLABLE)


def test_give_up_messages_say_whether_it_is_billed():
    assert "will not be billed" in give_up_message("r", "queue", CancelOutcome.CANCELLED)
    assert "will still be billed" in give_up_message("r", "deadline", CancelOutcome.NOT_CANCELLABLE)
    assert "may still run and be billed" in give_up_message("r", "deadline", None)
