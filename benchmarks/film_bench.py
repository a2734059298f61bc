"""
The film rows of ``make bench`` (``BENCH_ARGS=--only=film``): stitching stored takes, side by side
with Debian's ``ffmpeg -f concat -c copy`` (a yardstick only, never the product's), and what the
last frame costs a store.

Each measurement runs in a process of its own, ours and FFmpeg's alternating, and reads that
process's wall time and peak RSS from ``wait4``. The takes are 10-s 1920x1080 24-fps H.264 files
about as large as Kling's (``make_full_hd_video``), on the local disk.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

STITCH = """
import json, sys, time
import airflow_provider_kling
airflow_provider_kling.standalone()  # a process of its own, as ffmpeg's is: Python and PyAV, not Airflow
from airflow_provider_kling.shots import ShotFile
from airflow_provider_kling.stitch import stitch
paths, out, fade = sys.argv[1].split(","), sys.argv[2], float(sys.argv[3])
started = time.perf_counter()
plan = stitch([ShotFile(f"shot {n}", (lambda p=p: p)) for n, p in enumerate(paths, 1)], out, crossfade=fade)
print(json.dumps({"method": plan.method, "seconds": time.perf_counter() - started}))
"""

FILM = """
import json, logging, sys, time
from airflow_provider_kling.film import Shot, make_film
paths, out = sys.argv[1].split(","), sys.argv[2]
started = time.perf_counter()
make_film([Shot("file://" + p) for p in paths], out, storage_conn_id=None, crossfade=0.0, overwrite=True,
          poster=True, max_bytes=1 << 40, log=logging.getLogger("bench"))
print(json.dumps({"seconds": time.perf_counter() - started}))
"""

FRAMES = """
import json, sys, time
from airflow_provider_kling.hooks.download import VideoRules, land_video
from airflow_provider_kling.media import inspect_video_frames
from pathlib import Path
take, folder, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
inspect_video_frames(take)  # libraries loaded, file in the page cache
poster, both, store = [], [], []
for n in range(rounds):
    started = time.perf_counter(); inspect_video_frames(take, poster=True, last_frame=False)
    poster.append(time.perf_counter() - started)
    started = time.perf_counter(); inspect_video_frames(take, poster=True, last_frame=True)
    both.append(time.perf_counter() - started)
    with open(take, "rb") as reader:
        started = time.perf_counter()
        land_video(folder / f"stored-{n}.mp4", iter(lambda: reader.read(1 << 20), b""), max_bytes=1 << 40,
                   rules=VideoRules())
        store.append(time.perf_counter() - started)
med = lambda values: sorted(values)[len(values) // 2]
print(json.dumps({"poster_s": med(poster), "with_last_s": med(both), "store_s": med(store)}))
"""


#: Runs a command and prints its wall seconds and peak RSS, from ``wait4``: a small process of its
#: own, because a child's peak RSS counts the pages of the process it was forked from (the bench's
#: own, which holds the takes), until it execs.
LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"wall": time.perf_counter() - started, "rss_mb": usage.ru_maxrss / 1024,
                  "code": os.waitstatus_to_exitcode(status)}), file=sys.stderr)
"""


def _measured(argv: list[str]) -> tuple[float, float, str]:
    """Run ``argv``; its wall seconds, peak RSS in MB, and the last line it printed."""
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True, text=True, check=False)
    measured = json.loads(done.stderr.strip().splitlines()[-1])
    if measured["code"] != 0:
        raise RuntimeError(f"{argv[0]} failed ({measured['code']}): {done.stdout[-500:]} {done.stderr[-500:]}")
    printed = done.stdout.strip()
    return measured["wall"], measured["rss_mb"], printed.splitlines()[-1] if printed else ""


def _ours(takes: list[Path], out: Path, fade: float = 0.0) -> tuple[float, float, dict[str, Any]]:
    wall, rss, printed = _measured([sys.executable, "-c", STITCH, ",".join(map(str, takes)), str(out), str(fade)])
    return wall, rss, json.loads(printed)


