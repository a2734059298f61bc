"""
The images a generation starts from, as RunComfy must receive them: a public ``https`` URL.

An image is given three ways: an ``https`` URL, sent as it is; an ``ObjectStoragePath``; or an
object-store URI (``s3://bucket/key``, ``gs://...``, ``az://...``) read with ``image_conn_id``. A
fourth names the previous shot of a film: its result (or its ``stored``), whose last frame
(``stored["last_frame"]``) is the image, read with the connection its video was stored with.
The last two are signed by the store's own filesystem (fsspec's ``sign()``, which s3fs, gcsfs and
adlfs implement) into a short-lived ``https`` URL, at the moment of the paid submit and for that
submit only.

Everything the task keeps (the input's fingerprint, XCom, lineage, trigger kwargs, logs) holds the
object's URI; the signed URL is a credential: it exists only in the body on its way to RunComfy,
and is registered with :func:`~airflow_provider_kling.untrusted.register_secret` so that no error
text can quote it.

How long a signed URL lives (:func:`signed_url_seconds`): RunComfy fetches inputs when the request
runs, so the URL must outlive the queue. It lives for the task's ``queue_timeout`` plus
:data:`FETCH_MARGIN_S`; without a ``queue_timeout`` the task gets one of :data:`DEFAULT_QUEUE_S`,
so a request still queued when its image's URL would expire is cancelled by the exit rule (free,
and said), never left to fail on an expired URL. Stores cap the life of a signature (S3 and GCS at
seven days): :data:`MAX_SIGNED_S`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_kling.exceptions import KlingInputError, excerpt
from airflow_provider_kling.untrusted import register_secret

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

#: Seconds a signed URL outlives the queue, for RunComfy to fetch it once the request starts.
FETCH_MARGIN_S = 30 * 60
#: The queue limit a task gets when it signs images and sets no ``queue_timeout`` (6 hours).
DEFAULT_QUEUE_S = 6 * 3600
#: The longest a store signs for (S3's and GCS's limit: seven days).
MAX_SIGNED_S = 7 * 24 * 3600
#: Schemes that name a file on this machine: RunComfy's servers cannot fetch it.
_LOCAL_SCHEMES = frozenset({"", "file", "local"})
HOW_TO_FIX = (
    "give an https URL RunComfy can fetch, or put the image in object storage (s3://, gs://, az://...) "
    "and pass its URI or an ObjectStoragePath: it is signed for RunComfy"
)


@dataclass(frozen=True)
class ImageInput:
    """
    One image argument of a task, mapped to the model's field.

    :param argument: the operator's argument (``image``, ``end_image``).
    :param field: the model's field (``image_url``, ``start_image_url``...).
    :param source: an ``https`` URL, or the object's URI with its connection (``s3://conn@bucket/key``).
    """

    argument: str
    field: str
    source: str

    @property
    def signed(self) -> bool:
        """Whether the image is signed from object storage (not an ``https`` URL given as is)."""
        return urlsplit(self.source).scheme != "https"

    @property
    def uri(self) -> str:
        """The image as logs, XCom and lineage show it: the URL, or the object's URI without its connection."""
        parts = urlsplit(self.source)
        if not self.signed:
            return self.source
        return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))

    def path(self) -> Any:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return ObjectStoragePath(self.source)


