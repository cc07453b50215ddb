"""The bulk path of a first full sync (connectors.database.arrow) against the row path: on the
same firm database, SQLite and PostgreSQL, both must leave the same mirror, the same quarantine (each bad row with
its field) and the same checkpoint, and an incremental pass after either reads on from the same place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL
from tests_support import require

from agent.engine.sync import Syncer
from agent.state import StateStore
from agent.state.schema import FIRM_TABLES, checkpoints, quarantine
from connectors.database import arrow
from connectors.database.arrow import HAVE_ARROW
from connectors.database.contract import BulkRead
from connectors.database.sql import SQLAlchemyConnector
from connectors.testkit.databases import TempDatabase
from mappings.format import parse_mapping


@pytest.fixture(autouse=True)
def _bulk_extra() -> None:
    require(None if HAVE_ARROW else "the bulk extra (pip install '.[bulk]') is not installed")

T0 = dt.datetime(2026, 1, 1, 9, 0, 0)


def mapping(url: URL | str, money: str) -> Any:
    return parse_mapping(f"""\
version: 1
name: bulk firm
currency: GBP
source: {{url: "{url if isinstance(url, str) else url.render_as_string(hide_password=False)}"}}
entities:
  clients: {{table: clients, key: id, watermark: {{column: changed_at}}, columns: {{name: name, email: email}}}}
  matters:
    table: matters
    key: id
    watermark: {{column: changed_at}}
    columns: {{number: matter_no, name: title, client_key: client_id}}
    status_values: {{open: [A, Active], closed: [C]}}
  statements:
    table: bills
    key: id
    watermark: {{column: changed_at}}
    money: {money}
    columns: {{number: bill_no, matter_key: matter_id, issue_date: issued_on, due_date: due_on, amount: total,
               balance: owed, currency: curr, status: state}}
    status_values: {{open: [OPEN], paid: [PAID, settled], void: [VOID]}}
""", Path("bulk-firm.yaml"))


def build(url: URL | str, kind: str, bills: list[tuple[Any, ...]]) -> None:
    server = kind != "sqlite"  # a typed database: exact decimals, dates and timestamps
    money = "NUMERIC(22,2)" if server else "INTEGER"
    ts = {"postgresql": "TIMESTAMP", "mariadb": "DATETIME(6)"}.get(kind, "TEXT")
    day = "DATE" if server else "TEXT"
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in ("bills", "matters", "clients"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(text(f"CREATE TABLE clients (id INTEGER PRIMARY KEY, name TEXT, email TEXT, changed_at {ts})"))
        conn.execute(text(f"CREATE TABLE matters (id INTEGER PRIMARY KEY, matter_no TEXT, title TEXT, "
                          f"client_id INTEGER, state TEXT, changed_at {ts})"))
        conn.execute(text(f"CREATE TABLE bills (id INTEGER PRIMARY KEY, bill_no TEXT, matter_id INTEGER, "
                          f"issued_on {day}, due_on {day}, total {money}, owed {money}, curr TEXT, state TEXT, "
                          f"changed_at {ts})"))
        stamp = T0 if server else T0.isoformat(" ")
        conn.execute(text("INSERT INTO clients VALUES (:i, :n, :e, :t)"),
                     [{"i": i, "n": f"  Client {i} " if i % 7 else "", "e": f"c{i}@example.com", "t": stamp}
                      for i in range(1, 40)])
        conn.execute(text("INSERT INTO matters VALUES (:i, :n, :t2, :c, :s, :t)"),
                     [{"i": i, "n": f"M-{i:04d}", "t2": f"Matter {i}", "c": i % 39 + 1,
                       "s": ["A", "active ", "C", "weird"][i % 4], "t": stamp} for i in range(1, 120)])
        conn.execute(text("INSERT INTO bills VALUES (:i, :b, :m, :d1, :d2, :a, :o, :c, :s, :t)"),
                     [dict(zip(("i", "b", "m", "d1", "d2", "a", "o", "c", "s"), row, strict=True)) | {"t": stamp}
                      for row in bills])
    engine.dispose()


def bills(kind: str, n: int = 3000) -> list[tuple[Any, ...]]:
    """Ordinary bills and, every so often, one of each thing the row path refuses or normalises."""
    pg = kind != "sqlite"  # a typed database

    def money(pence: int) -> Any:
        return Decimal(pence).scaleb(-2) if pg else pence

    day = dt.date(2026, 1, 1)
    out: list[tuple[Any, ...]] = []
    for i in range(1, n + 1):
        issued: Any = day + dt.timedelta(days=i % 300)
        due: Any = issued + dt.timedelta(days=30)
        if not pg:
            issued, due = issued.isoformat(), due.isoformat()
        status = ["OPEN", "PAID", " settled ", "void", "Disputed"][i % 5]
        out.append((i, f" B{i:05d} ", i % 119 + 1, issued, due, money(1000 + i * 7), money(i % 3 * 500), "gbp",
                    status))
    if not pg:
        out[10] = (*out[10][:3], "2026-02-30", *out[10][4:])  # no such day: quarantined with its field
        out[11] = (*out[11][:3], "5 March 2026", *out[11][4:])  # not ISO: the row path reads or names it
        out[12] = (*out[12][:4], None, *out[12][5:])  # no due date: fine
    out[20] = (*out[20][:5], None, *out[20][6:])  # NULL amount: quarantined
    out[30] = (*out[30][:7], "", *out[30][8:])  # no currency: the firm's
    out[40] = (*out[40][:5], money(10**17), *out[40][6:])  # too large: quarantined
    return out


def mirror(store: StateStore) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    with store.read() as conn:
        for entity, table in FIRM_TABLES.items():
            rows = conn.execute(select(table).order_by(table.c.key)).all()
            out[entity] = [tuple(Decimal(v) if isinstance(v, Decimal) else v for v in r) for r in rows]
        out["quarantine"] = [tuple(r) for r in conn.execute(select(
            quarantine.c.entity, quarantine.c.key, quarantine.c.number, quarantine.c.field, quarantine.c.reason)
            .order_by(quarantine.c.entity, quarantine.c.key))]
        out["checkpoints"] = [tuple(r) for r in conn.execute(select(
            checkpoints.c.entity, checkpoints.c.watermark, checkpoints.c.last_key).order_by(checkpoints.c.entity))]
    return out


@pytest.fixture(autouse=True)
def bulk_at_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """These firms are small, so that the tests are quick: read them in bulk all the same."""
    monkeypatch.setattr(arrow, "SQLITE_BULK_MIN_ROWS", 0)


def test_a_small_sqlite_entity_is_left_to_the_row_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child process costs more than the kernels save on a few rows: below the threshold no child is started."""
    url = f"sqlite:///{tmp_path / 'firm.db'}"
    build(url, "sqlite", bills("sqlite", 1200))
    monkeypatch.setattr(arrow, "SQLITE_BULK_MIN_ROWS", 1200)
    connector = SQLAlchemyConnector(mapping(url, "minor_units"))
    try:
        assert connector.bulk_read("statements", 10) is not None  # 1200 rows: as many as the threshold
        monkeypatch.setattr(arrow, "SQLITE_BULK_MIN_ROWS", 1201)
        assert connector.bulk_read("statements", 10) is None
        assert connector.bulk_read("clients", 10) is None
    finally:
        connector.close()


