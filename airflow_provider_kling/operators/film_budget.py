"""Reserve a whole film from a budget before its first shot is paid, and release what it did not spend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_kling.constants import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context


class KlingFilmBudgetOperator(BaseOperator):
    """
    ``reserve``: reserve every shot of a film from ``budget``, in one atomic step of the ledger, so
    that a film that does not fit is refused (``KlingBudgetExceededError``, never retried) before
    any shot is paid. Each shot (``budget_reserved_by=`` this task) then spends its own
    reservation. ``release``: once the film ended, however it ended, release what its shots
    reserved and never paid for (a storyboard runs it as its teardown).

    :param budget: the budget of the ``kling`` connection the film spends from. Templated.
    :param shots: each shot's task id and seconds of video, in order.
    :param action: ``reserve`` or ``release``.
    :param reserved_by: for ``release``, the task id of the ``reserve`` task (its film's holder).
    :param kling_conn_id: the ``kling`` connection whose extra holds the budget.
    """

    template_fields: Sequence[str] = ("budget",)
    ui_color = "#fff4e0"

    def __init__(
        self,
        *,
        budget: str,
        shots: Sequence[tuple[str, float]],
        action: Literal["reserve", "release"] = "reserve",
        reserved_by: str | None = None,
        kling_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.budget = budget
        self.shots = [(str(task_id), float(seconds)) for task_id, seconds in shots]
        self.action = action
        self.reserved_by = reserved_by
        self.kling_conn_id = kling_conn_id

    def execute(self, context: Context) -> Any:
        from airflow_provider_kling.exceptions import KlingBudgetExceededError
        from airflow_provider_kling.film import film_holder
        from airflow_provider_kling.hooks.kling import KlingHook
        from airflow_provider_kling.spend import Spend

        ti = context["ti"]
        film = film_holder(ti.dag_id, ti.run_id, self.reserved_by or self.task_id)
        spend = Spend.of_task(KlingHook(self.kling_conn_id), self, budget=self.budget)
        budget = spend.config.get(self.budget, self.kling_conn_id)
        assert spend.ledger is not None  # config.get() demands a ledger
        if self.action == "release":
            released = spend.ledger.release_film(film)
            self.log.info("The film ended: %d reservations its shots never paid for were released", released)
            return released
        seconds = sum(value for _, value in self.shots)
        try:
            reserved = spend.ledger.reserve_film(budget, self.shots, film=film)
        except KlingBudgetExceededError:
            spend.count("budget_refused", budget=self.budget)
            raise
        self.log.info(
            "Reserved the film from budget %r: %d shots, %g s of video in all (%d reserved now; the rest held already)",
            self.budget,
            len(self.shots),
            seconds,
            len(reserved),
        )
        return reserved
