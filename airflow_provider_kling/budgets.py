"""
Budgets: caps on what one RunComfy account may spend, checked and reserved in one atomic step
before the paid submit.

A budget lives on the ``kling`` connection (one connection is one RunComfy account), in its extra,
so it is set from an environment variable as easily as from the UI::

    {"budgets": {"marketing": {"videos": 200, "video_seconds": 1500, "cost": 40, "period": "day"}},
     "budget_store": "kling_budget_db"}

``budget_store`` names an Airflow connection to the SQL database that keeps the ledger
(:mod:`.ledger`): PostgreSQL in production, SQLite on a laptop, opened through the connection's own
hook, so its extras apply. Airflow 3 workers cannot use the metadata database, and a Variable has no
atomic update, so the ledger is a database of its own.

The guarantee: concurrent submits on any number of workers never overshoot a cap on ``videos`` or
``video_seconds``. Each submit first reserves its video (and its ``duration``) under a row lock
(``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite); a reservation counts
against the cap exactly as spending does until it is settled: spent when the request ran, released
when it was cancelled while queued or never sent. The limit: RunComfy reports a request's ``cost``
only once it has finished, so a ``cost`` cap refuses new submits once what was spent reached it;
requests in flight at that moment may still take the spend past it.

Periods are calendar periods in UTC: ``day``, ``month``, or ``forever``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from airflow_provider_kling.exceptions import KlingInputError

if TYPE_CHECKING:
    from collections.abc import Mapping

Period = Literal["day", "month", "forever"]
PERIODS: tuple[Period, ...] = ("day", "month", "forever")
#: Databases the ledger runs on, by Airflow connection type (see :mod:`.ledger`).
STORE_TYPES = ("sqlite", "postgres")


@dataclass(frozen=True)
class Budget:
    """
    :param name: the name tasks use (``budget="marketing"``).
    :param videos: the most videos per period; ``None`` for no cap.
    :param video_seconds: the most seconds of video per period; ``None`` for no cap.
    :param cost: the most cost per period, as RunComfy reports it; ``None`` for no cap.
    :param period: ``day``, ``month`` (UTC calendar) or ``forever``.
    """

    name: str
    videos: int | None = None
    video_seconds: float | None = None
    cost: float | None = None
    period: Period = "day"

    def period_key(self, now: float) -> str:
        """The period ``now`` falls in: ``2026-12-01``, ``2026-12`` or ``forever``."""
        if self.period == "forever":
            return "forever"
        day = datetime.fromtimestamp(now, tz=timezone.utc)
        return day.strftime("%Y-%m-%d" if self.period == "day" else "%Y-%m")


class BudgetConfig(NamedTuple):
    """The budgets of one connection, and the connection id of their ledger."""

    budgets: dict[str, Budget]
    store: str | None

    def get(self, name: str, conn_id: str) -> Budget:
        """The budget ``name``, or a clear error naming the ones that exist."""
        if name not in self.budgets:
            known = ", ".join(sorted(self.budgets)) or "none"
            raise KlingInputError(f"budget: connection {conn_id!r} has no budget {name!r} (its budgets: {known})")
        if self.store is None:
            raise KlingInputError(
                f"budget: connection {conn_id!r} sets budgets but no budget_store: name the connection of the SQL "
                "database that keeps the ledger in its extra"
            )
        return self.budgets[name]


def read_budgets(extra: Mapping[str, Any], conn_id: str) -> BudgetConfig:
    """
    The ``budgets`` and ``budget_store`` of a ``kling`` connection's extra.

    :raises KlingInputError: naming the field and what it allows.
    """
    where = f"Connection {conn_id!r} extra"
    raw = extra.get("budgets")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise KlingInputError(f"{where}: budgets: must be an object of budget name to caps, got {type(raw).__name__}")
    budgets = {str(name): _budget(str(name), caps, where) for name, caps in raw.items()}
    store = extra.get("budget_store")
    if store is not None and (not isinstance(store, str) or not store.strip()):
        raise KlingInputError(f"{where}: budget_store: must be the id of a {' or '.join(STORE_TYPES)} connection")
    return BudgetConfig(budgets, store)


def _budget(name: str, caps: Any, where: str) -> Budget:
    field = f"{where}: budgets.{name}"
    if not isinstance(caps, dict):
        raise KlingInputError(f'{field}: must be an object such as {{"videos": 100, "period": "day"}}')
    unknown = set(caps) - {"videos", "video_seconds", "cost", "period"}
    if unknown:
        raise KlingInputError(f"{field}: unknown keys {sorted(unknown)}; allowed: videos, video_seconds, cost, period")
    period = caps.get("period", "day")
    if period not in PERIODS:
        raise KlingInputError(f"{field}.period: must be one of {', '.join(PERIODS)}, got {period!r}")
    values: dict[str, Any] = {}
    for key in ("videos", "video_seconds", "cost"):
        value = caps.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise KlingInputError(f"{field}.{key}: must be a number of 0 or more, got {value!r}")
        if key == "videos" and value != int(value):
            raise KlingInputError(f"{field}.videos: must be a whole number, got {value!r}")
        values[key] = int(value) if key == "videos" else float(value)
    if not values:
        raise KlingInputError(f"{field}: caps nothing; set videos, video_seconds or cost")
    return Budget(name, period=period, **values)


def check_paid_cap(spend: Any, paid: int, max_paid_submits: int | None) -> None:
    """
    A task's own cap (``max_paid_submits``): a model that keeps failing is not paid for again and
    again by retries. Refused in ``spend``'s metrics, and raised, when ``paid`` reached it.
    """
    if max_paid_submits is None or paid < max_paid_submits:
        return
    from airflow_provider_kling.exceptions import KlingBudgetExceededError

    spend.refused()
    raise KlingBudgetExceededError(
        f"This task already paid for {paid} generations across its tries "
        f"(max_paid_submits={max_paid_submits}); not submitting again. Clear the task, or raise "
        "max_paid_submits, to pay for another.",
        budget="max_paid_submits",
        cap={"videos": max_paid_submits},
        spent={"videos": paid},
    )
