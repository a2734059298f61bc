"""
Generate a batch of Kling videos every day, a few at a time, and sum up what it cost.

load_prompts -> generate (mapped over the prompts: submit, wait, store, one task each) -> summary

Prompts come from the Airflow Variable ``kling_batch_prompts`` (a JSON list of strings) when it
is set, else from ``kling_prompts.txt`` beside this file (one per line). Generations run in the
``kling_generations`` pool: each generation holds one slot from its submit until its video is
done (waiting deferred, so no worker slot is held), so the pool's size caps how many paid
generations are in flight. Each generation stores its own video and ends in the triggerer
(``destination``, ``finish_in_triggerer``): one worker run per video, its paid submit. Create the
pool with, for example::

    airflow pools set kling_generations 2 "Concurrent Kling generations" --include-deferred

One failed generation does not stop the others; the summary says which failed and why.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

BUDGET = os.environ.get("KLING_BUDGET") or None
POOL = "kling_generations"
DURATION = 5
POLL_SECONDS = float(os.environ.get("KLING_POLL_INTERVAL", "5"))
PROMPTS_FILE = Path(__file__).with_name("kling_prompts.txt")
VIDEO_FOLDER = os.environ.get("KLING_VIDEO_DESTINATION") or (
    Path(os.environ.get("KLING_VIDEO_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "kling-videos")
    .absolute()
    .as_uri()
)

with DAG(
    dag_id="kling_batch_prompts",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["kling", "example"],
):

    @task
    def load_prompts() -> list[str]:
        """The day's prompts: the ``kling_batch_prompts`` Variable, else the prompts file."""
        from airflow.providers.common.compat.sdk import Variable

        prompts = Variable.get("kling_batch_prompts", None, deserialize_json=True)  # default: positional in 2 and 3
        if prompts is None:
            prompts = [line.strip() for line in PROMPTS_FILE.read_text().splitlines() if line.strip()]
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("kling_batch_prompts: must be a JSON list of prompt strings")
        return prompts

    prompts = load_prompts()
    videos = KlingTextToVideoOperator.partial(
        task_id="generate",
        duration=DURATION,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        include_cost=True,
        pool=POOL,
        # The day's batch spends from a budget of the kling connection (its extra names the caps
        # and the ledger's database): a prompts file of 10,000 lines is refused past the cap,
        # before anything is paid. KLING_BUDGET unset: no budget.
        budget=BUDGET,
        max_paid_submits=2,  # retries never pay for a third take of the same prompt
        destination=VIDEO_FOLDER + "/{{ ds_nodash }}/{request_id}.mp4",
        storage_conn_id=os.environ.get("KLING_STORAGE_CONN_ID"),
        overwrite=True,  # a trigger run twice (a triggerer failover) stores the same bytes again
        finish_in_triggerer=True,
    ).expand(prompt=prompts)

    @task(trigger_rule="all_done")
    def summary(prompts: list[str], **context: Any) -> dict[str, Any]:
        """Succeeded and failed generations, seconds of video and cost, whatever failed."""
        from airflow_provider_kling.hooks.kling import KlingHook

        ti = context["ti"]
        succeeded, failed, seconds, cost = [], [], 0, 0.0
        with KlingHook() as hook:
            for index, prompt in enumerate(prompts):
                request_id = ti.xcom_pull(task_ids="generate", key="request_id", map_indexes=index)
                if request_id is None:
                    failed.append({"prompt": prompt, "request_id": None, "reason": "not submitted"})
                    continue
                result = hook.get_result(request_id, include_cost=True)
                if result.status.value == "succeeded":
                    succeeded.append({"prompt": prompt, "request_id": request_id})
                    seconds += DURATION
                    cost += float(result.cost or 0.0)
                else:
                    failed.append({"prompt": prompt, "request_id": request_id, "reason": result.error_message})
        report = {"succeeded": succeeded, "failed": failed, "video_seconds": seconds, "cost": round(cost, 4)}
        print(f"Kling batch: {len(succeeded)} succeeded, {len(failed)} failed, {seconds} s of video, cost {cost:.2f}")
        for item in failed:
            print(f"  failed: {item['prompt']!r} ({item['request_id']}): {item['reason']}")
        return report

    videos >> summary(prompts)
