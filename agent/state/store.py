"""The state store: one SQLAlchemy engine, migrated to the newest schema on open.

SQLite runs in WAL mode with a busy timeout so the CLI, the service loop and the local API can share it; any
other SQLAlchemy URL (PostgreSQL in particular) works the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from agent.core.errors import ConfigurationError, TransientError
from agent.state import schema
from agent.state.lock import StoreLock
from agent.state.migrations import HEAD

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic's package:resource form: it finds the scripts through importlib.resources, wherever the package lives.
MIGRATIONS = "agent.state:migrations"
AUDIT_SEAL = "ledgerlink.audit_seal"  # the key in Connection.info under which begin() hands over the store's seal


log = logging.getLogger("ledgerlink.state")
# How each database says it has no room: SQLite's SQLITE_FULL, PostgreSQL's disk_full (53100), MariaDB's 1114
# "table is full" and an OS ENOSPC that any of them may pass on.
FULL_MARKERS = ("database or disk is full", "no space left on device", "could not extend file", "is full")


class StoreFull(TransientError):
    """The state store's disk (or database) has no room left; the transaction was rolled back whole."""


def _is_full(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code == "53100" or any(m in str(exc.orig).lower() for m in FULL_MARKERS)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.attributes["connection"] = connection
    return cfg


class StateStore:
    """Owns the engine; ``begin()`` yields a connection inside one transaction."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, pool_pre_ping=True, pool_recycle=1800)
        # Set by the instance lease while this agent is the active one: checks the fencing token first thing in
        # every write transaction (agent.state.lock).
        self.fence: Callable[[Connection], None] | None = None
        self.full: str | None = None  # why writes fail for want of space, while they do (for /status and doctor)
        self.upgraded = False  # whether opening it upgraded an older agent's schema (the runtime finishes the job)
        # The audit trail's keys (agent.state.anchor), set by the runtime from the secrets backend; every write
        # transaction hands it to audit.record through the connection's info. None: entries are not sealed.
        self.seal: object | None = None  # an agent.state.anchor.Seal (not imported: anchor builds on this module)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        if migrate:
            self.migrate()

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema in place (an older agent's state is kept). A store already at HEAD is told by its
        alembic_version row alone, without loading Alembic."""
        try:
            if revision == "head" and self._stamped() == HEAD:
                return
            from alembic import command
            from alembic.runtime.migration import MigrationContext

            with self.engine.begin() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
                if revision == "head" and current == self.head():
                    return
                command.upgrade(_alembic_config(conn), revision)
                self.upgraded = current is not None
        except OperationalError as exc:
            raise ConfigurationError(f"cannot open the state store {self.engine.url!r}: {exc.orig}") from None

    def _stamped(self) -> str | None:
        """The revision the store records (None: none yet), read as plain SQL."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    @cache
    def head() -> str | None:
        """The newest revision as Alembic reads versions/ (HEAD must be it)."""
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", MIGRATIONS)
        return ScriptDirectory.from_config(cfg).get_current_head()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction (on SQLite it takes the write lock up front).

        A full disk rolls the transaction back whole and raises StoreFull (a transient error: the jobs retry);
        ``full`` says so until a write succeeds again, which clears it by itself.
        """
        try:
            with self.engine.connect() as conn:
                conn.execution_options(sqlite_immediate=True)
                conn.info[AUDIT_SEAL] = self.seal
                with conn.begin():
                    if self.fence is not None:
                        self.fence(conn)
                    yield conn
        except DBAPIError as exc:
            if not _is_full(exc):
                raise
            if self.full is None:  # said once, with the time it began, until a write succeeds again
                log.error("the state store's disk is full; nothing was written, the agent retries: %s", exc.orig)
                self.full = f"the state store's disk is full since {utcnow():%Y-%m-%d %H:%M} UTC: free space on it"
            raise StoreFull(self.full) from None
        if self.full is not None:
            log.warning("the state store is writable again")
            self.full = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot that never waits for writers (WAL)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def instance_lock(self) -> StoreLock:
        """The store's single-instance lock (not yet taken): whatever home an agent runs from, one per store."""
        return StoreLock(self)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ small shared helpers

    def record_ok(self, component: str, at: dt.datetime | None = None) -> None:
        self._status(component, {"last_ok_at": at or utcnow()})

    def record_error(self, component: str, error: str) -> None:
        self._status(component, {"last_error_at": utcnow(), "last_error": error})

    def _status(self, component: str, values: dict[str, Any]) -> None:
        table = schema.component_status
        with self.begin() as conn:
            updated = conn.execute(table.update().where(table.c.component == component).values(**values))
            if updated.rowcount == 0:
                conn.execute(table.insert().values(component=component, **values))

    def component_status(self) -> dict[str, dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(select(schema.component_status)).mappings()
            return {r["component"]: dict(r) for r in rows}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    # A 4 MB page cache per connection (the default is 2 MB): a 1M-statement full sync took the same CPU time with
    # 16 MB, 4 MB and 2 MB (the OS keeps the file's pages; the b-tree's inner pages fit in 4 MB), and each
    # connection's cache is resident, so 16 MB cost some 28 MB of peak RSS (bench/README.md). A larger
    # auto-checkpoint (40 MB of WAL) fsyncs 10x less often; both bounded, so RSS and the WAL stay bounded.
    cur.execute("PRAGMA cache_size=-4096")
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the lock at BEGIN: two processes upgrading a read lock to a write lock would deadlock.
    immediate = conn.get_execution_options().get("sqlite_immediate")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def dumps_watermark(value: Any) -> str | None:
    """JSON with a type tag, so a checkpoint's watermark is bound back as the same type."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return json.dumps({"type": "datetime", "value": value.isoformat()})
    if isinstance(value, dt.date):
        return json.dumps({"type": "date", "value": value.isoformat()})
    if isinstance(value, int):
        return json.dumps({"type": "int", "value": value})
    if isinstance(value, bytes):
        return json.dumps({"type": "bytes", "value": value.hex()})
    return json.dumps({"type": "str", "value": str(value)})


def loads_watermark(text: str | None) -> Any:
    if text is None:
        return None
    data = json.loads(text)
    kind, value = data["type"], data["value"]
    parsers: dict[str, Callable[[Any], Any]] = {
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "int": int,
        "bytes": bytes.fromhex,
        "str": str,
    }
    return parsers[kind](value)
