"""
Where a generation's own task puts its video (the operator's ``destination``): one task generates
and stores, on a worker or, with ``finish_in_triggerer``, in the triggerer.

The copy is the transfer's (:func:`~airflow_provider_kling.hooks.download.download_video`): it
streams to a temporary name beside the destination and lands whole and checked (a playable video,
its facts read, its poster beside it), or not at all. This module is read when a task runs, not
when a DAG file is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.constants import MAX_VIDEO_BYTES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_kling.hooks.client import KlingClient
    from airflow_provider_kling.hooks.download import Verify
    from airflow_provider_kling.media import ExpectedShape
    from airflow_provider_kling.models import KlingResult


@dataclass(frozen=True)
class VideoStore:
    """
    Where a video goes once it is ready, and what it must be.

    :param destination: a local path or an ``ObjectStoragePath`` URI (rendered already);
        ``{request_id}`` in it is replaced by the request's id.
    :param storage_conn_id: the Airflow connection of the destination's object store.
    :param overwrite: replace an existing destination.
    :param max_bytes: refuse a video larger than this.
    :param expect: the shape the request asked for (its ``duration`` and ``aspect_ratio``).
    :param verify: ``"warn"``: a video of another shape lands, its ``mismatch`` said and logged;
        ``"strict"``: it is refused (:class:`~airflow_provider_kling.exceptions.KlingVideoShapeError`).
    :param poster: store a poster frame (``<name>.jpg``) beside the video.
    """

    destination: str
    storage_conn_id: str | None = None
    overwrite: bool = False
    max_bytes: int = MAX_VIDEO_BYTES
    expect: ExpectedShape | None = None
    verify: Verify = "warn"
    poster: bool = True

    @classmethod
    def of_task(cls, task: Any) -> VideoStore:
        """The store of a generating task: its rendered ``destination``, connection, and the shape it asked for."""
        from airflow_provider_kling.media import ExpectedShape

        return cls(
            str(task.destination),
            task.storage_conn_id or None,
            overwrite=task.overwrite,
            expect=ExpectedShape.from_dict(task._expect),
            verify=task.verify,
            poster=task.poster,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "storage_conn_id": self.storage_conn_id,
            "overwrite": self.overwrite,
            "max_bytes": self.max_bytes,
            "expect": self.expect.to_dict() if self.expect is not None else None,
            "verify": self.verify,
            "poster": self.poster,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoStore:
        from airflow_provider_kling.media import ExpectedShape

        return cls(
            destination=str(data["destination"]),
            storage_conn_id=data.get("storage_conn_id"),
            overwrite=bool(data.get("overwrite", False)),
            max_bytes=int(data.get("max_bytes") or MAX_VIDEO_BYTES),
            expect=ExpectedShape.from_dict(data.get("expect")),
            verify="strict" if data.get("verify") == "strict" else "warn",
            poster=bool(data.get("poster", True)),
        )

    def check(self) -> None:
        """
        What can be known before paying: the storage connection exists, the destination does not
        (unless ``overwrite``, or it names ``{request_id}``), and a local folder can be made and
        written. Nothing is written to find out.

        :raises KlingInputError: in the words the store would use after the generation.
        """
        from airflow_provider_kling.hooks.destination import check_destination

        check_destination(self.destination, self.storage_conn_id, overwrite=self.overwrite)

    def save(self, hook: KlingClient, result: KlingResult, *, log: Any) -> dict[str, Any]:
        """
        Copy the video of ``result`` here, checked, and say what landed: ``uri``, ``size_bytes``,
        ``sha256``, ``content_type``, the video's facts (``duration_s``, ``width``, ``height``,
        ``frame_rate``, ``video_codec``, ``has_audio``..., ``mismatch``) and its ``poster`` (what
        the result's ``stored`` holds).

        :raises KlingNotAVideoError: what came is not a playable video; nothing is left behind.
        :raises KlingVideoShapeError: ``verify="strict"`` and the video has another shape.
        :raises KlingError: the download failed or was cut short; nothing is left behind.
        :raises KlingInputError: the destination exists and ``overwrite`` is false.
        """
        from airflow_provider_kling.hooks.destination import REQUEST_ID_FIELD
        from airflow_provider_kling.hooks.download import VideoRules

        rid = str(result["request_id"])
        saved = hook.download_video(
            str(result["video_url"]),
            self.destination.replace(REQUEST_ID_FIELD, rid),
            max_bytes=self.max_bytes,
            overwrite=self.overwrite,
            storage_conn_id=self.storage_conn_id,
            rules=VideoRules(expect=self.expect, verify=self.verify, poster=self.poster, request_id=rid),
        )
        stored = saved.stored()
        log.info(
            "Stored the video of Kling request %s: %d bytes (sha256 %s) at %s; %s",
            rid,
            saved.size_bytes,
            saved.sha256,
            saved.uri,
            describe_facts(stored),
        )
        if saved.facts.mismatch:
            log.warning(
                "The video of Kling request %s is not the shape asked for: %s", rid, "; ".join(saved.facts.mismatch)
            )
        return stored

    def save_once(
        self, hook: KlingClient, result: KlingResult, kept: dict[str, Any] | None, task: Any
    ) -> dict[str, Any]:
        """
        :meth:`save`, unless an earlier try of the task stored this video and it is still there (the
        try failed after, in Airflow's own bookkeeping): then what it stored.
        """
        found = still_stored(kept)
        if found is not None:
            task.log.info("The video an earlier try stored is still at %s: not stored again", found["uri"])
            return found
        stored = self.save(hook, result, log=task.log)
        task.spend.stored(result.get("finished_at"), stored)
        return stored


def describe_facts(stored: Mapping[str, Any]) -> str:
    """One line of a stored video's facts: ``5.04 s, 1280x720 (16:9), 24 fps, h264, with audio (aac)``."""
    if not stored.get("video_codec"):
        return "no facts"
    duration = stored.get("duration_s")
    rate = stored.get("frame_rate")
    audio = f"with audio ({stored.get('audio_codec')})" if stored.get("has_audio") else "no audio"
    parts = [
        f"{duration:g} s" if isinstance(duration, (int, float)) else "duration unknown",
        f"{stored.get('width')}x{stored.get('height')} ({stored.get('aspect_ratio')})",
        f"{rate:g} fps" if isinstance(rate, (int, float)) else "frame rate unknown",
        str(stored.get("video_codec")),
        audio,
    ]
    return ", ".join(parts)


def describe_asset_events(task: Any, context: Any, stored: Mapping[str, Any]) -> None:
    """Put what was stored (``uri``, size, digest, the video's facts, ``poster``) on the events of
    the task's asset outlets, where a DAG scheduled on the asset reads it."""
    from airflow.providers.common.compat.sdk import Asset

    for outlet in task.outlets:
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra.update(stored)


def still_stored(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """``stored``, if its video is still where it was stored (with the same size), else ``None``."""
    if not stored or not stored.get("uri"):
        return None
    from airflow_provider_kling.hooks.destination import storage_path

    try:
        path = storage_path(str(stored["uri"]), stored.get("conn_id"))
        found = path.stat().st_size if path.exists() else None
    except Exception:  # noqa: BLE001 - a store that cannot say: store it again
        return None
    return stored if found == stored.get("size_bytes") else None
