"""One agent per state store: the lock belongs to the store itself, not to an agent's home.

Two agents with different homes but one ``LEDGERLINK_STATE_URL`` would each run an outbox and each take the
other's ``posting`` rows for a crashed predecessor's, writing payments twice. So the lock is found from the store:
a lock file beside a SQLite store, a session advisory lock in a PostgreSQL store, a named lock (GET_LOCK) in a
MariaDB/MySQL one. Each is released by the operating system or the database when the process dies, so a crash
never leaves a stale lock behind.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sqlalchemy import Connection, text

from agent.core.errors import LedgerlinkError

if TYPE_CHECKING:
    from agent.state.store import StateStore

log = logging.getLogger("ledgerlink.state")

WINDOWS_LOCK_OFFSET = 1 << 20  # Windows cannot read a locked byte: lock one far past the pid written at the start
PG_LOCK_KEYS = (0x4C4C4E4B, zlib.crc32(b"ledgerlink-agent") & 0x7FFFFFFF)  # "LLNK", any stable pair will do


class AlreadyRunning(LedgerlinkError):
    """Another agent holds this state store."""


def owner() -> str:
    """Who holds a lock, as the refusal names it: this process on this machine."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


class StoreLock:
    """The state store's single-instance lock; take it before any job runs, release it on the way out."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.url = store.engine.url
        self._file: IO[str] | None = None
        self._conn: Connection | None = None

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def lock_path(self) -> Path | None:
        """``<store>.lock`` beside a SQLite file (whatever home the agent has); None for an in-memory store."""
        database = self.url.database
        if self.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            return None
        path = Path(database).resolve()
        return path.with_name(path.name + ".lock")

    def acquire(self) -> None:
        dialect = self.url.get_backend_name()
        if dialect == "sqlite":
            self._lock_file()
        elif dialect == "postgresql":
            self._lock_server("SELECT pg_try_advisory_lock(:a, :b)",
                              {"a": PG_LOCK_KEYS[0], "b": PG_LOCK_KEYS[1]})
        elif dialect in ("mysql", "mariadb"):
            self._lock_server("SELECT GET_LOCK(:name, 0) = 1", {"name": self._mysql_name()})
        else:
            log.warning("no single-instance lock for a %s state store; run one agent per store", dialect)

    def _mysql_name(self) -> str:
        return f"ledgerlink-agent:{self.url.database}"[:64]  # GET_LOCK names are server-wide: name the database

    def _refuse(self, holder: str) -> AlreadyRunning:
        return AlreadyRunning(f"another ledgerlink is already running on the state store {self.describe()} "
                              f"({holder or 'holder unknown'})")

    def _lock_file(self) -> None:
        path = self.lock_path()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the life of the agent
        try:
            _try_lock(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read(200).strip()
            handle.close()
            raise self._refuse(holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{owner()}\n")
        handle.flush()
        self._file = handle

    def _lock_server(self, sql: str, params: dict[str, object]) -> None:
        conn = self.store.engine.connect()
        try:
            if self.url.get_backend_name() == "postgresql":
                conn.execute(text("SELECT set_config('application_name', :name, false)"),
                             {"name": f"ledgerlink {owner()}"[:63]})
            got = bool(conn.execute(text(sql), params).scalar())
            holder = None if got else self._server_holder(conn)
            conn.commit()  # the lock is held by the session, not a transaction: leave no transaction open
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            raise self._refuse(holder or "")
        self._conn = conn

    def _server_holder(self, conn: Connection) -> str | None:
        if self.url.get_backend_name() == "postgresql":
            name = conn.execute(text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :a AND l.objid = :b"),
                {"a": PG_LOCK_KEYS[0], "b": PG_LOCK_KEYS[1]}).scalar()
            return str(name).removeprefix("ledgerlink ") if name else None
        session = conn.execute(text("SELECT IS_USED_LOCK(:name)"), {"name": self._mysql_name()}).scalar()
        return f"server session {session}" if session else None

    def release(self) -> None:
        if self._file is not None:
            _unlock(self._file)
            self._file.close()
            self._file = None
        if self._conn is not None:
            try:
                if self.url.get_backend_name() == "postgresql":
                    self._conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"),
                                       {"a": PG_LOCK_KEYS[0], "b": PG_LOCK_KEYS[1]})
                else:
                    self._conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": self._mysql_name()})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None


if sys.platform == "win32":
    import msvcrt

    def _try_lock(handle: IO[str]) -> None:
        handle.seek(WINDOWS_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(handle: IO[str]) -> None:
        handle.seek(WINDOWS_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(handle: IO[str]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(handle: IO[str]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
