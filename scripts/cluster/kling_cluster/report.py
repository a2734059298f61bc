"""The report of a run: the layouts side by side, the whole run's measures, the faults; written to docs/cluster.md."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from kling_cluster.processes import Cluster
    from kling_cluster.simulator import ClusterSimulator

    pass


from airflow_provider_kling.worker_run import PHASES as RUN_PHASES
from kling_cluster.attribution import POLL_SECONDS, SLOW_AFTER, Timeline, fault_windows, outside_outages
from kling_cluster.calls import Calls, count_calls
from kling_cluster.checks import percentile
from kling_cluster.observations import Observations, json_value, query
from kling_cluster.settings import DOC, GENERATES, OUTAGE_TAIL, SPEND_COUNTERS, STORED_BY, layout_of, share
from kling_cluster.simulator import from_triggerer

#: The Retry-After of the run's 429s.
RETRY_AFTER_SECONDS = 1.0


def measures(cluster: Cluster, sim: ClusterSimulator, seen: Observations) -> list[tuple[str, str]]:
    n = cluster.shape.generations
    offset = time.time() - time.monotonic()
    overhead = list(ready_to_stored(cluster, sim, offset).values())
    killed = seen.triggerer_killed_at
    takeover = [started - killed for started in survivor_trigger_starts(cluster, seen)]
    generations = set(sim.generations())
    detection = [
        fired - sim.ready_at(rid, offset) for rid, fired in trigger_events(cluster).items() if rid in generations
    ]
    calls = sum(seen.calls.get(c, 0) for c in ("submit", "status", "result", "cancel", "video"))
    by_call = ", ".join(f"{count} {call}" for call, count in seen.calls.items())
    slots = [seconds for _, seconds in seen.slots]
    statsd = seen.statsd
    triggerer_cpu = sum(seen.triggerer_cpu.values())
    return [
        ("generations", f"{n}"),
        ("wall time", f"{seen.finished - seen.started:.0f} s"),
        ("overhead beyond rendering, p50 / p99 (video ready on the server -> video in storage)",
         f"{percentile(overhead, 0.5):.1f} s / {percentile(overhead, 0.99):.1f} s"),
        ("  of which: video ready -> the trigger's event, p50 / p99",
         f"{percentile(detection, 0.5):.1f} s / {percentile(detection, 0.99):.1f} s (the poll interval is 5 s)"),
        ("generations in flight at once (submitted, not finished), at the peak", f"{peak_in_flight(sim, offset)}"),
        ("surviving triggerer took over (trigger rows moved)", f"{seen.moved_over_at - killed:.1f} s"),
        ("a moved trigger running again on the survivor, after the kill: p50 / max",
         f"{percentile(takeover, 0.5):.1f} s / {max(takeover, default=float('nan')):.1f} s ({len(takeover)} triggers)"),
        ("HTTP calls per generation", f"{calls / n:.1f} ({by_call}; {sim.refused} refused in the window)"),
        ("triggerer CPU seconds per generation", f"{triggerer_cpu / n:.3f} ({triggerer_cpu:.1f} s in all)"),
        ("worker-slot seconds per generation",
         f"{sum(slots) / n:.1f} ({len(slots)} task runs, median {percentile(slots, 0.5):.1f} s)"),
        ("tasks SIGKILLed between submit and deferral", f"{len(seen.killed_between_submit_and_deferral)}"),
        *submit_run_rows(cluster, seen),
        *fault_rows(cluster, seen),
        *window_rows(cluster, sim, seen),
        ("spend, from the metrics (main run and race): submitted / succeeded / resumed / cancelled",
         " / ".join(f"{statsd.total(f'kling.{name}'):.0f}" for name in SPEND_COUNTERS)),
        ("  seconds of video / cost reported",
         f"{statsd.total('kling.video_seconds'):.0f} s / {statsd.total('kling.cost', 'g'):.2f}"),
        ("  budget race refusals (kling.budget_refused)", f"{statsd.total('kling.budget_refused'):.0f}"),
    ]  # fmt: skip


def stored_at(cluster: Cluster) -> dict[tuple[str, int], float]:
    """
    When each generation's video was in storage, per (layout, map index): the end of the task that
    stores it (``one_run.generate``, which the trigger ends once the video landed; ``two_tasks.copy``).
    """
    return {
        (layout_of(task), index): end.timestamp()
        for task, index, end in query(
            cluster,
            "SELECT task_id, map_index, end_date FROM task_instance WHERE dag_id = 'kling_cluster' "
            "AND task_id = ANY(%s) AND state = 'success'",
            list(STORED_BY.values()),
        )
    }


def ready_to_stored(cluster: Cluster, sim: ClusterSimulator, offset: float) -> dict[tuple[str, int], float]:
    """Seconds from "video ready on the server" to "video in storage", per (layout, map index)."""
    ends = stored_at(cluster)
    return {
        key: ends[key] - sim.ready_at(rid, offset)
        for key, rid in request_ids(cluster).items()
        if key in ends and rid in sim.requests
    }


def request_ids(cluster: Cluster) -> dict[tuple[str, int], str]:
    """The request of each generation, per (layout, map index), from the generate tasks' XCom."""
    rows = query(
        cluster,
        "SELECT task_id, map_index, value FROM xcom WHERE dag_id = 'kling_cluster' AND task_id = ANY(%s) "
        "AND key = 'request_id'",
        GENERATES,
    )
    return {(layout_of(task), index): str(json_value(value)) for task, index, value in rows}


