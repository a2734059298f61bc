"""
Animate an image from your own object storage with Kling image to video, and store the video.

animate (checks the image, signs it for RunComfy at the paid submit, waits in the triggerer,
stores the video) -> report

The image is ``KLING_IMAGE`` (an object-store URI such as ``s3://brand/key-visual.png``, read with
the ``KLING_IMAGE_CONN_ID`` connection, default ``kling_images``; or an ``https`` URL). It never
has to be public: its store signs a short-lived URL for RunComfy (docs/images.md), and everything
the task keeps names the object, not the URL. ``make demo`` runs it against an S3 API on loopback
holding a sample key visual. The model is any of the registry's image-to-video models
(``kling models``); ``image`` goes to its own field name.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_kling.family import DEFAULT_IMAGE_TO_VIDEO_MODEL, image_to_video_models
from airflow_provider_kling.operators.image_to_video import KlingImageToVideoOperator

POLL_SECONDS = float(os.environ.get("KLING_POLL_INTERVAL", "5"))
VIDEO_FOLDER = os.environ.get("KLING_VIDEO_DESTINATION") or (
    Path(os.environ.get("KLING_VIDEO_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "kling-videos")
    .absolute()
    .as_uri()
)

# [START howto_kling_image_to_video]
with DAG(
    dag_id="kling_image_to_video",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["kling", "example"],
    params={
        "image": Param(os.environ.get("KLING_IMAGE", "s3://brand/key-visual.png"), type="string"),
        "model": Param(DEFAULT_IMAGE_TO_VIDEO_MODEL, enum=image_to_video_models()),
        "prompt": Param("The key visual comes alive: a slow push-in, the light sweeps across it.", type="string"),
    },
):
    animate = KlingImageToVideoOperator(
        task_id="animate",
        model="{{ params.model }}",
        image="{{ params.image }}",
        image_conn_id=os.environ.get("KLING_IMAGE_CONN_ID", "kling_images"),
        prompt="{{ params.prompt }}",
        destination=f"{VIDEO_FOLDER}/{{request_id}}.mp4",
        storage_conn_id=os.environ.get("KLING_STORAGE_CONN_ID"),
        overwrite=True,  # a trigger run twice (a triggerer failover) stores the same bytes again
        wait_for_completion=True,
        deferrable=True,
        finish_in_triggerer=True,  # one worker run: the submit; the triggerer stores the video
        poll_interval=POLL_SECONDS,
        timeout=3600,
    )

    @task
    def report(image: str, **context: Any) -> str:
        """Say which image became which video, with the video's facts."""
        stored = context["ti"].xcom_pull(task_ids="animate", key="result")["stored"]
        line = (
            f"Kling image to video: {image} -> {stored['uri']} ({stored['duration_s']:g} s, "
            f"{stored['width']}x{stored['height']}, {'with' if stored['has_audio'] else 'no'} sound)"
        )
        print(line)
        return line

    animate >> report("{{ params.image }}")
# [END howto_kling_image_to_video]
