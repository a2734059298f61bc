"""
What generations cost, where a platform team looks: the budget ledger (:mod:`.budgets`) and
metrics through Airflow's own ``Stats`` (StatsD or OpenTelemetry, as the deployment configures).

Every metric is emitted by the task process on a worker, where a submit is paid and where a wait
ends when the trigger's event is read there, so each counts once whatever the triggerer does (a
trigger may run twice on a failover). The one exception is a task that ends in the triggerer
(``finish_in_triggerer``): its trigger counts the success (``succeeded``, ``cost``, the timers),
once where the connection has a ledger (:meth:`Spend.ended_once`), else possibly twice if it runs
twice.

Counters (tagged ``model``, ``dag_id``, ``task_id`` where known):

- ``kling.submitted``: a submit RunComfy accepted, so paid (a refused one is not);
- ``kling.resumed``: a try went on with an earlier try's request instead of paying again;
- ``kling.succeeded``, ``kling.failed``: the request finished with a video, or failed;
- ``kling.cancelled``: cancelled while queued, so free;
- ``kling.billed_without_video``: a running request whose wait ended without a video;
- ``kling.budget_refused``: a budget refused a submit before anything was sent;
- ``kling.video_seconds``: seconds of video generated (its ``duration``);
- ``kling.shape_mismatch``: a stored video is not the shape asked for (aspect ratio, duration);

the gauge ``kling.cost`` (a delta: each finished request adds what RunComfy reported), and the
timers ``kling.queued`` and ``kling.rendering`` (as the wait saw them, to a poll interval),
``kling.ready_to_stored`` (from the request's ``finished_at`` to the copy landing) and
``kling.worker_run.*`` (where the run that paid spent its time: :mod:`.worker_run`).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_kling.budgets import BudgetConfig
    from airflow_provider_kling.hooks.client import KlingClient
    from airflow_provider_kling.ledger import BudgetLedger

log = logging.getLogger(__name__)

Ending = Literal["succeeded", "failed", "cancelled", "billed_without_video"]


def stats() -> Any:
    """Airflow's ``Stats`` (the Task SDK's on Airflow 3, ``airflow.stats`` on 2), or ``None``."""
    try:
        from airflow.providers.common.compat.sdk import Stats
    except ImportError:  # pragma: no cover - the standalone ``kling`` command: no Airflow, no metrics
        return None
    return Stats


class Spend:
    """
    The spending of one task (or ``kling submit``): its budget, the ledger of its connection, and
    metrics with its tags.

    :param hook: the hook of the ``kling`` connection whose extra holds the budgets.
    :param budget: the budget this task spends from; ``None`` for none (it still settles requests
        that another task reserved, when the connection has a ledger).
    :param tags: ``model``, ``dag_id``, ``task_id``, where known.
    """

    def __init__(
        self,
        hook: KlingClient,
        budget: str | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        film_shot: str | None = None,
    ) -> None:
        self.hook = hook
        self.budget = budget
        self.tags = {key: value for key, value in (tags or {}).items() if value}
        #: The film's reservation of this shot (``<film>#<key>``), made before its first shot was paid.
        self.film_shot = film_shot
        self._claimed: set[int] = set()

    @classmethod
    def of_task(
        cls,
        hook: KlingClient,
        task: Any,
        *,
        budget: str | None = None,
        model: str | None = None,
        film_shot: str | None = None,
    ) -> Spend:
        tags = {"model": model or "", "dag_id": task.dag_id, "task_id": task.task_id}
        return cls(hook, budget, tags=tags, film_shot=film_shot)

    @cached_property
    def config(self) -> BudgetConfig:
        from airflow_provider_kling.budgets import BudgetConfig

        found = getattr(self.hook, "budget_config", None)  # a hook reads its connection's; a bare client has none
        return found if isinstance(found, BudgetConfig) else BudgetConfig({}, None)

    @cached_property
    def ledger(self) -> BudgetLedger | None:
        from airflow_provider_kling.ledger import BudgetLedger

        store = self.config.store
        return BudgetLedger.from_connection(store) if store else None

    # --- around the paid submit ---------------------------------------------------------------

    def reserve(self, video_seconds: float, holder: str) -> int | None:
        """Reserve one video from this task's budget; ``None`` without one. Raises when it is refused."""
        if self.budget is None:
            return None
        from airflow_provider_kling.exceptions import KlingBudgetExceededError

        budget = self.config.get(self.budget, getattr(self.hook, "kling_conn_id", ""))
        assert self.ledger is not None  # config.get() demands a store
        if self.film_shot is not None:
            claimed = self.ledger.claim(self.film_shot)
            if claimed is not None:
                log.info("This shot spends the reservation its film made before its first shot was paid")
                self._claimed.add(claimed)
                return claimed
            log.warning("The film holds no reservation for this shot any more: reserving one now")
        try:
            return self.ledger.reserve(budget, video_seconds=video_seconds, holder=holder)
        except KlingBudgetExceededError:
            self.count("budget_refused", budget=self.budget)
            raise

    def refused(self) -> None:
        """The task's own cap on paid submits refused one."""
        self.count("budget_refused", budget="max_paid_submits")

    def submitted(self, reservation: int | None, request_id: str, video_seconds: float) -> None:
        if reservation is not None and self.ledger is not None:
            self.ledger.attach(reservation, request_id)
        self.count("submitted")
        self.count("video_seconds", round(video_seconds))

    def not_sent(self, reservation: int | None) -> None:
        """
        RunComfy certainly created nothing: the reservation frees its share; a film's stays the
        film's (the shot's retry spends it, or the film releases it when it ends).
        """
        if reservation is not None and reservation not in self._claimed and self.ledger is not None:
            self.ledger.release(reservation)

    def resumed(self) -> None:
        self.count("resumed")

    # --- when a request's wait ends -----------------------------------------------------------

    def ended(self, request_id: str, ending: Ending, result: Mapping[str, Any] | None = None) -> None:
        """
        Count how a request ended and settle its reservation, if it has one: spent when it ran,
        released when it was cancelled while queued. Never raises: the task's own outcome stands.
        """
        cost = as_number((result or {}).get("cost"))
        try:
            self.count(ending)
            if cost is not None:
                self.gauge_delta("cost", cost)
            if ending == "succeeded" and result is not None:
                self._timers(result)
            if self.config.store is not None and self.ledger is not None:
                self.ledger.settle(request_id, spent=ending != "cancelled", cost=cost)
        except Exception as err:  # noqa: BLE001 - bookkeeping must not turn a finished task red
            log.warning(
                "Could not record how Kling request %s ended (%s) in the budget ledger: %s", request_id, ending, err
            )

    def ended_once(self, request_id: str, ending: Ending, result: Mapping[str, Any] | None = None) -> bool:
        """
        :meth:`ended`, unless the end was counted already: a trigger may run twice (a triggerer
        failover), and the ledger of the connection remembers which ends were counted. Without a
        ledger it counts (and a failover may count twice). Returns whether it counted.

        :raises Exception: the ledger could not be reached; nothing was counted.
        """
        if self.config.store is not None and self.ledger is not None and not self.ledger.first_end(request_id):
            log.info("The end of Kling request %s was counted already", request_id)
            return False
        self.ended(request_id, ending, result)
        return True

    def _timers(self, result: Mapping[str, Any]) -> None:
        timings = result.get("timings")
        if isinstance(timings, dict):
            for name in ("queued", "rendering"):
                seconds = as_number(timings.get(f"{name}_seconds"))
                if seconds is not None:
                    self.timing(name, seconds)

    # --- Stats --------------------------------------------------------------------------------

    def count(self, name: str, value: int = 1, **tags: str) -> None:
        found = stats()
        if found is not None and value:
            found.incr(f"kling.{name}", value, tags={**self.tags, **tags})

    def gauge_delta(self, name: str, value: float) -> None:
        found = stats()
        if found is not None:
            found.gauge(f"kling.{name}", value, delta=True, tags=self.tags)

    def stored(self, finished_at: str | None, stored: Mapping[str, Any] | None = None) -> None:
        """
        A video landed: ``kling.ready_to_stored``, from the request's ``finished_at`` on the server to
        now, and ``kling.shape_mismatch`` when the video is not the shape asked for (its ``mismatch``).
        """
        seconds = ready_to_stored(finished_at)
        if seconds is not None:
            self.timing("ready_to_stored", seconds)
        if stored and stored.get("mismatch"):
            self.count("shape_mismatch")

    def timing(self, name: str, seconds: float) -> None:
        found = stats()
        if found is not None:
            found.timing(f"kling.{name}", timedelta(seconds=max(seconds, 0.0)), tags=self.tags)


