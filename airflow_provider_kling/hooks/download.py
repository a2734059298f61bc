"""
Copy a video to storage, where it appears whole or not at all.

The destination is a local path or any URI that Airflow's ``ObjectStoragePath`` understands. The
video streams in chunks (constant memory, the next chunks read in a second thread while this one
hashes and writes) to a temporary name beside the destination, is checked against the length the
server announced, and is then moved into place; a failed copy leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import requests
import urllib3

from airflow_provider_kling.constants import MAX_VIDEO_BYTES
from airflow_provider_kling.exceptions import KlingAPIError, KlingConnectionError, KlingError, KlingInputError
from airflow_provider_kling.streaming import read_ahead
from airflow_provider_kling.untrusted import video_url_problem

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_kling.hooks.transport import Timeouts

#: Bytes read at a time when streaming a video.
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
#: A video is compressed already: asking the server not to compress it again saves its CPU and ours.
DOWNLOAD_HEADERS = {"Accept-Encoding": "identity"}


@dataclass(frozen=True)
class DownloadedVideo:
    """A video saved by :func:`download_video`: ``size_bytes`` and ``sha256`` describe the file that landed."""

    path: str
    uri: str
    size_bytes: int
    sha256: str
    content_type: str


def storage_path(
    destination: str | os.PathLike[str] | ObjectStoragePath, conn_id: str | None = None
) -> Path | ObjectStoragePath:
    """A local :class:`~pathlib.Path` for a plain path, else an ``ObjectStoragePath`` (``s3://``...)."""
    if isinstance(destination, (str, os.PathLike)) and "://" not in os.fspath(destination):
        return Path(destination).absolute()
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    if isinstance(destination, ObjectStoragePath) and conn_id is None:
        return destination
    return ObjectStoragePath(str(destination), conn_id=conn_id)


def destination_path(
    destination: str | os.PathLike[str] | ObjectStoragePath, conn_id: str | None, *, overwrite: bool
) -> Path | ObjectStoragePath:
    """Where a video will land, its folder made; refused if it exists and ``overwrite`` is false."""
    dest = storage_path(destination, conn_id)
    if not overwrite and dest.exists():
        raise KlingInputError(f"destination: {dest} already exists; pass overwrite=True to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


def download_video(
    session: requests.Session,
    url: str,
    destination: str | os.PathLike[str] | ObjectStoragePath,
    timeouts: Timeouts,
    *,
    max_bytes: int = MAX_VIDEO_BYTES,
    overwrite: bool = True,
    storage_conn_id: str | None = None,
) -> DownloadedVideo:
    """
    Stream the video at ``url`` to ``destination``. The session carries no API token: a media host
    never sees it, even behind a redirect.

    A server that compresses the answer anyway (``Content-Encoding: gzip``) is read as it was
    sent: its ``Content-Length`` is compared with the bytes that came over the wire, and the file
    gets the original, decoded bytes.

    :raises KlingInputError: the URL is not http(s), or the destination exists and ``overwrite`` is false.
    :raises KlingError: the download failed, was cut short, or is larger than ``max_bytes``.
    """
    problem = video_url_problem(url)
    if problem is not None:
        raise KlingInputError(f"video_url: must be an http(s) URL with a host ({problem})")
    dest = destination_path(destination, storage_conn_id, overwrite=overwrite)
    try:
        response = session.get(url, stream=True, headers=DOWNLOAD_HEADERS, timeout=(timeouts.connect, timeouts.read))
    except requests.RequestException as err:
        raise KlingConnectionError(f"GET video: {type(err).__name__}", request_sent=True) from err
    with response:
        if response.status_code != 200:
            raise KlingAPIError("Could not fetch the video", status_code=response.status_code, body=response.text[:300])
        announced = int(response.headers.get("Content-Length") or 0) or None
        encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        if announced and not encoded and announced > max_bytes:
            raise KlingError(f"The video is {announced} bytes, over the {max_bytes}-byte cap")
        chunks = read_ahead(partial(response.raw.read, DOWNLOAD_CHUNK_BYTES, decode_content=True))

        def check_length() -> None:
            # Content-Length counts the bytes on the wire, which are the encoded ones when encoded.
            on_wire = response.raw.tell()
            if announced is not None and on_wire != announced:
                raise KlingConnectionError(
                    f"The video download was cut short: {on_wire} of {announced} bytes", request_sent=True
                )

        try:
            with closing(chunks):
                size, sha256 = write_whole(dest, chunks, max_bytes=max_bytes, check=check_length)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
            raise KlingConnectionError(f"The video download failed ({type(err).__name__})", request_sent=True) from err
    return DownloadedVideo(
        path=str(dest),
        uri=uri_of(dest),
        size_bytes=size,
        sha256=sha256,
        content_type=response.headers.get("Content-Type", "application/octet-stream"),
    )


def copy_video(
    source: str | os.PathLike[str] | ObjectStoragePath,
    destination: str | os.PathLike[str] | ObjectStoragePath,
    *,
    source_conn_id: str | None = None,
    storage_conn_id: str | None = None,
    overwrite: bool = False,
    max_bytes: int = MAX_VIDEO_BYTES,
) -> DownloadedVideo:
    """
    Copy a stored video to another place (local or object storage), whole or not at all: to
    publish an approved take, say. Streams in chunks; a failed copy leaves nothing behind.

    :raises KlingInputError: the destination exists and ``overwrite`` is false.
    :raises FileNotFoundError: there is no ``source``.
    """
    dest = destination_path(destination, storage_conn_id, overwrite=overwrite)
    with storage_path(source, source_conn_id).open("rb") as reader:
        size, sha256 = write_whole(dest, iter(partial(reader.read, DOWNLOAD_CHUNK_BYTES), b""), max_bytes=max_bytes)
    return DownloadedVideo(path=str(dest), uri=uri_of(dest), size_bytes=size, sha256=sha256, content_type="video/mp4")


def write_whole(
    dest: Path | ObjectStoragePath,
    chunks: Iterable[bytes],
    *,
    max_bytes: int,
    check: Callable[[], None] | None = None,
) -> tuple[int, str]:
    """
    Write ``chunks`` to a temporary name beside ``dest``, run ``check``, then move the file into
    place; on any failure remove the temporary file. Returns the size and the sha256 written.
    """
    digest = hashlib.sha256()
    size = 0
    part = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.part"
    try:
        with part.open("wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise KlingError(f"The video is over the {max_bytes}-byte cap")
                digest.update(chunk)
                out.write(chunk)
        if check is not None:
            check()
        if isinstance(part, Path) and isinstance(dest, Path):
            part.replace(dest)  # atomic on one file system
        else:
            part.rename(dest)  # type: ignore[arg-type]  # object stores: copy, then delete the part
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def uri_of(path: Path | ObjectStoragePath) -> str:
    return path.as_uri() if isinstance(path, Path) else str(path)
