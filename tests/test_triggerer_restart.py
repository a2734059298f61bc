"""
A triggerer restart mid-wait carries on with the same request, in real Airflow processes.

Runs the scheduler and the triggerer (on Airflow 3 also the API server and the DAG processor) as
separate processes against the simulator, stops the triggerer while the task is deferred, starts
it again, and checks that the run succeeds with exactly one submit and no cancel.
"""

from __future__ import annotations

import subprocess

import pytest

from airflow_provider_kling.testing import Scenario
from tests.airflow_processes import AirflowProcesses
from tests.conftest import AIRFLOW

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
    kling_simulator.script(Scenario(queue_seconds=8, run_seconds=8))
    with AirflowProcesses(tmp_path, kling_simulator, {"restart_dag.py": DAG_FILE}) as airflow:

        def ti_state() -> str | None:
            rows = airflow.query("select state from task_instance where dag_id = 'kling_triggerer_restart'")
            return rows[0][0] if rows else None

        def run_state() -> str | None:
            rows = airflow.query("select state from dag_run where dag_id = 'kling_triggerer_restart'")
            return rows[0][0] if rows else None

        airflow.start_all()
        trigger = [AIRFLOW, "dags", "trigger", "kling_triggerer_restart"]
        subprocess.run(trigger, env=airflow.env, check=True, capture_output=True)
        airflow.wait_until("the task to defer", lambda: ti_state() == "deferred", 120)
        assert kling_simulator.calls["submit"] == 1

        airflow.stop("triggerer")

        def polls() -> int:  # near the front of the queue the trigger polls the result call alone
            return kling_simulator.calls["status"] + kling_simulator.calls["result"]

        polls_before_restart = polls()
        airflow.start("triggerer", "triggerer")
        airflow.wait_until("the DAG run to finish", lambda: run_state() in ("success", "failed"), 180)
        assert run_state() == "success", airflow.process_log_tail("triggerer", "scheduler")
    assert kling_simulator.calls["submit"] == 1
    assert kling_simulator.calls["cancel"] == 0
    assert polls() > polls_before_restart  # the new triggerer polled the same request
    (request,) = kling_simulator.requests.values()
    assert request.cancelled_at is None
