"""
Where the worker run of a generating task spends its time: the provider's own phases, timed, and
what Airflow spent in the task process before ``execute`` began.

The run that pays for a generation (the operator's ``execute``, up to its deferral) is split into:

- ``imports``: the provider's modules a run needs and a DAG parse does not load (HTTP, models...);
- ``connection``: reading the ``kling`` connection;
- ``checks``: the input validated, the destination and images checked, the budget's reservation;
- ``submit``: the paid POST;
- ``record``: the request's record (the task state store or a Variable) and the take's XComs;
- ``deferral``: the status check before deferring, and the trigger handed over.

Each is a timer ``kling.worker_run.<phase>`` through Airflow's ``Stats`` (from a run that paid),
with ``ours`` (their sum)
and ``before_execute`` (from the task process's start to ``execute``: Airflow's task runner, the DAG
file parsed, the task instance's context fetched), and one log line. The rest of the worker slot
(the supervisor's fork before, the deferral's report and the process's exit after) is Airflow's too:
``make cluster`` subtracts ours from each run's slot seconds.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

PHASES = ("imports", "connection", "checks", "submit", "record", "deferral")
#: The modules a paying run needs beyond what a DAG parse loaded.
RUN_MODULES = (
    "airflow_provider_kling.hooks.kling",
    "airflow_provider_kling.models",
    "airflow_provider_kling.resume",
    "airflow_provider_kling.lineage",
    "airflow_provider_kling.media",
    "airflow_provider_kling.take",
    "airflow_provider_kling.task_wait",
    "airflow_provider_kling.triggers.kling",
)


class WorkerRun:
    """The provider's phases of one worker run, timed (``perf_counter``)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.before_execute = _since_process_start()
        self._stack: list[tuple[str, float]] = []  # the phases open, innermost last, each with when it (re)started

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time ``name``; a phase opened inside another pauses the outer one (its time is its own)."""
        now = time.perf_counter()
        if self._stack:
            outer, since = self._stack[-1]
            self.seconds[outer] += now - since
        self._stack.append((name, now))
        try:
            yield
        finally:
            now = time.perf_counter()
            _, since = self._stack.pop()
            self.seconds[name] += now - since
            if self._stack:
                self._stack[-1] = (self._stack[-1][0], now)

    @property
    def ours(self) -> float:
        return sum(self.seconds.values())

    def report(self, log: Any, spend: Any) -> None:
        """One log line, and the timers ``kling.worker_run.*``."""
        parts = ", ".join(f"{name} {seconds:.3f}" for name, seconds in self.seconds.items())
        before = f"{self.before_execute:.2f} s" if self.before_execute is not None else "unknown"
        log.info("Kling worker run: ours %.3f s (%s); in the task process before execute: %s", self.ours, parts, before)
        if not self.seconds["submit"]:
            return  # the timers describe the run that pays; one that resumed or was refused says it in the log
        for name, seconds in (*self.seconds.items(), ("ours", self.ours)):
            spend.timing(f"worker_run.{name}", seconds)
        if self.before_execute is not None:
            spend.timing("worker_run.before_execute", self.before_execute)


_CURRENT: WorkerRun | None = None


def begin() -> WorkerRun:
    """A new run's clock, the one :func:`phase` times into."""
    global _CURRENT
    _CURRENT = WorkerRun()
    return _CURRENT


def end() -> None:
    global _CURRENT
    _CURRENT = None


@contextmanager
def timed(log: Any, spend: Callable[[], Any]) -> Iterator[WorkerRun]:
    """Time a run (:func:`begin`), and report it however it ends (a deferral raises): never failing the task."""
    run = begin()
    try:
        yield run
    finally:
        end()
        try:
            run.report(log, spend())
        except Exception as err:  # noqa: BLE001 - a figure, never a reason to fail the task
            log.debug("Could not report the worker run's phases: %s", err)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time ``name`` in the current run, if one is being timed."""
    run = _CURRENT
    if run is None:
        yield
        return
    with run.phase(name):
        yield


def load_run_modules() -> None:
    """Import what a paying run needs, timed as ``imports``."""
    import importlib

    with phase("imports"):
        for module in RUN_MODULES:
            importlib.import_module(module)


def _since_process_start() -> float | None:
    """Seconds since this process started (psutil, which Airflow depends on); ``None`` if it cannot say."""
    try:
        import psutil  # type: ignore[import-untyped]  # comes with Airflow

        return max(time.time() - float(psutil.Process().create_time()), 0.0)
    except Exception:  # noqa: BLE001 - a figure for the breakdown, never a reason to fail
        return None
