"""DAGs the tests run with ``dag.test()``: the operator and the sensor in each waiting mode."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.sensors.kling import KlingRequestSensor

FAST = {"retry_delay": 0.01, "max_attempts": 3}
PARAMS = {"prompt": "a paper boat on a rainy street", "duration": 5}


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS)


def _generate(**kwargs: object) -> KlingTextToVideoOperator:
    return KlingTextToVideoOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        duration="{{ params.duration }}",
        poll_interval=0.05,
        hook_params=FAST,
        **kwargs,  # type: ignore[arg-type]
    )


with _dag("kling_operator_deferrable") as operator_deferrable:
    _generate(wait_for_completion=True, deferrable=True, include_cost=True)

with _dag("kling_operator_polling") as operator_polling:
    _generate(wait_for_completion=True, deferrable=False)

with _dag("kling_operator_submit_only") as operator_submit_only:
    _generate()

with _dag("kling_sensor_deferrable") as sensor_deferrable:
    KlingRequestSensor(
        task_id="wait",
        request_id=_generate().output,
        deferrable=True,
        poke_interval=0.05,
        hook_params=FAST,
    )

with _dag("kling_sensor_poke") as sensor_poke:
    KlingRequestSensor(
        task_id="wait",
        request_id=_generate().output,
        deferrable=False,
        mode="poke",
        poke_interval=0.05,
        hook_params=FAST,
    )
