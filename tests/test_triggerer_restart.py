"""
A triggerer restart mid-wait carries on with the same request, in real Airflow processes.

Runs the scheduler and the triggerer (on Airflow 3 also the API server and the DAG processor) as
separate processes against the simulator, stops the triggerer while the task is deferred, starts
it again, and checks that the run succeeds with exactly one submit and no cancel.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

from airflow_provider_kling.testing import Scenario
from tests.conftest import AIRFLOW, free_port, wait_until

DAG_FILE = """
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

with DAG("kling_triggerer_restart", schedule=None, start_date=datetime(2026, 1, 1)):
    KlingTextToVideoOperator(
        task_id="generate",
        prompt="a lantern on a pier at night",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=0.5,
    )
"""

pytestmark = pytest.mark.integration


@pytest.mark.timeout(400)
def test_triggerer_restart_keeps_waiting_on_the_same_request(kling_simulator, tmp_path):
    home, dags = tmp_path / "home", tmp_path / "dags"
    dags.mkdir()
    (dags / "restart_dag.py").write_text(DAG_FILE)
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW_CONN_KLING_DEFAULT": kling_simulator.connection_json(),
        "PATH": f"{Path(AIRFLOW).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # executors run `airflow`
    }
    if AIRFLOW_V_3_0_PLUS:
        env |= {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": "kling-restart-test-jwt-secret",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
        }
    else:  # Airflow 2: the scheduler parses DAGs and runs tasks itself (SQLite allows no LocalExecutor)
        env |= {"AIRFLOW__CORE__EXECUTOR": "SequentialExecutor", "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "1"}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    db = home / "airflow.db"

    def query(sql: str) -> list[tuple]:
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()

    def ti_state() -> str | None:
        rows = query("select state from task_instance where dag_id = 'kling_triggerer_restart'")
        return rows[0][0] if rows else None

    kling_simulator.script(Scenario(queue_seconds=8, run_seconds=8))
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: dict[str, subprocess.Popen] = {}

    with ExitStack() as stack:

        def start(name: str, *args: str) -> None:
            out = stack.enter_context((logs / f"{name}.log").open("ab"))
            procs[name] = subprocess.Popen([AIRFLOW, *args], env=env, stdout=out, stderr=subprocess.STDOUT)

        @stack.callback
        def stop_all() -> None:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()

        if AIRFLOW_V_3_0_PLUS:
            start("api-server", "api-server", "--port", str(port))
            start("dag-processor", "dag-processor")
        start("scheduler", "scheduler")
        start("triggerer", "triggerer")
        wait_until("the DAG to be parsed", lambda: query("select count(*) from dag")[0][0] > 0, 120, processes=procs)
        trigger = [AIRFLOW, "dags", "trigger", "kling_triggerer_restart"]
        subprocess.run(trigger, env=env, check=True, capture_output=True)
        wait_until("the task to defer", lambda: ti_state() == "deferred", 120, processes=procs)
        assert kling_simulator.calls["submit"] == 1

        triggerer = procs.pop("triggerer")
        triggerer.send_signal(signal.SIGTERM)
        triggerer.wait(timeout=60)

        def polls() -> int:  # near the front of the queue the trigger polls the result call alone
            return kling_simulator.calls["status"] + kling_simulator.calls["result"]

        polls_before_restart = polls()
        start("triggerer", "triggerer")

        def run_state() -> str | None:
            rows = query("select state from dag_run where dag_id = 'kling_triggerer_restart'")
            return rows[0][0] if rows else None

        wait_until("the DAG run to finish", lambda: run_state() in ("success", "failed"), 180, processes=procs)
        log_tail = "".join((logs / f).read_text(errors="replace")[-3000:] for f in ("triggerer.log", "scheduler.log"))
        assert run_state() == "success", log_tail
    assert kling_simulator.calls["submit"] == 1
    assert kling_simulator.calls["cancel"] == 0
    assert polls() > polls_before_restart  # the new triggerer polled the same request
    (request,) = kling_simulator.requests.values()
    assert request.cancelled_at is None
