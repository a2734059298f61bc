"""Join stored Kling takes, in order, into one checked film in your own storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_kling.constants import MAX_VIDEO_BYTES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.film import Shot

#: The most a film may weigh, by default: the cap of one take, per shot.
MAX_FILM_BYTES_PER_SHOT = MAX_VIDEO_BYTES


class KlingStitchOperator(BaseOperator):
    """
    Join stored takes, in order, into one film at ``destination``: a checked video like every
    stored take (its facts, poster and last frame beside it), written whole or not at all.

    When the shots' streams agree (codec, size, frame rate, time base, codec parameters: takes of
    one model do), the film is a remux: every packet's bytes are kept. When they do not, or with a
    ``crossfade``, it is re-encoded (H.264 and AAC, at the first shot's size and frame rate, other
    sizes letterboxed), and the log and the result say why. Sound stays in step: a silent shot
    between sounding ones gets silence of its length.

    The result (XCom ``result``, and the return value of ``@task.kling_stitch``) holds the film's
    ``stored`` (``uri``, ``sha256``, ``duration_s``... ``poster``, ``last_frame``), the shots'
    ``request_ids`` and URIs, their total ``cost`` where RunComfy reported it, and the ``method``
    and its ``why``. With ``outlets=[Asset(...)]`` the film is an asset event carrying the same;
    its lineage has each shot as an input dataset and the film as the output.

    A retry writes the same film: its bytes depend only on the shots, so a film that a crashed
    try left whole at ``destination`` is recognised (same SHA-256) and kept, not refused.

    :param takes: the shots, in order: each a take's result (``.output["result"]`` of a Kling
        operator, or what ``@task.kling`` returns), its ``stored``, or a stored video's URI or
        ``ObjectStoragePath``. Templated (a list of ``XComArg`` is resolved, and sets upstreams).
    :param destination: where the film goes: a local path or an ``ObjectStoragePath`` URI
        (``s3://bucket/films/launch.mp4``). Templated.
    :param storage_conn_id: the Airflow connection of the destination's object store. Templated.
    :param takes_conn_id: the connection to read takes given as URIs with; a take's ``stored``
        names its own. Templated.
    :param crossfade: seconds each shot fades into the next (re-encodes the film); 0 for cuts.
        The film is then shorter by this much at each join.
    :param overwrite: replace another film at ``destination``; a retry's same film is kept anyway.
    :param poster: store a poster frame and the last frame beside the film.
    :param max_bytes: refuse a film larger than this (default: 500 MB per shot).
    :param title: what the film is called where takes are listed (the UI's Kling page). Templated.
    """

    template_fields: Sequence[str] = ("takes", "destination", "storage_conn_id", "takes_conn_id", "title")
    ui_color = "#e4ffe9"

    def __init__(
        self,
        *,
        takes: Any,
        destination: str,
        storage_conn_id: str | None = None,
        takes_conn_id: str | None = None,
        crossfade: float = 0.0,
        overwrite: bool = False,
        poster: bool = True,
        max_bytes: int | None = None,
        title: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.takes = takes
        self.destination = destination
        self.storage_conn_id = storage_conn_id
        self.takes_conn_id = takes_conn_id
        self.crossfade = crossfade
        self.overwrite = overwrite
        self.poster = poster
        self.max_bytes = max_bytes
        self.title = title
        #: What this try stored, and the shots it joined, for lineage.
        self._stored: dict[str, Any] | None = None
        self._shots: list[Shot] = []

    def execute(self, context: Context) -> Any:
        from airflow_provider_kling.film import make_film, shots_of

        shots = shots_of(self.takes, self.takes_conn_id or None)
        self._shots = shots
        result = make_film(
            shots,
            str(self.destination or ""),
            storage_conn_id=self.storage_conn_id or None,
            crossfade=float(self.crossfade or 0.0),
            overwrite=self.overwrite,
            poster=self.poster,
            max_bytes=self.max_bytes or MAX_FILM_BYTES_PER_SHOT * len(shots),
            log=self.log,
        )
        self._stored = result["stored"]
        ti = context["ti"]
        ti.xcom_push(key="kling_take", value=_film_take(result, self.title))
        ti.xcom_push(key="result", value=result)
        from airflow_provider_kling.store import describe_asset_events

        describe_asset_events(self, context, result["stored"])
        return self._returned(result)

    def _returned(self, result: dict[str, Any]) -> Any:
        """What the task returns: the film's URI (``@task.kling_stitch`` returns the whole result)."""
        return result["stored"]["uri"]

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: each shot an input dataset, the film the output (with its ``kling_video`` facet)."""
        from airflow_provider_kling.lineage import film_lineage

        return film_lineage(self._stored, [shot.uri for shot in self._shots])


def _film_take(result: dict[str, Any], title: str | None) -> dict[str, Any]:
    """The film's ``kling_take``: what the UI lists it as (it is no request, so it names its shots')."""
    import time

    record: dict[str, Any] = {
        "model": f"film of {len(result['request_ids'])} shots ({result['method']})",
        "request_ids": result["request_ids"],
        "submitted_at": time.time(),
    }
    if title:
        record["prompt"] = str(title)[:2500]
    return record
