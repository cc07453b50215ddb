"""Throw-away databases on the real servers, for contract tests and benchmarks.

PostgreSQL and MariaDB are expected on 127.0.0.1 (override with LEDGERLINK_TEST_PG_HOST/PORT/USER and
LEDGERLINK_TEST_MARIADB_HOST/PORT/USER/PASSWORD). ``unavailable()`` says why a server cannot be used; the pytest
fixtures turn that into a skip on a laptop and a failure under CI=true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql
from sqlalchemy.engine import URL

__all__ = [
    "ODBC_DRIVERS",
    "Server",
    "TempDatabase",
    "in_ci",
    "mariadb_server",
    "odbc_unavailable",
    "postgres_server",
    "temp_database",
    "unavailable",
]

if TYPE_CHECKING:
    import psycopg


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Server:
    kind: str  # postgresql | mariadb
    host: str
    port: int
    user: str
    password: str


def postgres_server() -> Server:
    env = os.environ.get
    return Server("postgresql", env("LEDGERLINK_TEST_PG_HOST", "127.0.0.1"),
                  int(env("LEDGERLINK_TEST_PG_PORT", "5432")), env("LEDGERLINK_TEST_PG_USER", "postgres"),
                  env("LEDGERLINK_TEST_PG_PASSWORD", ""))


def mariadb_server() -> Server:
    env = os.environ.get
    return Server("mariadb", env("LEDGERLINK_TEST_MARIADB_HOST", "127.0.0.1"),
                  int(env("LEDGERLINK_TEST_MARIADB_PORT", "3306")), env("LEDGERLINK_TEST_MARIADB_USER", "root"),
                  env("LEDGERLINK_TEST_MARIADB_PASSWORD", ""))


def _admin(server: Server, database: str | None = None) -> psycopg.Connection[Any] | pymysql.Connection[Any]:
    if server.kind == "postgresql":
        import psycopg

        return psycopg.connect(host=server.host, port=server.port, user=server.user, password=server.password or None,
                               dbname=database or "postgres", autocommit=True, connect_timeout=3)
    return pymysql.connect(host=server.host, port=server.port, user=server.user, password=server.password,
                           database=database, autocommit=True, connect_timeout=3)


def unavailable(server: Server) -> str | None:
    """None when the server answers, else the reason (for the skip or CI failure message)."""
    try:
        _admin(server).close()
    except Exception as exc:  # any driver error means the same thing here
        return f"{server.kind} at {server.host}:{server.port} as {server.user} is not reachable: {exc}"
    return None


ODBC_DRIVERS = {"postgresql": "PostgreSQL Unicode", "mariadb": "MariaDB Unicode", "sqlite": "SQLite3"}


def odbc_unavailable(kind: str) -> str | None:
    """None when unixODBC and ``kind``'s driver are installed, else the reason."""
    try:
        import pyodbc
    except ImportError as exc:  # pyodbc's extension needs libodbc.so.2: no unixODBC on this machine
        return (f"unixODBC is not installed ({exc}); Debian: apt install unixodbc odbc-postgresql odbc-mariadb "
                "libsqliteodbc")
    driver = ODBC_DRIVERS[kind]
    if driver not in pyodbc.drivers():
        return (f"ODBC driver {driver!r} is not installed (Debian: unixodbc odbc-postgresql odbc-mariadb "
                f"libsqliteodbc); installed: {pyodbc.drivers()}")
    return None


@dataclass(frozen=True)
class TempDatabase:
    kind: str  # postgresql | mariadb | sqlite
    name: str
    url: URL  # SQLAlchemy URL
    odbc: str  # ODBC connection string (streaming and logging settings included)
    server: Server | None = None


@contextmanager
def temp_database(kind: str, folder: Path | None = None) -> Iterator[TempDatabase]:
    """Create a uniquely named database, yield its URLs, drop it afterwards."""
    name = f"ll_test_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        assert folder is not None, "sqlite needs a folder"
        path = folder / f"{name}.db"
        odbc = f"Driver={{{ODBC_DRIVERS['sqlite']}}};Database={path};StepAPI=1;Timeout=30000"
        yield TempDatabase("sqlite", name, URL.create("sqlite", database=str(path)), odbc)
        return
    server = postgres_server() if kind == "postgresql" else mariadb_server()
    admin = _admin(server)
    try:
        with admin.cursor() as cur:
            if kind == "postgresql":
                cur.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
            else:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        if kind == "postgresql":
            url = URL.create("postgresql+psycopg", username=server.user, password=server.password or None,
                             host=server.host, port=server.port, database=name)
            # psqlODBC streams only with UseDeclareFetch; CommLog=0 stops the /tmp/psqlodbc_*.log files.
            odbc = (f"Driver={{{ODBC_DRIVERS[kind]}}};Server={server.host};Port={server.port};Database={name};"
                    f"Uid={server.user};Pwd={server.password};UseDeclareFetch=1;Fetch=10000;CommLog=0;Debug=0")
        else:
            url = URL.create("mysql+pymysql", username=server.user, password=server.password or None,
                             host=server.host, port=server.port, database=name, query={"charset": "utf8mb4"})
            odbc = (f"Driver={{{ODBC_DRIVERS[kind]}}};Server={server.host};Port={server.port};Database={name};"
                    f"Uid={server.user};Pwd={server.password};CharSet=utf8mb4")
        yield TempDatabase(kind, name, url, odbc, server)
    finally:
        with admin.cursor() as cur:
            if kind == "postgresql":
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
