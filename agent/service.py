"""``ledgerlink run``: the long-running loop. Each job has its own interval and is isolated, so one failing
plugin never stops the others; SIGTERM/SIGINT finish the job in flight and exit cleanly."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import LedgerlinkError
from agent.payments import EventPoller
from agent.runtime import Runtime
from agent.secrets import scrub

log = logging.getLogger("ledgerlink.service")


@dataclass
class Job:
    name: str
    interval: float
    run: Callable[[], object]
    due: float = 0.0


class Service:
    def __init__(self, rt: Runtime, jobs: list[Job]) -> None:
        self.rt = rt
        self.jobs = jobs
        self.stopping = threading.Event()

    def run_job(self, job: Job) -> None:
        try:
            job.run()
            self.rt.store.record_ok(job.name)
        except LedgerlinkError as exc:
            log.error("%s failed: %s", job.name, scrub(str(exc)))
            self.rt.store.record_error(job.name, scrub(str(exc)))
        except Exception as exc:  # a plugin bug must not stop the other jobs
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
    from agent.sync import Syncer
    from postings.outbox import Outbox

    syncer = Syncer(rt.store, rt.connector, rt.settings.sync_batch_size)
    outbox = Outbox(rt.store, rt.connector, rt.mapping)
    intervals = rt.settings.intervals
    return [
        Job("sync", intervals.sync, syncer.sync),
        Job("payments", intervals.payments, lambda: poll_payments(rt)),
        Job("postings", intervals.postings, outbox.run_once),
        Job("expiry", intervals.expiry, rt.links.expire_due),
        Job("review", intervals.sync, rt.links.review_outstanding),
    ]


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
    service = Service(rt, default_jobs(rt))

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s, finishing the job in flight", signal.Signals(signum).name)
        service.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pay_page = None if once else start_pay_page(rt)
    log.info("ledgerlink running from %s", rt.settings.home)
    try:
        service.loop(once=once)
    finally:
        if pay_page is not None:
            pay_page.stop()  # type: ignore[attr-defined]
    log.info("stopped")
    return 0
