"""Sensor that waits for a RunComfy generation request to finish."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_kling.constants import DEFAULT_CONN_ID, DEFAULT_POLL_INTERVAL, DEFAULT_TIMEOUT
from airflow_provider_kling.operators.kling import DEFERRAL_TIMEOUT_MARGIN, default_deferrable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.hooks.kling import KlingHook


class KlingRequestSensor(BaseSensorOperator):
    """
    Wait for a RunComfy request to finish and return its result summary.

    Returns (as XCom ``return_value``) a JSON-able dict with ``request_id``, ``status``
    (``"succeeded"``), ``video_url``, ``output``, ``created_at``, ``finished_at`` and, when asked
    for, ``cost``. A failed generation fails the task with the server's reason; a cancelled
    request fails it saying so.

    :param request_id: the RunComfy request to wait for. Templated.
    :param kling_conn_id: the ``kling`` connection holding the API base URL and token.
    :param deferrable: wait in Airflow's triggerer, freeing the worker slot. Defaults to
        ``[operators] default_deferrable``.
    :param poke_interval: seconds between status checks, in every mode.
    :param timeout: seconds to wait; past it a queued request is cancelled and the task fails.
    :param include_cost: ask RunComfy for the request's cost in the result.
    :param cancel_on_kill: cancel a queued request when the task is stopped by a user.
    :param hook_params: extra keyword arguments for the hook (timeouts, retries).
    """

    template_fields: Sequence[str] = ("request_id", "kling_conn_id")
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        request_id: str,
        kling_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        poke_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        include_cost: bool = False,
        cancel_on_kill: bool = True,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.request_id = request_id
        self.kling_conn_id = kling_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.include_cost = include_cost
        self.cancel_on_kill = cancel_on_kill
        self.hook_params = hook_params or {}

    @cached_property
    def hook(self) -> KlingHook:
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(self.kling_conn_id, **self.hook_params)

    def poke(self, context: Context) -> PokeReturnValue:
        result = self.hook.check(self.request_id, include_cost=self.include_cost)
        if result is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=result.require_video(self.request_id))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if done.is_done:
            return done.xcom_value
        from airflow_provider_kling.triggers.kling import KlingRequestTrigger

        self.defer(
            trigger=KlingRequestTrigger(
                request_id=self.request_id,
                kling_conn_id=self.kling_conn_id,
                poll_interval=self.poke_interval,
                deadline=time.time() + self.timeout,
                include_cost=self.include_cost,
                cancel_on_kill=self.cancel_on_kill,
                hook_params=self.hook_params,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_TIMEOUT_MARGIN),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: return the result summary, or raise its typed error."""
        from airflow_provider_kling.triggers.kling import result_from_event

        return result_from_event(event)

    def on_kill(self) -> None:
        if self.cancel_on_kill and self.request_id:
            self.hook.cancel_best_effort(self.request_id)
