from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter

import pytest

from airflow_provider_kling.exceptions import (
    KlingAuthenticationError,
    KlingError,
    KlingMalformedResponseError,
    KlingRequestCancelled,
    KlingRequestFailed,
    KlingWaitTimeout,
)
from airflow_provider_kling.hooks.kling import KlingHook, shared_sessions
from airflow_provider_kling.testing import Fault, Scenario
from airflow_provider_kling.triggers.kling import KlingRequestTrigger, result_from_event
from airflow_provider_kling.wait import RequestWait
from tests.conftest import FAST_HOOK, TOKEN


def _submit(sim, scenario: Scenario | None = None) -> str:
    if scenario:
        sim.script(scenario)
    with KlingHook(**FAST_HOOK) as hook:
        return hook.submit({"prompt": "a fox in the snow"}).request_id


def _trigger(rid: str, **wait) -> KlingRequestTrigger:
    """A trigger on one wait: ``wait`` holds :meth:`RequestWait.to_dict` keys over fast defaults."""
    return KlingRequestTrigger(
        RequestWait.from_dict({"request_id": rid, "poll_interval": 0.05, "hook_params": FAST_HOOK, **wait})
    )


async def _first_event(trigger: KlingRequestTrigger) -> dict:
    run = trigger.run()
    event = await anext(run)
    with pytest.raises(StopAsyncIteration):
        await anext(run)  # one event, then the trigger returns
    return event.payload


async def test_success_event_carries_the_result(sim):
    rid = _submit(sim)
    event = await _first_event(_trigger(rid, include_cost=True))
    assert event["outcome"] == "succeeded"
    assert event["request_id"] == rid
    assert event["result"]["video_url"].endswith(f"/media/{rid}/video.mp4")
    assert event["result"]["cost"] == 0.5
    assert result_from_event(event) == event["result"]
    # Near the front of the queue (position 3), the result call itself is polled: one status call,
    # then result calls only, the last of which carries the video; no separate final call.
    assert sim.calls["status"] == 1
    assert sim.calls["result"] >= 1
    assert shared_sessions.users() == 0


async def test_no_info_line_per_wait_and_the_event_says_how_long_it_queued_and_rendered(sim, caplog, capfd):
    rid = _submit(sim, Scenario(queue_seconds=0.3, run_seconds=0.3, queue_position=2))
    with caplog.at_level(logging.INFO):
        event = await _first_event(_trigger(rid, poll_interval=0.02))

    # Airflow 2 logs to the captured records (and echoes them to stdout); Airflow 3 through
    # structlog to stdout alone: read both. A line per wait and state costs a triggerer as much
    # as a poll: the progress is at DEBUG, the event tells the end and the timings.
    out = caplog.text + capfd.readouterr().out
    assert sim.calls["status"] + sim.calls["result"] > 10  # many polls...
    assert f"Kling request {rid} is" not in out  # ...and no INFO line for them
    assert re.fullmatch(rf"Kling request {rid} succeeded after \d+s \(queued \d+s, rendering \d+s\)", event["message"])


async def test_failure_event_carries_the_servers_reason(sim):
    rid = _submit(sim, Scenario(outcome="failed", error="prompt rejected by safety filter"))
    event = await _first_event(_trigger(rid))
    assert event["outcome"] == "KlingRequestFailed"
    with pytest.raises(KlingRequestFailed, match="prompt rejected by safety filter"):
        result_from_event(event)


async def test_server_side_cancel_is_a_cancelled_event(sim):
    rid = _submit(sim, Scenario(outcome="cancelled"))
    event = await _first_event(_trigger(rid))
    assert event["outcome"] == "KlingRequestCancelled"
    with pytest.raises(KlingRequestCancelled, match="cancelled"):
        result_from_event(event)


# The deadlines below are on the wait's own clock (virtual_clock): met at the poll the plan says,
# however slow the machine, while the simulator keeps the request queued or running in real time.


