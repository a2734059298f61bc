"""
The UI plugin's rows of ``make bench``: the Kling page's first page of takes over 10,000 takes
(SQLite and PostgreSQL), a stored video through the API server beside nginx serving the same file,
and the time Chromium takes from opening a take to its first frame on screen (a 10-s 1080p take).

Each metadata DB gets one real take from ``airflow dags test`` on the simulator, copied to 10,000
(run, task instance and XComs, as Airflow writes them), behind a real ``airflow api-server``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAG_ID = "kling_ui_bench"
DAG_FILE = f'''
from datetime import datetime
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    KlingTextToVideoOperator(
        task_id="generate", prompt="A lighthouse beam sweeping across a stormy sea at night", duration=10,
        wait_for_completion=True, deferrable=True, poll_interval=0.2, include_cost=True,
        destination="{{videos}}/{{{{request_id}}}}.mp4",
    )
'''
#: nginx as a plain file server: what a user would put in front of a folder of videos.
NGINX_CONF = """
{user}daemon off; worker_processes 1; pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off; sendfile on; tcp_nopush on; types {{ video/mp4 mp4; }}
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
  server {{ listen 127.0.0.1:{port}; root {videos}; }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


@contextmanager
def api_server(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True", "AIRFLOW__API__BASE_URL": url}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        for _ in range(600):
            try:
                if requests.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the api-server did not start:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def make_takes(env: dict[str, str], folder: Path, count: int) -> None:
    """Migrate the metadata DB, make one real take, and copy it to ``count`` takes."""
    dags = folder / "dags"
    dags.mkdir(exist_ok=True)
    (dags / "kling_ui_bench.py").write_text(DAG_FILE.format(videos=folder / "videos"))
    airflow(env, "db", "migrate")
    airflow(env, "dags", "test", DAG_ID)
    subprocess.run([sys.executable, __file__, "clone", str(count)], env=env, check=True)


def clone(count: int) -> None:
    """(In the DB's environment.) Copy the one take to ``count``: runs a minute apart, one in 20 failed."""
    import uuid
    from datetime import timedelta

    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import insert, select

    settings.configure_orm()
    engine = settings.engine
    runs, tis, xcoms = DagRun.__table__, TaskInstance.__table__, XComModel.__table__  # Airflow's own column types
    with engine.begin() as conn:
        run = dict(conn.execute(select(runs)).mappings().one())
        ti = dict(conn.execute(select(tis)).mappings().one())
        values = [dict(row) for row in conn.execute(select(xcoms)).mappings()]
        for start in range(1, count, 1000):
            batch = range(start, min(start + 1000, count))
            shift = {i: timedelta(minutes=i) for i in batch}
            new_runs = [
                {**{k: v for k, v in run.items() if k != "id"}, "run_id": f"bench__{i:06d}", "logical_date": None,
                 "run_after": run["run_after"] - shift[i], "start_date": run["start_date"] - shift[i]}
                for i in batch
            ]  # fmt: skip
            conn.execute(insert(runs), new_runs)
            made = select(runs.c.run_id, runs.c.id).where(runs.c.run_id.in_([r["run_id"] for r in new_runs]))
            ids = {run_id: id_ for run_id, id_ in conn.execute(made)}
            conn.execute(
                insert(tis),
                [
                    {**ti, "id": uuid.uuid4(), "run_id": f"bench__{i:06d}", "state": "failed" if i % 20 == 0 else ti["state"],
                     "start_date": ti["start_date"] - shift[i], "end_date": ti["end_date"] - shift[i]}
                    for i in batch
                ],
            )  # fmt: skip
            conn.execute(
                insert(xcoms),
                [
                    {**x, "dag_run_id": ids[f"bench__{i:06d}"], "run_id": f"bench__{i:06d}", "timestamp": x["timestamp"] - shift[i]}
                    for i in batch
                    for x in values
                ],
            )  # fmt: skip


def timed_gets(url: str, path: str, rounds: int) -> list[float]:
    http = requests.Session()
    http.get(url + path, timeout=60).raise_for_status()  # warm: the first answer loads the routes
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        answer = http.get(url + path, timeout=60)
        seconds.append(time.perf_counter() - started)
        answer.raise_for_status()
    return seconds


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def grid(env: dict[str, str], folder: Path, count: int, rounds: int) -> dict[str, Any]:
    make_takes(env, folder, count)
    with api_server(env, folder / "api-server.log") as url:
        first = timed_gets(url, "/kling/api/takes", rounds)
        failed = timed_gets(url, "/kling/api/takes?state=failed", rounds)
        total = len(requests.get(url + "/kling/api/takes?limit=200", timeout=60).json()["takes"])
    return {"p50": statistics.median(first), "p95": p95(first), "failed_p95": p95(failed), "page": total}


def throughput(url: str, nginx: str, name: str, rounds: int) -> tuple[float, float]:
    """Median MB/s of a whole GET of the stored video: through the API server, then nginx, alternating."""
    ours, theirs = [], []
    for _ in range(rounds):
        for side, target in ((ours, url), (theirs, f"{nginx}/{name}")):
            started = time.perf_counter()
            size = 0
            with requests.get(target, stream=True, timeout=120) as answer:
                answer.raise_for_status()
                for chunk in answer.iter_content(1024 * 1024):
                    size += len(chunk)
            side.append(size / 1e6 / (time.perf_counter() - started))
    return statistics.median(ours), statistics.median(theirs)


@contextmanager
def nginx(videos: Path) -> Iterator[str]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    root = Path(tempfile.mkdtemp(prefix="kling-nginx-"))
    (root / "tmp").mkdir()
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""  # its worker reads the bench's private temporary folder
    (root / "nginx.conf").write_text(NGINX_CONF.format(user=user, root=root, port=port, videos=videos))
    process = subprocess.Popen([binary, "-c", str(root / "nginx.conf"), "-p", str(root)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


FIRST_FRAME = (
    "() => { const v = document.querySelector('#take-video'); return v && v.readyState >= 2 && v.videoWidth > 0; }"
)


def _take_frame(page: Any) -> Any:
    while True:
        frame = next((f for f in page.frames[1:] if "/kling/ui/take" in f.url), None)
        if frame is not None:
            return frame
        page.wait_for_timeout(5)


def first_frame(url: str, take_path: str, rounds: int) -> dict[str, list[float]]:
    """
    Seconds to the take's first frame decoded on screen, in Chromium: from a click on the task's
    *Kling take* tab in Airflow's UI (``tab``), and from opening the tab's address in a new browser
    profile (``cold``: Airflow's UI itself loads first, uncached).
    """
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]  # fmt: skip
    task_page = take_path.rsplit("/plugin/", 1)[0]
    found: dict[str, list[float]] = {"tab": [], "cold": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "chromium", args=args)
        for _ in range(rounds):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            started = time.perf_counter()
            page.goto(url + take_path)
            _take_frame(page).wait_for_function(FIRST_FRAME, polling=5, timeout=60_000)
            found["cold"].append(time.perf_counter() - started)
            page.goto(url + task_page)  # the task's page, its logs showing; then a click on the tab
            tab = page.get_by_role("tab", name="Kling take").or_(page.get_by_role("link", name="Kling take")).first
            tab.wait_for()
            started = time.perf_counter()
            tab.click()
            _take_frame(page).wait_for_function(FIRST_FRAME, polling=5, timeout=60_000)
            found["tab"].append(time.perf_counter() - started)
            context.close()
        browser.close()
    return found


def ui_rows(quick: bool, simulator: Any, connection_env: Any) -> list[tuple[str, str, str, str]]:
    """The UI rows: (measure, ours, peer, target)."""
    from tests.postgres_server import postgres_server

    count, rounds = (1000, 20) if quick else (10_000, 60)
    rows = []
    with simulator("--queue-seconds", "0.2", "--run-seconds", "0.2", "--full-hd") as url:
        base = {**os.environ, **connection_env(url), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        with tempfile.TemporaryDirectory(prefix="kling-ui-bench-") as tmp:
            folder = Path(tmp) / "sqlite"
            folder.mkdir()
            env = {**base, "AIRFLOW_HOME": str(folder / "home"), "AIRFLOW__CORE__DAGS_FOLDER": str(folder / "dags")}
            sqlite = grid(env, folder, count, rounds)
            with postgres_server("airflow") as pg:
                pg_folder = Path(tmp) / "postgres"
                pg_folder.mkdir()
                pg_env = {
                    **base,
                    "AIRFLOW_HOME": str(pg_folder / "home"),
                    "AIRFLOW__CORE__DAGS_FOLDER": str(pg_folder / "dags"),
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://kling@127.0.0.1:{pg.port}/airflow",
                    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                }
                postgres = grid(pg_env, pg_folder, count, rounds)
            rows += [
                (f"Kling page, first page of takes over {count:,}: p50 / p95 ms, SQLite",
                 f"{sqlite['p50'] * 1e3:.0f} / {sqlite['p95'] * 1e3:.0f} (48 takes a page)", "", "p95 <= 300"),
                ("  the same on PostgreSQL", f"{postgres['p50'] * 1e3:.0f} / {postgres['p95'] * 1e3:.0f}", "", "p95 <= 300"),
                ("  filtered to failed takes (1 in 20): p95 ms, SQLite / PostgreSQL",
                 f"{sqlite['failed_p95'] * 1e3:.0f} / {postgres['failed_p95'] * 1e3:.0f}", "", ""),
            ]  # fmt: skip
            rows += media_rows(env, folder, rounds=3 if quick else 5)
    return rows


def media_rows(env: dict[str, str], folder: Path, rounds: int) -> list[tuple[str, str, str, str]]:
    """The stored video through the API server beside nginx, and Chromium's first frame of the take."""
    videos = folder / "videos"
    (take,) = [p for p in videos.glob("*.mp4")]
    big = videos / "big.mp4"
    with big.open("wb") as out:  # a 512 MB file, for throughput: the take's bytes, repeated
        chunk = take.read_bytes()
        while out.tell() < 512 * 1024 * 1024:
            out.write(chunk)
    with api_server(env, folder / "api-server-media.log") as url:
        takes = requests.get(url + "/kling/api/takes?limit=1", timeout=60).json()["takes"]
        newest = takes[0]
        tab = newest["links"]["ui"]
        video = url + newest["links"]["video"]
        size = take.stat().st_size
        take.rename(videos / "take.mp4.keep")
        big.rename(take)  # the newest take's stored file is now the big one
        try:
            with nginx(videos) as peer:
                ours, theirs = throughput(video, peer, take.name, rounds)
        finally:
            take.rename(big)
            (videos / "take.mp4.keep").rename(take)
        frames = first_frame(url, tab, rounds)
    tabbed, cold = frames["tab"], frames["cold"]
    return [
        ("stored video through the API server: MB/s (512 MB, local store)", f"{ours:.0f} ({ours / theirs:.2f}x)",
         f"{theirs:.0f} nginx", ">= 0.5x"),
        (f"Chromium: click a task's Kling take tab -> the take's first frame, s (10-s 1080p, {size / 1e6:.0f} MB), "
         "median / max", f"{statistics.median(tabbed):.2f} / {max(tabbed):.2f}", "", "<= 1.5"),
        ("  the same from the tab's address in a new browser profile (Airflow's UI loads first, uncached)",
         f"{statistics.median(cold):.2f} / {max(cold):.2f}", "", ""),
    ]  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["clone"]:
        clone(int(sys.argv[2]))
    else:
        sys.exit("usage: ui_bench.py clone COUNT (run by benchmarks/bench.py)")
