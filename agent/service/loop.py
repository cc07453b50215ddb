"""``ledgerlink run``: the long-running loop, the local API and the sandbox pay page, one instance per state store.

Each job has its own interval and is isolated, so one failing plugin never stops the others; SIGTERM/SIGINT
finish the job in flight and exit cleanly. A second agent on the same state store is refused (exit code 2): two
outboxes would each take the other's ``posting`` rows for a crashed predecessor's.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from agent.api.app import ensure_token, serve_api
from agent.api.console import login_url
from agent.core.errors import ConfigurationError, LedgerlinkError
from agent.core.scrub import scrub
from agent.engine.intake import InboxIntake, process_request_table
from agent.engine.payments import EventPoller
from agent.home.logs import setup_logging
from agent.runtime import Runtime
from agent.service.reload import ConfigWatcher
from connectors.providers.sandbox import SandboxPayServer

log = logging.getLogger("ledgerlink.service")

LOCK_NAME = "agent.lock"
WINDOWS_LOCK_OFFSET = 1 << 20  # Windows cannot read a locked byte: lock one far past the pid written at the start
PG_LOCK_KEYS = (0x4C4C4E4B, zlib.crc32(b"ledgerlink-agent") & 0x7FFFFFFF)  # "LLNK", any stable pair will do


class AlreadyRunning(LedgerlinkError):
    """Another agent holds this state store."""


class InstanceLock:
    """One agent per state store: a file lock beside SQLite state, an advisory lock in PostgreSQL.

    Both are released by the operating system or the database when the process dies, so a crash never leaves a
    stale lock behind.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.home = rt.settings.home
        self._file: IO[str] | None = None
        self._conn: Connection | None = None

    def lock_path(self) -> Path:
        """``<home>/agent.lock`` for the usual state.db; beside the file for a SQLite store kept elsewhere."""
        database = Path(make_url(self.rt.settings.state_database_url).database or "")
        if database.parent.resolve() == self.home.resolve():
            return self.home / LOCK_NAME
        return database.with_name(database.name + ".lock")

    def acquire(self) -> None:
        dialect = make_url(self.rt.settings.state_database_url).get_backend_name()
        if dialect == "sqlite":
            self._lock_file()
        elif dialect == "postgresql":
            self._lock_postgres()
        else:
            log.warning("no single-instance lock for a %s state store; run one agent per store", dialect)

    def _refuse(self, pid: str) -> AlreadyRunning:
        return AlreadyRunning(f"another ledgerlink is already running for {self.home} (pid {pid or 'unknown'})")

    def _lock_file(self) -> None:
        path = self.lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="ascii")  # noqa: SIM115 - held open for the life of the agent
        try:
            _try_lock(handle)
        except OSError:
            handle.seek(0)
            pid = handle.read(32).strip()
            handle.close()
            raise self._refuse(pid) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def _lock_postgres(self) -> None:
        conn = self.rt.store.engine.connect()
        conn.execute(text("SELECT set_config('application_name', :name, false)"),
                     {"name": f"ledgerlink pid {os.getpid()} on {socket.gethostname()}"[:63]})
        got = conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                           {"a": PG_LOCK_KEYS[0], "b": PG_LOCK_KEYS[1]}).scalar_one()
        holder = None if got else conn.execute(text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :a AND l.objid = :b"),
            {"a": PG_LOCK_KEYS[0], "b": PG_LOCK_KEYS[1]}).scalar()
        conn.commit()  # the lock is held by the session, not a transaction: leave no transaction open
        if not got:
            conn.close()
            raise self._refuse(str(holder or "").removeprefix("ledgerlink pid "))
        self._conn = conn

    def release(self) -> None:
        if self._file is not None:
            _unlock(self._file)
            self._file.close()
            self._file = None
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"),
                                   {"a": PG_LOCK_KEYS[0], "b": PG_LOCK_KEYS[1]})
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


OK_EVERY = 30.0


@dataclass
class Job:
    name: str
    interval: float
    run: Callable[[], object]
    due: float = 0.0
    ok_written: float = float("-inf")
    failed: bool = False


