"""
One HTTP exchange with RunComfy, sync (``requests``) and async (``aiohttp``), and the translation
of each library's failures into :class:`KlingConnectionError` / :class:`KlingHTTPTimeoutError`.

Both say whether the request may have reached the server (``request_sent``): only a connection
never made proves that a paid submit created nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import requests
from urllib3.exceptions import NewConnectionError

from airflow_provider_kling.exceptions import KlingConnectionError, KlingHTTPTimeoutError
from airflow_provider_kling.hooks.account_health import CallHeldBack
from airflow_provider_kling.hooks.responses import retry_after_seconds

if TYPE_CHECKING:
    from collections.abc import Mapping

    import aiohttp

    from airflow_provider_kling.hooks.account_health import Turn
    from airflow_provider_kling.hooks.session_pool import LoopShare
    from airflow_provider_kling.hooks.target import ApiTarget


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as the hooks read it."""

    status_code: int
    text: str
    retry_after: float | None


@dataclass(frozen=True)
class Timeouts:
    """Seconds to open a connection, and to wait for an answer once the request is sent."""

    connect: float
    read: float

    @cached_property
    def aiohttp(self) -> aiohttp.ClientTimeout:
        """The same limits for aiohttp, built once (a triggerer makes thousands of calls)."""
        import aiohttp  # here, not at the top: the sync side (the `kling` command) never loads it

        return aiohttp.ClientTimeout(sock_connect=self.connect, sock_read=self.read)


def send(
    session: requests.Session,
    target: ApiTarget,
    method: str,
    path: str,
    timeouts: Timeouts,
    *,
    json_body: Any = None,
    params: Mapping[str, str] | None = None,
) -> Answer:
    """One call through ``requests``; redirects are not followed (the token stays on the API host)."""
    try:
        response = session.request(
            method,
            target.base_url + path,
            json=json_body,
            params=params,
            headers=target.headers,
            timeout=(timeouts.connect, timeouts.read),
            allow_redirects=False,
        )
    except requests.ConnectTimeout as err:
        raise KlingHTTPTimeoutError(
            f"{method} {path}: no connection within {timeouts.connect}s", request_sent=False
        ) from err
    except requests.Timeout as err:
        raise KlingHTTPTimeoutError(f"{method} {path}: no answer within {timeouts.read}s", request_sent=True) from err
    except requests.ConnectionError as err:
        raise KlingConnectionError(
            f"{method} {path}: connection failed ({type(err).__name__})", request_sent=not never_connected(err)
        ) from err
    except requests.RequestException as err:
        raise KlingConnectionError(f"{method} {path}: {type(err).__name__}", request_sent=True) from err
    return Answer(response.status_code, response.text, retry_after_seconds(response.headers))


async def send_async(
    share: LoopShare,
    target: ApiTarget,
    method: str,
    path: str,
    timeouts: Timeouts,
    *,
    json_body: Any = None,
    params: Mapping[str, str] | None = None,
    turn: Turn | None = None,
) -> Answer:
    """
    One call through the event loop's shared ``aiohttp`` session, waiting for a free socket first.

    :param turn: the call's turn on its account, asked once the socket is free: a call that is no
        longer wanted (its account went down while it waited) raises
        :class:`~.account_health.CallHeldBack`, unsent; the account's probe goes through the probe
        session.
    """
    import aiohttp  # already loaded by the session: a lookup, not an import

    try:
        async with share.slots:
            session = share.session
            if turn is not None:
                if not turn.wanted():
                    raise CallHeldBack
                if turn.probe:
                    session = share.probe_session()
            async with session.request(
                method,
                target.base_url + path,
                json=json_body,
                params=params,
                headers=target.headers,
                timeout=timeouts.aiohttp,
                allow_redirects=False,
            ) as response:
                # RunComfy answers UTF-8 JSON: decoding directly skips aiohttp's charset sniffing.
                text = (await response.read()).decode("utf-8", errors="replace")
                status = response.status
                return Answer(status, text, retry_after_seconds(response.headers) if status >= 400 else None)
    except aiohttp.ConnectionTimeoutError as err:
        raise KlingHTTPTimeoutError(
            f"{method} {path}: no connection within {timeouts.connect}s", request_sent=False
        ) from err
    except aiohttp.ClientConnectorError as err:
        raise KlingConnectionError(
            f"{method} {path}: could not connect ({type(err).__name__})", request_sent=False
        ) from err
    except (aiohttp.SocketTimeoutError, asyncio.TimeoutError) as err:
        raise KlingHTTPTimeoutError(f"{method} {path}: no answer within {timeouts.read}s", request_sent=True) from err
    except aiohttp.ClientError as err:
        raise KlingConnectionError(
            f"{method} {path}: connection failed ({type(err).__name__})", request_sent=True
        ) from err


def never_connected(err: requests.ConnectionError) -> bool:
    """Whether requests failed before a TCP connection existed (so nothing was sent)."""
    cause: BaseException | None = err
    while cause is not None:
        reason = getattr(cause, "reason", None)
        if isinstance(cause, NewConnectionError) or isinstance(reason, NewConnectionError):
            return True
        cause = (
            cause.__cause__
            or cause.__context__
            or (cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None)
        )
    return False
