"""
The re-encode path of a stitch (:mod:`airflow_provider_kling.stitch`): for shots whose streams
disagree, or that crossfade. Every shot is decoded, scaled to the first shot's size (letterboxed,
never stretched) and shown at the film's frame rate, its sound resampled to the film's and cut or
padded to its picture's length, each join optionally faded over; then H.264 (x264, CRF 18) and AAC.

Read only when a stitch re-encodes.
"""

from __future__ import annotations

import array
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.exceptions import KlingNotAVideoError
from airflow_provider_kling.shots import FILM_OPTIONS, read_shot

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from airflow_provider_kling.shots import ShotFile
    from airflow_provider_kling.stitch import StitchPlan

#: H.264 quality of a re-encoded film (x264's CRF: 18 is visually lossless) and its speed preset.
REENCODE_CRF = 18
REENCODE_PRESET = "veryfast"
#: x264's threads, fixed: its output then depends on nothing of the machine (a retry writes the same bytes).
REENCODE_THREADS = 4
#: The sound of a re-encoded film, when its first sounding shot does not say (AAC at 48 kHz).
AUDIO_RATE = 48_000


def reencode(shots: Sequence[ShotFile], out_path: str, plan: StitchPlan, crossfade: float) -> None:
    """Decode every shot and encode the film at ``out_path``, fading each join over ``crossfade`` seconds."""
    import av

    shape = plan.video
    rate = shape.frame_rate or Fraction(24)
    sounding = next((sound for sound in plan.sound if sound is not None), None)
    sample_rate = sounding.sample_rate if sounding else AUDIO_RATE
    layout = sounding.layout if sounding else "stereo"
    fade_frames = round(crossfade * rate)
    fade_samples = round(crossfade * sample_rate)
    with av.open(out_path, mode="w", format="mp4", options=FILM_OPTIONS) as out:
        picture = out.add_stream(
            "libx264",
            rate=rate,
            options={"crf": str(REENCODE_CRF), "preset": REENCODE_PRESET, "threads": str(REENCODE_THREADS)},
        )
        picture.width, picture.height, picture.pix_fmt = shape.width, shape.height, "yuv420p"
        sound = out.add_stream("aac", rate=sample_rate, layout=layout) if plan.has_sound else None
        frames_out = 0
        tail: list[Any] = []  # the last frames of the shot before, to blend with the next one's first
        sound_tail = array.array("f")
        samples_out = 0
        for index, shot in enumerate(shots):
            last = index == len(shots) - 1
            with read_shot(shot) as container:
                frames = _frames_at_rate(container, shape.width, shape.height, rate, plan.seconds[index])
                if tail:
                    frames = _blend_into(tail, frames)
                tail = []
                for frame in frames:
                    tail.append(frame)
                    if last or len(tail) > fade_frames:
                        ready = tail.pop(0)
                        ready.pts = frames_out
                        ready.time_base = 1 / rate
                        frames_out += 1
                        for packet in picture.encode(ready):
                            out.mux(packet)
                if sound is not None:
                    samples = _shot_samples(container, layout, sample_rate, plan.seconds[index])
                    samples = _mix_into(sound_tail, samples, fade_samples)
                    keep = 0 if last else fade_samples
                    sound_tail = samples[len(samples) - keep * _channels(layout) :] if keep else array.array("f")
                    body = samples[: len(samples) - keep * _channels(layout)] if keep else samples
                    for packet in sound.encode(_audio_frame(body, layout, sample_rate, samples_out)):
                        out.mux(packet)
                    samples_out += len(body) // _channels(layout)
        for packet in picture.encode(None):
            out.mux(packet)
        if sound is not None:
            for packet in sound.encode(None):
                out.mux(packet)


