"""Payment-to-posting latency with the sandbox provider at a 1 s event poll (target p99 <= 2 s).

A real service loop (the same jobs as ``ledgerlink run``) runs in a thread on a fresh demo home; payers pay
links at random moments; latency is the time from the provider's confirmation event to the moment the posting
is committed in the firm database (the outbox's posted_at). ``--burst``: as many open matters as payments are
added to the demo firm, a link made on each, and then all of them paid at once (issue 28: 1,000 in a burst).
Run as a module (bench/postings.py would shadow the package): ``.venv/bin/python -m bench.latency --payments 60``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from agent.core.errors import LedgerlinkError
from agent.core.model import Actor
from agent.engine.links import LinkRequest
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.service.loop import Service, Wakeup, default_jobs
from agent.state.schema import payments, postings, provider_events
from agent.state.search import search_matters
from connectors.providers import sandbox

STAFF = Actor("cli", "bench")  # who the benchmark's changes are audited as


def add_matters(home: Path, count: int) -> list[str]:
    """``count`` more open matters in the demo firm, each with its own payer (with an email) and one open bill of
    500.00: a burst needs that many links open at once, and a matter has one open link per account. Returns their
    numbers."""
    conn = sqlite3.connect(home / "demo-firm.db")
    issued = dt.date.today() - dt.timedelta(days=10)
    with conn:
        client, payer, matter = (conn.execute(f"SELECT max(id) FROM {t}").fetchone()[0] for t in
                                 ("clients", "payers", "matters"))
        for n in range(1, count + 1):
            conn.execute("INSERT INTO clients (id, name, email) VALUES (?, ?, ?)",
                         (client + n, f"Burst Client {n}", f"burst{n}@example.com"))
            conn.execute("INSERT INTO payers (id, client_id, name, email) VALUES (?, ?, ?, ?)",
                         (payer + n, client + n, f"Burst Client {n}", f"burst{n}@example.com"))
            conn.execute("INSERT INTO matters (id, matter_no, title, client_id, payer_id) VALUES (?, ?, ?, ?, ?)",
                         (matter + n, f"M-BURST-{n:05d}", "Debt recovery", client + n, payer + n))
            conn.execute("INSERT INTO bills (bill_no, matter_id, issued_on, due_on, total_pence, balance_pence)"
                         " VALUES (?, ?, ?, ?, 50000, 50000)",
                         (f"INV-B{n:05d}", matter + n, issued.isoformat(), (issued + dt.timedelta(30)).isoformat()))
    conn.close()
    return [f"M-BURST-{n:05d}" for n in range(1, count + 1)]


PAY_ALL = """import sys
from connectors.providers import sandbox
for ref in sys.stdin.read().split():
    sandbox.pay(sys.argv[1], ref)
"""


def measure(payments_count: int, poll: float = 1.0, seed: int = 1, burst: bool = False,
            info: dict[str, float] | None = None) -> list[float]:
    """Latencies in seconds, one per payment. ``burst``: every link is made first, then all are paid at once by a
    child process (``info["arrival_s"]``: how long it took to pay them all)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        burst_matters = add_matters(home, payments_count) if burst else []
        config = home / "ledgerlink.toml"
        config.write_text(config.read_text()
                          + f"\n[intervals]\nsync = 3600\npayments = {poll}\npostings = {poll}\nexpiry = 3600\n")
        rt = Runtime.for_home(home)
        Syncer(rt.store, rt.connector).sync()
        with rt.store.read() as conn:
            rows = search_matters(conn, "M-", limit=100)
        payable = [m.matter.number for m in rows if m.matter.status == "open" and _payable(rt, m.matter.number)]
        ready = [rt.links.create(STAFF, LinkRequest(matter=m, amount=Decimal("1.00"))) for m in burst_matters]
        wakeup = Wakeup()
        service = Service(rt, default_jobs(rt, wakeup), wakeup=wakeup)
        worker = threading.Thread(target=service.loop, daemon=True)
        worker.start()
        if ready:  # the burst, paid by another process (the provider is another system, not this one's threads)
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", PAY_ALL, str(home)], check=True, text=True,
                           input="\n".join(str(link.provider_ref) for link in ready))
            if info is not None:
                info["arrival_s"] = time.monotonic() - started
        for i in range(0 if burst else payments_count):  # 1.00 on a matter link, paid at once: the link closes
            link = rt.links.create(STAFF, LinkRequest(matter=payable[i % len(payable)], amount=Decimal("1.00")))
            time.sleep(rng.uniform(0.0, 0.2))
            sandbox.pay(home, link.provider_ref)
        deadline = time.monotonic() + 30 + (payments_count / 20 if burst else 0)
        while time.monotonic() < deadline:
            with rt.store.read() as conn:
                done = conn.execute(select(func.count()).where(postings.c.state == "posted")).scalar_one()
            if done >= payments_count:
                break
            time.sleep(0.1)
        service.stopping.set()
        worker.join()
        with rt.store.read() as conn:
            rows = conn.execute(
                select(provider_events.c.occurred_at, postings.c.posted_at)
                .join(payments, payments.c.payment_ref == provider_events.c.payment_ref)
                .join(postings, postings.c.payment_id == payments.c.id)
                .where(provider_events.c.kind == "payment_confirmed", postings.c.state == "posted")
            ).all()
        rt.close()
    return [(posted - confirmed).total_seconds() for confirmed, posted in rows]


def _payable(rt: Runtime, matter: str) -> bool:
    try:
        d = rt.links.defaults(matter)
    except LedgerlinkError:
        return False
    return bool(d.payer_email) and d.amount >= 100


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=60)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--burst", action="store_true", help="make every link first, then pay them all at once")
    args = parser.parse_args()
    lat = measure(args.payments, args.poll, burst=args.burst)
    p50, p95, p99 = (percentile(lat, q) for q in (50, 95, 99))
    print(f"payment-to-posting latency, sandbox, {args.poll:g} s poll, {len(lat)}/{args.payments} posted: "
          f"p50 {p50:.2f} s  p95 {p95:.2f} s  p99 {p99:.2f} s  (target p99 <= 2 s: {'met' if p99 <= 2 else 'MISSED'})")


if __name__ == "__main__":
    main()
