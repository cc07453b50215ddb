"""Workers for the payment-plan kill tests (tests/engine/test_plans_kill.py), killed with SIGKILL at random.

Two jobs on one agent home, whichever provider its operating account uses (the sandbox, or a fake server whose
URL is the account's api_base, credentials from the environment):

* ``plan DAY``: the plan job as on DAY: ``DirectDebit.schedule_collections`` (it finishes a collection a kill
  left 'creating', under the same idempotency key), then ``Plans.submit_due``. With probability P the worker
  SIGKILLs itself right after the provider made a collection and before the state store knew (the worst moment:
  the money is asked for, our record says 'creating'), after writing ``created <idempotency key>`` to the marker
  file.
* ``post``: the postings outbox until nothing is left to post. With probability P the worker SIGKILLs itself right
  after the firm database committed a posting (``write_posting`` wrote it) and before the state store marked it
  posted, after writing ``posted <reference>`` to the marker file.

As in tests/crash_worker.py, starting Python and importing the agent takes over a second, so this file runs as a
*zygote*: it imports everything once, then forks one worker per job line, kills it with SIGKILL after the delay
the line gives unless it ended first, and reports how it ended. Each worker is a separate process with its own
runtime, connections and HTTP clients, killed without warning; only the imports are shared. The zygote does the
killing because only the parent can be sure the pid still names its own (possibly zombie) child.

    python tests/plans_kill_worker.py HOME MARKER_FILE
    stdin:  plan DELAY P YYYY-MM-DD  |  post DELAY P
    stdout: ready, then per line "exit N SECONDS", "selfkill SECONDS" or "killed SECONDS"
"""

from __future__ import annotations

import datetime as dt
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from agent.engine.plans import Plans
from agent.runtime import Runtime
from connectors.providers.contract import Collection, DirectDebitProvider
from postings.queries import posting_rows

UNFINISHED = ("pending", "posting", "retrying")


def _die(marker: str, line: str) -> None:
    fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{line}\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def plan_job(home: Path, marker: str, day: dt.date, probability: float) -> int:
    """Submit the instalments due on ``day``; 0 once nothing is due."""
    rt = Runtime.for_home(home)
    provider = rt.provider("operating")
    assert isinstance(provider, DirectDebitProvider)
    create = provider.create_collection

    def create_then_maybe_die(mandate_ref: str, amount: Decimal, currency: str, charge_date: dt.date | None,
                              description: str, idempotency_key: str) -> Collection:
        made = create(mandate_ref, amount, currency, charge_date, description, idempotency_key)
        if random.random() < probability:
            _die(marker, f"created {idempotency_key}")
        return made

    # patched in this worker process only (mypy refuses any assignment to a method)
    provider.create_collection = create_then_maybe_die  # type: ignore[method-assign]
    try:
        rt.directdebit.schedule_collections(day)  # finishes a collection a kill left 'creating'
        Plans(rt.settings, rt.store, rt.directdebit, today=lambda: day).submit_due()
        return 0
    finally:
        rt.close()


def post_job(home: Path, marker: str, probability: float) -> int:
    """Post the outbox until nothing is left: 0 when everything is posted, 3 when some postings failed."""
    rt = Runtime.for_home(home)
    rt.outbox.reversal_wait = dt.timedelta(0)
    write = rt.connector.write_posting

    def write_then_maybe_die(params: Mapping[str, Any]) -> bool:
        written = write(params)
        if written and random.random() < probability:
            _die(marker, f"posted {params['reference']}")
        return written

    # patched in this worker process only (mypy refuses any assignment to a method)
    rt.connector.write_posting = write_then_maybe_die  # type: ignore[method-assign]
    try:
        while True:
            if rt.outbox.run_once():
                continue
            with rt.store.read() as conn:
                left = {r["state"] for r in posting_rows(conn, [*UNFINISHED, "failed"])}
            if not left:
                return 0
            if left == {"failed"}:
                return 3
            time.sleep(0.005)  # a retry is scheduled a moment ahead
    finally:
        rt.close()


def _warm_up(home: Path) -> None:
    """Everything a worker loads lazily (plugins, mapping, dialects), loaded once here, then closed: each worker
    still opens its own runtime."""
    rt = Runtime.for_home(home)
    try:
        assert rt.outbox is not None and rt.directdebit is not None
        rt.provider("operating")
    finally:
        rt.close()


