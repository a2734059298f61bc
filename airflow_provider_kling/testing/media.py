"""
The videos the simulator serves: real MP4s (H.264, with AAC sound unless asked otherwise) made with
PyAV at the duration and aspect ratio a request asked for, small enough to make in a fraction of a
second, and the ways a media host goes wrong (a sign-in page, an audio-only file, a file whose
frames do not decode).

Its own rules, not the provider's: it knows the shapes as RunComfy serves them, at a tenth of the size.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The simulator's frame sizes per aspect ratio: Kling's 1920x1080, 1080x1920 and 1080x1080, scaled down.
FRAME_SIZES = {"16:9": (320, 180), "9:16": (180, 320), "1:1": (240, 240)}
FRAMES_PER_SECOND = 24
AUDIO_RATE = 48_000
#: A media host's sign-in page, served with 200 where a video was expected (a captive portal, an expired session).
SIGN_IN_PAGE = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><h1>Sign in to continue</h1>"
    b"<form method='post'><input name='user'><input type='password' name='pass'></form></body></html>"
)


@lru_cache(maxsize=32)
def make_video(seconds: float = 5.0, aspect_ratio: str = "16:9", *, audio: bool = True, video: bool = True) -> bytes:
    """
    An MP4 of ``seconds`` at ``aspect_ratio`` (moving bands, a 440 Hz tone), its index first
    (``faststart``); ``video=False`` leaves the video stream out (an audio-only file).
    """
    width, height = FRAME_SIZES.get(aspect_ratio, FRAME_SIZES["16:9"])
    frames = (_frame(width, height, index) for index in range(round(seconds * FRAMES_PER_SECOND)))
    return _encode(frames if video else None, width, height, seconds, audio=audio)


@lru_cache(maxsize=32)
def make_video_from_image(
    image: bytes, seconds: float = 5.0, aspect_ratio: str = "16:9", *, audio: bool = True
) -> bytes:
    """
    An MP4 that starts from ``image`` (a PNG or JPEG, scaled to the frame): its first frame is the
    image, and the picture then pans left a pixel a frame, so that its last frame is another one.
    What an image-to-video take looks like here: a film chained by last frames is visibly, and
    testably, continuous. Encoded exactly as :func:`make_video` is (the takes of one model agree).
    """
    width, height = FRAME_SIZES.get(aspect_ratio, FRAME_SIZES["16:9"])
    still = _still(image, width, height)
    frames = (_panned(still, index) for index in range(round(seconds * FRAMES_PER_SECOND)))
    return _encode(frames, width, height, seconds, audio=audio)


def _encode(frames: Iterator[Any] | None, width: int, height: int, seconds: float, *, audio: bool) -> bytes:
    import av

    handle, path = tempfile.mkstemp(suffix=".mp4")  # faststart rewrites the file: it needs a real one
    os.close(handle)
    try:
        with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            # Every stream is added before the first packet is written.
            picture = (
                out.add_stream("libx264", rate=FRAMES_PER_SECOND, options={"preset": "ultrafast", "crf": "18"})
                if frames is not None
                else None
            )
            sound = out.add_stream("aac", rate=AUDIO_RATE, layout="mono") if audio else None
            if picture is not None and frames is not None:
                picture.width, picture.height, picture.pix_fmt = width, height, "yuv420p"
                for frame in frames:
                    for packet in picture.encode(frame):
                        out.mux(packet)
                for packet in picture.encode():
                    out.mux(packet)
            if sound is not None:
                _tone(out, sound, seconds)
        with open(path, "rb") as made:
            return made.read()
    finally:
        os.unlink(path)


def _still(image: bytes, width: int, height: int) -> Any:
    """``image`` decoded and scaled to ``width`` x ``height``, as a YUV 4:2:0 frame."""
    import io

    import av

    with av.open(io.BytesIO(image)) as container:
        decoded = next(container.decode(video=0))
    return decoded.reformat(width=width, height=height, format="yuv420p", dst_color_range=1)  # limited, as H.264 is


def _panned(still: Any, index: int) -> Any:
    """``still`` moved ``index`` pixels to the left (what leaves on the left comes back on the right)."""
    import av

    frame = av.VideoFrame(still.width, still.height, "yuv420p")
    for plane, source, scale in zip(frame.planes, still.planes, (1, 2, 2), strict=True):
        data = bytes(source)
        line, shown = source.line_size, source.width
        shift = (index // scale) % shown
        rows = []
        for top in range(0, len(data), line):
            row = data[top : top + shown]
            rows.append((row[shift:] + row[:shift]).ljust(plane.line_size, b"\x00"))
        plane.update(b"".join(rows)[: plane.buffer_size])
    frame.pts = index
    return frame


#: Kling's own frame size, for the takes that measure what a full-size video costs (the UI's seek, benches).
FULL_HD = (1920, 1080)
#: Rows of each full-size frame that change unpredictably: what makes its size (about 1.7 MB a second) real.
_GRAIN_ROWS = 40


@lru_cache(maxsize=2)
def make_full_hd_video(seconds: float = 10.0) -> bytes:
    """
    An MP4 of ``seconds`` at 1920x1080, 24 fps, without sound, its index first, about as large as a
    Kling take of that length (a band of grain that moves keeps H.264 from shrinking it to nothing).
    Made in about a second.
    """
    import av

    width, height = FULL_HD
    grain = os.urandom(width * _GRAIN_ROWS * 2)
    handle, path = tempfile.mkstemp(suffix=".mp4")
    os.close(handle)
    try:
        with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            picture = out.add_stream("libx264", rate=FRAMES_PER_SECOND, options={"preset": "ultrafast", "crf": "23"})
            picture.width, picture.height, picture.pix_fmt = width, height, "yuv420p"
            for index in range(round(seconds * FRAMES_PER_SECOND)):
                frame = _frame(width, height, index)
                luma = frame.planes[0]
                at = (index * 7919) % (width * _GRAIN_ROWS)
                band = grain[at : at + luma.line_size * _GRAIN_ROWS]
                plain = bytes(luma)[: luma.buffer_size - len(band)]
                luma.update(plain + band)
                for packet in picture.encode(frame):
                    out.mux(packet)
            for packet in picture.encode():
                out.mux(packet)
        with open(path, "rb") as made:
            return made.read()
    finally:
        os.unlink(path)


def _frame(width: int, height: int, index: int) -> Any:
    import av

    frame = av.VideoFrame(width, height, "yuv420p")
    luma = frame.planes[0]
    row = bytes((x + index * 4) % 200 + 16 for x in range(luma.line_size))
    luma.update((row * height)[: luma.buffer_size])
    frame.planes[1].update(bytes([128 + index % 40]) * frame.planes[1].buffer_size)
    frame.planes[2].update(bytes([128]) * frame.planes[2].buffer_size)
    frame.pts = index
    return frame


def _tone(out: Any, stream: Any, seconds: float) -> None:
    import av

    samples = 1024
    tone = struct.pack(
        f"<{samples}h", *(int(3000 * math.sin(2 * math.pi * 440 * k / AUDIO_RATE)) for k in range(samples))
    )
    for block in range(math.ceil(seconds * AUDIO_RATE / samples)):
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.sample_rate = AUDIO_RATE
        frame.planes[0].update(tone)
        frame.pts = block * samples
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def undecodable_video() -> bytes:
    """An MP4 whose index is whole but whose frames are noise: FFmpeg opens it, and its first frame does not decode."""
    good = make_video(1.0, audio=False)
    mdat = good.find(b"mdat")
    payload = bytes((i * 131 + 7) % 256 for i in range(len(good) - mdat - 4))
    return good[: mdat + 4] + payload


def padded_video(size: int) -> Iterator[bytes]:
    """
    A real MP4 of exactly ``size`` bytes, in chunks: the sample video, then a ``free`` box of filler
    (which players skip), so large transfers move a file that FFmpeg still plays. Deterministic,
    so a test can hash it.
    """
    video = make_video()
    filler = size - len(video) - 8
    if filler < 0:
        raise ValueError(f"a padded video is at least {len(video) + 8} bytes")
    yield video + struct.pack(">I", filler + 8) + b"free"
    block = bytes(range(256)) * 4096
    while filler > 0:
        chunk = block[: min(len(block), filler)]
        filler -= len(chunk)
        yield chunk


def sample_image(width: int = 320, height: int = 180) -> bytes:
    """A PNG of ``width`` x ``height`` (a diagonal gradient): an image a generation can start from."""
    import struct
    import zlib

    rows = b"".join(
        b"\x00" + bytes(channel for x in range(width) for channel in ((x * 255) // width, (y * 255) // height, 128))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
