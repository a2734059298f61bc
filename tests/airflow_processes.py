"""
Airflow as users run it, for the tests that need its real processes: the scheduler and the
triggerer (on Airflow 3 also the API server and the DAG processor), each its own process, over a
SQLite database in a temporary home, with DAG files the test writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import requests
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

from tests.conftest import AIRFLOW, free_port, wait_until

try:  # Airflow 3.3+: the task state store, where a later try finds its request, came with the mixin
    import airflow.sdk.bases.resumablejobmixin  # noqa: F401

    HAS_TASK_STATE_STORE = True
except ImportError:
    HAS_TASK_STATE_STORE = False

#: Marks a test of later tries (retries, clears) in real Airflow 3.3 processes, through the REST API.
ON_AIRFLOW_3_3_PROCESSES = [
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not (AIRFLOW_V_3_0_PLUS and HAS_TASK_STATE_STORE),
        reason="later tries are decided on Airflow 3.3's task state store, through its REST API",
    ),
]

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_kling.testing import RunComfySimulator


class AirflowProcesses:
    """
    Airflow's processes on one home folder. ``start()`` the ones a test needs, and the context
    manager stops whatever is still running.

    :param dag_files: file name to source, written into the DAGs folder.
    """

    def __init__(self, tmp_path: Path, simulator: RunComfySimulator, dag_files: dict[str, str]) -> None:
        self.home, self.dags, self.logs = tmp_path / "home", tmp_path / "dags", tmp_path / "process-logs"
        for folder in (self.dags, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        for name, source in dag_files.items():
            (self.dags / name).write_text(source)
        self.port = free_port()
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW_CONN_KLING_DEFAULT": simulator.connection_json(),
            "PATH": f"{Path(AIRFLOW).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # executors run `airflow`
        }
        if AIRFLOW_V_3_0_PLUS:
            self.env |= {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # the REST API without a login
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": "kling-test-jwt-secret",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
            }
        else:  # Airflow 2: the scheduler parses DAGs and runs tasks itself (SQLite allows no LocalExecutor)
            self.env |= {
                "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor",
                "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "1",
            }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stack = ExitStack()
        self.http = requests.Session()
        subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, check=True, capture_output=True)

    def __enter__(self) -> AirflowProcesses:
        self._stack.callback(self.stop_all)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def start(self, name: str, *args: str) -> None:
        out = self._stack.enter_context((self.logs / f"{name}.log").open("ab"))
        self.procs[name] = subprocess.Popen(
            [AIRFLOW, *args],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops the workers it started too
        )

    def start_all(self) -> None:
        """The scheduler and the triggerer, and on Airflow 3 the API server and the DAG processor."""
        if AIRFLOW_V_3_0_PLUS:
            self.start("api-server", "api-server", "--port", str(self.port))
            self.start("dag-processor", "dag-processor")
        self.start("scheduler", "scheduler")
        self.start("triggerer", "triggerer")
        self.wait_until("the DAGs to be parsed", lambda: self.query("select count(*) from dag")[0][0] > 0, 120)

    def stop(self, name: str) -> None:
        """SIGTERM, and SIGKILL if it is still there after 30 s: an Airflow 2.11.0 triggerer stopped in
        its first seconds has been seen to ignore SIGTERM for minutes."""
        proc = self.procs.pop(name)
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop_all(self) -> None:
        """SIGTERM to each process group, SIGKILL to what is left after 20 s; every process reaped."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=20)
            _signal_group(proc, signal.SIGKILL)  # whatever it started and left behind

    def wait_until(self, what: str, check: Any, timeout: float) -> Any:
        return wait_until(what, check, timeout, processes=self.procs)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "airflow.db") as conn:
            return conn.execute(sql, params).fetchall()

    def process_log_tail(self, *names: str) -> str:
        return "".join((self.logs / f"{name}.log").read_text(errors="replace")[-3000:] for name in names)

    # --- the REST API, as the UI uses it (Airflow 3) ----------------------------------------------

    def api(self, method: str, path: str, params: dict[str, Any] | None = None, **json: Any) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v2{path}"
        answer = self.http.request(method, url, params=params, json=json or None, timeout=60)
        if answer.status_code >= 400:
            raise AssertionError(f"{method} {path} answered {answer.status_code}: {answer.text[:500]}")
        return answer.json() if answer.content else None

    def trigger(self, dag_id: str) -> str:
        """Trigger a run, as the UI's Trigger button does; returns its run id."""
        self.wait_until("the API server", self._api_up, 120)
        return str(self.api("POST", f"/dags/{dag_id}/dagRuns", logical_date=None)["dag_run_id"])

    def _api_up(self) -> bool:
        try:
            self.api("GET", "/version")
        except requests.RequestException:
            return False
        return True

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> None:
        """Clear tasks of a run, as the UI's Clear button does (downstream left as it is)."""
        self.api(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            dry_run=False,
            dag_run_id=run_id,
            task_ids=task_ids,
            only_failed=False,
            reset_dag_runs=True,
        )

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        """Wait until the run ends; returns its state."""

        def ended() -> str | None:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
            return run["state"] if run["state"] in ("success", "failed") else None

        state: str = self.wait_until(f"run {run_id} of {dag_id} to end", ended, timeout)
        return state

    def task_instances(self, dag_id: str, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
        """Every task instance of the run, by (task id, map index)."""
        found = self.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances", {"limit": 100})
        return {(ti["task_id"], ti["map_index"]): ti for ti in found["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api("GET", path, {"map_index": map_index, "deserialize": True})["value"]

    def task_logs(self) -> Iterator[tuple[Path, str]]:
        """Every task log file written so far, with its text."""
        for path in sorted((self.home / "logs").rglob("*.log")):
            yield path, path.read_text(errors="replace")


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
