"""
Hooks for RunComfy's Model API: :class:`KlingHook` (sync, ``requests``) for workers and
:class:`KlingAsyncHook` (``aiohttp``) for triggers.

Both speak the same four calls through one :class:`~airflow_provider_kling.retry.RetryPolicy`, and
wait the same way: their ``follow`` loops do only the I/O that the
:class:`~airflow_provider_kling.wait_plan.WaitPlan` asks for. The token travels only in the
``Authorization`` header of calls to the API base URL: never to a media host, never into a log
line or an error message.

The parts live beside this module: :mod:`.target` (the connection), :mod:`.transport` (one HTTP
exchange and its failures), :mod:`.responses` (answers into typed bodies or errors),
:mod:`.session_pool` (the async session shared per event loop) and :mod:`.download`.
"""

from __future__ import annotations

import asyncio
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

import requests
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook
from tenacity import AsyncRetrying, Retrying

from airflow_provider_kling.constants import (
    CONN_TYPE,
    CONNECT_TIMEOUT,
    CONNECTION_HIDDEN_FIELDS,
    CONNECTION_PLACEHOLDERS,
    CONNECTION_RELABELING,
    DEFAULT_CONN_ID,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    INITIAL_RETRY_DELAY,
    KLING_TEXT_TO_VIDEO_MODEL,
    MAX_ATTEMPTS,
    MAX_VIDEO_BYTES,
    READ_TIMEOUT,
)
from airflow_provider_kling.exceptions import (
    KlingAuthenticationError,
    KlingConnectionError,
    KlingError,
    KlingNotFoundError,
    KlingWaitTimeout,
)
from airflow_provider_kling.hooks.download import DownloadedVideo, download_video
from airflow_provider_kling.hooks.responses import read_answer, submit_failure
from airflow_provider_kling.hooks.session_pool import shared_sessions
from airflow_provider_kling.hooks.target import USER_AGENT, ApiTarget, api_target, model_path, request_path
from airflow_provider_kling.hooks.transport import Timeouts, send, send_async
from airflow_provider_kling.models import (
    CancelResponse,
    ResponseBody,
    ResultResponse,
    StatusResponse,
    SubmitResponse,
    validate_input,
)
from airflow_provider_kling.retry import RetryPolicy
from airflow_provider_kling.states import CancelOutcome
from airflow_provider_kling.wait_plan import Call, GiveUp, PollSettings, Seen, WaitLimits, WaitPlan, give_up_message

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Mapping
    from typing import TypeVar

    import aiohttp
    from airflow.providers.common.compat.sdk import ObjectStoragePath
    from pydantic import BaseModel
    from tenacity import RetryCallState

    from airflow_provider_kling.hooks.session_pool import LoopShare

    ResponseT = TypeVar("ResponseT", bound=ResponseBody)

__all__ = ["DownloadedVideo", "KlingAsyncHook", "KlingHook", "api_target", "shared_sessions"]


def log_cancel_outcome(hook: BaseHook, request_id: str, answer: CancelResponse) -> CancelOutcome:
    if answer.outcome is CancelOutcome.CANCELLED:
        hook.log.info("Cancelled Kling request %s: it was still queued, so it will not be billed", request_id)
    else:
        hook.log.warning(
            "Kling request %s is already running and cannot be cancelled: it will still be billed", request_id
        )
    return answer.outcome


def observed(answer: StatusResponse | ResultResponse, at: float) -> tuple[Seen, ResultResponse | None]:
    """What a status or result answer, asked for at ``at``, says: the state, and the final result if any."""
    if isinstance(answer, StatusResponse):
        return Seen(answer.status, answer.queue_position, at), None
    return Seen(answer.status.request_status, None, at), answer if answer.status.is_terminal else None


