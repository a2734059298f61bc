"""
Generate a Kling 1.6 video and store it in one task, then notify.

generate (submits, waits in the triggerer, stores the video, ends there) -> notify

One task generates and stores: ``destination`` lands the video whole and checked (a playable
video, its facts read by FFmpeg: duration, resolution, frame rate, codec, audio; a poster frame
beside it), and
``finish_in_triggerer`` ends the task in the triggerer once it landed, so the generation costs
one worker run, its paid submit (docs/cluster.md compares this layout with generate -> copy).
The video goes to ``KLING_VIDEO_DESTINATION`` (a folder URI such as ``s3://bucket/videos``, with
``KLING_STORAGE_CONN_ID`` for its connection) or else ``KLING_VIDEO_DIR`` (default:
``$AIRFLOW_HOME/kling-videos``), named after its request. The notice goes to Slack or email when
their connection exists, else to the task log, with the video's facts, and emits the
``kling_videos`` asset (with the video's ``uri``, ``size_bytes``, ``sha256`` and facts), on which
``kling_on_new_video`` is scheduled.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, Param, task

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

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
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
        include_cost=True,
        destination=VIDEO_FOLDER + "/{request_id}.mp4",  # {request_id}: filled in once the video is ready
        storage_conn_id=os.environ.get("KLING_STORAGE_CONN_ID"),
        overwrite=True,  # a trigger run twice (a triggerer failover) stores the same bytes again
        finish_in_triggerer=True,
    )

    @task(outlets=[KLING_VIDEOS])
    def notify(prompt: str, **context: Any) -> str:
        """Say what was generated and where it landed (Slack, email, or the task log); announce the video."""
        from airflow_provider_kling.notifications.kling import video_notifier
        from airflow_provider_kling.store import describe_facts

        result = context["ti"].xcom_pull(task_ids="generate", key="result")
        stored = result["stored"]  # uri, size_bytes, sha256, the facts (duration_s, width, height...), poster
        context["outlet_events"][KLING_VIDEOS].extra.update(stored)
        message = (
            f"Kling video ready: prompt={prompt!r} request_id={result['request_id']} "
            f"uri={stored['uri']} size={stored['size_bytes']} bytes cost={result.get('cost')} "
            f"video: {describe_facts(stored)} poster={stored['poster']}"
        )
        for mismatch in stored["mismatch"]:  # the take is not the shape asked for
            message += f" NOT AS ASKED: {mismatch}"
        video_notifier(message, to=os.environ.get("KLING_NOTIFY_EMAIL", "")).notify(context)  # type: ignore[arg-type]
        return message

    generate >> notify(prompt="{{ params.prompt }}")
# [END howto_kling_text_to_video]
