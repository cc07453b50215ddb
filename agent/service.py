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
            now = time.monotonic()
            for job in self.jobs:
                if self.stopping.is_set():
                    break
                if now >= job.due:
                    self.run_job(job)
                    job.due = time.monotonic() + job.interval
            if once:
                return
            wait = min(job.due for job in self.jobs) - time.monotonic()
            self.stopping.wait(max(0.05, wait))


def default_jobs(rt: Runtime) -> list[Job]:
    from agent.sync import Syncer

    syncer = Syncer(rt.store, rt.connector, rt.settings.sync_batch_size)
    return [Job("sync", 30.0, syncer.sync)]


def run_service(rt: Runtime, once: bool = False) -> int:
    service = Service(rt, default_jobs(rt))

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s, finishing the job in flight", signal.Signals(signum).name)
        service.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("ledgerlink running from %s", rt.settings.home)
    service.loop(once=once)
    log.info("stopped")
    return 0