def going_on(
    request_id: str, plan: WaitPlan, step: GiveUp, outcome: CancelOutcome | None, seen: Seen
) -> tuple[WaitPlan, Seen]:
    """The plan and state to go on with after cancelling at ``step``; raises when the wait stops there."""
    after = plan.after_give_up(step, outcome, seen)
    if after is None:
        raise KlingWaitTimeout(give_up_message(request_id, step.limit, outcome), request_id=request_id)
    return after


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
        self.timeouts = Timeouts(connect_timeout, read_timeout)
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
    :param sleep: how the hook waits, between retries and between polls (``time.sleep``; tests
        pass their own to see the waits without waiting).
    """

    def __init__(self, *args: Any, sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sleep = sleep

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
            **self.retry_policy.tenacity_kwargs(submit=submit),
            before_sleep=_log_retry(self, f"{method} {path}"),
            sleep=self.sleep,
        ):
            with attempt:
                answer = send(
                    self.session, self.target, method, path, self.timeouts, json_body=json_body, params=params
                )
                self.log.debug("%s %s -> %d", method, path, answer.status_code)
                return read_answer(
                    model_cls, answer.status_code, answer.text, retry_after=answer.retry_after, request_id=request_id
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
            return self._call(SubmitResponse, "POST", model_path(model), json_body=body, submit=True)
        except KlingError as exc:
            raise submit_failure(exc, model) from exc

    def get_status(self, request_id: str) -> StatusResponse:
        """Current state of a request: ``in_queue`` (with position), ``in_progress``, ``completed`` or ``cancelled``."""
        return self._call(StatusResponse, "GET", request_path(request_id, "status"), request_id=request_id)

    def get_result(self, request_id: str, *, include_cost: bool = False) -> ResultResponse:
        """Outcome and output of a request (its current state while unfinished)."""
        params = {"include_cost": "true"} if include_cost else None
        return self._call(
            ResultResponse, "GET", request_path(request_id, "result"), request_id=request_id, params=params
        )

    def cancel(self, request_id: str) -> CancelResponse:
        """Cancel a queued request; a running one answers ``not_cancellable`` and is still billed."""
        return self._call(CancelResponse, "POST", request_path(request_id, "cancel"), request_id=request_id)

    def cancel_best_effort(self, request_id: str) -> CancelOutcome | None:
        """Cancel, logging instead of raising; warns when the request runs and will be billed."""
        try:
            answer = self.cancel(request_id)
        except KlingError as err:
            self.log.warning("Could not cancel Kling request %s: %s", request_id, err)
            return None
        return log_cancel_outcome(self, request_id, answer)

    # --- waiting: a thin loop over the WaitPlan -----------------------------------------------

    def poll(self, request_id: str, call: Call, *, include_cost: bool = False) -> tuple[Seen, ResultResponse | None]:
        """One poll by ``call``: what it saw, and the result once the request is finished (``None`` before)."""
        at = time.time()
        if call is Call.STATUS:
            return observed(self.get_status(request_id), at)
        return observed(self.get_result(request_id, include_cost=include_cost), at)

    def follow(
        self,
        request_id: str,
        plan: WaitPlan,
        *,
        seen: Seen | None = None,
        include_cost: bool = False,
        on_progress: Callable[[Seen], object] | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> ResultResponse | Seen:
        """
        Poll as ``plan`` says, from ``seen`` (the last poll, if any), until the request finishes.

        :param sleep: how to wait between polls; ``None`` does not wait: the loop returns what it
            saw last as soon as the next poll is not due yet (a sensor's poke, a task's check
            before deferring).
        :return: the result of the finished request (whatever its outcome), or, without ``sleep``,
            the last :class:`Seen` when the request is still waiting.
        :raises KlingWaitTimeout: a limit of ``plan`` passed; a queued request was cancelled first.
        """
        while True:
            step = plan.next_step(seen, time.time())
            if isinstance(step, GiveUp):
                assert seen is not None  # a limit is acted on only after a poll
                plan, seen = going_on(request_id, plan, step, self.cancel_best_effort(request_id), seen)
                continue
            delay = step.at - time.time()
            if delay > 0:
                if sleep is None:
                    assert seen is not None  # the first poll is due at once
                    return seen
                sleep(delay)
            seen, result = self.poll(request_id, step.call, include_cost=include_cost)
            if on_progress is not None:
                on_progress(seen)
            if result is not None:
                return result

    def wait(
        self,
        request_id: str,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | None = DEFAULT_TIMEOUT,
        queue_timeout: float | None = None,
        include_cost: bool = False,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        on_progress: Callable[[Seen], object] | None = None,
    ) -> ResultResponse:
        """
        Block until the request finishes and return its result (whatever its outcome).

        :param poll_interval: seconds between polls.
        :param timeout: seconds to wait in all; ``None`` for no limit.
        :param queue_timeout: seconds the request may stay queued; then it is cancelled (free).
        :param include_cost: ask the result call for the request's ``cost``.
        :param max_poll_interval: the longest wait between polls while far back in the queue.
        :param on_progress: called with what every poll saw (a progress display, for instance).
        :raises KlingWaitTimeout: not finished within ``timeout`` seconds, or still queued after
            ``queue_timeout``; a queued request is cancelled first, so it is not billed.
        """
        plan = WaitPlan(
            PollSettings(poll_interval, max_poll_interval), WaitLimits.starting(time.time(), timeout, queue_timeout)
        )
        result = self.follow(request_id, plan, include_cost=include_cost, on_progress=on_progress, sleep=self.sleep)
        assert isinstance(result, ResultResponse)  # follow() sleeps until the end when given a sleep
        return result

    def download_video(
        self,
        url: str,
        destination: str | os.PathLike[str] | ObjectStoragePath,
        *,
        max_bytes: int = MAX_VIDEO_BYTES,
        overwrite: bool = True,
        storage_conn_id: str | None = None,
    ) -> DownloadedVideo:
        """
        Stream a video to storage, where it appears whole or not at all
        (:func:`~airflow_provider_kling.hooks.download.download_video`).

        The destination is a local path, or any URI Airflow's ``ObjectStoragePath`` understands
        (``file://``, ``s3://``, ``gs://``...; ``storage_conn_id`` names its connection). The API
        token is not sent to the media host.

        :raises KlingInputError: the URL is not http(s), or the destination exists and
            ``overwrite`` is false.
        :raises KlingError: the download failed, was cut short, or is larger than ``max_bytes``.
        """
        return download_video(
            self.session,
            url,
            destination,
            self.timeouts,
            max_bytes=max_bytes,
            overwrite=overwrite,
            storage_conn_id=storage_conn_id,
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


class KlingAsyncHook(_KlingHookBase):
    """
    Asynchronous client of RunComfy's Model API, for triggers in the triggerer's event loop.

    Nothing in it blocks the loop: the connection is read with Airflow's async accessor, once
    per event loop, and HTTP goes through a session shared by all hooks of the loop. Use it as
    ``async with KlingAsyncHook(...) as hook:`` to hold the shared session across calls.

    Takes the same arguments as :class:`KlingHook`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._target: ApiTarget | None = None
        self._share: LoopShare | None = None
        #: Open ``async with`` blocks on this hook (each call opens one; so may its user).
        self._holds = 0

    async def get_target(self) -> ApiTarget:
        if self._target is None:
            self._target = await shared_sessions.target(self.kling_conn_id, self._read_target)
        return self._target

    async def _read_target(self) -> ApiTarget:
        conn = await get_async_connection(self.kling_conn_id)
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

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The event loop's shared session while this hook holds it (inside ``async with``), else ``None``."""
        return self._share.session if self._share is not None else None

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
            share = self._share
            assert share is not None  # held by the `async with` above

            async def attempt_once() -> ResponseT:
                target = await self.get_target()
                answer = await send_async(
                    share, target, method, path, self.timeouts, json_body=json_body, params=params
                )
                return read_answer(
                    model_cls, answer.status_code, answer.text, retry_after=answer.retry_after, request_id=request_id
                )

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
            return await self._call(SubmitResponse, "POST", model_path(model), json_body=body, submit=True)
        except KlingError as exc:
            raise submit_failure(exc, model) from exc

    async def get_status(self, request_id: str) -> StatusResponse:
        """Coroutine form of :meth:`KlingHook.get_status`."""
        return await self._call(StatusResponse, "GET", request_path(request_id, "status"), request_id=request_id)

    async def get_result(self, request_id: str, *, include_cost: bool = False) -> ResultResponse:
        """Coroutine form of :meth:`KlingHook.get_result`."""
        params = {"include_cost": "true"} if include_cost else None
        return await self._call(
            ResultResponse, "GET", request_path(request_id, "result"), request_id=request_id, params=params
        )

    async def cancel(self, request_id: str) -> CancelResponse:
        """Coroutine form of :meth:`KlingHook.cancel`."""
        return await self._call(CancelResponse, "POST", request_path(request_id, "cancel"), request_id=request_id)

    async def cancel_best_effort(self, request_id: str) -> CancelOutcome | None:
        """Coroutine form of :meth:`KlingHook.cancel_best_effort`."""
        try:
            answer = await self.cancel(request_id)
        except KlingError as err:
            self.log.warning("Could not cancel Kling request %s: %s", request_id, err)
            return None
        return log_cancel_outcome(self, request_id, answer)

    async def poll(
        self, request_id: str, call: Call, *, include_cost: bool = False
    ) -> tuple[Seen, ResultResponse | None]:
        """Coroutine form of :meth:`KlingHook.poll`."""
        at = time.time()
        if call is Call.STATUS:
            return observed(await self.get_status(request_id), at)
        return observed(await self.get_result(request_id, include_cost=include_cost), at)

    async def follow(
        self,
        request_id: str,
        plan: WaitPlan,
        *,
        seen: Seen | None = None,
        include_cost: bool = False,
        on_progress: Callable[[Seen], object] | None = None,
    ) -> ResultResponse:
        """Coroutine form of :meth:`KlingHook.follow`, sleeping in the event loop until the request finishes."""
        while True:
            step = plan.next_step(seen, time.time())
            if isinstance(step, GiveUp):
                assert seen is not None  # a limit is acted on only after a poll
                plan, seen = going_on(request_id, plan, step, await self.cancel_best_effort(request_id), seen)
                continue
            delay = step.at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            seen, result = await self.poll(request_id, step.call, include_cost=include_cost)
            if on_progress is not None:
                on_progress(seen)
            if result is not None:
                return result
