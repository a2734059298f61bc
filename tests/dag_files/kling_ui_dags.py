"""DAGs whose takes the UI tests look at: two DAGs a user may or may not read, a failure, one in flight."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

FAST = {"retry_delay": 0.01, "max_attempts": 3, "read_timeout": 30.0}  # a 19-MB take on a busy machine
VIDEOS = os.environ.get("KLING_VIDEO_DIR", "/nonexistent-kling-videos")
PARAMS = {"prompt": "a paper boat on a rainy street"}


def _take(dag_id: str, duration: int = 5, **kwargs: object) -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS) as dag:
        KlingTextToVideoOperator(
            task_id="generate",
            prompt="{{ params.prompt }}",
            duration=duration,
            wait_for_completion=True,
            deferrable=True,
            poll_interval=0.1,
            include_cost=True,
            hook_params=FAST,
            **kwargs,  # type: ignore[arg-type]
        )
    return dag


#: Stored takes, spent from the ``ui`` budget: one DAG the test's second user may read, one he may not.
allowed = _take("kling_ui_allowed", duration=10, destination=f"{VIDEOS}/allowed/{{request_id}}.mp4", budget="ui")
hidden = _take("kling_ui_hidden", destination=f"{VIDEOS}/hidden/{{request_id}}.mp4", budget="ui")
#: A take whose generation fails on the server.
failing = _take("kling_ui_failing", retries=0)
#: A take stored on a disk the API server does not see (a worker's): the path is made up.
elsewhere = _take("kling_ui_elsewhere", destination=f"{VIDEOS}/elsewhere/{{request_id}}.mp4")
#: A take that stays in flight while the test looks.
in_flight = _take("kling_ui_in_flight", queue_timeout=None, timeout=600)