def _frames_at_rate(container: Any, width: int, height: int, rate: Fraction, seconds: float) -> Iterator[Any]:
    """
    A shot's frames at the film's size (letterboxed) and rate: each output frame shows the input
    frame on screen at its time, so a shot of another frame rate keeps its length.
    """
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    graph = av.filter.Graph()
    source = graph.add_buffer(template=stream)
    scale = graph.add("scale", f"{width}:{height}:force_original_aspect_ratio=decrease")
    pad = graph.add("pad", f"{width}:{height}:(ow-iw)/2:(oh-ih)/2")
    convert = graph.add("format", "yuv420p")
    sink = graph.add("buffersink")
    source.link_to(scale)
    scale.link_to(pad)
    pad.link_to(convert)
    convert.link_to(sink)
    graph.configure()
    wanted = round(seconds * rate)
    made = 0
    start = None
    shown = None
    for frame in container.decode(stream):
        at = frame.time or 0.0
        start = at if start is None else start
        while shown is not None and made < wanted and (made / rate) < at - start:
            yield _copy(shown)
            made += 1
        graph.push(frame)
        shown = graph.pull()
    while shown is not None and made < wanted:
        yield _copy(shown)
        made += 1
    if shown is None:
        raise KlingNotAVideoError("A shot's picture does not decode", came="an undecodable video")


def _copy(frame: Any) -> Any:
    """A frame of its own (the same picture may be shown twice, each with its own time)."""
    return frame.reformat(format="yuv420p")


def _blend_into(tail: list[Any], frames: Iterator[Any]) -> Iterator[Any]:
    """The next shot's frames, its first ones blended with ``tail`` (the last of the shot before), fading over."""
    import av

    count = len(tail)
    for index, frame in enumerate(frames):
        if index >= count:
            yield frame
            continue
        weight = (index + 1) / (count + 1)
        graph = av.filter.Graph()
        before = graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=Fraction(1, 25)
        )
        after = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format, time_base=Fraction(1, 25))
        blend = graph.add("blend", f"all_mode=normal:all_opacity={1 - weight:.6f}")
        sink = graph.add("buffersink")
        before.link_to(blend, 0, 0)
        after.link_to(blend, 0, 1)
        blend.link_to(sink)
        graph.configure()
        old, new = tail[index], frame
        old.pts = new.pts = 0
        before.push(old)
        after.push(new)
        yield graph.pull()


def _channels(layout: str) -> int:
    import av

    return len(av.AudioLayout(layout).channels)


def _shot_samples(container: Any, layout: str, rate: int, seconds: float) -> array.array[float]:
    """A shot's sound, interleaved floats in the film's layout and rate, exactly as long as its picture."""
    import av

    wanted = round(seconds * rate) * _channels(layout)
    samples = array.array("f")
    if container.streams.audio:
        container.seek(0)  # the picture was decoded to the end first
        resampler = av.AudioResampler(format="flt", layout=layout, rate=rate)
        for frame in container.decode(container.streams.audio[0]):
            for converted in resampler.resample(frame):
                samples.frombytes(bytes(converted.planes[0])[: converted.samples * 4 * _channels(layout)])
            if len(samples) >= wanted:
                break
    del samples[wanted:]
    if len(samples) < wanted:
        samples.frombytes(bytes(4 * (wanted - len(samples))))  # silence: a silent shot, or a short sound
    return samples


def _mix_into(tail: array.array[float], samples: array.array[float], fade: int) -> array.array[float]:
    """``samples`` with their first ones mixed with ``tail`` (the shot before's last), fading over."""
    if not tail:
        return samples
    mixed = array.array("f", samples)
    count = len(tail)
    for index in range(count):
        weight = index / count
        mixed[index] = tail[index] * (1 - weight) + samples[index] * weight
    return mixed


def _audio_frame(samples: array.array[float], layout: str, rate: int, pts: int) -> Any:
    import av

    frame = av.AudioFrame(format="flt", layout=layout, samples=len(samples) // _channels(layout))
    frame.planes[0].update(samples.tobytes().ljust(frame.planes[0].buffer_size, b"\0"))
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame
