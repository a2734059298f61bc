"""
Offline testing support: a RunComfy simulator that speaks the Model API over real HTTP on loopback.

    with RunComfySimulator(queue_seconds=0.2, run_seconds=0.5) as sim:
        os.environ["AIRFLOW_CONN_KLING_DEFAULT"] = sim.connection_json()
        ...
        assert sim.calls["submit"] == 1
"""

from __future__ import annotations

from airflow_provider_kling.testing.dags import load_dags
from airflow_provider_kling.testing.simulator import Fault, RunComfySimulator, Scenario

__all__ = ["Fault", "RunComfySimulator", "Scenario", "load_dags"]
