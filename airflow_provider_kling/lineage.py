"""
Lineage: what a generation and a copy to storage report to OpenLineage, the way official providers
do (``get_openlineage_facets_on_complete``), when Airflow's OpenLineage provider is installed.

- The generation's run carries a ``kling_generation`` run facet
  (:class:`KlingGenerationRunFacet`): the model, the request id, the input's fingerprint, the
  seconds of video and the cost. The prompt appears only as its SHA-256, unless the task opts in
  (``lineage_prompt=True``). The token is never part of any of it.
- A stitched film's inputs are its shots' stored videos, its output the film, so that a film
  leads back to every request that paid for a part of it.
- The copy's output dataset is the stored video itself, its namespace and name taken from its
  ``ObjectStoragePath`` (``file``, ``s3://bucket``...), not the temporary ``.part`` file Airflow's
  hook-level lineage saw: an operator that names its outputs replaces hook-level lineage. It
  carries a ``kling_video`` dataset facet (:class:`KlingVideoDatasetFacet`): the request the video
  came from, its size and digest, and what FFmpeg read of it (duration, resolution, frame rate,
  codecs, audio, any mismatch with what was asked), so a lineage tool that starts from a file
  finds the request that paid for it, whichever operator stored it.

The facets' JSON schemas ship in the package (``facets/*.json``); each ``_schemaURL`` is its
schema's ``$id``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

FACET_NAME = "kling_generation"
SCHEMA_ID = "urn:airflow-provider-kling:facet:KlingGenerationRunFacet:1"
VIDEO_FACET_NAME = "kling_video"
VIDEO_SCHEMA_ID = "urn:airflow-provider-kling:facet:KlingVideoDatasetFacet:1"
#: The facet's fields, and the keys of a result's ``stored`` they are read from.
VIDEO_FACET_FIELDS = {
    "sizeBytes": "size_bytes",
    "sha256": "sha256",
    "durationSeconds": "duration_s",
    "width": "width",
    "height": "height",
    "aspectRatio": "aspect_ratio",
    "frameRate": "frame_rate",
    "videoCodec": "video_codec",
    "pixelFormat": "pixel_format",
    "hasAudio": "has_audio",
    "audioCodec": "audio_codec",
    "container": "container",
    "poster": "poster",
    "lastFrame": "last_frame",
    "mismatch": "mismatch",
}


def facet_class() -> Any:
    """:class:`KlingGenerationRunFacet`, defined on first use (OpenLineage's classes load only then)."""
    global _FACET
    if _FACET is None:
        from airflow.providers.common.compat.openlineage.facet import RunFacet
        from attrs import define

        @define
        class KlingGenerationRunFacet(RunFacet):
            """One Kling generation: the model, the request, the input's fingerprint, the video's seconds, the cost."""

            model: str
            requestId: str
            inputFingerprint: str
            promptSha256: str | None = None
            prompt: str | None = None
            videoSeconds: float | None = None
            cost: float | None = None

            @staticmethod
            def _get_schema() -> str:
                return SCHEMA_ID

        _FACET = KlingGenerationRunFacet
    return _FACET


_FACET: Any = None
_VIDEO_FACET: Any = None


def video_facet_class() -> Any:
    """:class:`KlingVideoDatasetFacet`, defined on first use (OpenLineage's classes load only then)."""
    global _VIDEO_FACET
    if _VIDEO_FACET is None:
        from airflow.providers.common.compat.openlineage.facet import DatasetFacet
        from attrs import define

        @define
        class KlingVideoDatasetFacet(DatasetFacet):
            """A stored Kling video: the request it came from, its size and digest, and what FFmpeg read of it."""

            requestId: str | None = None
            sizeBytes: int | None = None
            sha256: str | None = None
            durationSeconds: float | None = None
            width: int | None = None
            height: int | None = None
            aspectRatio: str | None = None
            frameRate: float | None = None
            videoCodec: str | None = None
            pixelFormat: str | None = None
            hasAudio: bool | None = None
            audioCodec: str | None = None
            container: str | None = None
            poster: str | None = None
            lastFrame: str | None = None
            mismatch: list[str] | None = None

            @staticmethod
            def _get_schema() -> str:
                return VIDEO_SCHEMA_ID

        _VIDEO_FACET = KlingVideoDatasetFacet
    return _VIDEO_FACET


def generation_facts(
    *, model: str, request_id: str, body: Mapping[str, Any], share_prompt: bool = False
) -> dict[str, Any]:
    """
    What lineage says of one generation, as plain data (it crosses a deferral): the facet's fields,
    and ``inputs``, the URIs of the images it started from (never a signed URL).
    """
    from airflow_provider_kling.family import body_images
    from airflow_provider_kling.resume import input_fingerprint

    images = [image.uri for image in body_images(model, body)]
    prompt = body.get("prompt")
    text = prompt if isinstance(prompt, str) else None
    seconds = body.get("duration")
    return {
        "model": model,
        "requestId": request_id,
        "inputFingerprint": input_fingerprint(model, dict(body)),
        "promptSha256": hashlib.sha256(text.encode()).hexdigest() if text is not None and not share_prompt else None,
        "prompt": text if share_prompt else None,
        "videoSeconds": float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None,
        "inputs": images,
    }


def generation_lineage(
    facts: Mapping[str, Any] | None, cost: Any = None, stored: Mapping[str, Any] | None = None
) -> Any:
    """
    The ``OperatorLineage`` of one generation: its run facet (none before a request) and, when the
    task stored the video (``destination``), the stored video as its output dataset.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    request_id = facts.get("requestId") if facts else None
    outputs = stored_video_lineage(stored, request_id).outputs if stored else []
    if not facts:
        return OperatorLineage(outputs=outputs)
    fields = {key: value for key, value in facts.items() if key != "inputs"}
    inputs = [Dataset(*dataset_name(uri)) for uri in facts.get("inputs") or ()]
    price = float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None
    facet = facet_class()(**fields, cost=price)
    return OperatorLineage(inputs=inputs, run_facets={FACET_NAME: facet}, outputs=outputs)


def stored_video_lineage(stored: Mapping[str, Any], request_id: str | None = None) -> Any:
    """
    The ``OperatorLineage`` of a copy: the stored video (a result's ``stored``: ``uri`` and its
    facts) as its one output dataset, with its ``kling_video`` facet naming ``request_id``.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    namespace, name = dataset_name(str(stored["uri"]))
    described = {field: stored.get(key) for field, key in VIDEO_FACET_FIELDS.items()}
    facet = video_facet_class()(requestId=request_id, **described)
    return OperatorLineage(outputs=[Dataset(namespace=namespace, name=name, facets={VIDEO_FACET_NAME: facet})])


def dataset_name(uri: str) -> tuple[str, str]:
    """OpenLineage's naming of a stored file: ``(file, /videos/x.mp4)``, ``(s3://bucket, key/x.mp4)``."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return "file", parts.path if parts.scheme else uri
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


def film_lineage(stored: Mapping[str, Any] | None, shots: list[str]) -> Any:
    """
    The ``OperatorLineage`` of a stitch: each shot's stored video an input dataset, the film (with
    its ``kling_video`` facet) the output; nothing before the film landed.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    if stored is None:
        return OperatorLineage()
    film = stored_video_lineage(stored)
    return OperatorLineage(inputs=[Dataset(*dataset_name(uri)) for uri in shots], outputs=film.outputs)
