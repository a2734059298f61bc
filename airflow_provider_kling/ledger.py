"""
The budget ledger: what each budget's period spent and holds reserved, in a SQL database opened
through its Airflow connection's own hook, changed only in transactions that hold the period's row
lock (see :mod:`.budgets` for the budgets themselves and the guarantee).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from airflow_provider_kling.budgets import STORE_TYPES
from airflow_provider_kling.exceptions import (
    KlingBudgetStoreError,
    KlingError,
    KlingInputError,
    excerpt,
)
from airflow_provider_kling.ledger_films import FilmReservations, exceeded, refusal_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_kling.budgets import Budget

Dialect = Literal["sqlite", "postgres"]
#: Databases the ledger runs on: the Airflow connection type, and the provider whose hook opens it.
STORE_PROVIDERS: dict[Dialect, str] = {
    "sqlite": "apache-airflow-providers-sqlite",
    "postgres": "apache-airflow-providers-postgres",
}
_DIALECTS: dict[str, Dialect] = {"sqlite": "sqlite", "postgres": "postgres", "postgresql": "postgres"}
#: Seconds a PostgreSQL ledger may take to accept a connection, where its connection sets no ``connect_timeout``.
CONNECT_TIMEOUT_S = 10
#: Seconds one statement may take on PostgreSQL, the wait for a period's row lock included.
STATEMENT_TIMEOUT_S = 30
#: Seconds a SQLite ledger waits for the database's write lock.
SQLITE_BUSY_TIMEOUT_S = 60


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


class BudgetLedger(FilmReservations):
    """
    The ledger in a SQL database, through DB-API: every change to a period's usage happens in one
    transaction holding that period's row lock.

    :param connect: opens a DB-API connection.
    :param dialect: ``sqlite`` or ``postgres``.
    """

    def __init__(
        self, connect: Callable[[], Any], dialect: Dialect, *, store: str = "", connect_timeout: float | None = None
    ) -> None:
        self._connect = connect
        self.dialect = dialect
        self.store = store
        self.connect_timeout = connect_timeout
        self._ready = False

    @classmethod
    def from_connection(cls, conn_id: str) -> BudgetLedger:
        """
        The ledger in the database of the Airflow connection ``conn_id``, opened by that connection's
        own hook (``PostgresHook``, ``SqliteHook``), so every extra it carries applies (``sslmode``,
        ``sslrootcert``, ``options``, ``connect_timeout``...). A PostgreSQL connection that sets no
        ``connect_timeout`` gets :data:`CONNECT_TIMEOUT_S`.

        :raises KlingInputError: the connection is of a type the ledger does not run on.
        :raises KlingBudgetStoreError: the type's provider is not installed.
        """
        from airflow.providers.common.compat.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        dialect = _DIALECTS.get(str(conn.conn_type))
        if dialect is None:
            raise KlingInputError(
                f"budget_store: connection {conn_id!r} is of type {conn.conn_type!r}; allowed: {', '.join(STORE_TYPES)}"
            )
        connect_timeout = None
        if dialect == "postgres":
            connect_timeout = conn.extra_dejson.get("connect_timeout")
            if connect_timeout is None:
                connect_timeout = CONNECT_TIMEOUT_S
                conn.extra = json.dumps({**conn.extra_dejson, "connect_timeout": connect_timeout})
        try:
            hook = conn.get_hook(hook_params={"connection": conn})
        except Exception as err:  # Airflow raises several types for a hook it cannot make
            raise KlingBudgetStoreError(
                f"The budget ledger {conn_id!r} is a {conn.conn_type} connection, whose hook Airflow could not make "
                f"({excerpt(str(err))}): install {STORE_PROVIDERS[dialect]} where tasks run. Nothing was sent.",
                store=conn_id,
            ) from err
        return cls(hook.get_conn, dialect, store=conn_id, connect_timeout=float(connect_timeout or 0) or None)

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
            refusal = refusal_of(budget, usage, video_seconds)
            if refusal is not None:
                raise exceeded(budget, period, usage, f"refuses this generation before anything is sent: {refusal}")
            self._hold(cursor, budget.name, period, 1, video_seconds)
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

    def _hold(self, cursor: Any, budget: str, period: str, videos: int, seconds: float) -> None:
        """Count ``videos`` of ``seconds`` in all as reserved in the period's usage (its row is locked)."""
        self._execute(
            cursor,
            "UPDATE kling_budget_usage SET reserved_videos = reserved_videos + ?, "
            "reserved_seconds = reserved_seconds + ? WHERE budget = ? AND period = ?",
            (videos, seconds, budget, period),
        )

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

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """
        One transaction on a new connection, its statements bounded in time: ``BEGIN IMMEDIATE`` on
        SQLite (the write lock at once, waited for up to :data:`SQLITE_BUSY_TIMEOUT_S`), a
        ``statement_timeout`` of :data:`STATEMENT_TIMEOUT_S` on PostgreSQL. A database error becomes
        :class:`KlingBudgetStoreError`, naming the store.

        The tables are made, where missing, in a transaction of their own before the first one: made
        inside a transaction that then waits for a row lock, they deadlock with one that holds it.
        """
        conn = self._open()
        try:
            if not self._ready:
                self._begin(conn.cursor())
                self._create_tables(conn.cursor())
                self._commit(conn)
            cursor = conn.cursor()
            self._begin(cursor)
            yield cursor
            self._commit(conn)
        except KlingError:
            self._rollback(conn)
            raise
        except Exception as err:  # each driver has its own error types
            self._rollback(conn)
            raise KlingBudgetStoreError(
                f"The budget ledger {self.store!r} ({self.dialect}) failed: {excerpt(str(err))}", store=self.store
            ) from err
        finally:
            with suppress(Exception):
                conn.close()

    def _open(self) -> Any:
        """A new connection, from the hook; one that cannot be made is :class:`KlingBudgetStoreError`."""
        try:
            conn = self._connect()
        except Exception as err:  # each driver has its own error types
            within = f" within {self.connect_timeout:g} s" if self.connect_timeout else ""
            raise KlingBudgetStoreError(
                f"The budget ledger {self.store!r} ({self.dialect}) did not answer{within}: {excerpt(str(err))}. "
                "Nothing was sent to RunComfy; a retry tries again.",
                store=self.store,
            ) from err
        if self.dialect == "sqlite":
            conn.isolation_level = None  # the transactions are ours: BEGIN IMMEDIATE ... COMMIT
            conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        return conn

    def _begin(self, cursor: Any) -> None:
        if self.dialect == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        else:
            cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_S * 1000}")

    def _commit(self, conn: Any) -> None:
        conn.execute("COMMIT") if self.dialect == "sqlite" else conn.commit()

    def _rollback(self, conn: Any) -> None:
        with suppress(Exception):  # the connection may be the thing that broke
            conn.execute("ROLLBACK") if self.dialect == "sqlite" else conn.rollback()

    def _create_tables(self, cursor: Any) -> None:
        id_column = "SERIAL PRIMARY KEY" if self.dialect == "postgres" else "INTEGER PRIMARY KEY AUTOINCREMENT"
        if self.dialect == "postgres":
            # Made in one transaction, so the last table stands for all: found, nothing is locked.
            cursor.execute("SELECT to_regclass('kling_request_end') IS NOT NULL")
            if cursor.fetchone()[0]:
                self._ready = True
                return
            cursor.execute("SELECT pg_advisory_xact_lock(7315640)")  # one creator at a time
        for statement in _SCHEMA:
            cursor.execute(statement.format(id_column=id_column))
        self._ready = True
