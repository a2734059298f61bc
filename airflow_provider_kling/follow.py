"""
The loops that follow a wait: :func:`follow` on a worker (or one check, for a poke and before
deferring), :func:`follow_async` in the triggerer, and :func:`wait_for` for a client (the ``kling``
command). Each polls as the wait's plan says
(:meth:`~airflow_provider_kling.wait_plan.WaitPlan.next_step`) and does only the I/O it asks for;
an outage of the API costs a wait some polls, never the task's try (:func:`outage_pause`). At a
limit of the plan, the exit rule (:mod:`airflow_provider_kling.exit_rule`) deals with the request.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.constants import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
)
from airflow_provider_kling.wait_plan import (
    Call,
    Exit,
    GiveUp,
    PollSettings,
    WaitLimits,
    WaitPlan,
    give_up_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_kling.exceptions import KlingError
    from airflow_provider_kling.hooks.client import KlingClient
    from airflow_provider_kling.hooks.kling import KlingAsyncHook
    from airflow_provider_kling.models import ResultResponse
    from airflow_provider_kling.states import CancelOutcome

from airflow_provider_kling.exit_rule import end_wait, end_wait_async
from airflow_provider_kling.wait import Logger, RequestWait, observed


def follow(
    hook: KlingClient,
    wait: RequestWait,
    *,
    log: Logger | None,
    on_progress: Callable[[RequestWait], object] | None = None,
    sleep: Callable[[float], object] | None = None,
) -> ResultResponse | RequestWait:
    """
    Poll as ``wait.plan`` says, from ``wait.seen``, until the request finishes.

    :param log: where the exit rule says what became of the request at a limit.
    :param on_progress: called with the wait after every poll.
    :param sleep: how to wait between polls; ``None`` does not wait: the loop returns the wait as
        last seen as soon as the next poll is not due yet (a sensor's poke, a check before deferring).
    :return: the result of the finished request (whatever its outcome), or, without ``sleep``,
        the wait when the request is still waiting.
    :raises KlingWaitTimeout: a limit of the plan passed; the exit rule has dealt with the request.
    :raises KlingError: a poll failed for good (:func:`outage_pause`).
    """
    from airflow_provider_kling.exceptions import KlingError

    missed = 0
    while True:
        step = wait.plan.next_step(wait.seen, time.time())
        if isinstance(step, GiveUp):
            wait = going_on(wait, step, end_wait(hook, wait, Exit.LIMIT, log=log).outcome)
            continue
        delay = step.at - time.time()
        if delay > 0:
            if sleep is None:
                return wait
            sleep(delay)
        at = time.time()
        try:
            if step.call is Call.STATUS:
                seen, result = observed(hook.get_status(wait.request_id), at)
            else:
                seen, result = observed(hook.get_result(wait.request_id, include_cost=wait.include_cost), at)
        except KlingError as err:
            if sleep is None:
                raise  # a single check (a poke): its caller decides
            missed += 1
            sleep(outage_pause(wait, err, missed, log))
            continue
        missed = back_from_outage(wait, missed, log)
        wait = wait.saw(seen)
        if on_progress is not None:
            on_progress(wait)
        if result is not None:
            return result


async def follow_async(
    hook: KlingAsyncHook,
    wait: RequestWait,
    *,
    log: Logger | None,
    on_progress: Callable[[RequestWait], object] | None = None,
) -> ResultResponse:
    """
    :func:`follow` in an event loop, sleeping there until the request finishes. Inside the hook's
    ``async with``, the waits of one account share what the API tells any of them
    (:mod:`~airflow_provider_kling.hooks.account_health`): an outage costs one probe per poll
    interval, not a retry storm of every wait, and its end is seen by all of them within one.
    """
    from airflow_provider_kling.exceptions import KlingError
    from airflow_provider_kling.hooks.account_health import SPREAD_SHARE, CallHeldBack, Turn
    from airflow_provider_kling.retry import is_transient

    health = await hook.account_health()
    settings = wait.plan.settings
    missed = 0
    while True:
        step = wait.plan.next_step(wait.seen, time.time())
        if isinstance(step, GiveUp):
            wait = going_on(wait, step, (await end_wait_async(hook, wait, Exit.LIMIT, log=log)).outcome)
            continue
        delay = step.at - time.time()
        if delay > 0:
            await _pause(delay)
        turn = None
        if health is not None:
            now = time.time()
            deadline = wait.plan.limits.deadline
            if health.down and deadline is not None and now >= deadline:
                raise health.last_failure()  # as a wait alone would: its deadline passed in the outage
            probe = health.down
            held = min(health.turn(now, settings.interval), _until(deadline, now))
            if held > 0:
                if await health.hold(held):  # the account answered again: poll, spread
                    await _pause(random.uniform(0, SPREAD_SHARE * settings.interval))
                continue
            turn = Turn(health, probe)
        at = time.time()
        try:
            if step.call is Call.STATUS:
                answer: Any = await hook.get_status(wait.request_id, turn=turn)
            else:
                answer = await hook.get_result(wait.request_id, include_cost=wait.include_cost, turn=turn)
            seen, result = observed(answer, at)
        except CallHeldBack:
            continue  # its account went down while it waited for a socket: it holds back with the others
        except KlingError as err:
            missed += 1
            if health is None:
                await _pause(outage_pause(wait, err, missed, log))
            elif not is_transient(err) or _until(wait.plan.limits.deadline, time.time()) == 0:
                raise  # a permanent answer (401, 404) ends the one wait it concerns; so does its deadline
            else:
                health.failed(err, time.time(), settings.interval, settings.max_interval, log)
            continue
        if health is not None:
            down_for = health.answered(at, time.time(), log)
            if down_for is not None:
                _count_outage(down_for)
            missed = 0
        else:
            missed = back_from_outage(wait, missed, log)
        wait = wait.saw(seen)
        if on_progress is not None:
            on_progress(wait)
        if result is not None:
            return result


async def _pause(seconds: float) -> None:
    """Sleep in the event loop between polls (the one place the loop waits: a test can run it on a clock of its own)."""
    import asyncio

    await asyncio.sleep(seconds)


def _until(deadline: float | None, now: float) -> float:
    """
    Seconds until the wait's deadline (none: forever). A wait held back while its account is down
    wakes at it, and ends as a wait alone ends there: with the outage's error. Its queue limit is
    acted on at its next answered poll, as the plan says.
    """
    return float("inf") if deadline is None else max(deadline - now, 0.0)


def _count_outage(seconds: float) -> None:
    """``kling.api_down``: how long the account did not answer, once per outage and triggerer."""
    from airflow_provider_kling.spend import stats

    found = stats()
    if found is not None:
        found.timing("kling.api_down", timedelta(seconds=seconds))


def outage_pause(wait: RequestWait, err: KlingError, missed: int, log: Logger | None) -> float:
    """
    A poll failed after the hook's own retries: the seconds to pause before polling again, when
    the failure is transient (connection refused, a timeout, 429, 5xx) and the wait's deadline has
    not passed. An outage of the API then costs a wait some polls, never the task's try: a trigger
    that gave up after its retries (about 8 s) would send the task to a worker to fail, and each
    retry to a worker again. The pause doubles from the poll interval to ``max_poll_interval``.

    :raises Exception: ``err`` itself, when it is not transient or the deadline has passed.
    """
    from airflow_provider_kling.retry import is_transient

    deadline = wait.plan.limits.deadline
    if not is_transient(err) or (deadline is not None and time.time() >= deadline):
        raise err
    settings = wait.plan.settings
    pause = float(min(max(settings.max_interval, settings.interval), settings.interval * 2 ** (missed - 1)))
    if deadline is not None:
        pause = max(min(pause, deadline - time.time()), 0.0)
    if log is not None and missed == 1:
        log.warning(
            "Could not poll Kling request %s (%s): the wait goes on, polling again every %.0f s at most, until the "
            "API answers or the wait's deadline",
            wait.request_id,
            err,
            settings.max_interval,
        )
    return pause


def back_from_outage(wait: RequestWait, missed: int, log: Logger | None) -> int:
    """After a poll that answered: say so if polls had failed before it. Returns the new count of missed polls."""
    if missed and log is not None:
        log.info("Kling request %s answered again after %d failed polls", wait.request_id, missed)
    return 0


def wait_for(
    hook: KlingClient,
    request_id: str,
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    timeout: float | None = DEFAULT_TIMEOUT,
    queue_timeout: float | None = None,
    include_cost: bool = False,
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
    on_progress: Callable[[RequestWait], object] | None = None,
) -> ResultResponse:
    """
    Block until the request finishes and return its result (whatever its outcome): how the ``kling`` command waits.

    :param poll_interval: seconds between polls.
    :param timeout: seconds to wait in all; ``None`` for no limit.
    :param queue_timeout: seconds the request may stay queued; then it is cancelled (free).
    :param include_cost: ask the result call for the request's ``cost``.
    :param max_poll_interval: the longest wait between polls while far back in the queue.
    :param on_progress: called with the wait after every poll (a progress display, for instance).
    :raises KlingWaitTimeout: not finished within ``timeout`` seconds, or still queued after
        ``queue_timeout``; a queued request is cancelled first, so it is not billed.
    """
    plan = WaitPlan(
        PollSettings(poll_interval, max_poll_interval), WaitLimits.starting(time.time(), timeout, queue_timeout)
    )
    wait = RequestWait(request_id, plan, include_cost=include_cost)
    result = follow(hook, wait, log=hook.log, on_progress=on_progress, sleep=hook.sleep)
    assert not isinstance(result, RequestWait)  # follow() sleeps until the end when given a sleep
    return result


def going_on(wait: RequestWait, step: GiveUp, outcome: CancelOutcome | None) -> RequestWait:
    """The wait to go on with after giving up at ``step``; raises :class:`KlingWaitTimeout` when it stops there."""
    assert wait.seen is not None  # a limit is acted on only after a poll
    after = wait.plan.after_give_up(step, outcome, wait.seen)
    if after is None:
        from airflow_provider_kling.exceptions import KlingWaitTimeout

        rid = wait.request_id
        cancel_outcome = None if outcome is None else outcome.value
        raise KlingWaitTimeout(give_up_message(rid, step.limit, outcome), request_id=rid, cancel_outcome=cancel_outcome)
    plan, seen = after
    return replace(wait, plan=plan, seen=seen)
