"""
Films: stored takes joined into one checked video (:func:`make_film`, for
:class:`~airflow_provider_kling.operators.stitch.KlingStitchOperator`), and the names under which
a storyboard reserves its whole film from a budget before its first shot is paid.

Read when a stitch or a shot runs, not when a DAG file is parsed (PyAV is imported only by the stitch).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_kling.exceptions import KlingInputError

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True)
class Shot:
    """
    One shot of a film: a stored take.

    :param uri: where its video is stored.
    :param conn_id: the connection to read it with (an object store's), if any.
    :param request_id: the Kling request that made it, when known.
    :param cost: what RunComfy reported it cost, when known.
    """

    uri: str
    conn_id: str | None = None
    request_id: str | None = None
    cost: Any = None

    def path(self) -> Any:
        """A local :class:`~pathlib.Path` for a file on this machine, else an ``ObjectStoragePath``."""
        from airflow_provider_kling.hooks.destination import storage_path

        parts = urlsplit(self.uri)
        if parts.scheme == "file" and parts.netloc in ("", "localhost"):
            return Path(unquote(parts.path))
        return storage_path(self.uri, self.conn_id)


def shots_of(takes: Any, conn_id: str | None = None) -> list[Shot]:
    """
    The shots a stitch was given, in order: results of Kling tasks, their ``stored``, or URIs.

    :raises KlingInputError: naming the take that is not a stored video, and how to give one.
    """
    if isinstance(takes, (str, bytes)) or not hasattr(takes, "__iter__"):
        raise KlingInputError(
            f"takes: must be a list of takes (results, stored videos or URIs), got {type(takes).__name__}"
        )
    shots = []
    for number, take in enumerate(takes, 1):
        if isinstance(take, dict):
            shots.append(_shot_of_result(number, take, conn_id))
        elif isinstance(take, (str, os.PathLike)) or hasattr(take, "protocol"):
            text = os.fspath(take) if isinstance(take, os.PathLike) and not hasattr(take, "protocol") else str(take)
            uri = Path(text).absolute().as_uri() if "://" not in text else text
            shots.append(Shot(uri, conn_id))
        else:
            raise KlingInputError(
                f"takes: shot {number} is a {type(take).__name__}; give a take's result, its stored, or a video's URI"
            )
    return shots


def _shot_of_result(number: int, take: Mapping[str, Any], conn_id: str | None) -> Shot:
    found = take.get("stored")
    stored: Mapping[str, Any] = found if isinstance(found, dict) else take
    uri = stored.get("uri")
    if not isinstance(uri, str) or not uri:
        rid = take.get("request_id")
        raise KlingInputError(
            f"takes: shot {number}{f' (Kling request {rid})' if rid else ''} has no stored video; give each "
            "generating task a destination= (or copy its video with KlingVideoToStorageOperator) and pass its result"
        )
    stored_with = stored.get("conn_id")
    return Shot(
        uri,
        stored_with if isinstance(stored_with, str) else conn_id,
        str(take.get("request_id") or stored.get("request_id") or "") or None,
        take.get("cost"),
    )


def make_film(
    shots: list[Shot],
    destination: str,
    *,
    storage_conn_id: str | None,
    crossfade: float,
    overwrite: bool,
    poster: bool,
    max_bytes: int,
    log: Any,
) -> dict[str, Any]:
    """
    Stitch ``shots`` into a film in a temporary folder, then land it at ``destination`` as every
    stored video lands: checked, with its poster and last frame, whole or not at all.

    :raises KlingInputError: the destination holds another film and ``overwrite`` is false.
    :raises KlingNotAVideoError: a shot is not a playable video.
    """
    from airflow_provider_kling.hooks.destination import check_destination
    from airflow_provider_kling.hooks.download import DOWNLOAD_CHUNK_BYTES, VideoRules, land_video
    from airflow_provider_kling.media import ExpectedShape
    from airflow_provider_kling.shots import ShotFile, local_or_open
    from airflow_provider_kling.spend import as_number
    from airflow_provider_kling.stitch import stitch
    from airflow_provider_kling.store import describe_facts

    if not destination.strip():
        raise KlingInputError("destination: must be a path or a URI such as s3://bucket/films/launch.mp4")
    dest = check_destination(destination, storage_conn_id, overwrite=True)  # another film there: said below
    files = [ShotFile(f"shot {n} ({shot.uri})", local_or_open(shot.path())) for n, shot in enumerate(shots, 1)]
    with tempfile.TemporaryDirectory(prefix="kling-film-") as folder:
        made = os.path.join(folder, "film.mp4")
        plan = stitch(files, made, crossfade=crossfade)
        log.info("Stitched %d shots by %s: %s", len(shots), plan.method, plan.why)
        if dest.exists() and not overwrite:
            if _sha256_of(dest) != _sha256_of(Path(made)):
                raise KlingInputError(
                    f"destination: {dest} already exists and is another film; pass overwrite=True to replace it"
                )
            log.info("%s holds this very film already (an earlier try wrote it): it lands again, the same bytes", dest)
        seconds = sum(plan.seconds) - crossfade * (len(shots) - 1)
        with open(made, "rb") as reader:
            saved = land_video(
                dest,
                iter(partial(reader.read, DOWNLOAD_CHUNK_BYTES), b""),
                max_bytes=max_bytes,
                rules=VideoRules(expect=ExpectedShape(duration_s=round(seconds, 3)), poster=poster),
            )
    stored = saved.stored()
    costs = [as_number(shot.cost) for shot in shots]
    log.info(
        "The film landed at %s: %d bytes (sha256 %s); %s",
        saved.uri,
        saved.size_bytes,
        saved.sha256,
        describe_facts(stored),
    )
    if saved.facts.mismatch:
        log.warning("The film is not as long as its shots: %s", "; ".join(saved.facts.mismatch))
    return {
        "stored": stored,
        "request_ids": [shot.request_id for shot in shots],
        "shots": [shot.uri for shot in shots],
        "shot_seconds": [round(value, 3) for value in plan.seconds],
        "cost": None if None in costs else round(sum(cost for cost in costs if cost is not None), 6),
        "method": plan.method,
        "why": plan.why,
        "crossfade": crossfade,
    }


def _sha256_of(path: Any) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        for chunk in iter(partial(reader.read, 1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- the film's reservation -------------------------------------------------------------------


def film_holder(dag_id: str, run_id: str, reserving_task_id: str) -> str:
    """Who holds a film's reservation in the ledger: its run and the task that reserved it."""
    return f"film:{dag_id}/{run_id}/{reserving_task_id}"


def shot_holder(film: str, shot_task_id: str) -> str:
    """The reservation of one shot of a film (``<film>#<shot's task id>``)."""
    return f"{film}#{shot_task_id}"


def film_shot(context: Any, reserved_by: str, shot_task_id: str) -> str:
    """The reservation a shot spends: its film's (reserved by the task ``reserved_by`` of its run)."""
    ti = context["ti"]
    return shot_holder(film_holder(ti.dag_id, ti.run_id, reserved_by), shot_task_id)
