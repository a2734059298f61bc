"""
Every way a wait can end without a video, in every mode, as real DAG runs against the simulator:
a request still queued is cancelled (free) and the log says so, unless the next try resumes it.
The table these cells fill is in docs/behaviour.md.
"""

from __future__ import annotations

import pytest

from airflow_provider_kling.testing import Fault, Scenario
from tests.conftest import states

SENSOR_MODES = ("poke", "reschedule", "deferrable")
OPERATOR_MODES = ("polling", "deferred")
MODES = SENSOR_MODES + OPERATOR_MODES
QUEUED_FOR_LONG = Scenario(queue_seconds=120, queue_position=3)


def _waiting_task(mode: str) -> str:
    return "wait" if mode in SENSOR_MODES else "generate"


def _failing_polls(mode: str) -> tuple[str, list[Fault]]:
    """
    A fault that makes the next poll fail for good, on the call that mode's next poll makes: an
    answer that is not the API's (a transient one, a 503, is ridden out until the deadline).
    """
    # Near the front of the queue a wait polls the result call, but a reschedule-mode sensor forgets
    # what it saw and asks the status first; a deferrable task's own first look is a status call too.
    call = "status" if mode == "reschedule" else "result"
    return call, [Fault("status", status_code=200, body="<html>maintenance</html>", content_type="text/html")]


def _ran(run_dag, sim, dag_id: str):
    from airflow.providers.common.compat.sdk import AirflowTaskTimeout

    try:
        dag_run = run_dag(dag_id, file="kling_exit_dags.py")
    except AirflowTaskTimeout:  # Airflow 2's dag.test() lets the task's execution timeout out
        dag_run = None
    assert len(sim.requests) == 1, "exactly one paid submit"
    (request,) = sim.requests.values()
    return dag_run, request


def _failed(dag_run, task_id: str) -> bool:
    return dag_run is None or states(dag_run)[task_id] == "failed"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("exit", ["timeout", "queue_timeout", "execution_timeout"])
def test_a_limit_cancels_the_queued_request(run_dag, sim, capfd, caplog, exit, mode):
    sim.script(QUEUED_FOR_LONG)
    if (exit, mode) == ("execution_timeout", "reschedule"):
        # Each run of a rescheduled sensor is short: only a poll that hangs outlasts execution_timeout.
        sim.inject("status", Fault("delay", seconds=6))
    dag_run, request = _ran(run_dag, sim, f"exit_{exit}_{mode}")
    assert _failed(dag_run, _waiting_task(mode))
    assert request.cancelled_at is not None, "the queued request was left to be billed"
    logged = capfd.readouterr().out + caplog.text
    assert f"Cancelled Kling request {request.request_id}: it was still queued, so it will not be billed" in logged


@pytest.mark.parametrize("mode", MODES)
def test_an_error_on_the_last_try_cancels_the_queued_request(run_dag, sim, capfd, caplog, mode):
    sim.script(QUEUED_FOR_LONG)
    call, faults = _failing_polls(mode)
    sim.inject(call, *faults)
    dag_run, request = _ran(run_dag, sim, f"exit_error_{mode}")
    assert _failed(dag_run, _waiting_task(mode))
    assert request.cancelled_at is not None
    logged = capfd.readouterr().out + caplog.text
    ended = f"The wait for Kling request {request.request_id} ended without a video (KlingMalformedResponseError)"
    assert ended in logged


@pytest.mark.parametrize("mode", MODES)
def test_an_error_with_a_retry_left_keeps_the_request_for_it(run_dag, sim, capfd, caplog, mode):
    sim.script(Scenario(queue_seconds=1.0, run_seconds=0.3, queue_position=3))
    call, faults = _failing_polls(mode)
    sim.inject(call, *faults)
    dag_run, request = _ran(run_dag, sim, f"exit_error_retried_{mode}")
    assert set(states(dag_run).values()) == {"success"}  # the retry waited for the same request
    assert request.cancelled_at is None
    assert sim.calls["cancel"] == 0
    logged = capfd.readouterr().out + caplog.text
    assert f"Kling request {request.request_id} is left to run: the next try of this task resumes it" in logged


@pytest.mark.parametrize("mode", MODES)
def test_a_limit_on_a_running_request_says_it_is_billed(run_dag, sim, capfd, caplog, mode):
    sim.script(Scenario(queue_seconds=0, run_seconds=120))
    dag_run, request = _ran(run_dag, sim, f"exit_timeout_{mode}")
    assert _failed(dag_run, _waiting_task(mode))
    assert request.cancelled_at is None
    logged = capfd.readouterr().out + caplog.text
    assert request.request_id in logged
    assert "will still be billed" in logged


class _ResumedTaskInstance:
    """The task instance a worker resumes a deferred task with; the scheduler's timeout check is not in dag.test()."""

    def __init__(self, request_id: str) -> None:
        self.task_id, self.map_index, self.try_number, self.max_tries = "t", -1, 1, 0
        self._request_id = request_id

    def xcom_pull(self, *, task_ids: str, key: str, map_indexes: int) -> str:
        assert (task_ids, key, map_indexes) == ("t", "request_id", -1)
        return self._request_id


@pytest.mark.parametrize("task", ["operator", "sensor"])
def test_airflows_own_deferral_timeout_cancels_the_queued_request(sim, task):
    """Airflow resumes a task whose trigger outlived its deferral timeout with ``__fail__``: an exit too."""
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
    from airflow_provider_kling.sensors.kling import KlingRequestSensor
    from tests.conftest import FAST_HOOK

    sim.script(QUEUED_FOR_LONG)
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a heron at dawn"}).request_id
    if task == "operator":
        waiting = KlingTextToVideoOperator(task_id="t", prompt="x", wait_for_completion=True, hook_params=FAST_HOOK)
    else:
        waiting = KlingRequestSensor(task_id="t", request_id=rid, deferrable=True, hook_params=FAST_HOOK)
    # Airflow 3 says why (a timeout); Airflow 2 raises TaskDeferralError for any failed deferral.
    with pytest.raises(Exception, match="timeout"):
        waiting.resume_execution("__fail__", {"error": "Trigger timeout"}, {"ti": _ResumedTaskInstance(rid)})
    assert sim.requests[rid].cancelled_at is not None


@pytest.mark.parametrize("mode", MODES)
def test_an_api_outage_during_the_wait_costs_no_try(run_dag, sim, capfd, caplog, mode):
    """A poll that fails after all of the hook's attempts (an outage) is a missed poll, not the try's end."""
    sim.script(Scenario(queue_seconds=1.0, run_seconds=0.3, queue_position=3))
    call = "status" if mode == "reschedule" else "result"
    sim.inject(call, *[Fault("status", status_code=503)] * 3)  # every attempt of one poll
    dag_run, request = _ran(run_dag, sim, f"exit_error_retried_{mode}")
    assert set(states(dag_run).values()) == {"success"}
    assert {ti.task_id: ti.try_number for ti in dag_run.get_task_instances()}[_waiting_task(mode)] == 1
    assert sim.calls["submit"] == 1
    assert sim.calls["cancel"] == 0
    logged = capfd.readouterr().out + caplog.text
    if f"Could not poll Kling request {request.request_id}" not in logged:  # the triggerer's waits share the outage
        assert f"Kling API at {sim.url} did not answer" in logged
        assert f"Kling API at {sim.url} answers again, after" in logged
