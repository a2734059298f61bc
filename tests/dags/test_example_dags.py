from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_provider_kling.testing import load_dags
from airflow_provider_kling.testing.simulator import sample_video
from tests.conftest import REPO, states, xcoms

if TYPE_CHECKING:
    from pathlib import Path

EXAMPLE_DAGS = sorted((REPO / "dags").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLE_DAGS, ids=lambda p: p.name)
def test_example_dag_imports_without_errors(path: Path, airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    assert load_dags(path)  # raises with Airflow's import errors, if any


def _run_example(run_dag, dag_id: str, **kwargs):
    return run_dag(dag_id, folder=REPO / "dags", file=f"{dag_id}.py", **kwargs)


@pytest.fixture
def video_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KLING_VIDEO_DIR", str(tmp_path))
    monkeypatch.setenv("KLING_POLL_INTERVAL", "0.05")
    return tmp_path


def test_main_example_generates_stores_and_notifies(run_dag, sim, video_dir, capfd, caplog):
    dag_run = _run_example(run_dag, "kling_text_to_video")
    assert states(dag_run) == {"generate": "success", "notify": "success"}
    values = xcoms(dag_run)
    rid = values[("generate", "return_value")]
    video = video_dir / f"{rid}.mp4"
    assert values[("generate", "result")]["stored"]["uri"] == video.as_uri()
    assert video.read_bytes() == sim.video  # the stored MP4 is the simulator's, byte for byte
    assert "Kling video ready: prompt='A desert road" in values[("notify", "return_value")]
    notices = [line for line in (capfd.readouterr().out + caplog.text).splitlines() if "KlingLogNotifier" in line]
    assert any("Kling video ready: prompt='A desert road" in line and rid in line for line in notices)
    assert sim.calls["submit"] == 1


def test_batch_maps_over_prompts_and_the_summary_names_the_failure(run_dag, sim, video_dir, monkeypatch):
    from airflow.models.pool import Pool

    Pool.create_or_update_pool("kling_generations", slots=2, description="test", include_deferred=True)
    prompts = ["a red kite over a hill", "a melting clock [sim:fail]", "a paper boat in the rain"]
    monkeypatch.setenv("AIRFLOW_VAR_KLING_BATCH_PROMPTS", json.dumps(prompts))
    dag_run = _run_example(run_dag, "kling_batch_prompts")
    per_task = Counter((ti.task_id, str(ti.state)) for ti in dag_run.get_task_instances())
    assert per_task[("generate", "success")] == 2
    assert per_task[("generate", "failed")] == 1
    report = xcoms(dag_run)[("summary", "return_value")]
    assert [item["prompt"] for item in report["succeeded"]] == [prompts[0], prompts[2]]
    assert [item["prompt"] for item in report["failed"]] == [prompts[1]]
    assert report["failed"][0]["reason"]
    assert report["video_seconds"] == 10
    assert report["cost"] == pytest.approx(1.0)
    assert len(list(video_dir.rglob("*.mp4"))) == 2
    assert sim.calls["submit"] == 3


def test_on_new_video_writes_a_manifest_beside_each_video(run_dag, video_dir):
    video = video_dir / "sim-1.mp4"
    video.write_bytes(sample_video(10, "9:16"))
    dag_run = _run_example(run_dag, "kling_on_new_video")
    assert "failed" not in {str(ti.state) for ti in dag_run.get_task_instances()}
    manifest = json.loads((video_dir / "sim-1.mp4.manifest.json").read_text())
    assert manifest["video"] == video.as_uri()
    assert manifest["size_bytes"] == len(sample_video(10, "9:16"))
    assert manifest["sha256"] == hashlib.sha256(sample_video(10, "9:16")).hexdigest()
    assert manifest["duration_s"] == pytest.approx(10.0, abs=0.1)
    assert (manifest["width"], manifest["height"], manifest["aspect_ratio"]) == (180, 320, "9:16")
    assert manifest["has_audio"] is False  # Kling 1.6 makes silent videos


@pytest.mark.skipif(AIRFLOW_V_3_1_PLUS, reason="on Airflow 3.1+ the review DAG reviews (tests/ui)")
def test_review_dag_before_airflow_3_1_fails_saying_it_needs_3_1(run_dag, sim, video_dir, capfd, caplog):
    dag = load_dags(REPO / "dags" / "kling_review_and_publish.py")["kling_review_and_publish"]
    assert [task.task_id for task in dag.tasks] == ["review_needs_airflow_3_1"]
    assert "Airflow 3.1+" in (dag.doc_md or "")
    dag_run = _run_example(run_dag, "kling_review_and_publish")
    assert states(dag_run) == {"review_needs_airflow_3_1": "failed"}
    logged = capfd.readouterr().out + caplog.text
    assert "KlingReviewOperator needs Airflow 3.1+" in logged
    assert sim.calls["submit"] == 0  # nothing was generated (nor paid) for a review that cannot happen


@pytest.mark.skipif(not AIRFLOW_V_3_1_PLUS, reason="human-in-the-loop operators need Airflow 3.1+")
def test_review_dag_offers_a_revision_on_every_take_but_the_last(monkeypatch):
    monkeypatch.setenv("KLING_REVIEW_MAX_TAKES", "2")
    dag = load_dags(REPO / "dags" / "kling_review_and_publish.py")["kling_review_and_publish"]
    first, last = dag.task_dict["take_1.review"], dag.task_dict["take_2.review"]
    assert first.options == ["Approve", "Revise", "Reject"]
    assert first.options_mapping["Revise"] == "take_2"
    assert last.options == ["Approve", "Reject"]
    assert "take_3.generate" not in dag.task_dict
    assert set(dag.task_dict["publish"].upstream_task_ids) == {"take_1.approved", "take_2.approved"}
    assert first.defaults == ["Reject"]  # nobody answers within a day: nothing is published
