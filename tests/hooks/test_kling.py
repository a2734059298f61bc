from __future__ import annotations

import asyncio

import pytest

from airflow_provider_kling.exceptions import (
    KlingAuthenticationError,
    KlingConnectionError,
    KlingHTTPTimeoutError,
    KlingInputError,
    KlingInvalidModelError,
    KlingMalformedResponseError,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingServerError,
    KlingSubmitOutcomeUnknownError,
    KlingWaitTimeout,
)
from airflow_provider_kling.follow import wait_for
from airflow_provider_kling.hooks.kling import KlingAsyncHook, KlingHook, api_target, shared_sessions
from airflow_provider_kling.models import CancelOutcome, RequestStatus, ResultStatus
from airflow_provider_kling.testing import Fault, Scenario
from tests.conftest import CHECKED_5S_16_9, FAST_HOOK, TOKEN, free_port

PROMPT = {"prompt": "a lighthouse in a storm"}


@pytest.fixture
def hook(sim):
    with KlingHook(**FAST_HOOK) as hook:
        yield hook


def test_submit_returns_the_request_id_and_its_urls(hook, sim):
    answer = hook.submit(PROMPT)
    assert answer.request_id in sim.requests
    assert answer.status_url.endswith(f"/v1/requests/{answer.request_id}/status")
    assert answer.result_url.endswith("/result")
    assert answer.cancel_url.endswith("/cancel")
    assert sim.requests[answer.request_id].input["duration"] == 5


def test_status_moves_from_queue_to_completed(hook, sim):
    sim.script(Scenario(queue_seconds=0.3, run_seconds=0.1, queue_position=5))
    rid = hook.submit(PROMPT).request_id
    queued = hook.get_status(rid)
    assert queued.status is RequestStatus.IN_QUEUE
    assert queued.queue_position is not None
    assert queued.queue_position >= 1
    result = wait_for(hook, rid, poll_interval=0.05)
    assert result.status is ResultStatus.SUCCEEDED
    assert hook.get_status(rid).status is RequestStatus.COMPLETED


def test_result_before_finish_carries_the_current_state(hook, sim):
    sim.script(Scenario(queue_seconds=5))
    rid = hook.submit(PROMPT).request_id
    result = hook.get_result(rid)
    assert result.status is ResultStatus.IN_QUEUE
    assert result.output is None


def test_result_with_cost_when_asked(hook, sim):
    sim.script(Scenario(queue_seconds=0, run_seconds=0))
    rid = hook.submit({**PROMPT, "duration": 10}).request_id
    assert hook.get_result(rid, include_cost=True).cost == 1.0
    assert hook.get_result(rid).cost is None


def test_cancel_a_queued_request(hook, sim):
    sim.script(Scenario(queue_seconds=10))
    rid = hook.submit(PROMPT).request_id
    assert hook.cancel(rid).outcome is CancelOutcome.CANCELLED
    assert hook.get_status(rid).status is RequestStatus.CANCELLED
    assert hook.get_result(rid).status is ResultStatus.CANCELLED


def test_cancel_a_running_request_is_refused(hook, sim):
    sim.script(Scenario(queue_seconds=0, run_seconds=10))
    rid = hook.submit(PROMPT).request_id
    assert hook.cancel(rid).outcome is CancelOutcome.NOT_CANCELLABLE


def test_wait_cancels_a_request_stuck_in_the_queue(sim, virtual_clock):
    sim.script(Scenario(queue_seconds=30))
    with KlingHook(**FAST_HOOK, sleep=virtual_clock.sleep) as hook:
        rid = hook.submit(PROMPT).request_id
        with pytest.raises(KlingWaitTimeout, match=r"stayed queued past its queue limit.*will not be billed"):
            wait_for(hook, rid, poll_interval=5, timeout=3600, queue_timeout=60)
    assert sim.requests[rid].cancelled_at is not None
    assert 60 <= virtual_clock.elapsed <= 65  # at the first poll past the limit, on the wait's own clock


def test_wait_deadline_on_a_running_request_says_it_is_billed(sim, virtual_clock):
    sim.script(Scenario(queue_seconds=0, run_seconds=30))
    with KlingHook(**FAST_HOOK, sleep=virtual_clock.sleep) as hook:
        rid = hook.submit(PROMPT).request_id
        with pytest.raises(KlingWaitTimeout, match=r"did not finish before its deadline.*will still be billed"):
            wait_for(hook, rid, poll_interval=5, timeout=120, queue_timeout=60)
    assert sim.requests[rid].cancelled_at is None  # running: past the queue limit's reach, and not cancellable
    assert 120 <= virtual_clock.elapsed <= 125


def test_invalid_input_sends_nothing(hook, sim):
    with pytest.raises(KlingInputError, match="duration"):
        hook.submit({**PROMPT, "duration": 6})
    assert sim.calls["submit"] == 0


