"""Matter search (agent/state/search.py) on the demo firm: each kind of search finds the right matter, typos are
forgiven, the index follows what the sync stores (inserts, updates, deletes), an upgraded store searches at once,
and a PostgreSQL store answers the same searches without the SQLite index."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state import StateStore
from agent.state.schema import firm_clients, firm_matters, firm_statements, search_docs, search_state
from agent.state.search import SearchIndex, corrections, edits, search_matters
from connectors.testkit.databases import TempDatabase

OKAFOR = {"M-2026-0010", "M-2026-0011"}  # client "<first name> Okafor": two matters, INV-1001..INV-1005
NAKAMURAS = {"M-2026-0030", "M-2026-0031"}  # client "<first name> Nakamura"
NAKAMURA = "M-2026-0030"  # its first bill is its own
CLOSED = "M-2026-0120"  # Harrington: the demo's one closed matter


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    home = tmp_path / "home"
    init_home(home)
    runtime = Runtime.for_home(home)
    Syncer(runtime.store, runtime.connector).sync()
    yield runtime
    runtime.close()


def numbers(rt: Runtime, text: str) -> list[str]:
    with rt.store.read() as conn:
        return [r.matter.number for r in search_matters(conn, text)]


def _firm_db(rt: Runtime) -> Path:
    url = rt.mapping.source.url
    assert url is not None  # the demo firm: a SQLite file by URL
    return Path(url.removeprefix("sqlite:///"))


def firm(rt: Runtime, sql: str, *params: object) -> None:
    with sqlite3.connect(_firm_db(rt)) as conn:
        conn.execute(sql, params)


def bill_of(rt: Runtime, matter: str) -> str:
    with sqlite3.connect(_firm_db(rt)) as conn:
        row = conn.execute("SELECT bill_no FROM bills JOIN matters m ON m.id = matter_id WHERE m.matter_no = ? "
                           "ORDER BY bill_no LIMIT 1", (matter,)).fetchone()
    return str(row[0])


def test_each_kind_of_search_finds_its_matter(rt: Runtime) -> None:
    assert numbers(rt, "M-2026-0040")[0] == "M-2026-0040"  # the exact number first
    assert numbers(rt, "2026-003") == ["M-2026-0030", "M-2026-0031"]  # part of a number
    assert set(numbers(rt, "okafor")) == OKAFOR  # client name, any case
    assert set(numbers(rt, "OKAFOR probate")) <= OKAFOR and numbers(rt, "OKAFOR probate")  # every word counts
    assert "M-2026-0010" in numbers(rt, "Probate")  # matter name
    invoice = bill_of(rt, NAKAMURA)
    assert numbers(rt, invoice) == [NAKAMURA]  # a statement's whole number
    assert numbers(rt, invoice.removeprefix("INV-")) == [NAKAMURA]  # and part of it
    assert numbers(rt, invoice[:-1]) == numbers(rt, invoice.removeprefix("INV")[:-1]) != []  # its start
    assert numbers(rt, "Fernández") == numbers(rt, "FERNÁNDEZ") != []  # accents kept, case folded
    assert numbers(rt, "nobody-has-this-name") == []
    assert len(numbers(rt, "")) == 18 and numbers(rt, "") == sorted(numbers(rt, ""))  # nothing typed: all
    assert set(numbers(rt, "M-")) == set(numbers(rt, ""))  # shorter than a trigram: still a substring search


def test_a_clerks_typos_still_find_the_matter(rt: Runtime) -> None:
    assert set(numbers(rt, "Nakamrua")) == NAKAMURAS  # two letters swapped
    assert set(numbers(rt, "Okafr")) == OKAFOR  # a letter missing
    assert set(numbers(rt, "Okaffor")) == OKAFOR  # a letter extra
    assert set(numbers(rt, "Okafur")) == OKAFOR  # a letter wrong
    assert numbers(rt, "Fernandez") == numbers(rt, "Fernández")  # typed without the accent
    assert set(numbers(rt, "okafr probate")) <= OKAFOR and numbers(rt, "okafr probate")
    assert numbers(rt, "Qwertyuiop") == []  # two edits or more from every name: nothing, not a guess


def test_corrections_come_from_the_index_vocabulary(rt: Runtime) -> None:
    assert {"nakamura", "nkamura", "naakmura"} <= edits("nakamura") | {"nakamura"}
    assert "nakamura" not in edits("nakamura") and "nakamura" in edits("nakamrua")
    with rt.store.read() as conn:
        assert corrections(conn, "nakamrua") == ["nakamura"]
        assert corrections(conn, "zzzzzz") == []


def test_closed_matters_are_found_deleted_ones_are_not_and_paid_statements_still_find_theirs(rt: Runtime) -> None:
    assert numbers(rt, CLOSED) == [CLOSED]
    with rt.store.read() as conn:
        status = search_matters(conn, CLOSED)[0].matter.status
    assert status == "closed"
    invoice = bill_of(rt, NAKAMURA)
    firm(rt, "UPDATE bills SET balance_pence = 0, state = 'PAID' WHERE bill_no = ?", invoice)
    Syncer(rt.store, rt.connector).sync()
    assert numbers(rt, invoice) == [NAKAMURA]  # the matter is still the clerk's to find
    firm(rt, "DELETE FROM bills WHERE matter_id = (SELECT id FROM matters WHERE matter_no = ?)", CLOSED)
    firm(rt, "DELETE FROM matters WHERE matter_no = ?", CLOSED)
    syncer = Syncer(rt.store, rt.connector)
    syncer.sync()
    assert numbers(rt, CLOSED) == [CLOSED]  # a hard delete is only seen by the sweep
    for entity in syncer.entities():
        syncer.sweep_deletes(entity)
    assert numbers(rt, CLOSED) == [] and CLOSED not in numbers(rt, "Harrington")


def test_the_index_follows_the_sync(rt: Runtime) -> None:
    assert numbers(rt, "Qusit") == []  # the vocabulary is read (and kept) before the name exists
    firm(rt, "INSERT INTO clients (id, name) VALUES (99, 'Petronella Quist')")
    firm(rt, "INSERT INTO matters (id, matter_no, title, client_id, state) VALUES (990, 'M-2026-0990', "
             "'Right of way dispute', 99, 'A')")
    firm(rt, "INSERT INTO bills (bill_no, matter_id, issued_on, total_pence, balance_pence) "
             "VALUES ('INV-77001', 990, '2026-01-02', 1000, 1000)")
    Syncer(rt.store, rt.connector).sync()
    assert numbers(rt, "Quist") == numbers(rt, "right of way") == numbers(rt, "77001") == ["M-2026-0990"]
    assert numbers(rt, "Qusit") == ["M-2026-0990"]  # the vocabulary learnt the new name too

    firm(rt, "UPDATE matters SET title = 'Easement claim' WHERE id = 990")
    firm(rt, "UPDATE clients SET name = 'Petronella Quist-Abara' WHERE id = 99")
    firm(rt, "UPDATE bills SET bill_no = 'INV-77002' WHERE bill_no = 'INV-77001'")
    Syncer(rt.store, rt.connector).sync()
    assert numbers(rt, "right of way") == [] and numbers(rt, "77001") == []
    assert numbers(rt, "easement") == numbers(rt, "abara") == numbers(rt, "INV-77002") == ["M-2026-0990"]

    firm(rt, "DELETE FROM bills WHERE bill_no = 'INV-77002'")
    syncer = Syncer(rt.store, rt.connector)
    syncer.sync()
    syncer.sweep_deletes("statements")
    assert numbers(rt, "INV-77002") == [] and numbers(rt, "easement") == ["M-2026-0990"]
    with rt.store.read() as conn:
        assert conn.execute(select(search_state.c.behind)).scalar() is None  # caught up


def _mirror_rows(conn: Connection) -> None:
    conn.execute(firm_clients.insert().values(key="c1", name="Grainne Ní Bhraonáin", deleted=False))
    conn.execute(firm_matters.insert(), [
        {"key": "m1", "number": "M-7001", "name": "Lease renewal", "client_key": "c1", "status": "open",
         "deleted": False},
        {"key": "m2", "number": "M-7002", "name": "Boundary dispute", "client_key": None, "status": "closed",
         "deleted": False},
        {"key": "m3", "number": "M-7003", "name": "Gone", "client_key": "c1", "status": "open", "deleted": True}])
    conn.execute(firm_statements.insert(), [
        {"key": "s1", "number": "B-000123", "matter_key": "m2", "amount": Decimal("1.00"),
         "balance": Decimal("0"), "currency": "GBP", "status": "paid", "deleted": False},
        {"key": "s2", "number": "B-000999", "matter_key": "m2", "amount": Decimal("1.00"),
         "balance": Decimal("1.00"), "currency": "GBP", "status": "open", "deleted": True}])


def _store_numbers(store: StateStore, text: str) -> list[str]:
    with store.read() as conn:
        return [r.matter.number for r in search_matters(conn, text)]


def test_the_migration_fills_the_index_from_an_existing_mirror(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    old = StateStore(url, migrate=False)
    old.migrate("0008")  # an agent from before the search index, with a synced mirror
    with old.begin() as conn:
        _mirror_rows(conn)
    old.close()
    new = StateStore(url)
    with new.read() as conn:
        assert conn.execute(select(search_docs.c.matter_key).order_by(search_docs.c.id)).scalars().all() == [
            "m1", "m2", "m3"]
    with new.read() as conn:  # statement numbers by their significant part; the deleted one left out
        assert conn.execute(select(search_docs.c.invoices).where(search_docs.c.matter_key == "m2")).scalar() == "123"
    assert _store_numbers(new, "bhraonain") == ["M-7001"]  # by the vocabulary: typed without accents
    assert _store_numbers(new, "00123") == ["M-7002"] and _store_numbers(new, "999") == []
    assert _store_numbers(new, "Boundary") == ["M-7002"] and _store_numbers(new, "Gone") == []
    new.close()


def test_a_pass_that_stopped_before_catching_up_is_repaired_by_the_next(rt: Runtime) -> None:
    """The batch and the 'index behind' mark commit together; the next pass sees another pass's mark and rebuilds."""
    row = {"key": "m-late", "number": "M-2026-0777", "name": "Late arrival", "client_key": None, "payer_key": None,
           "status": "open", "deleted": False}
    with rt.store.begin() as conn:
        conn.execute(firm_matters.insert().values(**row))
        SearchIndex().note(conn, "matters", [tuple(row[c.name] for c in firm_matters.columns)])  # ... and died here
    assert numbers(rt, "late arrival") == []
    Syncer(rt.store, rt.connector).sync()  # nothing new in the firm database: only the mark says to rebuild
    assert numbers(rt, "late arrival") == ["M-2026-0777"]


def test_a_postgresql_store_searches_the_mirror_with_like(pg_db: TempDatabase) -> None:
    store = StateStore(pg_db.url.render_as_string(hide_password=False))
    with store.begin() as conn:
        _mirror_rows(conn)
    assert _store_numbers(store, "m-700") == ["M-7001", "M-7002"]  # deleted M-7003 left out
    assert _store_numbers(store, "Ní Bhraon") == ["M-7001"] and _store_numbers(store, "lease") == ["M-7001"]
    assert _store_numbers(store, "00123") == ["M-7002"] and _store_numbers(store, "000999") == []
    assert _store_numbers(store, "M-7002")[0] == "M-7002" and _store_numbers(store, "100%") == []
    index = SearchIndex()
    with store.begin() as conn:
        index.note(conn, "matters", [("m1",)])  # no index to keep on this store: nothing owed, no mark
        assert conn.execute(select(search_state.c.behind)).scalar() is None
    index.catch_up(store)
    store.close()
