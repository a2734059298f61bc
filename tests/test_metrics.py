"""Metrics through Airflow's own Stats, read by a real StatsD listener (a UDP socket) in a real DAG run."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_kling.testing import StatsdListener
from tests.conftest import AIRFLOW

pytest.importorskip("statsd", reason="Airflow's StatsD client (the dev group installs it)")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAGS = Path(__file__).parent / "dag_files"


def test_counts_equal_what_the_simulator_recorded(sim, tmp_path, airflow_db):
    listener = StatsdListener()
    listener.start()
    store = tmp_path / "ledger.db"
    extra = {"budgets": {"team": {"videos": 3, "period": "day"}}, "budget_store": "kling_ledger"}
    env = {
        **os.environ,
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW_CONN_KLING_DEFAULT": sim.connection_json(extra=extra),
        "AIRFLOW_CONN_KLING_LEDGER": json.dumps({"conn_type": "sqlite", "host": str(store)}),
    }
    try:
        done = subprocess.run(
            [AIRFLOW, "dags", "test", "kling_metrics"], env=env, capture_output=True, text=True, timeout=240
        )
    finally:
        listener.close()
    assert "kling_metrics" in done.stdout + done.stderr  # the run happened (it fails: three tasks fail on purpose)
    metrics = [(name, value, kind) for _, name, value, kind in listener.ours()]
    counts = Counter()
    for name, value, kind in metrics:
        if kind == "c":
            counts[name] += value
    assert counts["kling.submitted"] == sim.calls["submit"] == 6  # 3 of the budget's 4 takes, and 3 more
    assert counts["kling.budget_refused"] == 1
    assert counts["kling.succeeded"] == 3
    assert counts["kling.failed"] == 1
    assert counts["kling.cancelled"] == sum(1 for r in sim.requests.values() if r.cancelled_at is not None) == 1
    assert counts["kling.billed_without_video"] == 1
    assert counts["kling.video_seconds"] == 30  # six paid submits of 5 s
    cost = sum(value for name, value, kind in metrics if name == "kling.cost" and kind == "g")
    assert cost == pytest.approx(0.5 * 3)  # what RunComfy reported for each video (0.5 in the simulator)
    timers = {name for name, _, kind in metrics if kind == "ms"}
    assert {"kling.queued", "kling.rendering"} <= timers
    # Every run that paid says where its time went: our phases, their sum, the process before execute.
    paying = [value for name, value, kind in metrics if name == "kling.worker_run.submit" and kind == "ms"]
    assert len(paying) == 6  # one per paid submit
    phases = {f"kling.worker_run.{phase}" for phase in ("imports", "connection", "checks", "record", "ours")}
    assert phases | {"kling.worker_run.before_execute"} <= timers
    assert all(value > 0 for value in paying)  # the POST took time: the phase timed it
