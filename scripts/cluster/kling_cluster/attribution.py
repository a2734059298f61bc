"""
What delayed each slow generation, from the run's own timelines; and the definitions the report's
rows rest on (which videos were ready "outside the outages", the floor of HTTP calls).

A generation is slow when its video took more than two poll intervals from ready on the server to
stored. Each fault of the scenario has a window: a generation is attributed to every window its
ready -> stored overlaps (the API's outage from one poll interval before its onset, since a video
ready then is seen only once the API is back). One that overlaps none is unexplained, and the run
fails naming it with its timeline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from kling_cluster.settings import OUTAGE_TAIL

if TYPE_CHECKING:
    from pathlib import Path

    from kling_cluster.observations import Observations

#: The run's poll interval (the cluster DAG's), and a generation slower than this from ready to stored.
POLL_SECONDS = 5.0
SLOW_AFTER = 2 * POLL_SECONDS
#: How long processes take to come back after a fault the scenario restarts them for (its supervision
#: waits, then a start), and a triggerer's takeover after its peer's kill, to the trigger's next poll.
RESTART_SECONDS = 45.0


@dataclass
class Timeline:
    """One generation, in Unix seconds: when it was submitted, ready, seen by its trigger, stored."""

    layout: str
    index: int
    request_id: str
    submitted: float
    ready: float
    fired: float | None
    stored: float | None
    causes: list[str] = field(default_factory=list)
    #: The calls the API answered for it, as ``(call, Unix seconds)``.
    polls: list[tuple[str, float]] = field(default_factory=list)
    #: For each of :attr:`polls`, whether a triggerer's wait made it (else a worker's task).
    by_triggerer: list[bool] = field(default_factory=list)
    #: Its queue position at the submit (the simulator's, falling to 1 as its queue time passes), and
    #: its seconds queued and rendering on the server.
    queue_position: int = 1
    queue_seconds: float = 0.0
    run_seconds: float = 0.0

    def polls_around_ready(self) -> tuple[float | None, float | None]:
        """The last status or result call answered before the video was ready, and the first after."""
        times = sorted(at for call, at in self.polls if call in ("status", "result"))
        before = [at for at in times if at < self.ready]
        after = [at for at in times if at >= self.ready]
        return (before[-1] if before else None, after[0] if after else None)

    @property
    def ready_to_stored(self) -> float | None:
        return None if self.stored is None else self.stored - self.ready

    def describe(self, start: float) -> str:
        at = {name: getattr(self, name) for name in ("submitted", "ready", "fired", "stored")}
        moments = ", ".join(f"{name} {value - start:.1f} s" for name, value in at.items() if value is not None)
        polls = " ".join(f"{call} {at - start:.1f}" for call, at in self.polls)
        return f"{self.layout}[{self.index}] ({self.request_id}): {moments} into the run; calls: {polls}"


def fault_windows(seen: Observations) -> list[tuple[str, float, float]]:
    """Each fault of the run, as the window of time in which it can delay a generation."""
    windows = []
    begin, end = seen.api_down
    if begin:
        windows.append(
            ("the API down", begin - POLL_SECONDS, end)  # a video ready a poll before the onset waits for its end
        )
    begin, end = seen.database_down
    if begin:
        windows.append(("the database failover and the restarts after it", begin, end + RESTART_SECONDS))
    begin, end = seen.refusal
    if begin:
        windows.append(("the 429 and 503 window", begin, end + POLL_SECONDS))
    if seen.broker_restarted_at:
        windows.append(("Redis restarted", seen.broker_restarted_at, seen.broker_restarted_at + RESTART_SECONDS))
    if seen.worker_killed_at:
        windows.append(("a worker killed", seen.worker_killed_at, seen.worker_killed_at + RESTART_SECONDS))
    begin, end = seen.scheduler_restarted
    if begin:
        windows.append(("the scheduler stopped and started", begin, end + RESTART_SECONDS))
    return windows


def attribute(timelines: list[Timeline], seen: Observations) -> list[Timeline]:
    """Name what delayed each slow generation; return those nothing explains."""
    windows = fault_windows(seen)
    killed, moved = seen.triggerer_killed_at, set(seen.moved)
    unexplained = []
    for line in timelines:
        slow = line.ready_to_stored
        if slow is None or slow <= SLOW_AFTER:
            continue
        end = line.stored if line.stored is not None else line.ready + slow
        line.causes = [name for name, begin, until in windows if line.ready <= until and end >= begin]
        if killed and line.request_id in moved and line.ready <= seen.moved_over_at + RESTART_SECONDS and end >= killed:
            line.causes.append("its triggerer killed, and the takeover")
        if not line.causes and spaced_by_the_plan(line):
            line.causes.append(SPACING)
        if not line.causes and after_the_event_by_design(line):
            line.causes.append(TWO_RUNS)
        if not line.causes:
            unexplained.append(line)
    return unexplained


#: The one cause that is no fault: the plan polls a request far back in the queue up to 30 s apart,
#: and one that starts and finishes between two such polls is seen at the second.
SPACING = "no fault: the plan's polls far back in the queue, it started and finished between two"


#: The other: ``two_tasks`` stores the video two worker runs after its trigger's event (the resume, then
#: the copy task), each queued for a worker slot and scheduled in turn; a full run saw 12 s for the
#: resume alone while many resumed at once.
TWO_RUNS = "no fault: two_tasks' resume and copy, queued for worker slots in turn after the trigger's event"
#: How long those two runs may take, after the event, to count as the layout's own.
TWO_RUNS_BOUND = 4 * POLL_SECONDS


def after_the_event_by_design(line: Timeline) -> bool:
    """A ``two_tasks`` video seen within an interval of ready, stored within four intervals of the event."""
    if line.layout != "two_tasks" or line.fired is None or line.stored is None:
        return False
    return line.fired - line.ready <= POLL_SECONDS + 2 and line.stored - line.fired <= TWO_RUNS_BOUND


def spaced_by_the_plan(line: Timeline) -> bool:
    """Whether the first poll after ready came late because the plan had spaced it far from the one before."""
    last, first = line.polls_around_ready()
    if last is None or first is None:
        return False
    return first - line.ready > POLL_SECONDS + 2 and first - last > 1.5 * POLL_SECONDS


def slow_rows(timelines: list[Timeline], unexplained: list[Timeline], seen: Observations) -> list[tuple[str, str]]:
    """The report's rows: how many generations were slow, what delayed them, and which nothing explains."""
    slow = [line for line in timelines if (line.ready_to_stored or 0) > SLOW_AFTER]
    by_cause: dict[str, int] = {}
    for line in slow:
        for cause in line.causes:
            by_cause[cause] = by_cause.get(cause, 0) + 1
    causes = "; ".join(f"{cause}: {count}" for cause, count in sorted(by_cause.items(), key=lambda kv: -kv[1]))
    rows = [
        (f"generations slower than {SLOW_AFTER:.0f} s from ready to stored", f"{len(slow)} ({causes or 'none'})"),
        ("unexplained slow generations", f"{len(unexplained)}"),
    ]
    rows += [("  unexplained", line.describe(seen.started)) for line in unexplained[:10]]
    return rows


def outside_outages(ready: float, seen: Observations) -> bool:
    """
    Whether a video was ready outside the outages of the API and the database: not from one poll
    interval before an onset (no poll sees it before the API is back) to ``OUTAGE_TAIL`` after the end.
    """
    return not any(
        begin - POLL_SECONDS <= ready <= end + OUTAGE_TAIL
        for begin, end in (seen.api_down, seen.database_down)
        if begin
    )


def keep_timelines(timelines: list[Timeline], seen: Observations, folder: Path) -> Path:
    """The run's per-generation timelines, as JSON beside the report (``--keep``)."""
    path = folder / "timelines.json"
    windows = [{"fault": name, "from": begin, "to": end} for name, begin, end in fault_windows(seen)]
    path.write_text(
        json.dumps(
            {"started": seen.started, "faults": windows, "generations": [asdict(t) for t in timelines]}, indent=1
        )
    )
    return path
