"""One agent per state store: the lock belongs to the store itself, not to an agent's home.

Two agents with different homes but one ``LEDGERLINK_STATE_URL`` would each run an outbox and each take the
other's ``posting`` rows for a crashed predecessor's, writing payments twice. So the lock is found from the store:
a lock file beside a SQLite store and a named lock (GET_LOCK) in a MariaDB/MySQL one, both released by the
operating system or the database when the process dies; and a **lease** row in a PostgreSQL store.

The lease makes an active/standby pair possible: the active agent renews it every few seconds; a standby polls
and takes it over once it has expired by the database's clock (SIGKILL or power loss: within LEASE_SECONDS; a
clean stop releases it at once). Every takeover adds one to the lease's fencing token, and every state-store
write transaction first reads the token under a share lock (StateStore.begin calls ``fence``): an old active that
was only paused finds a newer token and writes nothing, and a takeover waits for any write already under way.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from agent.core import system
from agent.core.errors import LedgerlinkError

log = logging.getLogger("ledgerlink.state")



LEASE_NAME = "agent"
LEASE_SECONDS = 10.0  # a dead active's lease runs out in this; a standby polling every second takes over after it


class Store(Protocol):
    """What the lock needs of agent.state.store's StateStore (which holds the lock: no import back)."""

    engine: Engine
    fence: Callable[[Connection], None] | None


class AlreadyRunning(LedgerlinkError):
    """Another agent holds this state store; ``holder`` says which (host, pid), when known."""

    exit_code = 2  # start it elsewhere, or stop the other one: a person's choice

    def __init__(self, message: str, holder: str = "") -> None:
        super().__init__(message)
        self.holder = holder


class Fenced(LedgerlinkError):
    """Another agent took the lease over: this one must not write to the state store again."""

    exit_code = 3  # the lease went to a standby (README, exit codes)


