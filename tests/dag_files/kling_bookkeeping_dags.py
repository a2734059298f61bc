"""
DAGs whose first try fails after the operator returned, in what Airflow does next (a post-execute
hook stands in for Airflow's own XCom push or success report failing as its database fails over):
the retry must use the video the first try delivered, not pay for another.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

FAST = {"retry_delay": 0.01, "max_attempts": 3, "read_timeout": 2.0}
PROMPT = "a lighthouse at dusk [sim:queue=0.2][sim:run=0.2]"


def database_fails_over_once(context: Any, result: Any = None) -> None:
    if context["ti"].try_number == 1:
        raise RuntimeError("the metadata database went away after the task's work was done")


COMMON = {
    "wait_for_completion": True,
    "poll_interval": 0.05,
    "hook_params": FAST,
    "retries": 1,
    "retry_delay": timedelta(seconds=0),
    "post_execute": database_fails_over_once,
    "destination": "{{ params.destination }}",
}
PARAMS = {"destination": ""}

for layout, options in {"polling": {"deferrable": False}, "deferrable": {"deferrable": True}}.items():
    with DAG(f"kling_bookkeeping_{layout}", schedule=None, start_date=datetime(2026, 1, 1), params=PARAMS):
        KlingTextToVideoOperator(task_id="generate", prompt=PROMPT, **options, **COMMON)

with DAG("kling_bookkeeping_taskflow", schedule=None, start_date=datetime(2026, 1, 1), params=PARAMS):

    @task.kling(**COMMON)
    def generate() -> str:
        return PROMPT

    generate()
