"""One write-back transaction on PostgreSQL straight through psycopg, in two round trips.

The transaction is the one the stepwise path runs (BEGIN at the writer's SERIALIZABLE level, ready, the existence
check, every write, COMMIT; the reference checked inside the write's own transaction, before any write), minus
SQLAlchemy's per-statement work and most of the waiting. Each mapping statement is prepared once per session
(``PREPARE``, so the server plans it once, as psycopg's own prepared statements do for the raw loop); then the
first round trip carries BEGIN, the ready check and the existence check as ``EXECUTE``s, and the second the writes
and COMMIT, or only ROLLBACK when the reference is there. A client-side binding cursor (psycopg's ClientCursor,
quoting with the driver's own adapters) is what lets one query string hold several statements with values; the
connection stays in autocommit between postings, so psycopg adds no BEGIN of its own, and leaves it before
SQLAlchemy runs anything on it.

A connection with psycopg's prepared statements turned off (``connect_args: {prepare_threshold: null}`` in the
mapping's ``source.options``, as psycopg documents for PgBouncer in transaction mode, where a session's prepared
statements do not survive) posts through SQLAlchemy instead.

Measured in bench/README.md: five round trips with server-side binding were 0.81x the raw loop, all statements
client-bound in two round trips 0.72x (the server planned every statement every time), prepared and in two round
trips 0.88x. Pipeline mode was tried first and measured slower on a local server: psycopg flushes and polls the
socket for every queued statement, which costs more client CPU than the round trips it saves.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, TextClause, text
from sqlalchemy.engine import Dialect

from connectors.database.contract import not_ready_reason
from connectors.database.errors import NotReady
from mappings.format import SqlWriteBack
from mappings.sqlparams import literal_colons_escaped, param_names

# The writer connection's level (SQLAlchemyConnector._writer_connection): no other writer can slip the same
# reference in between the existence check and the writes.
BEGIN = "BEGIN ISOLATION LEVEL SERIALIZABLE"
PREFIX = "ledgerlink_"  # our prepared statements' names; psycopg's own are _pg3_*
_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s")  # as SQLAlchemy renders for psycopg: a literal % is doubled


def mapping_text(sql: str) -> TextClause:
    """A mapping's SQL as SQLAlchemy text: a colon inside a quoted string stays a colon, not a parameter."""
    return text(literal_colons_escaped(sql))


class DriverFailed(Exception):
    """The database refused a statement; the transaction was rolled back, nothing was written."""


def direct(dialect: Dialect) -> bool:
    """Whether this engine's driver is psycopg 3, whose cursor the write-back can use directly."""
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


class Prepared:
    """One mapping statement as a session's prepared statement: its PREPARE, and its EXECUTE with the values."""

    def __init__(self, rendered: str) -> None:
        names: list[str] = []

        def position(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "%"
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        body = _PLACEHOLDER.sub(position, rendered)
        self.name = PREFIX + hashlib.blake2b(body.encode(), digest_size=8).hexdigest()
        self.prepare = f"PREPARE {self.name} AS {body}"
        self.names = names
        args = ", ".join(f"%({n})s" for n in names)
        self.execute = f"EXECUTE {self.name}({args})" if names else f"EXECUTE {self.name}"


class DriverWriter:
    """Runs a write-back section's transaction on the driver connection under a SQLAlchemy one."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._plans: dict[tuple[str | None, ...], tuple[list[Prepared], list[Prepared], list[str]]] = {}
        self._session: int | None = None  # the server process whose prepared statements _ready lists
        self._ready: set[str] = set()
        self._cursor: psycopg.ClientCursor[Any] | None = None

    def _plan(self, spec: SqlWriteBack) -> tuple[list[Prepared], list[Prepared], list[str]]:
        """The section's checks and writes as prepared statements, and the parameter names they bind."""
        key = (spec.ready, spec.exists, *spec.writes)
        if key not in self._plans:
            checks = [spec.ready] if spec.ready is not None else []
            prepared = [Prepared(str(mapping_text(sql).compile(dialect=self.dialect))) for sql in [*checks, spec.exists,
                                                                                          *spec.writes]]
            names = sorted({name for sql in key if sql is not None for name in param_names(sql)})
            self._plans[key] = (prepared[:len(checks) + 1], prepared[len(checks) + 1:], names)
        return self._plans[key]

    def _prepare(self, raw: psycopg.Connection[Any], statements: list[Prepared]) -> None:
        """PREPARE what this session lacks, outside any transaction (a connection may be new, or reset)."""
        if raw.info.backend_pid != self._session:
            found = raw.execute("SELECT name FROM pg_prepared_statements")
            self._ready = {row[0] for row in found if row[0].startswith(PREFIX)}
            self._session = raw.info.backend_pid
        for statement in statements:
            if statement.name not in self._ready:
                raw.execute(statement.prepare)
                self._ready.add(statement.name)

    def _cursor_on(self, raw: psycopg.Connection[Any]) -> psycopg.ClientCursor[Any]:
        """One client-binding cursor per connection, kept between postings."""
        if self._cursor is None or self._cursor.closed or self._cursor.connection is not raw:
            self._cursor = psycopg.ClientCursor(raw)
        return self._cursor

    @staticmethod
    def release(conn: Connection) -> None:
        """Out of autocommit, for SQLAlchemy's own transactions on the same connection (the stepwise path); a
        connection that cannot leave it is closed, so it is never used half-way (the next posting reconnects)."""
        raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
        try:
            if raw.autocommit:
                raw.autocommit = False
        except psycopg.Error:
            raw.close()

    @staticmethod
    def _send(cursor: psycopg.ClientCursor[Any], parts: list[str], params: Mapping[str, Any]) -> None:
        """Several statements in one query string, each on its own lines (a trailing ``--`` comment in a value's
        text cannot swallow the next: values are quoted literals)."""
        cursor.execute("\n;\n".join(parts), params)

    def write(self, conn: Connection, spec: SqlWriteBack, params: Mapping[str, Any]) -> bool:
        """True when written, False when the reference was there; NotReady when the ready check says not now;
        DriverFailed (rolled back) on any database error, for the caller to run the posting stepwise."""
        raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
        if raw.prepare_threshold is None:  # prepared statements are off (a pooler in transaction mode, as
            raise DriverFailed("prepared statements are off on this connection")  # psycopg documents it)
        checks, writes, names = self._plan(spec)
        values = {name: params[name] for name in names}
        reason: str | None = None
        try:
            if raw.info.transaction_status != TransactionStatus.IDLE:
                raw.rollback()  # nothing of ours is open between postings; never build on what is
            if not raw.autocommit:  # and stays so between postings; release() before SQLAlchemy uses it
                raw.autocommit = True
            self._prepare(raw, checks + writes)
            cursor = self._cursor_on(raw)
            self._send(cursor, [BEGIN, *(s.execute for s in checks)], values)
            cursor.nextset()  # past BEGIN's empty result
            if spec.ready is not None:
                reason = not_ready_reason(cursor.fetchone())
                cursor.nextset()
            written = reason is None and cursor.fetchone() is None
            self._send(cursor, [*(s.execute for s in writes), "COMMIT"] if written else ["ROLLBACK"], values)
        except psycopg.Error as exc:
            self._session = None  # list the session's prepared statements again before the next posting
            with contextlib.suppress(psycopg.Error):
                raw.rollback()
            self.release(conn)
            raise DriverFailed(str(exc)) from exc
        if reason is not None:
            raise NotReady(f"the firm database is not ready: {reason}")
        return written
