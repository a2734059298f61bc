"""Sensor that waits for a RunComfy generation request to finish."""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_kling.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    default_deferrable,
)
from airflow_provider_kling.links.kling import KlingVideoLink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.models import KlingResult
    from airflow_provider_kling.task_wait import TaskWaiter


class KlingRequestSensor(BaseSensorOperator):
    """
    Wait for a RunComfy request to finish and return its result.

    Returns (as XCom ``return_value``) a :class:`~airflow_provider_kling.models.KlingResult`:
    ``request_id``, ``status`` (``"succeeded"``), ``video_url``, ``output``, ``created_at``,
    ``finished_at`` and, when asked for, ``cost``. A failed generation fails the task with the
    server's reason; a cancelled request fails it saying so. However the wait ends without a video
    (``timeout`` in any mode, ``execution_timeout``, an error on the last try), a request still
    queued is cancelled, so it is not billed; a running one is named in the log as billed.

    :param request_id: the RunComfy request to wait for. Templated.
    :param kling_conn_id: the ``kling`` connection holding the API base URL and token.
    :param deferrable: wait in Airflow's triggerer, freeing the worker slot. Defaults to
        ``[operators] default_deferrable``.
    :param poke_interval: seconds between polls, in every mode.
    :param max_poll_interval: while the request is far back in the queue, polls are
        ``poke_interval`` times its queue position apart, at most this many seconds.
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
    #: Where the "Kling video" link finds the result.
    result_xcom_keys = ("return_value",)

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
        self._first_poke: float | None = None

    @cached_property
    def waiter(self) -> TaskWaiter:
        """How this task waits (read when it runs, once its fields are rendered)."""
        from airflow_provider_kling.task_wait import TaskWaiter
        from airflow_provider_kling.wait import RequestWait
        from airflow_provider_kling.wait_plan import PollSettings, WaitPlan

        options = RequestWait(
            request_id=self.request_id,
            plan=WaitPlan(PollSettings(float(self.poke_interval), float(self.max_poll_interval))),
            kling_conn_id=self.kling_conn_id,
            include_cost=self.include_cost,
            cancel_on_kill=self.cancel_on_kill,
            hook_params=self.hook_params,
        )
        return TaskWaiter(self, options, retry_resumes=True)  # a retry renders the same request_id

    def execute(self, context: Context) -> Any:
        from airflow_provider_kling.take import TAKE_XCOM

        if context.get("ti") is not None:  # the take's record, for the UI
            context["ti"].xcom_push(key=TAKE_XCOM, value={"request_id": self.request_id})
        with self.waiter.exits(context, self.request_id):
            if not self.deferrable:
                return super().execute(context)  # Airflow's loop calls poke()
            from airflow_provider_kling.wait_plan import WaitLimits

            limits = WaitLimits(time.time() + self.timeout, self._queue_deadline(context))
            return self.waiter.done(self.waiter.check_then_defer(context, self.waiter.start(self.request_id, limits)))

    def poke(self, context: Context) -> PokeReturnValue:
        from airflow_provider_kling.wait import RequestWait
        from airflow_provider_kling.wait_plan import WaitLimits

        # Airflow's own loop keeps the deadline (``timeout``); the plan keeps the queue limit. In
        # poke mode, each poke goes on from the last one's wait.
        wait = self.waiter.current
        if wait is None or wait.seen is None:
            wait = self.waiter.start(self.request_id, WaitLimits(queue_deadline=self._queue_deadline(context)))
        found = self.waiter.check(wait)
        if isinstance(found, RequestWait):
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self.waiter.done(found))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> KlingResult:
        """Resume after the trigger fired: return the result, or raise its typed error."""
        from airflow_provider_kling.triggers.kling import result_from_event  # the trigger module is not parse-cheap

        return self.waiter.done(result_from_event(event))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after the trigger; an Airflow deferral timeout or a trigger failure is an exit too."""
        with self.waiter.exits(context, self.request_id):
            return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """A user stopped the task (or its ``execution_timeout`` passed): the exit rule decides."""
        self.waiter.on_kill()

    def _queue_deadline(self, context: Context) -> float | None:
        """The queue limit, counted from when the task started: in reschedule mode, its first run."""
        if self.queue_timeout is None:
            return None
        if self._first_poke is None:
            started = self._first_run_start(context)
            self._first_poke = started if started is not None else time.time()  # Airflow 2's dag.test(): unset
        return self._first_poke + self.queue_timeout

    def _first_run_start(self, context: Context) -> float | None:
        """When this try began, as Airflow's own sensor loop counts its ``timeout`` (Unix seconds)."""
        ti = context.get("ti")
        started = None
        if self.reschedule and ti is not None:
            if hasattr(ti, "get_first_reschedule_date"):  # Airflow 3
                started = ti.get_first_reschedule_date(context)
            else:  # Airflow 2 keeps it in the task reschedule table
                from airflow.sensors.base import _orig_start_date  # type: ignore[import-not-found,unused-ignore]

                first_try = (ti.max_tries or 0) - (self.retries or 0) + 1
                started = _orig_start_date(
                    dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index, try_number=first_try
                )
        started = started or getattr(ti, "start_date", None)
        return started.timestamp() if started is not None else None
