"""
The waits of one triggerer share what the API tells any of them: an outage costs one probe per
poll interval instead of every wait's retries, its end is seen by every wait, and a 429's
Retry-After pauses them all. Many triggers, one event loop, one account, the simulator over HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from airflow_provider_kling.hooks.account_health import PROBE_SHARE
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.testing import Scenario
from airflow_provider_kling.triggers.kling import KlingRequestTrigger
from airflow_provider_kling.wait import RequestWait
from tests.conftest import FAST_HOOK

WAITS = 30
INTERVAL = 0.2
OUTAGE = 2.0


def _submit_many(sim, scenario: Scenario, count: int) -> list[str]:
    sim.script(*[scenario] * count)
    with KlingHook(**FAST_HOOK) as hook:
        return [hook.submit({"prompt": f"take {n}"}).request_id for n in range(count)]


def _trigger(rid: str, **wait) -> KlingRequestTrigger:
    options = {"poll_interval": INTERVAL, "max_poll_interval": INTERVAL, "hook_params": FAST_HOOK, **wait}
    return KlingRequestTrigger(RequestWait.from_dict({"request_id": rid, **options}))


async def _events(triggers: list[KlingRequestTrigger]) -> list[dict]:
    async def first(trigger: KlingRequestTrigger) -> dict:
        return (await anext(trigger.run())).payload

    return list(await asyncio.gather(*(first(trigger) for trigger in triggers)))


def _answered_after(sim, rid: str, when: float) -> int:
    return sum(1 for call, at in sim.history[rid] if call in ("status", "result") and at >= when)


async def _staggered(triggers: list[KlingRequestTrigger]) -> list[dict]:
    """The triggers started one after the other over one poll interval, as tasks defer in a real triggerer."""

    async def first(n: int, trigger: KlingRequestTrigger) -> dict:
        await asyncio.sleep(INTERVAL * n / len(triggers))
        return (await anext(trigger.run())).payload

    return list(await asyncio.gather(*(first(n, trigger) for n, trigger in enumerate(triggers))))


async def _through_an_outage(sim) -> tuple[list[dict], float]:
    rids = _submit_many(sim, Scenario(queue_seconds=OUTAGE + 1.5, run_seconds=0.2), WAITS)

    async def outage() -> float:
        await asyncio.sleep(0.5)  # every wait has polled
        sim.outage(True)
        await asyncio.sleep(OUTAGE)
        sim.outage(False)
        return time.time()

    events, back = await asyncio.gather(_staggered([_trigger(rid) for rid in rids]), outage())
    assert {event["outcome"] for event in events} == {"succeeded"}
    for rid in rids:  # every wait polled again, and was answered, once the API was back
        assert _answered_after(sim, rid, back) >= 1
    return events, back


async def test_an_outage_costs_one_call_per_probe_and_its_end_is_seen_by_every_wait(sim, caplog, capfd):
    caplog.set_level(logging.INFO)
    await _through_an_outage(sim)
    # One probe every PROBE_SHARE of the interval, each a single call (aiohttp would send a dropped
    # GET twice), and the few polls already on their way when it went down.
    assert sim.attempts_while_down <= OUTAGE / (PROBE_SHARE * INTERVAL) + 6
    out = capfd.readouterr().out
    for line in (f"Kling API at {sim.url} did not answer", f"Kling API at {sim.url} answers again, after"):
        # Once per account, not per wait (Airflow 3 logs to the capture only, Airflow 2 to stdout too).
        assert max(caplog.text.count(line), out.count(line)) == 1


async def test_each_wait_alone_costs_the_api_far_more_attempts_than_the_shared_view(sim, monkeypatch):
    """The behaviour before, side by side: each wait retrying each poll, then backing off on its own."""
    from airflow_provider_kling.hooks.kling import KlingAsyncHook

    await _through_an_outage(sim)
    shared = sim.attempts_while_down
    sim.reset()
    monkeypatch.setattr(KlingAsyncHook, "shares_account_health", False)
    await _through_an_outage(sim)
    assert sim.attempts_while_down > 3 * shared


async def test_a_429_with_retry_after_pauses_every_wait_of_the_account(sim):
    rids = _submit_many(sim, Scenario(queue_seconds=3.0, run_seconds=0.2), 10)

    async def limit() -> None:
        await asyncio.sleep(0.5)
        sim.rate_limit(2.5, retry_after=1)  # 2.5 s of 429s, each saying "again in 1 s"

    events, _ = await asyncio.gather(_staggered([_trigger(rid) for rid in rids]), limit())
    assert {event["outcome"] for event in events} == {"succeeded"}
    # Each wait on its own would have been refused at every poll: 10 waits, 5 polls a second. Shared,
    # the account calls once per Retry-After: 3 in the window (at its start, after 1 s, after 2 s).
    assert 1 <= sim.refused_while_limited <= 5


async def test_a_permanent_answer_ends_only_the_wait_it_concerns(sim):
    rids = _submit_many(sim, Scenario(queue_seconds=0.6, run_seconds=0.2), 3)
    triggers = [_trigger(rid) for rid in rids] + [_trigger("sim-unknown-request")]
    events = await _events(triggers)
    assert [event["outcome"] for event in events] == ["succeeded"] * 3 + ["KlingNotFoundError"]


async def test_waits_held_back_in_an_outage_still_end_at_their_deadline(sim):
    """A wait that never calls while its account is down still meets its deadline, with the outage's error."""
    rids = _submit_many(sim, Scenario(queue_seconds=60, run_seconds=0.2), 10)
    sim.outage(True)
    try:
        events = await _staggered([_trigger(rid, deadline=time.time() + 1.0) for rid in rids])
    finally:
        sim.outage(False)
    assert {event["outcome"] for event in events} <= {"KlingConnectionError", "KlingHTTPTimeoutError"}
    assert len(events) == 10
    assert sim.attempts_while_down <= 2 * (1.0 / INTERVAL + 1) + 2 * 10  # probes, and each wait's first poll


