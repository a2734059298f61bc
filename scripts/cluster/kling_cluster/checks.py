"""The checks of a run: nothing lost, nothing paid twice, the token nowhere, the metrics equal to what was recorded."""

from __future__ import annotations

import hashlib
import subprocess
from typing import TYPE_CHECKING

from airflow_provider_kling.testing.simulator import synthetic_video_chunks

if TYPE_CHECKING:
    from pathlib import Path

    from kling_cluster.simulator import ClusterSimulator

    pass


from kling_cluster.observations import Observations, task_states
from kling_cluster.processes import Cluster, postgres_bin
from kling_cluster.settings import GENERATES, RACE_CAP, RACERS, STORED_BY, VIDEO_BYTES, layout_of, share

# --- checks and report ------------------------------------------------------------------------


def generation_checks(cluster: Cluster, sim: ClusterSimulator) -> list[tuple[str, bool, str]]:
    """What every run checks of its generations: each succeeded, its video landed whole and checked, paid once."""
    n = cluster.shape.generations
    results: list[tuple[str, bool, str]] = []
    counts = task_states(cluster)
    tasks = {
        layout: [task for task in {*GENERATES, *STORED_BY.values()} if layout_of(task) == layout]
        for layout in cluster.layouts
    }
    per_layout = {layout: len(share(cluster, layout)) for layout in cluster.layouts}
    ok_tasks = all(counts.get((task, "success"), 0) == per_layout[layout] for layout in tasks for task in tasks[layout])
    succeeded = "; ".join(
        f"{layout}: " + " and ".join(f"{counts.get((task, 'success'), 0)} {task}" for task in sorted(tasks[layout]))
        for layout in tasks
    )
    results.append(("every generation succeeded", ok_tasks, succeeded))
    digest = hashlib.sha256()
    for chunk in synthetic_video_chunks(VIDEO_BYTES):
        digest.update(chunk)
    landed = [cluster.root / "videos" / f"{i}.mp4" for i in range(n)]
    whole = [p for p in landed if p.exists() and p.stat().st_size == VIDEO_BYTES]
    same = [p for p in whole if file_sha256(p) == digest.hexdigest()]
    results.append(("every video landed whole (size and sha256)", len(same) == n, f"{len(same)} of {n}"))
    posters = [p.with_suffix(".jpg") for p in same]
    checked = [p for p in posters if p.exists() and p.read_bytes()[:3] == b"\xff\xd8\xff"]
    results.append(("every video was checked (FFmpeg's probe) and its poster landed beside it", len(checked) == n,
                    f"{len(checked)} of {n} posters"))  # fmt: skip
    submits = sim.submits_by_generation
    once = [i for i in range(n) if submits.get(i) == 1]
    twice = {i: c for i, c in submits.items() if c != 1}
    results.append(("exactly one paid submit per generation", len(once) == n, f"not once: {twice}" if twice else ""))
    return results


def checks(cluster: Cluster, sim: ClusterSimulator, seen: Observations) -> list[tuple[str, bool, str]]:
    """Every check of the run with its faults and its budget race."""
    results = generation_checks(cluster, sim)
    unfinished = [rid for rid in sim.requests if sim.phase_of(rid) in ("in_queue", "in_progress")]
    results.append(("no request left queued or running", not unfinished, ", ".join(unfinished[:5])))
    cancels = sim.calls["cancel"]
    results.append(("no cancel sent (none for a request a triggerer took over)", cancels == 0, f"{cancels} cancels"))
    leaks = token_leaks(cluster, seen)
    results.append(
        ("the token is nowhere in the database, the logs, XCom or trigger rows", not leaks, ", ".join(leaks))
    )
    racers = sim.racers()
    failed = seen.race_states.get("failed", 0)
    race_exact = len(racers) == RACE_CAP and failed == RACERS - RACE_CAP and seen.race_ledger == (RACE_CAP, 0)
    results.append(
        (
            f"budget race: exactly {RACE_CAP} of {RACERS} submitted, the rest refused before sending",
            race_exact and seen.race_refusals_logged == RACERS - RACE_CAP,
            f"{len(racers)} submitted, {failed} failed ({seen.race_refusals_logged} logs name the budget and cap); "
            f"ledger: {seen.race_ledger[0]} spent, {seen.race_ledger[1]} reserved",
        )
    )
    statsd = seen.statsd
    submitted, cancelled, cost = (
        statsd.total("kling.submitted"),
        statsd.total("kling.cancelled"),
        statsd.total("kling.cost", "g"),
    )
    sim_cancelled = sum(1 for r in sim.requests.values() if r.cancelled_at is not None)
    metrics_exact = (
        submitted == len(sim.requests) and cancelled == sim_cancelled and abs(cost - sim.cost_reported()) < 1e-6
    )
    results.append(
        (
            "the metrics count what the simulator recorded (submits, cancels, cost)",
            metrics_exact,
            f"kling.submitted {submitted:.0f} / {len(sim.requests)} accepted; kling.cancelled {cancelled:.0f} / "
            f"{sim_cancelled}; kling.cost {cost:.2f} / {sim.cost_reported():.2f} reported",
        )
    )
    for note in seen.notes:
        results.append((note, False, ""))
    return results


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        for chunk in iter(lambda: reader.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def token_leaks(cluster: Cluster, seen: Observations) -> list[str]:
    leaks = [note for note in seen.notes if "token" in note]
    dump_path = cluster.root / "dump.sql"
    server = ["-h", "127.0.0.1", "-p", str(cluster.pg_port), "-U", "airflow"]
    subprocess.run([str(postgres_bin() / "pg_dump"), *server, "-f", str(dump_path), "airflow"], capture_output=True)
    if not dump_path.exists():
        leaks.append("could not dump the database to check it")
    elif cluster.token in dump_path.read_text(errors="replace"):
        leaks.append("database (pg_dump)")
    for path in cluster.logs.rglob("*"):
        if path.is_file() and cluster.token in path.read_text(errors="replace"):
            leaks.append(str(path.relative_to(cluster.root)))
    return leaks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
