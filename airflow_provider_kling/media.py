"""
The checked video: what may land as a video, what it is, and the shape it was asked to have.

Three checks, cheapest first, all before a video is moved into place:

1. :func:`content_type_problem`: a ``Content-Type`` that cannot be a video (``text/*``, JSON,
   XML) is refused before a byte is written.
2. :func:`container_problem`: the first bytes must open a video container: ISO-BMFF (``ftyp``:
   MP4, MOV, what Kling returns) or Matroska/WebM (the other container browsers play, and what
   some video models return). Anything else is named: an HTML page, JSON, an image...
3. :func:`inspect_video`: FFmpeg's own libraries, through PyAV, open the file, find a video
   stream and decode its first frame; what they read becomes the video's :class:`VideoFacts`
   (duration, resolution, frame rate, codecs, audio), a frame a third of the way in becomes its
   poster (a JPEG), and the last frame it shows its last frame (a lossless PNG: where the next
   shot of a film starts).

:func:`shape_mismatch` compares the facts with what the request asked for (``duration``,
``aspect_ratio``) within stated tolerances. The first two checks need nothing but the standard
library; PyAV is imported only by :func:`inspect_video`, when a video is being stored, never when
a DAG file is parsed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow_provider_kling.exceptions import KlingNotAVideoError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

#: A duration within this many seconds of the asked one is the asked one (Kling's 5-s videos run
#: 5.0 to 5.1 s: whole frames at 24 or 30 fps, and the encoder's last frame).
DURATION_TOLERANCE_S = 0.5
#: An aspect ratio within this fraction of the asked one is the asked one (1920x1080 is 16:9
#: exactly; 1080x1916, an encoder rounding to even sizes, is 0.2 % off 9:16).
ASPECT_TOLERANCE = 0.02
#: Where the poster frame is taken, as a fraction of the duration: past a fade-in, before a fade-out.
POSTER_AT = 1 / 3
#: The JPEG quality scale of the poster (FFmpeg's ``qscale``: 2 best, 31 worst).
POSTER_QSCALE = 3

#: Media types no video is ever served as.
_NOT_VIDEO_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "application/javascript")
_NOT_VIDEO_SUFFIXES = ("+json", "+xml")


def content_type_problem(content_type: str | None) -> str | None:
    """What is wrong with a video served as ``content_type`` (``None``: nothing, or not said)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type.startswith(_NOT_VIDEO_TYPES) or media_type.endswith(_NOT_VIDEO_SUFFIXES):
        return media_type
    return None


def container_problem(head: bytes) -> str | None:
    """
    What the first bytes of a download are, when they do not open a video container (``None``
    when they do): ``"an HTML page"``, ``"JSON"``, ``"a PNG image"``...
    """
    if head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3":
        return None
    return describe(head)


def describe(head: bytes) -> str:
    """Name what ``head`` starts, in the words an error message uses."""
    text = head[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not text:
        return "an empty body"
    for marks, name in _KINDS:
        if any(text.startswith(mark) for mark in marks):
            return name
    if b"<html" in text or b"<body" in text:
        return "an HTML page"
    if head[:1].isascii() and all(32 <= byte < 127 or byte in (9, 10, 13) for byte in head[:64]):
        return "text"
    return f"bytes that open no video container (they start {head[:8].hex(' ')})"


_KINDS: tuple[tuple[tuple[bytes, ...], str], ...] = (
    ((b"<!doctype html", b"<html", b"<head", b"<body"), "an HTML page"),
    ((b"<?xml",), "an XML document"),
    ((b"{", b"["), "JSON"),
    ((b"\x89png",), "a PNG image"),
    ((b"\xff\xd8\xff",), "a JPEG image"),
    ((b"gif8",), "a GIF image"),
    ((b"%pdf",), "a PDF document"),
    ((b"pk\x03\x04",), "a ZIP archive"),
    ((b"\x1f\x8b",), "a gzip archive"),
)


@dataclass(frozen=True)
class VideoFacts:
    """
    What FFmpeg read of a stored video: what a task downstream checks before it transcodes,
    thumbnails or publishes it.

    :param duration_s: seconds of video (the container's duration).
    :param width: pixels across, as displayed.
    :param height: pixels down.
    :param aspect_ratio: ``width:height`` in lowest terms (``16:9``).
    :param frame_rate: frames per second (average).
    :param video_codec: ``h264``, ``hevc``, ``vp9``...
    :param pixel_format: ``yuv420p``... (what a player or a platform may require).
    :param has_audio: whether an audio stream is there.
    :param audio_codec: the audio stream's codec, if there is one.
    :param container: the container as FFmpeg names it (``mov,mp4,m4a,3gp,3g2,mj2``: an MP4).
    :param mismatch: how the video differs from what was asked (``duration``, ``aspect_ratio``);
        empty when it is what was asked, or nothing was asked.
    """

    duration_s: float | None
    width: int
    height: int
    aspect_ratio: str
    frame_rate: float | None
    video_codec: str
    pixel_format: str | None
    has_audio: bool
    audio_codec: str | None
    container: str
    mismatch: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        facts = asdict(self)
        facts["mismatch"] = list(self.mismatch)
        return facts

    def with_mismatch(self, mismatch: tuple[str, ...]) -> VideoFacts:
        return VideoFacts(**{**asdict(self), "mismatch": mismatch})


@dataclass(frozen=True)
class ExpectedShape:
    """
    The shape a request asked for, to compare a video with.

    :param duration_s: seconds of video asked for (``duration``); ``None`` when not said.
    :param aspect_ratio: ``16:9``, ``9:16``, ``1:1``...; ``None`` when not said.
    """

    duration_s: float | None = None
    aspect_ratio: str | None = None

    @classmethod
    def of_input(cls, body: Mapping[str, Any]) -> ExpectedShape | None:
        """The shape an input asks for (its ``duration`` and ``aspect_ratio``), if it asks for one."""
        duration = body.get("duration")
        ratio = body.get("aspect_ratio")
        seconds = float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) else None
        shape = cls(seconds, ratio if isinstance(ratio, str) and _ratio(ratio) else None)
        return shape if shape.duration_s is not None or shape.aspect_ratio is not None else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ExpectedShape | None:
        if not data:
            return None
        seconds = data.get("duration_s")
        return cls(float(seconds) if seconds is not None else None, data.get("aspect_ratio"))


