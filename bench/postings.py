"""Postings throughput into PostgreSQL: 10,000 payments through the outbox and the mapping (existence check,
INSERT receipt, UPDATE balance, one target transaction each, plus the outbox's own marks) beside a raw psycopg
loop writing the same rows one transaction each: the physical limit for per-payment transactions. The two are
interleaved (one outbox pass of --batch-size postings, then the raw loop over the same number of rows), so a
change in the machine's load weighs on both alike.

    .venv/bin/python bench/postings.py [--payments 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# bench/ itself must not be on the path: bench/postings.py would shadow the postings package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import psycopg
from crash_worker import create_firm, firm_mapping, outbox_states, read_firm, seed_crash_run
from sqlalchemy import select

from agent.state import StateStore
from agent.state.schema import postings
from connectors.database.sql import SQLAlchemyConnector
from connectors.testkit.databases import TempDatabase, temp_database
from postings.outbox import POSTING_DETAILS, Outbox, posting_params


def raw_connection(db: TempDatabase) -> psycopg.Connection:
    assert db.server is not None
    return psycopg.connect(host=db.server.host, port=db.server.port, user=db.server.user,
                           password=db.server.password or None, dbname=db.name)


def raw_loop(conn: psycopg.Connection, rows: list[dict]) -> tuple[float, float]:
    """Seconds (wall, this process's CPU) for the same INSERT + UPDATE, one transaction per posting, straight
    through psycopg."""
    start, cpu = time.perf_counter(), time.process_time()
    for p in rows:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO receipts (reference, statement_id, amount_pence, received_at, method) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (p["reference"], p["statement_key"], p["amount_minor"], p["paid_at"], p["method"]))
            cur.execute("UPDATE statements SET balance_pence = balance_pence - %s WHERE id = %s",
                        (p["amount_minor"], p["statement_key"]))
        conn.commit()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--payments", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--options", default="{}", help="source.options of the mapping (YAML flow map)")
    args = ap.parse_args()
    with (tempfile.TemporaryDirectory(prefix="ledgerlink-bench-") as tmp,
          temp_database("postgresql") as ours, temp_database("postgresql") as raw):
        state_url = f"sqlite:///{Path(tmp) / 'state.db'}"
        balances, _ = seed_crash_run(state_url, ours.url, args.payments)
        create_firm(raw.url, balances)
        store = StateStore(state_url)
        with store.read() as conn:
            rows = [dict(posting_params(r)) for r in conn.execute(POSTING_DETAILS.order_by(postings.c.id)).mappings()]
        mapping = firm_mapping(ours.url, options=args.options)
        connector = SQLAlchemyConnector(mapping)
        outbox = Outbox(store, connector, mapping, batch_size=args.batch_size)
        # Interleaved: one outbox pass, then the raw loop over as many of the same rows, and so on, so both
        # see the same machine load (other jobs on the 2 cores move either figure 2-3x within a minute).
        ours_seconds = raw_seconds = ours_cpu = raw_cpu = 0.0
        done = 0
        with raw_connection(raw) as raw_conn:
            while True:
                start, cpu = time.perf_counter(), time.process_time()
                counts = outbox.run_once()
                ours_seconds += time.perf_counter() - start
                ours_cpu += time.process_time() - cpu
                if not counts:
                    break
                step = sum(counts.values())
                wall, used = raw_loop(raw_conn, rows[done:done + step])
                raw_seconds += wall
                raw_cpu += used
                done += step
        states = outbox_states(state_url)
        receipts = len(read_firm(ours.url).receipts)
        with store.read() as conn:
            assert conn.execute(select(postings.c.id).where(postings.c.state != "posted")).first() is None
        connector.close()
        store.close()
    n = len(rows)
    ours_rate, raw_rate = n / ours_seconds, n / raw_seconds
    print(f"{n} postings into PostgreSQL ({receipts} receipts, outbox {states})")
    met = ours_rate / raw_rate >= 0.7
    print(f"client CPU per posting: ours {ours_cpu / n * 1e3:.2f} ms, raw {raw_cpu / n * 1e3:.2f} ms; wall per "
          f"posting: ours {ours_seconds / n * 1e3:.2f} ms, raw {raw_seconds / n * 1e3:.2f} ms")
    print(f"postings/s {ours_rate:,.0f}   raw psycopg/s {raw_rate:,.0f}   ratio {ours_rate / raw_rate:.2f}x "
          f"(target >= 0.7x: {'met' if met else 'MISSED'})")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
