"""
The budget race of ``make cluster``: more mapped generations than a budget allows, submitted at once
from both Celery workers. Exactly the cap may be submitted; the others fail before anything is sent.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

RACERS = int(os.environ.get("KLING_CLUSTER_RACERS", "40"))

with DAG("kling_budget_race", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks=RACERS):
    KlingTextToVideoOperator.partial(
        task_id="generate", budget="race", wait_for_completion=True, deferrable=True, poll_interval=1
    ).expand(prompt=[f"race {i:02d}: a paper boat" for i in range(RACERS)])