def shape_mismatch(facts: VideoFacts, expected: ExpectedShape | None) -> tuple[str, ...]:
    """
    How ``facts`` differ from ``expected``, in words (``aspect_ratio: asked 9:16, came 1280x720
    (16:9)``); empty when the video has the asked shape, within :data:`DURATION_TOLERANCE_S` and
    :data:`ASPECT_TOLERANCE`.
    """
    if expected is None:
        return ()
    found: list[str] = []
    asked = _ratio(expected.aspect_ratio) if expected.aspect_ratio else None
    if asked is not None and facts.height:
        came = facts.width / facts.height
        if abs(came / asked - 1) > ASPECT_TOLERANCE:
            found.append(
                f"aspect_ratio: asked {expected.aspect_ratio}, came {facts.width}x{facts.height} ({facts.aspect_ratio})"
            )
    seconds = facts.duration_s
    if (
        expected.duration_s is not None
        and seconds is not None
        and abs(seconds - expected.duration_s) > DURATION_TOLERANCE_S
    ):
        found.append(f"duration: asked {expected.duration_s:g} s, came {facts.duration_s:.2f} s")
    return tuple(found)


def _ratio(text: str) -> float | None:
    width, _, height = text.partition(":")
    try:
        value = float(width) / float(height)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


@dataclass(frozen=True)
class InspectedVideo:
    """
    What :func:`inspect_video` read of a video.

    :param facts: what FFmpeg read of it.
    :param poster: the frame a third of the way in, as a JPEG; ``None`` when not asked for.
    :param last_frame: the last frame the video shows (the last decoded, not the last keyframe),
        as a lossless PNG; ``None`` when not asked for.
    """

    facts: VideoFacts
    poster: bytes | None = None
    last_frame: bytes | None = None


def inspect_video(source: str | BinaryIO, *, poster: bool = True) -> tuple[VideoFacts, bytes | None]:
    """
    Open a video with FFmpeg (PyAV), check that it holds a video stream whose first frame decodes,
    and read its facts; with ``poster``, also encode the frame a third of the way in as a JPEG.
    (:func:`inspect_video_frames` reads the last frame as well.)

    :param source: a local path, or a binary file object that can seek (an object store's file).
    :raises KlingNotAVideoError: FFmpeg cannot open it, it holds no video stream, or its first
        frame does not decode.
    """
    inspected = inspect_video_frames(source, poster=poster, last_frame=False)
    return inspected.facts, inspected.poster


