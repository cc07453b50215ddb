"""``ledgerlink run``: the long-running loop, the local API and the sandbox pay page, one instance per state store.

Each job has its own interval and is isolated, so one failing plugin never stops the others; SIGTERM/SIGINT
finish the job in flight and exit cleanly. A second agent on the same state store is refused (exit code 2): two
outboxes would each take the other's ``posting`` rows for a crashed predecessor's.
"""

from __future__ import annotations

import datetime as dt
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

from agent.core.errors import LedgerlinkError
from agent.core.scrub import scrub
from agent.engine.payments import EventPoller, ReconcileResult
from agent.runtime import Runtime
from agent.state.store import utcnow

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


POLL_BACKOFF_MAX = 300.0  # seconds: the longest a failing account waits before its next try


@dataclass
class _AccountPoll:
    due: float = 0.0  # monotonic time of the next try
    failures: int = 0


class PaymentPolls:
    """Each account polls on its own: one whose provider refuses (401) or is down backs off alone, one attempt a
    try, and shows its error as the ``payments:<account>`` component in /status and check; the others go on."""

    def __init__(self, rt: Runtime, *, backoff: float = 5.0) -> None:
        self.rt = rt
        self.backoff = backoff
        self.accounts: dict[str, _AccountPoll] = {}

    def __call__(self) -> int:
        rt, new = self.rt, 0
        for name in rt.settings.accounts:
            state = self.accounts.setdefault(name, _AccountPoll())
            if time.monotonic() < state.due:
                continue
            component = f"payments:{name}"
            try:
                result = EventPoller(rt.store, rt.provider(name), name, attempts=1).poll()
            except Exception as exc:  # one account's provider, or plugin, must not stop the others
                state.failures += 1
                state.due = time.monotonic() + min(POLL_BACKOFF_MAX, self.backoff * 2 ** (state.failures - 1))
                message = scrub(f"{type(exc).__name__}: {exc}")
                log.error("payments for %s failed (try %d): %s", name, state.failures, message)
                rt.store.record_error(component, message)
                continue
            if state.failures or state.due == 0.0:
                rt.store.record_ok(component)
            state.failures, state.due = 0, time.monotonic()
            new += result.new
            if rt.settings.remainder_link == "auto":
                for link_id in result.remainders or []:
                    rt.links.create_remainder(link_id)
        return new


RECONCILE_EVERY = 24 * 3600.0  # seconds: the reconciliation job runs daily
RECONCILE_WINDOW = 3  # days of payments and links it compares with the provider


def reconcile_payments(rt: Runtime, since: dt.datetime | None = None) -> dict[str, ReconcileResult]:
    """Compare each account's payments of the window with what its provider lists, healing lost events; one
    failing account is recorded (``reconcile:<account>``) and does not stop the others."""
    since = since or utcnow() - dt.timedelta(days=RECONCILE_WINDOW)
    results = {}
    for name in rt.settings.accounts:
        try:
            results[name] = result = EventPoller(rt.store, rt.provider(name), name).reconcile(since)
        except Exception as exc:  # one account's provider, or plugin, must not stop the others
            message = scrub(f"{type(exc).__name__}: {exc}")
            log.error("reconciliation of %s failed: %s", name, message)
            rt.store.record_error(f"reconcile:{name}", message)
            continue
        rt.store.record_ok(f"reconcile:{name}")
        if rt.settings.remainder_link == "auto":
            for link_id in result.remainders:
                rt.links.create_remainder(link_id)
    return results


def poll_payments(rt: Runtime) -> int:
    """Read every account's new events once (each account on its own); after a partial payment, create the
    remainder link if so configured."""
    return PaymentPolls(rt)()


class _Parts:
    """Syncer and outbox for the runtime's current connector: rebuilt after a hot reload swapped it."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._built_for: object | None = None

    def _refresh(self) -> None:
        from agent.engine.sync import Syncer
        from postings.outbox import Outbox

        connector = self.rt.connector
        if connector is not self._built_for:
            self.syncer = Syncer(self.rt.store, connector, self.rt.settings.sync_batch_size)
            self.outbox = Outbox(self.rt.store, connector, self.rt.mapping)
            self._built_for = connector

    def sync(self) -> object:
        self._refresh()
        return self.syncer.sync()

    def post(self) -> object:
        self._refresh()
        return self.outbox.run_once()


def default_jobs(rt: Runtime) -> list[Job]:
    from agent.engine.directdebit import schedule_collections
    from agent.engine.intake import InboxIntake, process_request_table
    from agent.engine.reminders import run_reminders

    parts = _Parts(rt)
    inbox = InboxIntake(rt, rt.settings.home / "inbox")
    intervals = rt.settings.intervals
    jobs = [
        Job("sync", intervals.sync, parts.sync),
        Job("payments", intervals.payments, PaymentPolls(rt)),
        Job("reconcile", RECONCILE_EVERY, lambda: reconcile_payments(rt), due=time.monotonic() + 600),
        Job("postings", intervals.postings, parts.post),
        Job("expiry", intervals.expiry, lambda: rt.links.expire_due()),
        Job("review", intervals.sync, lambda: rt.links.review_outstanding()),
        Job("inbox", intervals.intake, inbox.scan),
    ]
    jobs.append(Job("collections", intervals.sync, lambda: schedule_collections(rt)))
    jobs.append(Job("reminders", intervals.expiry, lambda: run_reminders(rt)))
    if rt.mapping.requests is not None:
        jobs.append(Job("requests", intervals.intake, lambda: process_request_table(rt)))
    return jobs


def start_pay_page(rt: Runtime) -> object | None:
    """The sandbox's hosted pay page, when any account uses the sandbox provider."""
    if not any(a.provider == "sandbox" for a in rt.settings.accounts.values()):
        return None
    from connectors.providers.sandbox import SandboxPayServer

    server = SandboxPayServer(rt.settings.home, port=rt.settings.sandbox_port,
                              disclaimer_for=lambda name: rt.settings.account(name).disclaimer)
    server.start()
    log.info("sandbox pay page on %s/pay/<link>", server.url)
    return server


def run_service(rt: Runtime, once: bool = False) -> int:
    """Run until SIGTERM/SIGINT (or one pass with ``once``); 2 when another agent has this state store."""
    from agent.home.logs import setup_logging

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
            from agent.api.app import ensure_token, serve_api
            from agent.api.console import login_url
            from agent.service.reload import ConfigWatcher

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
