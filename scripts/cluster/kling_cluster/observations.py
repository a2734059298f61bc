"""What the run sees while it goes on: the metadata database's task and trigger rows, and each process's CPU."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from kling_cluster.processes import Cluster


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Observations:
    started: float = 0.0
    finished: float = 0.0
    killed_between_submit_and_deferral: list[str] = field(default_factory=list)
    worker_killed_at: float = 0.0
    scheduler_restarted: tuple[float, float] = (0.0, 0.0)
    triggerer_killed_at: float = 0.0
    killed_triggerer: str = ""
    moved: dict[str, int] = field(default_factory=dict)  # request id -> trigger id
    moved_over_at: float = 0.0
    #: Each triggerer's job id when one was killed (a restart later gives it a new one).
    triggerer_jobs: dict[str, int] = field(default_factory=dict)
    refusal: tuple[float, float] = (0.0, 0.0)
    #: The three failures of the infrastructure: when each began and ended, and what it did.
    database_down: tuple[float, float] = (0.0, 0.0)
    broker_restarted_at: float = 0.0
    api_down: tuple[float, float] = (0.0, 0.0)
    restarted_after: dict[str, list[str]] = field(default_factory=dict)
    failed_tries_after: dict[str, int] = field(default_factory=dict)
    triggerer_cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Worker-slot seconds of each task run of the main run (before the budget race).
    slots: list[tuple[str, float]] = field(default_factory=list)
    #: The budget race: task states, and the ledger's usage when it ended.
    race_states: dict[str, int] = field(default_factory=dict)
    race_ledger: tuple[int, int] = (0, 0)
    race_refusals_logged: int = 0
    #: The HTTP calls the simulator counted by the main run's end (the race's come after).
    calls: dict[str, int] = field(default_factory=dict)
    statsd: Any = None


def query(cluster: Cluster, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(cluster.db()) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def task_states(cluster: Cluster) -> dict[tuple[str, str], int]:
    rows = query(
        cluster,
        "SELECT task_id, state, count(*) FROM task_instance WHERE dag_id = 'kling_cluster' GROUP BY task_id, state",
    )
    return {(task, str(state)): count for task, state, count in rows}


def triggers_by_triggerer(cluster: Cluster) -> dict[str, list[int]]:
    rows = query(
        cluster,
        "SELECT job.hostname, trigger.id FROM trigger JOIN job ON job.id = trigger.triggerer_id",
    )
    held: dict[str, list[int]] = {}
    for host, trigger_id in rows:
        held.setdefault(host, []).append(trigger_id)
    return held


def request_ids_of(cluster: Cluster, trigger_ids: list[int]) -> dict[str, int]:
    rows = query(
        cluster,
        "SELECT ti.trigger_id, x.value FROM task_instance ti JOIN xcom x ON x.dag_id = ti.dag_id "
        "AND x.run_id = ti.run_id AND x.task_id = ti.task_id AND x.map_index = ti.map_index "
        "WHERE x.key = 'request_id' AND ti.trigger_id = ANY(%s)",
        trigger_ids,
    )
    return {str(json_value(value)): trigger_id for trigger_id, value in rows}


def json_value(value: Any) -> Any:
    """An XCom value as the database gives it: decoded already (jsonb), or JSON text."""
    if isinstance(value, (bytes, memoryview)):
        value = bytes(value).decode()
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


class CpuMeter(threading.Thread):
    """Samples the CPU time of each triggerer's process tree, so a killed one keeps its last figure."""

    def __init__(self, cluster: Cluster, names: list[str]) -> None:
        super().__init__(daemon=True)
        self.cluster, self.names = cluster, names
        self.cpu: dict[str, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            for name in self.names:
                proc = self.cluster.procs.get(name)
                if proc is None or proc.poll() is not None:
                    continue
                with contextlib.suppress(psutil.Error):
                    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
                    total = 0.0
                    for part in tree:
                        with contextlib.suppress(psutil.Error):
                            times = part.cpu_times()
                            total += times.user + times.system
                    self.cpu[name] = max(self.cpu.get(name, 0.0), total)


def worker_slot_seconds(cluster: Cluster) -> list[tuple[str, float]]:
    """How long each task run held a Celery worker's slot, and its task, from the workers' own task lines."""
    runs: list[tuple[str, float]] = []
    for name in ("worker-1", "worker-2"):
        path = cluster.logs / f"{name}.log"
        if path.exists():
            text = path.read_text(errors="replace")
            task_of = {match.group(1): match.group(2) for match in WORKLOAD.finditer(text)}
            runs += [(task_of.get(m.group(1), "?"), float(m.group(2))) for m in SLOT.finditer(text)]
    return runs


SLOT = re.compile(r"execute_workload\[([^\]]*)\] (?:succeeded|raised|failed)[^\n]*? in ([0-9.]+)s")


#: The line a worker logs as it starts a task run: its Celery task id, then the workload (the task instance).
WORKLOAD = re.compile(r"\[([0-9a-f-]{36})\] Executing workload in Celery: [^\n]*?task_id='([^']+)'")
