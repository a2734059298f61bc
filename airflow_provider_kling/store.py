"""
Where a generation's own task puts its video (the operator's ``destination``): one task generates
and stores, on a worker or, with ``finish_in_triggerer``, in the triggerer.

The copy is the transfer's (:func:`~airflow_provider_kling.hooks.download.download_video`): it
streams to a temporary name beside the destination and lands whole, with its size and sha256, or
not at all. This module is read when a task runs, not when a DAG file is parsed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.constants import MAX_VIDEO_BYTES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_kling.hooks.client import KlingClient
    from airflow_provider_kling.models import KlingResult


@dataclass(frozen=True)
class VideoStore:
    """
    Where a video goes once it is ready.

    :param destination: a local path or an ``ObjectStoragePath`` URI (rendered already);
        ``{request_id}`` in it is replaced by the request's id.
    :param storage_conn_id: the Airflow connection of the destination's object store.
    :param overwrite: replace an existing destination.
    :param max_bytes: refuse a video larger than this.
    """

    destination: str
    storage_conn_id: str | None = None
    overwrite: bool = False
    max_bytes: int = MAX_VIDEO_BYTES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoStore:
        return cls(
            destination=str(data["destination"]),
            storage_conn_id=data.get("storage_conn_id"),
            overwrite=bool(data.get("overwrite", False)),
            max_bytes=int(data.get("max_bytes") or MAX_VIDEO_BYTES),
        )

    def save(self, hook: KlingClient, result: KlingResult, *, log: Any) -> dict[str, Any]:
        """
        Copy the video of ``result`` here and say what landed: ``uri``, ``size_bytes``, ``sha256``,
        ``content_type`` (what the result's ``stored`` holds).

        :raises KlingError: the download failed or was cut short; nothing is left behind.
        :raises KlingInputError: the destination exists and ``overwrite`` is false.
        """
        saved = hook.download_video(
            str(result["video_url"]),
            self.destination.replace("{request_id}", str(result["request_id"])),
            max_bytes=self.max_bytes,
            overwrite=self.overwrite,
            storage_conn_id=self.storage_conn_id,
        )
        log.info(
            "Stored the video of Kling request %s: %d bytes (sha256 %s) at %s",
            result["request_id"],
            saved.size_bytes,
            saved.sha256,
            saved.uri,
        )
        return {
            "uri": saved.uri,
            "size_bytes": saved.size_bytes,
            "sha256": saved.sha256,
            "content_type": saved.content_type,
        }