async def test_deadline_cancels_a_queued_request(sim, virtual_clock):
    rid = _submit(sim, Scenario(queue_seconds=30))
    event = await _first_event(_trigger(rid, poll_interval=5, deadline=virtual_clock.now + 60))
    assert event["outcome"] == "KlingWaitTimeout"
    assert sim.calls["cancel"] == 1
    assert sim.requests[rid].cancelled_at is not None
    assert 60 <= virtual_clock.elapsed <= 65
    with pytest.raises(KlingWaitTimeout, match="cancelled, so it will not be billed"):
        result_from_event(event)


async def test_deadline_on_a_running_request_says_it_is_billed(sim, virtual_clock):
    rid = _submit(sim, Scenario(queue_seconds=0, run_seconds=30))
    event = await _first_event(_trigger(rid, poll_interval=5, deadline=virtual_clock.now + 60))
    assert sim.requests[rid].cancelled_at is None
    assert 60 <= virtual_clock.elapsed <= 65
    with pytest.raises(KlingWaitTimeout, match="will still be billed"):
        result_from_event(event)


async def test_queue_limit_cancels_a_request_still_queued_for_free(sim, virtual_clock):
    rid = _submit(sim, Scenario(queue_seconds=30))
    now = virtual_clock.now
    event = await _first_event(_trigger(rid, poll_interval=5, deadline=now + 3600, queue_deadline=now + 60))
    assert event["outcome"] == "KlingWaitTimeout"
    assert 60 <= virtual_clock.elapsed <= 65  # the queue limit, not the deadline an hour on
    assert sim.requests[rid].cancelled_at is not None
    with pytest.raises(KlingWaitTimeout, match="stayed queued past its queue limit; it was still queued and has"):
        result_from_event(event)


async def test_queue_limit_does_not_drop_a_request_that_is_already_running(sim):
    rid = _submit(sim, Scenario(queue_seconds=0, run_seconds=0.4))
    event = await _first_event(_trigger(rid, queue_deadline=time.time() - 1))
    assert event["outcome"] == "succeeded"
    assert sim.calls["cancel"] == 0
    assert sim.requests[rid].cancelled_at is None


async def test_permanent_api_error_is_an_error_event_of_the_same_type(sim, monkeypatch):
    rid = _submit(sim)
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(token="revoked"))
    event = await _first_event(_trigger(rid))
    assert event["outcome"] == "KlingAuthenticationError"
    with pytest.raises(KlingAuthenticationError) as caught:
        result_from_event(event)
    assert caught.value.status_code == 401
    assert caught.value.error_code == 400004


async def test_expired_request_is_a_not_found_error(sim):
    rid = _submit(sim, Scenario(expire=True, queue_seconds=0, run_seconds=0))
    event = await _first_event(_trigger(rid))
    assert event["outcome"] == "KlingNotFoundError"


async def test_success_without_video_is_an_error_not_green(sim):
    rid = _submit(sim, Scenario(queue_seconds=0, run_seconds=0))
    sim.inject("result", Fault("malformed", body='{"status": "succeeded", "output": {}}'))
    event = await _first_event(_trigger(rid))
    with pytest.raises(KlingMalformedResponseError, match="names no usable video: there is no video URL"):
        result_from_event(event)


async def test_transient_faults_while_polling_do_not_end_the_wait(sim):
    rid = _submit(sim)
    sim.inject("status", Fault("drop"), Fault("status", status_code=503))
    event = await _first_event(_trigger(rid))
    assert event["outcome"] == "succeeded"


async def test_on_kill_cancels_a_queued_request(sim):
    rid = _submit(sim, Scenario(queue_seconds=30))
    await _trigger(rid).on_kill()
    assert sim.requests[rid].cancelled_at is not None


@pytest.mark.parametrize("airflow_calls_on_kill", [True, False])
async def test_where_airflow_never_calls_on_kill_the_trigger_says_so(
    sim, caplog, capfd, airflow_calls_on_kill, monkeypatch
):
    from airflow_provider_kling.triggers import kling

    monkeypatch.setattr(kling, "TRIGGER_ON_KILL", airflow_calls_on_kill)
    rid = _submit(sim)
    with caplog.at_level("INFO"):
        await _first_event(_trigger(rid))
    logged = caplog.text + capfd.readouterr().out
    assert ("does not tell triggers when a user stops a deferred task" in logged) is not airflow_calls_on_kill
    assert (f"`kling cancel {rid}` does" in logged) is not airflow_calls_on_kill


async def test_on_kill_can_be_switched_off(sim):
    rid = _submit(sim, Scenario(queue_seconds=30))
    await _trigger(rid, cancel_on_kill=False).on_kill()
    assert sim.calls["cancel"] == 0


async def test_trigger_goes_on_from_the_tasks_last_poll_without_repeating_it(sim):
    rid = _submit(sim, Scenario(queue_seconds=0.3, run_seconds=0.2, queue_position=2))
    seen = {"state": "in_queue", "queue_position": 2, "at": time.time()}
    event = await _first_event(_trigger(rid, poll_interval=0.2, seen=seen))
    assert event["outcome"] == "succeeded"
    # Near the front, the trigger goes on with the result call: the task's status call is not repeated.
    assert sim.calls["status"] == 0
    assert sim.calls["result"] >= 1
    assert "rendering" in event["message"]  # it saw the request running on the way


async def test_a_stale_hand_off_is_polled_at_once(sim):
    # A triggerer restart recreates the trigger long after the task's poll: no sleep is left.
    rid = _submit(sim, Scenario(queue_seconds=0, run_seconds=0))
    seen = {"state": "in_queue", "queue_position": 50, "at": time.time() - 3600}
    trigger = _trigger(rid, poll_interval=0.1, seen=seen)
    event = await asyncio.wait_for(_first_event(trigger), timeout=2)  # position 50 alone would wait 5 s
    assert event["outcome"] == "succeeded"


def test_serialize_round_trips_as_one_wait_with_no_secret():
    seen = {"state": "in_queue", "queue_position": 4, "at": 1_800_000_000.0}
    trigger = _trigger("req-1", deadline=1_900_000_000.0, include_cost=True, seen=seen)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_kling.triggers.kling.KlingRequestTrigger"
    assert list(kwargs) == ["wait"]  # one argument
    assert KlingRequestTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["wait"]["deadline"] == 1_900_000_000.0
    assert kwargs["wait"]["seen"] == seen
    assert TOKEN not in repr(kwargs)
    import json

    json.dumps(kwargs)


async def test_a_trigger_serialized_by_the_earlier_release_carries_on(sim):
    """A task deferred before an upgrade: the triggerer rebuilds the trigger from the old kwargs."""
    rid = _submit(sim, Scenario(queue_seconds=0.2, run_seconds=0.2, queue_position=2))
    old_kwargs = {
        "request_id": rid, "kling_conn_id": "kling_default", "poll_interval": 0.05, "max_poll_interval": 30.0,
        "deadline": time.time() + 60, "queue_deadline": None, "include_cost": True, "cancel_on_kill": True,
        "hook_params": FAST_HOOK, "last_status": "in_queue", "last_queue_position": 2, "last_polled_at": time.time(),
    }  # fmt: skip
    trigger = KlingRequestTrigger(**old_kwargs)
    assert trigger.wait.seen is not None
    assert trigger.wait.seen.queue_position == 2
    event = await _first_event(trigger)
    assert result_from_event(event)["cost"] == 0.5


@pytest.mark.parametrize(
    ("event", "raised"),
    [
        ({"status": "failed", "request_id": "r", "message": "m",
          "error": {"error_type": "KlingRequestFailed", "message": "prompt rejected", "fields": {"request_id": "r"}}},
         KlingRequestFailed),
        ({"status": "timeout", "request_id": "r", "message": "m",
          "error": {"error_type": "KlingWaitTimeout", "message": "gave up", "fields": {"request_id": "r"}}},
         KlingWaitTimeout),
    ],
)  # fmt: skip
def test_events_of_the_earlier_release_are_still_read(event, raised):
    with pytest.raises(raised):
        result_from_event(event)
    video = {"request_id": "r", "status": "succeeded", "video_url": "https://cdn.example/v.mp4"}
    success = {"status": "success", "request_id": "r", "message": "m", "result": video}
    assert result_from_event(success)["video_url"] == "https://cdn.example/v.mp4"


