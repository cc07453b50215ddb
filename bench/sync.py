"""Sync benchmark: 1,000,000 statements (100,000 matters) in PostgreSQL and in SQLite, in one run on the same data:

* the raw driver's streaming read of the same columns (psycopg named cursor / sqlite3 fetchmany), rows/s;
* our full sync into a fresh state store (SQLite, the default), rows/s, the ratio to raw, and peak RSS;
* one incremental sync after 1,000 statements changed, in ms.

Each measured phase runs in a fresh subprocess so peak RSS belongs to that phase alone. Run as a module
(bench/postings.py would shadow the package): ``.venv/bin/python -m bench.sync [--rows 1000000] [--db sqlite]``.
Targets: full sync >= 100,000 statements/s with peak RSS <= 150 MB; incremental sync of 1,000 changes <= 100 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from agent.mapping import parse_mapping
from agent.state import StateStore
from agent.sync import Syncer
from connectors.sql import SQLAlchemyConnector
from connectors.testkit.databases import temp_database

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
COLUMNS = "id, bill_no, matter_id, issued, due, amount, balance, currency, state, updated_at"


def mapping_text(url: str, kind: str) -> str:
    # SQLite keeps money as integer pence: its NUMERIC affinity would hand floats back, and a float never
    # becomes money here. PostgreSQL keeps NUMERIC(12,2), which psycopg returns as Decimal.
    money = "minor_units" if kind == "sqlite" else "decimal"
    return f"""
version: 1
source: {{url: "{url}"}}
timezone: UTC
entities:
  matters: {{table: matters, key: id, watermark: {{column: updated_at, lookback_seconds: 0}},
            columns: {{number: matter_no, name: title}}}}
  statements:
    table: statements
    key: id
    money: {money}
    watermark: {{column: updated_at, lookback_seconds: 0}}
    columns: {{number: bill_no, matter_key: matter_id, issue_date: issued, due_date: due, amount: amount,
              balance: balance, currency: currency, status: state}}
"""


def rows(n: int, matters: int):  # type: ignore[no-untyped-def]
    rng = random.Random(1)
    for i in range(1, n + 1):
        pence = rng.randrange(1000, 500_000)
        stamp = T0 + dt.timedelta(seconds=i)
        yield (i, f"B-{i}", (i % matters) + 1, dt.date(2026, 1, 1) + dt.timedelta(days=i % 300),
               dt.date(2026, 2, 1) + dt.timedelta(days=i % 300), pence, pence // 2, "GBP", "OPEN", stamp)


def build_sqlite(path: Path, n: int, matters: int) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE matters (id INTEGER PRIMARY KEY, matter_no TEXT, title TEXT, updated_at TEXT NOT NULL);
        CREATE TABLE statements (id INTEGER PRIMARY KEY, bill_no TEXT, matter_id INTEGER, issued TEXT, due TEXT,
            amount INTEGER, balance INTEGER, currency TEXT, state TEXT, updated_at TEXT NOT NULL);""")
    with conn:
        conn.executemany("INSERT INTO matters VALUES (?, ?, ?, ?)",
                         ((i, f"M-{i}", f"Matter {i}", str(T0)[:19]) for i in range(1, matters + 1)))
        conn.executemany("INSERT INTO statements VALUES (?,?,?,?,?,?,?,?,?,?)",
                         ((*r[:3], r[3].isoformat(), r[4].isoformat(), *r[5:9],
                           r[9].strftime("%Y-%m-%d %H:%M:%S.%f")) for r in rows(n, matters)))
        conn.execute("CREATE INDEX statements_wm ON statements (updated_at, id)")
    conn.close()