def zygote(home: Path, marker: str) -> None:
    """Fork one worker per job line; SIGKILL it after the line's delay unless it ended; report how it ended."""
    _warm_up(home)
    print("ready", flush=True)
    for line in sys.stdin:
        job, delay, probability, *rest = line.split()
        if threading.active_count() != 1:  # a thread would not survive the fork in the worker
            raise RuntimeError(f"the zygote runs {threading.active_count()} threads; it must run one to fork")
        start = time.monotonic()
        marked = _size(marker)
        pid = os.fork()
        if pid == 0:
            random.seed()
            code = 1
            try:
                if job == "plan":
                    code = plan_job(home, marker, dt.date.fromisoformat(rest[0]), float(probability))
                else:
                    code = post_job(home, marker, float(probability))
            finally:
                os._exit(code)
        pidfd = os.pidfd_open(pid)
        try:
            select.select([pidfd], [], [], float(delay))  # readable once the worker ended; else the moment came
        finally:
            os.close(pidfd)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGKILL)  # still our unreaped child, so the pid cannot name anything else
            _, status = os.waitpid(pid, 0)
        if not os.WIFSIGNALED(status):
            verdict = f"exit {os.waitstatus_to_exitcode(status)}"
        else:  # a worker that marked its moment killed itself, though it may not have been gone yet
            verdict = "selfkill" if _size(marker) > marked else "killed"
        print(f"{verdict} {time.monotonic() - start:.4f}", flush=True)


# ------------------------------------------------------------------------------------------ the test's side


@dataclass
class Kills:
    """How a series of runs ended: killed by the driver, or by the worker itself at its moment."""

    runs: int = 0
    killed: int = 0  # by the driver, at a random moment
    selfkilled: int = 0  # by the worker: after the provider made a collection, or after the firm's commit

    def __iadd__(self, other: Kills) -> Kills:
        self.runs += other.runs
        self.killed += other.killed
        self.selfkilled += other.selfkilled
        return self


class Zygote:
    """The test's handle on a zygote for ``home`` (its provider's fake server must be running)."""

    def __init__(self, home: Path, workdir: Path) -> None:
        self.marker = workdir / "kills.txt"
        self.finished: dict[str, list[float]] = {}  # job -> seconds of each run that finished the job
        self.ended: dict[str, list[float]] = {}  # job -> seconds of each run that ended by itself (or killed itself)
        self.log_path = workdir / "zygote.log"
        self._log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the zygote
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen([sys.executable, __file__, str(home), str(self.marker)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"the plans kill zygote did not start: {self.log_path.read_text()}")

    def run(self, job: str, delay: float, probability: float, day: dt.date | None = None) -> tuple[str, float]:
        """One worker: ('exit 0' | 'exit N' | 'selfkill' | 'killed', seconds it ran)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{job} {delay:.4f} {probability} {day.isoformat() if day else ''}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"the plans kill zygote died: {self.log_path.read_text()}")
        verdict, seconds = answer.rsplit(" ", 1)
        return verdict, float(seconds)

    def until_done(self, job: str, rng: random.Random, *, day: dt.date | None = None, probability: float,
                   sure: int = 1, outside: int = 1, max_runs: int = 80) -> Kills:
        """Run ``job`` until a worker finishes it. This driver kills workers from outside at random moments: early
        (before the earliest moment a worker of this job ever ended by itself) until it has killed ``outside`` of
        them, then about a third of the runs early and a quarter anywhere in a whole run; the others are left to
        end by themselves. The first ``sure`` times a worker reaches its own moment it kills itself there, then
        with ``probability``."""
        kills = Kills()
        ends = self.ended.setdefault(job, [])
        finished = self.finished.setdefault(job, [])
        for _ in range(max_runs):
            early = rng.uniform(0.002, min(ends, default=0.03))
            anywhere = rng.uniform(0.002, max(finished, default=0.3))
            pick = rng.random()
            delay = early if kills.killed < outside or pick < 0.35 else anywhere if pick < 0.6 else 20.0
            verdict, seconds = self.run(job, delay, 1.0 if kills.selfkilled < sure else probability, day)
            kills.runs += 1
            if verdict in ("exit 0", "selfkill"):
                ends.append(seconds)
            if verdict == "exit 0":
                finished.append(seconds)
                return kills
            if verdict == "killed":
                kills.killed += 1
            elif verdict == "selfkill":
                kills.selfkilled += 1
            else:
                raise RuntimeError(f"a {job} worker ended with {verdict!r}: {self.log_path.read_text()}")
        raise RuntimeError(f"{job} not done after {max_runs} runs ({kills})")

    def marks(self, what: str) -> list[str]:
        """What the workers wrote just before killing themselves ('created KEY', 'posted REFERENCE')."""
        if not self.marker.exists():
            return []
        return [line.split(" ", 1)[1] for line in self.marker.read_text().splitlines() if line.startswith(what)]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()
            self._log.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    zygote(Path(sys.argv[1]), sys.argv[2])
