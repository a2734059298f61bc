"""
The shots of a film as FFmpeg reads them (:mod:`airflow_provider_kling.stitch` joins them,
:mod:`airflow_provider_kling.reencode` re-encodes them), and how the film is written.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: The film's container options: its index first (it plays while it downloads), no version strings.
FILM_OPTIONS = {"movflags": "+faststart", "fflags": "+bitexact"}


@dataclass(frozen=True)
class ShotFile:
    """
    One shot as the stitch reads it.

    :param name: how messages name it (``shot 2 (s3://films/a/2.mp4)``).
    :param open: opens it for reading (a path, or a binary file object that can seek).
    """

    name: str
    open: Callable[[], str | BinaryIO]


@contextmanager
def read_shot(shot: ShotFile) -> Iterator[Any]:
    """A shot opened by FFmpeg; the file object under it (an object store's) closed with it."""
    import av

    source = shot.open()
    try:
        with av.open(source, mode="r") as container:
            yield container
    finally:
        if not isinstance(source, str):
            source.close()


def local_or_open(path: Any) -> Callable[[], str | BinaryIO]:
    """How to open a stored shot: a local file by its path (fastest), an object store's through its file object."""
    from airflow_provider_kling.hooks.destination import is_local

    if is_local(path):
        return lambda: os.fspath(path)
    return lambda: path.open("rb")