def build_postgres(dsn: str, n: int, matters: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE matters (id INTEGER PRIMARY KEY, matter_no TEXT, title TEXT, "
                     "updated_at TIMESTAMPTZ NOT NULL)")
        conn.execute("CREATE TABLE statements (id INTEGER PRIMARY KEY, bill_no TEXT, matter_id INTEGER, issued DATE, "
                     "due DATE, amount NUMERIC(12,2), balance NUMERIC(12,2), currency CHAR(3), state TEXT, "
                     "updated_at TIMESTAMPTZ NOT NULL)")
        with conn.cursor().copy("COPY matters FROM STDIN") as copy:
            for i in range(1, matters + 1):
                copy.write_row((i, f"M-{i}", f"Matter {i}", T0))
        with conn.cursor().copy("COPY statements FROM STDIN") as copy:
            for r in rows(n, matters):
                copy.write_row((*r[:5], f"{r[5] / 100:.2f}", f"{r[6] / 100:.2f}", *r[7:]))
        conn.execute("CREATE INDEX statements_wm ON statements (updated_at, id)")
        conn.execute("ANALYZE")


# ------------------------------------------------------------------------------------------ phases (subprocess)


def phase_raw(kind: str, where: str) -> dict:
    start = time.perf_counter()
    count = 0
    if kind == "sqlite":
        conn = sqlite3.connect(where)
        cur = conn.execute(f"SELECT {COLUMNS} FROM statements ORDER BY updated_at, id")
        while batch := cur.fetchmany(10_000):
            count += len(batch)
    else:
        with psycopg.connect(where) as conn, conn.cursor(name="raw") as cur:
            cur.execute(f"SELECT {COLUMNS} FROM statements ORDER BY updated_at, id")
            while batch := cur.fetchmany(10_000):
                count += len(batch)
    return {"rows": count, "seconds": time.perf_counter() - start}


def phase_sync(kind: str, url: str, state: str, batch: int) -> dict:
    mapping = parse_mapping(mapping_text(url, kind), Path("bench.yaml"))
    store = StateStore(f"sqlite:///{state}")
    syncer = Syncer(store, SQLAlchemyConnector(mapping), batch)
    start = time.perf_counter()
    count = syncer.sync_entity("statements")
    seconds = time.perf_counter() - start
    syncer.sync_entity("matters")
    return {"rows": count, "seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def phase_incremental(kind: str, url: str, raw_where: str, rows_total: str, state: str, batch: int) -> dict:
    """A running agent's view: a warm no-op sync first (connections, compiled SQL), then 1,000 firm-side changes,
    then the timed sync."""
    mapping = parse_mapping(mapping_text(url, kind), Path("bench.yaml"))
    syncer = Syncer(StateStore(f"sqlite:///{state}"), SQLAlchemyConnector(mapping), batch)
    syncer.sync_entity("statements")
    touch_1000(kind, raw_where, int(rows_total))
    start = time.perf_counter()
    count = syncer.sync_entity("statements")
    return {"rows": count, "seconds": time.perf_counter() - start}


def run_phase(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.sync", "--phase", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def touch_1000(kind: str, where: str, n: int) -> None:
    ids = random.Random(2).sample(range(1, n + 1), 1000)
    later = T0 + dt.timedelta(seconds=n + 10)
    if kind == "sqlite":
        with sqlite3.connect(where) as conn:
            conn.executemany("UPDATE statements SET balance = balance - 1, updated_at = ? WHERE id = ?",
                             [(later.strftime("%Y-%m-%d %H:%M:%S.%f"), i) for i in ids])
    else:
        with psycopg.connect(where) as conn:
            conn.execute("UPDATE statements SET balance = balance - 0.01, updated_at = %s WHERE id = ANY(%s)",
                         (later, ids))


def bench(kind: str, n: int, matters: int, batch: int, tmp: Path) -> dict:
    with temp_database(kind, tmp) as db:
        url = db.url.render_as_string(hide_password=False)
        raw_where = str(db.url.database) if kind == "sqlite" else (
            f"host={db.server.host} port={db.server.port} user={db.server.user} dbname={db.name}")
        print(f"{kind}: building {n:,} statements ...", file=sys.stderr, flush=True)
        (build_sqlite(Path(raw_where), n, matters) if kind == "sqlite" else build_postgres(raw_where, n, matters))
        raw = run_phase("raw", kind, raw_where)
        state = tmp / f"state-{kind}.db"
        ours = run_phase("sync", kind, url, str(state), str(batch))
        inc = run_phase("incremental", kind, url, raw_where, str(n), str(state), str(batch))
    raw_rate, our_rate = raw["rows"] / raw["seconds"], ours["rows"] / ours["seconds"]
    return {"db": kind, "raw": raw_rate, "ours": our_rate, "ratio": our_rate / raw_rate, "rss": ours["rss_mb"],
            "inc_ms": inc["seconds"] * 1000, "inc_rows": inc["rows"], "rows": ours["rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--matters", type=int, default=100_000)
    parser.add_argument("--db", default="postgresql,sqlite")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, *rest = args.phase
        fn = {"raw": phase_raw, "sync": phase_sync, "incremental": phase_incremental}[name]
        params = [int(rest[-1])] if name != "raw" else []
        print(json.dumps(fn(*(rest[:-1] if name != "raw" else rest), *params)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench(kind, args.rows, args.matters, args.batch, Path(tmp)) for kind in args.db.split(",")]
    print(f"\n{'database':<11} {'raw rows/s':>11} {'ours rows/s':>12} {'ratio':>6} {'peak RSS':>9} "
          f"{'incr. 1k':>9}  targets (>=100k/s, <=150 MB, <=100 ms)")
    for r in results:
        met = [r["ours"] >= 100_000, r["rss"] <= 150, r["inc_ms"] <= 100]
        print(f"{r['db']:<11} {r['raw']:>11,.0f} {r['ours']:>12,.0f} {r['ratio']:>5.2f}x {r['rss']:>6.0f} MB "
              f"{r['inc_ms']:>6.0f} ms  {' '.join('met' if m else 'MISSED' for m in met)} "
              f"({r['rows']:,} rows synced; incremental read {r['inc_rows']} rows)")


if __name__ == "__main__":
    main()
