"""A DAG of yours that generates a video with Kling: the one the tests next door check offline."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

with DAG(dag_id="my_kling_dag", schedule=None, start_date=datetime(2026, 1, 1)):
    KlingTextToVideoOperator(
        task_id="generate",
        prompt="A paper boat drifting down a rain-soaked street",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=0.05,
    )
