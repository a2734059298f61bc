"""Sensor that waits for a RunComfy generation request to finish."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_kling.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
)
from airflow_provider_kling.links.kling import KlingVideoLink
from airflow_provider_kling.operators.kling import DEFERRAL_TIMEOUT_MARGIN, default_deferrable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.deadlines import WaitLimits
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import StatusResponse


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
    :param max_poll_interval: deferrable mode: while the request is far back in the queue,
        checks are ``poke_interval`` times its queue position apart, at most this many seconds.
    :param timeout: seconds to wait; past it a queued request is cancelled and the task fails.
    :param queue_timeout: seconds after the task started that the request may still be queued;
        then it is cancelled (free: a queued request is not billed) and the task fails. ``None``
        for no separate limit.
    :param include_cost: ask RunComfy for the request's cost in the result.
    :param cancel_on_kill: cancel a queued request when the task is stopped by a user.
    :param hook_params: extra keyword arguments for the hook (timeouts, retries).
    """

    template_fields: Sequence[str] = ("request_id", "kling_conn_id")
    ui_color = "#f0e4ff"
    operator_extra_links = (KlingVideoLink(),)

    def __init__(
        self,
        *,
        request_id: str,
        kling_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        poke_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        queue_timeout: float | None = None,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        include_cost: bool = False,
        cancel_on_kill: bool = True,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.request_id = request_id
        self.kling_conn_id = kling_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.queue_timeout = queue_timeout
        self.max_poll_interval = max_poll_interval
        self.include_cost = include_cost
        self.cancel_on_kill = cancel_on_kill
        self.hook_params = hook_params or {}
        self._queue_limit_spent = False
        self._first_poke: float | None = None
        #: The last status call and when it was made, handed to the trigger when deferring.
        self._last_poll: tuple[StatusResponse, float] | None = None

    @cached_property
    def hook(self) -> KlingHook:
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(self.kling_conn_id, **self.hook_params)

    def poke(self, context: Context) -> PokeReturnValue:
        status, result = self.hook.poll(self.request_id, include_cost=self.include_cost)
        self._last_poll = (status, time.time())
        if result is not None:
            return PokeReturnValue(is_done=True, xcom_value=result.require_video(self.request_id))
        if not self._queue_limit_spent and self._queue_limits(context).passed(status.status) == "queue":
            self.hook.give_up(self.request_id, "queue")  # raises unless the request already runs
            self._queue_limit_spent = True
        return PokeReturnValue(is_done=False)

    def _queue_limits(self, context: Context) -> WaitLimits:
        """The queue limit, counted from when the task (its first reschedule included) started."""
        from airflow_provider_kling.deadlines import WaitLimits

        if self.queue_timeout is None:
            return WaitLimits()
        started = getattr(context.get("ti"), "start_date", None)
        if started is not None:
            self._first_poke = started.timestamp()
        elif self._first_poke is None:  # Airflow 2's dag.test() leaves start_date unset
            self._first_poke = time.time()
        return WaitLimits(queue_deadline=self._first_poke + self.queue_timeout)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if done.is_done:
            return done.xcom_value
        from airflow_provider_kling.deadlines import WaitLimits
        from airflow_provider_kling.triggers.kling import KlingRequestTrigger, hand_off

        assert self._last_poll is not None  # poke() just made it
        deadline = WaitLimits.starting_now(self.timeout).deadline
        self.defer(
            trigger=KlingRequestTrigger(
                request_id=self.request_id,
                kling_conn_id=self.kling_conn_id,
                poll_interval=self.poke_interval,
                max_poll_interval=self.max_poll_interval,
                deadline=deadline,
                queue_deadline=self._queue_limits(context).queue_deadline,
                include_cost=self.include_cost,
                cancel_on_kill=self.cancel_on_kill,
                hook_params=self.hook_params,
                **hand_off(self.log, self.request_id, *self._last_poll),
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
