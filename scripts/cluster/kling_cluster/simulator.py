"""The simulated RunComfy of the cluster run: realistic timelines, its faults switched on and off by the scenario."""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_provider_kling.testing.simulator import Fault, RunComfySimulator, Scenario

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


from kling_cluster.settings import GENERATION, RACE, Shape

# --- the simulated RunComfy -----------------------------------------------------------------

#: Whether the call being answered comes from a triggerer (:func:`from_triggerer`).
FROM_TRIGGERER: contextvars.ContextVar[bool] = contextvars.ContextVar("from_triggerer", default=False)


def from_triggerer(user_agent: str) -> bool:
    """The provider's async session (the triggers') names aiohttp in its User-Agent, the workers' requests."""
    return " aiohttp/" in user_agent


class ClusterSimulator(RunComfySimulator):
    """
    The simulator with a realistic timeline per generation (fixed by its prompt, so a re-run is the
    same), every first status call held back (up to ``max_held``) while a worker is to be killed,
    and a window in which the API refuses.
    """

    def __init__(self, shape: Shape, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shape = shape
        #: While set, the first status call of every generation (up to ``max_held``: both workers full) is held
        #: back until ``released``: its task sits between its submit and its deferral.
        self.hold_first_status = threading.Event()
        self.released = threading.Event()
        self.max_held = 2 * shape.worker_concurrency
        self.holding: set[str] = set()
        self.refusing_until = 0.0
        self._refusals = 0
        self._refused_at: list[tuple[float, bool]] = []
        self.submits_by_generation: dict[int, int] = {}
        #: Who made each answered call of :attr:`history`, in its order: ``True`` for a triggerer's wait.
        self.by_triggerer: dict[str, list[bool]] = {}

    @property
    def refused(self) -> int:
        """Calls answered 429 or 503 in the refusal window."""
        return self._refusals

    def refusal_times(self, triggerers_only: bool = False) -> list[float]:
        """When each call of the refusal window was answered 429 or 503 (those of the triggerers' waits only)."""
        return [at for at, by_triggerer in self._refused_at if by_triggerer or not triggerers_only]

    def app(self) -> web.Application:
        app = super().app()
        app.middlewares.append(self._caller)
        return app

    @web.middleware
    async def _caller(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        FROM_TRIGGERER.set(from_triggerer(request.headers.get("User-Agent", "")))
        return await handler(request)

    def _scenario_for(self, body: dict[str, Any]) -> Scenario:
        if RACE.search(str(body.get("prompt", ""))):
            return Scenario(queue_seconds=2, run_seconds=3)
        match = GENERATION.search(str(body.get("prompt", "")))
        index = int(match.group(1)) if match else 0
        draw = random.Random(index)
        low, high = self.shape.queue_seconds
        # Rendering: log-normal around the median, a long tail cut at render_max.
        render = min(self.shape.render_max, draw.lognormvariate(0, 0.5) * self.shape.render_median)
        with self._lock:
            self.submits_by_generation[index] = self.submits_by_generation.get(index, 0) + 1
        return Scenario(queue_seconds=draw.uniform(low, high), run_seconds=render, queue_position=draw.randint(1, 40))

    def _record(self, request_id: str, call: str) -> None:
        super()._record(request_id, call)
        with self._lock:
            self.by_triggerer.setdefault(request_id, []).append(FROM_TRIGGERER.get())

    def _next_fault(self, call: str) -> Fault | None:
        if time.time() < self.refusing_until and call in ("submit", "status", "result"):
            with self._lock:
                self.calls[call] += 1
                self._refusals += 1
                self._refused_at.append((time.time(), FROM_TRIGGERER.get()))
                odd = self._refusals % 2
            if call == "submit" or odd:
                return Fault("status", 429, body='{"error_message": "rate limited"}', headers={"Retry-After": "1"})
            return Fault.proxy_error(503)
        return super()._next_fault(call)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["request_id"]
        if self.hold_first_status.is_set() and rid in self.requests and self.polls[rid] == 0:
            index = self._index(rid)
            if index >= 0 and rid not in self.holding and len(self.holding) < self.max_held:
                self.holding.add(rid)
                for _ in range(1200):  # at most two minutes
                    if self.released.is_set():
                        break
                    await asyncio.sleep(0.1)
        return await super()._status(request)

    def go_down(self, seconds: float) -> None:
        """
        For ``seconds``, accept every API call and drop its connection, as a failing load balancer
        does, counting the attempts (:attr:`attempts_while_down`); then answer again. Requests and
        their timelines carry on meanwhile.
        """
        self.outage(True)
        time.sleep(seconds)
        self.outage(False)

    def _index(self, rid: str) -> int:
        match = GENERATION.search(str(self.requests[rid].input.get("prompt", "")))
        return int(match.group(1)) if match else -1

    def generations(self) -> list[str]:
        """The requests of the main run (the budget race's are not among them)."""
        return [rid for rid in self.requests if self._index(rid) >= 0]

    def racers(self) -> list[str]:
        return [rid for rid in self.requests if RACE.search(str(self.requests[rid].input.get("prompt", "")))]

    def cost_reported(self) -> float:
        """What the result calls reported as cost: 0.1 a second of each succeeded request asked with include_cost."""
        return sum(
            0.1 * int(r.input.get("duration", 5))
            for r in self.requests.values()
            if r.scenario.outcome == "succeeded" and r.cancelled_at is None
        )

    def ready_at(self, rid: str, clock_offset: float) -> float:
        """When the video of ``rid`` was ready on the server (Unix seconds)."""
        sim_request = self.requests[rid]
        return sim_request.created + sum(self._timeline(sim_request)) + clock_offset

    def phase_of(self, rid: str) -> str:
        return self._phase(self.requests[rid])