#: The log line each paying run writes (``airflow_provider_kling.worker_run``).
WORKER_RUN_LINE = re.compile(
    r"Kling worker run: ours [\d.]+ s \((?P<phases>[^)]*)\); in the task process before execute: (?P<before>[\d.]+) s"
)


def paying_runs(cluster: Cluster, task_id: str) -> list[dict[str, float]]:
    """Each paying run of ``task_id`` in the main run: its phases' seconds, and Airflow's before ``execute``."""
    runs = []
    for log in (cluster.logs / "tasks" / "dag_id=kling_cluster").rglob(f"task_id={task_id}/**/attempt=*.log"):
        if ".trigger." in log.name:
            continue
        for match in WORKER_RUN_LINE.finditer(log.read_text(errors="replace")):
            phases = dict(part.rsplit(" ", 1) for part in match["phases"].split(", "))
            runs.append({**{name: float(phases.get(name, 0)) for name in RUN_PHASES}, "before": float(match["before"])})
    return runs


def submit_run_rows(cluster: Cluster, seen: Observations) -> list[tuple[str, str]]:
    """
    The paid submit's worker run (``one_run``'s only run), broken down: the provider's phases from
    the log line each of its paying runs writes, Airflow's share the rest of the slot (the task
    process's start to ``execute``, measured in it; the supervisor's fork before, the deferral's
    report and the exit after).
    """
    runs = paying_runs(cluster, STORED_BY["one_run"])
    slots = [seconds for task, seconds in seen.slots if task == STORED_BY["one_run"]]
    if not runs or not slots:
        return [("the paid submit's worker run", "not measured (no 'Kling worker run' log lines)")]
    ours = [sum(run[name] for name in RUN_PHASES) for run in runs]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    def phases(stat: Callable[[list[float]], float]) -> str:
        return ", ".join(f"{name} {stat([run[name] for run in runs]):.2f}" for name in RUN_PHASES)

    before = mean([run["before"] for run in runs])
    slot = mean(slots)
    return [
        (
            "the paid submit's worker run (`one_run`), slot mean / median",
            f"{slot:.2f} s / {percentile(slots, 0.5):.2f} s ({len(slots)} runs)",
        ),
        ("  ours, mean", f"{mean(ours):.2f} s: {phases(mean)} ({len(runs)} paying runs)"),
        ("  ours, median", f"{percentile(ours, 0.5):.2f} s: {phases(lambda v: percentile(v, 0.5))}"),
        (
            "  Airflow's: the task process's start -> `execute`, mean",
            f"{before:.2f} s (task runner, DAG file, context)",
        ),
        (
            "  Airflow's: the rest of the slot (fork before, report and exit after), mean",
            f"{max(slot - mean(ours) - before, 0):.2f} s",
        ),
        (
            "  our share of the run",
            f"{mean(ours) / slot:.0%} by the mean, {percentile(ours, 0.5) / percentile(slots, 0.5):.0%} at the "
            "median (goal: under a quarter)",
        ),
    ]


