"""
A try that fails after the operator returned (Airflow's own XCom push, or its success report, as
its database fails over) is retried: the retry uses the video the try delivered and pays for
nothing. The full cluster run of 2026-12-07 found a second paid submit that way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.airflow_processes import HAS_TASK_STATE_STORE
from tests.conftest import states, xcoms

DAGS = Path(__file__).parent / "dag_files"

NEEDS_TASK_STATE_STORE = pytest.mark.skipif(
    not HAS_TASK_STATE_STORE,
    reason="a finished task keeps its record in the task state store (Airflow 3.3+); a Variable is dropped",
)


@NEEDS_TASK_STATE_STORE
@pytest.mark.parametrize("layout", ["polling", "deferrable", "taskflow"])
def test_a_retry_after_airflows_bookkeeping_failed_pays_for_nothing_and_stores_nothing_again(
    run_dag, sim, tmp_path, capfd, layout
):
    destination = tmp_path / "teaser.mp4"  # no {request_id}, no overwrite: storing twice would be refused
    dag_run = run_dag(
        f"kling_bookkeeping_{layout}",
        folder=DAGS,
        file="kling_bookkeeping_dags.py",
        run_conf={"destination": str(destination)},
    )
    assert states(dag_run) == {"generate": "success"}
    (ti,) = dag_run.get_task_instances()
    assert ti.try_number == 2  # the first try failed after its work was done
    assert sim.calls["submit"] == 1  # the retry paid for nothing
    assert sim.calls["video"] == 1  # and did not fetch the video again: it was still where it was stored
    result = xcoms(dag_run)[("generate", "result" if layout != "taskflow" else "return_value")]
    assert result["stored"]["uri"] == destination.as_uri()
    out = capfd.readouterr().out
    assert "delivered Kling request" in out
    assert "using it again, not paying for another" in out
    assert f"The video an earlier try stored is still at {destination.as_uri()}: not stored again" in out
