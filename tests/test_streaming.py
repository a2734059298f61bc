"""The read-ahead behind the copy to storage: order kept, errors surfaced, no reader left behind."""

from __future__ import annotations

import threading

import pytest

from airflow_provider_kling.streaming import read_ahead


def _source(chunks: list[bytes]):
    pending = iter([*chunks, b""])
    return lambda: next(pending)


def test_chunks_arrive_whole_and_in_order():
    chunks = [bytes([i]) * 1000 for i in range(50)]
    assert list(read_ahead(_source(chunks), depth=2)) == chunks


def test_a_read_error_is_raised_in_the_callers_thread_after_the_chunks_before_it():
    def read() -> bytes:
        if not seen:
            seen.append(1)
            return b"first"
        raise ConnectionResetError("peer closed")

    seen: list[int] = []
    stream = read_ahead(read)
    assert next(stream) == b"first"
    with pytest.raises(ConnectionResetError, match="peer closed"):
        next(stream)


def test_stopping_early_stops_the_reader_within_a_chunk_or_so():
    reads = 0

    def endless() -> bytes:
        nonlocal reads
        reads += 1
        return b"x" * 10

    before = set(threading.enumerate())
    stream = read_ahead(endless, depth=2)
    next(stream)
    (reader,) = set(threading.enumerate()) - before  # other tests' threads may end meanwhile: watch this one
    stream.close()  # what the copy does when the video turns out too large
    reader.join(timeout=5)
    assert not reader.is_alive()  # the reading thread ended
    assert reads <= 5  # it read at most the bounded queue's worth ahead, not the endless source
