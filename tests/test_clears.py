"""
What clearing a task does to its request, on Airflow 3.3, as a user clears from the UI: through the
REST API, with the scheduler, the triggerer and LocalExecutor workers as their own processes.

The rule (docs/behaviour.md, "Clearing a task"): a finished request is generated anew; a queued or
running one is resumed, and the log says so and how to get a fresh take instead; a mapped task
instance never picks up another map index's request, even when the mapped list changed.
"""

from __future__ import annotations

import json

from tests.airflow_processes import ON_AIRFLOW_3_3_PROCESSES, AirflowProcesses

pytestmark = ON_AIRFLOW_3_3_PROCESSES

DAG_ID = "kling_clears"
DAG_FILE = """
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Variable, task

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

WAIT = {"wait_for_completion": True, "deferrable": True, "poll_interval": 0.5}

with DAG("kling_clears", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    KlingTextToVideoOperator(task_id="succeeded", prompt="a kite [sim:queue=0.5][sim:run=0.5]", **WAIT)
    # Retries left: its record stays, marked finished in this clearing; a clear still generates anew.
    KlingTextToVideoOperator(
        task_id="succeeded_retries",
        prompt="a crane [sim:queue=0.5][sim:run=0.5]",
        retries=2,
        retry_delay=timedelta(seconds=1),  # a retry (Airflow's bookkeeping failing under load) uses its video
        **WAIT,
    )
    KlingTextToVideoOperator(task_id="failed", prompt="a kite [sim:fail][sim:queue=0.5][sim:run=0.5]", **WAIT)
    KlingTextToVideoOperator(task_id="handed_off_done", prompt="a heron [sim:queue=0][sim:run=0]")
    KlingTextToVideoOperator(task_id="handed_off_queued", prompt="a heron [sim:queue=900]")
    KlingTextToVideoOperator(task_id="handed_off_running", prompt="a heron [sim:queue=0][sim:run=900]")

    @task
    def prompts() -> list[str]:
        return Variable.get("kling_clear_prompts", deserialize_json=True)

    KlingTextToVideoOperator.partial(task_id="mapped").expand(prompt=prompts())
"""
FOX, OWL = "a fox [sim:queue=900]", "an owl [sim:queue=900]"


def test_clearing_generates_a_finished_request_anew_and_resumes_an_unfinished_one(kling_simulator, tmp_path):
    sim = kling_simulator
    with AirflowProcesses(tmp_path, sim, {"clears.py": DAG_FILE}) as airflow:
        airflow.start_all()
        airflow.wait_until("the API server", airflow._api_up, 120)
        airflow.api("POST", "/variables", key="kling_clear_prompts", value=json.dumps([FOX, OWL]))
        run_id = airflow.trigger(DAG_ID)
        assert airflow.wait_for_run(DAG_ID, run_id) == "failed", airflow.process_log_tail("scheduler")  # "failed" fails

        def request_ids() -> dict[tuple[str, int], str]:
            return {
                key: airflow.xcom(DAG_ID, run_id, key[0], "request_id", key[1])
                for key, ti in airflow.task_instances(DAG_ID, run_id).items()
                if key[0] != "prompts"
            }

        first = request_ids()
        assert sim.calls["submit"] == 8  # 6 tasks and 2 map indexes: one paid submit each
        assert first[("mapped", 0)] != first[("mapped", 1)]

        # The mapped list changes between runs: index 0 is now the owl, index 1 the fox.
        airflow.api("PATCH", "/variables/kling_clear_prompts", key="kling_clear_prompts", value=json.dumps([OWL, FOX]))
        airflow.clear(DAG_ID, run_id, [task_id for task_id, _ in first if task_id != "mapped"] + ["prompts", "mapped"])
        airflow.wait_for_run(DAG_ID, run_id)
        second = request_ids()

        # Finished: generated anew.
        for task_id in ("succeeded", "succeeded_retries", "failed", "handed_off_done"):
            assert second[(task_id, -1)] != first[(task_id, -1)], task_id
        # Queued or running: resumed, nothing paid again.
        for task_id in ("handed_off_queued", "handed_off_running"):
            assert second[(task_id, -1)] == first[(task_id, -1)], task_id
        # A map index never takes another's request: each item changed, so each is submitted anew.
        assert second[("mapped", 0)] not in (first[("mapped", 0)], first[("mapped", 1)])
        assert second[("mapped", 1)] not in (first[("mapped", 0)], first[("mapped", 1)])
        assert sim.calls["submit"] == 8 + 4 + 2
        # The mapped requests of the earlier items were left to the downstream: not cancelled.
        assert sim.requests[first[("mapped", 0)]].cancelled_at is None

        # Cleared again with the same list, each map index resumes its own request.
        airflow.clear(DAG_ID, run_id, ["prompts", "mapped"])
        airflow.wait_for_run(DAG_ID, run_id)
        third = request_ids()
        assert (third[("mapped", 0)], third[("mapped", 1)]) == (second[("mapped", 0)], second[("mapped", 1)])
        assert sim.calls["submit"] == 14

        logs = "\n".join(text for _, text in airflow.task_logs())
        queued = first[("handed_off_queued", -1)]
        assert f"Resuming Kling request {queued} (in_queue) submitted by an earlier try of this task" in logs
        assert f"For a fresh take instead, cancel it first (`kling cancel {queued}`" in logs
        assert f"Resuming Kling request {first[('handed_off_running', -1)]} (in_progress)" in logs
        assert "succeeded and was delivered by an earlier run; submitting anew" in logs
