"""
One ``aiohttp.ClientSession`` per event loop, shared by every :class:`KlingAsyncHook` running in it.

A triggerer runs all its triggers in one loop: sharing the session shares its connection pool, so
a thousand triggers keep a handful of sockets instead of a thousand, and a connection is read once
for all of them.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_kling.hooks.account_health import AccountHealth, account_key
from airflow_provider_kling.hooks.target import USER_AGENT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import aiohttp

    from airflow_provider_kling.hooks.target import ApiTarget

#: How long the triggers of one event loop reuse a connection they read (a rotated token is
#: picked up by triggers started after this).
CONNECTION_CACHE_SECONDS = 300.0
#: Sockets the shared session of one event loop may open at once; as many calls are in flight.
LOOP_CONNECTION_LIMIT = 50


@dataclass
class LoopShare:
    session: aiohttp.ClientSession
    #: A call waits here for its turn before aiohttp builds its request: thousands of waiting
    #: calls then hold a small future each, not a request object that the GC has to walk.
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(LOOP_CONNECTION_LIMIT))
    users: int = 0
    targets: dict[str, tuple[float, asyncio.Future[ApiTarget]]] = field(default_factory=dict)
    #: What the API told any wait of this loop, per account (base URL, token digest).
    accounts: dict[tuple[str, str], AccountHealth] = field(default_factory=dict)
    _probes: aiohttp.ClientSession | None = None

    def probe_session(self) -> aiohttp.ClientSession:
        """
        The session of an account's probes while it is down: a new connection per call, tried
        once. aiohttp sends an idempotent call a second time when its connection is dropped (a
        keep-alive connection the server closed while idle), which is right for a poll but makes
        each probe two calls against a load balancer that drops them; a dropped probe is simply
        the account still down.
        """
        if self._probes is None or self._probes.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=LOOP_CONNECTION_LIMIT, force_close=True, ttl_dns_cache=300)
            self._probes = aiohttp.ClientSession(connector=connector, headers=dict(self.session.headers))
            # aiohttp's switch for that second send has no public name yet (its own test client
            # sets it): without it a probe is two calls, which the outage tests count.
            if hasattr(self._probes, "_retry_connection"):
                self._probes._retry_connection = False
        return self._probes

    async def close(self) -> None:
        await self.session.close()
        if self._probes is not None:
            await self._probes.close()

    def health(self, target: ApiTarget) -> AccountHealth:
        """The shared view of ``target``'s account in this loop."""
        key = account_key(target)
        found = self.accounts.get(key)
        if found is None:
            found = self.accounts[key] = AccountHealth(target.base_url)
        return found


class SharedClientSessions:
    """
    One ``aiohttp.ClientSession`` per event loop, shared by every async hook running in it.

    A triggerer runs all its triggers in one loop: sharing the session shares its connection
    pool, so a thousand triggers keep a handful of sockets instead of a thousand, and a
    connection is read once for all of them (for :data:`CONNECTION_CACHE_SECONDS`). The session
    closes when its last user leaves, so short-lived loops (``dag.test()``) end cleanly.
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopShare] = weakref.WeakKeyDictionary()

    def acquire(self) -> LoopShare:
        loop = asyncio.get_running_loop()
        share = self._by_loop.get(loop)
        if share is None or share.session.closed:
            import aiohttp  # here, not at the top: a worker imports the hooks, and never needs aiohttp

            connector = aiohttp.TCPConnector(limit=LOOP_CONNECTION_LIMIT, ttl_dns_cache=300)
            agent = f"{USER_AGENT} aiohttp/{aiohttp.__version__}"
            share = LoopShare(aiohttp.ClientSession(connector=connector, headers={"User-Agent": agent}))
            self._by_loop[loop] = share
        share.users += 1
        return share

    async def release(self) -> None:
        share = self._by_loop.get(asyncio.get_running_loop())
        if share is None:
            return
        share.users -= 1
        if share.users <= 0:
            del self._by_loop[asyncio.get_running_loop()]
            await share.close()

    async def target(self, conn_id: str, read: Callable[[], Awaitable[ApiTarget]]) -> ApiTarget:
        """The API target of ``conn_id``, read once for every hook of this loop (while shared)."""
        share = self._by_loop.get(asyncio.get_running_loop())
        if share is None:
            return await read()
        now = time.monotonic()
        cached = share.targets.get(conn_id)
        if cached is None or cached[0] < now or (cached[1].done() and cached[1].exception() is not None):
            cached = (now + CONNECTION_CACHE_SECONDS, asyncio.ensure_future(read()))
            share.targets[conn_id] = cached
        return await asyncio.shield(cached[1])

    def users(self) -> int:
        """How many hooks hold the current loop's session (for tests and benchmarks)."""
        share = self._by_loop.get(asyncio.get_running_loop())
        return share.users if share else 0


shared_sessions = SharedClientSessions()
