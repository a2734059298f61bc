"""The servers and Airflow's processes of the cluster run: PostgreSQL, Redis, the api-server, scheduler,
dag-processor, Celery workers and triggerers, each started, killed and restarted on demand."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from kling_cluster.settings import AIRFLOW, BUDGETS, HERE, RACERS, STORED_BY, Shape

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
            # The provider's run modules loaded once per worker, before it forks each task (docs/cluster.md).
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "airflow_provider_kling.worker_preload.CELERY_CONFIG",
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
