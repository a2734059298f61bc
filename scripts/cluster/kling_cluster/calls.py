"""
The HTTP calls of each generation against the floor: what a waiter on the provider's own plan needs.

The floor replays the wait plan (:mod:`airflow_provider_kling.wait_plan`) through the request's
own timeline on the server: a submit, the check at the submit, then each poll when the plan says
(far back in the queue up to 30 s apart, one per interval near the front and while rendering, the
result call there), the result call after a status that saw it finished, and the video. Where
nobody could poll (the API down or refusing, the triggerers gone in the database's failover, a
killed triggerer's waits before their takeover), the floor's waiter does not poll either, and polls
once when it can again.

Every answered call is then put on the plan or off it: on it when it comes no earlier than the plan
says after the call before it; off it, named by its cause, when it comes early (in which fault's
window), from a second task (a resumed task's check, a copy's fresh result), or as a second submit
or download. Calls beyond the floor are the calls off the plan; the floor less the calls on the
plan are the plan's polls that were skipped (a pause the faults imposed past their windows).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_kling.states import RequestStatus
from airflow_provider_kling.wait_plan import Call, Poll, PollSettings, Seen, WaitPlan

if TYPE_CHECKING:
    from kling_cluster.attribution import Timeline
    from kling_cluster.observations import Observations

POLLS = ("status", "result")
STALE = "a status call where the plan, up to date, asks the result (a restarted trigger's stale view)"
#: A poll this much earlier than the plan's moment is early (the plan's clock and the server's differ by a little).
EARLY_BY = 1.0


@dataclass
class Calls:
    """One layout's calls, summed over its generations."""

    generations: int = 0
    answered: int = 0
    floor: int = 0
    off_plan: Counter[str] = field(default_factory=Counter)

    @property
    def beyond(self) -> int:
        return sum(self.off_plan.values())

    @property
    def skipped(self) -> int:
        """The floor's polls the run did not make (the faults' pauses past their windows)."""
        return self.floor - (self.answered - self.beyond)

    def per(self, count: int) -> float:
        return count / self.generations if self.generations else 0.0


def seen_at(line: Timeline, at: float, call: str = "status") -> Seen:
    """
    What a poll at ``at`` sees on the server's timeline of ``line``'s request: its state, and its
    queue position if the call was a status call (the result call does not tell it).
    """
    queued_until = line.submitted + line.queue_seconds
    if at < queued_until:
        left = max(queued_until - at, 0.0) / line.queue_seconds if line.queue_seconds else 0.0
        position = max(1, math.ceil(line.queue_position * left)) if call == "status" else None
        return Seen(RequestStatus.IN_QUEUE, position, at)
    if at < line.ready:
        return Seen(RequestStatus.IN_PROGRESS, None, at)
    return Seen(RequestStatus.COMPLETED, None, at)


def blind_windows(line: Timeline, seen: Observations) -> list[tuple[float, float]]:
    """
    When nobody could poll ``line``'s request: the API down or refusing (to their ends), and the
    triggerers' absence (the database's failover, a killed triggerer's takeover): from the fault to
    the request's first answered poll after it.
    """
    windows = [window for window in (seen.api_down, seen.refusal) if window[0]]
    starts = [seen.database_down[0]] if seen.database_down[0] else []
    if seen.triggerer_killed_at and line.request_id in seen.moved:
        starts.append(seen.triggerer_killed_at)
    for start in starts:
        after = [at for call, at in line.polls if call in POLLS and at >= start]
        windows.append((start, after[0] if after else start))
    return windows


def plan_floor(line: Timeline, plan: WaitPlan, blind: list[tuple[float, float]]) -> int:
    """The calls of a waiter on the plan for ``line``'s request: submit, polls, video."""
    polls, view = 0, None
    step = plan.next_step(None, line.submitted)
    while True:
        assert isinstance(step, Poll)  # the replay sets no limits
        at = step.at
        for begin, end in blind:
            if begin <= at < end:
                at = end  # it polls once it can again
        view = seen_at(line, at, step.call.value)
        polls += 1
        if view.state.is_finished and step.call is Call.RESULT:
            return 1 + polls + 1
        step = plan.next_step(view, at)


def off_plan(line: Timeline, plan: WaitPlan, windows: list[tuple[str, float, float]]) -> Counter[str]:
    """The calls of ``line`` that the plan did not ask for, by cause."""
    found: Counter[str] = Counter()
    submits = videos = 0
    last: tuple[Seen, bool] | None = None  # what the previous poll saw, and whether a triggerer made it
    for (call, at), by_triggerer in zip(line.polls, line.by_triggerer, strict=True):
        if call == "submit":
            submits += 1
            if submits > 1:
                found["a second submit"] += 1
            continue
        if call == "video":
            videos += 1
            if videos > 1:
                found["a second download of the video"] += 1
            continue
        if call not in POLLS:
            found[f"a {call} call"] += 1
            continue
        if last is not None:
            before, before_by_triggerer = last
            step = plan.next_step(before, before.at)
            assert isinstance(step, Poll)
            if not by_triggerer and before_by_triggerer:
                found["a worker's check after the trigger's wait (a resume, a copy's fresh result)"] += 1
            elif call != step.call.value and call == "status":
                found[STALE] += 1
            elif at < step.at - EARLY_BY:
                during = [name for name, begin, end in windows if begin <= at <= end]
                found[f"early, in {during[0]}" if during else "early, in no fault's window"] += 1
        last = (seen_at(line, at, call), by_triggerer)
    return found


def count_calls(lines: list[Timeline], seen: Observations, windows: list[tuple[str, float, float]]) -> dict[str, Calls]:
    """Each layout's calls: answered, the floor, and those off the plan by cause."""
    from kling_cluster.attribution import POLL_SECONDS

    plan = WaitPlan(PollSettings(POLL_SECONDS))
    layouts: dict[str, Calls] = {}
    for line in lines:
        calls = layouts.setdefault(line.layout, Calls())
        calls.generations += 1
        calls.answered += len(line.polls)
        calls.floor += plan_floor(line, plan, blind_windows(line, seen))
        calls.off_plan.update(off_plan(line, plan, windows))
    return layouts
