"""The run, start to end: the servers and processes up, the scenario, the checks, the report."""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_provider_kling.testing.statsd import StatsdListener
from kling_cluster.attribution import attribute, keep_timelines, slow_rows
from kling_cluster.chart import spend_chart
from kling_cluster.checks import checks, generation_checks
from kling_cluster.processes import Cluster
from kling_cluster.report import bench_report, layout_rows, measures, report, timelines, write_doc
from kling_cluster.scenario import run
from kling_cluster.settings import BENCH, FULL, QUICK, REPO, STORED_BY, VIDEO_BYTES
from kling_cluster.simulator import ClusterSimulator

if TYPE_CHECKING:
    from kling_cluster.observations import Observations


def bench(cluster: Cluster, sim: ClusterSimulator, seen: Observations, *, write: bool) -> int:
    """``--bench``: the generations' checks and the paying runs' breakdown, printed and written to docs/cluster.md."""
    results = generation_checks(cluster, sim)
    text = bench_report(cluster, results, seen)
    print()
    print(text)
    if write:
        write_doc(text, section="worker run bench")
    failed = [name for name, ok, _ in results if not ok]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the smaller scenario CI runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database dump)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/cluster.md")
    parser.add_argument(
        "--bench",
        action="store_true",
        help="100 one_run generations and no fault: the paid submit's worker run, broken down (its own section)",
    )
    parser.add_argument(
        "--layout",
        choices=["both", *STORED_BY],
        default="both",
        help="the DAG layout(s) to run: both side by side, the generations split between them (the default), "
        "or one of them for every generation",
    )
    args = parser.parse_args()
    shape = BENCH if args.bench else QUICK if args.quick else FULL
    token = f"cluster-token-{secrets.token_hex(12)}"
    root = Path(tempfile.mkdtemp(prefix="kling-cluster-"))
    root.chmod(0o755)
    print(f"working in {root}", flush=True)
    from cryptography.fernet import Fernet

    statsd = StatsdListener()
    statsd.start()
    layouts = ["one_run"] if args.bench else list(STORED_BY) if args.layout == "both" else [args.layout]
    with ClusterSimulator(shape, token=token, queue_seconds=1, run_seconds=1, video_size=VIDEO_BYTES) as sim:
        cluster = Cluster(
            root,
            shape,
            token,
            sim.url,
            layouts=layouts,
            statsd_port=statsd.port,
            fernet_key=Fernet.generate_key().decode(),
        )
        try:
            seen = run(cluster, sim, statsd, faults=not args.bench)
            if args.bench:
                return bench(cluster, sim, seen, write=not args.no_doc)
            results = checks(cluster, sim, seen)
            lines = timelines(cluster, sim)
            unexplained = attribute(lines, seen)
            results.append(
                (
                    "every slow generation explained by a fault it overlapped",
                    not unexplained,
                    "; ".join(line.describe(seen.started) for line in unexplained[:5]),
                )
            )
            rows = [*measures(cluster, sim, seen), *slow_rows(lines, unexplained, seen)]
            side_by_side = layout_rows(cluster, sim, seen, lines)
            if args.keep:
                print(f"the generations' timelines: {keep_timelines(lines, seen, root)}", flush=True)
        finally:
            cluster.stop_airflow()
            cluster.stop_postgres()
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    statsd.close()
    text = report("quick" if args.quick else "full", results, rows, cluster.layouts, side_by_side, seen)
    print()
    print(text)
    if not args.no_doc:
        write_doc(text)
        (REPO / "docs" / "img" / "cluster-spend.svg").write_text(spend_chart(statsd, seen))
    failed = [name for name, ok, _ in results if not ok]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\nall checks held")
    return 0