def _ffmpeg(ffmpeg: str, takes: list[Path], out: Path) -> tuple[float, float]:
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{take}'\n" for take in takes))
    argv = [ffmpeg, "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)]
    wall, rss, _ = _measured(argv)
    return wall, rss


def film_rows(quick: bool) -> list[tuple[str, str, str, str]]:
    """The rows: remux time and memory beside FFmpeg's, the whole stitch task, the re-encode, the last frame."""
    sys.path.insert(0, str(REPO))
    from airflow_provider_kling.testing.media import make_full_hd_video

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("The film bench needs Debian's ffmpeg as its yardstick: make bench installs it")
    rounds = 1 if quick else 3
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="kling-film-bench-") as folder:
        base = Path(folder)
        take = make_full_hd_video(10.0)
        counts = [2, 6] if quick else [2, 6, 24]
        takes = []
        for n in range(max(counts)):
            path = base / f"take-{n}.mp4"
            path.write_bytes(take)
            takes.append(path)
        memory: list[tuple[str, str, str, str]] = []
        for count in counts:
            ours_runs, peer_runs = [], []
            for _ in range(rounds):  # alternate, so that a busy moment of the machine hits both sides
                ours_runs.append(_ours(takes[:count], base / "ours.mp4"))
                peer_runs.append(_ffmpeg(ffmpeg, takes[:count], base / "ffmpeg.mp4"))
            ours_wall = statistics.median(run[0] for run in ours_runs)
            peer_wall = statistics.median(run[0] for run in peer_runs)
            ours_rss = statistics.median(run[1] for run in ours_runs)
            peer_rss = statistics.median(run[1] for run in peer_runs)
            assert ours_runs[0][2]["method"] == "remux"
            size = (base / "ours.mp4").stat().st_size >> 20
            if count == 6:
                rows.append(
                    (
                        f"stitch six 10-s 1080p takes by remux ({size} MB): s, a process of its own from start",
                        f"{ours_wall:.2f} ({peer_wall / ours_wall:.2f}x as fast)",
                        f"{peer_wall:.2f} ffmpeg -f concat -c copy",
                        ">= 0.8x",
                    )
                )
                inner = statistics.median(run[2]["seconds"] for run in ours_runs)
                rows.append(
                    (
                        "  of which the remux itself s (the rest: Python and PyAV starting; a task has them)",
                        f"{inner:.2f} ({peer_wall / inner:.2f}x as fast)",
                        "",
                        "",
                    )
                )
            memory.append(
                (
                    f"  peak memory MB, {count} shots",
                    f"{ours_rss:.0f}",
                    f"{peer_rss:.0f} ffmpeg",
                    "flat in shots",
                )
            )
        rows += memory
        film_runs = [
            _measured([sys.executable, "-c", FILM, ",".join(map(str, takes[:6])), str(base / "film.mp4")])
            for _ in range(rounds)
        ]
        film_s = statistics.median(json.loads(run[2])["seconds"] for run in film_runs)
        rows.append(
            ("  the whole stitch task's work s (remux, land, check, poster, last frame)", f"{film_s:.2f}", "", "")
        )
        shots = 2 if quick else 6
        _, _, reencoded = _ours(takes[:shots], base / "reencoded.mp4", fade=0.5)
        rows.append(
            (
                f"re-encode {shots} 10-s 1080p takes with 0.5-s crossfades (x264 veryfast, CRF 18): s",
                f"{reencoded['seconds']:.1f} ({shots * 10 / reencoded['seconds']:.2f}x real time)",
                "",
                "",
            )
        )
        _, _, printed = _measured([sys.executable, "-c", FRAMES, str(takes[0]), str(base), str(5 if not quick else 1)])
        frames = json.loads(printed)
        extra = frames["with_last_s"] - frames["poster_s"]
        rows += [
            (
                "last frame of a 10-s 1080p take (PNG): s beyond the poster's pass",
                f"{extra:.3f} ({frames['with_last_s']:.3f} with, {frames['poster_s']:.3f} without)",
                "",
                "",
            ),
            (
                "  its share of storing that take (copy, check, poster, last frame)",
                f"{100 * extra / frames['store_s']:.0f} % of {frames['store_s']:.3f} s",
                "",
                "",
            ),
        ]
    return rows