def synced(url: URL | str, money: str, state: Path, bulk: bool) -> tuple[Syncer, StateStore]:
    store = StateStore(f"sqlite:///{state}")
    connector = SQLAlchemyConnector(mapping(url, money))
    syncer = Syncer(store, connector, batch_size=500, bulk=bulk)
    assert syncer.bulk is bulk
    assert connector.bulk_read("statements", 10) is not None  # both kinds read in bulk (SQLite in a child)
    syncer.sync()
    return syncer, store


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def firm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, URL | str]]:
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'firm.db'}"
    elif request.param == "postgresql":
        db: TempDatabase = request.getfixturevalue("pg_db")
        yield "postgresql", db.url
    else:
        maria: TempDatabase = request.getfixturevalue("maria_db")
        yield "mariadb", maria.url


def test_the_bulk_path_leaves_the_mirror_the_row_path_leaves(firm: tuple[str, URL | str], tmp_path: Path) -> None:
    kind, url = firm
    build(url, kind, bills(kind))
    money = "minor_units" if kind == "sqlite" else "decimal"
    bulk, bulk_store = synced(url, money, tmp_path / "bulk.db", bulk=True)
    rows, rows_store = synced(url, money, tmp_path / "rows.db", bulk=False)
    try:
        a, b = mirror(bulk_store), mirror(rows_store)
        assert len(a["statements"]) > 2900 and a["quarantine"], a["quarantine"]
        for part in a:
            assert a[part] == b[part], part
        # and the kernels did the work: only the odd rows went the row path's way
        read = bulk.connector.bulk_read("statements", 500)
        assert read is not None
        pages = list(read.pages)
        by_rows = sum(len(p.rows) + len(p.rejected) for p in pages)
        assert sum(p.records.num_rows for p in pages) >= 2995 and by_rows == (4 if kind == "sqlite" else 2)
        assert {"21", "41"} <= {e.key for p in pages for e in p.rejected}  # NULL and too large
        fields = {(r[1], r[3]) for r in a["quarantine"]}
        assert ("21", "amount") in fields and ("41", "amount") in fields
        # then a change in the firm database: both read on from the same checkpoint and agree again
        engine = create_engine(url)
        with engine.begin() as conn:
            later = T0 + dt.timedelta(hours=1)
            conn.execute(text("UPDATE bills SET owed = 0, state = 'PAID', changed_at = :t WHERE id <= 5"),
                         {"t": later if kind != "sqlite" else later.isoformat(" ")})
        engine.dispose()
        assert bulk.sync().rows["statements"] == rows.sync().rows["statements"] == 5
        assert mirror(bulk_store) == mirror(rows_store)
    finally:
        for s in (bulk, rows):
            s.connector.close()
        bulk_store.close()
        rows_store.close()


