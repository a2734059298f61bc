"""
Stitching: stored takes joined, in order, into one film, with FFmpeg's libraries (PyAV).

- **Remux** when the shots' streams agree (codec, size, frame rate, time base, pixel format and
  codec parameters; takes of one model do): every packet is copied as it is, its bytes kept, its
  time moved to where its shot starts in the film. Memory does not grow with the number of shots:
  one packet at a time.
- **Re-encode** (H.264, AAC) when they do not, or when shots crossfade: each shot is scaled to the
  first shot's size (letterboxed, never stretched) and frame rate, and :attr:`StitchPlan.why` says
  what disagreed.

Sound stays in step either way: each shot's sound starts with its picture; a silent shot in a
film with sound gets silence of its length; a shot's sound that runs past its picture by a part of
an audio frame is cut at the next shot. Written with ``bitexact``: the same shots make the same
bytes, so that a retried stitch writes the same film.

This module is read when a stitch runs, never when a DAG file is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_kling.exceptions import KlingInputError, KlingNotAVideoError
from airflow_provider_kling.shots import FILM_OPTIONS, ShotFile, read_shot

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

Method = Literal["remux", "re-encode"]


@dataclass(frozen=True)
class StreamShape:
    """What two shots' streams must share to be joined packet by packet."""

    codec: str
    width: int
    height: int
    pixel_format: str | None
    frame_rate: Fraction | None
    time_base: Fraction | None
    extradata: bytes

    @classmethod
    def of(cls, stream: Any) -> StreamShape:
        context = stream.codec_context
        return cls(
            str(context.name),
            int(context.width),
            int(context.height),
            str(context.pix_fmt) if context.pix_fmt else None,
            stream.average_rate,
            stream.time_base,
            bytes(context.extradata or b""),
        )

    def differs(self, other: StreamShape) -> str | None:
        """How ``other`` differs, in words; ``None`` when the two may be joined packet by packet."""
        for name, mine, theirs in (
            ("codec", self.codec, other.codec),
            ("size", f"{self.width}x{self.height}", f"{other.width}x{other.height}"),
            ("pixel format", self.pixel_format, other.pixel_format),
            ("frame rate", _rate(self.frame_rate), _rate(other.frame_rate)),
            ("time base", str(self.time_base), str(other.time_base)),
        ):
            if mine != theirs:
                return f"{name} {theirs}, not {mine}"
        if self.extradata != other.extradata:
            return f"{self.codec} parameters (its sequence and picture parameter sets) differ"
        return None


@dataclass(frozen=True)
class SoundShape:
    """What two shots' sound must share to be joined packet by packet."""

    codec: str
    sample_rate: int
    layout: str
    extradata: bytes

    @classmethod
    def of(cls, stream: Any) -> SoundShape:
        context = stream.codec_context
        return cls(
            str(context.name), int(context.sample_rate), str(context.layout.name), bytes(context.extradata or b"")
        )

    def differs(self, other: SoundShape) -> str | None:
        if (self.codec, self.sample_rate, self.layout) != (other.codec, other.sample_rate, other.layout):
            return (
                f"sound {other.codec} {other.sample_rate} Hz {other.layout}, "
                f"not {self.codec} {self.sample_rate} Hz {self.layout}"
            )
        if self.extradata != other.extradata:
            return f"sound parameters of {self.codec} differ"
        return None


@dataclass
class StitchPlan:
    """
    How the shots are joined: ``remux`` (every packet kept) or ``re-encode``, and why.

    :param seconds: each shot's seconds of picture.
    :param sound: each shot's sound, ``None`` for a silent one.
    """

    method: Method
    why: str
    video: StreamShape
    seconds: list[float]
    sound: list[SoundShape | None]
    silent_shots: list[int] = field(default_factory=list)

    @property
    def has_sound(self) -> bool:
        return any(shape is not None for shape in self.sound)


def plan_stitch(shots: Sequence[ShotFile], *, crossfade: float = 0.0) -> StitchPlan:
    """
    Read each shot's streams and decide how they are joined.

    :raises KlingNotAVideoError: a shot FFmpeg cannot open, or one without a picture.
    :raises KlingInputError: fewer than two shots, or a crossfade longer than a shot.
    """
    import av

    if len(shots) < 2:
        raise KlingInputError(f"takes: a film needs two shots or more, got {len(shots)}")
    shapes, seconds, sound = [], [], []
    for shot in shots:
        try:
            with read_shot(shot) as container:
                if not container.streams.video:
                    raise KlingNotAVideoError(f"{shot.name} holds no video stream", came="no video stream")
                stream = container.streams.video[0]
                shapes.append(StreamShape.of(stream))
                seconds.append(_seconds(container, stream))
                audio = container.streams.audio
                sound.append(SoundShape.of(audio[0]) if audio else None)
        except av.FFmpegError as err:
            raise KlingNotAVideoError(f"{shot.name} cannot be opened by FFmpeg ({err})", came="unreadable") from err
    if crossfade < 0 or (crossfade and crossfade >= min(seconds)):
        raise KlingInputError(
            f"crossfade: must be 0 or more, and shorter than the shortest shot ({min(seconds):g} s); got {crossfade:g}"
        )
    silent = [index for index, shape in enumerate(sound) if shape is None]
    method: Method = "remux"
    why = "the shots' streams agree: every packet is kept as it is"
    reasons = [
        f"shot {index + 1}: {problem}" for index, shape in enumerate(shapes) if (problem := shapes[0].differs(shape))
    ]
    sounding = [shape for shape in sound if shape is not None]
    reasons += [f"{problem}" for shape in sounding[1:] if (problem := sounding[0].differs(shape))]
    if crossfade:
        method, why = "re-encode", f"a crossfade of {crossfade:g} s blends the shots' frames"
    elif reasons:
        method, why = "re-encode", "the shots' streams disagree: " + "; ".join(reasons)
    return StitchPlan(method, why, shapes[0], seconds, sound, silent)


