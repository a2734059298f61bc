"""
Pytest fixtures for testing DAGs that use Kling, offline (registered as the ``kling`` plugin).

Installed with the package, so in a user's test suite::

    def test_my_dag_survives_a_failed_generation(kling_simulator):
        kling_simulator.script(Scenario(outcome="failed", error="content policy"))
        dag_run = my_dag.test()
        assert kling_simulator.calls["submit"] == 1

``kling_simulator`` is the simulator, reset for each test, with the ``kling_default`` connection
(``AIRFLOW_CONN_KLING_DEFAULT``) pointing at it; requests queue and run for 0.2 s each. Loading
the plugin loads nothing heavy: the simulator's server starts with the first test that asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_kling.testing.simulator import RunComfySimulator

#: The token the test simulator accepts; distinctive, so tests can scan output for it.
SIMULATOR_TOKEN = "sim-token-kling-tests-not-a-real-secret-9f1c"
#: Queue and run time of a simulated request in tests, in seconds.
TEST_PHASE_SECONDS = 0.2


@pytest.fixture(scope="session")
def kling_simulator_server() -> Iterator[RunComfySimulator]:
    """One simulator on 127.0.0.1 for the whole test session."""
    from airflow_provider_kling.testing.simulator import RunComfySimulator  # aiohttp.web: only when used

    with RunComfySimulator(
        token=SIMULATOR_TOKEN, queue_seconds=TEST_PHASE_SECONDS, run_seconds=TEST_PHASE_SECONDS
    ) as server:
        yield server


@pytest.fixture
def kling_simulator(
    kling_simulator_server: RunComfySimulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunComfySimulator]:
    """
    The simulator, reset, with the ``kling_default`` connection pointing at it. A fault the test
    injected that no call met fails the test, naming it: a test of a fault that never fired shows
    nothing about it.
    """
    kling_simulator_server.reset()
    kling_simulator_server.queue_seconds = TEST_PHASE_SECONDS
    kling_simulator_server.run_seconds = TEST_PHASE_SECONDS
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", kling_simulator_server.connection_json())
    yield kling_simulator_server
    unused = kling_simulator_server.unused_faults()
    kling_simulator_server.reset()
    if unused:
        pytest.fail(f"Faults injected that no call met (the test shows nothing about them): {'; '.join(unused)}")