def layout_rows(
    cluster: Cluster, sim: ClusterSimulator, seen: Observations, lines: list[Timeline]
) -> list[tuple[str, ...]]:
    """The layouts side by side: what each generation cost in task runs, worker slots, latency and calls."""
    offset = time.time() - time.monotonic()
    counted = count_calls(lines, seen, fault_windows(seen))
    stored_after = ready_to_stored(cluster, sim, offset)
    requests = request_ids(cluster)
    fired = trigger_events(cluster)
    columns = []
    for layout in cluster.layouts:
        count = len(share(cluster, layout))
        runs = [seconds for task, seconds in seen.slots if layout_of(task) == layout]
        mine = {key: rid for key, rid in requests.items() if key[0] == layout}
        latency = [stored_after[key] for key in mine if key in stored_after]
        calm = [
            stored_after[key]
            for key, rid in mine.items()
            if key in stored_after and outside_outages(sim.ready_at(rid, offset), seen)
        ]
        seen_after = [fired[rid] - sim.ready_at(rid, offset) for rid in mine.values() if rid in fired]
        calls = counted.get(layout, Calls())
        columns.append(
            [
                f"{count}",
                f"{len(runs) / count:.2f} ({len(runs)} runs)",
                f"{sum(runs) / count:.1f} (median run {percentile(runs, 0.5):.1f} s)",
                f"{percentile(calm, 0.5):.1f} s / {percentile(calm, 0.99):.1f} s ({len(calm)} generations)"
                if calm
                else "none: every video was ready within an outage's window",
                f"{percentile(latency, 0.5):.1f} s / {percentile(latency, 0.99):.1f} s",
                f"{percentile(seen_after, 0.5):.1f} s / {percentile(seen_after, 0.99):.1f} s",
                f"{calls.per(calls.beyond):+.1f} ({calls.per(calls.answered):.1f} answered, floor "
                f"{calls.per(calls.floor):.1f}, of which {calls.per(calls.skipped):.1f} not polled)",
            ]
        )
    names = [
        "generations",
        "task runs per generation",
        "worker-slot seconds per generation",
        "ready -> stored, p50 / p99, ready outside the outages (1)",
        "ready -> stored, p50 / p99, every generation",
        "  of which: ready -> seen by the trigger, p50 / p99",
        "HTTP calls answered per generation beyond the floor (2)",
    ]
    rows = [(name, *(column[row] for column in columns)) for row, name in enumerate(names)]
    causes = sorted({cause for calls in counted.values() for cause in calls.off_plan})
    for cause in sorted(causes, key=lambda c: -sum(calls.off_plan[c] for calls in counted.values())):
        cells = [counted.get(layout, Calls()) for layout in cluster.layouts]
        rows.append((f"  beyond the floor: {cause}", *(f"{calls.per(calls.off_plan[cause]):.2f}" for calls in cells)))
    return rows


def fault_rows(cluster: Cluster, seen: Observations) -> list[tuple[str, str]]:
    """What each failure of the infrastructure did: tries that failed in its wake, processes restarted."""
    faults = [
        ("the API down (connections dropped)", "the API", seen.api_down),
        ("PostgreSQL down (a failover)", "PostgreSQL", seen.database_down),
        ("Redis restarted (empty)", "Redis", (seen.broker_restarted_at, seen.broker_restarted_at)),
    ]
    rows = []
    for label, key, (begin, end) in faults:
        if not begin:
            continue
        # A try fails within a minute of the fault's end at the latest (its polls' retries, a heartbeat).
        failed = query(
            cluster,
            "SELECT task_id, count(*) FROM task_instance_history WHERE dag_id = 'kling_cluster' "
            "AND state IN ('failed', 'up_for_retry') AND end_date BETWEEN to_timestamp(%s) AND to_timestamp(%s) "
            "GROUP BY task_id ORDER BY task_id",
            begin,
            end + 60,
        )
        tries = ", ".join(f"{count} {task}" for task, count in failed) or "none"
        restarted = ", ".join(seen.restarted_after.get(key, [])) or "none"
        effect = f"tries failed in its wake: {tries}; processes restarted: {restarted}"
        rows.append((f"{label}: {end - begin:.0f} s", effect))
    return rows


