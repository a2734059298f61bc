"""
``finish_in_triggerer`` in a real Airflow 3.3 (scheduler, triggerer, LocalExecutor workers, the REST
API): one task generates, stores and ends in the triggerer, so a generation costs one worker run;
clearing it afterwards generates anew, as clearing a task that ended on a worker does.
"""

from __future__ import annotations

import hashlib

from tests.airflow_processes import ON_AIRFLOW_3_3_PROCESSES, AirflowProcesses

pytestmark = ON_AIRFLOW_3_3_PROCESSES

DAG_ID = "kling_one_run"
DAG_FILE = """
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

with DAG("kling_one_run", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    KlingTextToVideoOperator(
        task_id="generate",
        prompt="a kite [sim:queue=1][sim:run=1]",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=0.5,
        include_cost=True,
        destination="{{ var.value.kling_videos }}/{{ run_id | replace(':', '_') }}.mp4",
        overwrite=True,
        finish_in_triggerer=True,
    )
"""


def test_a_generation_ends_in_the_triggerer_after_one_worker_run(kling_simulator, tmp_path):
    sim = kling_simulator
    videos = tmp_path / "videos"
    with AirflowProcesses(tmp_path, sim, {"one_run.py": DAG_FILE}) as airflow:
        airflow.start_all()
        airflow.wait_until("the API server", airflow._api_up, 120)
        airflow.api("POST", "/variables", key="kling_videos", value=str(videos))
        run_id = airflow.trigger(DAG_ID)
        assert airflow.wait_for_run(DAG_ID, run_id) == "success", airflow.process_log_tail("scheduler", "triggerer")

        rid = airflow.xcom(DAG_ID, run_id, "generate", "request_id")
        assert airflow.xcom(DAG_ID, run_id, "generate", "return_value") == rid
        result = airflow.xcom(DAG_ID, run_id, "generate", "result")
        (video,) = videos.glob("*.mp4")
        assert video.read_bytes() == sim.video
        assert result["stored"]["poster"] == video.with_suffix(".jpg").as_uri()  # stored in the triggerer, checked
        assert result["stored"]["video_codec"] == "h264"
        assert result["stored"]["sha256"] == hashlib.sha256(sim.video).hexdigest()
        assert result["stored"]["uri"] == video.as_uri()
        assert result["cost"] == 0.5

        task_log = "\n".join(text for path, text in airflow.task_logs() if ".trigger." not in path.name)
        trigger_log = "\n".join(text for path, text in airflow.task_logs() if ".trigger." in path.name)
        assert f"Submitted Kling request {rid}" in task_log
        assert "waiting in the triggerer" in task_log
        # No second worker run: nothing the task logs when it resumes on a worker.
        assert f"Kling request {rid} succeeded:" not in task_log
        assert "Stored the video" not in task_log
        assert f"Kling request {rid} succeeded: the task ends here, in the triggerer" in trigger_log
        assert f"Stored the video of Kling request {rid}" in trigger_log
        assert sim.calls["submit"] == 1

        # Cleared, the task that the triggerer ended generates anew (its record said so).
        airflow.clear(DAG_ID, run_id, ["generate"])
        assert airflow.wait_for_run(DAG_ID, run_id) == "success"
        assert sim.calls["submit"] == 2
        assert airflow.xcom(DAG_ID, run_id, "generate", "request_id") != rid
        logs = "\n".join(text for _, text in airflow.task_logs())
        assert f"Kling request {rid} of an earlier try succeeded and was delivered by an earlier run" in logs
