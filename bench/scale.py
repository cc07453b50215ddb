"""Scaling curve (issue 28, item 4): how each cost of the agent grows with the firm, 100k to 10M statements.

For each size (statements; matters = statements / 10) and each source database (SQLite file, PostgreSQL on
127.0.0.1) it builds the firm of ``bench/sync.py`` and runs, each phase in a fresh child interpreter:

- full: the first full sync (bulk path where the source has one, search index included), statements/s and the
  child's peak RSS (``bench.sync`` phase ``full``), with the exact-total check;
- incremental: 1,000 statements paid in the firm database, one timed sync, then a no-change pass (the median of
  three, after it: what the service loop pays every interval when nothing changed) (``bench.sync`` phase);
- sweep: ``Syncer.reconcile()``, the nightly reconciliation sweep (every source row read and compared with the
  mirror by content hash, then the key sweep for hard deletes), over the now-equal mirror: a clean night.

Once per size: search p50/p99 over a mirror of that many matters and statements (``bench.search``'s names and mix;
the state store does not depend on the source database). Once per run (it takes about 40 s and does not depend
on the firm's size): payment -> posting p99 with 1,000 payments arriving in a burst (``bench.latency --burst``).

Then, from each pair of consecutive sizes, each cost's growth factor beside the growth of its work (rows for the
full sync and the sweep; nothing for a 1k incremental, a no-change pass, a search or peak RSS), so cost that grows
worse than linear, or that grows with the firm when the work does not, shows. Exit status 1 when a target is
missed or a check fails. Run from the repository root::

    .venv/bin/python -m bench.scale --sizes 100000,1000000,10000000 --db sqlite,postgresql

The databases live in a temp folder that is removed (PostgreSQL: ``ll_scale_<random>``, dropped); see
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.search import TARGET_P99_MS as TARGET_SEARCH_MS
from bench.sync import (
    Firm,
    _open_agent,
    _postgres_admin,
    _source_sum,
    _store_sum,
    load_firm,
    peak_rss_mb,
    run_phase,
)

TARGET_ROWS_S = 250_000  # issue 28, item 3: full sync, search index included
TARGET_RSS_MB = 150.0
TARGET_INCR_MS = 100.0  # 1,000 changes, at 10M statements
TARGET_SWEEP_S_10M = 120.0  # a 10M firm's nightly sweep; pro rata below 10M
TARGET_LATENCY_S = 2.0  # payment -> posting p99, 1,000 payments in a burst
WORSE = 1.5  # a cost growing this much faster than its work is flagged (small figures move 20-30 % run to run)


# ------------------------------------------------------------------------------------------------ child phases


def phase_sweep(spec: dict[str, Any]) -> dict[str, Any]:
    """The nightly reconciliation sweep (``Syncer.reconcile``) over a mirror equal to the source."""
    store, connector, syncer = _open_agent(spec)
    connector.check()
    started, cpu = time.perf_counter(), time.process_time()
    result = syncer.reconcile()
    seconds = time.perf_counter() - started
    connector.close()
    store.close()
    return {"seconds": seconds, "cpu": time.process_time() - cpu, "changed": result.total,
            "deleted": sum(result.deleted.values()), "rss_mb": peak_rss_mb()}


def phase_search(spec: dict[str, Any]) -> dict[str, Any]:
    """``bench.search`` over a mirror of this size (no LIKE scans: they take seconds each at 1M matters)."""
    from bench.search import EXACT, p, run

    results, built, size_mb = run(spec["matters"], spec["statements"], spec["each"], spec["rounds"], False)
    ours = [ms for _, ms, _ in results["ours"]]
    found = all(ok for kind, _, ok in results["ours"] if kind in EXACT)
    return {"p50_ms": p(ours, 0.5), "p99_ms": p(ours, 0.99), "searches": len(ours), "found": found,
            "built_s": built, "size_mb": size_mb, "rss_mb": peak_rss_mb()}


def phase_latency(spec: dict[str, Any]) -> dict[str, Any]:
    """``bench.latency`` with every link made first and then all paid at once."""
    from bench.latency import measure, percentile

    info: dict[str, float] = {}
    lat = measure(spec["payments"], spec["poll"], burst=True, info=info)
    return {"posted": len(lat), "payments": spec["payments"], "arrival_s": info.get("arrival_s", 0.0),
            **{f"p{q}_s": percentile(lat, q) if lat else float("inf") for q in (50, 95, 99)}}


PHASES = {"sweep": phase_sweep, "search": phase_search, "latency": phase_latency}


# ------------------------------------------------------------------------------------------------ one size


@dataclass
class Point:
    """One size on one source database."""

    kind: str
    size: int
    matters: int
    load_s: float
    full: dict[str, Any]
    sums_ok: bool
    incremental: dict[str, Any]
    sweep: dict[str, Any]
    search: dict[str, Any] = field(default_factory=dict)  # the size's, shared by its databases

    @property
    def rate(self) -> float:
        return float(self.full["rows"]["statements"] / self.full["seconds"]["statements"])

    @property
    def full_s(self) -> float:
        return float(self.full["seconds"]["statements"])

    @property
    def sweep_target_s(self) -> float:
        return TARGET_SWEEP_S_10M * self.size / 10_000_000

    def checks(self) -> dict[str, bool]:
        return {"amounts total exact": self.sums_ok, "incremental stored exactly the 1k": self.incremental["exact"],
                "clean sweep wrote nothing": self.sweep["changed"] == 0 and self.sweep["deleted"] == 0,
                "search found every exact match": bool(self.search.get("found", True))}

    def met(self) -> dict[str, bool]:
        """Each target of issue 28 against this point's figure."""
        return {"rows/s": self.rate >= TARGET_ROWS_S, "RSS": self.full["rss_mb"] <= TARGET_RSS_MB,
                "incremental": self.incremental["ms"] <= TARGET_INCR_MS,
                "sweep": self.sweep["seconds"] <= self.sweep_target_s,
                "search": not self.search or self.search["p99_ms"] <= TARGET_SEARCH_MS}


