"""
Offline testing support: a RunComfy simulator that speaks the Model API over real HTTP on loopback.

    with RunComfySimulator(queue_seconds=0.2, run_seconds=0.5) as sim:
        os.environ["AIRFLOW_CONN_KLING_DEFAULT"] = sim.connection_json()
        ...
        assert sim.calls["submit"] == 1

The names load when first used: pytest loads this package's plugin in every test run of every
user who installs the provider, and the simulator's server (``aiohttp.web``) is for those that use it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_kling.testing.dags import load_dags
    from airflow_provider_kling.testing.simulator import Fault, RunComfySimulator, Scenario
    from airflow_provider_kling.testing.statsd import StatsdListener

__all__ = ["Fault", "RunComfySimulator", "Scenario", "StatsdListener", "load_dags"]

_HOMES = {
    "Fault": "simulator",
    "RunComfySimulator": "simulator",
    "Scenario": "simulator",
    "StatsdListener": "statsd",
    "load_dags": "dags",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
