"""The run's sizes, names and what it watches for: one place for both scenarios (full and quick)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kling_cluster.processes import Cluster


HERE = Path(__file__).resolve().parent.parent  # scripts/cluster: the DAG files and names.py
REPO = HERE.parent.parent
DOC = REPO / "docs" / "cluster.md"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
GENERATION = re.compile(r"generation (\d+):")
RACE = re.compile(r"race (\d+):")
#: The budget race: this many mapped generations against a budget of RACE_CAP videos.
RACERS, RACE_CAP = 40, 25
SPEND_COUNTERS = ("submitted", "succeeded", "resumed", "cancelled")
BUDGETS = {"budgets": {"race": {"videos": RACE_CAP, "period": "forever"}}, "budget_store": "kling_ledger"}
#: The DAG's two layouts (kling_cluster_dag.py): the task of each that stores the video, and its others.
STORED_BY = {"one_run": "one_run.generate", "two_tasks": "two_tasks.copy"}
GENERATES = ["one_run.generate", "two_tasks.generate"]
#: The size of each simulated video: a 5 s Kling video at 1080p is a few megabytes, and the copies
#: (hashing, writing) should weigh what they weigh in production, in a worker or in the triggerer.
VIDEO_BYTES = 8 * 1024 * 1024
#: A video ready this long after an outage of the API or the database ended is counted as "outside" it.
OUTAGE_TAIL = 30.0


def layout_of(task_id: str) -> str:
    """``one_run`` or ``two_tasks``: every task id of the DAG starts with its layout's name."""
    return task_id.split(".")[0].removesuffix("_prompts")


@dataclass(frozen=True)
class Shape:
    """The size of a run: the full one, or the smaller one CI runs."""

    generations: int
    queue_seconds: tuple[float, float]
    render_median: float
    render_max: float
    worker_concurrency: int
    refusal_seconds: float
    deadline_seconds: float
    #: How long PostgreSQL is down (a failover), and how long the API refuses connections.
    database_down_seconds: float
    api_down_seconds: float


FULL = Shape(220, (60, 180), 90, 300, 8, 15, 2400, 20, 120)
QUICK = Shape(40, (20, 60), 30, 90, 6, 10, 1200, 20, 60)
#: ``--bench``: 100 generations and no fault, for the paid submit's worker run alone.
BENCH = Shape(100, (5, 15), 10, 20, 8, 0, 1200, 0, 0)


def share(cluster: Cluster, layout: str) -> range:
    """The generation numbers of one layout, split in order as the DAG splits them."""
    n, layouts = cluster.shape.generations, cluster.layouts
    per = -(-n // len(layouts))
    first = layouts.index(layout) * per
    return range(first, min(first + per, n))
