"""
The Airflow UI, for real: an ``airflow api-server`` on 127.0.0.1 sharing the tests' metadata
database, DAG runs made by ``airflow dags test`` in a second process, and the OS's headless
Chromium (Debian's ``chromium`` package) driven by Playwright. Nothing is downloaded.

Screenshots go to a temporary folder, or to ``$KLING_SCREENSHOTS`` when set (``make screenshots``
writes the ones the docs show).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import requests

from tests.conftest import AIRFLOW, REPO, free_port, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from playwright.sync_api import Browser, Page

from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

#: Every UI test carries these: real processes, and Airflow 3's UI (the review needs 3.1+).
UI_TEST = [
    pytest.mark.integration,
    pytest.mark.timeout(600),  # the first one starts the api-server too, on a machine that may be slow
    pytest.mark.skipif(
        not AIRFLOW_V_3_1_PLUS, reason="the UI tests drive Airflow 3.1+'s UI; `make test` runs them on Airflow 3.3"
    ),
]
#: Chromium as the probe of this workplace starts it: headless, as root, no calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_SECONDS = 120.0


@dataclass
class ApiServer:
    """An ``airflow api-server`` this session started; ``url`` is its base URL."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    http: requests.Session = field(default_factory=requests.Session)

    def get(self, path: str, **params: Any) -> Any:
        answer = self.http.get(f"{self.url}/api/v2{path}", params=params, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def pending_reviews(self, dag_id: str) -> list[dict[str, Any]]:
        """The human-in-the-loop requests of ``dag_id`` waiting for an answer."""
        details = self.get("/dags/~/dagRuns/~/hitlDetails", dag_id=dag_id, response_received=False)["hitl_details"]
        return [d for d in details if d["task_instance"]["dag_id"] == dag_id]

    def wait_for_review(self, run: DagTestRun, task_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """The review ``task_id`` of ``run`` once it waits for a person (not one a stopped run left)."""

        def find() -> dict[str, Any] | None:
            # Parked, not only asked: an answer that lands while the task is still on its way to
            # awaiting_input finds nothing to resume, and the run waits for ever.
            return next(
                (
                    d
                    for d in self.pending_reviews(run.dag_id)
                    if d["task_instance"]["task_id"] == task_id
                    and d["task_instance"].get("state") == "awaiting_input"
                    and datetime.fromisoformat(d["created_at"].replace("Z", "+00:00")) >= run.started
                ),
                None,
            )

        found: dict[str, Any] = wait_until(f"{task_id} of {run.dag_id} to wait for a person", find, timeout)
        return found

    def respond(self, review: dict[str, Any], option: str, **params_input: Any) -> dict[str, Any]:
        """Answer a review through the REST API, as the Required actions page does."""
        ti = review["task_instance"]
        answer = self.http.patch(
            f"{self.url}/api/v2/dags/{ti['dag_id']}/dagRuns/{quote(ti['dag_run_id'], safe='')}"
            f"/taskInstances/{ti['task_id']}/{ti['map_index']}/hitlDetails",
            json={"chosen_options": [option], "params_input": params_input},
            timeout=30,
        )
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def page_of(self, ti: dict[str, Any], tab: str = "") -> str:
        """The UI address of a task instance (``tab``: ``required_actions``, ``details``...)."""
        path = f"/dags/{ti['dag_id']}/runs/{quote(ti['dag_run_id'], safe='')}/tasks/{ti['task_id']}"
        return f"{self.url}{path}/{tab}" if tab else f"{self.url}{path}"


def api_server_env(url: str, port: int) -> dict[str, str]:
    return {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # no login page in the way
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",  # the connection list's Test button
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
    }


@contextmanager
def running_api_server(env: Mapping[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``airflow api-server`` on 127.0.0.1:``port`` with ``env``, answering before this yields; stopped after."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def healthy() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until("the api-server to answer", healthy, STARTUP_SECONDS, processes={"the api-server": process}, log=log)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def api_server(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """Airflow's api-server (REST API and UI) on a free loopback port, over the tests' database."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("api-server") / "api-server.log"
    with running_api_server({**os.environ, **api_server_env(url, port)}, port, log) as process:
        yield ApiServer(url, process, log)


def chromium_path() -> str:
    path = os.environ.get("KLING_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail(
            "No Chromium on this machine: the UI tests use the OS's own (Debian: apt-get install chromium "
            "chromium-driver; `make test` installs it when it runs as root), never a downloaded one."
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """
    The OS's headless Chromium, driven by Playwright (which downloads nothing here). Per module:
    Playwright's sync API keeps an event loop running in this thread, and a later ``dag.test()``
    in this process (``asyncio.run``) must not find one.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, screenshots: Path) -> Iterator[Page]:
    """A fresh browser page; when the test fails, a screenshot of it lands in the screenshots folder."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    yield tab
    if getattr(request.node, "failed_call", False):
        tab.screenshot(path=str(screenshots / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.failed_call = True  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("KLING_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class DagTestRun:
    """``airflow dags test`` of an example DAG, in its own process, so this one can drive the UI."""

    dag_id: str
    process: subprocess.Popen[bytes]
    log: Path
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def finish(self, timeout: float = 120.0) -> str:
        """Wait for the run to end; its output. Fails if the run did not succeed."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"`airflow dags test {self.dag_id}` did not end in {timeout:.0f} s\n{self.output()[-3000:]}")
        output = self.output()
        assert self.process.returncode == 0, output[-3000:]
        return output

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def start_dag(
    api_server: ApiServer, sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., DagTestRun]]:
    """Start an example DAG from ``dags/`` with ``airflow dags test`` (deferral included)."""
    runs: list[DagTestRun] = []
    monkeypatch.setenv("KLING_VIDEO_DIR", str(tmp_path / "videos"))
    monkeypatch.setenv("KLING_POLL_INTERVAL", "0.1")
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", api_server.url)

    def start(dag_id: str, conf: dict[str, Any] | None = None, **env: str) -> DagTestRun:
        log = tmp_path / f"{dag_id}.log"
        started = datetime.now(timezone.utc)
        command = [AIRFLOW, "dags", "test", dag_id]
        if conf:
            command += ["--conf", json.dumps(conf)]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        runs.append(DagTestRun(dag_id, process, log, started))
        return runs[-1]

    yield start
    for run in runs:
        run.stop()
