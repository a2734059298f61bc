from __future__ import annotations

import time

import pytest

from airflow_provider_kling.exceptions import KlingError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.sensors.kling import KlingRequestSensor
from airflow_provider_kling.testing import Scenario
from tests.conftest import FAST_HOOK, states, xcoms


@pytest.mark.parametrize("dag_id", ["kling_sensor_deferrable", "kling_sensor_poke"])
def test_sensor_returns_the_result_summary(run_dag, sim, dag_id):
    sim.script(Scenario(output="videos"))
    dag_run = run_dag(dag_id)
    assert states(dag_run) == {"generate": "success", "wait": "success"}
    values = xcoms(dag_run)
    rid = values[("generate", "return_value")]
    result = values[("wait", "return_value")]
    assert set(result) >= {"request_id", "status", "video_url", "output"}
    assert result["request_id"] == rid
    assert result["status"] == "succeeded"
    assert result["video_url"] == result["output"]["videos"][0]
    assert sim.calls["submit"] == 1


@pytest.mark.parametrize("dag_id", ["kling_sensor_deferrable", "kling_sensor_poke"])
def test_sensor_fails_on_a_failed_generation_with_the_reason(run_dag, sim, capfd, dag_id):
    sim.script(Scenario(outcome="failed", error="GPU out of memory"))
    dag_run = run_dag(dag_id)
    assert states(dag_run)["wait"] == "failed"
    assert "GPU out of memory" in capfd.readouterr().out


@pytest.mark.parametrize("dag_id", ["kling_sensor_deferrable", "kling_sensor_poke"])
def test_sensor_fails_on_a_cancelled_request(run_dag, sim, capfd, dag_id):
    sim.script(Scenario(outcome="cancelled"))
    dag_run = run_dag(dag_id)
    assert states(dag_run)["wait"] == "failed"
    assert "was cancelled" in capfd.readouterr().out


@pytest.mark.parametrize(
    ("scenario", "deferred"), [(Scenario(queue_seconds=0, run_seconds=0), False), (Scenario(queue_seconds=0.3), True)]
)
def test_deferrable_sensor_defers_only_for_an_unfinished_request(run_dag, sim, capfd, caplog, scenario, deferred):
    sim.script(scenario)
    dag_run = run_dag("kling_sensor_deferrable")
    assert states(dag_run)["wait"] == "success"
    assert ("[DAG TEST] running trigger in line" in capfd.readouterr().out + caplog.text) is deferred
    assert sim.calls["status"] == 1  # the sensor's poke; the trigger goes on from it


@pytest.mark.parametrize("dag_id", ["kling_sensor_queue_limit_deferrable", "kling_sensor_queue_limit_poke"])
def test_sensor_cancels_a_request_stuck_in_the_queue(run_dag, sim, capfd, dag_id):
    sim.script(Scenario(queue_seconds=60))
    dag_run = run_dag(dag_id)
    assert states(dag_run)["wait"] == "failed"
    (request,) = sim.requests.values()
    assert request.cancelled_at is not None
    assert "stayed queued past its queue limit; it was still queued and has been cancelled" in capfd.readouterr().out


def test_sensor_execute_complete_rejects_junk():
    sensor = KlingRequestSensor(task_id="w", request_id="r")
    with pytest.raises(KlingError, match="Unexpected event"):
        sensor.execute_complete(context={}, event={"status": "unknown"})


def test_deferring_hands_the_poke_interval_and_the_last_status_to_the_trigger(sim):
    from airflow.providers.common.compat.sdk import TaskDeferred

    sim.script(Scenario(queue_seconds=30, queue_position=4))
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a heron at dawn"}).request_id
    sensor = KlingRequestSensor(task_id="w", request_id=rid, deferrable=True, poke_interval=7, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    wait = deferred.value.trigger.wait  # one value: the request, the plan, the last poll
    assert wait.request_id == rid
    assert wait.plan.settings.interval == 7
    assert wait.plan.limits.deadline is not None
    assert wait.seen is not None
    assert (wait.seen.state, wait.seen.queue_position) == ("in_queue", 4)
    assert abs(wait.seen.at - time.time()) < 5
