"""
Generate a Kling 1.6 video, wait for it without holding a worker slot, copy it to storage, notify.

generate -> wait (deferrable sensor) -> copy (to ``file://`` or any ObjectStoragePath) -> notify

The copy goes to ``KLING_VIDEO_DESTINATION`` (a folder URI such as ``s3://bucket/videos``, with
``KLING_STORAGE_CONN_ID`` for its connection) or else ``KLING_VIDEO_DIR`` (default:
``$AIRFLOW_HOME/kling-videos``), and emits the ``kling_videos`` asset, on which
``kling_on_new_video`` is scheduled. The notice goes to Slack or email when their connection
exists, else to the task log.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, Param, task

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.sensors.kling import KlingRequestSensor
from airflow_provider_kling.transfers.kling_to_storage import KlingVideoToStorageOperator

POLL_SECONDS = float(os.environ.get("KLING_POLL_INTERVAL", "5"))
VIDEO_FOLDER = os.environ.get("KLING_VIDEO_DESTINATION") or (
    Path(os.environ.get("KLING_VIDEO_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "kling-videos")
    .absolute()
    .as_uri()
)
KLING_VIDEOS = Asset(uri="file:///kling-videos")

# [START howto_kling_text_to_video]
with DAG(
    dag_id="kling_text_to_video",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["kling", "example"],
    params={
        "prompt": Param(
            "A desert road at twilight, bathed in rich amber and violet hues as a lone motorcycle speeds past.",
            type="string",
            minLength=1,
            maxLength=2500,
        ),
        "duration": Param(5, enum=[5, 10]),
        "aspect_ratio": Param("16:9", enum=["16:9", "9:16", "1:1"]),
    },
):
    generate = KlingTextToVideoOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        duration="{{ params.duration }}",
        aspect_ratio="{{ params.aspect_ratio }}",
    )

    wait = KlingRequestSensor(
        task_id="wait",
        request_id=generate.output,
        deferrable=True,
        poke_interval=POLL_SECONDS,
        timeout=3600,
        include_cost=True,
    )

    copy = KlingVideoToStorageOperator(
        task_id="copy",
        request_id=generate.output,
        destination=VIDEO_FOLDER + "/{{ ti.xcom_pull(task_ids='generate') }}.mp4",
        storage_conn_id=os.environ.get("KLING_STORAGE_CONN_ID"),
        outlets=[KLING_VIDEOS],
    )
    wait >> copy

    @task
    def notify(result: dict[str, Any], uri: str, prompt: str, **context: Any) -> str:
        """Say what was generated and where it landed (Slack, email, or the task log)."""
        from airflow_provider_kling.notifications.kling import video_notifier

        size = context["ti"].xcom_pull(task_ids="copy", key="size_bytes")
        message = (
            f"Kling video ready: prompt={prompt!r} request_id={result['request_id']} "
            f"uri={uri} size={size} bytes cost={result.get('cost')}"
        )
        video_notifier(message, to=os.environ.get("KLING_NOTIFY_EMAIL", "")).notify(context)  # type: ignore[arg-type]
        return message

    notify(wait.output, copy.output, prompt="{{ params.prompt }}")
# [END howto_kling_text_to_video]
