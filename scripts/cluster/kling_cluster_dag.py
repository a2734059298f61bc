"""
The DAG of ``make cluster``, written as a user would: for each prompt, generate and wait (deferred,
in a pool that counts deferred tasks), then copy the video to storage.

The two steps are a mapped task group, so each copy starts as soon as its own video is ready. Mapping
the copy over the generate task's output instead (``copy.expand(request_id=generate.output)``) makes
every copy wait for the slowest generation of the batch.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task, task_group

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.transfers.kling_to_storage import KlingVideoToStorageOperator

GENERATIONS = int(os.environ.get("KLING_CLUSTER_GENERATIONS", "200"))
VIDEO_DIR = os.environ.get("KLING_CLUSTER_VIDEO_DIR", "/tmp/kling-cluster-videos")
# Tries that span minutes of an outage (the API, the database, the broker): each retry resumes the same
# request, so a retry costs a worker run, never a second paid submit.
RETRY = {
    "retries": 8,
    "retry_delay": timedelta(seconds=5),
    "retry_exponential_backoff": 2,
    "max_retry_delay": timedelta(seconds=60),
}

with DAG(
    "kling_cluster",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=2 * GENERATIONS,
):

    @task
    def prompts() -> list[str]:
        return [f"generation {i:04d}: a paper boat drifting down a rainy street" for i in range(GENERATIONS)]

    @task_group
    def generation(prompt: str) -> None:
        generate = KlingTextToVideoOperator(
            task_id="generate",
            prompt=prompt,
            wait_for_completion=True,
            deferrable=True,
            include_cost=True,
            pool="kling_generations",
            **RETRY,
        )
        KlingVideoToStorageOperator(
            task_id="copy",
            request_id=generate.output,
            destination=VIDEO_DIR + "/{{ ti.map_index }}.mp4",
            overwrite=True,
            **RETRY,
        )

    generation.expand(prompt=prompts())
