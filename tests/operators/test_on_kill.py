"""A user who marks a waiting task failed or success stops paying for a queued request."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from airflow_provider_kling.exceptions import KlingRequestCancelled
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.sensors.kling import KlingRequestSensor
from airflow_provider_kling.testing import Scenario
from tests.conftest import FAST_HOOK


class _TaskInstance:
    def xcom_push(self, key: str, value: object) -> None:
        pass


def test_killing_a_polling_operator_cancels_its_queued_request(sim):
    sim.script(Scenario(queue_seconds=30))
    operator = KlingTextToVideoOperator(
        task_id="t",
        prompt="a kite",
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.05,
        hook_params=FAST_HOOK,
        resume=False,  # no task instance here to keep a record for
    )

    def kill_once_submitted() -> None:  # what Airflow does from another thread when a user stops the task
        deadline = time.monotonic() + 10
        while not sim.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        operator.on_kill()

    killer = threading.Thread(target=kill_once_submitted)
    killer.start()
    # The task runs in this thread (Airflow 2 allows execute() only from the thread that made the operator).
    with pytest.raises(KlingRequestCancelled):
        operator.execute({"ti": _TaskInstance()})  # type: ignore[arg-type]
    killer.join(10)
    (request,) = sim.requests.values()
    assert request.cancelled_at is not None


def _kill_after_first_poll(sim, task) -> threading.Thread:
    """What Airflow does from another thread when a user stops the task: call on_kill mid-wait."""

    def kill() -> None:
        deadline = time.monotonic() + 10
        while sim.calls["status"] + sim.calls["result"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        task.on_kill()

    killer = threading.Thread(target=kill)
    killer.start()
    return killer


def test_killing_a_poking_sensor_on_a_running_request_warns_it_is_billed(sim, caplog, capfd):
    from airflow.providers.common.compat.sdk import AirflowSensorTimeout

    sim.script(Scenario(queue_seconds=0, run_seconds=30))
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a kite"}).request_id
    # The stop comes after the first poll; the timeout that ends the test's wait later leaves a busy
    # machine time to make it.
    sensor = KlingRequestSensor(
        task_id="w", request_id=rid, mode="poke", poke_interval=0.05, timeout=5, hook_params=FAST_HOOK
    )
    killer = _kill_after_first_poll(sim, sensor)
    with caplog.at_level(logging.WARNING), pytest.raises(AirflowSensorTimeout):
        sensor.execute({"ti": _TaskInstance()})  # type: ignore[arg-type]
    killer.join(10)
    assert sim.calls["cancel"] == 0  # seen running: a cancel could not help
    assert sim.requests[rid].cancelled_at is None
    # Airflow 2 logs to the captured records and echoes them to stdout; Airflow 3 to stdout alone.
    sources = (caplog.text, capfd.readouterr().out)
    logged = "".join(sources)
    # The stop's own line (the timeout's would name AirflowSensorTimeout), and only it.
    assert (
        f"Kling request {rid} ended without a video (the task was stopped); it is already running and cannot be "
        "cancelled: it will still be billed"
    ) in logged
    # The stop dealt with it; the timeout that followed did not say it again.
    assert max(text.count("will still be billed") for text in sources) == 1


@pytest.mark.parametrize("cancel_on_kill", [True, False])
def test_killing_a_poking_sensor_cancels_a_queued_request_unless_told_not_to(sim, cancel_on_kill):
    from airflow.providers.common.compat.sdk import AirflowSensorTimeout

    sim.script(Scenario(queue_seconds=30))
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a kite"}).request_id
    sensor = KlingRequestSensor(
        task_id="w",
        request_id=rid,
        cancel_on_kill=cancel_on_kill,
        poke_interval=0.05,
        timeout=1,
        hook_params=FAST_HOOK,
    )
    killer = _kill_after_first_poll(sim, sensor)
    # Cancelled: the next poke sees it so. Not cancelled: the sensor's timeout ends the wait, and
    # that exit cancels (cancel_on_kill is about a user's stop, not about a timeout).
    with pytest.raises((KlingRequestCancelled, AirflowSensorTimeout)) as ended:
        sensor.execute({"ti": _TaskInstance()})  # type: ignore[arg-type]
    killer.join(10)
    assert isinstance(ended.value, KlingRequestCancelled) is cancel_on_kill
    assert sim.requests[rid].cancelled_at is not None
    assert sim.calls["cancel"] == 1
