"""DAGs the budget tests run with ``dag.test()``: mapped generations against a cap, retries against a task's cap."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

FAST = {"retry_delay": 0.01, "max_attempts": 3, "read_timeout": 1.0}
WAIT = {"wait_for_completion": True, "poll_interval": 0.05, "hook_params": FAST}

with DAG("kling_budget_mapped", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    KlingTextToVideoOperator.partial(task_id="generate", budget="team", duration=5, **WAIT).expand(
        prompt=[f"a paper boat, take {n} [sim:queue=0][sim:run=0.2]" for n in range(5)]
    )

with DAG("kling_budget_retries", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    KlingTextToVideoOperator(
        task_id="generate",
        prompt="a model that keeps failing [sim:fail][sim:queue=0][sim:run=0]",
        max_paid_submits=2,
        retries=4,
        retry_delay=timedelta(seconds=0),
        **WAIT,
    )
