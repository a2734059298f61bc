"""
The waits of one triggerer share what the API tells any of them: an outage costs one probe per
poll interval instead of every wait's retries, its end is seen by every wait, and a 429's
Retry-After pauses them all. Many triggers, one event loop, one account, the simulator over HTTP;
the waits and the simulator on a clock of the test's own (:class:`~tests.loop_clock.LoopClock`), so
a two-minute outage at 5-s polls happens at the moments the plan says, on any machine.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kling.hooks.account_health import PROBE_SHARE, SPREAD_SHARE
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.testing import Scenario
from airflow_provider_kling.triggers.kling import KlingRequestTrigger
from airflow_provider_kling.wait import RequestWait
from tests.conftest import FAST_HOOK
from tests.loop_clock import LoopClock

if TYPE_CHECKING:
    from collections.abc import Coroutine

WAITS = 30
#: The cluster run's poll interval and API outage.
INTERVAL = 5.0
OUTAGE = 120.0


@pytest.fixture
def clock(sim, monkeypatch: pytest.MonkeyPatch) -> LoopClock:
    """The waits' loops, their holding back and the simulator's timelines and faults, on one clock."""
    from airflow_provider_kling import follow
    from airflow_provider_kling.hooks import account_health
    from airflow_provider_kling.testing import simulator

    clock = LoopClock()
    monkeypatch.setattr(follow, "time", clock)
    monkeypatch.setattr(follow, "_pause", clock.pause)
    monkeypatch.setattr(account_health, "_hold", clock.hold)
    monkeypatch.setattr(simulator, "time", clock)
    return clock


def _submit_many(sim, scenario: Scenario, count: int) -> list[str]:
    sim.script(*[scenario] * count)
    with KlingHook(**FAST_HOOK) as hook:
        return [hook.submit({"prompt": f"take {n}"}).request_id for n in range(count)]


def _trigger(rid: str, **wait) -> KlingRequestTrigger:
    options = {"poll_interval": INTERVAL, "max_poll_interval": INTERVAL, "hook_params": FAST_HOOK, **wait}
    return KlingRequestTrigger(RequestWait.from_dict({"request_id": rid, **options}))


async def _event(trigger: KlingRequestTrigger) -> dict:
    return (await anext(trigger.run())).payload


def _answered_after(sim, rid: str, when: float) -> list[float]:
    """When the API answered a poll of ``rid`` at or after ``when`` (the simulator's clock is the test's)."""
    return [at for call, at in sim.history[rid] if call in ("status", "result") and at >= when]


async def _staggered(clock: LoopClock, trigger: KlingRequestTrigger, n: int, of: int) -> dict:
    """A trigger started ``n`` ``of``-ths into a poll interval, as tasks defer one by one in a real triggerer."""
    await clock.pause(INTERVAL * n / of)
    return await _event(trigger)


def _waits(clock: LoopClock, rids: list[str]) -> list[Coroutine[Any, Any, dict]]:
    return [_staggered(clock, _trigger(rid), n, len(rids)) for n, rid in enumerate(rids)]


async def _through_an_outage(sim, clock: LoopClock, seconds: float = OUTAGE) -> tuple[list[str], float]:
    """Waits polling, the API down for ``seconds``, then back: each wait's video ready well after."""
    rids = _submit_many(sim, Scenario(queue_seconds=seconds + 3 * INTERVAL, run_seconds=INTERVAL), WAITS)

    async def outage() -> float:
        await clock.pause(INTERVAL + 1)  # every wait has polled
        sim.outage(True)
        await clock.pause(seconds)
        sim.outage(False)
        return clock.time()

    *events, back = await clock.run(*_waits(clock, rids), outage())
    assert {event["outcome"] for event in events} == {"succeeded"}
    for rid in rids:  # every wait polled again, and was answered, once the API was back
        assert _answered_after(sim, rid, back)
    return rids, back


async def test_an_outage_costs_one_call_per_probe_and_its_end_is_seen_by_every_wait(sim, clock, caplog, capfd):
    caplog.set_level(logging.INFO)
    await _through_an_outage(sim, clock)
    # One probe every PROBE_SHARE of the interval, each a single call (aiohttp would send a dropped
    # GET twice), and the first poll that found the API down.
    probes = OUTAGE / (PROBE_SHARE * INTERVAL)
    assert probes <= sim.attempts_while_down <= probes + 2
    out = capfd.readouterr().out
    for line in (f"Kling API at {sim.url} did not answer", f"Kling API at {sim.url} answers again, after"):
        # Once per account, not per wait (Airflow 3 logs to the capture only, Airflow 2 to stdout too).
        assert max(caplog.text.count(line), out.count(line)) == 1


