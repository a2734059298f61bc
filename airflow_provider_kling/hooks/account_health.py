"""
What the API told any wait of one RunComfy account, shared by every wait of one event loop (a
triggerer): whether it is up, and how fast it may be called.

- A poll that fails for a transport reason (refused, reset, a timeout, 502/503/504) marks the
  account *down*. Its waits stop calling; one probe goes out every :data:`PROBE_SHARE` of a poll
  interval, and the probe is a real poll of one of the waits, so nothing is wasted when it is
  answered.
- When a call is answered, the account is *up* again: every wait held back wakes, and polls at a
  moment spread over :data:`SPREAD_SHARE` of a poll interval, so that a recovering API is not hit
  by all of them in the same second.
- A ``429`` with ``Retry-After`` pauses every wait of the account until then; without the header,
  a pause that doubles with each ``429`` in a row, from the poll interval to the longest interval.

The two shares bound what an outage costs and how late its end is seen. A probe every interval,
then a spread over one more, would let the last wait see the API back up to two intervals after
it was; with both at 0.6, every wait polls within 1.2 intervals of the API's return (6 s at 5-s
polls), for 1.7 probes per interval while it is down.

Nothing else changes: a wait's deadlines still end it during an outage (through the exit rule), a
permanent answer (401, 404) still ends the one wait it concerns, and a trigger moved to another
triggerer starts with that loop's view. Each change of state is logged once per account, by the
wait that saw it. The sync paths (a poke, a reschedule, the ``kling`` command) keep their
per-process retries.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_kling.constants import MAX_RETRY_AFTER

if TYPE_CHECKING:
    from airflow_provider_kling.exceptions import KlingError
    from airflow_provider_kling.hooks.target import ApiTarget
    from airflow_provider_kling.wait import Logger


#: While an account is down, one probe every this share of the poll interval.
PROBE_SHARE = 0.6
#: Once it answers again, its waits poll spread over this share of the poll interval.
SPREAD_SHARE = 0.6


class CallHeldBack(Exception):
    """A poll that waited for a socket while its account went down: it is not sent, the wait holds back."""


def account_key(target: ApiTarget) -> tuple[str, str]:
    """An account is an API base URL and a token (kept as a digest, never as itself)."""
    return target.base_url, hashlib.sha256(target.token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Turn:
    """
    A poll's turn to call, granted by its account (:meth:`AccountHealth.turn`): one attempt, the
    caller dealing with its failure.

    :param health: the account's shared view.
    :param probe: whether the call is the account's probe while it is down: it goes out on a fresh
        connection, tried once (:attr:`~.session_pool.LoopShare.probe_session`), and is wanted
        whatever happens meanwhile; any other call is wanted only while the account is clear.
    """

    health: AccountHealth
    probe: bool

    def wanted(self) -> bool:
        """Asked once a socket is free: whether to send the call, or hold it back (:class:`CallHeldBack`)."""
        return self.probe or self.health.blocked_since is None


class AccountHealth:
    """
    The shared view of one account in one event loop: *clear*, or *blocked* (down, or
    rate-limited) since a moment, with one probe allowed at a time.

    :param base_url: the account's API base URL (what the log lines name).
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        #: Unix time the account was blocked (a transport failure or a 429), ``None`` while clear.
        self.blocked_since: float | None = None
        self.reason = ""
        #: Probes sent since it was blocked, and when the next may go.
        self.probes = 0
        self.next_probe = 0.0
        self._rate_limited = 0
        self._clear: asyncio.Event | None = None
        self._failure: KlingError | None = None

    @property
    def down(self) -> bool:
        return self.blocked_since is not None

    def turn(self, now: float, interval: float) -> float:
        """
        Whether a wait whose poll is due may call now: ``0`` (as itself, or as the account's probe),
        else the seconds to hold back before asking again.
        """
        if self.blocked_since is None:
            return 0.0
        if now >= self.next_probe:
            self.next_probe = now + PROBE_SHARE * interval
            self.probes += 1
            return 0.0
        return self.next_probe - now

    async def hold(self, seconds: float) -> bool:
        """Hold back for ``seconds``, or until the account is answered again; whether it was."""
        return await _hold(self._clear, seconds)

    def failed(self, err: KlingError, now: float, interval: float, max_interval: float, log: Logger | None) -> None:
        """A poll failed for a transient reason: the account is down, or rate-limited."""
        from airflow_provider_kling.exceptions import KlingRateLimitError

        self._failure = err
        if isinstance(err, KlingRateLimitError):
            if err.retry_after is not None:
                pause = min(max(err.retry_after, 0.0), MAX_RETRY_AFTER)
            else:
                self._rate_limited += 1
                pause = min(interval * 2 ** (self._rate_limited - 1), max(max_interval, interval))
            self.next_probe = max(self.next_probe, now + pause)
            reason = f"rate-limits this account: its waits pause {pause:.1f} s, then one call tries again"
        else:
            self.next_probe = max(self.next_probe, now + PROBE_SHARE * interval)
            reason = f"did not answer ({err}): its waits pause, one probe every {PROBE_SHARE * interval:g} s"
        if self.blocked_since is None:
            self.blocked_since, self.probes, self.reason = now, 0, reason
            self._clear = asyncio.Event()
            if log is not None:
                log.warning("Kling API at %s %s", self.base_url, reason)

    def last_failure(self) -> KlingError:
        """The account's last failure, anew, for a wait that ends in the outage (at its deadline)."""
        from airflow_provider_kling.exceptions import KlingConnectionError, KlingError

        if self._failure is None:
            return KlingConnectionError(f"Kling API at {self.base_url} did not answer")
        return KlingError.from_event(self._failure.to_event())

    def answered(self, started: float, now: float, log: Logger | None) -> float | None:
        """
        A call that started at ``started`` was answered: the account is clear again, if the call
        started once it was blocked (an answer already on its way says nothing). The seconds it was
        blocked, if it was.
        """
        if self.blocked_since is None or started < self.blocked_since:
            return None
        blocked_for, probes = now - self.blocked_since, self.probes
        self.blocked_since, self._rate_limited = None, 0
        if self._clear is not None:
            self._clear.set()
            self._clear = None
        if log is not None:
            log.info("Kling API at %s answers again, after %.1f s and %d probes", self.base_url, blocked_for, probes)
        return blocked_for


async def _hold(clear: asyncio.Event | None, seconds: float) -> bool:
    """
    Wait ``seconds``, or until ``clear`` is set; whether it was. The one place a held-back wait
    waits, so a test can run the waits of an account on a clock of its own.
    """
    if clear is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(clear.wait(), timeout=seconds)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        return False
    return True