class Service:
    def __init__(self, rt: Runtime, jobs: list[Job]) -> None:
        self.rt = rt
        self.jobs = jobs
        self.stopping = threading.Event()

    def run_job(self, job: Job) -> None:
        try:
            job.run()
            # A success is written at most every OK_EVERY seconds (and at once after a failure): a write per
            # one-second poll was most of the agent's idle CPU.
            now = time.monotonic()
            if job.failed or now - job.ok_written >= OK_EVERY:
                self.rt.store.record_ok(job.name)
                job.ok_written, job.failed = now, False
        except LedgerlinkError as exc:
            job.failed = True
            log.error("%s failed: %s", job.name, scrub(str(exc)))
            self.rt.store.record_error(job.name, scrub(str(exc)))
        except Exception as exc:  # a plugin bug must not stop the other jobs
            job.failed = True
            log.exception("%s crashed", job.name)
            self.rt.store.record_error(job.name, scrub(f"{type(exc).__name__}: {exc}"))

    def loop(self, once: bool = False) -> None:
        while not self.stopping.is_set():
            for job in self.jobs:
                if self.stopping.is_set():
                    break
                if time.monotonic() >= job.due:
                    self.run_job(job)
                    job.due = time.monotonic() + job.interval
            if once:
                return
            wait = min(job.due for job in self.jobs) - time.monotonic()
            self.stopping.wait(max(0.05, wait))


def poll_payments(rt: Runtime) -> int:
    """Read every account's new events; after a partial payment, create the remainder link if so configured."""
    new = 0
    for name in rt.settings.accounts:
        result = EventPoller(rt.store, rt.provider(name), name).poll()
        new += result.new
        if rt.settings.remainder_link == "auto":
            for link_id in result.remainders or []:
                rt.links.create_remainder(link_id)
    return new


def default_jobs(rt: Runtime) -> list[Job]:
    """The service's jobs; each reads its engine from the runtime at every run, so a hot reload takes effect."""
    inbox = InboxIntake(rt.links, rt.settings.home / "inbox")
    intervals = rt.settings.intervals
    jobs = [
        Job("sync", intervals.sync, lambda: rt.syncer.sync()),
        Job("payments", intervals.payments, lambda: poll_payments(rt)),
        Job("postings", intervals.postings, lambda: rt.outbox.run_once()),
        Job("expiry", intervals.expiry, lambda: rt.links.expire_due()),
        Job("review", intervals.sync, lambda: rt.links.review_outstanding()),
        Job("inbox", intervals.intake, inbox.scan),
        Job("collections", intervals.sync, lambda: rt.directdebit.schedule_collections()),
        Job("reminders", intervals.expiry, lambda: rt.reminders.run()),
    ]
    if rt.mapping.requests is not None:
        jobs.append(Job("requests", intervals.intake,
                        lambda: process_request_table(rt.connector, rt.mapping.requests, rt.links)))
    return jobs


def start_pay_page(rt: Runtime) -> object | None:
    """The sandbox's hosted pay page, when any account uses the sandbox provider."""
    if not any(a.provider == "sandbox" for a in rt.settings.accounts.values()):
        return None
    try:
        server = SandboxPayServer(rt.settings.home, port=rt.settings.sandbox_port,
                                  disclaimer_for=lambda name: rt.settings.account(name).disclaimer)
    except OSError as exc:
        raise ConfigurationError(
            f"the sandbox pay page cannot listen on 127.0.0.1:{rt.settings.sandbox_port} ({exc.strerror}); set "
            "sandbox_port in ledgerlink.toml (or LEDGERLINK_SANDBOX_PORT) to a free port, or stop the program "
            "using it") from None
    server.start()
    log.info("sandbox pay page on %s/pay/<link>", server.url)
    return server


def run_service(rt: Runtime, once: bool = False) -> int:
    """Run until SIGTERM/SIGINT (or one pass with ``once``); 2 when another agent has this state store."""
    setup_logging(settings=rt.settings)
    lock = InstanceLock(rt)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return 2
    try:
        return _run_locked(rt, once)
    finally:
        lock.release()


def _run_locked(rt: Runtime, once: bool) -> int:
    service = Service(rt, default_jobs(rt))

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s, finishing the job in flight", signal.Signals(signum).name)
        service.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    servers: list[Any] = []
    try:
        if not once:
            servers.append(start_pay_page(rt))
            api = serve_api(rt, rt.settings.api_host, rt.settings.api_port)
            servers.append(api)
            log.info("staff console: %s", login_url(api.url, ensure_token(rt.secrets)))
            watcher = ConfigWatcher(rt, polling=rt.settings.watch_polling).start()
            servers.append(watcher)
            service.jobs.append(Job("watcher", 5.0, watcher.ensure_alive))
        log.info("ledgerlink running from %s", rt.settings.home)
        service.loop(once=once)
    finally:
        for server in reversed(servers):  # the API first: no new requests while the rest winds down
            if server is not None:
                server.stop()
    log.info("stopped")
    return 0