def inspect_video_frames(source: str | BinaryIO, *, poster: bool = True, last_frame: bool = True) -> InspectedVideo:
    """
    :func:`inspect_video`, and with ``last_frame`` the last frame the video shows, as a PNG.

    The frames are decoded from the last keyframe to the end, taking the poster on the way when
    that keyframe comes before it (a Kling take has one keyframe, its first: its frames are then
    decoded once, as a decode from the start would); else the poster is decoded from the keyframe
    before it. A stitched film, a keyframe at each shot, decodes its last shot and a part of
    another, not all of it. A tail that does not decode gives the last frame that did.

    :param source: a local path, or a binary file object that can seek (an object store's file).
    :raises KlingNotAVideoError: FFmpeg cannot open it, it holds no video stream, or its first
        frame does not decode.
    """
    import av

    try:
        container = av.open(source, mode="r")
    except av.FFmpegError as err:
        raise KlingNotAVideoError(f"The video cannot be opened by FFmpeg ({_reason(err)})", came="unreadable") from err
    with container:
        if not container.streams.video:
            raise KlingNotAVideoError("The file holds no video stream", came="no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            frames = container.decode(stream)
            first = next(frames, None)
        except av.FFmpegError as err:
            raise KlingNotAVideoError(
                f"The video's first frame does not decode ({_reason(err)})", came="an undecodable video"
            ) from err
        if first is None:
            raise KlingNotAVideoError("The video stream holds no frame", came="an empty video stream")
        facts = _facts(container, stream, first)
        at = (facts.duration_s or 0.0) * POSTER_AT
        shown = last = None
        if last_frame:
            shown, last = _tail(container, stream, facts.duration_s or 0.0, at)
        if poster and shown is None:
            shown = _frame_at(_seek(container, stream, at), at) or first
        if last_frame and last is None:  # no seek to the tail: decoded from the start
            last = _frame_at(_seek(container, stream, 0.0), float("inf")) or first
    return InspectedVideo(facts, _jpeg(shown) if poster and shown is not None else None, _png(last) if last else None)


def _reason(err: Exception) -> str:
    return str(getattr(err, "strerror", None) or type(err).__name__)


def _facts(container: Any, stream: Any, first: Any) -> VideoFacts:
    width = int(stream.codec_context.width or first.width)
    height = int(stream.codec_context.height or first.height)
    ratio = Fraction(width, height) if width and height else Fraction(0)
    duration = container.duration / 1_000_000 if container.duration else None
    if duration is None and stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    rate = stream.average_rate or stream.base_rate
    audio = container.streams.audio
    return VideoFacts(
        duration_s=round(duration, 3) if duration is not None else None,
        width=width,
        height=height,
        aspect_ratio=f"{ratio.numerator}:{ratio.denominator}",
        frame_rate=round(float(rate), 3) if rate else None,
        video_codec=str(stream.codec_context.name),
        pixel_format=str(stream.codec_context.pix_fmt) if stream.codec_context.pix_fmt else None,
        has_audio=bool(audio),
        audio_codec=str(audio[0].codec_context.name) if audio else None,
        container=str(container.format.name),
    )


def _seek(container: Any, stream: Any, seconds: float) -> Iterator[Any]:
    """The frames from the keyframe at or before ``seconds`` on (none when the seek fails)."""
    import av

    base = stream.time_base or Fraction(1, 1_000_000)
    try:
        container.seek(int(seconds / base) + (stream.start_time or 0), stream=stream, backward=True)
        yield from container.decode(stream)
    except av.FFmpegError:  # a damaged tail: what decoded is what there is
        return


def _tail(container: Any, stream: Any, duration: float, at: float) -> tuple[Any, Any]:
    """
    From the last keyframe to the end: the frame shown at ``at`` (when that keyframe comes before
    it, else ``None``) and the last frame (``None`` when nothing decoded).
    """
    shown = last = None
    for frame in _seek(container, stream, duration):
        if last is None and (frame.time or 0.0) > at:
            shown = False  # the last keyframe comes after the poster's frame
        if shown is None and (frame.time or 0.0) >= at:
            shown = frame
        last = frame
    return (shown or None), last


def _frame_at(frames: Iterator[Any], seconds: float) -> Any:
    """The first of ``frames`` at or past ``seconds``, or the last one; ``None`` when there is none."""
    frame = None
    for frame in frames:
        if frame.time is not None and frame.time >= seconds:
            break
    return frame


def _png(frame: Any) -> bytes:
    """A frame as a lossless PNG, in RGB (what a player shows, and what an image-to-video model takes)."""
    import av

    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = "rgb24"
    encoder.time_base = Fraction(1, 25)
    picture = frame.reformat(format="rgb24")
    picture.pts = 0
    return b"".join(bytes(packet) for packet in [*encoder.encode(picture), *encoder.encode(None)])


def _jpeg(frame: Any) -> bytes:
    import av

    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"qmin": str(POSTER_QSCALE), "qmax": str(POSTER_QSCALE)}
    picture = frame.reformat(format="yuvj420p")
    picture.pts = 0
    return b"".join(bytes(packet) for packet in [*encoder.encode(picture), *encoder.encode(None)])