def test_wrong_token_is_an_authentication_error_without_the_token(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(token="wrong-token-value"))
    with KlingHook(**FAST_HOOK) as hook, pytest.raises(KlingAuthenticationError) as caught:
        hook.submit(PROMPT)
    assert caught.value.error_code == 400004
    assert caught.value.status_code == 401
    assert "wrong-token-value" not in str(caught.value)
    assert sim.calls["submit"] == 1


def test_unknown_request_is_not_found_and_not_retried(hook, sim):
    with pytest.raises(KlingNotFoundError) as caught:
        hook.get_status("no-such-request")
    assert caught.value.error_code == 404001
    assert sim.calls["status"] == 1


def test_unknown_model_is_a_typed_error(hook, sim):
    with pytest.raises(KlingInvalidModelError):
        hook.submit({"prompt": "x"}, model="acme/unknown-model")


def test_transient_faults_on_status_are_retried(sim):
    with KlingHook(retry_delay=0.01, max_attempts=4) as hook:
        rid = hook.submit(PROMPT).request_id
        sim.inject("status", Fault("drop"), Fault("status", status_code=503), Fault("error_code"))
        assert hook.get_status(rid).request_id == rid
    assert sim.calls["status"] == 4


def test_retries_stop_at_the_bound(hook, sim):
    rid = hook.submit(PROMPT).request_id
    # As many faults as attempts: one attempt more would have found the answer, and no error.
    sim.inject("result", *[Fault("status", status_code=502)] * FAST_HOOK["max_attempts"])
    with pytest.raises(KlingServerError) as caught:
        hook.get_result(rid)
    assert caught.value.status_code == 502
    assert sim.calls["result"] == FAST_HOOK["max_attempts"]


def test_rate_limit_honours_retry_after_on_submit(sim):
    sleeps: list[float] = []
    sim.inject("submit", Fault("status", status_code=429, headers={"Retry-After": "2"}, body="{}"))
    with KlingHook(**FAST_HOOK, sleep=sleeps.append) as hook:
        assert hook.submit(PROMPT).request_id
    assert sim.calls["submit"] == 2
    assert len(sim.requests) == 1
    assert sleeps == [2.0]


def test_rate_limit_that_persists_fails_typed(sim):
    sim.inject("submit", *[Fault("status", status_code=429, body="{}")] * 3)
    with KlingHook(**FAST_HOOK, sleep=lambda _: None) as hook, pytest.raises(KlingRateLimitError):
        hook.submit(PROMPT)
    assert len(sim.requests) == 0


def test_submit_that_created_a_request_then_failed_is_never_repeated(hook, sim):
    sim.inject("submit", Fault("status", status_code=500, after_create=True))
    with pytest.raises(KlingSubmitOutcomeUnknownError) as caught:
        hook.submit(PROMPT)
    assert sim.calls["submit"] == 1
    assert len(sim.requests) == 1
    assert "may have created a request that will be billed" in str(caught.value)


def test_submit_answer_dropped_is_unknown_not_repeated(hook, sim):
    sim.inject("submit", Fault("drop", after_create=True))
    with pytest.raises(KlingSubmitOutcomeUnknownError):
        hook.submit(PROMPT)
    assert sim.calls["submit"] == 1


def test_submit_answer_without_request_id_is_unknown(hook, sim):
    sim.inject("submit", Fault("malformed", body='{"status": "ok"}', after_create=True))
    with pytest.raises(KlingSubmitOutcomeUnknownError, match="request_id"):
        hook.submit(PROMPT)
    assert sim.calls["submit"] == 1


def test_slow_answer_times_out_and_is_unknown_for_submit(sim):
    sim.inject("submit", Fault("delay", seconds=1.0))
    with KlingHook(read_timeout=0.2, **FAST_HOOK) as hook, pytest.raises(KlingSubmitOutcomeUnknownError):
        hook.submit(PROMPT)
    assert sim.calls["submit"] == 1


def test_slow_status_is_retried_then_typed(sim):
    with KlingHook(read_timeout=0.2, **FAST_HOOK) as hook:
        rid = hook.submit(PROMPT).request_id
        sim.inject("status", *[Fault("delay", seconds=0.6)] * 3)
        with pytest.raises(KlingHTTPTimeoutError):
            hook.get_status(rid)
    assert sim.calls["status"] == 3


def test_unreachable_host_is_a_connection_error_marked_not_sent(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLING_DEFAULT",
        f'{{"conn_type": "kling", "host": "http://127.0.0.1:{free_port()}", "password": "t"}}',
    )
    with KlingHook(**FAST_HOOK) as hook, pytest.raises(KlingConnectionError) as caught:
        hook.submit(PROMPT)
    assert caught.value.request_sent is False


def test_connection_forms(monkeypatch):
    from airflow.providers.common.compat.sdk import Connection

    assert api_target(Connection(conn_id="k", conn_type="kling", password="t"), "k").base_url == (
        "https://model-api.runcomfy.net"
    )
    uri = Connection(conn_id="k", uri="kling://:tok@127.0.0.1:8080/http")
    assert api_target(uri, "k").base_url == "http://127.0.0.1:8080"
    assert api_target(uri, "k").token == "tok"
    assert "tok" not in repr(api_target(uri, "k"))
    with pytest.raises(KlingAuthenticationError, match="no API token"):
        api_target(Connection(conn_id="k", conn_type="kling", host="http://x"), "k")


