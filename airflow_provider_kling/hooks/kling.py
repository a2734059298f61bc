"""
Hooks for RunComfy's Model API: :class:`KlingHook` (sync, ``requests``) for workers and
:class:`KlingAsyncHook` (``aiohttp``) for triggers.

Both share the URL layout, the parsing of answers into typed models and errors, and one
:class:`~airflow_provider_kling.retry.RetryPolicy`, so sync and async behave alike.
The token travels only in the ``Authorization`` header of calls to the API base URL: never to
a media host, never into a log line or an error message.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
import weakref
from contextlib import closing
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import requests
import urllib3
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook
from tenacity import AsyncRetrying, Retrying

from airflow_provider_kling import __version__
from airflow_provider_kling.constants import (
    CONN_TYPE,
    CONNECT_TIMEOUT,
    CONNECTION_HIDDEN_FIELDS,
    CONNECTION_PLACEHOLDERS,
    CONNECTION_RELABELING,
    DEFAULT_BASE_URL,
    DEFAULT_CONN_ID,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    INITIAL_RETRY_DELAY,
    KLING_TEXT_TO_VIDEO_MODEL,
    MAX_ATTEMPTS,
    READ_TIMEOUT,
)
from airflow_provider_kling.deadlines import Limit, WaitLimits, give_up_message, keeps_waiting, poll_seconds
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthenticationError,
    KlingConnectionError,
    KlingError,
    KlingInputError,
    KlingMalformedResponseError,
    KlingNotFoundError,
    KlingRequestTimeout,
    KlingSubmitOutcomeUnknownError,
    KlingTimeoutError,
)
from airflow_provider_kling.models import (
    CancelOutcome,
    CancelResponse,
    ErrorBody,
    ResponseBody,
    ResultResponse,
    StatusResponse,
    SubmitResponse,
    validate_input,
)
from airflow_provider_kling.retry import RetryPolicy, is_safe_to_resubmit
from airflow_provider_kling.streaming import read_ahead

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from airflow.providers.common.compat.sdk import Connection, ObjectStoragePath
    from pydantic import BaseModel
    from tenacity import RetryCallState

ResponseT = TypeVar("ResponseT", bound=ResponseBody)

USER_AGENT = f"airflow-provider-kling/{__version__}"
#: Bytes read at a time when streaming a video.
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
#: Default cap on a downloaded video.
DEFAULT_MAX_DOWNLOAD_BYTES = 500 * 1024 * 1024


@dataclass(frozen=True)
class ApiTarget:
    """Where the API is and how to authenticate; the token is left out of ``repr``."""

    base_url: str
    token: str = field(repr=False)

    @cached_property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "User-Agent": USER_AGENT}


def api_target(conn: Connection, conn_id: str) -> ApiTarget:
    """
    Read a ``kling`` connection: ``host`` is the base URL (blank for RunComfy's), ``password`` the token.

    A host without a scheme gets ``https://`` (or the connection's ``schema`` if it is ``http``),
    and the connection's ``port`` when it has one, so the URI form ``kling://:TOKEN@HOST:PORT`` works.
    """
    token = (conn.password or "").strip()
    if not token:
        raise KlingAuthenticationError(
            f"Connection {conn_id!r} has no API token: put your RunComfy token in its password field"
        )
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        return ApiTarget(DEFAULT_BASE_URL, token)
    if "://" not in host:
        scheme = conn.schema if conn.schema in ("http", "https") else "https"
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KlingInputError(f"Connection {conn_id!r}: host must be an http(s) URL, got {host!r}")
    if conn.port and parts.port is None:
        host = f"{parts.scheme}://{parts.netloc}:{conn.port}{parts.path}"
    return ApiTarget(host, token)


def _request_path(request_id: str, action: str) -> str:
    if not isinstance(request_id, str) or not request_id.strip():
        raise KlingInputError(f"request_id: must be a non-empty string, got {request_id!r}")
    return f"/v1/requests/{quote(request_id, safe='')}/{action}"


def _model_path(model: str) -> str:
    return "/v1/models/" + quote(model.strip("/"), safe="/")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def read_answer(
    model_cls: type[ResponseT], status_code: int, text: str, *, retry_after: float | None, request_id: str | None
) -> ResponseT:
    """Turn an HTTP answer into a typed body, or the most specific :class:`KlingAPIError`."""
    if not 200 <= status_code < 300 or _has_error_code(text):
        raise KlingAPIError.from_response(status_code, text, request_id=request_id, retry_after=retry_after)
    return model_cls.from_http(status_code, text, request_id=request_id)  # type: ignore[no-any-return]


def _has_error_code(text: str) -> bool:
    # Some RunComfy endpoints answer 200 with an error body; only a cheap substring test first.
    if "error_code" not in text:
        return False
    error = ErrorBody.parse(text)
    return error is not None and error.error_code is not None


def submit_failure(exc: KlingError, model: str) -> KlingError:
    """
    The error to raise for a failed submit.

    Failures after which RunComfy certainly created nothing (a definite 4xx, 429, a connection
    never made) are raised as they are. Anything else may have created a billed request.
    """
    definite = (
        isinstance(exc, KlingAPIError) and not isinstance(exc, KlingMalformedResponseError) and not exc.is_retryable
    )
    if definite or is_safe_to_resubmit(exc):
        return exc
    return KlingSubmitOutcomeUnknownError(
        f"The submit to {model} may have created a request that will be billed, but its outcome is "
        f"unknown ({exc}). It was not repeated automatically, so that you do not pay twice: check "
        "your RunComfy request history before running this task again."
    )


def log_cancel_outcome(hook: BaseHook, request_id: str, answer: CancelResponse) -> CancelOutcome:
    if answer.outcome is CancelOutcome.CANCELLED:
        hook.log.info("Cancelled Kling request %s", request_id)
    else:
        hook.log.warning(
            "Kling request %s is already running and cannot be cancelled: it will still be billed", request_id
        )
    return answer.outcome


def _log_retry(hook: BaseHook, what: str) -> Any:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        hook.log.warning("%s failed (%s); attempt %d, retrying in %.1fs", what, exc, state.attempt_number, delay)

    return before_sleep


class _KlingHookBase(BaseHook):
    """Connection form and settings shared by the sync and the async hook."""

    conn_name_attr = "kling_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Kling (RunComfy)"

    def __init__(
        self,
        kling_conn_id: str = DEFAULT_CONN_ID,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        retry_delay: float = INITIAL_RETRY_DELAY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kling_conn_id = kling_conn_id
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retry_policy = RetryPolicy(max_attempts=max_attempts, initial_delay=retry_delay)


class KlingHook(_KlingHookBase):
    """
    Synchronous client of RunComfy's Model API, for operators and sensors on a worker.

    One ``requests`` session per hook; connect and read timeouts on every call; status, result
    and cancel retried on transient faults; the paid submit never repeated blindly.

    :param kling_conn_id: the ``kling`` connection holding the base URL and the API token.
    :param connect_timeout: seconds to open a connection.
    :param read_timeout: seconds to wait for an answer once a request is sent.
    :param max_attempts: attempts in all for a call that is safe to repeat.
    :param retry_delay: seconds before the first retry, doubled each time (with jitter).
    """

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """
        How Airflow's connection form shows a ``kling`` connection (Airflow before 3.2; later ones
        read the same form from the provider info). Airflow reads it only from the class that the
        provider info names, so it lives here, not on a base class.
        """
        return {
            "hidden_fields": list(CONNECTION_HIDDEN_FIELDS),
            "relabeling": dict(CONNECTION_RELABELING),
            "placeholders": dict(CONNECTION_PLACEHOLDERS),
        }

    @cached_property
    def target(self) -> ApiTarget:
        return api_target(self.get_connection(self.kling_conn_id), self.kling_conn_id)

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["User-Agent"] = USER_AGENT
        return session

    def close(self) -> None:
        if "session" in self.__dict__:
            self.session.close()
            del self.__dict__["session"]

    def __enter__(self) -> KlingHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(
        self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, str] | None = None
    ) -> requests.Response:
        url = self.target.base_url + path
        try:
            return self.session.request(
                method,
                url,
                json=json_body,
                params=params,
                headers=self.target.headers,
                timeout=(self.connect_timeout, self.read_timeout),
                allow_redirects=False,
            )
        except requests.ConnectTimeout as err:
            raise KlingTimeoutError(
                f"{method} {path}: no connection within {self.connect_timeout}s", request_sent=False
            ) from err
        except requests.Timeout as err:
            raise KlingTimeoutError(
                f"{method} {path}: no answer within {self.read_timeout}s", request_sent=True
            ) from err
        except requests.ConnectionError as err:
            sent = not _never_connected(err)
            raise KlingConnectionError(
                f"{method} {path}: connection failed ({type(err).__name__})", request_sent=sent
            ) from err
        except requests.RequestException as err:
            raise KlingConnectionError(f"{method} {path}: {type(err).__name__}", request_sent=True) from err

    def _call(
        self,
        model_cls: type[ResponseT],
        method: str,
        path: str,
        *,
        request_id: str | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        submit: bool = False,
    ) -> ResponseT:
        for attempt in Retrying(
            **self.retry_policy.tenacity_kwargs(submit=submit), before_sleep=_log_retry(self, f"{method} {path}")
        ):
            with attempt:
                started = time.monotonic()
                response = self._send(method, path, json_body=json_body, params=params)
                self.log.debug("%s %s -> %d in %.3fs", method, path, response.status_code, time.monotonic() - started)
                return read_answer(
                    model_cls,
                    response.status_code,
                    response.text,
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                    request_id=request_id,
                )
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def submit(self, input: Mapping[str, Any] | BaseModel, model: str = KLING_TEXT_TO_VIDEO_MODEL) -> SubmitResponse:
        """
        Submit a paid generation request; validated first, never retried blindly.

        :raises KlingInputError: invalid input; nothing was sent.
        :raises KlingSubmitOutcomeUnknownError: a request may exist and be billed.
        """
        body = validate_input(model, input)
        try:
            return self._call(SubmitResponse, "POST", _model_path(model), json_body=body, submit=True)
        except KlingError as exc:
            raise submit_failure(exc, model) from exc

    def get_status(self, request_id: str) -> StatusResponse:
        """Current state of a request: ``in_queue`` (with position), ``in_progress``, ``completed`` or ``cancelled``."""
        return self._call(StatusResponse, "GET", _request_path(request_id, "status"), request_id=request_id)

    def get_result(self, request_id: str, *, include_cost: bool = False) -> ResultResponse:
        """Outcome and output of a request (its current state while unfinished)."""
        params = {"include_cost": "true"} if include_cost else None
        return self._call(
            ResultResponse, "GET", _request_path(request_id, "result"), request_id=request_id, params=params
        )

    def cancel(self, request_id: str) -> CancelResponse:
        """Cancel a queued request; a running one answers ``not_cancellable`` and is still billed."""
        return self._call(CancelResponse, "POST", _request_path(request_id, "cancel"), request_id=request_id)

    def poll(self, request_id: str, *, include_cost: bool = False) -> tuple[StatusResponse, ResultResponse | None]:
        """One poll: the status, and the result once the request is finished (``None`` before)."""
        status = self.get_status(request_id)
        result = self.get_result(request_id, include_cost=include_cost) if status.status.is_finished else None
        return status, result

    def wait(
        self,
        request_id: str,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        queue_timeout: float | None = None,
        include_cost: bool = False,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        on_status: Callable[[StatusResponse], object] | None = None,
    ) -> ResultResponse:
        """
        Block until the request finishes and return its result (whatever its outcome).

        :param queue_timeout: seconds the request may stay queued; then it is cancelled (free).
        :param max_poll_interval: the longest wait between polls while far back in the queue.
        :param on_status: called with every status answer (a progress display, for instance).
        :raises KlingRequestTimeout: not finished within ``timeout`` seconds, or still queued after
            ``queue_timeout``; a queued request is cancelled first, so it is not billed.
        """
        limits = WaitLimits.starting_now(timeout, queue_timeout)
        while True:
            status = self.get_status(request_id)
            if on_status is not None:
                on_status(status)
            if status.status.is_finished:
                return self.get_result(request_id, include_cost=include_cost)
            limit = limits.passed(status.status)
            if limit is not None:
                self.give_up(request_id, limit)
                limits = limits.without_queue_limit()
            interval = poll_seconds(status.status, status.queue_position, poll_interval, max_poll_interval)
            time.sleep(limits.sleep_seconds(interval))

    def give_up(self, request_id: str, limit: Limit) -> None:
        """
        Cancel a request whose ``limit`` passed, then raise why; return only when it must be waited for.

        :raises KlingRequestTimeout: saying whether the request will be billed.
        """
        outcome = self.cancel_best_effort(request_id)
        if not keeps_waiting(limit, outcome):
            raise KlingRequestTimeout(give_up_message(request_id, limit, outcome), request_id=request_id)

    def cancel_best_effort(self, request_id: str) -> CancelOutcome | None:
        """Cancel, logging instead of raising; warns when the request runs and will be billed."""
        try:
            answer = self.cancel(request_id)
        except KlingError as err:
            self.log.warning("Could not cancel Kling request %s: %s", request_id, err)
            return None
        return log_cancel_outcome(self, request_id, answer)

    def download_video(
        self,
        url: str,
        destination: str | os.PathLike[str] | ObjectStoragePath,
        *,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        overwrite: bool = True,
        storage_conn_id: str | None = None,
    ) -> DownloadedVideo:
        """
        Stream a video to storage, where it appears whole or not at all.

        The destination is a local path, or any URI Airflow's ``ObjectStoragePath`` understands
        (``file://``, ``s3://``, ``gs://``...; ``storage_conn_id`` names its connection). The video
        is written in chunks (constant memory) under a temporary name beside the destination,
        checked against ``Content-Length``, then moved into place; removed on any failure. The API
        token is not sent to the media host.

        :raises KlingInputError: the URL is not http(s), or the destination exists and
            ``overwrite`` is false.
        :raises KlingError: the download failed, was cut short, or is larger than ``max_bytes``.
        """
        if urlsplit(url).scheme not in ("http", "https"):
            raise KlingInputError(f"video_url: must be an http(s) URL, got {url!r}")
        dest = storage_path(destination, storage_conn_id)
        if not overwrite and dest.exists():
            raise KlingInputError(f"destination: {dest} already exists; pass overwrite=True to replace it")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            response = self.session.get(url, stream=True, timeout=(self.connect_timeout, self.read_timeout))
        except requests.RequestException as err:
            raise KlingConnectionError(f"GET video: {type(err).__name__}", request_sent=True) from err
        with response:
            if response.status_code != 200:
                raise KlingAPIError(
                    "Could not fetch the video", status_code=response.status_code, body=response.text[:300]
                )
            expected = int(response.headers.get("Content-Length") or 0) or None
            if expected and expected > max_bytes:
                raise KlingError(f"The video is {expected} bytes, over the {max_bytes}-byte cap")
            digest = hashlib.sha256()
            size = 0
            part = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.part"
            # The next chunks are read in a second thread while this one hashes and writes.
            chunks = read_ahead(partial(response.raw.read, DOWNLOAD_CHUNK_BYTES, decode_content=True))
            try:
                with part.open("wb") as out, closing(chunks):
                    for chunk in chunks:
                        size += len(chunk)
                        if size > max_bytes:
                            raise KlingError(f"The video is over the {max_bytes}-byte cap")
                        digest.update(chunk)
                        out.write(chunk)
                if expected is not None and size != expected:
                    raise KlingConnectionError(
                        f"The video download was cut short: {size} of {expected} bytes", request_sent=True
                    )
                if isinstance(part, Path) and isinstance(dest, Path):
                    part.replace(dest)  # atomic on one file system
                else:
                    part.rename(dest)  # type: ignore[arg-type]  # object stores: copy, then delete the part
            except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
                part.unlink(missing_ok=True)
                raise KlingConnectionError(
                    f"The video download failed ({type(err).__name__})", request_sent=True
                ) from err
            except BaseException:
                part.unlink(missing_ok=True)
                raise
        return DownloadedVideo(
            path=str(dest),
            uri=dest.as_uri() if isinstance(dest, Path) else str(dest),
            size_bytes=size,
            sha256=digest.hexdigest(),
            content_type=response.headers.get("Content-Type", "application/octet-stream"),
        )

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call: tells a bad token, an unreachable host and a healthy connection apart."""
        try:
            self.get_status("airflow-connection-test")
        except KlingNotFoundError:
            return True, f"Connected to {self.target.base_url}; the token is accepted"
        except KlingAuthenticationError as err:
            return False, f"The API token was refused: {err.message}"
        except KlingConnectionError as err:
            return False, f"Could not reach {self.target.base_url}: {err}"
        except KlingError as err:
            return False, str(err)
        return True, f"Connected to {self.target.base_url}"


def storage_path(
    destination: str | os.PathLike[str] | ObjectStoragePath, conn_id: str | None = None
) -> Path | ObjectStoragePath:
    """A local :class:`~pathlib.Path` for a plain path, else an ``ObjectStoragePath`` (``s3://``...)."""
    if isinstance(destination, (str, os.PathLike)) and "://" not in os.fspath(destination):
        return Path(destination).absolute()
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    if isinstance(destination, ObjectStoragePath) and conn_id is None:
        return destination
    return ObjectStoragePath(str(destination), conn_id=conn_id)


@dataclass(frozen=True)
class DownloadedVideo:
    """A video saved by :meth:`KlingHook.download_video`."""

    path: str
    uri: str
    size_bytes: int
    sha256: str
    content_type: str


def _never_connected(err: requests.ConnectionError) -> bool:
    """Whether requests failed before a TCP connection existed (so nothing was sent)."""
    from urllib3.exceptions import NewConnectionError

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


#: How long the triggers of one event loop reuse a connection they read (a rotated token is
#: picked up by triggers started after this).
CONNECTION_CACHE_SECONDS = 300.0
#: Sockets the shared session of one event loop may open at once; as many calls are in flight.
LOOP_CONNECTION_LIMIT = 50


@dataclass
class _LoopShare:
    session: aiohttp.ClientSession
    #: A call waits here for its turn before aiohttp builds its request: thousands of waiting
    #: calls then hold a small future each, not a request object that the GC has to walk.
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(LOOP_CONNECTION_LIMIT))
    users: int = 0
    targets: dict[str, tuple[float, asyncio.Future[ApiTarget]]] = field(default_factory=dict)