def window_rows(cluster: Cluster, sim: ClusterSimulator, seen: Observations) -> list[tuple[str, str]]:
    """
    Per fault window of the API, what the waits cost it and how fast they saw its end: the calls
    that reached it during the window, and, over every request still pending when it ended, the
    time from its end to that request's next answered poll (p50 / p99).
    """
    rows = []
    begin, end = seen.api_down
    if begin:
        attempts, intervals = sim.attempts_while_down, (end - begin) / POLL_SECONDS
        waits = sum(1 for _at, _path, agent in sim.attempts_log if from_triggerer(agent))
        triggerers = triggerers_at(seen, end)
        rows.append(
            (
                f"  the API down {end - begin:.0f} s: calls that reached it",
                f"{attempts}, of which the triggerers' waits {waits} ({waits / (triggerers * intervals):.2f} per "
                f"triggerer per {POLL_SECONDS:.0f}-s poll interval, {triggerers} triggerer(s) running; bar: 2); "
                "the others are the workers' calls, retried on a worker as each is",
            )
        )
        back = recovery(sim, end)
        rows.append(
            (
                "  the API back -> each pending wait's next answered poll, p50 / p99",
                f"{percentile(back, 0.5):.1f} s / {percentile(back, 0.99):.1f} s ({len(back)} waits; bar: p99 <= 7 s)",
            )
        )
    begin, end = seen.refusal
    if begin:
        refused = [at for at in sim.refusal_times() if begin <= at <= end]
        waits = [at for at in sim.refusal_times(triggerers_only=True) if begin <= at <= end]
        triggerers = triggerers_at(seen, end)
        per = len(waits) / (triggerers * (end - begin) / RETRY_AFTER_SECONDS)
        rows.append(
            (
                f"  429 and 503 window, {end - begin:.0f} s: calls refused",
                f"{len(refused)}, of which the triggerers' waits {len(waits)} ({per:.2f} per triggerer per "
                f"{RETRY_AFTER_SECONDS:.0f}-s Retry-After, {triggerers} triggerer(s) running at its end; bar: 1); "
                "the others are the workers' submits and checks before deferring",
            )
        )
        back = recovery(sim, end)
        rows.append(
            (
                "  the window over -> each pending wait's next answered poll, p50 / p99",
                f"{percentile(back, 0.5):.1f} s / {percentile(back, 0.99):.1f} s ({len(back)} waits)",
            )
        )
    return rows


def triggerers_at(seen: Observations, at: float) -> int:
    """The triggerers running at ``at``: two, less the one the scenario killed (it is not started again)."""
    killed = seen.triggerer_killed_at
    return 2 - (1 if seen.killed_triggerer and killed and killed <= at else 0)


def recovery(sim: ClusterSimulator, back: float) -> list[float]:
    """For each request that was polled before ``back`` and again after it: the wait from ``back`` to that poll."""
    found = []
    for calls in sim.history.values():
        polls = [at for call, at in calls if call in ("status", "result")]
        before = [at for at in polls if at < back]
        after = [at for at in polls if at >= back]
        if before and after:
            found.append(after[0] - back)
    return found


ENDED_IN_TRIGGERER = "the task ends here, in the triggerer"


