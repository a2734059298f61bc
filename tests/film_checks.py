"""What a test reads of a film or a frame: its first frame as RGB, PSNR, its frames and sound."""

from __future__ import annotations

import io
import math
import tempfile


def rgb(image: bytes | str) -> tuple[bytes, int, int]:
    """The first frame of a video or an image (bytes or a local path), as RGB."""
    import av

    with av.open(io.BytesIO(image) if isinstance(image, bytes) else image) as container:
        frame = next(container.decode(video=0)).reformat(format="rgb24")
    plane = frame.planes[0]
    rows = bytes(plane)
    data = b"".join(rows[y * plane.line_size : y * plane.line_size + frame.width * 3] for y in range(frame.height))
    return data, frame.width, frame.height


def psnr(a: bytes, b: bytes) -> float:
    assert len(a) == len(b)
    mse = sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / len(a)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def film_facts(path: str) -> dict:
    import av

    with av.open(path) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        facts = {
            "frames": sum(1 for _ in container.demux(video) if _.size),
            "video_s": float(video.duration * video.time_base),
            "audio_s": float(audio.duration * audio.time_base) if audio is not None else None,
        }
    if audio is not None:
        with av.open(path) as container:
            facts["audio_decoded_s"] = sum(frame.samples for frame in container.decode(audio=0)) / audio.sample_rate
    return facts


def film_facts_of_bytes(data: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as file:
        file.write(data)
        file.flush()
        return film_facts(file.name)


def loudness(path: str, start: float, end: float) -> float | None:
    """The mean absolute sample of a film's sound between two times (0 for silence, ``None`` for no sound at all)."""
    import array

    import av

    total, count = 0.0, 0
    with av.open(path) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=48_000)
        for frame in container.decode(audio=0):
            for mono in resampler.resample(frame):
                at = float(mono.pts * mono.time_base) if mono.pts is not None else 0.0
                if start <= at < end:
                    samples = array.array("f", bytes(mono.planes[0])[: mono.samples * 4])
                    total += sum(abs(value) for value in samples)
                    count += len(samples)
    return total / count if count else None
