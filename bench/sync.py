"""Source-sync benchmark: raw driver streaming vs. our full sync vs. an incremental sync of 1,000 changes.

For each database (SQLite file, PostgreSQL on 127.0.0.1) it builds the same firm database (``--rows`` statements
over ``--matters`` matters), then measures, each phase in a fresh child process so phases do not pollute each
other's memory or caches of compiled SQL:

1. raw: the driver alone streams the statements' mapped columns in watermark order (psycopg named cursor /
   sqlite3, ``fetchmany(--batch)``), no conversion: the physical limit on this machine.
2. full: ``Syncer.sync()`` (matters, then statements) through the SQLAlchemy connector into a fresh SQLite state
   store; statements/s, its ratio to raw, and the child's peak RSS.
3. incremental: in a fresh process, one no-change sync (warms the pool and compiles the SQL, as the service loop
   has done before any real change), then 1,000 open statements are paid in the firm database (balance 0, status
   PAID, updated_at bumped) and one ``Syncer.sync()`` is timed; the state store is checked to hold exactly them.

Targets (issue 28, item 3; issue 17 asked 150,000): full sync >= 250,000 statements/s with peak RSS <= 150 MB;
incremental <= 100 ms. Each phase also reports its CPU seconds (all threads), so the CPU ratio can be compared
when the machine is loaded and wall-clock rates say more about the other jobs than about ours.
Run from the repository root: ``.venv/bin/python -m bench.sync --rows 1000000``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_ROWS_S = 250_000  # issue 28, item 3 (search index included)
TARGET_RSS_MB = 150.0
TARGET_INCR_MS = 100.0
CHANGES = 1000
SEED = 20261122
END = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # newest generated watermark is before this; changes are "now"
STEP = 60  # seconds between consecutive statements' updated_at (plus 0-59 s jitter): in time order, like a ledger
STATUSES = (("PAID", 60), ("OPEN", 35), ("VOID", 5))
STATEMENT_COLUMNS = "id, updated_at, bill_no, matter_id, issued_on, due_on, {amount}, {balance}, currency, state"

# ------------------------------------------------------------------------------------------------ the firm's data


def matter_rows(matters: int) -> Iterator[tuple[int, str, str, int, str, dt.datetime]]:
    """(id, matter_no, title, client_id, state, updated_at), deterministic."""
    rng = random.Random(SEED)
    base = END - dt.timedelta(seconds=matters * STEP)
    for i in range(1, matters + 1):
        state = "C" if rng.random() < 0.2 else "A"
        when = base + dt.timedelta(seconds=i * STEP - rng.randrange(STEP))
        yield i, f"M-{i:07d}", f"Matter {i} - conveyancing", rng.randrange(1, matters // 4 + 2), state, when


def statement_rows(rows: int, matters: int) -> Iterator[tuple[Any, ...]]:
    """(id, bill_no, matter_id, issued_on, due_on, amount_pence, balance_pence, currency, state, updated_at).

    Deterministic, so PostgreSQL and SQLite hold the same statements; amounts are integer pence here and each
    loader writes them in its own exact form (numeric(12,2) text or integer pence)."""
    rng = random.Random(SEED + 1)
    base = END - dt.timedelta(seconds=rows * STEP)
    states = [s for s, weight in STATUSES for _ in range(weight)]
    first = dt.date(2019, 1, 1)
    for i in range(1, rows + 1):
        amount = rng.randrange(5_000, 2_500_000)
        state = states[rng.randrange(100)]
        balance = 0 if state != "OPEN" else (amount if rng.random() < 0.7 else rng.randrange(1, amount))
        issued = first + dt.timedelta(days=i * 2500 // rows)
        when = base + dt.timedelta(seconds=i * STEP - rng.randrange(STEP))
        yield (i, f"B{i:08d}", rng.randrange(1, matters + 1), issued, issued + dt.timedelta(days=30),
               amount, balance, "GBP", state, when)


def _pounds(pence: int) -> str:
    return f"{pence // 100}.{pence % 100:02d}"


def _sqlite_ts(when: dt.datetime) -> str:
    """SQLite's own datetime('now') form, UTC: text that sorts in time order."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


SQLITE_SCHEMA = """
CREATE TABLE matters (id INTEGER PRIMARY KEY, matter_no TEXT NOT NULL, title TEXT NOT NULL, client_id INTEGER,
                      state TEXT NOT NULL, updated_at TEXT NOT NULL);
-- Money as integer pence: sqlite3 returns a numeric(12,2) column as a float, and a float must never become money.
CREATE TABLE statements (id INTEGER PRIMARY KEY, bill_no TEXT NOT NULL, matter_id INTEGER NOT NULL, issued_on TEXT,
                         due_on TEXT, amount_pence INTEGER NOT NULL, balance_pence INTEGER NOT NULL,
                         currency TEXT NOT NULL, state TEXT NOT NULL, updated_at TEXT NOT NULL);
"""
SQLITE_INDEXES = """
CREATE INDEX matters_wm ON matters (updated_at, id);
CREATE INDEX statements_wm ON statements (updated_at, id);
"""

POSTGRES_SCHEMA = """
CREATE TABLE matters (id integer PRIMARY KEY, matter_no text NOT NULL, title text NOT NULL, client_id integer,
                      state text NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE statements (id integer PRIMARY KEY, bill_no text NOT NULL, matter_id integer NOT NULL, issued_on date,
                         due_on date, amount numeric(12,2) NOT NULL, balance numeric(12,2) NOT NULL,
                         currency char(3) NOT NULL, state text NOT NULL, updated_at timestamptz NOT NULL)
"""
POSTGRES_INDEXES = """
CREATE INDEX matters_wm ON matters (updated_at, id);
CREATE INDEX statements_wm ON statements (updated_at, id)
"""


@dataclass(frozen=True)
class Firm:
    """One built firm database: how the driver and the agent reach it."""

    kind: str  # sqlite | postgresql
    url: str  # SQLAlchemy URL for the mapping
    dsn: str  # sqlite3 path or libpq conninfo
    name: str  # database name (PostgreSQL) or file path (SQLite)

    @property
    def amount_columns(self) -> dict[str, str]:
        if self.kind == "sqlite":
            return {"amount": "amount_pence", "balance": "balance_pence"}
        return {"amount": "amount", "balance": "balance"}

    def statement_select(self) -> str:
        return f"SELECT {STATEMENT_COLUMNS.format(**self.amount_columns)} FROM statements ORDER BY updated_at, id"


def load_sqlite(path: Path, rows: int, matters: int) -> None:
    """executemany in one transaction (no per-row commits), with no journal (a new file: a failed load is thrown
    away) and the watermark indexes built afterwards, so 10M statements load in about a minute; the file is then
    switched to WAL, as a firm's live database would be."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MB for the index builds' sorts
        conn.executescript(SQLITE_SCHEMA)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO matters VALUES (?, ?, ?, ?, ?, ?)",
                         ((*r[:5], _sqlite_ts(r[5])) for r in matter_rows(matters)))
        conn.executemany(  # str() of a whole-second UTC datetime, less its "+00:00": _sqlite_ts's text, cheaper
            "INSERT INTO statements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((i, no, m, iss.isoformat(), due.isoformat(), amt, bal, cur, st, str(w)[:19])
             for i, no, m, iss, due, amt, bal, cur, st, w in statement_rows(rows, matters)),
        )
        conn.execute("COMMIT")
        conn.executescript(SQLITE_INDEXES)
        conn.execute("ANALYZE")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def _copy_text(values: tuple[Any, ...]) -> str:
    return "\t".join(v.isoformat() if isinstance(v, dt.date) else str(v) for v in values)


def load_postgres(dsn: str, rows: int, matters: int) -> None:
    """COPY in text format, indexes built afterwards, then VACUUM ANALYZE (hint bits and visibility map set, so
    the first measured read does not pay for them)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute(POSTGRES_SCHEMA)
        with conn.cursor() as cur:
            with cur.copy("COPY matters FROM STDIN") as copy:
                copy.write("".join(_copy_text(r) + "\n" for r in matter_rows(matters)))
            with cur.copy("COPY statements FROM STDIN") as copy:
                chunk: list[str] = []
                for i, no, m, iss, due, amt, bal, ccy, st, w in statement_rows(rows, matters):
                    # one f-string a row (str of a date or datetime is its ISO text): 10M rows in about a minute
                    chunk.append(f"{i}\t{no}\t{m}\t{iss}\t{due}\t{amt // 100}.{amt % 100:02d}\t"
                                 f"{bal // 100}.{bal % 100:02d}\t{ccy}\t{st}\t{w}")
                    if len(chunk) == 50_000:
                        copy.write("\n".join(chunk) + "\n")
                        chunk.clear()
                if chunk:
                    copy.write("\n".join(chunk) + "\n")
        conn.execute(POSTGRES_INDEXES)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE matters")
        conn.execute("VACUUM ANALYZE statements")