def trigger_events(cluster: Cluster) -> dict[str, float]:
    """
    When each request's trigger fired its success event (the last time, if a moved trigger fired
    twice). Error events (the API down) are left out: they come before the video is ready.
    """
    fired: dict[str, float] = {}
    for log in (cluster.logs / "tasks").rglob("*.trigger.*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if '"Trigger fired event"' in line and "'outcome': 'succeeded'" in line:
                record = json.loads(line)
                match = re.search(r"'request_id': '([^']+)'", str(record.get("result", "")))
            elif ENDED_IN_TRIGGERER in line:  # one_run: the trigger stored the video and ends the task
                record = json.loads(line)
                match = re.search(r"Kling request (\S+) succeeded", str(record.get("event", "")))
            else:
                continue
            if match:
                stamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
                fired[match.group(1)] = max(fired.get(match.group(1), 0.0), stamp)
    return fired


def peak_in_flight(sim: ClusterSimulator, offset: float) -> int:
    """The most requests of the main run submitted and not yet finished at one time."""
    changes = []
    for rid in sim.generations():
        sim_request = sim.requests[rid]
        changes += [(sim_request.created + offset, 1), (sim.ready_at(rid, offset), -1)]
    peak = current = 0
    for _, change in sorted(changes):
        current += change
        peak = max(peak, current)
    return peak


def survivor_trigger_starts(cluster: Cluster, seen: Observations) -> list[float]:
    """When the survivor started each trigger it took over, from the trigger logs Airflow writes per triggerer."""
    jobs = seen.triggerer_jobs
    killed_id = jobs.get(seen.killed_triggerer)
    survivor_id = next((job for host, job in jobs.items() if host != seen.killed_triggerer), None)
    starts = []
    for log in (cluster.logs / "tasks").rglob(f"*.trigger.{survivor_id}.log"):
        before = log.with_name(log.name.replace(f".trigger.{survivor_id}.", f".trigger.{killed_id}."))
        first = log.read_text(errors="replace").split("\n", 1)[0]
        if before.exists() and first.startswith("{"):
            starts.append(datetime.fromisoformat(json.loads(first)["timestamp"].replace("Z", "+00:00")).timestamp())
    return starts


#: What the side-by-side rows count, said under their table.
DEFINITIONS = [
    f"(1) A video ready from one poll interval ({POLL_SECONDS:.0f} s) before an outage of the API or the database "
    f"to {OUTAGE_TAIL:.0f} s after its end is inside it: no poll can see it until the API answers again. Ready -> "
    "stored runs from the video ready on the server to the end of the task that stored it.",
    "(2) The floor is what a waiter on the provider's plan needs, replayed through each request's own timeline "
    "on the server: 1 submit, the check at the submit, each poll when the plan says (while queued, the interval "
    "times the queue position, at most 30 s apart; near the front and while rendering, every interval, through the "
    "result call), the result call after a status that saw it finished, 1 video. Where nobody could poll (the API "
    "down or refusing; the triggerers gone in the database's failover, or killed before their takeover), its "
    "waiter does not either, and polls once when it can again. A call is beyond the floor when the plan did not "
    "ask for it: early, from a second task (a resume's check, a copy's fresh result), a status call where the "
    'plan, up to date, asks the result, a second submit or download; the rows under it say which. "Not polled": '
    "the floor's polls the run did not make (pauses the faults imposed past their windows).",
    f"Slow: more than {SLOW_AFTER:.0f} s (two poll intervals) from ready to stored; the whole run's rows say what "
    "delayed each (the fault windows its ready -> stored overlapped; with none, the two causes that are no fault: "
    "the plan's spaced polls far back in the queue, and `two_tasks`' resume and copy runs when the video was seen "
    "within an interval and stored within four of the event), and name any that nothing explains.",
]


def timelines(cluster: Cluster, sim: ClusterSimulator) -> list[Timeline]:
    """Each generation's moments: submitted and ready (the simulator's clock), its trigger's event, stored."""
    offset = time.time() - time.monotonic()
    stored = stored_at(cluster)
    fired = trigger_events(cluster)
    lines = []
    for (layout, index), rid in sorted(request_ids(cluster).items()):
        if rid not in sim.requests:
            continue
        queue, run = sim._timeline(sim.requests[rid])
        ready = sim.ready_at(rid, offset)
        polls = list(sim.history.get(rid, []))  # (call, Unix seconds)
        done = stored.get((layout, index))
        lines.append(
            Timeline(
                layout,
                index,
                rid,
                ready - queue - run,
                ready,
                fired.get(rid),
                done,
                polls=polls,
                by_triggerer=list(sim.by_triggerer.get(rid, [])),
                queue_position=sim.requests[rid].scenario.queue_position,
                queue_seconds=queue,
                run_seconds=run,
            )
        )
    return lines


def report(
    shape_name: str,
    results: list[tuple[str, bool, str]],
    rows: list[tuple[str, str]],
    layouts: list[str],
    side_by_side: list[tuple[str, ...]],
    seen: Observations,
) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"Run by `make cluster` ({shape_name} scenario) on {stamp}: PostgreSQL, Redis, Airflow "
        f"{airflow_version()} with CeleryExecutor, two Celery workers and two triggerers, one machine "
        f"({os.cpu_count()} CPUs).",
        "",
        "| check | held | |",
        "|---|---|---|",
        *[f"| {name} | {'yes' if ok else '**NO**'} | {detail} |" for name, ok, detail in results],
        "",
        "The layouts side by side, in this one run (`scripts/cluster/kling_cluster_dag.py`): `one_run` generates, "
        "stores and ends in the triggerer; `two_tasks` generates, resumes on a worker, then copies in a task of "
        "its own.",
        "",
        "| per generation | " + " | ".join(f"`{layout}`" for layout in layouts) + " |",
        "|---|" + "---|" * len(layouts),
        *["| " + " | ".join(row) + " |" for row in side_by_side],
        "",
        *DEFINITIONS,
        "",
        "The whole run:",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        "Faults, in order: SIGKILL of `worker-1` (tasks between submit and deferral: "
        f"{len(seen.killed_between_submit_and_deferral)}), {seen.refusal[1] - seen.refusal[0]:.0f} s of "
        f"429/503 from the API, SIGKILL of `{seen.killed_triggerer}` ({len(seen.moved)} triggers), "
        "scheduler stop and start, the API down (connections dropped) for "
        f"{seen.api_down[1] - seen.api_down[0]:.0f} s, PostgreSQL stopped for "
        f"{seen.database_down[1] - seen.database_down[0]:.0f} s, Redis restarted.",
    ]
    return "\n".join(lines)


def airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def bench_report(cluster: Cluster, results: list[tuple[str, bool, str]], seen: Observations) -> str:
    """``--bench``: the generations' checks, and the paid submit's worker run broken down, with no fault."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    slots = [seconds for _, seconds in seen.slots]
    n = cluster.shape.generations
    rows = [
        ("worker-slot seconds per generation", f"{sum(slots) / n:.2f} ({len(slots)} task runs)"),
        *submit_run_rows(cluster, seen),
    ]
    return "\n".join(
        [
            f"Run by `make cluster CLUSTER_ARGS=--bench` on {stamp}: {n} `one_run` generations and no fault, "
            f"Airflow {airflow_version()} with CeleryExecutor (PostgreSQL, Redis, two workers of "
            f"{cluster.shape.worker_concurrency} slots, two triggerers), one machine ({os.cpu_count()} CPUs).",
            "",
            "| check | held | |",
            "|---|---|---|",
            *[f"| {name} | {'yes' if ok else '**NO**'} | {detail} |" for name, ok, detail in results],
            "",
            "| measure | value |",
            "|---|---|",
            *[f"| {name} | {value} |" for name, value in rows],
        ]
    )


def write_doc(text: str, section: str = "cluster results") -> None:
    """Put ``text`` between the ``section``'s two markers in docs/cluster.md."""
    start, end = f"<!-- {section} -->", f"<!-- end of {section} -->"
    page = DOC.read_text()
    before, _, rest = page.partition(start)
    _, _, after = rest.partition(end)
    DOC.write_text(f"{before}{start}\n{text}\n{end}{after}")
