"""An active/standby pair on one PostgreSQL state store, writing into a PostgreSQL firm database whose receipts have
NO unique constraint on the reference: payments arrive throughout while the active agent is SIGKILLed, paused
(SIGSTOP, so it wakes up after the takeover holding stale work) or stopped cleanly, many times. Every payment must
be posted exactly once (count and pence total in the firm database), and the longest gap without an active agent
is reported and bounded by the lease.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from crash_worker import add_payment, add_statement, outbox_states, read_firm, url_text
from sqlalchemy import create_engine, select, text

from agent.state import StateStore
from agent.state.lock import StoreLock, active_agent
from connectors.testkit.databases import TempDatabase, temp_database

WORKER = Path(__file__).parents[1] / "failover_worker.py"
LEASE = 3.0  # seconds; the production default is agent.state.lock.LEASE_SECONDS
EVENTS = int(os.environ.get("LEDGERLINK_TEST_FAILOVER_EVENTS", "12"))
STATEMENTS = [f"S{i:03d}" for i in range(20)]


@dataclass
class Agent:
    name: str
    marker: Path
    state_url: str
    firm_url: str
    proc: subprocess.Popen[bytes] | None = None
    seen: int = 0  # marker lines already read

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parent), *sys.path])}
        self.proc = subprocess.Popen([sys.executable, str(WORKER), self.state_url, self.firm_url, str(self.marker),
                                      str(LEASE)], env=env, stderr=subprocess.DEVNULL)

    def marks(self, what: str) -> list[float]:
        if not self.marker.exists():
            return []
        return [float(line.split()[1]) for line in self.marker.read_text().splitlines() if line.startswith(what)]

    def wait_for(self, what: str, after: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fresh = [t for t in self.marks(what) if t >= after]
            if fresh:
                return fresh[0]
            time.sleep(0.02)
        raise AssertionError(f"{self.name} never became {what}")

    def wait_active(self, after: float, timeout: float) -> float:
        return self.wait_for("active", after, timeout)

    def end(self, sig: signal.Signals = signal.SIGKILL) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


@dataclass
class Report:
    gaps: list[tuple[str, float]] = field(default_factory=list)
    exits: list[tuple[str, int]] = field(default_factory=list)

    def longest(self, kind: str) -> float:
        return max((g for k, g in self.gaps if k == kind), default=0.0)


def _firm(db: TempDatabase) -> None:
    engine = create_engine(db.url)
    with engine.begin() as conn:  # the crash test's firm schema, minus the UNIQUE key on the reference
        conn.execute(text("CREATE TABLE statements (id VARCHAR(40) PRIMARY KEY, matter_id VARCHAR(40) NOT NULL, "
                          "balance_pence BIGINT NOT NULL)"))
        conn.execute(text("CREATE TABLE receipts (id SERIAL PRIMARY KEY, reference VARCHAR(191) NOT NULL, "
                          "statement_id VARCHAR(40) NOT NULL, amount_pence BIGINT NOT NULL, "
                          "received_at TIMESTAMP NOT NULL, method VARCHAR(16) NOT NULL)"))
        for key in STATEMENTS:
            conn.execute(text("INSERT INTO statements VALUES (:k, :m, 100000000)"), {"k": key, "m": f"M-{key}"})
    engine.dispose()


@pytest.mark.timeout(600)
def test_active_standby_pair_posts_every_payment_exactly_once(pg_db: TempDatabase, tmp_path: Path) -> None:
    state_url = url_text(pg_db.url)
    with temp_database("postgresql") as firm_db:
        _firm(firm_db)
        firm_url = url_text(firm_db.url)
        store = StateStore(state_url)
        with store.begin() as conn:
            for key in STATEMENTS:
                add_statement(conn, key, Decimal("1000000.00"))

        paid: list[int] = []
        arriving = threading.Event()
        arriving.set()
        rng = random.Random(EVENTS)

        def payments_arrive() -> None:  # the provider's events, throughout the failovers
            i = 0
            while arriving.is_set():
                pence = rng.randrange(100, 90_000)
                amount = Decimal(pence).scaleb(-2)
                with store.begin() as conn:
                    add_payment(conn, f"F{i:05d}", amount, [(rng.choice(STATEMENTS), amount, True)])
                paid.append(pence)
                i += 1
                time.sleep(0.03)

        agents = [Agent(n, tmp_path / f"{n}.marker", state_url, firm_url) for n in ("a", "b")]
        feeder = threading.Thread(target=payments_arrive)
        report = Report()
        try:
            agents[0].start()
            agents[0].wait_active(0, 30)
            agents[1].start()  # the hot standby
            agents[1].wait_for("standby", 0, 30)
            feeder.start()
            active, standby = agents
            for n in range(EVENTS):
                time.sleep(rng.uniform(0.2, 2.0))  # a random moment in the active agent's work
                kind = ("SIGKILL", "SIGKILL", "SIGSTOP", "SIGTERM")[n % 4]
                moment = time.time()
                if kind == "SIGSTOP":  # paused: it wakes up after the takeover and must write nothing
                    assert active.proc is not None
                    active.proc.send_signal(signal.SIGSTOP)
                    took = standby.wait_active(moment, LEASE * 3 + 10)
                    active.proc.send_signal(signal.SIGCONT)
                    report.exits.append((kind, active.proc.wait(timeout=30)))
                else:
                    report.exits.append((kind, active.end(getattr(signal, kind))))
                    took = standby.wait_active(moment, LEASE * 3 + 10)
                report.gaps.append((kind, took - moment))
                restarted = time.time()
                active.start()  # back as the standby
                active.wait_for("standby", restarted, 30)
                active, standby = standby, active
            arriving.clear()
            feeder.join()
            deadline = time.monotonic() + 120
            while outbox_states(state_url) != {"posted": len(paid)} and time.monotonic() < deadline:
                time.sleep(0.2)
            holder = active_agent(store)
        finally:
            arriving.clear()
            if feeder.is_alive():
                feeder.join()
            for agent in agents:
                if agent.proc is not None and agent.proc.poll() is None:
                    agent.end(signal.SIGTERM)
            store.close()

        firm = read_firm(firm_url)
        summary = (f"{EVENTS} failovers ({', '.join(f'{k} {g:.2f}s' for k, g in report.gaps)}); longest gap "
                   f"after SIGKILL {report.longest('SIGKILL'):.2f}s, SIGSTOP {report.longest('SIGSTOP'):.2f}s, "
                   f"clean stop {report.longest('SIGTERM'):.2f}s; {len(paid)} payments")
        print(summary)
        assert outbox_states(state_url) == {"posted": len(paid)}, summary
        assert firm.duplicates == 0, summary  # no UNIQUE key: only the outbox's own rules keep this at 0
        assert len(firm.receipts) == len(paid) and sum(firm.receipts.values()) == sum(paid), summary
        assert holder is not None and holder["live"], holder
        assert report.longest("SIGKILL") < LEASE + 2.0, summary  # the lease runs out, the standby takes over
        assert report.longest("SIGSTOP") < LEASE + 2.0, summary
        assert report.longest("SIGTERM") < 1.5, summary  # a clean stop hands over at once
        expected = {"SIGKILL": -signal.SIGKILL, "SIGSTOP": 3, "SIGTERM": 0}  # 3: woke up fenced out, stopped
        assert all(code == expected[kind] for kind, code in report.exits), report.exits


def test_a_fenced_agent_cannot_write_after_a_takeover(pg_db: TempDatabase) -> None:
    """An old active that was only paused: its next write transaction finds a newer token and is refused."""
    from agent.state.lock import Fenced
    from agent.state.schema import component_status

    old_store, new_store = StateStore(url_text(pg_db.url)), StateStore(url_text(pg_db.url))
    old, new = StoreLock(old_store, lease_seconds=0.5), StoreLock(new_store, lease_seconds=0.5)
    try:
        old.acquire()
        old._stop_renewing.set()  # paused: no renewals
        old_store.record_ok("before")
        time.sleep(0.8)
        new.acquire()  # the lease ran out: taken over with the next token
        assert new.token == (old.token or 0) + 1
        with pytest.raises(Fenced, match="another one took the state store over"):
            old_store.record_ok("after")
        assert old.lost.is_set()
        new_store.record_ok("new")
        with new_store.read() as conn:
            assert sorted(conn.execute(select(component_status.c.component)).scalars()) == ["before", "new"]
    finally:
        new.release()
        old.release()
        old_store.close()
        new_store.close()


def test_check_says_which_agent_is_active(pg_db: TempDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli.main import main
    from agent.home.demo import init_home

    home = tmp_path / "home"
    init_home(home)
    monkeypatch.setenv("LEDGERLINK_STATE_URL", url_text(pg_db.url))
    store = StateStore(url_text(pg_db.url))
    lock = store.instance_lock()
    lock.acquire()
    try:
        assert main(["--home", str(home), "check"]) == 0
        out = capsys.readouterr().out
        assert f"active_agent: pid {os.getpid()} on " in out and f"(token {lock.token}, lease until" in out
    finally:
        lock.release()
        store.close()
