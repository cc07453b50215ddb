"""``ledgerlink run``: the long-running loop, the local API and the sandbox pay page, one instance per state store.

Each job has its own interval and is isolated, so one failing plugin never stops the others; SIGTERM/SIGINT
finish the job in flight and exit cleanly. A second agent on the same state store, from any home, is refused
(exit code 2) by the store's own lock (agent.state.lock): two outboxes would each take the other's ``posting``
rows for a crashed predecessor's.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.api.app import serve_api
from agent.api.console import sign_in_url
from agent.core import system
from agent.core.errors import ConfigurationError, LedgerlinkError, RuleError
from agent.core.model import Actor
from agent.core.scrub import scrub
from agent.engine.intake import InboxIntake, process_request_table
from agent.engine.payments import EventPoller, ReconcileResult
from agent.home.logs import setup_logging
from agent.runtime import Runtime
from agent.service.reload import ConfigWatcher
from agent.state import audit
from agent.state.lock import AlreadyRunning, Fenced, StoreLock
from agent.state.signin import CODE_MINUTES, new_code
from agent.state.store import utcnow
from agent.state.users import link_user
from connectors.providers.sandbox import SandboxPayServer

log = logging.getLogger("ledgerlink.service")

OK_EVERY = 30.0
SERVICE = Actor("system", "service")  # who starts and stops: the service itself, on behalf of its OS user


def job(name: str) -> Actor:
    """The actor a job's changes are audited as."""
    return Actor("job", name)


@dataclass
class Job:
    name: str
    interval: float
    run: Callable[[], object]
    due: float = 0.0
    ok_written: float = float("-inf")
    failed: bool = False


NAP_MAX = 1.0  # seconds: the longest the loop sleeps, so a stop set from outside is seen within a second