def mapping_yaml(firm: Firm) -> str:
    money = "minor_units" if firm.kind == "sqlite" else "decimal"
    cols = firm.amount_columns
    return f"""\
version: 1
name: Benchmark firm ({firm.kind})
source:
  connector: sqlalchemy
  url: {firm.url}
currency: GBP
timezone: UTC
entities:
  matters:
    table: matters
    key: id
    watermark: {{column: updated_at}}
    columns: {{number: matter_no, name: title, client_key: client_id, status: state}}
    status_values: {{open: [A], closed: [C]}}
  statements:
    table: statements
    key: id
    watermark: {{column: updated_at}}
    money: {money}
    columns:
      number: bill_no
      matter_key: matter_id
      issue_date: issued_on
      due_date: due_on
      amount: {cols["amount"]}
      balance: {cols["balance"]}
      currency: currency
      status: state
    status_values: {{open: [OPEN], paid: [PAID], void: [VOID]}}
"""


# ------------------------------------------------------------------------------------------------ measured phases


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM is the high-water mark of this process image only; ru_maxrss would also
    include the parent's RSS at fork (Linux carries it across exec), so it is the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """Stream the statements' mapped columns with the driver alone, no conversion."""
    firm = Firm(**spec["firm"])
    batch = spec["batch"]
    count = 0
    if firm.kind == "sqlite":
        conn = sqlite3.connect(firm.dsn)
        started = time.perf_counter()
        cpu = time.process_time()
        cur = conn.execute(firm.statement_select())
        while rows := cur.fetchmany(batch):
            count += len(rows)
        seconds = time.perf_counter() - started
        conn.close()
    else:
        import psycopg

        with psycopg.connect(firm.dsn) as pg:
            started = time.perf_counter()
            cpu = time.process_time()
            with pg.cursor(name="bench_raw") as cur:  # server-side: a plain cursor buffers the whole result
                cur.execute(firm.statement_select())
                while rows := cur.fetchmany(batch):
                    count += len(rows)
            seconds = time.perf_counter() - started
    return {"rows": count, "seconds": seconds, "cpu": time.process_time() - cpu, "rss_mb": peak_rss_mb()}


def phase_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The drivers alone doing a full sync's database work, with no conversion and no search index: the raw read,
    each page upserted as the driver returned it into an empty keyed SQLite table of the mirror's width (WAL, one
    transaction per page, as the state store), then the mirror's matter index built. What is left for conversion,
    checkpoints and the search index is the difference to ours."""
    firm = Firm(**spec["firm"])
    batch = spec["batch"]
    state = Path(spec["state"]).with_name(f"floor-{firm.kind}.db")
    sqlite3.register_adapter(Decimal, str)  # PostgreSQL's numeric: SQLite takes text, as the mirror keeps it
    out = sqlite3.connect(state, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-16384", "wal_autocheckpoint=10000"):
        out.execute(f"PRAGMA {pragma}")
    cols = [f"c{i}" for i in range(10)]
    # the key as text, as the mirror keeps every firm key (a text order, not the source's integer order)
    out.execute(f"CREATE TABLE mirror (c0 TEXT, {', '.join(cols[1:])}, PRIMARY KEY (c0)) WITHOUT ROWID")
    upsert = (f"INSERT INTO mirror VALUES ({', '.join('?' * 10)}) ON CONFLICT (c0) DO UPDATE SET "
              + ", ".join(f"{c} = excluded.{c}" for c in cols[1:]))
    count = 0

    def store(rows: list[Any]) -> None:
        out.execute("BEGIN")
        out.executemany(upsert, sorted(rows, key=lambda row: str(row[0])))  # in the tree's order, as ours
        out.execute("COMMIT")

    started, cpu = time.perf_counter(), time.process_time()
    if firm.kind == "sqlite":
        conn = sqlite3.connect(firm.dsn)
        cur = conn.execute(firm.statement_select())
        while rows := cur.fetchmany(batch):
            store(rows)
            count += len(rows)
        conn.close()
    else:
        import psycopg

        with psycopg.connect(firm.dsn) as pg, pg.cursor(name="bench_floor") as named:
            named.execute(firm.statement_select())
            while rows := named.fetchmany(batch):
                store(rows)
                count += len(rows)
    out.execute("CREATE INDEX mirror_matter ON mirror (c3, c9, c2)")
    seconds = time.perf_counter() - started
    out.close()
    return {"rows": count, "seconds": seconds, "cpu": time.process_time() - cpu, "rss_mb": peak_rss_mb()}


def _open_agent(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    from agent.engine.sync import Syncer
    from agent.state import StateStore
    from connectors.database.sql import SQLAlchemyConnector
    from mappings.format import load_mapping

    connector = SQLAlchemyConnector(load_mapping(spec["mapping"]))
    store = StateStore(f"sqlite:///{spec['state']}")
    return store, connector, Syncer(store, connector, spec["batch"], bulk=spec.get("bulk", True))


def phase_full(spec: dict[str, Any]) -> dict[str, Any]:
    """Syncer.sync() from nothing into a fresh state store, each entity timed (the same loop as sync())."""
    store, connector, syncer = _open_agent(spec)
    rows: dict[str, int] = {}
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    entities = syncer.entities()
    search = 0.0
    for entity in entities:
        started, used = time.perf_counter(), time.process_time()
        rows[entity] = syncer.sync_entity(entity, catch_up=False)
        if entity == entities[-1]:  # the search index once, after the last entity, as sync() does
            indexing = time.perf_counter()
            syncer.search.catch_up(store)
            search = time.perf_counter() - indexing
        seconds[entity] = time.perf_counter() - started
        cpu[entity] = time.process_time() - used
    connector.close()
    store.close()
    return {"rows": rows, "seconds": seconds, "cpu": cpu, "search_s": search, "rss_mb": peak_rss_mb()}


def _open_ids(firm: Firm) -> list[int]:
    sql = "SELECT id FROM statements WHERE state = 'OPEN' ORDER BY id"
    if firm.kind == "sqlite":
        conn = sqlite3.connect(firm.dsn)
        ids = [r[0] for r in conn.execute(sql)]
        conn.close()
        return ids
    import psycopg

    with psycopg.connect(firm.dsn) as pg:
        return [r[0] for r in pg.execute(sql)]


def pay_statements(firm: Firm, ids: list[int]) -> None:
    """The firm's software marks statements paid: balance 0, status PAID, updated_at now, one transaction."""
    if firm.kind == "sqlite":
        conn = sqlite3.connect(firm.dsn, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        marks = ", ".join("?" * len(ids))
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"UPDATE statements SET state = 'PAID', balance_pence = 0, updated_at = ? WHERE id IN ({marks})",
                     [_sqlite_ts(dt.datetime.now(dt.UTC)), *ids])
        conn.execute("COMMIT")
        conn.close()
        return
    import psycopg

    with psycopg.connect(firm.dsn) as pg:
        pg.execute("UPDATE statements SET state = 'PAID', balance = 0, updated_at = now() WHERE id = ANY(%s)", [ids])


def store_counts(state: str, keys: list[int]) -> dict[str, int]:
    """Mirror rows, paid rows, and how many of ``keys`` are paid with a zero balance (read with sqlite3 directly)."""
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        total, paid = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'paid') FROM firm_statements").fetchone()
        marks = ", ".join("?" * len(keys))
        hit = conn.execute(f"SELECT count(*) FROM firm_statements WHERE status = 'paid' AND balance = '0.00' "
                           f"AND key IN ({marks})", [str(k) for k in keys]).fetchone()[0] if keys else 0
    finally:
        conn.close()
    return {"total": total, "paid": paid, "changed_ok": hit}


def phase_incremental(spec: dict[str, Any]) -> dict[str, Any]:
    """A no-change sync (warm-up), 1,000 statements paid in the firm database, then one timed incremental sync."""
    firm = Firm(**spec["firm"])
    store, connector, syncer = _open_agent(spec)
    connector.check()
    started = time.perf_counter()
    noop = syncer.sync()
    noop_ms = (time.perf_counter() - started) * 1000
    open_ids = _open_ids(firm)
    ids = sorted(random.Random(SEED).sample(open_ids, min(CHANGES, len(open_ids))))
    before = store_counts(spec["state"], ids)
    pay_statements(firm, ids)
    started = time.perf_counter()
    result = syncer.sync()
    ms = (time.perf_counter() - started) * 1000
    after = store_counts(spec["state"], ids)
    warm: list[tuple[float, int]] = []  # no-change passes after it: what the service loop pays every interval
    for _ in range(3):
        started = time.perf_counter()
        idle = syncer.sync()
        warm.append(((time.perf_counter() - started) * 1000, idle.total))
    connector.close()
    store.close()
    exact = (before["changed_ok"] == 0 and after["changed_ok"] == len(ids)
             and after["paid"] - before["paid"] == len(ids) and after["total"] == before["total"])
    return {"ms": ms, "noop_ms": noop_ms, "noop_rows": noop.rows, "rows": result.rows, "changes": len(ids),
            "warm_noop_ms": sorted(ms for ms, _ in warm)[1], "warm_noop_rows": max(rows for _, rows in warm),
            "exact": exact, "before": before, "after": after, "rss_mb": peak_rss_mb()}


PHASES = {"raw": phase_raw, "floor": phase_floor, "full": phase_full, "incremental": phase_incremental}


def run_phase(phase: str, spec: dict[str, Any], module: str = "bench.sync") -> dict[str, Any]:
    """Run one phase in a fresh interpreter (``python -m module --phase ...``; bench.scale has phases of its own);
    its last stdout line is the JSON result."""
    out = subprocess.run([sys.executable, "-m", module, "--phase", phase, "--spec", json.dumps(spec)],
                         cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ orchestration


@dataclass
class Figures:
    kind: str
    load_s: float
    raw: dict[str, Any]
    floor: dict[str, Any]
    full: dict[str, Any]
    incremental: dict[str, Any]
    sums_ok: bool
    by_rows: dict[str, Any]  # the same full sync by the row path (Syncer(bulk=False))

    @property
    def raw_rate(self) -> float:
        return self.raw["rows"] / self.raw["seconds"]

    @property
    def floor_rate(self) -> float:
        return self.floor["rows"] / self.floor["seconds"]

    @property
    def ours_rate(self) -> float:
        return self.full["rows"]["statements"] / self.full["seconds"]["statements"]

    @property
    def cpu_ratio(self) -> float:
        """ours / raw in rows per CPU second (both processes' own CPU time, all threads): the load-proof ratio."""
        ours = self.full["rows"]["statements"] / self.full["cpu"]["statements"]
        return ours / (self.raw["rows"] / self.raw["cpu"])

    def misses(self) -> list[str]:
        out = []
        if self.ours_rate < TARGET_ROWS_S:
            out.append("rows/s")
        if self.full["rss_mb"] > TARGET_RSS_MB:
            out.append("RSS")
        if self.incremental["ms"] > TARGET_INCR_MS:
            out.append("incremental")
        if not (self.incremental["exact"] and self.sums_ok):
            out.append("CORRECTNESS")
        return out


def _source_sum(firm: Firm) -> tuple[int, str]:
    """Statement count and the exact total of amounts, as pounds text, from the firm database."""
    if firm.kind == "sqlite":
        conn = sqlite3.connect(firm.dsn)
        n, pence = conn.execute("SELECT count(*), sum(amount_pence) FROM statements").fetchone()
        conn.close()
        return n, _pounds(pence)
    import psycopg

    with psycopg.connect(firm.dsn) as pg:
        n, total = pg.execute("SELECT count(*), sum(amount) FROM statements").fetchone()  # type: ignore[misc]
    return n, f"{total:f}"


def _store_sum(state: str) -> tuple[int, str]:
    """The same from the state store, summed as Decimal (amounts are exact text there)."""
    from decimal import Decimal

    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    total, n = Decimal(0), 0
    for (amount,) in conn.execute("SELECT amount FROM firm_statements"):
        total += Decimal(amount)
        n += 1
    conn.close()
    return n, f"{total:f}"


def load_firm(firm: Firm, work: Path, rows: int, matters: int) -> tuple[float, Path]:
    """Load the firm database and write its mapping into ``work``: (seconds the load took, the mapping)."""
    started = time.perf_counter()
    if firm.kind == "sqlite":
        load_sqlite(Path(firm.dsn), rows, matters)
    else:
        load_postgres(firm.dsn, rows, matters)
    load_s = time.perf_counter() - started
    mapping = work / f"mapping-{firm.kind}.yaml"
    mapping.write_text(mapping_yaml(firm), encoding="utf-8")
    return load_s, mapping


def bench_one(firm: Firm, work: Path, rows: int, matters: int, batch: int) -> Figures:
    print(f"[{firm.kind}] loading {rows:,} statements, {matters:,} matters ...", file=sys.stderr, flush=True)
    load_s, mapping = load_firm(firm, work, rows, matters)
    state = work / f"state-{firm.kind}.db"
    spec = {"firm": firm.__dict__, "batch": batch, "mapping": str(mapping), "state": str(state)}
    print(f"[{firm.kind}] loaded in {load_s:.1f}s; raw read ...", file=sys.stderr, flush=True)
    raw = run_phase("raw", spec)
    print(f"[{firm.kind}] driver floor ...", file=sys.stderr, flush=True)
    floor = run_phase("floor", spec)
    print(f"[{firm.kind}] full sync ...", file=sys.stderr, flush=True)
    full = run_phase("full", spec)
    sums_ok = _source_sum(firm) == _store_sum(spec["state"])
    print(f"[{firm.kind}] full sync by the row path, for comparison ...", file=sys.stderr, flush=True)
    rows_only = {**spec, "bulk": False, "state": str(work / f"state-{firm.kind}-rows.db")}
    by_rows = run_phase("full", rows_only)
    sums_ok = sums_ok and _source_sum(firm) == _store_sum(rows_only["state"])
    print(f"[{firm.kind}] incremental sync ...", file=sys.stderr, flush=True)
    incremental = run_phase("incremental", spec)
    return Figures(firm.kind, load_s, raw, floor, full, incremental, sums_ok, by_rows)


def _postgres_admin() -> Any:
    import psycopg

    from connectors.testkit.databases import postgres_server

    server = postgres_server()
    conninfo = f"host={server.host} port={server.port} user={server.user}"
    if server.password:
        conninfo += f" password={server.password}"
    return psycopg.connect(conninfo + " dbname=postgres", autocommit=True, connect_timeout=5), conninfo, server


def print_table(results: list[Figures], rows: int, matters: int, batch: int) -> None:
    print(f"\nLedgerlink sync benchmark: {rows:,} statements, {matters:,} matters, batch {batch:,}, "
          f"state store SQLite (WAL)")
    head = ("database", "raw rows/s", "floor rows/s", "ours rows/s", "ratio", "of floor", "CPU ratio",
            "peak RSS MB", "incremental 1k ms", "target met?")
    table = [head]
    for f in results:
        miss = f.misses()
        table.append((f.kind, f"{f.raw_rate:,.0f}", f"{f.floor_rate:,.0f}", f"{f.ours_rate:,.0f}",
                      f"{f.ours_rate / f.raw_rate:.2f}", f"{f.ours_rate / f.floor_rate:.2f}", f"{f.cpu_ratio:.2f}",
                      f"{f.full['rss_mb']:.0f}", f"{f.incremental['ms']:.1f}",
                      "yes" if not miss else "NO: " + ", ".join(miss)))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for n, r in enumerate(table):
        print(" | ".join(c.ljust(w) if i in (0, 9) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                   strict=True))))
        if n == 0:
            print("-+-".join("-" * w for w in widths))
    print(f"targets: ours >= {TARGET_ROWS_S:,} statements/s, peak RSS <= {TARGET_RSS_MB:.0f} MB, "
          f"incremental <= {TARGET_INCR_MS:.0f} ms")
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"(1 / 5 / 15 min)"
          f" at the end; CPU ratio = ours / raw in rows per CPU second of each process")
    for f in results:
        rows_rate = f.by_rows["rows"]["statements"] / f.by_rows["seconds"]["statements"]
        print(f"- {f.kind}: ours {f.ours_rate:,.0f} rows/s against the row path's {rows_rate:,.0f} in this run "
              f"({f.ours_rate / rows_rate:.2f}x), "
              f"row path peak RSS {f.by_rows['rss_mb']:.0f} MB")
    for f in results:
        inc, full = f.incremental, f.full
        matters_rate = full["rows"]["matters"] / full["seconds"]["matters"]
        print(f"- {f.kind}: load {f.load_s:.1f}s; raw RSS {f.raw['rss_mb']:.0f} MB; full sync "
              f"{sum(full['rows'].values()):,} rows in {sum(full['seconds'].values()):.1f}s (matters "
              f"{matters_rate:,.0f}/s; the search index {full['search_s']:.2f}s of the statements' "
              f"{full['seconds']['statements']:.1f}s); amounts total exact: {'yes' if f.sums_ok else 'NO'}; "
              f"incremental read "
              f"{inc['rows']} for {inc['changes']} changes (any more is the settle re-read), stored exactly those: "
              f"{'yes' if inc['exact'] else 'NO ' + json.dumps([inc['before'], inc['after']])}; "
              f"no-change sync first in a fresh process {inc['noop_ms']:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="statements to generate")
    parser.add_argument("--matters", type=int, default=100_000, help="matters to generate")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--batch", type=int, default=5000, help="sync batch size and raw fetchmany size")
    parser.add_argument("--keep", action="store_true", help="keep the databases and state stores afterwards")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(PHASES[args.phase](json.loads(args.spec))))
        return 0
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    unknown = set(kinds) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))}")
    work = Path(tempfile.mkdtemp(prefix="ll-bench-sync-"))
    results: list[Figures] = []
    try:
        for kind in kinds:
            if kind == "sqlite":
                path = work / "firm.db"
                firm = Firm("sqlite", f"sqlite:///{path}", str(path), str(path))
                results.append(bench_one(firm, work, args.rows, args.matters, args.batch))
                continue
            admin, conninfo, server = _postgres_admin()
            name = f"ll_bench_{uuid.uuid4().hex[:10]}"
            admin.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
            try:
                url = f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{name}"
                firm = Firm("postgresql", url, f"{conninfo} dbname={name}", name)
                results.append(bench_one(firm, work, args.rows, args.matters, args.batch))
            finally:
                if args.keep:
                    print(f"kept PostgreSQL database {name}", file=sys.stderr)
                else:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.close()
    finally:
        if args.keep:
            print(f"kept {work} (firm.db, state-*.db, mapping-*.yaml)", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, args.rows, args.matters, args.batch)
    return 0 if all(not f.misses() for f in results) else 1


if __name__ == "__main__":
    sys.exit(main())
