"""
``make cluster``: the provider where our users run it, with faults while generations are in flight.

On one machine, from the repository's own files: PostgreSQL (metadata database) and Redis (Celery
broker), real servers in a temporary directory; Airflow 3.3 with the CeleryExecutor: api-server,
scheduler, dag-processor, two Celery workers and two triggerers. A RunComfy simulator with
realistic timelines (seconds in the queue and rendering, with a long tail) serves a mapped DAG of
generations, each waited for in the triggerer and copied to storage. While they are in flight:

1. one Celery worker is SIGKILLed while some tasks are between their submit and their deferral
   (their first status call is held back), and started again;
2. for a while the API refuses: 429 and 503 on polls, 429 on submits;
3. the triggerer holding more triggers is SIGKILLed; the other must take them over;
4. the scheduler is stopped and started again.

Then a budget race: 40 mapped generations against a budget of 25 videos, from both workers at
once, its ledger on the same PostgreSQL. Every Airflow process sends its metrics to a StatsD
listener of this script.

It checks that every generation succeeded and its video landed whole, with exactly one paid submit
each, nothing left queued or running, no cancel sent, the token nowhere in the database or the
logs, exactly the budget's cap submitted in the race, and the submits, cancels and cost the
metrics counted equal to what the simulator recorded; prints a report and writes it to
``docs/cluster.md``. Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import psycopg2

from airflow_provider_kling.testing.simulator import Fault, RunComfySimulator, Scenario, synthetic_video_chunks
from airflow_provider_kling.testing.statsd import StatsdListener

if TYPE_CHECKING:
    from aiohttp import web

HERE = Path(__file__).resolve().parent
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


# --- the simulated RunComfy -----------------------------------------------------------------


class ClusterSimulator(RunComfySimulator):
    """
    The simulator with a realistic timeline per generation (fixed by its prompt, so a re-run is the
    same), a first status call held back for every third generation while a worker is to be
    killed, and a window in which the API refuses.
    """

    def __init__(self, shape: Shape, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shape = shape
        #: While set, the first status call of every third generation (up to ``max_held``) is held
        #: back until ``released``: its task sits between its submit and its deferral.
        self.hold_first_status = threading.Event()
        self.released = threading.Event()
        self.max_held = shape.worker_concurrency // 2
        self.holding: set[str] = set()
        self.refusing_until = 0.0
        self._refusals = 0
        #: Calls that found nothing listening while the API was down (counted by the clients' errors).
        self.down: tuple[float, float] = (0.0, 0.0)
        self.submits_by_generation: dict[int, int] = {}

    @property
    def refused(self) -> int:
        """Calls answered 429 or 503 in the refusal window."""
        return self._refusals

    def _scenario_for(self, body: dict[str, Any]) -> Scenario:
        if RACE.search(str(body.get("prompt", ""))):
            return Scenario(queue_seconds=2, run_seconds=3)
        match = GENERATION.search(str(body.get("prompt", "")))
        index = int(match.group(1)) if match else 0
        draw = random.Random(index)
        low, high = self.shape.queue_seconds
        # Rendering: log-normal around the median, a long tail cut at render_max.
        render = min(self.shape.render_max, draw.lognormvariate(0, 0.5) * self.shape.render_median)
        with self._lock:
            self.submits_by_generation[index] = self.submits_by_generation.get(index, 0) + 1
        return Scenario(queue_seconds=draw.uniform(low, high), run_seconds=render, queue_position=draw.randint(1, 40))

    def _next_fault(self, call: str) -> Fault | None:
        if time.time() < self.refusing_until and call in ("submit", "status", "result"):
            with self._lock:
                self.calls[call] += 1
                self._refusals += 1
                odd = self._refusals % 2
            if call == "submit" or odd:
                return Fault("status", 429, body='{"error_message": "rate limited"}', headers={"Retry-After": "1"})
            return Fault.proxy_error(503)
        return super()._next_fault(call)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["request_id"]
        if self.hold_first_status.is_set() and rid in self.requests and self.polls[rid] == 0:
            index = self._index(rid)
            if index % 3 == 0 and rid not in self.holding and len(self.holding) < self.max_held:
                self.holding.add(rid)
                for _ in range(1200):  # at most two minutes
                    if self.released.is_set():
                        break
                    await asyncio.sleep(0.1)
        return await super()._status(request)

    def go_down(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (every call finds its connection refused), then serve again."""
        self.stop()
        time.sleep(seconds)
        self.start()  # the same port; requests and their timelines carried on meanwhile

    def _index(self, rid: str) -> int:
        match = GENERATION.search(str(self.requests[rid].input.get("prompt", "")))
        return int(match.group(1)) if match else -1

    def generations(self) -> list[str]:
        """The requests of the main run (the budget race's are not among them)."""
        return [rid for rid in self.requests if self._index(rid) >= 0]

    def racers(self) -> list[str]:
        return [rid for rid in self.requests if RACE.search(str(self.requests[rid].input.get("prompt", "")))]

    def cost_reported(self) -> float:
        """What the result calls reported as cost: 0.1 a second of each succeeded request asked with include_cost."""
        return sum(
            0.1 * int(r.input.get("duration", 5))
            for r in self.requests.values()
            if r.scenario.outcome == "succeeded" and r.cancelled_at is None
        )

    def ready_at(self, rid: str, clock_offset: float) -> float:
        """When the video of ``rid`` was ready on the server (Unix seconds)."""
        sim_request = self.requests[rid]
        return sim_request.created + sum(self._timeline(sim_request)) + clock_offset

    def phase_of(self, rid: str) -> str:
        return self._phase(self.requests[rid])


