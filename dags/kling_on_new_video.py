"""
Post-process each new Kling video: scheduled on the ``kling_videos`` asset.

The task that stored a video put what it knows on the asset event: ``uri``, ``size_bytes``,
``sha256`` and the video's facts as FFmpeg read them when it landed (``duration_s``, ``width``,
``height``, ``aspect_ratio``, ``frame_rate``, ``video_codec``, ``has_audio``, ``poster``, and
``mismatch`` when it is not the shape that was asked for). This DAG writes them to
``<video>.manifest.json`` beside each video, without reading the video again, and says when a
take is not the shape asked for. Run by hand (no asset event), it checks the videos of
``KLING_VIDEO_DIR`` that have no manifest with the same probe.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, task

KLING_VIDEOS = Asset(uri="file:///kling-videos")
VIDEO_DIR = Path(os.environ.get("KLING_VIDEO_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "kling-videos")
#: What the manifest keeps of a stored video.
MANIFEST_KEYS = (
    "size_bytes",
    "sha256",
    "duration_s",
    "width",
    "height",
    "aspect_ratio",
    "frame_rate",
    "video_codec",
    "has_audio",
    "poster",
    "mismatch",
)


def probe(uri: str) -> dict[str, Any]:
    """What the store would have said of a video found on disk: its digest and its facts (FFmpeg's)."""
    import hashlib

    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_kling.media import inspect_video

    video = ObjectStoragePath(uri)
    digest = hashlib.sha256()
    with video.open("rb") as reader:
        for chunk in iter(lambda: reader.read(1 << 20), b""):
            digest.update(chunk)
        reader.seek(0)
        facts, _ = inspect_video(reader, poster=False)
    poster = video.parent / f"{video.stem}.jpg"  # the store puts it beside the video
    found = {"uri": uri, "size_bytes": video.stat().st_size, "sha256": digest.hexdigest(), **facts.to_dict()}
    return {**found, "poster": str(poster) if poster.exists() else None}


with DAG(
    dag_id="kling_on_new_video",
    schedule=[KLING_VIDEOS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["kling", "example"],
):

    @task
    def new_videos(**context: Any) -> list[dict[str, Any]]:
        """What the triggering events say of each new video (or, by hand, of each video without a manifest)."""
        stored = [
            dict(event.extra)
            for events in (context.get("triggering_asset_events") or {}).values()
            for event in events
            if event.extra.get("uri")
        ]
        if not stored and VIDEO_DIR.is_dir():
            stored = [
                probe(p.absolute().as_uri())
                for p in sorted(VIDEO_DIR.rglob("*.mp4"))
                if not p.with_name(p.name + ".manifest.json").exists()
            ]
        print(f"Kling videos to post-process: {len(stored)}")
        return stored

    @task
    def write_manifest(stored: dict[str, Any]) -> dict[str, Any]:
        """Write ``<video>.manifest.json`` beside one video: where it is, its digest and its facts."""
        import json

        from airflow.providers.common.compat.sdk import ObjectStoragePath

        video = ObjectStoragePath(stored["uri"])
        manifest = {"video": stored["uri"], **{key: stored.get(key) for key in MANIFEST_KEYS}}
        (video.parent / f"{video.name}.manifest.json").write_text(json.dumps(manifest, indent=2))
        print(f"Kling video manifest: {json.dumps(manifest)}")
        for mismatch in manifest["mismatch"] or []:
            print(f"Not the shape asked for: {mismatch}")
        return manifest

    write_manifest.expand(stored=new_videos())