def owner() -> str:
    """Who holds a lock, as the refusal names it: this process on this machine."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


class StoreLock:
    """The state store's single-instance lock; take it before any job runs, release it on the way out."""

    def __init__(self, store: Store, lease_seconds: float = LEASE_SECONDS) -> None:
        self.store = store
        self.url = store.engine.url
        self.lease_seconds = lease_seconds
        self.token: int | None = None
        self.lost = threading.Event()
        self.on_lost: Callable[[], None] | None = None
        self._file: IO[str] | None = None
        self._conn: Connection | None = None
        self._renewer: threading.Thread | None = None
        self._stop_renewing = threading.Event()

    @property
    def can_stand_by(self) -> bool:
        """Only a lease can be waited on and taken over from another machine."""
        return self.url.get_backend_name() == "postgresql"

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
            holder = self._take_lease()
            if holder is not None:
                raise self._refuse(holder)
        elif dialect in ("mysql", "mariadb"):
            self._lock_server("SELECT GET_LOCK(:name, 0) = 1", {"name": self._mysql_name()})
        else:
            log.warning("no single-instance lock for a %s state store; run one agent per store", dialect)

    # ------------------------------------------------------------------ the PostgreSQL lease

    def _take_lease(self) -> str | None:
        """Take the lease if it is free or expired (bumping the fencing token); else return who holds it."""
        with self.store.engine.connect() as conn, conn.begin():
            # A write of the active agent holds the row FOR SHARE; if that agent is paused mid-transaction, the
            # server ends its session (idle_in_transaction_session_timeout, set by fence) and the wait is over.
            conn.execute(text("SET LOCAL lock_timeout = '1s'"))
            conn.execute(text("INSERT INTO agent_lease (name, token) VALUES (:n, 0) ON CONFLICT (name) DO NOTHING"),
                         {"n": LEASE_NAME})
            try:
                row = conn.execute(text("SELECT holder, token, expires_at > now() AS live FROM agent_lease "
                                        "WHERE name = :n FOR UPDATE"), {"n": LEASE_NAME}).one()
            except OperationalError:
                return "an agent whose write is still under way"
            if row.holder is not None and row.live:
                return str(row.holder)
            token = int(row.token) + 1
            conn.execute(text("UPDATE agent_lease SET holder = :h, token = :t, acquired_at = now(), "
                              "expires_at = now() + make_interval(secs => :s) WHERE name = :n"),
                         {"h": owner(), "t": token, "s": self.lease_seconds, "n": LEASE_NAME})
        self.token = token
        self.lost.clear()
        self.store.fence = self.fence
        self._stop_renewing.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        self._renewer.start()
        log.info("took the state store's lease (fencing token %d)", token)
        return None

    def wait(self, stopping: threading.Event, poll: float = 1.0) -> bool:
        """Stand by until the lease can be taken (True) or ``stopping`` is set (False)."""
        said: str | None = None
        while not stopping.is_set():
            try:
                holder = self._take_lease()
            except Exception as exc:  # the store unreachable: a standby keeps waiting
                holder = f"state store unreachable: {type(exc).__name__}"
            if holder is None:
                return True
            if holder != said:
                log.info("standing by: the active agent is %s", holder)
                said = holder
            stopping.wait(poll)
        return False

    def fence(self, conn: Connection) -> None:
        """Called first in every state-store write transaction: refuse once another agent holds the lease."""
        # Should this process be paused inside the transaction, the server ends it after one lease: a standby
        # waiting to take over is never blocked for longer by the share lock below.
        conn.execute(text("SELECT set_config('idle_in_transaction_session_timeout', :ms, true)"),
                     {"ms": str(int(self.lease_seconds * 1000))})
        token = conn.execute(text("SELECT token FROM agent_lease WHERE name = :n FOR SHARE"),
                             {"n": LEASE_NAME}).scalar()
        if token != self.token:
            self._lose(f"the lease was taken over (token {token}, ours {self.token})")
            raise Fenced(f"this agent is no longer active: another one took the state store over (token {token})")

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            log.error("lost the state store's lease: %s; stopping", why)
            self.lost.set()
            if self.on_lost is not None:
                self.on_lost()

    def _renew_loop(self) -> None:
        renewed = time.monotonic()
        while not self._stop_renewing.wait(self.lease_seconds / 4):
            try:
                with self.store.engine.connect() as conn, conn.begin():
                    kept = conn.execute(text("UPDATE agent_lease SET expires_at = now() + make_interval(secs => :s) "
                                             "WHERE name = :n AND token = :t"),
                                        {"s": self.lease_seconds, "n": LEASE_NAME, "t": self.token}).rowcount
            except Exception as exc:  # unreachable for now: the lease may still be ours
                if time.monotonic() - renewed > self.lease_seconds:
                    self._lose(f"not renewed for {self.lease_seconds:.0f} s ({type(exc).__name__})")
                    return
                continue
            if not kept:
                self._lose("another agent holds it now")
                return
            renewed = time.monotonic()

    def _release_lease(self) -> None:
        self._stop_renewing.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        self.store.fence = None
        if self.token is not None and not self.lost.is_set():
            with self.store.engine.connect() as conn, conn.begin():  # hand over at once: no waiting for expiry
                conn.execute(text("UPDATE agent_lease SET holder = NULL, expires_at = now() "
                                  "WHERE name = :n AND token = :t"), {"n": LEASE_NAME, "t": self.token})
        self.token = None

    def _mysql_name(self) -> str:
        return f"ledgerlink-agent:{self.url.database}"[:64]  # GET_LOCK names are server-wide: name the database

    def _refuse(self, holder: str) -> AlreadyRunning:
        return AlreadyRunning(f"another ledgerlink is already running on the state store {self.describe()} "
                              f"({holder or 'holder unknown'})", holder)

    def _lock_file(self) -> None:
        path = self.lock_path()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the life of the agent
        try:
            system.current().try_lock(handle)
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
        session = conn.execute(text("SELECT IS_USED_LOCK(:name)"), {"name": self._mysql_name()}).scalar()
        return f"server session {session}" if session else None

    def release(self) -> None:
        if self.url.get_backend_name() == "postgresql":
            self._release_lease()
        if self._file is not None:
            system.current().unlock(self._file)
            self._file.close()
            self._file = None
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": self._mysql_name()})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None




def active_agent(store: Store) -> dict[str, object] | None:
    """Who holds a PostgreSQL store's lease, with its token and expiry, for ``status``; None elsewhere or if free."""
    if store.engine.url.get_backend_name() != "postgresql":
        return None
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT holder, token, expires_at, expires_at > now() AS live FROM agent_lease "
                                "WHERE name = :n"), {"n": LEASE_NAME}).mappings().first()
    return dict(row) if row is not None and row["holder"] is not None else None
