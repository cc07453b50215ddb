"""Soak: a real ``ledgerlink run`` idle, then under a trickle of payments, sampled for CPU % and RSS every second.

Targets (issue 5, idle tightened by issue 17): idle CPU <= 0.5 % of one core, RSS <= 150 MB, RSS growth <= 5 %
over the run. The agent runs on
a fresh demo home (SQLite firm, sandbox provider) with its default intervals, so the idle figure is what a firm's
server pays for the polling loop. Growth compares the RSS once the agent has settled (after its first sync and
the first link, when the link engine's imports are loaded) with the RSS at the end of the run.
The idle figure is the agent's own utime + stime from ``/proc/<pid>/stat`` over the whole idle half (>= 60 s
by default, after start-up: the first sync, a first payment and the first reconciliation sweep a new store runs a
minute in), divided by the wall time: the kernel's account,
not a sampling of one-second snapshots.
Run as a module (bench/postings.py would shadow the package): ``.venv/bin/python -m bench.soak --seconds 120``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psutil
from sqlalchemy import func, select

from agent.core.errors import LedgerlinkError
from agent.core.model import Actor
from agent.engine.links import LinkRequest
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state.schema import postings
from agent.state.search import search_matters
from connectors.providers import sandbox

STAFF = Actor("cli", "bench")  # who the benchmark's changes are audited as

LEDGERLINK = Path(sys.executable).with_name("ledgerlink")
TARGET_IDLE_CPU = 0.5  # % of one core
TARGET_RSS_MB = 150.0
TARGET_GROWTH = 5.0  # %


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far, from /proc/<pid>/stat (fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    t: float
    phase: str
    cpu: float  # % of one core over the last second
    rss_mb: float


def wait_until_synced(rt: Runtime, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the agent exited with {proc.returncode}; see {rt.settings.home / 'console.log'}")
        if rt.store.component_status().get("sync", {}).get("last_ok_at"):
            return
        time.sleep(0.2)
    raise SystemExit("the agent never finished its first sync")


def wait_until_swept(rt: Runtime, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """A new store runs its first reconciliation sweep a minute after start (agent.service.loop.reconcile_due):
    start-up work, so the idle half begins after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the agent exited with {proc.returncode}; see {rt.settings.home / 'console.log'}")
        if rt.store.component_status().get("reconcile", {}).get("last_ok_at"):
            return
        time.sleep(0.5)
    raise SystemExit("the agent never ran its first reconciliation sweep")


def payable_matters(rt: Runtime) -> list[str]:
    with rt.store.read() as conn:
        rows = search_matters(conn, "M-", limit=100)
    found = []
    for row in rows:
        try:
            defaults = rt.links.defaults(row.matter.number)
        except LedgerlinkError:
            continue
        if row.matter.status == "open" and defaults.payer_email and defaults.amount >= 100:
            found.append(row.matter.number)
    return found


def posted(rt: Runtime) -> int:
    with rt.store.read() as conn:
        return conn.execute(select(func.count()).where(postings.c.state == "posted")).scalar_one()


def soak(seconds: float, every: float) -> tuple[list[Sample], int, int, float]:
    """Half the run idle, half with one payment every ``every`` seconds; returns samples, payments, posted and
    the idle half's CPU (% of one core, from /proc/<pid>/stat)."""
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        env = {**os.environ, "LEDGERLINK_HOME": str(home), "LEDGERLINK_SANDBOX_PORT": "0", "LEDGERLINK_API_PORT": "0"}
        with open(home / "console.log", "wb") as console:
            proc = subprocess.Popen([str(LEDGERLINK), "run"], env=env, stdout=console, stderr=console)
        rt = Runtime.for_home(home)
        try:
            wait_until_synced(rt, proc)
            matters = payable_matters(rt)
            agent = psutil.Process(proc.pid)
            # One payment before measuring: the agent imports the links and postings code on first use.
            first = rt.links.create(STAFF, LinkRequest(matter=matters[0], amount=Decimal("1.00")))
            sandbox.pay(home, first.provider_ref)
            wait_until_swept(rt, proc)
            time.sleep(3)
            agent.cpu_percent(None)
            start = time.monotonic()
            idle_cpu, idle_from, idle_cpu_pct = cpu_seconds(proc.pid), start, -1.0
            paid, next_payment = 1, start + seconds / 2
            while (now := time.monotonic()) - start < seconds:
                time.sleep(max(0.0, 1.0 - (now - start) % 1.0))
                elapsed = time.monotonic() - start
                phase = "idle" if elapsed <= seconds / 2 else "trickle"
                if phase == "trickle" and idle_cpu_pct < 0:
                    idle_cpu_pct = (cpu_seconds(proc.pid) - idle_cpu) / (time.monotonic() - idle_from) * 100
                samples.append(Sample(elapsed, phase, agent.cpu_percent(None), agent.memory_info().rss / 2**20))
                if phase == "trickle" and time.monotonic() >= next_payment:
                    request = LinkRequest(matter=matters[paid % len(matters)], amount=Decimal("1.00"))
                    link = rt.links.create(STAFF, request)
                    if not link.existing:  # the matter's last link is paid but the agent has not read it yet
                        sandbox.pay(home, link.provider_ref)
                        paid += 1
                    next_payment += every
            time.sleep(3)  # let the last payment be posted
            done = posted(rt)
        finally:
            proc.terminate()
            proc.wait(30)
            rt.close()
    return samples, paid, done, idle_cpu_pct


def report(samples: list[Sample], paid: int, done: int, idle_cpu: float, every_n: int = 10) -> bool:
    print(f"{'t (s)':>6}  {'phase':<8} {'CPU %':>6}  {'RSS MB':>7}")
    for s in samples[::every_n]:
        print(f"{s.t:6.0f}  {s.phase:<8} {s.cpu:6.2f}  {s.rss_mb:7.1f}")
    idle = [s.cpu for s in samples if s.phase == "idle"]
    trickle = [s.cpu for s in samples if s.phase == "trickle"]
    rss = [s.rss_mb for s in samples]
    head, tail = statistics.mean(rss[:5]), statistics.mean(rss[-5:])
    growth = (tail - head) / head * 100
    idle_seconds = max(s.t for s in samples if s.phase == "idle")
    checks = {
        f"idle CPU {idle_cpu:.2f} % of a core over {idle_seconds:.0f} s from /proc/<pid>/stat "
        f"(<= {TARGET_IDLE_CPU:g} %; psutil 1 s samples: mean {statistics.mean(idle):.2f} %, max {max(idle):.1f} %)":
            idle_cpu <= TARGET_IDLE_CPU,
        f"trickle CPU {statistics.mean(trickle):.2f} % (max {max(trickle):.1f} %), {paid} payments, {done} posted":
            done == paid,
        f"RSS peak {max(rss):.1f} MB (<= {TARGET_RSS_MB:g} MB)": max(rss) <= TARGET_RSS_MB,
        f"RSS growth {growth:+.1f} % ({head:.1f} -> {tail:.1f} MB, <= {TARGET_GROWTH:g} %)": growth <= TARGET_GROWTH,
    }
    for text, ok in checks.items():
        print(f"{'met   ' if ok else 'MISSED'} {text}")
    return all(checks.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120, help="whole run; half idle, half trickle")
    parser.add_argument("--quick", action="store_const", const=20, dest="seconds", help="a 20 s run")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between payments in the trickle")
    args = parser.parse_args()
    samples, paid, done, idle_cpu = soak(args.seconds, args.every)
    sys.exit(0 if report(samples, paid, done, idle_cpu) else 1)


if __name__ == "__main__":
    main()
