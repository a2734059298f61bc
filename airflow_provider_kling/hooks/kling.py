"""
Hooks for RunComfy's Model API: :class:`KlingHook` (sync, ``requests``) for workers and
:class:`KlingAsyncHook` (``aiohttp``) for triggers.

Both speak the same four calls through one :class:`~airflow_provider_kling.retry.RetryPolicy`; how
to wait with them lives in a layer above, :mod:`airflow_provider_kling.follow`: a hook knows
nothing of waits. The token travels only in the ``Authorization`` header of calls to the API base
URL: never to a media host, never into a log line or an error message.

The parts live beside this module: :mod:`.target` (the connection), :mod:`.transport` (one HTTP
exchange and its failures), :mod:`.responses` (answers into typed bodies or errors),
:mod:`.session_pool` (the async session shared per event loop), :mod:`.download` and
:mod:`.destination` (where a video lands, checked).
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook
from tenacity import AsyncRetrying

from airflow_provider_kling.constants import (
    CONN_TYPE,
    CONNECTION_HIDDEN_FIELDS,
    CONNECTION_PLACEHOLDERS,
    CONNECTION_RELABELING,
    DEFAULT_CONN_ID,
    KLING_TEXT_TO_VIDEO_MODEL,
)
from airflow_provider_kling.exceptions import (
    KlingAuthenticationError,
    KlingConnectionError,
    KlingError,
    KlingNotFoundError,
)
from airflow_provider_kling.hooks.client import CallSettings, KlingClient
from airflow_provider_kling.hooks.download import DownloadedVideo
from airflow_provider_kling.hooks.responses import read_answer, submit_failure
from airflow_provider_kling.hooks.session_pool import shared_sessions
from airflow_provider_kling.hooks.target import ApiTarget, api_target, model_path, request_path
from airflow_provider_kling.hooks.transport import send_async
from airflow_provider_kling.models import (
    CancelResponse,
    ResponseBody,
    ResultResponse,
    StatusResponse,
    SubmitResponse,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import TypeVar

    import aiohttp
    from pydantic import BaseModel

    from airflow_provider_kling.budgets import BudgetConfig
    from airflow_provider_kling.hooks.account_health import AccountHealth, Turn
    from airflow_provider_kling.hooks.session_pool import LoopShare

    ResponseT = TypeVar("ResponseT", bound=ResponseBody)

__all__ = ["DownloadedVideo", "KlingAsyncHook", "KlingClient", "KlingHook", "api_target", "shared_sessions"]


class _KlingHookBase(CallSettings, BaseHook):
    """Connection form and settings shared by the sync and the async hook."""

    conn_name_attr = "kling_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Kling (RunComfy)"

    def __init__(self, kling_conn_id: str = DEFAULT_CONN_ID, **settings: Any) -> None:
        super().__init__()
        self.kling_conn_id = kling_conn_id
        self.configure(**settings)


class KlingHook(KlingClient, _KlingHookBase):
    """
    Synchronous client of RunComfy's Model API, for operators and sensors on a worker: a
    :class:`~airflow_provider_kling.hooks.client.KlingClient` that reads the ``kling`` connection.

    :param kling_conn_id: the ``kling`` connection holding the base URL and the API token.
    :param connect_timeout: seconds to open a connection.
    :param read_timeout: seconds to wait for an answer once a request is sent.
    :param max_attempts: attempts in all for a call that is safe to repeat.
    :param retry_delay: seconds before the first retry, doubled each time (with jitter).
    :param sleep: how the hook waits, between retries and between polls (``time.sleep``; tests
        pass their own to see the waits without waiting).
    """

    def __init__(
        self, kling_conn_id: str = DEFAULT_CONN_ID, *, sleep: Callable[[float], None] = time.sleep, **settings: Any
    ) -> None:
        _KlingHookBase.__init__(self, kling_conn_id, **settings)
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
        conn = self.get_connection(self.kling_conn_id)
        self._extra = conn.extra_dejson  # for budget_config: the connection is read once (the token is not kept)
        return api_target(conn, self.kling_conn_id)

    @cached_property
    def budget_config(self) -> BudgetConfig:
        """The budgets and the ledger's connection, from the connection's extra (see ``budgets``)."""
        from airflow_provider_kling.budgets import read_budgets

        extra = self._extra if "target" in self.__dict__ else self.get_connection(self.kling_conn_id).extra_dejson
        return read_budgets(extra, self.kling_conn_id)

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
        turn: Turn | None = None,
    ) -> ResponseT:
        async with self:
            share = self._share
            assert share is not None  # held by the `async with` above

            async def attempt_once() -> ResponseT:
                target = await self.get_target()
                answer = await send_async(
                    share,
                    target,
                    method,
                    path,
                    self.timeouts,
                    json_body=json_body,
                    params=params,
                    turn=turn,
                )
                return read_answer(
                    model_cls, answer.status_code, answer.text, retry_after=answer.retry_after, request_id=request_id
                )

            # Almost every call succeeds at once, and in a triggerer with thousands of waits
            # tenacity's set-up cost a quarter of the CPU: the first attempt runs bare. A failure
            # is replayed to tenacity as its first attempt, so the policy (what is retried, how
            # many attempts in all, the backoff, the log line) is exactly the sync hook's.
            if turn is not None:  # one attempt: the caller deals with failures (a wait sharing its account)
                return await attempt_once()
            try:
                return await attempt_once()
            except KlingError as err:
                first_failure: KlingError | None = err
            async for attempt in AsyncRetrying(
                **self.retry_policy.tenacity_kwargs(submit=submit), before_sleep=self._log_retry(f"{method} {path}")
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
        submission = self._submission(model, input)
        try:
            return await self._call(SubmitResponse, "POST", model_path(model), **submission)
        except KlingError as exc:
            raise submit_failure(exc, model) from exc

    async def get_status(self, request_id: str, *, turn: Turn | None = None) -> StatusResponse:
        """
        Coroutine form of :meth:`KlingHook.get_status`. With a ``turn`` on a shared account, one
        attempt and no retries (see :func:`~.transport.send_async`).
        """
        path = request_path(request_id, "status")
        return await self._call(StatusResponse, "GET", path, request_id=request_id, turn=turn)

    async def get_result(
        self, request_id: str, *, include_cost: bool = False, turn: Turn | None = None
    ) -> ResultResponse:
        """Coroutine form of :meth:`KlingHook.get_result`; ``turn`` as for the status."""
        params = {"include_cost": "true"} if include_cost else None
        path = request_path(request_id, "result")
        return await self._call(ResultResponse, "GET", path, request_id=request_id, params=params, turn=turn)

    #: Whether the waits of one account in one loop share its health (``False``: each wait meets an
    #: outage alone, retrying each poll, as before; kept to measure the difference).
    shares_account_health: ClassVar[bool] = True

    async def account_health(self) -> AccountHealth | None:
        """
        The shared view of this hook's account in this event loop (``None`` outside ``async with``):
        waits that share it stop calling while the account is down (see :mod:`.account_health`).
        """
        if self._share is None or not self.shares_account_health:
            return None
        return self._share.health(await self.get_target())

    async def cancel(self, request_id: str) -> CancelResponse:
        """Coroutine form of :meth:`KlingHook.cancel`."""
        return await self._call(CancelResponse, "POST", request_path(request_id, "cancel"), request_id=request_id)