async def test_each_wait_alone_costs_the_api_far_more_attempts_than_the_shared_view(sim, clock, monkeypatch):
    """The behaviour before, side by side: each wait retrying each poll, then backing off on its own."""
    from airflow_provider_kling.hooks.kling import KlingAsyncHook

    await _through_an_outage(sim, clock, OUTAGE / 4)
    shared = sim.attempts_while_down
    sim.reset()
    monkeypatch.setattr(KlingAsyncHook, "shares_account_health", False)
    await _through_an_outage(sim, clock, OUTAGE / 4)
    assert sim.attempts_while_down > 10 * shared


async def test_once_the_api_answers_every_held_wait_polls_within_a_share_of_the_interval(sim, clock):
    """The end of an outage is seen by every wait within (probe share + spread share) of a poll interval."""
    rids, back = await _through_an_outage(sim, clock)
    seen_back = sorted(_answered_after(sim, rid, back)[0] - back for rid in rids)
    probe, last = seen_back[0], seen_back[-1]
    assert probe <= PROBE_SHARE * INTERVAL  # the next probe finds the API back
    assert last - probe <= SPREAD_SHARE * INTERVAL + 0.01  # and every other wait polls within the spread
    assert (PROBE_SHARE + SPREAD_SHARE) * INTERVAL <= 6  # the bar: within 6 s at 5-s polls
    # Spread, not all in the same instant: a recovering API is not hit by every wait at once.
    assert len({round(at, 3) for at in seen_back}) >= WAITS // 2
    assert last - probe > SPREAD_SHARE * INTERVAL / 2


async def test_a_429_with_retry_after_pauses_every_wait_of_the_account(sim, clock):
    window, retry_after = 3 * INTERVAL, INTERVAL
    rids = _submit_many(sim, Scenario(queue_seconds=window + 2 * INTERVAL, run_seconds=INTERVAL), 10)

    async def limit() -> float:
        await clock.pause(INTERVAL + 1)
        sim.rate_limit(window, retry_after=retry_after)  # 429s for 15 s, each saying "again in 5 s"
        return clock.time()

    *events, limited = await clock.run(*_waits(clock, rids), limit())
    assert {event["outcome"] for event in events} == {"succeeded"}
    # Each wait on its own would have been refused at every poll: 10 waits, 3 polls each in the
    # window. Shared, the account calls once per Retry-After: at most 4 in the window (its start,
    # after 5, 10 and 15 s).
    assert 1 <= sim.refused_while_limited <= window / retry_after + 1
    for rid in rids:  # and every wait polled again within a Retry-After and a spread of the window's end
        assert _answered_after(sim, rid, limited + window)[0] <= limited + window + retry_after + INTERVAL


async def test_a_permanent_answer_ends_only_the_wait_it_concerns(sim, clock):
    rids = _submit_many(sim, Scenario(queue_seconds=INTERVAL, run_seconds=INTERVAL), 3)
    triggers = [_trigger(rid) for rid in rids] + [_trigger("sim-unknown-request")]
    events = await clock.run(*(_event(trigger) for trigger in triggers))
    assert [event["outcome"] for event in events] == ["succeeded"] * 3 + ["KlingNotFoundError"]


async def test_waits_held_back_in_an_outage_still_end_at_their_deadline(sim, clock):
    """A wait that never calls while its account is down still meets its deadline, with the outage's error."""
    rids = _submit_many(sim, Scenario(queue_seconds=600, run_seconds=INTERVAL), 10)
    deadline = clock.time() + 4 * INTERVAL

    async def ended(n: int, rid: str) -> tuple[dict, float]:
        return await _staggered(clock, _trigger(rid, deadline=deadline), n, 10), clock.time()

    sim.outage(True)
    try:
        ends = await clock.run(*(ended(n, rid) for n, rid in enumerate(rids)))
    finally:
        sim.outage(False)
    assert {event["outcome"] for event, _ in ends} <= {"KlingConnectionError", "KlingHTTPTimeoutError"}
    assert [at for _, at in ends] == [deadline] * 10  # each at its deadline, not a poll later
    probes = 4 * INTERVAL / (PROBE_SHARE * INTERVAL)
    assert sim.attempts_while_down <= probes + 2  # the probes and the first poll: no wait's retries


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