def test_uri_connection_from_environment(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", f"kling://:{TOKEN}@127.0.0.1:{sim.port}/http")
    with KlingHook(**FAST_HOOK) as hook:
        assert hook.submit(PROMPT).request_id


def test_download_is_whole_and_matches_the_server(hook, sim, tmp_path):
    sim.script(Scenario(queue_seconds=0, run_seconds=0))
    rid = hook.submit(PROMPT).request_id
    url = hook.get_result(rid).output.video_url
    saved = hook.download_video(url, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == sim.video
    assert saved.size_bytes == len(sim.video)
    assert saved.content_type == "video/mp4"
    assert saved.facts.to_dict() == CHECKED_5S_16_9
    assert saved.poster == (tmp_path / "v.jpg").as_uri()
    assert sorted(tmp_path.iterdir()) == [tmp_path / "v.jpg", tmp_path / "v.last.png", tmp_path / "v.mp4"]


def test_download_cut_short_leaves_no_file(hook, sim, tmp_path):
    sim.script(Scenario(queue_seconds=0, run_seconds=0))
    rid = hook.submit(PROMPT).request_id
    url = hook.get_result(rid).output.video_url
    sim.inject("video", Fault("drop"))
    with pytest.raises(KlingConnectionError):
        hook.download_video(url, tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


def test_download_refuses_non_http_sources(hook, tmp_path):
    with pytest.raises(KlingInputError, match="http"):
        hook.download_video("file:///etc/passwd", tmp_path / "v.mp4")


def test_test_connection_tells_token_from_reachability(sim, monkeypatch):
    with KlingHook(**FAST_HOOK) as hook:
        assert hook.test_connection()[0] is True
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(token="bad"))
    with KlingHook(**FAST_HOOK) as hook:
        ok, message = hook.test_connection()
    assert not ok
    assert "token was refused" in message


# --- async -----------------------------------------------------------------------------------


async def test_async_hook_speaks_the_same_four_calls(sim):
    sim.script(Scenario(queue_seconds=10))
    async with KlingAsyncHook(**FAST_HOOK) as hook:
        rid = (await hook.submit(PROMPT)).request_id
        assert (await hook.get_status(rid)).status is RequestStatus.IN_QUEUE
        assert (await hook.get_result(rid)).status is ResultStatus.IN_QUEUE
        assert (await hook.cancel(rid)).outcome is CancelOutcome.CANCELLED
    assert sim.calls == {"submit": 1, "status": 1, "result": 1, "cancel": 1}


async def test_async_hooks_share_one_session_and_close_it(sim):
    first, second = KlingAsyncHook(**FAST_HOOK), KlingAsyncHook(**FAST_HOOK)
    async with first, second:
        assert first.session is second.session
        assert shared_sessions.users() == 2
        session = first.session
    assert shared_sessions.users() == 0
    assert session.closed


async def test_async_hook_holds_its_session_across_concurrent_calls(sim):
    async with KlingAsyncHook(**FAST_HOOK) as hook:
        rids = [(await hook.submit(PROMPT)).request_id for _ in range(3)]
        session = hook.session
        statuses = await asyncio.gather(*(hook.get_status(rid) for rid in rids * 3))
        # The calls ended, the hook's own hold did not: the pool (and its sockets) stays for the next poll.
        assert [s.request_id for s in statuses] == rids * 3
        assert shared_sessions.users() == 1
        assert not session.closed
    assert session.closed


async def test_async_retries_and_submit_safety_match_the_sync_hook(sim):
    async with KlingAsyncHook(**FAST_HOOK) as hook:
        rid = (await hook.submit(PROMPT)).request_id
        sim.inject("status", Fault("drop"), Fault("status", status_code=500))
        assert (await hook.get_status(rid)).request_id == rid
        sim.inject("submit", Fault("status", status_code=503, after_create=True))
        with pytest.raises(KlingSubmitOutcomeUnknownError):
            await hook.submit(PROMPT)
    assert sim.calls["status"] == 3
    assert sim.calls["submit"] == 2
    assert len(sim.requests) == 2


async def test_async_malformed_answer_is_typed(sim):
    async with KlingAsyncHook(**FAST_HOOK) as hook:
        rid = (await hook.submit(PROMPT)).request_id
        sim.inject("status", Fault("malformed", body="<html>oops</html>"))
        with pytest.raises(KlingMalformedResponseError) as caught:
            await hook.get_status(rid)
    assert "<html>oops</html>" in caught.value.body_excerpt


async def test_async_timeout_is_typed(sim):
    async with KlingAsyncHook(read_timeout=0.2, **FAST_HOOK) as hook:
        rid = (await hook.submit(PROMPT)).request_id
        sim.inject("status", *[Fault("delay", seconds=0.6)] * 3)
        with pytest.raises(KlingHTTPTimeoutError):
            await hook.get_status(rid)