def image_source(argument: str, value: Any, conn_id: str | None = None) -> str:
    """
    What the body carries for an image argument: the ``https`` URL, or the object's URI with its
    connection. Nothing is read or signed here.

    :raises KlingInputError: a local path, ``http``, or anything else RunComfy cannot be sent.
    """
    if isinstance(value, dict):  # a previous shot's result, or its ``stored``: start where it ended
        value, conn_id = last_frame_source(argument, value, conn_id)
    if isinstance(value, str):
        text = value
    elif hasattr(value, "fs") and hasattr(value, "protocol"):  # an ObjectStoragePath: its URI names its connection
        text = str(value)
    elif isinstance(value, os.PathLike):
        text = os.fspath(value)
    else:
        raise KlingInputError(
            f"{argument}: must be an https URL, an object-store URI or an ObjectStoragePath, got {type(value).__name__}"
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in _LOCAL_SCHEMES or (len(scheme) == 1 and text[1:3] in (":\\", ":/")):
        raise KlingInputError(
            f"{argument}: {excerpt(text, 80)!r} is a file on this machine, which RunComfy's "
            f"servers cannot fetch; {HOW_TO_FIX}"
        )
    if scheme == "http":
        raise KlingInputError(f"{argument}: RunComfy fetches inputs over https only, got an http URL; {HOW_TO_FIX}")
    if scheme == "https":
        if not parts.hostname:
            raise KlingInputError(f"{argument}: {excerpt(text, 80)!r} has no host; {HOW_TO_FIX}")
        return text
    if not parts.netloc:
        raise KlingInputError(f"{argument}: {excerpt(text, 80)!r} names no bucket or container; {HOW_TO_FIX}")
    if conn_id and isinstance(value, str) and "@" not in parts.netloc:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        text = str(ObjectStoragePath(text, conn_id=conn_id))
    return text


def last_frame_source(argument: str, result: Mapping[str, Any], conn_id: str | None) -> tuple[str, str | None]:
    """
    The last frame of a stored take, given its result or its ``stored``: its URI and the
    connection to read it with (``conn_id`` when given, else the one the video was stored with).

    :raises KlingInputError: the take has no stored last frame, saying how to get one.
    """
    found = result.get("stored")
    stored: Mapping[str, Any] = found if isinstance(found, dict) else result
    frame = stored.get("last_frame")
    if not isinstance(frame, str) or not frame:
        rid = result.get("request_id") or stored.get("request_id")
        of = f" of Kling request {rid}" if rid else ""
        raise KlingInputError(
            f"{argument}: the take{of} given has no stored last frame to start from; store the previous shot's video "
            "(destination= in object storage, with poster=True) so that its last frame lands beside it"
        )
    stored_with = stored.get("conn_id")
    return frame, conn_id or (stored_with if isinstance(stored_with, str) else None)


def images_of(model_fields: Mapping[str, str], body: Mapping[str, Any]) -> list[ImageInput]:
    """The images a body carries, for a model whose image arguments map to ``model_fields``."""
    return [
        ImageInput(argument, field, str(body[field]))
        for argument, field in model_fields.items()
        if isinstance(body.get(field), str)
    ]


def check_images(images: list[ImageInput]) -> None:
    """
    Before paying: each image to sign exists and its store can sign.

    :raises KlingInputError: naming the image's URI and how to fix it.
    """
    for image in images:
        if not image.signed:
            continue
        from fsspec import AbstractFileSystem  # type: ignore[import-untyped]  # comes with Airflow

        path = image.path()
        try:
            fs, found = path.fs, path.exists()
        except Exception as err:  # a store's own errors: no credentials, no such bucket, unreachable
            raise KlingInputError(
                f"{image.argument}: {image.uri} could not be read ({excerpt(str(err), 200)}); nothing was sent"
            ) from err
        if type(fs).sign is AbstractFileSystem.sign:
            raise KlingInputError(
                f"{image.argument}: the {type(fs).__name__} of {image.uri} cannot sign URLs, so "
                f"RunComfy could not fetch it; {HOW_TO_FIX}"
            )
        if not found:
            raise KlingInputError(f"{image.argument}: {image.uri} does not exist; nothing was sent")


def signed_url_seconds(queue_timeout: float | None) -> int:
    """How long a signed URL lives: the queue limit (or :data:`DEFAULT_QUEUE_S`) plus the fetch margin."""
    queue = DEFAULT_QUEUE_S if queue_timeout is None else queue_timeout
    return int(min(queue + FETCH_MARGIN_S, MAX_SIGNED_S))


def signed_body(body: Mapping[str, Any], images: list[ImageInput], seconds: int) -> dict[str, Any]:
    """
    The body as it goes to RunComfy: each image from object storage replaced by a URL signed for
    ``seconds``. The URLs are registered as secrets at once.
    """
    wire = dict(body)
    for image in images:
        if not image.signed:
            continue
        path = image.path()
        with _signing_unlogged():
            url = str(path.fs.sign(path.path, expiration=seconds))
        _keep_secret(url)
        if not _fetchable(url):
            raise KlingInputError(
                f"{image.argument}: the store signed {image.uri} as a URL that is not https; "
                f"RunComfy fetches over https only; {HOW_TO_FIX}"
            )
        wire[image.field] = url
    return wire


@contextmanager
def _signing_unlogged() -> Iterator[None]:
    """botocore's debug lines quote the signature it computes: not while an image is signed."""
    signer = logging.getLogger("botocore.auth")
    level = signer.level
    signer.setLevel(max(level, logging.INFO))
    try:
        yield
    finally:
        signer.setLevel(level)


def _keep_secret(url: str) -> None:
    """
    No error of ours may quote a signed URL or its signature (RunComfy's answer to the submit may
    echo the body). It is not handed to Airflow's secrets masker: Airflow 3's task supervisor logs
    each value it is asked to mask, at debug level.
    """
    register_secret(url)
    register_secret(urlsplit(url).query)


def _fetchable(url: str) -> bool:
    """An ``https`` URL, or ``http`` on this machine (an object store started by tests on loopback)."""
    scheme = urlsplit(url).scheme
    return scheme == "https" or (scheme == "http" and on_this_machine(url))


def on_this_machine(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost`` or a loopback address)."""
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