def test_while_down_a_probe_goes_out_every_share_of_the_interval():
    """The cadence that bounds both an outage's cost and how late its end is seen (on a clock of its own)."""
    from airflow_provider_kling.exceptions import KlingConnectionError
    from airflow_provider_kling.hooks.account_health import AccountHealth

    health = AccountHealth("http://api.example")
    health.failed(KlingConnectionError("refused"), 100.0, 5.0, 30.0, None)
    # A due wait asks every 0.1 s for a minute; the account grants a probe only so often.
    granted = [t / 10 for t in range(1000, 1600) if health.turn(t / 10, 5.0) == 0]
    gaps = [b - a for a, b in itertools.pairwise(granted)]
    assert granted[0] == pytest.approx(100.0 + PROBE_SHARE * 5.0)
    assert gaps == pytest.approx([PROBE_SHARE * 5.0] * len(gaps), abs=0.11)
    assert len(granted) / (60 / 5.0) <= 2  # at most two calls per poll interval while it is down


async def test_once_the_api_answers_every_held_wait_polls_within_a_share_of_the_interval(sim, mocker):
    """The end of an outage is seen by every wait within (probe share + spread share) of a poll interval."""
    from airflow_provider_kling import follow
    from airflow_provider_kling.hooks.account_health import SPREAD_SHARE

    spread = mocker.spy(follow.random, "uniform")
    await _through_an_outage(sim)
    windows = {call.args for call in spread.call_args_list}
    assert windows == {(0, SPREAD_SHARE * INTERVAL)}
    assert spread.call_count >= WAITS - 1  # every wait held back (but the probe's) spread its next poll
    assert PROBE_SHARE + SPREAD_SHARE <= 1.2  # 6 s at 5-s polls, within the bar of one interval and 2 s