def measure_point(firm: Firm, work: Path, size: int, matters: int, batch: int) -> Point:
    tag = f"[{firm.kind} {size:,}]"
    print(f"{tag} loading {size:,} statements, {matters:,} matters ...", file=sys.stderr, flush=True)
    load_s, mapping = load_firm(firm, work, size, matters)
    state = str(work / "state.db")
    spec: dict[str, Any] = {"firm": firm.__dict__, "batch": batch, "mapping": str(mapping), "state": state}
    print(f"{tag} loaded in {load_s:.1f}s; full sync ...", file=sys.stderr, flush=True)
    full = run_phase("full", spec)
    sums_ok = _source_sum(firm) == _store_sum(state)
    print(f"{tag} full sync {full['rows']['statements'] / full['seconds']['statements']:,.0f} rows/s; "
          f"incremental ...", file=sys.stderr, flush=True)
    incremental = run_phase("incremental", spec)
    print(f"{tag} incremental {incremental['ms']:.1f} ms; sweep ...", file=sys.stderr, flush=True)
    sweep = run_phase("sweep", spec, module="bench.scale")
    print(f"{tag} sweep {sweep['seconds']:.1f}s (load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    return Point(firm.kind, size, matters, load_s, full, sums_ok, incremental, sweep)


def run_size(kind: str, size: int, batch: int, root: Path) -> Point:
    """Build one firm, measure it, and throw it away (a 10M firm is gigabytes, twice)."""
    matters = max(1, size // 10)
    work = root / f"{kind}-{size}"
    work.mkdir()
    try:
        if kind == "sqlite":
            path = work / "firm.db"
            return measure_point(Firm("sqlite", f"sqlite:///{path}", str(path), str(path)), work, size, matters,
                                 batch)
        admin, conninfo, server = _postgres_admin()
        name = f"ll_scale_{uuid.uuid4().hex[:10]}"
        admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        try:
            url = f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{name}"
            return measure_point(Firm("postgresql", url, f"{conninfo} dbname={name}", name), work, size, matters,
                                 batch)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ the report


def _cell(text: str, ok: bool | None) -> str:
    return text if ok is None else f"{text} {'ok' if ok else 'MISS'}"


def print_table(points: list[Point], latency: dict[str, Any] | None, batch: int,
                load: tuple[float, ...] | None = None) -> None:
    load = load or os.getloadavg()
    print(f"\nLedgerlink scaling curve: statements (matters = statements / 10), batch {batch:,}, state store SQLite "
          f"(WAL); {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end")
    head = ("statements", "db", f"full rows/s (>= {TARGET_ROWS_S:,})", f"RSS MB (<= {TARGET_RSS_MB:.0f})",
            f"incr 1k ms (<= {TARGET_INCR_MS:.0f})", "no-change ms", "sweep s (<= 120 at 10M)",
            f"search p99 ms (<= {TARGET_SEARCH_MS:.0f})", f"pay->post p99 s (<= {TARGET_LATENCY_S:.0f})")
    table = [head]
    for pt in points:
        met = pt.met()
        search = _cell(f"{pt.search['p99_ms']:.1f}", met["search"]) if pt.search else "-"
        lat = (_cell(f"{latency['p99_s']:.2f}", latency["p99_s"] <= TARGET_LATENCY_S)
               if latency and pt is points[0] else "")
        table.append((f"{pt.size:,}", pt.kind, _cell(f"{pt.rate:,.0f}", met["rows/s"]),
                      _cell(f"{pt.full['rss_mb']:.0f}", met["RSS"]),
                      _cell(f"{pt.incremental['ms']:.1f}", met["incremental"]),
                      f"{pt.incremental['warm_noop_ms']:.1f}",
                      _cell(f"{pt.sweep['seconds']:.1f} (of {pt.sweep_target_s:.1f})", met["sweep"]), search, lat))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for n, r in enumerate(table):
        print(" | ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            print("-+-".join("-" * w for w in widths))
    if latency:
        print(f"payment -> posting, measured once for the run (about 40 s; the firm's size does not enter it): "
              f"{latency['posted']}/{latency['payments']} posted (all paid within {latency['arrival_s']:.1f} s), "
              f"p50 {latency['p50_s']:.2f} s, p95 {latency['p95_s']:.2f} s, p99 {latency['p99_s']:.2f} s")
    print("sweep target: 2 minutes for 10M statements, pro rata (the figure in brackets) at a smaller size")
    for pt in points:
        inc, sw, full = pt.incremental, pt.sweep, pt.full
        failed = [k for k, ok in pt.checks().items() if not ok]
        print(f"- {pt.kind} {pt.size:,}: load {pt.load_s:.1f}s; full sync statements {pt.full_s:.1f}s (search index "
              f"{full['search_s']:.1f}s), matters {full['seconds']['matters']:.1f}s; incremental read "
              f"{inc['rows'].get('statements', 0):,} statements; no-change pass read {inc['warm_noop_rows']} rows "
              f"(first in a fresh process {inc['noop_ms']:.1f} ms); sweep "
              f"{(pt.size + pt.matters) / sw['seconds']:,.0f} rows/s, CPU {sw['cpu']:.1f}s, RSS {sw['rss_mb']:.0f} MB"
              + (f"; search p50 {pt.search['p50_ms']:.2f} ms over {pt.search['searches']} searches, index built in "
                 f"{pt.search['built_s']:.1f}s" if pt.search else "")
              + f"; checks: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}")


def growth(points: list[Point]) -> list[str]:
    """Per database, each cost's growth between consecutive sizes beside its work's; returns what grew worse."""
    worse: list[str] = []
    print("\nGrowth between consecutive sizes (cost factor / work factor; 1.0 is linear in the work, flagged above "
          f"{WORSE}):")
    for kind in dict.fromkeys(pt.kind for pt in points):
        mine = sorted((pt for pt in points if pt.kind == kind), key=lambda pt: pt.size)
        for a, b in pairwise(mine):
            rows = b.size / a.size
            costs: list[tuple[str, float, float]] = [  # (cost, its growth, its work's growth)
                ("full sync s", b.full_s / a.full_s, rows),
                ("peak RSS", b.full["rss_mb"] / a.full["rss_mb"], 1.0),
                ("incremental 1k", b.incremental["ms"] / a.incremental["ms"], 1.0),
                ("no-change pass", b.incremental["warm_noop_ms"] / a.incremental["warm_noop_ms"], 1.0),
                ("sweep s", b.sweep["seconds"] / a.sweep["seconds"], rows),
            ]
            if a.search and b.search:
                costs.append(("search p99", b.search["p99_ms"] / a.search["p99_ms"], 1.0))
            cells = []
            for name, cost, work in costs:
                flag = cost / work > WORSE
                cells.append(f"{name} x{cost:.2f} (work x{work:g}){' WORSE' if flag else ''}")
                if flag:
                    worse.append(f"{kind} {a.size:,} -> {b.size:,}: {name} x{cost:.2f} for work x{work:g}")
            print(f"- {kind} {a.size:,} -> {b.size:,}: " + "; ".join(cells))
    print("worse than its work: " + ("; ".join(worse) if worse else "nothing"))
    return worse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="statements per firm, comma-separated")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--batch", type=int, default=5000, help="sync batch size")
    parser.add_argument("--payments", type=int, default=1000, help="payments in the burst (0: not measured)")
    parser.add_argument("--poll", type=float, default=1.0, help="the provider's event poll in the burst, seconds")
    parser.add_argument("--search-each", type=int, default=40, help="searches of each kind in bench.search's mix")
    parser.add_argument("--search-rounds", type=int, default=3)
    parser.add_argument("--no-search", action="store_true", help="leave the search figure out")
    parser.add_argument("--json", type=Path, help="also write every figure here, as JSON")
    parser.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: print the table and growth from --json files of earlier runs")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(PHASES[args.phase](json.loads(args.spec))))
        return 0
    if args.report:
        return report(args.report, args.batch)
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    if set(kinds) - {"sqlite", "postgresql"}:
        parser.error(f"unknown database(s): {', '.join(sorted(set(kinds) - {'sqlite', 'postgresql'}))}")
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    root = Path(tempfile.mkdtemp(prefix="ll-bench-scale-"))
    points: list[Point] = []
    latency: dict[str, Any] | None = None
    try:
        for size in sizes:
            mine = [run_size(kind, size, args.batch, root) for kind in kinds]
            if not args.no_search:
                print(f"[search {size:,}] ...", file=sys.stderr, flush=True)
                search = run_phase("search", {"matters": max(1, size // 10), "statements": size,
                                              "each": args.search_each, "rounds": args.search_rounds},
                                   module="bench.scale")
                for pt in mine:
                    pt.search = search
            points += mine
            if args.json:  # after each size, so a long run that fails later keeps what it measured
                _write_json(args.json, points, latency, [])
        if args.payments:
            print(f"[latency] {args.payments:,} payments in a burst ...", file=sys.stderr, flush=True)
            latency = run_phase("latency", {"payments": args.payments, "poll": args.poll}, module="bench.scale")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    worse, code = summary(points, latency, args.batch)
    if args.json:
        _write_json(args.json, points, latency, worse)
    return code


def summary(points: list[Point], latency: dict[str, Any] | None, batch: int,
            load: tuple[float, ...] | None = None) -> tuple[list[str], int]:
    """The table, the growth, and what was missed; returns what grew worse than its work and the exit status."""
    print_table(points, latency, batch, load)
    worse = growth(points)
    missed = sorted({name for pt in points for name, ok in pt.met().items() if not ok})
    if latency and latency["p99_s"] > TARGET_LATENCY_S:
        missed.append("payment->posting")
    failed = sorted({name for pt in points for name, ok in pt.checks().items() if not ok})
    print(f"targets missed: {', '.join(missed) if missed else 'none'}; checks failed: "
          f"{', '.join(failed) if failed else 'none'}")
    return worse, 1 if missed or failed else 0


def report(paths: list[Path], batch: int) -> int:
    """One table from several runs' JSON (a long size measured apart from the others): later files win."""
    found: dict[tuple[str, int], Point] = {}
    latency: dict[str, Any] | None = None
    load: tuple[float, ...] | None = None
    for path in paths:
        saved = json.loads(path.read_text(encoding="utf-8"))
        for d in saved["points"]:
            found[d["kind"], d["size"]] = Point(**d)
        latency = saved.get("latency") or latency
        load = tuple(saved["load"])  # the last run's, at its end
    return summary(sorted(found.values(), key=lambda pt: (pt.size, pt.kind != "sqlite")), latency, batch, load)[1]


def _write_json(path: Path, points: list[Point], latency: dict[str, Any] | None, worse: list[str]) -> None:
    path.write_text(json.dumps({"points": [pt.__dict__ for pt in points], "latency": latency, "worse": worse,
                                "load": os.getloadavg()}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
