"""Run the RunComfy simulator as a command: ``kling-simulator`` or ``python -m airflow_provider_kling.testing``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from airflow_provider_kling.testing.media import make_full_hd_video
from airflow_provider_kling.testing.simulator import RunComfySimulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kling-simulator", description="Serve a simulated RunComfy Model API on loopback."
    )
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0 picks a free one)")
    parser.add_argument("--token", default="sim-token", help="the API token to accept")
    parser.add_argument("--queue-seconds", type=float, default=2.0, help="seconds each request stays queued")
    parser.add_argument("--run-seconds", type=float, default=3.0, help="seconds each request runs")
    parser.add_argument("--video-size", type=int, help="serve a synthetic video of this many bytes (for benchmarks)")
    parser.add_argument(
        "--full-hd", action="store_true", help="serve a 10-s 1920x1080 take for every request (for benchmarks)"
    )
    parser.add_argument("--url-file", type=Path, help="write the base URL here once listening")
    args = parser.parse_args(argv)

    sim = RunComfySimulator(
        token=args.token,
        queue_seconds=args.queue_seconds,
        run_seconds=args.run_seconds,
        port=args.port,
        video_size=args.video_size,
        video=make_full_hd_video() if args.full_hd else None,
    ).start()
    if args.url_file:
        args.url_file.write_text(sim.url)
    sys.stdout.write(f"RunComfy simulator listening on {sim.url} (token {args.token!r})\n")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