# --- the servers and Airflow's processes ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as its own user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def postgres_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not candidates:
        raise SystemExit("PostgreSQL is not installed (scripts/cluster.sh installs it)")
    return candidates[-1].parent


@dataclass
class Cluster:
    root: Path
    shape: Shape
    token: str
    sim_url: str
    layouts: list[str] = field(default_factory=lambda: list(STORED_BY))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: How each Airflow process was started, to start it again; those this run killed on purpose.
    commands: dict[str, list[str]] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    pg_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    statsd_port: int = 0
    fernet_key: str = ""

    @property
    def pg_data(self) -> Path:
        return self.root / "pg"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def db_url(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow"

    def db(self) -> Any:
        return psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="airflow", dbname="airflow")

    def start_postgres(self) -> None:
        pg = postgres_bin()
        self.pg_data.mkdir()
        sockets = self.root / "pgsock"
        sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.pg_data, "postgres")
            shutil.chown(sockets, "postgres")
        subprocess.run(
            as_postgres([str(pg / "initdb"), "-D", str(self.pg_data), "-U", "airflow", "-A", "trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        self.run_postgres()
        for database in ("airflow", "kling_ledger"):  # the metadata database, and the budgets' ledger
            createdb = [str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "airflow", database]
            subprocess.run(createdb, check=True)

    def pg_ctl(self, *argv: str, check: bool = True) -> None:
        pg_ctl = [str(postgres_bin() / "pg_ctl"), "-D", str(self.pg_data), *argv]
        subprocess.run(as_postgres(pg_ctl), check=check, capture_output=True)

    def run_postgres(self) -> None:
        """Start the server on the run's port and socket folder; returns once it accepts connections."""
        sockets = self.root / "pgsock"
        options = f"-p {self.pg_port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=400"
        self.pg_ctl("-o", options, "-l", str(self.pg_data / "log"), "-w", "start")

    def stop_postgres(self) -> None:
        if (self.pg_data / "postmaster.pid").exists():
            self.pg_ctl("-m", "immediate", "stop", check=False)

    def pause_postgres(self, seconds: float) -> None:
        """Stop PostgreSQL as a failover does (at once, connections cut), and start it again after ``seconds``."""
        self.pg_ctl("-m", "immediate", "stop")
        time.sleep(seconds)
        self.run_postgres()

    def restart_redis(self) -> None:
        """Restart the broker as an upgrade or a crash does: it comes back empty (no persistence)."""
        self.kill("redis", signal.SIGTERM)
        self.procs.pop("redis")
        self.start_redis()

    def supervise(self, seconds: float) -> list[str]:
        """
        For ``seconds``, start again every Airflow process that exits (not one this run killed on
        purpose), as systemd or Kubernetes would in production; returns the names restarted, in order.
        """
        restarted: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, command in self.commands.items():
                if name not in self.killed and self.procs[name].poll() is not None:
                    restarted.append(name)
                    self.spawn(name, command)
            time.sleep(1)
        return restarted

    def start_redis(self) -> None:
        (self.root / "redis").mkdir(exist_ok=True)
        port, folder = str(self.redis_port), str(self.root / "redis")
        argv = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.spawn("redis", [*argv, "--dir", folder], airflow=False)
        wait_for("Redis", lambda: port_open(self.redis_port), 30)

    def env(self, name: str = "") -> dict[str, str]:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.root / "airflow"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__CORE__PARALLELISM": "128",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "names.hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            # psycopg 3 is what a bare db+postgresql:// reaches for: name the driver.
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.shape.worker_concurrency),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__API__SECRET_KEY": "cluster-run-secret",
            "AIRFLOW__API_AUTH__JWT_SECRET": "cluster-run-jwt-secret",
            # Short heartbeats and thresholds, so that the faults play out in seconds, not minutes.
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "8",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
            # A SIGKILLed Celery worker loses the messages it had reserved but not started: Airflow
            # queues those tasks again after task_queued_timeout (600 s by default).
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "90",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "tasks"),
            "AIRFLOW_CONN_KLING_DEFAULT": json.dumps(
                {"conn_type": "kling", "host": self.sim_url, "password": self.token, "extra": BUDGETS}
            ),
            "AIRFLOW_CONN_KLING_LEDGER": json.dumps(
                {
                    "conn_type": "postgres",
                    "host": "127.0.0.1",
                    "port": self.pg_port,
                    "login": "airflow",
                    "schema": "kling_ledger",
                }
            ),
            # Every process sends its metrics to this script's StatsD listener; lineage is off here.
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.statsd_port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            # Only the provider's metrics: Airflow's own, hundreds a second from nine processes, overflow
            # the listener's socket buffer on a busy machine, and a dropped kling.submitted fails the check.
            "AIRFLOW__METRICS__METRICS_ALLOW_LIST": r"^kling\.",
            "AIRFLOW__OPENLINEAGE__DISABLED": "True",
            "KLING_CLUSTER_RACERS": str(RACERS),
            "KLING_CLUSTER_GENERATIONS": str(self.shape.generations),
            "KLING_CLUSTER_LAYOUTS": ",".join(self.layouts),
            "KLING_CLUSTER_VIDEO_DIR": str(self.root / "videos"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        }
        if name:
            env["KLING_CLUSTER_NAME"] = name
        return env

    def airflow(self, *argv: str) -> str:
        done = subprocess.run([AIRFLOW, *argv], env=self.env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"airflow {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def spawn(self, name: str, argv: list[str], *, airflow: bool = True) -> None:
        self.logs.mkdir(exist_ok=True)
        out = (self.logs / f"{name}.log").open("ab")
        if airflow:
            self.commands[name] = argv
        self.killed.discard(name)
        self.procs[name] = subprocess.Popen(
            [AIRFLOW, *argv] if airflow else argv,
            env=self.env(name),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a kill takes its children too
        )

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self.killed.add(name)
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)

    def stop_airflow(self) -> None:
        """Stop every process but PostgreSQL, which the checks still read."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.1))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Observations:
    started: float = 0.0
    finished: float = 0.0
    killed_between_submit_and_deferral: list[str] = field(default_factory=list)
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


def run(cluster: Cluster, sim: ClusterSimulator, statsd: StatsdListener) -> Observations:
    shape, root = cluster.shape, cluster.root
    seen = Observations(statsd=statsd)
    (root / "dags").mkdir()
    (root / "videos").mkdir()
    shutil.copy(HERE / "kling_cluster_dag.py", root / "dags" / "kling_cluster_dag.py")
    shutil.copy(HERE / "kling_budget_race_dag.py", root / "dags" / "kling_budget_race_dag.py")
    print("starting PostgreSQL and Redis", flush=True)
    cluster.start_postgres()
    cluster.start_redis()
    print("migrating the metadata database", flush=True)
    cluster.airflow("db", "migrate")
    slots = str(shape.generations + 50)
    cluster.airflow("pools", "set", "kling_generations", slots, "Kling generations in flight", "--include-deferred")
    print("starting api-server, scheduler, dag-processor, 2 Celery workers, 2 triggerers", flush=True)
    cluster.spawn("api-server", ["api-server", "--port", str(cluster.api_port)])
    cluster.spawn("scheduler", ["scheduler"])
    cluster.spawn("dag-processor", ["dag-processor"])
    for worker in ("worker-1", "worker-2"):
        cluster.spawn(worker, ["celery", "worker", "--celery-hostname", f"{worker}@%h", "--skip-serve-logs"])
    for triggerer in ("triggerer-1", "triggerer-2"):
        cluster.spawn(triggerer, ["triggerer", "--skip-serve-logs"])
    meter = CpuMeter(cluster, ["triggerer-1", "triggerer-2"])
    meter.start()
    wait_for("the api-server", lambda: port_open(cluster.api_port), 120)
    wait_for(
        "the DAG to be parsed",
        lambda: query(cluster, "SELECT 1 FROM serialized_dag WHERE dag_id = 'kling_cluster'"),
        180,
    )
    cluster.airflow("dags", "unpause", "kling_cluster")
    sim.hold_first_status.set()
    cluster.airflow("dags", "trigger", "kling_cluster")
    seen.started = time.time()
    print(f"triggered {shape.generations} generations", flush=True)
    try:
        inject_faults(cluster, sim, seen)
        wait_for_run(cluster, shape, seen)
        seen.slots = worker_slot_seconds(cluster)
        seen.calls = dict(sim.calls)
        budget_race(cluster, seen)
    finally:
        meter.stopped.set()
        meter.join(5)
        seen.triggerer_cpu = dict(meter.cpu)
        cluster.stop_airflow()
    return seen


def inject_faults(cluster: Cluster, sim: ClusterSimulator, seen: Observations) -> None:
    n = cluster.shape.generations

    # 1. A worker dies while tasks sit between their submit and their deferral (their first status
    # call is held), and none of its generate tasks has a submit in flight: a submit cut off in
    # flight is another fault, after which the retry fails rather than pay again blindly (resume.py).
    # A task before its submit, or past it with its request recorded, is safe to kill.
    def generation(task_id: str, map_index: int) -> int:
        """The generation number of a mapped generate task (map indexes start at 0 in each layout)."""
        return share(cluster, layout_of(task_id)).start + map_index

    def worker_1_in_the_window() -> bool:
        rows = query(
            cluster,
            "SELECT ti.task_id, ti.map_index, s.value FROM task_instance ti LEFT JOIN task_state_store s "
            "ON s.dag_id = ti.dag_id AND s.run_id = ti.run_id AND s.task_id = ti.task_id "
            "AND s.map_index = ti.map_index AND s.key = 'kling_request' "
            "WHERE ti.dag_id = 'kling_cluster' AND ti.task_id = ANY(%s) AND ti.state = 'running' "
            "AND ti.hostname = 'worker-1'",
            GENERATES,
        )
        held = {sim._index(rid) for rid in set(sim.holding)}
        on_worker = {generation(task, index): value for task, index, value in rows}
        in_flight = [
            i for i, value in on_worker.items() if value is not None and "request_id" not in value and i not in held
        ]
        return not in_flight and any(i in held for i in on_worker)

    deadline = time.monotonic() + 600
    last_raise = time.monotonic()
    while not worker_1_in_the_window():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for worker-1 to hold a task between submit and deferral")
        if len(sim.holding) >= sim.max_held and time.monotonic() - last_raise > 10:
            sim.max_held += 1  # the held ones all went to worker-2: hold one more
            last_raise = time.monotonic()
        time.sleep(0.5)
    running = query(
        cluster,
        "SELECT task_id, map_index FROM task_instance WHERE dag_id = 'kling_cluster' AND task_id = ANY(%s) "
        "AND state = 'running' AND hostname = 'worker-1'",
        GENERATES,
    )
    cluster.kill("worker-1")
    sim.released.set()
    on_worker = {generation(task, index) for task, index in running}
    held = {sim._index(rid): rid for rid in set(sim.holding)}
    seen.killed_between_submit_and_deferral = sorted(rid for index, rid in held.items() if index in on_worker)
    print(
        f"SIGKILLed worker-1 with {len(on_worker)} generate tasks on it, "
        f"{len(seen.killed_between_submit_and_deferral)} of them between submit and deferral",
        flush=True,
    )
    if not seen.killed_between_submit_and_deferral:
        seen.notes.append("no task was between submit and deferral on the killed worker")
    sim.hold_first_status.clear()
    time.sleep(5)
    cluster.spawn("worker-1", ["celery", "worker", "--celery-hostname", "worker-1@%h", "--skip-serve-logs"])

    # 2. The API refuses for a while: 429 and 503 on polls, 429 on submits.
    start = time.time()
    sim.refusing_until = start + cluster.shape.refusal_seconds
    seen.refusal = (start, sim.refusing_until)
    print(f"the API refuses for {cluster.shape.refusal_seconds:.0f} s", flush=True)

    # 3. The busier triggerer dies; the other must take its triggers over. Both holding triggers is
    # the usual shape; on a busy machine one triggerer may have claimed them all (it polls first), and
    # after half a minute that one is killed all the same: the takeover is what is tested.
    patience = time.monotonic() + 30

    def busy() -> bool:
        held = triggers_by_triggerer(cluster)
        deferred = sum(len(ids) for ids in held.values())
        return deferred >= max(10, n // 5) and (len(held) == 2 or time.monotonic() > patience)

    wait_for("triggers on the triggerers", lambda: busy() or run_is_over(cluster), 600)
    if run_is_over(cluster):
        seen.notes.append("the run ended before the triggerers held triggers: no triggerer was killed")
        return
    held_now = triggers_by_triggerer(cluster)
    seen.killed_triggerer = max(held_now, key=lambda host: len(held_now[host]))
    seen.moved = request_ids_of(cluster, held_now[seen.killed_triggerer])
    check_trigger_rows_hold_no_token(cluster, seen)
    seen.triggerer_jobs = dict(
        query(cluster, "SELECT hostname, max(id) FROM job WHERE job_type = 'TriggererJob' GROUP BY hostname")
    )
    cluster.kill(seen.killed_triggerer)
    seen.triggerer_killed_at = time.time()
    print(f"SIGKILLed {seen.killed_triggerer} holding {len(seen.moved)} triggers", flush=True)
    survivor = next(name for name in ("triggerer-1", "triggerer-2") if name != seen.killed_triggerer)

    def taken_over() -> bool:
        ids = list(seen.moved.values())
        rows = query(
            cluster,
            "SELECT count(*) FROM trigger JOIN job ON job.id = trigger.triggerer_id "
            "WHERE trigger.id = ANY(%s) AND job.hostname <> %s",
            ids,
            survivor,
        )
        return rows[0][0] == 0

    wait_for("the survivor to take the triggers over", taken_over, 300)
    seen.moved_over_at = time.time()
    print(f"{survivor} took them over after {seen.moved_over_at - seen.triggerer_killed_at:.1f} s", flush=True)

    # 4. The scheduler stops and starts again.
    cluster.kill("scheduler", signal.SIGTERM)
    time.sleep(5)
    cluster.spawn("scheduler", ["scheduler"])
    print("restarted the scheduler", flush=True)

    # 5. The API is down: every call finds its connection refused, for minutes. It strikes the waits,
    # once every generation has submitted: a submit that meets an outage fails its try in any layout
    # (nothing was created, so the retry submits), and whether the scheduler had started every
    # submit by then was luck, which made one run of a layout unlike the next.
    def deferred() -> int:
        return len(query(cluster, "SELECT 1 FROM task_instance WHERE dag_id = 'kling_cluster' AND state = 'deferred'"))

    wait_for(
        "every generation to have submitted, and waits in the triggerers",
        lambda: (len(sim.submits_by_generation) >= n and deferred() > 0) or run_is_over(cluster),
        600,
    )
    if run_is_over(cluster):
        seen.notes.append("the run ended before the API went down: no generation met the outage")
        return
    in_flight = deferred()
    start = time.time()
    print(f"the API is down for {cluster.shape.api_down_seconds:.0f} s ({in_flight} generations deferred)", flush=True)
    sim.go_down(cluster.shape.api_down_seconds)
    seen.api_down = (start, time.time())
    seen.restarted_after["the API"] = cluster.supervise(5)

    # 6. PostgreSQL, the metadata database, goes away (a failover: connections cut at once) and
    # comes back; meanwhile the run's supervisor starts again whatever Airflow process exits, as
    # systemd or Kubernetes would. It is timed when no paid submit is in flight: one cut off by
    # the database (its record not written) is the in-flight fault above, a failed generation
    # that is never paid twice.
    wait_for(
        "every generation to have submitted",
        lambda: len(sim.submits_by_generation) >= n or run_is_over(cluster),
        600,
    )
    start = time.time()
    print(f"PostgreSQL stops for {cluster.shape.database_down_seconds:.0f} s", flush=True)
    cluster.pause_postgres(cluster.shape.database_down_seconds)
    seen.database_down = (start, time.time())
    seen.restarted_after["PostgreSQL"] = cluster.supervise(30)
    print(f"PostgreSQL is back; restarted: {seen.restarted_after['PostgreSQL'] or 'nothing'}", flush=True)

    # 7. Redis, the Celery broker, restarts: it comes back empty.
    cluster.restart_redis()
    seen.broker_restarted_at = time.time()
    seen.restarted_after["Redis"] = cluster.supervise(15)
    print(f"Redis restarted; restarted: {seen.restarted_after['Redis'] or 'nothing'}", flush=True)


def wait_for_run(cluster: Cluster, shape: Shape, seen: Observations) -> None:
    deadline = time.monotonic() + shape.deadline_seconds
    last = ""
    while time.monotonic() < deadline:
        state = query(cluster, "SELECT state FROM dag_run WHERE dag_id = 'kling_cluster'")
        counts = task_states(cluster)
        line = ", ".join(f"{task} {st}: {count}" for (task, st), count in sorted(counts.items()))
        if line != last:
            print(f"  {time.time() - seen.started:5.0f} s  {line}", flush=True)
            last = line
        if state and state[0][0] in ("success", "failed"):
            seen.finished = time.time()
            return
        time.sleep(2)
    seen.finished = time.time()
    seen.notes.append(f"the run did not finish within {shape.deadline_seconds:.0f} s")


def budget_race(cluster: Cluster, seen: Observations) -> None:
    """40 mapped generations against a budget of 25 videos, from both workers at once."""
    print(f"budget race: {RACERS} generations against a budget of {RACE_CAP} videos", flush=True)
    wait_for(
        "the race DAG to be parsed",
        lambda: query(cluster, "SELECT 1 FROM serialized_dag WHERE dag_id = 'kling_budget_race'"),
        180,
    )
    cluster.airflow("dags", "unpause", "kling_budget_race")
    cluster.airflow("dags", "trigger", "kling_budget_race")
    wait_for(
        "the budget race to end",
        lambda: query(
            cluster, "SELECT 1 FROM dag_run WHERE dag_id = 'kling_budget_race' AND state IN ('success', 'failed')"
        ),
        600,
    )
    seen.race_states = dict(
        query(cluster, "SELECT state, count(*) FROM task_instance WHERE dag_id = 'kling_budget_race' GROUP BY state")
    )
    with (
        contextlib.closing(
            psycopg2.connect(host="127.0.0.1", port=cluster.pg_port, user="airflow", dbname="kling_ledger")
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT videos, reserved_videos FROM kling_budget_usage WHERE budget = 'race'")
        row = cur.fetchone()
    seen.race_ledger = (int(row[0]), int(row[1])) if row else (0, 0)
    refusal = f"Budget 'race' (forever forever) refuses this generation before anything is sent: videos cap {RACE_CAP}"
    seen.race_refusals_logged = sum(
        1
        for log in (cluster.logs / "tasks").rglob("*.log")
        if "dag_id=kling_budget_race" in str(log) and refusal in log.read_text(errors="replace")
    )


def run_is_over(cluster: Cluster) -> bool:
    state = query(cluster, "SELECT state FROM dag_run WHERE dag_id = 'kling_cluster'")
    return bool(state) and state[0][0] in ("success", "failed")


def check_trigger_rows_hold_no_token(cluster: Cluster, seen: Observations) -> None:
    """Trigger kwargs are encrypted in the database: decrypt them to look for the token."""
    from cryptography.fernet import Fernet

    fernet = Fernet(cluster.fernet_key.encode())
    rows = query(cluster, "SELECT kwargs FROM trigger")
    for (kwargs,) in rows:
        text = kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode()).decode()
        if cluster.token in text:
            seen.notes.append("the token is in a trigger's kwargs")
            return


# --- checks and report ------------------------------------------------------------------------


def checks(cluster: Cluster, sim: ClusterSimulator, seen: Observations) -> list[tuple[str, bool, str]]:
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


def share(cluster: Cluster, layout: str) -> range:
    """The generation numbers of one layout, split in order as the DAG splits them."""
    n, layouts = cluster.shape.generations, cluster.layouts
    per = -(-n // len(layouts))
    first = layouts.index(layout) * per
    return range(first, min(first + per, n))


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
        *fault_rows(cluster, seen),
        ("spend, from the metrics (main run and race): submitted / succeeded / resumed / cancelled",
         " / ".join(f"{statsd.total(f'kling.{name}'):.0f}" for name in SPEND_COUNTERS)),
        ("  seconds of video / cost reported",
         f"{statsd.total('kling.video_seconds'):.0f} s / {statsd.total('kling.cost', 'g'):.2f}"),
        ("  budget race refusals (kling.budget_refused)", f"{statsd.total('kling.budget_refused'):.0f}"),
    ]  # fmt: skip


def ready_to_stored(cluster: Cluster, sim: ClusterSimulator, offset: float) -> dict[tuple[str, int], float]:
    """
    Seconds from "video ready on the server" to "video in storage", per (layout, map index):
    storage is the end of the task that stores it (``one_run.generate``, which the trigger ends once
    the video landed; ``two_tasks.copy``).
    """
    ends = {
        (layout_of(task), index): end.timestamp()
        for task, index, end in query(
            cluster,
            "SELECT task_id, map_index, end_date FROM task_instance WHERE dag_id = 'kling_cluster' "
            "AND task_id = ANY(%s) AND state = 'success'",
            list(STORED_BY.values()),
        )
    }
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


def layout_rows(cluster: Cluster, sim: ClusterSimulator, seen: Observations) -> list[tuple[str, ...]]:
    """The layouts side by side: what each generation cost in task runs, worker slots, latency and calls."""
    offset = time.time() - time.monotonic()
    stored_after = ready_to_stored(cluster, sim, offset)
    requests = request_ids(cluster)
    fired = trigger_events(cluster)
    outages = [seen.api_down, seen.database_down]

    def outside_outages(rid: str) -> bool:
        ready = sim.ready_at(rid, offset)
        return not any(begin <= ready <= end + OUTAGE_TAIL for begin, end in outages if begin)

    columns = []
    for layout in cluster.layouts:
        count = len(share(cluster, layout))
        runs = [seconds for task, seconds in seen.slots if layout_of(task) == layout]
        mine = {key: rid for key, rid in requests.items() if key[0] == layout}
        latency = [stored_after[key] for key in mine if key in stored_after]
        calm = [stored_after[key] for key, rid in mine.items() if key in stored_after and outside_outages(rid)]
        seen_after = [fired[rid] - sim.ready_at(rid, offset) for rid in mine.values() if rid in fired]
        answered = sum(len(sim.history.get(rid, [])) for rid in mine.values())
        floor = sum(call_floor(sim, rid, offset, seen.api_down) for rid in mine.values())
        columns.append(
            [
                f"{count}",
                f"{len(runs) / count:.2f} ({len(runs)} runs)",
                f"{sum(runs) / count:.1f} (median run {percentile(runs, 0.5):.1f} s)",
                f"{percentile(calm, 0.5):.1f} s / {percentile(calm, 0.99):.1f} s ({len(calm)} generations)",
                f"{percentile(latency, 0.5):.1f} s / {percentile(latency, 0.99):.1f} s",
                f"{percentile(seen_after, 0.5):.1f} s / {percentile(seen_after, 0.99):.1f} s",
                f"{(answered - floor) / count:+.1f} ({answered / count:.1f} answered, floor {floor / count:.1f})",
            ]
        )
    names = [
        "generations",
        "task runs per generation",
        "worker-slot seconds per generation",
        f"ready -> stored, p50 / p99, ready outside the outages (API, database, to {OUTAGE_TAIL:.0f} s after)",
        "ready -> stored, p50 / p99, every generation",
        "  of which: ready -> seen by the trigger, p50 / p99",
        "HTTP calls answered per generation beyond the floor (1 submit + a poll per 5 s of rendering while the "
        "API was up + 1 video)",
    ]
    return [(name, *(column[row] for column in columns)) for row, name in enumerate(names)]


def call_floor(sim: ClusterSimulator, rid: str, offset: float, api_down: tuple[float, float]) -> int:
    """
    The calls any waiter needs for a request: one submit, a poll per interval of rendering while the
    API answered (nobody can poll it while it is down), one video.
    """
    ready = sim.ready_at(rid, offset)
    _, run = sim._timeline(sim.requests[rid])
    down = max(0.0, min(ready, api_down[1]) - max(ready - run, api_down[0])) if api_down[0] else 0.0
    return 1 + math.ceil(max(run - down, 0.0) / 5.0) + 1


def fault_rows(cluster: Cluster, seen: Observations) -> list[tuple[str, str]]:
    """What each failure of the infrastructure did: tries that failed in its wake, processes restarted."""
    faults = [
        ("the API down (connections refused)", "the API", seen.api_down),
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


SLOT = re.compile(r"execute_workload\[([^\]]*)\] (?:succeeded|raised|failed)[^\n]*? in ([0-9.]+)s")
#: The line a worker logs as it starts a task run: its Celery task id, then the workload (the task instance).
WORKLOAD = re.compile(r"\[([0-9a-f-]{36})\] Executing workload in Celery: [^\n]*?task_id='([^']+)'")


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
        "The whole run:",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        "Faults, in order: SIGKILL of `worker-1` (tasks between submit and deferral: "
        f"{len(seen.killed_between_submit_and_deferral)}), {seen.refusal[1] - seen.refusal[0]:.0f} s of "
        f"429/503 from the API, SIGKILL of `{seen.killed_triggerer}` ({len(seen.moved)} triggers), "
        "scheduler stop and start, the API down (connections refused) for "
        f"{seen.api_down[1] - seen.api_down[0]:.0f} s, PostgreSQL stopped for "
        f"{seen.database_down[1] - seen.database_down[0]:.0f} s, Redis restarted.",
    ]
    return "\n".join(lines)


def spend_chart(statsd: StatsdListener, seen: Observations) -> str:
    """An SVG of the run's spend over time, drawn from the metrics alone: paid submits and cost, cumulative."""
    width, height, left, top, bottom = 640, 260, 50, 30, 40
    ours = sorted(statsd.ours())
    submits = [(at - seen.started, value) for at, name, value, kind in ours if name == "kling.submitted"]
    costs = [(at - seen.started, value) for at, name, value, kind in ours if name == "kling.cost" and kind == "g"]
    end = max([at for at, _ in submits + costs] + [1.0])

    def path(points: list[tuple[float, float]], color: str) -> str:
        total, drawn, peak = 0.0, [], sum(v for _, v in points) or 1.0
        for at, value in points:
            total += value
            x = left + (width - left - 10) * at / end
            y = height - bottom - (height - top - bottom) * total / peak
            drawn.append(f"{x:.1f},{y:.1f}")
        return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(drawn)}"/>'

    paid, spent = sum(v for _, v in submits), sum(v for _, v in costs)
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            'font-family="Helvetica, Arial, sans-serif" font-size="12">',
            f'<rect width="{width}" height="{height}" fill="#fff"/>',
            f'<text x="{left}" y="18" font-weight="bold">Spend over the run, from the metrics alone</text>',
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#999"/>',
            f'<text x="{left}" y="{height - 12}">0 s</text>',
            f'<text x="{width - 10}" y="{height - 12}" text-anchor="end">{end:.0f} s</text>',
            path(submits, "#7a4fb5"),
            path(costs, "#3f8f3f"),
            f'<text x="{left + 10}" y="{top + 16}" fill="#7a4fb5">kling.submitted: {paid:.0f} paid submits</text>',
            f'<text x="{left + 10}" y="{top + 32}" fill="#3f8f3f">kling.cost: {spent:.2f} reported</text>',
            "</svg>",
        ]
    )


def airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def write_doc(text: str) -> None:
    start, end = "<!-- cluster results -->", "<!-- end of cluster results -->"
    page = DOC.read_text()
    before, _, rest = page.partition(start)
    _, _, after = rest.partition(end)
    DOC.write_text(f"{before}{start}\n{text}\n{end}{after}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the smaller scenario CI runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database dump)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/cluster.md")
    parser.add_argument(
        "--layout",
        choices=["both", *STORED_BY],
        default="both",
        help="the DAG layout(s) to run: both side by side, the generations split between them (the default), "
        "or one of them for every generation",
    )
    args = parser.parse_args()
    shape = QUICK if args.quick else FULL
    token = f"cluster-token-{secrets.token_hex(12)}"
    root = Path(tempfile.mkdtemp(prefix="kling-cluster-"))
    root.chmod(0o755)
    print(f"working in {root}", flush=True)
    from cryptography.fernet import Fernet

    statsd = StatsdListener()
    statsd.start()
    layouts = list(STORED_BY) if args.layout == "both" else [args.layout]
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
            seen = run(cluster, sim, statsd)
            results = checks(cluster, sim, seen)
            rows = measures(cluster, sim, seen)
            side_by_side = layout_rows(cluster, sim, seen)
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


if __name__ == "__main__":
    sys.exit(main())
