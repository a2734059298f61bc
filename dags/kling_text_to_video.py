"""
Generate a Kling 1.6 video, wait for it without holding a worker slot, save it, and report.

generate -> wait (deferrable sensor) -> save (streams the MP4 to a local folder) -> notify

Set the folder with ``KLING_VIDEO_DIR`` (default: ``$AIRFLOW_HOME/kling-videos``) and the prompt
with the DAG's ``prompt`` param.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.sensors.kling import KlingRequestSensor

POLL_SECONDS = float(os.environ.get("KLING_POLL_INTERVAL", "5"))

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

    @task
    def save(result: dict[str, Any]) -> dict[str, Any]:
        """Stream the video to a local folder; the file appears whole or not at all."""
        from airflow_provider_kling.hooks.kling import KlingHook

        folder = Path(os.environ.get("KLING_VIDEO_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "kling-videos")
        with KlingHook() as hook:
            saved = hook.download_video(result["video_url"], folder / f"{result['request_id']}.mp4")
        return {"request_id": result["request_id"], "path": saved.path, "size_bytes": saved.size_bytes}

    @task
    def notify(saved: dict[str, Any], prompt: str) -> str:
        """Report what was generated and where it landed."""
        line = (
            f"Kling video ready: prompt={prompt!r} request_id={saved['request_id']} "
            f"path={saved['path']} size={saved['size_bytes']} bytes"
        )
        print(line)
        return line

    notify(save(wait.output), prompt="{{ params.prompt }}")
# [END howto_kling_text_to_video]
