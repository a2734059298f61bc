"""
One task generates and stores (``destination``), on a worker or ended in the triggerer
(``finish_in_triggerer``), under ``dag.test()``. The real triggerer's one-run path is in
``tests/test_one_run.py``.
"""

from __future__ import annotations

import hashlib

import pytest

from airflow_provider_kling.exceptions import KlingInputError
from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.testing import Fault
from tests.conftest import CHECKED_5S_16_9, TOKEN, states, xcoms

LAYOUTS = ["kling_operator_stores_polling", "kling_operator_stores_deferrable", "kling_operator_ends_in_triggerer"]


@pytest.mark.parametrize("dag_id", LAYOUTS)
def test_the_generating_task_stores_the_video_whole(run_dag, sim, tmp_path, capfd, caplog, dag_id):
    destination = tmp_path / "out" / "teaser.mp4"
    dag_run = run_dag(dag_id, run_conf={"destination": str(destination)})
    assert states(dag_run) == {"generate": "success"}
    values = xcoms(dag_run)
    rid = values[("generate", "return_value")]
    stored = values[("generate", "result")]["stored"]
    assert destination.read_bytes() == sim.video
    assert stored == {
        "uri": destination.as_uri(),
        "size_bytes": len(sim.video),
        "sha256": hashlib.sha256(sim.video).hexdigest(),
        "content_type": "video/mp4",
        **CHECKED_5S_16_9,
        "poster": destination.with_suffix(".jpg").as_uri(),
        "last_frame": destination.with_name("teaser.last.png").as_uri(),
    }
    assert destination.with_suffix(".jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    assert destination.with_name("teaser.last.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = sorted(p.name for p in destination.parent.iterdir())
    assert names == ["teaser.jpg", "teaser.last.png", "teaser.mp4"]  # no partial file
    assert sim.calls["submit"] == 1
    assert sim.calls["video"] == 1
    out = capfd.readouterr().out + caplog.text
    assert f"Stored the video of Kling request {rid}" in out
    assert TOKEN not in out
    ended_in_triggerer = "the task ends here, in the triggerer" in out
    assert ended_in_triggerer == (dag_id == "kling_operator_ends_in_triggerer")


def test_a_failed_store_in_the_triggerer_leaves_it_to_the_worker(run_dag, sim, tmp_path, capfd, caplog):
    destination = tmp_path / "teaser.mp4"
    sim.inject("video", Fault("video", status_code=503))  # the trigger's download fails once
    dag_run = run_dag("kling_operator_ends_in_triggerer", run_conf={"destination": str(destination)})
    assert states(dag_run) == {"generate": "success"}
    out = capfd.readouterr().out + caplog.text
    assert "the task resumes on a worker to store it" in out
    assert "the task ends here, in the triggerer" not in out
    assert destination.read_bytes() == sim.video
    assert sim.calls["submit"] == 1
    assert sim.calls["video"] == 2


def test_a_registered_listener_keeps_the_end_on_a_worker(run_dag, sim, tmp_path, capfd, caplog):
    try:
        from airflow.sdk.listener import get_listener_manager
    except ImportError:  # Airflow 2
        from airflow.listeners.listener import get_listener_manager

    class Listener:  # what OpenLineage registers: it hears of a task's end only from a worker run
        pass

    manager = get_listener_manager()
    listener = Listener()
    manager.add_listener(listener)
    try:
        dag_run = run_dag("kling_operator_ends_in_triggerer", run_conf={"destination": str(tmp_path / "v.mp4")})
    finally:
        manager.pm.unregister(listener)
    assert states(dag_run) == {"generate": "success"}
    out = capfd.readouterr().out + caplog.text
    assert "a listener is registered" in out
    assert "the task ends here, in the triggerer" not in out
    assert (tmp_path / "v.mp4").read_bytes() == sim.video


def test_taskflow_stores_and_passes_the_result_on(run_dag, sim, tmp_path):
    destination = tmp_path / "teaser.mp4"
    dag_run = run_dag("kling_taskflow_ends_in_triggerer", run_conf={"destination": str(destination)})
    assert states(dag_run) == {"stored_teaser": "success", "where": "success"}
    assert xcoms(dag_run)[("where", "return_value")] == destination.as_uri()
    assert destination.read_bytes() == sim.video


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"destination": "/videos/x.mp4"}, "destination needs wait_for_completion=True"),
        ({"finish_in_triggerer": True, "wait_for_completion": True, "deferrable": False}, "needs wait_for_completion"),
        ({"finish_in_triggerer": True}, "finish_in_triggerer needs wait_for_completion=True and deferrable=True"),
    ],
)
def test_a_layout_that_cannot_work_is_refused_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(KlingInputError, match=message):
        KlingTextToVideoOperator(task_id="generate", prompt="a kite", **kwargs)


def test_the_destination_may_name_the_request(run_dag, sim, tmp_path):
    dag_run = run_dag("kling_operator_ends_in_triggerer", run_conf={"destination": str(tmp_path / "{request_id}.mp4")})
    rid = xcoms(dag_run)[("generate", "return_value")]
    assert (tmp_path / f"{rid}.mp4").read_bytes() == sim.video
    assert xcoms(dag_run)[("generate", "result")]["stored"]["uri"] == (tmp_path / f"{rid}.mp4").as_uri()
