from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, states, xcoms

EXAMPLE_DAGS = sorted((REPO / "dags").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLE_DAGS, ids=lambda p: p.name)
def test_example_dag_imports_without_errors(path: Path, airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    bag = DagBag(dag_folder=str(path))
    assert bag.import_errors == {}
    assert bag.dags


def test_main_example_dag_runs_green_and_saves_the_video(run_dag, sim, tmp_path, monkeypatch):
    monkeypatch.setenv("KLING_VIDEO_DIR", str(tmp_path))
    monkeypatch.setenv("KLING_POLL_INTERVAL", "0.05")
    dag_run = run_dag("kling_text_to_video", folder=REPO / "dags", file="kling_text_to_video.py")
    assert set(states(dag_run).values()) == {"success"}
    saved = xcoms(dag_run)[("save", "return_value")]
    video = Path(saved["path"])
    assert video.parent == tmp_path
    assert video.read_bytes() == sim.video
    assert saved["size_bytes"] == len(sim.video)
    assert sim.calls["submit"] == 1