def test_a_column_the_kernels_cannot_convert_exactly_takes_the_row_path(pg_db: TempDatabase, tmp_path: Path) -> None:
    """Money kept as text in PostgreSQL, one value with a decimal comma: the page goes through the row path, which
    quarantines that row naming the field, and the others are stored as from the bulk read."""
    rows = bills("postgresql", 1200)
    build(pg_db.url, "postgresql", rows)
    engine = create_engine(pg_db.url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE bills ALTER COLUMN total TYPE text"))
        conn.execute(text("UPDATE bills SET total = '10,50' WHERE id = 1101"))
    engine.dispose()
    bulk, store = synced(pg_db.url, "decimal", tmp_path / "bulk.db", bulk=True)
    plain, plain_store = synced(pg_db.url, "decimal", tmp_path / "rows.db", bulk=False)
    try:
        assert mirror(store) == mirror(plain_store)
        assert ("1101", "amount") in {(r[1], r[3]) for r in mirror(store)["quarantine"]}
        assert len(mirror(store)["statements"]) == 1200 - 3  # 1101 and the two bad rows bills() always has
    finally:
        for s in (bulk, plain):
            s.connector.close()
        store.close()
        plain_store.close()


def test_a_type_adbc_reads_otherwise_than_the_row_path_leaves_the_entity_to_the_row_path(
        pg_db: TempDatabase, tmp_path: Path) -> None:
    """PostgreSQL's money type arrives through ADBC as integer cents, through psycopg as its text: the kernels
    do not guess, the entity is read row by row, and the mirror is what the row path makes of it."""
    build(pg_db.url, "postgresql", bills("postgresql", 300))
    engine = create_engine(pg_db.url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE bills ALTER COLUMN owed TYPE money USING owed::numeric::money"))
    engine.dispose()
    bulk, store = synced(pg_db.url, "decimal", tmp_path / "bulk.db", bulk=True)
    plain, plain_store = synced(pg_db.url, "decimal", tmp_path / "rows.db", bulk=False)
    try:
        assert mirror(store) == mirror(plain_store)
    finally:
        for s in (bulk, plain):
            s.connector.close()
        store.close()
        plain_store.close()


def test_a_sqlite_column_that_changes_type_part_way_leaves_the_entity_to_the_row_path(tmp_path: Path) -> None:
    """SQLite types a value, not a column: text in an INTEGER money column stops ADBC's reader (which types a
    column by its first rows) part-way; the sync goes on by the row path, which quarantines that row by field."""
    url = f"sqlite:///{tmp_path / 'firm.db'}"
    rows = bills("sqlite", 1200)
    rows[1100] = (*rows[1100][:5], "10,50", *rows[1100][6:])
    build(url, "sqlite", rows)
    bulk, store = synced(url, "minor_units", tmp_path / "bulk.db", bulk=True)
    plain, plain_store = synced(url, "minor_units", tmp_path / "rows.db", bulk=False)
    try:
        assert mirror(store) == mirror(plain_store)
        assert ("1101", "amount") in {(r[1], r[3]) for r in mirror(store)["quarantine"]}
    finally:
        for s in (bulk, plain):
            s.connector.close()
        store.close()
        plain_store.close()


def test_a_bulk_load_cut_off_part_way_is_done_again_whole(tmp_path: Path) -> None:
    """A first sync stopped in the middle of the bulk load stores no checkpoint; the next pass loads again from
    the start, upserting what was stored (nothing doubled, nothing lost) and checkpoints where the row path would."""
    url = f"sqlite:///{tmp_path / 'firm.db'}"
    build(url, "sqlite", bills("sqlite", 2500))
    store = StateStore(f"sqlite:///{tmp_path / 'bulk.db'}")
    syncer = Syncer(store, SQLAlchemyConnector(mapping(url, "minor_units")), batch_size=200)
    seen: list[int] = []

    def power_cut(entity: str, n: int) -> None:
        if entity == "statements":
            seen.append(n)
            if len(seen) == 2:
                raise KeyboardInterrupt("power cut")

    try:
        with pytest.raises(KeyboardInterrupt):
            syncer.sync(progress=power_cut)
        cut = mirror(store)
        assert 0 < len(cut["statements"]) < 2500 and "statements" not in {c[0] for c in cut["checkpoints"]}
        syncer.sync()
        plain, plain_store = synced(url, "minor_units", tmp_path / "rows.db", bulk=False)
        try:
            assert mirror(store) == mirror(plain_store)
        finally:
            plain.connector.close()
            plain_store.close()
    finally:
        syncer.connector.close()
        store.close()


def test_the_bulk_sweep_finds_what_the_row_sweep_finds(firm: tuple[str, URL | str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Changes the watermark never saw (no changed_at bumped), hard deletes, a bad row fixed and a good one
    broken: the nightly sweep through the bulk read and the row path's sweep store the same, and a clean sweep
    after it writes nothing."""
    kind, url = firm
    build(url, kind, bills(kind))
    money = "minor_units" if kind == "sqlite" else "decimal"
    bulk, bulk_store = synced(url, money, tmp_path / "bulk.db", bulk=True)
    rows, rows_store = synced(url, money, tmp_path / "rows.db", bulk=False)

    def sum_of(pence: int) -> Decimal | int:
        return pence if kind == "sqlite" else Decimal(pence).scaleb(-2)

    try:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE bills SET owed = 0, state = 'PAID' WHERE id BETWEEN 100 AND 109"))
            conn.execute(text("DELETE FROM bills WHERE id BETWEEN 200 AND 202"))
            conn.execute(text("UPDATE bills SET total = :t WHERE id = 21"), {"t": sum_of(1234)})  # fixed
            conn.execute(text("UPDATE bills SET total = :t WHERE id = 50"), {"t": sum_of(10**17)})  # broken
            conn.execute(text("DELETE FROM matters WHERE id = 5"))
        engine.dispose()

        def row_by_row(entity: str) -> int:
            raise AssertionError(f"the row path swept {entity}")

        monkeypatch.setattr(bulk, "_reconcile_entity", row_by_row)
        swept, by_rows = bulk.reconcile(), rows.reconcile()
        assert swept.rows == by_rows.rows, (swept.rows, by_rows.rows)
        assert swept.rows["statements"] == 10  # 100-109 but 102 (settled is paid already), and 21 read well
        assert swept.deleted == by_rows.deleted == {"clients": 0, "matters": 1, "statements": 3}
        assert swept.quarantined == by_rows.quarantined
        a = mirror(bulk_store)
        assert a == mirror(rows_store)
        assert any(r[1] == "50" and r[3] == "amount" for r in a["quarantine"])
        assert not any(r[1] == "21" for r in a["quarantine"])
        assert [r[5] for r in a["statements"] if r[0] == "21"] == [Decimal("12.34")]  # stored once read well
        again = bulk.reconcile()
        assert set(again.rows.values()) == set(again.deleted.values()) == {0}
        assert mirror(bulk_store) == a
    finally:
        for s in (bulk, rows):
            s.connector.close()
        bulk_store.close()
        rows_store.close()


def test_a_row_stored_while_the_bulk_sweep_reads_is_not_taken_for_gone(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep reads the source without holding the mirror's lock; a row another pass stores meanwhile is not in
    what this sweep read, and must not be marked deleted for that: the mirror is judged as it was when the read
    began. The next sweep, which reads without it, marks it."""
    url = f"sqlite:///{tmp_path / 'firm.db'}"
    build(url, "sqlite", bills("sqlite", 600))
    syncer, store = synced(url, "minor_units", tmp_path / "state.db", bulk=True)
    table = FIRM_TABLES["statements"]
    with store.read() as conn:
        row = conn.execute(select(table).where(table.c.key == "1")).one()
    late = ("90001", *tuple(row)[1:])  # a statement stored by another pass mid-sweep, no longer in the source
    reading = syncer.connector.bulk_read

    def stored_meanwhile(entity: str, batch_size: int) -> BulkRead | None:
        read = reading(entity, batch_size)
        if read is None or entity != "statements":
            return read

        def pages() -> Iterator[Any]:
            for n, page in enumerate(read.pages):
                if n == 0:
                    with store.begin() as conn:
                        conn.execute(table.insert().values(dict(zip(table.columns.keys(), late, strict=True))))
                yield page

        return BulkRead(read.position, pages())

    try:
        monkeypatch.setattr(syncer.connector, "bulk_read", stored_meanwhile)
        assert syncer.reconcile().deleted["statements"] == 0
        with store.read() as conn:
            assert conn.execute(select(table.c.deleted).where(table.c.key == "90001")).scalar_one() is False
        monkeypatch.undo()
        monkeypatch.setattr(arrow, "SQLITE_BULK_MIN_ROWS", 0)
        assert syncer.reconcile().deleted["statements"] == 1
        with store.read() as conn:
            assert conn.execute(select(table.c.deleted).where(table.c.key == "90001")).scalar_one() is True
    finally:
        syncer.connector.close()
        store.close()
