"""The DAG the lineage test runs with ``airflow dags test``: a generation that stores, then a copy to storage."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.transfers.kling_to_storage import KlingVideoToStorageOperator

FAST = {"retry_delay": 0.01, "max_attempts": 3, "read_timeout": 1.0}
DESTINATION = os.environ.get("KLING_LINEAGE_DESTINATION", "/tmp/kling-lineage/video.mp4")

with DAG("kling_lineage", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    generate = KlingTextToVideoOperator(
        task_id="generate",
        prompt="a lighthouse keeper's secret recipe [sim:queue=0.2][sim:run=0.3]",
        duration=10,
        wait_for_completion=True,
        deferrable=True,
        include_cost=True,
        poll_interval=0.05,
        hook_params=FAST,
        destination=str(Path(DESTINATION).with_name("generated.mp4")),  # the one-task store, beside the copy
        overwrite=True,
    )
    copy = KlingVideoToStorageOperator(
        task_id="store",
        request_id="{{ ti.xcom_pull(task_ids='generate') }}",
        destination=DESTINATION,
        hook_params=FAST,
    )
    generate >> copy
