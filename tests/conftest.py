"""
Shared fixtures: a RunComfy simulator on loopback, an isolated Airflow home with its own
metadata database, the ``kling_default`` connection as an environment variable, and a helper
that runs a DAG file with ``dag.test()`` (deferral included).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Airflow reads its home and config when first imported: isolate it before anything imports it.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="kling-tests-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# Airflow's OpenLineage provider is installed for the lineage tests, which switch it on themselves.
os.environ["AIRFLOW__OPENLINEAGE__DISABLED"] = "True"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).parent / "dag_files")
os.environ.pop("AIRFLOW_CONN_KLING_DEFAULT", None)

from airflow_provider_kling.testing.pytest_plugin import SIMULATOR_TOKEN  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_provider_kling.testing import RunComfySimulator

REPO = Path(__file__).resolve().parent.parent
#: The ``airflow`` command of this environment, for tests that run Airflow's own processes.
AIRFLOW = str(Path(sys.executable).parent / "airflow")
TEST_DAGS = Path(__file__).parent / "dag_files"
TOKEN = SIMULATOR_TOKEN
#: Fast retries for tests; the policy itself is the same as in production.
FAST_HOOK = {"retry_delay": 0.01, "max_attempts": 3}
#: The facts of the simulator's video of the default shape (5 s at 16:9, with sound), as FFmpeg reads them.
CHECKED_5S_16_9 = {
    "duration_s": 5.0,
    "width": 320,
    "height": 180,
    "aspect_ratio": "16:9",
    "frame_rate": 24.0,
    "video_codec": "h264",
    "pixel_format": "yuv420p",
    "has_audio": False,
    "audio_codec": None,
    "container": "mov,mp4,m4a,3gp,3g2,mj2",
    "mismatch": [],
}


@pytest.fixture
def sim(kling_simulator: RunComfySimulator) -> RunComfySimulator:
    """The simulator from our own pytest plugin (the one users get), reset, as ``kling_default``."""
    return kling_simulator


@pytest.fixture
def finished(sim: RunComfySimulator) -> Any:
    """A request that has finished with a video: ``(hook, request_id, video_url)``."""
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.testing import Scenario

    sim.script(Scenario(queue_seconds=0, run_seconds=0))
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a red kite"}).request_id
        yield hook, rid, hook.get_result(rid).output.video_url


@pytest.fixture
def env_token(sim: RunComfySimulator, monkeypatch: pytest.MonkeyPatch) -> RunComfySimulator:
    """The token and base URL in the environment, as a user of ``kling`` outside Airflow sets them."""
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", TOKEN)
    monkeypatch.setenv("RUNCOMFY_BASE_URL", sim.url)
    return sim


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated metadata database in the isolated Airflow home (once per session)."""
    subprocess.run(
        [AIRFLOW, "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return _AIRFLOW_HOME


@pytest.fixture
def run_dag(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run one DAG of a DAG file with ``dag.test()``; return the DagRun."""

    def run(dag_id: str, *, folder: Path = TEST_DAGS, file: str | None = None, **test_kwargs: Any) -> Any:
        from airflow import settings

        # The dags-folder bundle reads settings.DAGS_FOLDER, which Airflow fixes at import.
        monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(folder))
        monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))
        from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

        from airflow_provider_kling.testing import load_dags

        dag = load_dags(folder / (file or "kling_test_dags.py"))[dag_id]
        if not AIRFLOW_V_3_0_PLUS:
            dag.sync_to_db()  # Airflow 2's dag.test() records asset (dataset) events only for known assets
        return dag.test(**test_kwargs)

    return run


def xcoms(dag_run: Any) -> dict[tuple[str, str], Any]:
    """Every XCom of a DAG run, keyed by (task_id, key)."""
    from airflow.utils.session import create_session

    try:
        from airflow.models.xcom import XComModel

        value = XComModel.deserialize_value
    except ImportError:  # Airflow 2 deserializes each value as it loads the row
        from airflow.models.xcom import BaseXCom as XComModel

        def value(row: Any) -> Any:
            return row.value

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        return {(row.task_id, row.key): value(row) for row in rows}


def lineage_env(events_file: Path, sim: RunComfySimulator, dags: Path, **more: str) -> dict[str, str]:
    """The environment of an ``airflow dags test`` whose OpenLineage events go to ``events_file``."""
    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    return {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "kling-tests",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW_CONN_KLING_DEFAULT": sim.connection_json(),
        **more,
    }


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    *,
    processes: Mapping[str, subprocess.Popen[bytes]] | None = None,
    log: Path | None = None,
) -> Any:
    """
    Poll ``check`` until it returns something truthy, and return that. Fail naming ``what`` (with
    ``log``'s tail) on timeout, or at once when one of ``processes`` has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for name, process in (processes or {}).items():
            assert process.poll() is None, f"{name} exited early with {process.returncode}"
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            pytest.fail(f"Timed out after {timeout:.0f} s waiting for {what}\n{tail}")
        time.sleep(0.25)


class VirtualClock:
    """
    A clock of the test's own for the wait loops (``follow``): time moves only when they sleep, so a
    deadline or a queue limit is met at the poll the plan says, however slow the machine is. The
    simulator keeps real time: a request queued for 30 real seconds stays queued through it.
    """

    def __init__(self) -> None:
        self.started = self.now = time.time()

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)

    async def pause(self, seconds: float) -> None:
        import asyncio

        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)  # the loop's other work goes on

    @property
    def elapsed(self) -> float:
        return self.now - self.started


@pytest.fixture
def virtual_clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """The wait loops on a :class:`VirtualClock`; a sync hook waits on it when made with ``sleep=clock.sleep``."""
    from airflow_provider_kling import follow

    clock = VirtualClock()
    monkeypatch.setattr(follow, "time", clock)
    monkeypatch.setattr(follow, "_pause", clock.pause)
    return clock


@pytest.fixture(scope="session")
def s3() -> Any:
    """
    One S3 API on loopback (moto's server) for the whole session, holding ``s3://brand/key-visual.png``
    and a ``films`` bucket:
    Airflow keeps each connection's filesystem for the life of the process, endpoint included, so
    a server per test module would leave the next module's tasks talking to a closed port.
    """
    pytest.importorskip("moto", reason="moto's S3 server is a test tool of the dev group")
    from airflow_provider_kling.testing.media import sample_image
    from airflow_provider_kling.testing.s3 import S3Server

    with S3Server() as server:
        server.put("brand", "key-visual.png", sample_image())
        server.put("films", ".keep", b"", content_type="text/plain")  # where the film tests store their shots
        yield server


@pytest.fixture
def bucket(s3: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``aws_test``, the connection to the session's S3 on loopback (its ``brand`` and ``films`` buckets)."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_TEST", s3.connection_json())
    return s3
