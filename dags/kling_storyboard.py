"""
A film longer than one shot: three shots from a key visual in your bucket, each starting where the
one before ended, stitched into one checked film.

film.reserve (the whole film from the budget, before any shot is paid) -> film.shot_1 -> film.shot_2
-> film.shot_3 (each animates the last frame of the one before, signed from the bucket) ->
film.stitch (one film: every packet of the shots kept, its facts checked) -> film.release
(what was reserved and not spent goes back) ; report (the film's facts)

The key visual is ``KLING_IMAGE`` (default ``s3://brand/key-visual.png``, read with
``KLING_IMAGE_CONN_ID``, default ``kling_images``); the shots land in ``KLING_FILM_SHOTS`` (default
``s3://brand/films``: object storage, since each shot's last frame is signed for the next), the film
in ``KLING_VIDEO_DIR``. ``make demo`` runs it on the simulator, with an S3 API on loopback.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_kling.storyboard import kling_storyboard

POLL_SECONDS = float(os.environ.get("KLING_POLL_INTERVAL", "5"))
IMAGES = os.environ.get("KLING_IMAGE_CONN_ID", "kling_images")
FILMS = (os.environ.get("KLING_VIDEO_DIR") or str(Path(os.environ.get("AIRFLOW_HOME", ".")) / "kling-videos")).rstrip(
    "/"
)

# [START howto_kling_storyboard]
with DAG(
    dag_id="kling_storyboard",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["kling", "example"],
):
    film = kling_storyboard(
        "film",
        shots=[
            "The key visual comes alive: a slow push-in as the morning light finds it.",
            "The camera circles the product; the light sweeps across its surface.",
            {"prompt": "Dusk falls; the product glows against the darkening sky.", "duration": 5},
        ],
        start_image=os.environ.get("KLING_IMAGE", "s3://brand/key-visual.png"),
        image_conn_id=IMAGES,
        shots_folder=os.environ.get("KLING_FILM_SHOTS", "s3://brand/films") + "/{{ ts_nodash }}",
        film=FILMS + "/film-{{ ts_nodash }}.mp4",
        storage_conn_id=IMAGES,
        budget=os.environ.get("KLING_BUDGET"),  # the whole film is reserved before its first shot is paid
        title="Key visual, morning to dusk",
        shot_args={"poll_interval": POLL_SECONDS, "deferrable": True, "timeout": 3600},
    )

    @task
    def report(**context: Any) -> str:
        """Say what the film is: its shots, its facts, and where its first and last frames are."""
        result = context["ti"].xcom_pull(task_ids="film.stitch", key="result")
        stored = result["stored"]
        line = (
            f"Kling film: {len(result['request_ids'])} shots ({result['method']}) -> {stored['uri']}: "
            f"{stored['duration_s']:g} s, {stored['width']}x{stored['height']}, {stored['frame_rate']:g} fps, "
            f"{stored['video_codec']}, {'with' if stored['has_audio'] else 'no'} sound, {stored['size_bytes']} bytes; "
            f"poster {stored['poster']}, last frame {stored['last_frame']}"
        )
        print(line)
        return line

    film >> report()
# [END howto_kling_storyboard]
