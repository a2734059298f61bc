"""
Budgets: caps on what one RunComfy account may spend, checked and reserved in one atomic step
before the paid submit.

A budget lives on the ``kling`` connection (one connection is one RunComfy account), in its extra,
so it is set from an environment variable as easily as from the UI::

    {"budgets": {"marketing": {"videos": 200, "video_seconds": 1500, "cost": 40, "period": "day"}},
     "budget_store": "kling_budget_db"}

``budget_store`` names an Airflow connection to the SQL database that keeps the ledger: PostgreSQL
in production, SQLite on a laptop. Airflow 3 workers cannot use the metadata database, and a
Variable has no atomic update, so the ledger is a database of its own.

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

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from airflow_provider_kling.exceptions import KlingBudgetExceededError, KlingInputError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

Period = Literal["day", "month", "forever"]
PERIODS: tuple[Period, ...] = ("day", "month", "forever")
#: Databases the ledger runs on, by Airflow connection type.
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


class Usage(NamedTuple):
    """What a budget's period has used: spent (settled) and reserved (in flight)."""

    videos: int = 0
    video_seconds: float = 0.0
    cost: float = 0.0
    reserved_videos: int = 0
    reserved_seconds: float = 0.0


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kling_budget_usage (
        budget VARCHAR(250) NOT NULL, period VARCHAR(20) NOT NULL,
        videos INTEGER NOT NULL DEFAULT 0, video_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
        cost DOUBLE PRECISION NOT NULL DEFAULT 0,
        reserved_videos INTEGER NOT NULL DEFAULT 0, reserved_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (budget, period))""",
    """CREATE TABLE IF NOT EXISTS kling_budget_reservation (
        id {id_column}, budget VARCHAR(250) NOT NULL, period VARCHAR(20) NOT NULL,
        video_seconds DOUBLE PRECISION NOT NULL, holder VARCHAR(1000) NOT NULL, request_id VARCHAR(250),
        state VARCHAR(20) NOT NULL, cost DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL,
        settled_at DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS kling_budget_reservation_request ON kling_budget_reservation (request_id)",
    # The requests whose end a trigger counted (finish_in_triggerer): a trigger run twice counts once.
    """CREATE TABLE IF NOT EXISTS kling_request_end (
        request_id VARCHAR(250) PRIMARY KEY, ended_at DOUBLE PRECISION NOT NULL)""",
)


