"""
When waiting for a request stops: an overall deadline and an optional limit on time spent queued.

Both are absolute Unix times, so a trigger recreated after a triggerer restart keeps the limits it
started with. The sync hook's ``wait`` and the trigger apply the same rules through this module.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

from airflow_provider_kling.models import CancelOutcome, RequestStatus

Limit = Literal["deadline", "queue"]


@dataclasses.dataclass(frozen=True)
class WaitLimits:
    """
    :param deadline: Unix time after which waiting stops, whatever the request's state.
    :param queue_deadline: Unix time after which a request still ``in_queue`` is cancelled
        (free: a queued request is not billed); a running request is no longer bound by it.
    """

    deadline: float | None = None
    queue_deadline: float | None = None

    @classmethod
    def starting_now(cls, timeout: float | None, queue_timeout: float | None = None) -> WaitLimits:
        """Limits ``timeout`` and ``queue_timeout`` seconds from now (``None``: no limit)."""
        now = time.time()
        return cls(
            deadline=None if timeout is None else now + timeout,
            queue_deadline=None if queue_timeout is None else now + queue_timeout,
        )

    def passed(self, status: RequestStatus, now: float | None = None) -> Limit | None:
        """The limit that has passed for a request in ``status``, if any."""
        now = time.time() if now is None else now
        if self.deadline is not None and now >= self.deadline:
            return "deadline"
        if status is RequestStatus.IN_QUEUE and self.queue_deadline is not None and now >= self.queue_deadline:
            return "queue"
        return None

    def sleep_seconds(self, poll_interval: float, now: float | None = None) -> float:
        """How long to sleep before the next poll: the interval, cut short by a limit still ahead."""
        now = time.time() if now is None else now
        ahead = [limit - now for limit in (self.deadline, self.queue_deadline) if limit is not None and limit > now]
        return min([poll_interval, *ahead])

    def without_queue_limit(self) -> WaitLimits:
        return dataclasses.replace(self, queue_deadline=None)


def poll_seconds(status: RequestStatus, queue_position: int | None, poll_interval: float, max_interval: float) -> float:
    """
    Seconds until the next poll: ``poll_interval`` times the queue position while queued, capped.

    Every request ahead must start before this one can, so a far-back request is polled less
    often; once it is near the front, or running, it is polled at ``poll_interval``. A request
    finishes only after running, so the completion is still seen within ``poll_interval`` unless
    it both starts and finishes within one long wait, which is at most ``max_interval``.
    """
    if status is RequestStatus.IN_QUEUE and queue_position is not None and queue_position > 1:
        return min(max(max_interval, poll_interval), poll_interval * queue_position)
    return poll_interval


def keeps_waiting(limit: Limit, outcome: CancelOutcome | None) -> bool:
    """
    Whether to go on waiting after giving up at ``limit`` and trying to cancel.

    A request that left the queue just as its queue limit passed cannot be cancelled and will be
    billed anyway: dropping it then would waste the money, so the wait goes on to the deadline.
    """
    return limit == "queue" and outcome is CancelOutcome.NOT_CANCELLABLE


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
