"""Payment-to-posting latency with the sandbox provider at a 1 s event poll (target p99 <= 2 s).

A real service loop (the same jobs as ``ledgerlink run``) runs in a thread on a fresh demo home; payers pay
links at random moments; latency is the time from the provider's confirmation event to the moment the posting
is committed in the firm database (the outbox's posted_at).
Run as a module (bench/postings.py would shadow the package): ``.venv/bin/python -m bench.latency --payments 60``.
"""

from __future__ import annotations

import argparse
import random
import statistics
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


def measure(payments_count: int, poll: float = 1.0, seed: int = 1) -> list[float]:
    """Latencies in seconds, one per payment."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        config = home / "ledgerlink.toml"
        config.write_text(config.read_text()
                          + f"\n[intervals]\nsync = 3600\npayments = {poll}\npostings = {poll}\nexpiry = 3600\n")
        rt = Runtime.for_home(home)
        Syncer(rt.store, rt.connector).sync()
        with rt.store.read() as conn:
            rows = search_matters(conn, "M-", limit=100)
        payable = [m.matter.number for m in rows if m.matter.status == "open" and _payable(rt, m.matter.number)]
        wakeup = Wakeup()
        service = Service(rt, default_jobs(rt, wakeup), wakeup=wakeup)
        worker = threading.Thread(target=service.loop, daemon=True)
        worker.start()
        for i in range(payments_count):  # 1.00 on a matter link, paid at once: the link closes, the next is new
            link = rt.links.create(STAFF, LinkRequest(matter=payable[i % len(payable)], amount=Decimal("1.00")))
            time.sleep(rng.uniform(0.0, 0.2))
            sandbox.pay(home, link.provider_ref)
        deadline = time.monotonic() + 30
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
    args = parser.parse_args()
    lat = measure(args.payments, args.poll)
    p50, p95, p99 = (percentile(lat, q) for q in (50, 95, 99))
    print(f"payment-to-posting latency, sandbox, {args.poll:g} s poll, {len(lat)}/{args.payments} posted: "
          f"p50 {p50:.2f} s  p95 {p95:.2f} s  p99 {p99:.2f} s  (target p99 <= 2 s: {'met' if p99 <= 2 else 'MISSED'})")


if __name__ == "__main__":
    main()
