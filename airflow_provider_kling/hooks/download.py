"""
Copy a video to storage, where it appears whole and checked, or not at all.

The destination is a local path or any URI that Airflow's ``ObjectStoragePath`` understands. The
video streams in chunks (constant memory, the next chunks read in a second thread while this one
hashes and writes) to a temporary name beside the destination, is checked against the length the
server announced and as a video (:mod:`airflow_provider_kling.media`: what was served, its first
bytes, then FFmpeg's probe), gets its poster frame beside it, and is then moved into place; a
failed copy leaves nothing behind, not even a folder made for it.
"""

from __future__ import annotations

import hashlib
from contextlib import closing, suppress
from dataclasses import dataclass
from functools import partial
from itertools import chain
from typing import TYPE_CHECKING, Any, Literal

import requests
import urllib3

from airflow_provider_kling.constants import MAX_VIDEO_BYTES
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingConnectionError,
    KlingError,
    KlingInputError,
    KlingNotAVideoError,
    KlingVideoExpiredError,
    KlingVideoShapeError,
    excerpt,
)
from airflow_provider_kling.hooks.destination import (
    check_destination,
    is_local,
    last_frame_path,
    make_folder,
    poster_path,
    storage_path,
    uri_of,
    write_whole,
)
from airflow_provider_kling.media import (
    ExpectedShape,
    InspectedVideo,
    VideoFacts,
    container_problem,
    content_type_problem,
    inspect_video_frames,
    shape_mismatch,
)
from airflow_provider_kling.streaming import read_ahead
from airflow_provider_kling.untrusted import video_url_problem

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_kling.hooks.transport import Timeouts

#: Bytes read at a time when streaming a video.
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
#: ``warn``: a video of another shape than asked lands, its ``mismatch`` said; ``strict``: it is refused.
Verify = Literal["warn", "strict"]
#: A video is compressed already: asking the server not to compress it again saves its CPU and ours.
DOWNLOAD_HEADERS = {"Accept-Encoding": "identity"}


@dataclass(frozen=True)
class DownloadedVideo:
    """
    A video saved by :func:`download_video` or :func:`copy_video`: ``size_bytes`` and ``sha256``
    describe the file that landed, ``facts`` what FFmpeg read of it, ``poster`` where its poster
    frame (a JPEG beside it) landed and ``last_frame`` where its last frame (a PNG beside it) did,
    if they were asked for.
    """

    path: str
    uri: str
    size_bytes: int
    sha256: str
    content_type: str
    facts: VideoFacts
    poster: str | None = None
    conn_id: str | None = None
    last_frame: str | None = None

    def stored(self) -> dict[str, Any]:
        """
        What a result's ``stored`` (and an asset event's extra) holds: where, how big, and the
        facts; and, for an object store, the id of its connection (``conn_id``), through which the
        UI plugin reads the video back.
        """
        return {
            "uri": self.uri,
            **({"conn_id": self.conn_id} if self.conn_id else {}),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "content_type": self.content_type,
            **self.facts.to_dict(),
            "poster": self.poster,
            "last_frame": self.last_frame,
        }


@dataclass(frozen=True)
class VideoRules:
    """
    What a landing video must be, besides a playable video.

    :param expect: the shape the request asked for; a video of another shape is reported in its
        facts' ``mismatch`` (and logged by the caller), or refused with ``verify="strict"``.
    :param verify: ``"warn"`` (report a mismatch) or ``"strict"`` (refuse the video).
    :param poster: store a poster frame (``<name>.jpg``) and the last frame (``<name>.last.png``,
        lossless: where a next shot starts) beside the video.
    :param request_id: the request the video comes from, for the words of a refusal.
    """

    expect: ExpectedShape | None = None
    verify: Verify = "warn"
    poster: bool = True
    request_id: str | None = None


