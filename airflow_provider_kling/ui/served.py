"""
A stored video (or its poster) served by the API server, read through its store's own connection,
with HTTP byte ranges so that a browser can seek. The location is the one XCom recorded, never one
a request names; the store's credentials stay on the server.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

#: What one read of the store asks for: big enough to keep a local disk or S3 busy, small in memory.
CHUNK_BYTES = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(ValueError):
    """The ``Range`` asked for lies outside the file (HTTP 416)."""


@dataclass(frozen=True)
class ByteRange:
    """The bytes ``start`` to ``end`` (inclusive) of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def byte_range(header: str | None, size: int) -> ByteRange | None:
    """
    The part of a file of ``size`` bytes that a ``Range`` header asks for (one range: ``bytes=N-``,
    ``bytes=N-M`` and the suffix ``bytes=-N``), answered 206 as nginx does, even when it is the
    whole file; ``None`` without a usable header (the whole file, 200).

    :raises RangeNotSatisfiable: the range starts past the end (416).
    """
    found = _RANGE.match(header.strip()) if header else None
    if found is None or found.groups() == ("", ""):
        return None  # no range, several ranges, or another unit: RFC 9110 lets a server send the whole
    first, last = found.groups()
    if not first:  # the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(f"bytes */{size}")
    return ByteRange(start, end, size)


def location(uri: str, conn_id: str | None) -> Any:
    """The stored file: a local ``Path`` for ``file://``, else an ``ObjectStoragePath`` on its connection."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(unquote(parts.path) if parts.scheme else uri)
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return ObjectStoragePath(uri, conn_id=conn_id)


def unreachable(stored: Mapping[str, Any], *, hostname: str | None = None) -> str | None:
    """
    Why the API server cannot read a stored video, in words (naming where it is), or ``None``.

    Only a local file can be known missing without a call: it was written on the machine that ran
    the task (a worker's disk), which is not this one. An object store is read when asked.
    """
    path = location(str(stored["uri"]), stored.get("conn_id"))
    if not isinstance(path, Path) or path.is_file():
        return None
    where = f"the disk of {hostname}" if hostname and hostname != socket.gethostname() else "a disk"
    return (
        f"The video was stored at {path} on {where}, which the API server cannot read: store takes in object "
        "storage (s3://, gs://...) or on a volume the API server mounts to watch them here."
    )


def size_of(path: Any) -> int:
    return int(path.stat().st_size)


def read_range(path: Any, part: ByteRange, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The bytes of ``part``, ``chunk`` at a time, from a local file or an object store."""
    left = part.length
    with path.open("rb") as reader:
        if part.start:
            reader.seek(part.start)
        while left > 0:
            data = reader.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data