class BudgetLedger:
    """
    The ledger in a SQL database, through DB-API: every change to a period's usage happens in one
    transaction holding that period's row lock.

    :param connect: opens a DB-API connection.
    :param dialect: ``sqlite`` or ``postgres``.
    """

    def __init__(self, connect: Callable[[], Any], dialect: Literal["sqlite", "postgres"]) -> None:
        self._connect = connect
        self.dialect = dialect
        self._ready = False

    @classmethod
    def from_connection(cls, conn_id: str) -> BudgetLedger:
        """The ledger in the database of the Airflow connection ``conn_id`` (``sqlite`` or ``postgres``)."""
        from airflow.providers.common.compat.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        if conn.conn_type == "sqlite":
            import sqlite3

            path = conn.host or ""
            return cls(lambda: sqlite3.connect(path, timeout=60, isolation_level=None), "sqlite")
        if conn.conn_type in ("postgres", "postgresql"):
            import psycopg2  # type: ignore[import-untyped]  # PostgreSQL's driver, installed with the store

            def connect() -> Any:
                return psycopg2.connect(
                    host=conn.host, port=conn.port or 5432, user=conn.login, password=conn.password, dbname=conn.schema
                )

            return cls(connect, "postgres")
        raise KlingInputError(
            f"budget_store: connection {conn_id!r} is of type {conn.conn_type!r}; allowed: {', '.join(STORE_TYPES)}"
        )

    # --- the atomic steps ---------------------------------------------------------------------

    def reserve(self, budget: Budget, *, video_seconds: float, holder: str, now: float | None = None) -> int:
        """
        Check the caps and reserve one video of ``video_seconds``, in one transaction; the reservation's id.

        :raises KlingBudgetExceededError: a cap would be passed; nothing was reserved.
        """
        now = time.time() if now is None else now
        period = budget.period_key(now)
        with self._transaction() as cursor:
            usage = self._locked_usage(cursor, budget.name, period)
            refusal = _refusal(budget, usage, video_seconds)
            if refusal is not None:
                raise KlingBudgetExceededError(
                    f"Budget {budget.name!r} ({budget.period} {period}) refuses this generation before anything is "
                    f"sent: {refusal}",
                    budget=budget.name,
                    period=period,
                    cap={"videos": budget.videos, "video_seconds": budget.video_seconds, "cost": budget.cost},
                    spent={"videos": usage.videos, "video_seconds": usage.video_seconds, "cost": usage.cost},
                    reserved={"videos": usage.reserved_videos, "video_seconds": usage.reserved_seconds},
                )
            self._execute(
                cursor,
                "UPDATE kling_budget_usage SET reserved_videos = reserved_videos + 1, "
                "reserved_seconds = reserved_seconds + ? WHERE budget = ? AND period = ?",
                (video_seconds, budget.name, period),
            )
            return self._insert_reservation(cursor, (budget.name, period, video_seconds, holder, "reserved", now))

    def attach(self, reservation_id: int, request_id: str) -> None:
        """Name the request a reservation paid for, once RunComfy accepted the submit."""
        with self._transaction() as cursor:
            self._execute(
                cursor, "UPDATE kling_budget_reservation SET request_id = ? WHERE id = ?", (request_id, reservation_id)
            )

    def release(self, reservation_id: int) -> None:
        """The submit sent nothing (or RunComfy refused it): the reservation frees its share."""
        self._finish("id", reservation_id, spent=False, cost=None)

    def settle(self, request_id: str, *, spent: bool, cost: float | None = None) -> bool:
        """
        The request ended: ``spent`` (it ran, billed) or released (cancelled while queued). Only a
        reservation still open changes, so settling twice changes nothing; returns whether one did.
        """
        return self._finish("request_id", request_id, spent=spent, cost=cost)

    def first_end(self, request_id: str) -> bool:
        """
        Record that the end of ``request_id`` is being counted; whether this is the first time (a
        trigger that runs twice, after a triggerer failover, finds it recorded the second time).
        """
        with self._transaction() as cursor:
            self._execute(
                cursor,
                "INSERT INTO kling_request_end (request_id, ended_at) VALUES (?, ?) "
                "ON CONFLICT (request_id) DO NOTHING",
                (request_id, time.time()),
            )
            return bool(cursor.rowcount == 1)

    def usage(self, budget: Budget, now: float | None = None) -> Usage:
        """What the current period of ``budget`` has used."""
        period = budget.period_key(time.time() if now is None else now)
        with self._transaction() as cursor:
            return self._read_usage(cursor, budget.name, period)

    # --- SQL ----------------------------------------------------------------------------------

    def _finish(self, column: str, key: Any, *, spent: bool, cost: float | None) -> bool:
        with self._transaction() as cursor:
            self._execute(
                cursor,
                f"SELECT id, budget, period, video_seconds FROM kling_budget_reservation "
                f"WHERE {column} = ? AND state = 'reserved'",
                (key,),
            )
            rows = cursor.fetchall()
            for reservation_id, budget, period, seconds in rows:
                self._locked_usage(cursor, budget, period)
                spent_now = (1, seconds, float(cost or 0)) if spent else (0, 0.0, 0.0)
                self._execute(
                    cursor,
                    "UPDATE kling_budget_usage SET reserved_videos = reserved_videos - 1, "
                    "reserved_seconds = reserved_seconds - ?, videos = videos + ?, video_seconds = video_seconds + ?, "
                    "cost = cost + ? WHERE budget = ? AND period = ?",
                    (seconds, *spent_now, budget, period),
                )
                self._execute(
                    cursor,
                    "UPDATE kling_budget_reservation SET state = ?, cost = ?, settled_at = ? WHERE id = ?",
                    ("spent" if spent else "released", cost, time.time(), reservation_id),
                )
            return bool(rows)

    def _locked_usage(self, cursor: Any, budget: str, period: str) -> Usage:
        """The period's usage row, created if new, locked until the transaction ends."""
        self._execute(
            cursor,
            "INSERT INTO kling_budget_usage (budget, period) VALUES (?, ?) ON CONFLICT (budget, period) DO NOTHING",
            (budget, period),
        )
        return self._read_usage(cursor, budget, period, lock=self.dialect == "postgres")

    def _read_usage(self, cursor: Any, budget: str, period: str, *, lock: bool = False) -> Usage:
        self._execute(
            cursor,
            "SELECT videos, video_seconds, cost, reserved_videos, reserved_seconds FROM kling_budget_usage "
            "WHERE budget = ? AND period = ?" + (" FOR UPDATE" if lock else ""),
            (budget, period),
        )
        row = cursor.fetchone()
        return Usage() if row is None else Usage(int(row[0]), float(row[1]), float(row[2]), int(row[3]), float(row[4]))

    def _insert_reservation(self, cursor: Any, values: tuple[Any, ...]) -> int:
        sql = (
            "INSERT INTO kling_budget_reservation (budget, period, video_seconds, holder, state, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        if self.dialect == "postgres":
            self._execute(cursor, sql + " RETURNING id", values)
            return int(cursor.fetchone()[0])
        self._execute(cursor, sql, values)
        return int(cursor.lastrowid)

    def _execute(self, cursor: Any, sql: str, params: tuple[Any, ...] = ()) -> None:
        cursor.execute(sql.replace("?", "%s") if self.dialect == "postgres" else sql, params)

    def _transaction(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    """One transaction on a new connection: ``BEGIN IMMEDIATE`` on SQLite (the write lock at once)."""

    def __init__(self, ledger: BudgetLedger) -> None:
        self.ledger = ledger

    def __enter__(self) -> Any:
        self.conn = self.ledger._connect()
        cursor = self.conn.cursor()
        if self.ledger.dialect == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        if not self.ledger._ready:
            self._create_tables(cursor)
        return cursor

    def _create_tables(self, cursor: Any) -> None:
        id_column = "SERIAL PRIMARY KEY" if self.ledger.dialect == "postgres" else "INTEGER PRIMARY KEY AUTOINCREMENT"
        if self.ledger.dialect == "postgres":
            cursor.execute("SELECT pg_advisory_xact_lock(7315640)")  # one creator at a time
        for statement in _SCHEMA:
            cursor.execute(statement.format(id_column=id_column))
        self.ledger._ready = True

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                self.conn.commit() if self.ledger.dialect == "postgres" else self.conn.execute("COMMIT")
            else:
                self.conn.rollback() if self.ledger.dialect == "postgres" else self.conn.execute("ROLLBACK")
        finally:
            self.conn.close()


def _refusal(budget: Budget, usage: Usage, video_seconds: float) -> str | None:
    """Why one more video of ``video_seconds`` would pass a cap, or ``None``."""
    if budget.videos is not None and usage.videos + usage.reserved_videos + 1 > budget.videos:
        return f"videos cap {budget.videos} reached ({usage.videos} spent, {usage.reserved_videos} reserved in flight)"
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
