"""
Where a video may land, checked before anything is written: a local path or any URI Airflow's
``ObjectStoragePath`` understands, its storage connection, its folder, and the poster's place
beside it. An operator runs :func:`check_destination` before the paid submit, and the store runs
it again before it writes, with the same words (:mod:`airflow_provider_kling.hooks.download`).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from airflow_provider_kling.exceptions import KlingError, KlingInputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow.providers.common.compat.sdk import ObjectStoragePath


def storage_path(
    destination: str | os.PathLike[str] | ObjectStoragePath, conn_id: str | None = None
) -> Path | ObjectStoragePath:
    """A local :class:`~pathlib.Path` for a plain path, else an ``ObjectStoragePath`` (``s3://``...)."""
    if isinstance(destination, (str, os.PathLike)) and "://" not in os.fspath(destination):
        return Path(destination).absolute()
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    if isinstance(destination, ObjectStoragePath) and conn_id is None:
        return destination
    # conn_id=None would override the connection a URI names (s3://conn@bucket/...) on Airflow 2
    return ObjectStoragePath(str(destination), **({"conn_id": conn_id} if conn_id else {}))


def check_destination(
    destination: str | os.PathLike[str] | ObjectStoragePath, conn_id: str | None, *, overwrite: bool
) -> Path | ObjectStoragePath:
    """
    Whether a video can land at ``destination``, checked without writing anything: its storage
    connection exists; it does not exist already unless ``overwrite`` (a destination still naming
    ``{request_id}`` cannot be looked up yet); and, on a local disk, its folder is a folder (or can
    be made) that this process may write in. An operator runs it before the paid submit, and the
    store again before it writes, with the same words.

    :raises KlingInputError: naming the field and what to change.
    """
    if conn_id:
        _check_connection(conn_id)
    named = os.fspath(destination) if isinstance(destination, (str, os.PathLike)) else str(destination)
    pending = REQUEST_ID_FIELD in named
    try:
        dest = storage_path(named.replace(REQUEST_ID_FIELD, "request-id") if pending else destination, conn_id)
        if is_local(dest):
            _check_folder(dest)
        exists = not overwrite and not pending and dest.exists()
    except KlingInputError:
        raise
    except (ValueError, ImportError) as err:  # fsspec knows no such scheme (Airflow 3 says so at once, 2 later)
        scheme = named.split("://", 1)[0]
        raise KlingInputError(
            f"destination: {named}: this Airflow has no filesystem for {scheme}:// ({err}); install the provider "
            "of that store, or use a local path, s3://, gs://..."
        ) from None
    if exists:
        raise KlingInputError(f"destination: {dest} already exists; pass overwrite=True to replace it")
    return dest


#: Replaced by the request's id in a destination (``s3://bucket/{request_id}.mp4``).
REQUEST_ID_FIELD = "{request_id}"


def _check_connection(conn_id: str) -> None:
    from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise KlingInputError(
            f"storage_conn_id: there is no Airflow connection {conn_id!r}; add it, or leave storage_conn_id "
            "out to use the store's default credentials"
        ) from None


def _check_folder(dest: Path) -> None:
    """A local destination's folder must be a folder this process can write in, or one it can make."""
    if dest.is_dir():
        raise KlingInputError(f"destination: {dest} is a folder; name the video file (.../{{request_id}}.mp4)")
    folder = dest.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise KlingInputError(f"destination: cannot make the folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write in" if existing == folder else "make folders in"
        raise KlingInputError(f"destination: no permission to {what} {existing}")


def poster_path(dest: Path | ObjectStoragePath) -> Path | ObjectStoragePath:
    """Where a video's poster frame goes: beside it, ``teaser.mp4`` -> ``teaser.jpg``."""
    return dest.parent / f"{dest.stem if dest.suffix else dest.name}.jpg"


def last_frame_path(dest: Path | ObjectStoragePath) -> Path | ObjectStoragePath:
    """Where a video's last frame goes: beside it, ``teaser.mp4`` -> ``teaser.last.png``."""
    return dest.parent / f"{dest.stem if dest.suffix else dest.name}.last.png"


def make_folder(dest: Path | ObjectStoragePath) -> list[Path]:
    """Make ``dest``'s folder; return the local folders made (outermost first), to remove on failure."""
    if not is_local(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        return []
    missing = []
    folder = dest.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    dest.parent.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def is_local(path: Path | ObjectStoragePath) -> TypeGuard[Path]:
    """
    Whether ``path`` is a plain local path (made from a path without a scheme), not an
    ``ObjectStoragePath``, even a ``file://`` one: on Airflow 2 (universal-pathlib 0.2) an
    ``ObjectStoragePath`` is a :class:`~pathlib.Path` too, whose ``str()`` is its URI.
    """
    return isinstance(path, Path) and not hasattr(path, "protocol")


def uri_of(path: Path | ObjectStoragePath) -> str:
    return path.as_uri() if isinstance(path, Path) else str(path)


#: Bytes handed to one write(2): a 1 MiB chunk is written in slices. On the machines we measure,
#: 1 MiB writes into the page cache ran at 340 to 4,300 MB/s from one run to the next, and 64 KiB
#: writes of the same bytes at 3,800 MB/s every time (curl writes in 16 KiB pieces).
WRITE_SLICE_BYTES = 64 * 1024


def write_whole(
    dest: Path | ObjectStoragePath,
    chunks: Iterable[bytes],
    *,
    max_bytes: int,
    before_move: Callable[[Path | ObjectStoragePath], None] | None = None,
    digest: Any = None,
    content_type: str | None = None,
) -> tuple[int, str]:
    """
    Write ``chunks`` to a temporary name beside ``dest``, run ``before_move`` on it, then move the
    file into place; on any failure remove the temporary file. Returns the size and the sha256 written.
    In an object store that keeps one, the object's ``Content-Type`` is ``content_type`` (a stored
    frame RunComfy fetches as the next shot's image must be served as an image).
    """
    hashed_already = digest is not None  # the producer of the chunks hashes them as it reads
    digest = digest if hashed_already else hashlib.sha256()
    size = 0
    part = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.part"
    try:
        with part.open("wb", **_typed(part, content_type)) as out:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise KlingError(f"The video is over the {max_bytes}-byte cap")
                if not hashed_already:
                    digest.update(chunk)
                view = memoryview(chunk)
                for start in range(0, len(view), WRITE_SLICE_BYTES):  # see WRITE_SLICE_BYTES
                    out.write(view[start : start + WRITE_SLICE_BYTES])
        if before_move is not None:
            before_move(part)
        if isinstance(part, Path) and isinstance(dest, Path):
            part.replace(dest)  # atomic on one file system
        else:
            part.rename(dest)  # type: ignore[arg-type]  # object stores: copy, then delete the part
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def _typed(path: Path | ObjectStoragePath, content_type: str | None) -> dict[str, Any]:
    """How an object store is told an object's ``Content-Type`` when it is written (S3, GCS); nothing for a disk."""
    if content_type is None or is_local(path):
        return {}
    protocol = str(getattr(path, "protocol", "") or "")
    if protocol in ("s3", "s3a"):
        return {"ContentType": content_type}
    if protocol in ("gs", "gcs"):
        return {"content_type": content_type}
    return {}
