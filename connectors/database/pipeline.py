"""One write-back transaction in two round trips on PostgreSQL, through psycopg 3's pipeline mode.

Statement by statement, a posting costs BEGIN, ready, exists, every write and COMMIT: one round trip each, most
of a posting's time on a server. Pipelined, the transaction is the same and so is its order: BEGIN, the ready
check and the existence check go in one round trip and are read; only when the reference is not there are the
writes and COMMIT sent, in the second. The reference is still checked inside the write's own (SERIALIZABLE)
transaction, before any write, so exactly once rests on the same rule as everywhere else.
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


class PipelineFailed(Exception):
    """The database refused something in the pipeline; the transaction was rolled back, nothing was written."""


def pipelines(dialect: Dialect) -> bool:
    """Whether this engine's driver is psycopg 3 on a libpq that has pipeline mode (14 and later)."""
    return dialect.name == "postgresql" and dialect.driver == "psycopg" and psycopg.Pipeline.is_supported()


class Pipelined:
    """Runs a write-back section's transaction pipelined on the driver connection under a SQLAlchemy one."""

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
        cursor.execute(statement, {name: params[name] for name in names})
        return cursor

    def write(self, conn: Connection, spec: SqlWriteBack, params: Mapping[str, Any]) -> bool:
        """True when written, False when the reference was there; NotReady when the ready check says not now;
        PipelineFailed (rolled back) on any database error, for the caller to run the posting stepwise."""
        raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
        try:
            with raw.pipeline() as pipe:
                ready = self._send(raw.cursor(), spec.ready, params) if spec.ready is not None else None
                exists = self._send(raw.cursor(), spec.exists, params)
                pipe.sync()
                reason = not_ready_reason(ready.fetchone()) if ready is not None else None
                if reason is not None or exists.fetchone() is not None:
                    raw.rollback()
                    if reason is not None:
                        raise NotReady(f"the firm database is not ready: {reason}")
                    return False
                for sql in spec.writes:
                    self._send(exists, sql, params)  # its row is read: the cursor can carry the writes
                raw.commit()
            return True
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error):
                raw.rollback()
            raise PipelineFailed(str(exc)) from exc