def download_video(
    session: requests.Session,
    url: str,
    destination: str | os.PathLike[str] | ObjectStoragePath,
    timeouts: Timeouts,
    *,
    max_bytes: int = MAX_VIDEO_BYTES,
    overwrite: bool = True,
    storage_conn_id: str | None = None,
    rules: VideoRules = VideoRules(),
) -> DownloadedVideo:
    """
    Stream the video at ``url`` to ``destination``, checked: the ``Content-Type`` and the first
    bytes must be a video's, and FFmpeg must find a video stream whose first frame decodes, before
    the file is moved into place. The session carries no API token: a media host never sees it,
    even behind a redirect.

    A server that compresses the answer anyway (``Content-Encoding: gzip``) is read as it was
    sent: its ``Content-Length`` is compared with the bytes that came over the wire, and the file
    gets the original, decoded bytes.

    :raises KlingInputError: the URL is not http(s), or the destination exists and ``overwrite`` is false.
    :raises KlingVideoExpiredError: the video host refused the URL (403, 404, 410).
    :raises KlingNotAVideoError: what came is not a playable video; nothing was stored.
    :raises KlingVideoShapeError: ``verify="strict"`` and the video has another shape than asked.
    :raises KlingError: the download failed, was cut short, or is larger than ``max_bytes``.
    """
    problem = video_url_problem(url)
    if problem is not None:
        raise KlingInputError(f"video_url: must be an http(s) URL with a host ({problem})")
    dest = check_destination(destination, storage_conn_id, overwrite=overwrite)
    try:
        response = session.get(url, stream=True, headers=DOWNLOAD_HEADERS, timeout=(timeouts.connect, timeouts.read))
    except requests.RequestException as err:
        raise KlingConnectionError(f"GET video: {type(err).__name__}", request_sent=True) from err
    with response:
        if response.status_code != 200:
            raise _refused_url(response, rules.request_id)
        announced = int(response.headers.get("Content-Length") or 0) or None
        encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        if announced and not encoded and announced > max_bytes:
            raise KlingError(f"The video is {announced} bytes, over the {max_bytes}-byte cap")
        content_type = response.headers.get("Content-Type", "application/octet-stream")
        digest = hashlib.sha256()

        def read_and_hash() -> bytes:
            # Hashed in the reading thread, so that hashing overlaps the writes of the other.
            chunk: bytes = response.raw.read(DOWNLOAD_CHUNK_BYTES, decode_content=True)
            digest.update(chunk)
            return chunk

        chunks = read_ahead(read_and_hash)

        def on_wire() -> str:
            # Content-Length counts the bytes on the wire, which are the encoded ones when encoded.
            came = response.raw.tell()
            return f"{came} of {announced} announced bytes came" if announced is not None else f"{came} bytes came"

        def check_length() -> None:
            if announced is not None and response.raw.tell() != announced:
                raise KlingConnectionError(f"The video download was cut short: {on_wire()}", request_sent=True)

        try:
            with closing(chunks):
                first = next(chunks, b"")
                refuse_what_is_not_video(content_type, first)
                return land_video(
                    dest,
                    chain([first], chunks),
                    max_bytes=max_bytes,
                    rules=rules,
                    content_type=content_type,
                    check=check_length,
                    digest=digest,
                )
        except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
            raise KlingConnectionError(
                f"The video download was cut short: {on_wire()} ({type(err).__name__})", request_sent=True
            ) from err


def _refused_url(response: requests.Response, request_id: str | None) -> KlingError:
    """The error of a video host that answered anything but 200."""
    if response.status_code in EXPIRED_STATUSES:
        fresh = f"`kling result {request_id}`" if request_id else "the request's result (`kling result REQUEST_ID`)"
        return KlingVideoExpiredError(
            f"The video URL answered HTTP {response.status_code}: it has most likely expired. A retry of the task "
            f"fetches a fresh URL from the request's result (nothing is paid again), as {fresh} does",
            status_code=response.status_code,
            request_id=request_id,
            body=response.text[:300],
        )
    return KlingAPIError("Could not fetch the video", status_code=response.status_code, body=response.text[:300])


#: What may be quoted in a refusal: what came is text, not bytes.
_TEXT_KINDS = ("an HTML page", "JSON", "an XML document", "text")
#: What a media host answers for a URL that has expired (a signed URL past its time answers 403).
EXPIRED_STATUSES = (403, 404, 410)


def refuse_what_is_not_video(content_type: str | None, head: bytes, *, source: str = "The video URL served") -> None:
    """
    The cheap checks, before a byte is written: a ``Content-Type`` that cannot be a video, and
    first bytes that open no video container, are refused, naming what came instead (and quoting
    it, when it is text).

    :raises KlingNotAVideoError: ``text/html, an HTML page``...
    """
    served = content_type_problem(content_type)
    kind = container_problem(head)
    if served is None and kind is None:
        return
    came = ", ".join(part for part in (served, kind) if part)
    quoted = excerpt(head[:120].decode("utf-8", "replace"), 80) if kind in _TEXT_KINDS else ""
    raise KlingNotAVideoError(
        f"{source} {came}, not a video{f' ({quoted!r})' if quoted else ''}: nothing was stored",
        came=came,
    )


