"""
One DAG per cell of the exits x modes table (docs/behaviour.md): a wait that ends without a video,
in each way Airflow or the provider can end it, in each mode a task can wait in.

``exit_<exit>_<mode>``: exits ``timeout`` (the task's own), ``queue_timeout``, ``execution_timeout``,
``error`` (polls keep failing, no retry left) and ``error_retried`` (one retry left, which resumes);
modes ``poke``, ``reschedule``, ``deferrable`` (the sensor) and ``polling``, ``deferred`` (the operator
waiting itself).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.sensors.kling import KlingRequestSensor

FAST = {"retry_delay": 0.01, "max_attempts": 3, "read_timeout": 1.0}
#: The execution_timeout cells: a poll may hang longer than the task's execution_timeout.
PATIENT = {"retry_delay": 0.01, "max_attempts": 3, "read_timeout": 10.0}
SENSOR_MODES = ("poke", "reschedule", "deferrable")
OPERATOR_MODES = ("polling", "deferred")

EXITS: dict[str, dict[str, Any]] = {
    "timeout": {"timeout": 0.5},
    "queue_timeout": {"queue_timeout": 0.5},
    "execution_timeout": {"execution_timeout": timedelta(seconds=1.5), "hook_params": PATIENT},
    "error": {"retries": 0},
    "error_retried": {"retries": 1, "retry_delay": timedelta(seconds=0)},
}


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False)


def _sensor_mode(mode: str) -> dict[str, Any]:
    if mode == "deferrable":
        return {"deferrable": True}
    return {"deferrable": False, "mode": mode}


for _exit, _settings in EXITS.items():
    for _mode in SENSOR_MODES:
        with _dag(f"exit_{_exit}_{_mode}"):
            _submit = KlingTextToVideoOperator(task_id="generate", prompt="a heron at dawn", hook_params=FAST)
            KlingRequestSensor(
                task_id="wait",
                request_id=_submit.output,
                poke_interval=0.05,
                **{"hook_params": FAST, **_settings},
                **_sensor_mode(_mode),
            )
    for _mode in OPERATOR_MODES:
        with _dag(f"exit_{_exit}_{_mode}"):
            KlingTextToVideoOperator(
                task_id="generate",
                prompt="a heron at dawn",
                wait_for_completion=True,
                deferrable=_mode == "deferred",
                poll_interval=0.05,
                **{"hook_params": FAST, **_settings},
            )