def ready_to_stored(finished_at: str | None) -> float | None:
    """Seconds from a request's ``finished_at`` to now (its video landed in storage), if known."""
    from airflow_provider_kling.wait import unix_time

    ready = unix_time(finished_at)
    return None if ready is None else time.time() - ready


def as_number(value: Any) -> float | None:
    """A number RunComfy or XCom gave (``0.5``, ``"0.5"``), or ``None`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def budget_report(config: BudgetConfig, now: float | None = None) -> dict[str, Any]:
    """
    Each budget of a connection against its cap, read from the ledger: what ``kling budget``
    prints and the UI's Kling page shows, one figure for both.

    :raises KlingInputError: the connection sets budgets but no ledger.
    """
    from airflow_provider_kling.exceptions import KlingInputError
    from airflow_provider_kling.ledger import BudgetLedger

    if not config.budgets:
        return {"budgets": {}}
    if config.store is None:
        raise KlingInputError("budget: the connection sets budgets but no budget_store (the ledger's connection)")
    ledger = BudgetLedger.from_connection(config.store)
    at = time.time() if now is None else now
    shown = {}
    for name, budget in sorted(config.budgets.items()):
        usage = ledger.usage(budget)
        shown[name] = {
            "period": f"{budget.period} {budget.period_key(at)}",
            "cap": {"videos": budget.videos, "video_seconds": budget.video_seconds, "cost": budget.cost},
            "spent": {"videos": usage.videos, "video_seconds": usage.video_seconds, "cost": usage.cost},
            "reserved": {"videos": usage.reserved_videos, "video_seconds": usage.reserved_seconds},
        }
    return {"budgets": shown}
