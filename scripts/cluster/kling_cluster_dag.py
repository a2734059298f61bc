"""
The DAG of ``make cluster``, written as a user would, in the two layouts the run compares side by side:

- ``one_run`` (the recommended layout): one task per prompt generates, waits deferred, stores the
  video (``destination``) and ends in the triggerer (``finish_in_triggerer``): one worker run, the
  paid submit.
- ``two_tasks`` (the earlier layout): generate and wait deferred, resume on a worker, then copy the
  video to storage in a second task. A mapped task group, so each copy starts as soon as its own
  video is ready; mapping the copy over the generate task's output instead
  (``copy.expand(request_id=generate.output)``) makes every copy wait for the slowest generation.

``KLING_CLUSTER_LAYOUTS`` says which run (both by default, the prompts split between them).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task, task_group

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.transfers.kling_to_storage import KlingVideoToStorageOperator

GENERATIONS = int(os.environ.get("KLING_CLUSTER_GENERATIONS", "200"))
LAYOUTS = os.environ.get("KLING_CLUSTER_LAYOUTS", "one_run,two_tasks").split(",")
VIDEO_DIR = os.environ.get("KLING_CLUSTER_VIDEO_DIR", "/tmp/kling-cluster-videos")
# Tries that span minutes of an outage (the API, the database, the broker): each retry resumes the same
# request, so a retry costs a worker run, never a second paid submit.
RETRY = {
    "retries": 8,
    "retry_delay": timedelta(seconds=5),
    "retry_exponential_backoff": 2,
    "max_retry_delay": timedelta(seconds=60),
}
# Both layouts at the same priority (Airflow weighs a task by its downstream tasks by default, which
# would start every two_tasks submit first): the scheduler then starts them by map index, interleaved.
SAME_PRIORITY = {"weight_rule": "absolute", "priority_weight": 1}
GENERATE = {
    "wait_for_completion": True,
    "deferrable": True,
    "include_cost": True,
    "pool": "kling_generations",
    **SAME_PRIORITY,
}


def share(layout: str) -> range:
    """The generations (numbers in the prompts) of one layout: the prompts split in order between the layouts."""
    per = -(-GENERATIONS // len(LAYOUTS))
    first = LAYOUTS.index(layout) * per
    return range(first, min(first + per, GENERATIONS))


with DAG(
    "kling_cluster",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=2 * GENERATIONS,
):

    @task
    def prompts(layout: str) -> list[str]:
        return [f"generation {i:04d}: a paper boat drifting down a rainy street" for i in share(layout)]

    if "one_run" in LAYOUTS:

        @task_group
        def one_run(prompt: str) -> None:
            KlingTextToVideoOperator(
                task_id="generate",
                prompt=prompt,
                destination=f"{VIDEO_DIR}/{{{{ ti.map_index + {share('one_run').start} }}}}.mp4",
                overwrite=True,
                finish_in_triggerer=True,
                **GENERATE,
                **RETRY,
            )

        one_run.expand(prompt=prompts.override(task_id="one_run_prompts")("one_run"))

    if "two_tasks" in LAYOUTS:

        @task_group
        def two_tasks(prompt: str) -> None:
            generate = KlingTextToVideoOperator(task_id="generate", prompt=prompt, **GENERATE, **RETRY)
            KlingVideoToStorageOperator(
                task_id="copy",
                request_id=generate.output,
                destination=f"{VIDEO_DIR}/{{{{ ti.map_index + {share('two_tasks').start} }}}}.mp4",
                overwrite=True,
                **SAME_PRIORITY,
                **RETRY,
            )

        two_tasks.expand(prompt=prompts.override(task_id="two_tasks_prompts")("two_tasks"))
