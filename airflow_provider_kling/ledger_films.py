"""
A film's reservations in the budget ledger (:mod:`airflow_provider_kling.ledger`): the whole film
reserved in one transaction before its first shot is paid, each shot's part claimed by its shot,
and what no shot paid for released when the film ends.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.exceptions import KlingBudgetExceededError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from airflow_provider_kling.budgets import Budget
    from airflow_provider_kling.ledger import Usage


class FilmReservations:
    """The ledger's steps for films; mixed into :class:`~airflow_provider_kling.ledger.BudgetLedger`."""

    if TYPE_CHECKING:  # the ledger's own steps, which these use

        def _transaction(self) -> AbstractContextManager[Any]: ...

        def _locked_usage(self, cursor: Any, budget: str, period: str) -> Usage: ...

        def _execute(self, cursor: Any, sql: str, params: tuple[Any, ...] = ()) -> None: ...

        def _insert_reservation(self, cursor: Any, values: tuple[Any, ...]) -> int: ...

        def _hold(self, cursor: Any, budget: str, period: str, videos: int, seconds: float) -> None: ...

        def release(self, reservation_id: int) -> None: ...

    def reserve_film(
        self, budget: Budget, shots: list[tuple[str, float]], *, film: str, now: float | None = None
    ) -> list[str]:
        """
        Reserve a whole film in one transaction: one video per shot (``(key, video_seconds)``),
        held as ``<film>#<key>``, checked against the caps all together, so that a film that does
        not fit pays for nothing. A shot that holds a reservation still (the reserving task retried)
        is not reserved twice; a shot whose reservation was spent is reserved again (the film was
        cleared, and its shots pay again). Returns the keys reserved now.

        :raises KlingBudgetExceededError: the film would pass a cap; nothing was reserved.
        """
        now = time.time() if now is None else now
        period = budget.period_key(now)
        with self._transaction() as cursor:
            usage = self._locked_usage(cursor, budget.name, period)
            self._execute(
                cursor,
                "SELECT holder FROM kling_budget_reservation WHERE budget = ? AND period = ? "
                "AND substr(holder, 1, ?) = ? AND state = 'reserved'",
                (budget.name, period, len(film) + 1, f"{film}#"),
            )
            held = {str(row[0]) for row in cursor.fetchall()}
            wanted = [(key, seconds) for key, seconds in shots if f"{film}#{key}" not in held]
            if not wanted:
                return []
            total = sum(seconds for _, seconds in wanted)
            refusal = refusal_of(budget, usage, total, videos=len(wanted))
            if refusal is not None:
                why = f"refuses the film before any shot is paid: {len(wanted)} shots of {total:g} s in all; {refusal}"
                raise exceeded(budget, period, usage, why)
            self._hold(cursor, budget.name, period, len(wanted), total)
            for key, seconds in wanted:
                self._insert_reservation(cursor, (budget.name, period, seconds, f"{film}#{key}", "reserved", now))
            return [key for key, _ in wanted]

    def claim(self, holder: str) -> int | None:
        """The reservation a film holds for one shot (``<film>#<key>``), not yet paid for; ``None`` if none."""
        with self._transaction() as cursor:
            self._execute(
                cursor,
                "SELECT id FROM kling_budget_reservation WHERE holder = ? AND state = 'reserved' "
                "AND request_id IS NULL ORDER BY id",
                (holder,),
            )
            row = cursor.fetchone()
            return None if row is None else int(row[0])

    def release_film(self, film: str) -> int:
        """The film ended: release what its shots reserved and never paid for; how many were released."""
        with self._transaction() as cursor:
            self._execute(
                cursor,
                "SELECT id FROM kling_budget_reservation WHERE substr(holder, 1, ?) = ? AND state = 'reserved' "
                "AND request_id IS NULL",
                (len(film) + 1, f"{film}#"),
            )
            unpaid = [int(row[0]) for row in cursor.fetchall()]
        for reservation_id in unpaid:
            self.release(reservation_id)
        return len(unpaid)


def exceeded(budget: Budget, period: str, usage: Usage, why: str) -> KlingBudgetExceededError:
    """The error of a budget that refuses (``why``: what it refuses, and the cap it would pass)."""
    return KlingBudgetExceededError(
        f"Budget {budget.name!r} ({budget.period} {period}) {why}",
        budget=budget.name,
        period=period,
        cap={"videos": budget.videos, "video_seconds": budget.video_seconds, "cost": budget.cost},
        spent={"videos": usage.videos, "video_seconds": usage.video_seconds, "cost": usage.cost},
        reserved={"videos": usage.reserved_videos, "video_seconds": usage.reserved_seconds},
    )


def refusal_of(budget: Budget, usage: Usage, video_seconds: float, *, videos: int = 1) -> str | None:
    """Why ``videos`` more videos of ``video_seconds`` in all would pass a cap, or ``None``."""
    if budget.videos is not None and usage.videos + usage.reserved_videos + videos > budget.videos:
        more = "reached" if videos == 1 else f"would be passed by {videos} more"
        return f"videos cap {budget.videos} {more} ({usage.videos} spent, {usage.reserved_videos} reserved in flight)"
    if (
        budget.video_seconds is not None
        and usage.video_seconds + usage.reserved_seconds + video_seconds > budget.video_seconds
    ):
        return (
            f"video_seconds cap {budget.video_seconds:g} would be passed by {video_seconds:g} more "
            f"({usage.video_seconds:g} spent, {usage.reserved_seconds:g} reserved in flight)"
        )
    if budget.cost is not None and usage.cost >= budget.cost:
        return f"cost cap {budget.cost:g} reached ({usage.cost:g} spent)"
    return None