@pytest.mark.parametrize(
    "event",
    [
        None,
        {},
        "success",
        {"status": "running"},
        {"status": "success"},
        {"status": "success", "result": {"request_id": "r"}},
        {"status": "cancelled"},
        {"status": "failed", "error": "not a dict"},
        {"outcome": "succeeded"},
        {"outcome": "succeeded", "result": {"request_id": "r", "video_url": "javascript:alert(1)"}},
        {"outcome": "KlingRequestCancelled", "message": "cancelled"},
        {"outcome": 3},
    ],
)
def test_anything_but_a_known_success_event_fails(event):
    with pytest.raises(KlingError):
        result_from_event(event)


async def test_far_back_in_the_queue_it_polls_less_often_and_still_sees_the_finish_in_time(sim):
    scenario = Scenario(queue_seconds=1.0, run_seconds=0.3, queue_position=20)
    fixed, adaptive = _submit(sim, scenario), _submit(sim, scenario)
    events = await asyncio.gather(
        _first_event(_trigger(fixed, max_poll_interval=0.05)),
        _first_event(_trigger(adaptive, max_poll_interval=0.4)),
    )
    # How soon each sees the end (within max_poll_interval) is the planner's rule, tested as a table.
    assert [event["outcome"] for event in events] == ["succeeded", "succeeded"]
    polls = Counter(sim.polls)
    assert polls[adaptive] < polls[fixed] / 2


async def test_concurrent_triggers_read_their_connection_once(sim, mocker):
    from airflow_provider_kling.hooks import kling

    lookups = mocker.spy(kling, "get_async_connection")
    rids = [_submit(sim, Scenario(queue_seconds=0.1, run_seconds=0.1)) for _ in range(20)]
    events = await asyncio.gather(*(_first_event(_trigger(rid)) for rid in rids))
    assert {event["outcome"] for event in events} == {"succeeded"}
    assert lookups.call_count == 1


def _ending_trigger(rid: str, destination) -> KlingRequestTrigger:
    store = {"destination": str(destination), "overwrite": True}
    return _trigger(rid, end_task={"store": store, "returns": "request_id", "tags": {"dag_id": "d"}})


async def test_a_trigger_run_twice_stores_twice_and_counts_once(sim, tmp_path, monkeypatch, mocker):
    """A triggerer failover runs a trigger again: the second copy stores again, and the ledger counts it once."""
    from airflow.triggers.base import TaskSuccessEvent

    from airflow_provider_kling.spend import Spend

    ledger = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")})
    monkeypatch.setenv("AIRFLOW_CONN_KLING_LEDGER", ledger)
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(extra={"budget_store": "kling_ledger"}))
    rid = _submit(sim)
    counted = mocker.spy(Spend, "ended")
    for _ in range(2):
        run = _ending_trigger(rid, tmp_path / "v.mp4").run()
        event = await anext(run)
        assert isinstance(event, TaskSuccessEvent)
        assert event.xcoms["return_value"] == rid
        assert event.xcoms["result"]["stored"]["size_bytes"] == len(sim.video)
    assert counted.call_count == 1
    assert (tmp_path / "v.mp4").read_bytes() == sim.video
    assert sim.calls["video"] == 2


async def test_a_trigger_that_cannot_record_the_end_hands_it_to_a_worker(sim, tmp_path, monkeypatch):
    ledger = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "no such folder" / "ledger.db")})
    monkeypatch.setenv("AIRFLOW_CONN_KLING_LEDGER", ledger)
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(extra={"budget_store": "kling_ledger"}))
    rid = _submit(sim)
    event = await _first_event(_ending_trigger(rid, tmp_path / "v.mp4"))
    assert event["outcome"] == "succeeded"  # a plain event: the task resumes on a worker, which counts it
    assert event["result"]["stored"]["uri"] == (tmp_path / "v.mp4").as_uri()  # and does not store it again
