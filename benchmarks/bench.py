"""
Benchmarks: this provider beside its peers, measured side by side in one run.

    make bench            # or: .venv/bin/python benchmarks/bench.py [--quick]

Each measurement runs in a fresh interpreter against a RunComfy simulator in its own process,
so CPU and memory are the measured side's alone; the trigger rows are medians of three
alternating rounds. Prints a table and writes docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
MODEL = "kling/kling-1-6/pro/text-to-video"
TOKEN = "bench-token"
#: docs/performance.md: the table between these markers is rewritten by each full run.
RESULTS_START, RESULTS_END = "<!-- bench results -->", "<!-- end of bench results -->"


# --- helpers --------------------------------------------------------------------------------


@contextmanager
def simulator(*args: str) -> Iterator[str]:
    """The simulator CLI in its own process; yields its base URL."""
    with tempfile.TemporaryDirectory() as tmp:
        url_file = Path(tmp) / "url"
        proc = subprocess.Popen(
            [
                str(Path(PY).parent / "kling-simulator"),
                "--port",
                "0",
                "--token",
                TOKEN,
                "--url-file",
                str(url_file),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                if url_file.exists() and url_file.read_text():
                    break
                time.sleep(0.05)
            yield url_file.read_text().strip()
        finally:
            proc.terminate()
            proc.wait(10)


def child(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; it prints one JSON line."""
    out = subprocess.run(
        [PY, __file__, "--child", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def connection_env(url: str) -> dict[str, str]:
    host, port = url.removeprefix("http://").split(":")
    return {
        "AIRFLOW_CONN_KLING_DEFAULT": json.dumps({"conn_type": "kling", "host": url, "password": TOKEN}),
        "AIRFLOW_CONN_BENCH_HTTP": json.dumps(
            {
                "conn_type": "http",
                "host": host,
                "port": int(port),
                "schema": "http",
                "extra": {"Authorization": f"Bearer {TOKEN}"},
            }
        ),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_HOME": os.environ.get("AIRFLOW_HOME", tempfile.mkdtemp(prefix="kling-bench-")),
    }


async def submit_many(url: str, n: int, scenario: dict[str, Any] | None = None) -> list[str]:
    import aiohttp

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        if scenario:
            for _ in range(n):
                async with session.post(f"{url}/_sim/script", json=scenario) as answer:
                    answer.raise_for_status()
        semaphore = asyncio.Semaphore(100)

        async def one() -> str:
            async with semaphore, session.post(f"{url}/v1/models/{MODEL}", json={"prompt": "bench"}) as answer:
                return str((await answer.json())["request_id"])

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def check_many(url: str, rids: list[str]) -> dict[str, dict[str, Any]]:
    """Each task's status call just before it defers (the worker's part, like the submit)."""
    import aiohttp

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        semaphore = asyncio.Semaphore(100)

        async def one(rid: str) -> dict[str, Any]:
            async with semaphore, session.get(f"{url}/v1/requests/{rid}/status") as answer:
                body = await answer.json()
            return {"state": body["status"], "queue_position": body.get("queue_position"), "at": time.time()}

        return dict(zip(rids, await asyncio.gather(*(one(rid) for rid in rids)), strict=True))


async def sim_json(url: str, path: str, method: str = "GET") -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.request(method, url + path) as answer:
        return await answer.json()


def bar_chart(groups: list[tuple[str, float, float]], title: str) -> str:
    """A small SVG of paired bars (ours, peer) per group: no plotting library needed."""
    width, height, top, bar = 480, 220, 40, 36
    scale = (height - top - 30) / max(max(o, p) for _, o, p in groups)
    parts = [
        f'<text x="10" y="20" font-size="14">{title}: airflow-provider-kling (blue) and HttpSensorTrigger (grey)</text>'
    ]
    for i, (label, ours, peer) in enumerate(groups):
        x = 40 + i * (width - 40) // len(groups)
        for j, (value, colour) in enumerate(((ours, "#1f6feb"), (peer, "#8b949e"))):
            h = value * scale
            parts.append(
                f'<rect x="{x + j * (bar + 6)}" y="{height - 30 - h:.0f}" width="{bar}" height="{h:.0f}" fill="{colour}"/>'
            )
            parts.append(f'<text x="{x + j * (bar + 6)}" y="{height - 34 - h:.0f}" font-size="11">{value:.2f}</text>')
        parts.append(f'<text x="{x}" y="{height - 10}" font-size="12">{label}</text>')
    body = "".join(parts)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">{body}</svg>\n'


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each measure's median over the runs; for ``fired``, the fewest (every run must fire them all)."""
    return {key: (min if key == "fired" else statistics.median)(run[key] for run in runs) for key in runs[0]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- children: one measurement each -----------------------------------------------------------


async def triggers_child(kind: str, n: int, url: str, poll: float, handed: bool = True) -> dict[str, Any]:
    """
    N triggers of one kind in one event loop: CPU, memory, requests and firing delay.

    As in Airflow, each task polls the status once before it defers (both peers' sensors do);
    ours hands what it saw to its trigger, the http one cannot. With ``handed=False`` nothing is
    handed over, and each of ours is built from its serialized form, as a triggerer builds it:
    every wait polls from its start, as the peer's does.
    """
    from airflow.providers.http.triggers.http import HttpSensorTrigger

    from airflow_provider_kling.triggers.kling import KlingRequestTrigger
    from airflow_provider_kling.wait import RequestWait

    fired: dict[str, float] = {}
    seen: dict[str, dict[str, Any]] = {}

    async def wait(rid: str) -> None:
        if kind == "kling":
            wait = {"request_id": rid, "poll_interval": poll, "seen": seen.get(rid)}
            trigger: Any = KlingRequestTrigger(RequestWait.from_dict(wait))
            if not handed:
                trigger = KlingRequestTrigger(**trigger.serialize()[1])
        else:
            trigger = HttpSensorTrigger(endpoint=f"_sim/done/{rid}", http_conn_id="bench_http", poke_interval=poll)
        async for _event in trigger.run():
            fired[rid] = time.monotonic()
            break

    # Warm up: one trigger first, so that lazy imports are not counted as per-trigger work.
    await asyncio.gather(*(wait(rid) for rid in await submit_many(url, 1)))
    rids = await submit_many(url, n)
    await sim_json(url, "/_sim/rebase", "POST")  # every generation starts now
    if handed:
        seen.update(await check_many(url, rids))
    calls_before = (await sim_json(url, "/_sim/stats"))["calls"]
    base_rss, cpu0 = rss_mb(), cpu_seconds()
    profile = None
    if os.environ.get("KLING_BENCH_PROFILE"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    await asyncio.gather(*(wait(rid) for rid in rids))
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.environ["KLING_BENCH_PROFILE"])
    cpu = cpu_seconds() - cpu0
    peak = peak_rss_mb()
    timelines = await sim_json(url, "/_sim/requests")
    calls_after = (await sim_json(url, "/_sim/stats"))["calls"]
    delays = [fired[rid] - timelines[rid]["finishes_at"] for rid in rids]
    requests = sum(calls_after.values()) - sum(calls_before.values())
    return {
        "fired": len(fired),
        "cpu_s": cpu,
        "peak_rss_mb": peak,
        "mb_per_trigger": (peak - base_rss) / n,
        "http_requests": requests,
        "p50_delay_s": percentile(delays, 0.5),
        "p99_delay_s": percentile(delays, 0.99),
    }


async def outage_child(n: int, url: str, poll: float, down: float, shared: bool) -> dict[str, Any]:
    """
    N waits on one triggerer's loop, one account, through an outage of ``down`` seconds: the calls
    that reached the API while it was down, each wait's next answered poll once it is back, and
    the loop's CPU over the whole; with the waits sharing the account's health or each alone.
    """
    from airflow_provider_kling.hooks.kling import KlingAsyncHook
    from airflow_provider_kling.triggers.kling import KlingRequestTrigger
    from airflow_provider_kling.wait import RequestWait

    KlingAsyncHook.shares_account_health = shared
    rids = await submit_many(url, n)
    await sim_json(url, "/_sim/rebase", "POST")
    seen = await check_many(url, rids)

    async def wait(rid: str) -> None:
        trigger = KlingRequestTrigger(
            RequestWait.from_dict({"request_id": rid, "poll_interval": poll, "seen": seen[rid]})
        )
        async for _event in trigger.run():
            break

    cpu0 = cpu_seconds()
    waits = asyncio.gather(*(wait(rid) for rid in rids))
    await asyncio.sleep(3 * poll)  # every wait polls at its own pace
    await sim_json(url, "/_sim/outage/down", "POST")
    await asyncio.sleep(down)
    up = await sim_json(url, "/_sim/outage/up", "POST")
    back = time.time()
    attempts, times = up["attempts_while_down"], up["attempt_times"]
    # The calls already on their way when it went down (those of its first second), then the rest.
    onset = sum(1 for at in times if at < times[0] + 1.0) if times else 0
    await waits
    cpu = cpu_seconds() - cpu0
    first = await sim_json(url, f"/_sim/polls_after/{back}")
    recovery = [first[rid] - back for rid in rids if rid in first]
    return {
        "attempts": attempts,
        "onset": onset,
        "recovered": len(recovery),
        "p50_recovery_s": percentile(recovery, 0.5),
        "p99_recovery_s": percentile(recovery, 0.99),
        "cpu_s": cpu,
    }


async def polling_child(url: str, poll: float, cap: float) -> dict[str, Any]:
    """Two triggers on the same compressed generation: fixed interval vs adaptive, side by side."""
    from airflow_provider_kling.triggers.kling import KlingRequestTrigger
    from airflow_provider_kling.wait import RequestWait

    fixed, adaptive = await submit_many(url, 2, {"queue_position": 30})
    await sim_json(url, "/_sim/rebase", "POST")
    fired: dict[str, float] = {}

    async def wait(rid: str, max_poll: float) -> None:
        wait = RequestWait.from_dict({"request_id": rid, "poll_interval": poll, "max_poll_interval": max_poll})
        async for _event in KlingRequestTrigger(wait).run():
            fired[rid] = time.monotonic()

    await asyncio.gather(wait(fixed, poll), wait(adaptive, cap))
    timelines = await sim_json(url, "/_sim/requests")
    return {
        name: {
            "requests": 1 + timelines[rid]["polls"] + timelines[rid]["results"],
            "delay_s": fired[rid] - timelines[rid]["finishes_at"],
        }
        for name, rid in (("fixed", fixed), ("adaptive", adaptive))
    }


def import_child(modules: str) -> dict[str, Any]:
    """Seconds that importing ``modules`` adds over ``airflow.sdk``, in this fresh interpreter."""
    import importlib

    import airflow.sdk  # noqa: F401 - the baseline every DAG file pays

    started = time.perf_counter()
    for module in modules.split(","):
        importlib.import_module(module)
    return {"seconds": time.perf_counter() - started}


def worker_child(mode: str, url: str, scale: float) -> dict[str, Any]:
    """Worker-slot seconds of one generation: deferrable operator vs poke-mode sensor."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
    from airflow_provider_kling.sensors.kling import KlingRequestSensor

    class TI:
        def xcom_push(self, key: str, value: Any) -> None:
            pass

    context: Any = {"ti": TI()}
    if mode == "deferrable":
        operator = KlingTextToVideoOperator(
            task_id="g", prompt="bench", wait_for_completion=True, deferrable=True, poll_interval=1, resume=False
        )
        started = time.perf_counter()
        try:
            operator.execute(context)
        except TaskDeferred as deferred:
            trigger = deferred.trigger
        worker = time.perf_counter() - started

        async def run_trigger() -> Any:
            async for event in trigger.run():
                return event.payload
            return None

        event = asyncio.run(run_trigger())  # the triggerer's part: no worker slot
        started = time.perf_counter()
        operator.execute_complete(context, event)
        worker += time.perf_counter() - started
        return {"worker_s": worker, "simulated_worker_s": worker}
    operator_id = asyncio.run(submit_many(url, 1))[0]
    sensor = KlingRequestSensor(task_id="w", request_id=operator_id, mode="poke", poke_interval=1 / scale)
    started = time.perf_counter()
    sensor.execute(context)
    worker = time.perf_counter() - started
    return {"worker_s": worker, "simulated_worker_s": worker * scale}


def copy_child(url: str, size: int, rounds: int = 3) -> dict[str, Any]:
    """
    Throughput and memory growth of a copy to storage with every check on (what was served, the
    first bytes, FFmpeg's probe, the poster), alternating with curl; medians of the rounds. The
    probe and poster alone are timed on the landed file too, to say what they cost of the copy.
    """
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.media import inspect_video

    rid = asyncio.run(submit_many(url, 1))[0]
    video_url = f"{url}/media/{rid}/video.mp4"
    ours, curl, probe = [], [], []
    with tempfile.TemporaryDirectory(dir=REPO / ".bench") as tmp, KlingHook() as hook:
        before_av = rss_mb()
        import av  # noqa: F401 - FFmpeg's libraries load once per process: not what a copy holds

        base = rss_mb()
        for _ in range(rounds):  # alternate, so that neither side always meets a cold cache or a busy disk
            started = time.perf_counter()
            saved = hook.download_video(video_url, Path(tmp) / "v.mp4", max_bytes=size + 1)
            ours.append(time.perf_counter() - started)
            assert saved.size_bytes == size
            assert saved.facts.video_codec == "h264"  # checked: a playable video landed
            started = time.perf_counter()
            inspect_video(saved.path)
            probe.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(["curl", "-sS", "-o", str(Path(tmp) / "curl.mp4"), video_url], check=True)
            curl.append(time.perf_counter() - started)
    return {
        "mb_per_s": size / statistics.median(ours) / 1e6,
        "curl_mb_per_s": size / statistics.median(curl) / 1e6,
        "rss_growth_mb": peak_rss_mb() - base,
        "av_mb": base - before_av,
        "probe_s": statistics.median(probe),
        "copy_s": statistics.median(ours),
    }


def timed_process(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process, read from its own resource usage."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return wall, usage.ru_maxrss / 1024


def cli_rows(url: str, runs: int) -> dict[str, float]:
    """``kling status`` configured by the environment beside the same call by curl, alternating; medians."""
    rid = asyncio.run(submit_many(url, 1))[0]
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env |= {"RUNCOMFY_API_TOKEN": TOKEN, "RUNCOMFY_BASE_URL": url}
    kling = [str(Path(PY).parent / "kling"), "status", rid]
    curl = ["curl", "-sS", "-H", f"Authorization: Bearer {TOKEN}", f"{url}/v1/requests/{rid}/status"]
    ours, peer = [], []
    for _ in range(runs):
        ours.append(timed_process(kling, env))
        peer.append(timed_process(curl, env))  # its RSS is the forking parent's: not a figure of curl's
    return {
        "wall_s": statistics.median(wall for wall, _ in ours),
        "rss_mb": statistics.median(rss for _, rss in ours),
        "curl_wall_s": statistics.median(wall for wall, _ in peer),
    }


def run_child(argv: list[str]) -> None:
    what, *args = argv
    if what == "triggers":
        handed = len(args) < 5 or args[4] == "handed"
        result = asyncio.run(triggers_child(args[0], int(args[1]), args[2], float(args[3]), handed))
    elif what == "outage":
        result = asyncio.run(outage_child(int(args[0]), args[1], float(args[2]), float(args[3]), args[4] == "shared"))
    elif what == "polling":
        result = asyncio.run(polling_child(args[0], float(args[1]), float(args[2])))
    elif what == "import":
        result = import_child(args[0])
    elif what == "worker":
        result = worker_child(args[0], args[1], float(args[2]))
    else:
        result = copy_child(args[0], int(args[1]))
    print(json.dumps(result))


# --- the run ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", choices=["ui", "film"], help="only these rows; the others stay as last measured")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        run_child(options.child)
        return
    (REPO / ".bench").mkdir(exist_ok=True)
    if options.only == "ui":
        write_rows(ui_rows(options.quick), options.quick, replace_only="UI")
        return
    if options.only == "film":
        write_rows(film_rows(options.quick), options.quick, replace_only="film")
        return
    rows: list[tuple[str, str, str, str]] = []  # (measure, ours, peer, target)

    sizes = [200] if options.quick else [1000, 5000]
    rounds = 1 if options.quick else 3
    bars: list[tuple[str, float, float]] = []  # (label, ours, peer) CPU seconds, for the plot
    poll = 1.0
    with simulator("--queue-seconds", "1.0", "--run-seconds", "1.5") as url:
        env = connection_env(url)
        for n in sizes:
            by_kind: dict[str, list[dict[str, Any]]] = {"kling": [], "http": []}
            for _ in range(rounds):  # alternate, so that a busy moment of the machine hits both sides
                for kind, results in by_kind.items():
                    results.append(child("triggers", kind, str(n), url, str(poll), env=env))
            ours, peer = medians(by_kind["kling"]), medians(by_kind["http"])
            bars.append((f"{n} triggers", ours["cpu_s"], peer["cpu_s"]))
            ratio = ours["cpu_s"] / peer["cpu_s"]
            rows += [
                (f"{n} triggers: fired", f"{ours['fired']}", f"{peer['fired']}", f"all {n}"),
                (f"{n} triggers: CPU seconds", f"{ours['cpu_s']:.2f} ({ratio:.2f}x)", f"{peer['cpu_s']:.2f}", "<= 0.4x"),
                (f"{n} triggers: peak RSS MB", f"{ours['peak_rss_mb']:.0f}", f"{peer['peak_rss_mb']:.0f}", ""),
                (f"{n} triggers: MB per extra trigger", f"{ours['mb_per_trigger']:.3f}", f"{peer['mb_per_trigger']:.3f}", ""),
                (f"{n} triggers: HTTP requests", f"{ours['http_requests']}", f"{peer['http_requests']}", ""),
                (f"{n} triggers: p50 / p99 fire delay s", f"{ours['p50_delay_s']:.2f} / {ours['p99_delay_s']:.2f}",
                 f"{peer['p50_delay_s']:.2f} / {peer['p99_delay_s']:.2f}", f"p99 <= {poll + 0.5}"),
            ]  # fmt: skip

    # 1,000 waits with nothing handed over by a task, ours built from their serialized form: the
    # shape of an independent bench of triggers alone. Each request renders 1.5 s and both sides
    # poll every second: ours on schedule (status, result, result: 3 requests), the peer sleeping a
    # second after each answer, so it falls behind and sees most done at its 2nd poll.
    n_fresh = 200 if options.quick else 1000
    with simulator("--queue-seconds", "0", "--run-seconds", "1.5") as url:
        env = connection_env(url)
        fresh: dict[str, list[dict[str, Any]]] = {"kling": [], "http": []}
        for _ in range(rounds):
            for kind, results in fresh.items():
                results.append(child("triggers", kind, str(n_fresh), url, str(poll), "fresh", env=env))
        ours, peer = medians(fresh["kling"]), medians(fresh["http"])
        ratio = ours["cpu_s"] / peer["cpu_s"]
        ours_each, peer_each = (1e6 * side["cpu_s"] / side["http_requests"] for side in (ours, peer))
        rows += [
            (f"{n_fresh} waits, nothing handed over: CPU seconds", f"{ours['cpu_s']:.2f} ({ratio:.2f}x)",
             f"{peer['cpu_s']:.2f}", "<= 0.25x"),
            ("  HTTP requests; CPU us per request", f"{ours['http_requests']}; {ours_each:.0f} ({ours_each / peer_each:.2f}x)",
             f"{peer['http_requests']}; {peer_each:.0f}", ""),
        ]  # fmt: skip

    # One account's waits through an outage: shared health beside each wait alone (the behaviour
    # before), in one run. The requests stay queued past the outage, then finish.
    n_down, down = (200, 10.0) if options.quick else (5000, 60.0)
    with simulator("--queue-seconds", str(down + 15), "--run-seconds", "2") as url:
        env = connection_env(url)
        shared = child("outage", str(n_down), url, "5", str(down), "shared", env=env)
    with simulator("--queue-seconds", str(down + 15), "--run-seconds", "2") as url:
        alone = child("outage", str(n_down), url, "5", str(down), "alone", env=connection_env(url))
    steady = (shared["attempts"] - shared["onset"]) / ((down - 1.0) / 5.0)
    rows += [
        (f"{n_down} waits, {down:.0f}-s outage: calls that reached the API",
         f"{shared['attempts']} shared: {shared['onset']} in its first second (on their way when it went down), "
         f"then {steady:.1f} per 5-s interval", f"{alone['attempts']} each wait alone", "<= 2 per interval"),
        ("  API back -> each wait's next answered poll, p50 / p99 s",
         f"{shared['p50_recovery_s']:.1f} / {shared['p99_recovery_s']:.1f} ({shared['recovered']} waits)",
         f"{alone['p50_recovery_s']:.1f} / {alone['p99_recovery_s']:.1f} ({alone['recovered']} waits)", "p99 <= 7"),
        ("  the loop's CPU seconds through it", f"{shared['cpu_s']:.1f}", f"{alone['cpu_s']:.1f}", ""),
    ]  # fmt: skip

    # A 5-minute generation (2 min queued from position 30, 3 min running), 20x compressed: a
    # 1 s poll interval becomes 0.05 s, the 10 s adaptive cap 0.5 s.
    scale = 20
    with simulator("--queue-seconds", str(120 / scale), "--run-seconds", str(180 / scale)) as url:
        polling = child("polling", url, str(1 / scale), str(10 / scale), env=connection_env(url))
    fixed, adaptive = polling["fixed"], polling["adaptive"]
    rows += [
        ("requests per 5-min generation (1 s poll)", f"{adaptive['requests']} adaptive, {fixed['requests']} fixed",
         "302 floor", "below the floor"),
        ("  its detection delay s (adaptive, fixed)", f"{adaptive['delay_s'] * scale:.1f}, {fixed['delay_s'] * scale:.1f}",
         "", "<= 10 s cap"),
    ]  # fmt: skip

    ours_modules = "airflow_provider_kling.operators.kling,airflow_provider_kling.sensors.kling"
    dbt_modules = "airflow.providers.dbt.cloud.operators.dbt,airflow.providers.dbt.cloud.sensors.dbt"
    runs = 3 if options.quick else 7
    ours_import = statistics.median(child("import", ours_modules)["seconds"] for _ in range(runs))
    dbt_import = statistics.median(child("import", dbt_modules)["seconds"] for _ in range(runs))
    rows.append(("DAG-parse import cost s (median)", f"{ours_import:.3f} ({ours_import / dbt_import:.2f}x)",
                 f"{dbt_import:.3f} dbt Cloud", "<= 0.25x"))  # fmt: skip

    # A 10-minute generation, 60x compressed (10 s real): poke holds the slot all along.
    scale = 60
    with simulator("--queue-seconds", str(120 / scale), "--run-seconds", str(480 / scale)) as url:
        env = connection_env(url)
        deferrable = child("worker", "deferrable", url, str(scale), env=env)
        poke = child("worker", "poke", url, str(scale), env=env)
    rows.append(("worker-slot s per 10-min generation", f"{deferrable['simulated_worker_s']:.2f} deferrable",
                 f"{poke['simulated_worker_s']:.0f} poke", "< 5 s"))  # fmt: skip

    size = (50 if options.quick else 500) * 1024 * 1024
    with simulator("--queue-seconds", "0", "--run-seconds", "0", "--video-size", str(size)) as url:
        copy = child("copy", url, str(size), env=connection_env(url))
    rows += [
        (f"copy {size >> 20} MB: MB/s", f"{copy['mb_per_s']:.0f} ({copy['mb_per_s'] / copy['curl_mb_per_s']:.2f}x)",
         f"{copy['curl_mb_per_s']:.0f} curl", ">= 0.8x"),
        (f"copy {size >> 20} MB: memory growth MB", f"{copy['rss_growth_mb']:.1f}", "", "< 30"),
        ("  PyAV's FFmpeg libraries, loaded once per process: MB", f"{copy['av_mb']:.0f}", "", ""),
        (f"copy {size >> 20} MB: of which probe and poster s", f"{copy['probe_s']:.3f} of {copy['copy_s']:.2f}", "", ""),
    ]  # fmt: skip

    with simulator("--queue-seconds", "60", "--run-seconds", "60") as url:
        cli = cli_rows(url, 3 if options.quick else 5)
    rows += [
        ("`kling status` (env token): wall s", f"{cli['wall_s']:.3f}", f"{cli['curl_wall_s']:.3f} curl", "<= 0.5"),
        ("`kling status` (env token): peak RSS MB", f"{cli['rss_mb']:.0f}", "", ""),
    ]

    rows += ui_rows(options.quick)
    rows += film_rows(options.quick)
    write_rows(rows, options.quick, bars=bars)


def ui_rows(quick: bool) -> list[tuple[str, str, str, str]]:
    """The UI plugin's rows (benchmarks/ui_bench.py): the Kling page, the video, the first frame."""
    sys.path.insert(0, str(REPO))
    from benchmarks.ui_bench import ui_rows as measure

    return measure(quick, simulator, connection_env)


def film_rows(quick: bool) -> list[tuple[str, str, str, str]]:
    """The film rows (benchmarks/film_bench.py): stitching beside FFmpeg, the re-encode, the last frame."""
    sys.path.insert(0, str(REPO))
    from benchmarks.film_bench import film_rows as measure

    return measure(quick)


def write_rows(
    rows: list[tuple[str, str, str, str]],
    quick: bool,
    *,
    bars: list[tuple[str, float, float]] | None = None,
    replace_only: str | None = None,
) -> None:
    """Print the table; a full run rewrites docs/performance.md's, ``replace_only`` replaces its own rows there."""
    header = ("measure", "airflow-provider-kling", "peer", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    print("\n".join(lines))
    if quick:
        return
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"
    page = REPO / "docs" / "performance.md"
    head, _, rest = page.read_text().partition(RESULTS_START)
    kept, _, tail = rest.partition(RESULTS_END)
    if replace_only:  # these rows anew, where they stand (or at the end); the others as last measured
        old = [line for line in kept.splitlines() if line.startswith("| ") and not line.startswith("| measure")]
        fresh = {row[0].strip(): row for row in rows}  # a table's cells lose their indent
        merged = [tuple(cell.strip() for cell in line.strip("|").split(" | ")) for line in old]
        merged = [fresh.pop(row[0], row) for row in merged if len(row) == 4]
        rows = [*merged, *fresh.values()]  # type: ignore[list-item]
        notes = (
            kept.split("Measured by `make bench` on ", 1)[1].split("; peers side by side", 1)[0]
            if "Measured by" in kept
            else ""
        )
        others = [part for part in notes.split("; ")[1:] if not part.startswith(f"the {replace_only} rows")]
        mine = f"the {replace_only} rows on {date.today().isoformat()} (`make bench BENCH_ARGS=--only={replace_only.lower()}`)"
        note = "".join(f"; {part}" for part in [*others, mine])
        when = kept.split("Measured by `make bench` on ", 1)[1].split(" (", 1)[0] if "Measured by" in kept else "?"
    else:
        note, when = "", date.today().isoformat()
    table = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * 4] + ["| " + " | ".join(row) + " |" for row in rows]
    )
    measured = (
        f"Measured by `make bench` on {when} ({machine}){note}; peers side by side "
        f"in the same run. See `benchmarks/bench.py` for how.\n\n{table}\n"
    )
    page.write_text(f"{head}{RESULTS_START}\n{measured}{RESULTS_END}{tail}")
    if bars:
        (REPO / "docs" / "triggerer-cpu.svg").write_text(bar_chart(bars, "Triggerer CPU seconds"))


if __name__ == "__main__":
    main()
