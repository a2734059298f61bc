"""Metrics through Airflow's own Stats, read by a real StatsD listener (a UDP socket) in a real DAG run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import AIRFLOW

pytest.importorskip("statsd", reason="Airflow's StatsD client (the dev group installs it)")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAGS = Path(__file__).parent / "dag_files"


class StatsdListener:
    """A StatsD server as far as Airflow can tell: a UDP socket on loopback that keeps every line."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines.extend(packet.decode().splitlines())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def ours(self) -> list[tuple[str, float, str]]:
        """Our metrics as (name, value, type), the prefix taken off."""
        found = []
        for line in self.lines:
            name, _, rest = line.partition(":")
            if name.startswith("airflow.kling."):
                value, _, kind = rest.partition("|")
                found.append((name.removeprefix("airflow."), float(value.lstrip("+")), kind.split("|")[0]))
        return found


def test_counts_equal_what_the_simulator_recorded(sim, tmp_path, airflow_db):
    listener = StatsdListener()
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
    metrics = listener.ours()
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