def stitch(shots: Sequence[ShotFile], out_path: str, *, crossfade: float = 0.0) -> StitchPlan:
    """Join ``shots`` into one MP4 at ``out_path`` (a local file); how they were joined."""
    plan = plan_stitch(shots, crossfade=crossfade)
    if plan.method == "remux":
        _remux(shots, out_path, plan)
    else:
        from airflow_provider_kling.reencode import reencode

        reencode(shots, out_path, plan, crossfade)
    return plan


# --- remux: every packet's bytes kept ---------------------------------------------------------


def _remux(shots: Sequence[ShotFile], out_path: str, plan: StitchPlan) -> None:
    import av

    template_sound = next((index for index, shape in enumerate(plan.sound) if shape is not None), None)
    with av.open(out_path, mode="w", format="mp4", options=FILM_OPTIONS) as out:
        with read_shot(shots[0]) as first:
            picture = _from_template(out, first.streams.video[0])
        sound_out = None
        if template_sound is not None:
            with read_shot(shots[template_sound]) as sounding:
                sound_out = _from_template(out, sounding.streams.audio[0])
        start = 0.0  # where the shot starts in the film, in seconds
        last_dts: dict[str, int] = {}  # the last timestamp written per stream, in its input's time base
        for index, shot in enumerate(shots):
            end = start + plan.seconds[index]
            with read_shot(shot) as container:
                video = container.streams.video[0]
                audio = container.streams.audio[0] if container.streams.audio and sound_out is not None else None
                for packet in container.demux([stream for stream in (video, audio) if stream is not None]):
                    if packet.dts is None:
                        continue
                    if packet.stream is video:
                        _move(packet, start, video, picture, last_dts, "video")
                        out.mux(packet)
                    elif audio is not None and _in_shot(packet, start, end, audio, last_dts):
                        _move(packet, start, audio, sound_out, last_dts, "audio")
                        out.mux(packet)
            if sound_out is not None and plan.sound[index] is None:
                _mux_silence(out, sound_out, start, end, last_dts)
            start = end


def _from_template(out: Any, template: Any) -> Any:
    """
    An output stream with ``template``'s codec and parameters, its codec context left unopened
    (``opaque``): packets are copied, never encoded (PyAV 14 otherwise opens an encoder, whose
    own parameter sets then describe none of the copied packets).
    """
    return out.add_stream_from_template(template, opaque=True)


def _move(packet: Any, start: float, source: Any, target: Any, last_dts: dict[str, int], kind: str) -> None:
    """Shift a packet to where its shot starts in the film; its bytes are not touched."""
    base = source.time_base
    offset = round(start / base) - (source.start_time or 0)
    packet.pts = None if packet.pts is None else packet.pts + offset
    packet.dts = packet.dts + offset
    packet.stream = target
    packet.time_base = base
    last_dts[kind] = packet.dts


def _in_shot(packet: Any, start: float, end: float, stream: Any, last_dts: dict[str, int]) -> bool:
    """
    Whether a sound packet belongs in the film: not one that starts past its shot's picture (a
    shot's sound may run on for a part of an audio frame), nor one that would go back in time over
    the previous shot's last (the encoder's priming frame).
    """
    base = stream.time_base
    offset = round(start / base) - (stream.start_time or 0)
    moved = packet.dts + offset
    if moved * base >= end:
        return False
    return "audio" not in last_dts or moved > last_dts["audio"]


def _mux_silence(out: Any, stream: Any, start: float, end: float, last_dts: dict[str, int]) -> None:
    """Silence from ``start`` to ``end`` in the film, encoded as the film's sound is."""
    import av

    encoder = av.CodecContext.create(stream.codec_context.name, "w")
    encoder.sample_rate = stream.codec_context.sample_rate
    encoder.layout = stream.codec_context.layout
    encoder.format = "fltp"
    encoder.time_base = Fraction(1, encoder.sample_rate)
    rate = encoder.sample_rate
    for packet in _encode_audio(encoder, _silence(encoder.layout.name, rate, round((end - start) * rate))):
        packet.time_base = Fraction(1, rate)
        moved = (packet.dts or 0) + round(start * rate)
        if moved * Fraction(1, rate) >= end or ("audio" in last_dts and moved <= last_dts["audio"]):
            continue
        packet.pts, packet.dts = (packet.pts or 0) + round(start * rate), moved
        packet.stream = stream
        packet.time_base = Fraction(1, rate)
        last_dts["audio"] = moved
        out.mux(packet)


def _silence(layout: str, rate: int, samples: int) -> Any:
    import av

    frame = av.AudioFrame(format="fltp", layout=layout, samples=samples)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = rate
    frame.pts = 0
    frame.time_base = Fraction(1, rate)
    return frame


def _encode_audio(encoder: Any, frame: Any) -> Iterator[Any]:
    yield from encoder.encode(frame)
    yield from encoder.encode(None)


def _seconds(container: Any, stream: Any) -> float:
    """A shot's seconds of picture: its video stream's duration, else the container's."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration) / 1_000_000
    raise KlingNotAVideoError("A shot does not say how long it is", came="a video of unknown duration")


def _rate(rate: Fraction | None) -> str:
    return f"{float(rate):g} fps" if rate else "unknown"
