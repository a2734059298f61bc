"""
Post-process each new Kling video: scheduled on the ``kling_videos`` asset.

``KlingVideoToStorageOperator`` puts the copy's ``uri``, ``size_bytes`` and ``sha256`` on the
asset event; this DAG reads the video back, measures its duration from the MP4 header, and writes
``<video>.manifest.json`` next to it. Run by hand (no asset event), it writes the manifests missing
in ``KLING_VIDEO_DIR``.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, task

KLING_VIDEOS = Asset(uri="file:///kling-videos")
VIDEO_DIR = Path(os.environ.get("KLING_VIDEO_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "kling-videos")


def mp4_duration_seconds(data: bytes) -> float | None:
    """The duration in an MP4's ``mvhd`` box (movie header), or ``None`` when there is none."""
    at = data.find(b"mvhd")
    if at < 0 or len(data) < at + 32:
        return None
    body = at + 4
    if data[body] == 1:  # version 1: 64-bit times
        timescale = int.from_bytes(data[body + 20 : body + 24], "big")
        duration = int.from_bytes(data[body + 24 : body + 32], "big")
    else:
        timescale = int.from_bytes(data[body + 12 : body + 16], "big")
        duration = int.from_bytes(data[body + 16 : body + 20], "big")
    return round(duration / timescale, 3) if timescale else None


with DAG(
    dag_id="kling_on_new_video",
    schedule=[KLING_VIDEOS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["kling", "example"],
):

    @task
    def new_videos(**context: Any) -> list[str]:
        """The URIs of the videos that triggered this run (or, by hand, those without a manifest)."""
        uris = [
            str(event.extra["uri"])
            for events in (context.get("triggering_asset_events") or {}).values()
            for event in events
            if event.extra.get("uri")
        ]
        if not uris and VIDEO_DIR.is_dir():
            uris = [
                p.absolute().as_uri()
                for p in sorted(VIDEO_DIR.rglob("*.mp4"))
                if not p.with_name(p.name + ".manifest.json").exists()
            ]
        print(f"Kling videos to post-process: {len(uris)}")
        return uris

    @task
    def write_manifest(uri: str) -> dict[str, Any]:
        """Measure one video and write ``<video>.manifest.json`` beside it."""
        import hashlib
        import json

        from airflow.providers.common.compat.sdk import ObjectStoragePath

        video = ObjectStoragePath(uri)
        data = video.read_bytes()
        manifest = {
            "video": uri,
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "duration_seconds": mp4_duration_seconds(data),
        }
        (video.parent / f"{video.name}.manifest.json").write_text(json.dumps(manifest, indent=2))
        print(f"Kling video manifest: {json.dumps(manifest)}")
        return manifest

    write_manifest.expand(uri=new_videos())
