"""DAGs the image-to-video tests run with ``dag.test()``: an image from a bucket, in each of the three layouts."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_kling.operators.image_to_video import KlingImageToVideoOperator

FAST = {"retry_delay": 0.01, "max_attempts": 3, "read_timeout": 1.0}
WAIT = {"wait_for_completion": True, "poll_interval": 0.05, "hook_params": FAST}
PARAMS = {
    "image": "s3://brand/key-visual.png",
    "image_conn_id": "aws_test",
    "model": "kling/kling-2-1/pro/image-to-video",
    "prompt": "the key visual comes alive [sim:queue=0.3][sim:run=0.3]",
    "destination": "",
}
LAYOUTS = {
    "polling": {"deferrable": False},
    "deferrable": {"deferrable": True},
    "ends_in_triggerer": {"deferrable": True, "finish_in_triggerer": True},
}

for layout, options in LAYOUTS.items():
    with DAG(f"kling_image_{layout}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS):
        KlingImageToVideoOperator(
            task_id="animate",
            image="{{ params.image }}",
            image_conn_id="{{ params.image_conn_id }}",
            model="{{ params.model }}",
            prompt="{{ params.prompt }}",
            destination="{{ params.destination }}",
            **options,
            **WAIT,
        )

with DAG("kling_image_taskflow", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS):

    @task.kling(model="kling/kling-video-o1/image-to-video", image_conn_id="aws_test", **WAIT)
    def bridge(first: str) -> dict:
        # The frames are what the run computed; the keys are the operator's, whatever the model calls them.
        return {"prompt": "day turns to night [sim:queue=0.2][sim:run=0.2]", "image": first, "end_image": first}

    bridge("{{ params.image }}")

with DAG("kling_image_retry_deadline", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS):
    # Polls that fail past the deadline end the try; the retry resumes the request its image was signed for.
    KlingImageToVideoOperator(
        task_id="animate",
        image="{{ params.image }}",
        image_conn_id="aws_test",
        prompt="{{ params.prompt }}",
        deferrable=False,
        timeout=0.5,
        retries=4,
        retry_delay=timedelta(seconds=0),
        **WAIT,
    )