def land_video(
    dest: Path | ObjectStoragePath,
    chunks: Iterable[bytes],
    *,
    max_bytes: int,
    rules: VideoRules,
    content_type: str = "video/mp4",
    check: Callable[[], None] | None = None,
    digest: Any = None,
) -> DownloadedVideo:
    """
    Write ``chunks`` beside ``dest``, check that they are a playable video (and of the asked
    shape, with ``verify="strict"``), land its poster, then move the video into place: a video
    lands whole and checked, with its poster, or nothing lands. Folders made for it are removed
    again when nothing lands.
    """
    made = make_folder(dest)
    landed: dict[str, Any] = {}

    def checked(part: Path | ObjectStoragePath) -> None:
        if check is not None:
            check()
        inspected = _inspect(part, rules.poster)
        facts = inspected.facts.with_mismatch(shape_mismatch(inspected.facts, rules.expect))
        if facts.mismatch and rules.verify == "strict":
            rid = rules.request_id or "the request"
            raise KlingVideoShapeError(
                f"The video of {rid} is not the shape asked for ({'; '.join(facts.mismatch)}); verify='strict', so "
                f"it was not stored. It is billed: `kling download {rid} FILE` fetches it as it is",
                request_id=rules.request_id or "",
                mismatch=list(facts.mismatch),
            )
        for name, image, place, kind in (
            ("poster", inspected.poster, poster_path, "image/jpeg"),
            ("last_frame", inspected.last_frame, last_frame_path, "image/png"),
        ):
            if image is not None:
                write_whole(place(dest), [image], max_bytes=max_bytes, content_type=kind)
                landed[name] = place(dest)
        landed["facts"] = facts

    try:
        size, sha256 = write_whole(
            dest, chunks, max_bytes=max_bytes, before_move=checked, digest=digest, content_type=content_type
        )
    except BaseException:
        for name in ("poster", "last_frame"):
            if name in landed:
                landed[name].unlink(missing_ok=True)
        for folder in reversed(made):
            with suppress(OSError):
                folder.rmdir()  # only while empty
        raise
    poster_at, last_at = landed.get("poster"), landed.get("last_frame")
    return DownloadedVideo(
        path=str(dest),
        uri=uri_of(dest),
        size_bytes=size,
        sha256=sha256,
        content_type=content_type,
        facts=landed["facts"],
        poster=uri_of(poster_at) if poster_at is not None else None,
        conn_id=getattr(dest, "conn_id", None),
        last_frame=uri_of(last_at) if last_at is not None else None,
    )


def _inspect(part: Path | ObjectStoragePath, frames: bool) -> InspectedVideo:
    """Probe a written file: a local one by its path, an object store's through its file object."""
    if is_local(part):
        return inspect_video_frames(str(part), poster=frames, last_frame=frames)
    with part.open("rb") as reader:
        return inspect_video_frames(reader, poster=frames, last_frame=frames)


def copy_video(
    source: str | os.PathLike[str] | ObjectStoragePath,
    destination: str | os.PathLike[str] | ObjectStoragePath,
    *,
    source_conn_id: str | None = None,
    storage_conn_id: str | None = None,
    overwrite: bool = False,
    max_bytes: int = MAX_VIDEO_BYTES,
    poster: bool = True,
) -> DownloadedVideo:
    """
    Copy a stored video to another place (local or object storage), whole or not at all, checked
    as a download is, with its poster: to publish an approved take, say. Streams in chunks; a
    failed copy leaves nothing behind.

    :raises KlingInputError: the destination exists and ``overwrite`` is false.
    :raises KlingNotAVideoError: the source is not a playable video.
    :raises FileNotFoundError: there is no ``source``.
    """
    dest = check_destination(destination, storage_conn_id, overwrite=overwrite)
    with storage_path(source, source_conn_id).open("rb") as reader:
        chunks = iter(partial(reader.read, DOWNLOAD_CHUNK_BYTES), b"")
        first = next(chunks, b"")
        refuse_what_is_not_video(None, first, source=f"{source} holds")
        return land_video(dest, chain([first], chunks), max_bytes=max_bytes, rules=VideoRules(poster=poster))
