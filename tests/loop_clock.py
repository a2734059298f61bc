"""
A clock of the test's own for many waits sharing one event loop, and the simulator they poll.

:class:`~tests.conftest.VirtualClock` serves one wait at a time; the waits of one triggerer run
side by side, and the simulator's requests and faults have their own timelines. Here time moves
only when every wait the test runs is parked on the clock (between polls, or held back while their
account is down): then it jumps to the earliest wake-up. A wait making an HTTP call is not parked,
so however slow the machine, every call happens at the moment of the clock the plan says, and a
60-s outage costs the run only its calls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Coroutine

#: Loop turns the parked state must hold before time moves: an event set by one wait reaches the
#: waits it wakes through a few callbacks of the loop.
SETTLE_TURNS = 5
#: Real seconds with no wait parked or finishing before the run is declared stuck.
STUCK_AFTER = 60.0


class LoopClock:
    """``time()`` and ``monotonic()`` for the code under test; ``pause`` and ``hold`` for its waits."""

    def __init__(self) -> None:
        self.started = self.now = float(int(time.time()))
        self._sleepers: list[tuple[float, int, asyncio.Future[bool]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    monotonic = time

    @property
    def elapsed(self) -> float:
        return self.now - self.started

    def _parked(self, seconds: float) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._order), future))
        return future

    async def pause(self, seconds: float) -> None:
        await self._parked(seconds)

    async def hold(self, clear: asyncio.Event | None, seconds: float) -> bool:
        """``account_health._hold`` on this clock: ``seconds``, or until ``clear`` is set; whether it was."""
        future = self._parked(seconds)
        if clear is None:
            return await future
        woken = asyncio.ensure_future(clear.wait())
        woken.add_done_callback(lambda _: future.done() or future.set_result(True))
        try:
            return await future
        finally:
            woken.cancel()

    def _waiting(self) -> int:
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def run(self, *coroutines: Coroutine[Any, Any, Any]) -> list[Any]:
        """Run the waits side by side to their ends, moving time whenever all of them are parked."""
        tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
        stuck_at = time.monotonic() + STUCK_AFTER
        while not all(task.done() for task in tasks):
            live = sum(1 for task in tasks if not task.done())
            settled = 0
            while settled < SETTLE_TURNS and self._waiting() >= live:
                await asyncio.sleep(0)
                live = sum(1 for task in tasks if not task.done())
                settled += 1
            if settled == SETTLE_TURNS and live and self._waiting() >= live:
                self._advance()
                stuck_at = time.monotonic() + STUCK_AFTER
            else:
                await asyncio.sleep(0.001)  # a wait is calling the API: real time for its answer
            if time.monotonic() > stuck_at:
                for task in tasks:
                    task.cancel()
                raise AssertionError(f"waits stuck (neither parked nor done) at {self.elapsed:.1f} s of the clock")
        return [task.result() for task in tasks]

    def _advance(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        if not self._sleepers:
            return
        self.now = max(self.now, self._sleepers[0][0])
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(False)
