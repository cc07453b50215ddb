"""One write-back transaction on PostgreSQL straight through the psycopg cursor, the statements compiled once.

The transaction is the one the stepwise path runs (BEGIN at the writer's SERIALIZABLE level, ready, the existence
check, every write, COMMIT; the reference checked inside the write's own transaction, before any write), minus
SQLAlchemy's per-statement work: each mapping text is rendered into psycopg's paramstyle once, and psycopg prepares
it on the server after a few runs, as it does for the raw loop.

Pipeline mode was tried and measured slower on a local server (bench/README.md): psycopg flushes and polls the
socket for every queued statement and syncs BEGIN and the pipeline's exit on their own, which costs more client
CPU than the round trips it saves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.engine import Dialect

from connectors.database.contract import not_ready_reason
from connectors.database.errors import NotReady
from mappings.format import SqlWriteBack
from mappings.sqlparams import param_names


class DriverFailed(Exception):
    """The database refused a statement; the transaction was rolled back, nothing was written."""


def direct(dialect: Dialect) -> bool:
    """Whether this engine's driver is psycopg 3, whose cursor the write-back can use directly."""
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


class DriverWriter:
    """Runs a write-back section's transaction on the driver connection under a SQLAlchemy one."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._compiled: dict[str, tuple[str, list[str]]] = {}

    def _sql(self, sql: str) -> tuple[str, list[str]]:
        """The statement in the driver's own paramstyle (SQLAlchemy renders and escapes it) and its names."""
        if sql not in self._compiled:
            self._compiled[sql] = (str(text(sql).compile(dialect=self.dialect)), param_names(sql))
        return self._compiled[sql]

    def _send(self, cursor: psycopg.Cursor[Any], sql: str, params: Mapping[str, Any]) -> psycopg.Cursor[Any]:
        statement, names = self._sql(sql)
        return cursor.execute(statement, {name: params[name] for name in names})

    def write(self, conn: Connection, spec: SqlWriteBack, params: Mapping[str, Any]) -> bool:
        """True when written, False when the reference was there; NotReady when the ready check says not now;
        DriverFailed (rolled back) on any database error, for the caller to run the posting stepwise."""
        raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
        try:
            with raw.cursor() as cursor:
                ready = self._send(cursor, spec.ready, params) if spec.ready is not None else None
                reason = not_ready_reason(ready.fetchone()) if ready is not None else None
                written = reason is None and self._send(cursor, spec.exists, params).fetchone() is None
                for sql in spec.writes if written else ():
                    self._send(cursor, sql, params)
            if written:
                raw.commit()
            else:
                raw.rollback()
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error):
                raw.rollback()
            raise DriverFailed(str(exc)) from exc
        if reason is not None:
            raise NotReady(f"the firm database is not ready: {reason}")
        return written