class _SharedClientSessions:
    """
    One ``aiohttp.ClientSession`` per event loop, shared by every async hook running in it.

    A triggerer runs all its triggers in one loop: sharing the session shares its connection
    pool, so a thousand triggers keep a handful of sockets instead of a thousand, and a
    connection is read once for all of them (for :data:`CONNECTION_CACHE_SECONDS`). The session
    closes when its last user leaves, so short-lived loops (``dag.test()``) end cleanly.
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopShare] = weakref.WeakKeyDictionary()

    def acquire(self) -> _LoopShare:
        loop = asyncio.get_running_loop()
        share = self._by_loop.get(loop)
        if share is None or share.session.closed:
            connector = aiohttp.TCPConnector(limit=LOOP_CONNECTION_LIMIT, ttl_dns_cache=300)
            share = _LoopShare(aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}))
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
            await share.session.close()

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


shared_sessions = _SharedClientSessions()


class KlingAsyncHook(_KlingHookBase):
    """
    Asynchronous client of RunComfy's Model API, for triggers in the triggerer's event loop.

    Nothing in it blocks the loop: the connection is read with Airflow's async accessor, once
    per hook, and HTTP goes through a session shared by all hooks of the loop. Use it as
    ``async with KlingAsyncHook(...) as hook:`` to hold the shared session across calls.

    Takes the same arguments as :class:`KlingHook`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._target: ApiTarget | None = None
        self._share: _LoopShare | None = None
        #: Open ``async with`` blocks on this hook (each call opens one; so may its user).
        self._holds = 0
        self._timeout = aiohttp.ClientTimeout(sock_connect=self.connect_timeout, sock_read=self.read_timeout)

    async def get_target(self) -> ApiTarget:
        if self._target is None:
            self._target = await shared_sessions.target(self.kling_conn_id, self._read_target)
        return self._target

    async def _read_target(self) -> ApiTarget:
        conn = await get_async_connection(self.kling_conn_id, hook=self)
        return api_target(conn, self.kling_conn_id)

    async def __aenter__(self) -> KlingAsyncHook:
        if self._holds == 0:
            self._share = shared_sessions.acquire()
        self._holds += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._holds -= 1
        if self._holds == 0:
            self._share = None
            await shared_sessions.release()

    async def _send(
        self,
        share: _LoopShare,
        method: str,
        path: str,
        *,
        json_body: Any,
        params: Mapping[str, str] | None,
    ) -> tuple[int, str, float | None]:
        target = await self.get_target()
        try:
            async with (
                share.slots,
                share.session.request(
                    method,
                    target.base_url + path,
                    json=json_body,
                    params=params,
                    headers=target.headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as response,
            ):
                # RunComfy answers UTF-8 JSON: decoding directly skips aiohttp's charset sniffing.
                text = (await response.read()).decode("utf-8", errors="replace")
                return response.status, text, _retry_after(response.headers.get("Retry-After"))
        except aiohttp.ConnectionTimeoutError as err:
            raise KlingTimeoutError(
                f"{method} {path}: no connection within {self.connect_timeout}s", request_sent=False
            ) from err
        except aiohttp.ClientConnectorError as err:
            raise KlingConnectionError(
                f"{method} {path}: could not connect ({type(err).__name__})", request_sent=False
            ) from err
        except (aiohttp.SocketTimeoutError, asyncio.TimeoutError) as err:
            raise KlingTimeoutError(
                f"{method} {path}: no answer within {self.read_timeout}s", request_sent=True
            ) from err
        except aiohttp.ClientError as err:
            raise KlingConnectionError(
                f"{method} {path}: connection failed ({type(err).__name__})", request_sent=True
            ) from err

    async def _call(
        self,
        model_cls: type[ResponseT],
        method: str,
        path: str,
        *,
        request_id: str | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        submit: bool = False,
    ) -> ResponseT:
        async with self:
            assert self._share is not None
            share = self._share

            async def attempt_once() -> ResponseT:
                status, text, retry_after = await self._send(share, method, path, json_body=json_body, params=params)
                return read_answer(model_cls, status, text, retry_after=retry_after, request_id=request_id)

            # Almost every call succeeds at once, and in a triggerer with thousands of waits
            # tenacity's set-up cost a quarter of the CPU: the first attempt runs bare. A failure
            # is replayed to tenacity as its first attempt, so the policy (what is retried, how
            # many attempts in all, the backoff, the log line) is exactly the sync hook's.
            try:
                return await attempt_once()
            except KlingError as err:
                first_failure: KlingError | None = err
            async for attempt in AsyncRetrying(
                **self.retry_policy.tenacity_kwargs(submit=submit), before_sleep=_log_retry(self, f"{method} {path}")
            ):
                with attempt:
                    if first_failure is not None:
                        replayed, first_failure = first_failure, None
                        raise replayed
                    return await attempt_once()
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def submit(
        self, input: Mapping[str, Any] | BaseModel, model: str = KLING_TEXT_TO_VIDEO_MODEL
    ) -> SubmitResponse:
        """Coroutine form of :meth:`KlingHook.submit`."""
        body = validate_input(model, input)
        try:
            return await self._call(SubmitResponse, "POST", _model_path(model), json_body=body, submit=True)
        except KlingError as exc:
            raise submit_failure(exc, model) from exc

    async def get_status(self, request_id: str) -> StatusResponse:
        """Coroutine form of :meth:`KlingHook.get_status`."""
        return await self._call(StatusResponse, "GET", _request_path(request_id, "status"), request_id=request_id)

    async def get_result(self, request_id: str, *, include_cost: bool = False) -> ResultResponse:
        """Coroutine form of :meth:`KlingHook.get_result`."""
        params = {"include_cost": "true"} if include_cost else None
        return await self._call(
            ResultResponse, "GET", _request_path(request_id, "result"), request_id=request_id, params=params
        )

    async def cancel(self, request_id: str) -> CancelResponse:
        """Coroutine form of :meth:`KlingHook.cancel`."""
        return await self._call(CancelResponse, "POST", _request_path(request_id, "cancel"), request_id=request_id)

    async def give_up(self, request_id: str, limit: Limit) -> None:
        """Coroutine form of :meth:`KlingHook.give_up`."""
        outcome = await self.cancel_best_effort(request_id)
        if not keeps_waiting(limit, outcome):
            raise KlingRequestTimeout(give_up_message(request_id, limit, outcome), request_id=request_id)

    async def cancel_best_effort(self, request_id: str) -> CancelOutcome | None:
        """Coroutine form of :meth:`KlingHook.cancel_best_effort`."""
        try:
            answer = await self.cancel(request_id)
        except KlingError as err:
            self.log.warning("Could not cancel Kling request %s: %s", request_id, err)
            return None
        return log_cancel_outcome(self, request_id, answer)
