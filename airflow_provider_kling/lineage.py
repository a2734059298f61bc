"""
Lineage: what a generation and a copy to storage report to OpenLineage, the way official providers
do (``get_openlineage_facets_on_complete``), when Airflow's OpenLineage provider is installed.

- The generation's run carries a ``kling_generation`` run facet
  (:class:`KlingGenerationRunFacet`): the model, the request id, the input's fingerprint, the
  seconds of video and the cost. The prompt appears only as its SHA-256, unless the task opts in
  (``lineage_prompt=True``). The token is never part of any of it.
- The copy's output dataset is the stored video itself, its namespace and name taken from its
  ``ObjectStoragePath`` (``file``, ``s3://bucket``...), not the temporary ``.part`` file Airflow's
  hook-level lineage saw: an operator that names its outputs replaces hook-level lineage.

The facet's JSON schema ships in the package (``facets/KlingGenerationRunFacet.json``); its
``_schemaURL`` is that schema's ``$id``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

FACET_NAME = "kling_generation"
SCHEMA_ID = "urn:airflow-provider-kling:facet:KlingGenerationRunFacet:1"


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


def generation_facts(
    *, model: str, request_id: str, body: Mapping[str, Any], share_prompt: bool = False
) -> dict[str, Any]:
    """What lineage says of one generation, as plain data (it crosses a deferral): the facet's fields."""
    from airflow_provider_kling.resume import input_fingerprint

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
    }


def generation_lineage(facts: Mapping[str, Any] | None, cost: Any = None, stored: str | None = None) -> Any:
    """
    The ``OperatorLineage`` of one generation: its run facet (none before a request) and, when the
    task stored the video (``destination``), the stored video as its output dataset.
    """
    from airflow.providers.openlineage.extractors import OperatorLineage

    outputs = stored_video_lineage(stored).outputs if stored else []
    if not facts:
        return OperatorLineage(outputs=outputs)
    price = float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None
    return OperatorLineage(run_facets={FACET_NAME: facet_class()(**facts, cost=price)}, outputs=outputs)


def stored_video_lineage(uri: str) -> Any:
    """The ``OperatorLineage`` of a copy: the stored video as its one output dataset."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    namespace, name = dataset_name(uri)
    return OperatorLineage(outputs=[Dataset(namespace=namespace, name=name)])


def dataset_name(uri: str) -> tuple[str, str]:
    """OpenLineage's naming of a stored file: ``(file, /videos/x.mp4)``, ``(s3://bucket, key/x.mp4)``."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return "file", parts.path if parts.scheme else uri
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")
