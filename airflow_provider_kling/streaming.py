"""Overlap reading a stream with using it: the next chunks arrive while the caller hashes and writes."""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

#: Chunks read ahead at most: memory held is about ``(depth + 2) x`` the chunk size.
READ_AHEAD_DEPTH = 4


def read_ahead(read: Callable[[], bytes], depth: int = READ_AHEAD_DEPTH) -> Generator[bytes, None, None]:
    """
    Yield the chunks ``read()`` returns until it returns ``b""``, calling it in a second thread.

    Socket reads, hashing and file writes all release the GIL, so a copy that reads in one
    thread and hashes and writes in the other runs on two cores. At most ``depth`` chunks wait
    in between (bounded memory). An exception raised by ``read`` is raised here, in the caller's
    thread. When the caller stops early, the reading thread stops at its next chunk; close the
    source to end a read that is blocked.
    """
    chunks: queue.Queue[bytes | BaseException] = queue.Queue(depth)
    stopped = threading.Event()

    def hand_over(item: bytes | BaseException) -> bool:
        while not stopped.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            while hand_over(chunk := read()) and chunk:
                pass
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread, raised there
            hand_over(err)

    threading.Thread(target=produce, name="kling-read-ahead", daemon=True).start()
    try:
        while True:
            item = chunks.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item
    finally:
        stopped.set()