class Wakeup:
    """Jobs run at once on an event instead of at their next tick: a payment recorded wakes the outbox. Any
    thread may wake a job; the service loop, waiting on ``event``, runs it next."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def wake(self, name: str) -> None:
        with self._lock:
            self._names.add(name)
            self.event.set()

    def take(self, name: str) -> bool:
        """Whether ``name`` was woken since it last ran (and forget it)."""
        with self._lock:
            if name not in self._names:
                return False
            self._names.discard(name)
            if not self._names:
                self.event.clear()
            return True

    def nap(self, seconds: float) -> None:
        """Sleep until a job is woken or ``seconds`` pass."""
        self.event.wait(seconds)


class Service:
    def __init__(self, rt: Runtime, jobs: list[Job], stopping: threading.Event | None = None,
                 wakeup: Wakeup | None = None) -> None:
        self.rt = rt
        self.jobs = jobs
        self.stopping = stopping or threading.Event()
        self.wakeup = wakeup or Wakeup()

    def run_job(self, job: Job) -> None:
        try:
            job.run()
            # A success is written at most every OK_EVERY seconds (and at once after a failure): a write per
            # one-second poll was most of the agent's idle CPU.
            now = time.monotonic()
            if job.failed or now - job.ok_written >= OK_EVERY:
                self.rt.store.record_ok(job.name)
                job.ok_written, job.failed = now, False
        except Fenced:
            self.stopping.set()  # another agent is active now: nothing more may be written, not even this error
        except LedgerlinkError as exc:
            job.failed = True
            log.error("%s failed: %s", job.name, scrub(str(exc)))
            self._record_error(job, scrub(str(exc)))
        except Exception as exc:  # a plugin bug must not stop the other jobs
            job.failed = True
            log.exception("%s crashed", job.name)
            self._record_error(job, scrub(f"{type(exc).__name__}: {exc}"))

    def _record_error(self, job: Job, message: str) -> None:
        """Record the error in the store; when the store cannot take even that (a full disk), the log has it and
        the agent goes on: the next run retries the job and the record."""
        try:
            self.rt.store.record_error(job.name, message)
        except LedgerlinkError as exc:
            log.error("%s: its error could not be recorded either: %s", job.name, exc)

    def loop(self, once: bool = False) -> None:
        while not self.stopping.is_set():
            for job in self.jobs:
                if self.stopping.is_set():
                    break
                if self.wakeup.take(job.name) or time.monotonic() >= job.due:
                    self.run_job(job)
                    job.due = time.monotonic() + job.interval
            if once:
                return
            wait = min(job.due for job in self.jobs) - time.monotonic()
            self.wakeup.nap(min(max(0.05, wait), NAP_MAX))


POLL_BACKOFF_MAX = 300.0  # seconds: the longest a failing account waits before its next try


@dataclass
class _AccountPoll:
    due: float = 0.0  # monotonic time of the next try
    failures: int = 0


class PaymentPolls:
    """Each account polls on its own: one whose provider refuses (401) or is down backs off alone, one attempt a
    try, and shows its error as the ``payments:<account>`` component in /status and check; the others go on."""

    def __init__(self, rt: Runtime, *, backoff: float = 5.0, on_new: Callable[[], object] | None = None) -> None:
        self.rt = rt
        self.backoff = backoff
        self.on_new = on_new  # called once a poll recorded anything new: the service wakes the outbox
        self.accounts: dict[str, _AccountPoll] = {}
        self.pollers: dict[str, EventPoller] = {}  # kept, with the cursor each knows, while its provider stands

    def __call__(self) -> int:
        rt, new = self.rt, 0
        for name in rt.settings.accounts:
            state = self.accounts.setdefault(name, _AccountPoll())
            if time.monotonic() < state.due:
                continue
            component = f"payments:{name}"
            try:
                result = self._poller(name).poll()
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
                    rt.links.create_remainder(job("payments"), link_id)
        if new and self.on_new is not None:
            self.on_new()
        return new

    def _poller(self, name: str) -> EventPoller:
        provider, poller = self.rt.provider(name), self.pollers.get(name)
        if poller is None or poller.provider is not provider or poller.store is not self.rt.store:
            poller = self.pollers[name] = EventPoller(self.rt.store, provider, name, attempts=1)
        return poller


RECONCILE_EVERY = 24 * 3600.0  # seconds: the reconciliation job runs daily
CHECKPOINT_EVERY = 60.0  # seconds between signed checkpoints of the audit trail, while it moves
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
                rt.links.create_remainder(job("payment-reconcile"), link_id)
    return results


def poll_payments(rt: Runtime) -> int:
    """Read every account's new events once (each account on its own); after a partial payment, create the
    remainder link if so configured."""
    return PaymentPolls(rt)()


POSTING_BUDGET = 5.0  # seconds one run of the postings job keeps taking full batches, so the other jobs still run


def post_and_refresh(rt: Runtime, budget: float = POSTING_BUDGET) -> object:
    """Write postings back, batch after batch while full ones keep making progress (for up to ``budget``
    seconds: a burst of 1,000 payments waited ten runs of one batch each, p99 15 s, bench/README.md); when any
    were written, read the statements again at once (an incremental pass, as cheap as the sync job's), so the
    balances on screen are right within a second, not at the next sync."""
    total: Counter[str] = Counter()
    until = time.monotonic() + budget
    while True:
        result = rt.outbox.run_once()
        total.update(result)
        moved = result.get("posted", 0) + result.get("already", 0)
        if not moved or sum(result.values()) < rt.outbox.batch_size or time.monotonic() >= until:
            break
    if total.get("posted"):
        rt.syncer.sync(["statements"])
    return dict(total)


def reconcile(rt: Runtime) -> object:
    """The nightly reconciliation sweep: every source row compared with the mirror by key and content hash."""
    result = rt.syncer.reconcile()
    log.info("reconciliation sweep: %s", result.summary())
    return result


def reconcile_due(rt: Runtime, interval: float) -> float:
    """When the first reconciliation sweep is due: one interval after the last one the store recorded, so a
    restart neither repeats a full read nor, restarting daily, postpones it for ever; soon on a new store."""
    last: dt.datetime | None = rt.store.component_status().get("reconcile", {}).get("last_ok_at")
    if last is None:
        return time.monotonic() + min(interval, 60.0)
    elapsed = (utcnow() - last).total_seconds()
    return time.monotonic() + max(0.0, interval - elapsed)


def default_jobs(rt: Runtime, wakeup: Wakeup | None = None) -> list[Job]:
    """The service's jobs; each reads its engine from the runtime at every run, so a hot reload takes effect.
    With the service's ``wakeup``, a poll that recorded a payment wakes the outbox at once."""
    inbox = InboxIntake(rt.links, rt.settings.home / "inbox")
    intervals = rt.settings.intervals
    on_new = (lambda: wakeup.wake("postings")) if wakeup is not None else None
    jobs = [
        Job("sync", intervals.sync, lambda: rt.syncer.sync()),
        Job("reconcile", intervals.reconcile, lambda: reconcile(rt), due=reconcile_due(rt, intervals.reconcile)),
        Job("payments", intervals.payments, PaymentPolls(rt, on_new=on_new)),
        Job("payment-reconcile", RECONCILE_EVERY, lambda: reconcile_payments(rt), due=time.monotonic() + 600),
        Job("postings", intervals.postings, lambda: post_and_refresh(rt)),
        Job("expiry", intervals.expiry, lambda: rt.links.expire_due()),
        Job("review", intervals.sync, lambda: rt.links.review_outstanding(job("review"))),
        Job("inbox", intervals.intake, inbox.scan),
        Job("collections", intervals.sync, lambda: rt.directdebit.schedule_collections()),
        Job("plans", intervals.sync, lambda: rt.plans.submit_due()),
        Job("reminders", intervals.expiry, lambda: rt.reminders.run(job("reminders"))),
        Job("plan-reminders", intervals.expiry, lambda: rt.plan_reminders.run(job("plan-reminders"))),
        Job("refunds", intervals.expiry, lambda: rt.refunds.resume()),
        Job("payouts", intervals.payouts, lambda: rt.payouts.sync(), due=time.monotonic() + 60),
        # a signed checkpoint of the audit trail's head, each minute it moved (agent.state.anchor)
        Job("audit-checkpoint", CHECKPOINT_EVERY, lambda: rt.checkpoints.write()),
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
        server = SandboxPayServer(rt.settings.home, port=rt.settings.sandbox_port)
    except OSError as exc:
        raise ConfigurationError(
            f"the sandbox pay page cannot listen on 127.0.0.1:{rt.settings.sandbox_port} ({exc.strerror}); set "
            "sandbox_port in ledgerlink.toml (or LEDGERLINK_SANDBOX_PORT) to a free port, or stop the program "
            "using it") from None
    server.start()
    log.info("sandbox pay page on %s/pay/<link>", server.url)
    return server


def run_service(rt: Runtime, once: bool = False) -> int:
    """Run until SIGTERM/SIGINT (or one pass with ``once``); 2 when another agent has this state store, unless
    this one is a standby (``standby = true`` on a PostgreSQL store): then it waits and takes over. 3 when the
    lease was lost to another agent while running, so a supervisor starts this one again as the standby."""
    setup_logging(settings=rt.settings)
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s, finishing the job in flight", signal.Signals(signum).name)
        stopping.set()

    # From the very start, so a stop that arrives while standing by or starting up is never the default action
    previous = {sig: signal.signal(sig, stop) for sig in system.current().stop_signals()}
    try:
        return _run(rt, once, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(rt: Runtime, once: bool, stopping: threading.Event) -> int:
    lock = rt.store.instance_lock()  # before any job runs
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        if not (rt.settings.standby and lock.can_stand_by and not once):
            log.error("%s", exc)
            return 2
        if not lock.wait(stopping):  # the hot standby: until the active agent's lease is free, or a stop
            return 0
    try:
        code = _run_locked(rt, once, lock, stopping)
    finally:
        lock.release()
    return 3 if lock.lost.is_set() else code


def _print_sign_in_link(rt: Runtime, url: str) -> None:
    """The console link for the only admin (a new home's ``admin``); with several, how to make one."""
    try:
        admin = link_user(rt.store, None)
    except RuleError as exc:
        log.info("staff console at %s/console/: sign in with your name and password, or %s", url, exc)
        return
    log.info("staff console (this link signs in %r, once, within %d minutes; 'ledgerlink api login-link' makes "
             "another): %s", admin, CODE_MINUTES, sign_in_url(url, new_code(rt.store, admin)))


def _audit_service(rt: Runtime, action: str, **after: object) -> None:
    """service.start / service.stop on the audit trail; a store this agent may no longer write (fenced out,
    full) is logged instead, since nothing else may be written then either."""
    try:
        with rt.store.begin() as conn:
            audit.record(conn, SERVICE, action, "service", socket.gethostname(), after={
                "pid": os.getpid(), "user": getpass.getuser(), "version": __version__, **after})
    except LedgerlinkError as exc:  # Fenced and StoreFull among them
        log.warning("%s not written to the audit trail: %s", action, exc)


def _run_locked(rt: Runtime, once: bool, lock: StoreLock, stopping: threading.Event) -> int:
    _audit_service(rt, "service.start", home=str(rt.settings.home), once=once)
    try:
        return _serve(rt, once, lock, stopping)
    finally:
        reason = "lease lost to another agent" if lock.lost.is_set() else "one pass" if once else "stop requested"
        _audit_service(rt, "service.stop", reason=reason)
        if not lock.lost.is_set():
            rt.checkpoints.write()  # the trail as this agent leaves it
        log.info("stopped")


def _serve(rt: Runtime, once: bool, lock: StoreLock, stopping: threading.Event) -> int:
    wakeup = Wakeup()
    service = Service(rt, default_jobs(rt, wakeup), stopping, wakeup)
    lock.on_lost = stopping.set  # fenced out by a takeover: stop at once, write nothing more
    servers: list[Any] = []
    try:
        if not once:
            servers.append(start_pay_page(rt))
            api = serve_api(rt, rt.settings.api_host, rt.settings.api_port)
            servers.append(api)
            _print_sign_in_link(rt, api.url)
            watcher = ConfigWatcher(rt, polling=rt.settings.watch_polling).start()
            servers.append(watcher)
            service.jobs.append(Job("watcher", 5.0, watcher.ensure_alive))
        log.info("ledgerlink running from %s", rt.settings.home)
        service.loop(once=once)
    finally:
        for server in reversed(servers):  # the API first: no new requests while the rest winds down
            if server is not None:
                server.stop()
    return 0
