"""
A PostgreSQL server of the OS's own package (Debian's ``postgresql``, which ``make test`` installs
when missing), started for the tests that need one on a free loopback port in a temporary folder,
and removed with it. PostgreSQL refuses to run as root: as root, its tools run as its own user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.conftest import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


def _bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PostgresServer:
    """One running server; :meth:`connection` describes an Airflow connection to one of its databases."""

    def __init__(self, port: int) -> None:
        self.port = port

    def connection(self, database: str, **extra: Any) -> dict[str, Any]:
        """An Airflow connection (as ``AIRFLOW_CONN_*`` JSON takes it) to ``database``, with ``extra``."""
        conn: dict[str, Any] = {"conn_type": "postgres", "host": "127.0.0.1", "port": self.port, "login": "kling"}
        return {**conn, "schema": database, **({"extra": extra} if extra else {})}

    def sql(self, database: str, statement: str) -> str:
        """Run ``statement`` with ``psql``; its rows, unaligned."""
        psql = [str(_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "kling", "-d", database]
        done = subprocess.run([*psql, "-At", "-c", statement], check=True, capture_output=True, text=True)
        return done.stdout.strip()


@contextmanager
def postgres_server(*databases: str) -> Iterator[PostgresServer]:
    """Start a server with ``databases`` (owned by the trusted user ``kling``); stop and remove it after."""
    pg = _bin()
    if pg is None:
        raise RuntimeError("PostgreSQL is not installed: `make test` installs Debian's postgresql package")
    root = Path(tempfile.mkdtemp(prefix="kling-pg-"))
    data, sockets = root / "data", root / "sockets"
    data.mkdir()
    sockets.mkdir()
    if os.geteuid() == 0:
        for folder in (root, data, sockets):
            shutil.chown(folder, "postgres")
    server = PostgresServer(free_port())
    pg_ctl = [str(pg / "pg_ctl"), "-D", str(data)]
    try:
        initdb = [str(pg / "initdb"), "-D", str(data), "-U", "kling", "-A", "trust", "-E", "UTF8"]
        subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
        options = f"-p {server.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_postgres([*pg_ctl, "-o", options, "-l", str(root / "log"), "-w", "start"]), check=True)
        for database in databases:
            server.sql("postgres", f"CREATE DATABASE {database}")
        yield server
    finally:
        subprocess.run(_as_postgres([*pg_ctl, "-m", "immediate", "stop"]), check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
