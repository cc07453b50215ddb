"""The source sync's settle horizon (issue 17, item 5): a bulk change with one timestamp is read when it arrives
and, if that pass began inside the lookback, once more when it settles, never on every pass after; a row changed
again during a sync with the same timestamp is still picked up. The clock is injected, the firm is SQLite."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.engine.sync import Syncer, driver_values
from agent.state import StateStore
from agent.state.mirror import get_statement
from agent.state.schema import firm_statements
from connectors.database.contract import clock_horizon
from connectors.database.sql import SQLAlchemyConnector
from mappings.format import load_mapping

ROWS = 1200
BATCH = 250
LOOKBACK = 5
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)

MAPPING = """\
version: 1
name: Settle test firm
source: {{connector: sqlalchemy, url: "sqlite:///{db}"}}
currency: GBP
timezone: UTC
entities:
  matters:
    table: matters
    key: id
    columns: {{number: matter_no}}
  statements:
    table: bills
    key: id
    watermark: {{column: updated_at, lookback_seconds: {lookback}}}
    money: minor_units
    columns: {{number: bill_no, matter_key: matter_id, amount: amount_pence, balance: balance_pence, status: state}}
    status_values: {{open: [OPEN], paid: [PAID]}}
"""


def _ts(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")  # SQLite's datetime('now') form, as firm software writes it


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def firm(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, Syncer, Clock, StateStore]]:
    db = tmp_path / "firm.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("CREATE TABLE matters (id INTEGER PRIMARY KEY, matter_no TEXT)")
    conn.executemany("INSERT INTO matters VALUES (?, ?)", [(i, f"M-{i}") for i in range(40)])
    conn.execute("CREATE TABLE bills (id INTEGER PRIMARY KEY, bill_no TEXT, matter_id INTEGER, amount_pence INTEGER,"
                 " balance_pence INTEGER, state TEXT, updated_at TEXT NOT NULL)")
    conn.executemany("INSERT INTO bills VALUES (?, ?, ?, ?, ?, 'OPEN', ?)",
                     [(i, f"INV-{i}", i % 40, 10_000 + i, 10_000 + i, _ts(T0 - dt.timedelta(hours=2, seconds=-i)))
                      for i in range(1, ROWS + 1)])
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING.format(db=db, lookback=LOOKBACK), encoding="utf-8")
    connector = SQLAlchemyConnector(load_mapping(mapping))
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    clock = Clock()
    syncer = Syncer(store, connector, BATCH, clock=clock)
    assert syncer.sync_entity("statements") == ROWS  # the first full sync
    yield conn, syncer, clock, store
    connector.close()
    store.close()
    conn.close()


def _bulk_pay(conn: sqlite3.Connection, when: dt.datetime) -> None:
    """One firm-side update of every bill with one timestamp (e.g. a year-end batch job)."""
    conn.execute("UPDATE bills SET state = 'PAID', balance_pence = 0, updated_at = ?", [_ts(when)])


def _balance(store: StateStore, key: int) -> Decimal:
    with store.read() as conn:
        statement = get_statement(conn, str(key))
    assert statement is not None
    return statement.balance


def test_a_bulk_change_with_one_timestamp_is_not_re_read_on_every_pass(firm: tuple[sqlite3.Connection, Syncer,
                                                                                    Clock, StateStore]) -> None:
    conn, syncer, clock, store = firm
    clock.at(60)
    no_change = syncer.sync_entity("statements")
    assert no_change == 0  # settled long ago: a no-change pass reads nothing
    _bulk_pay(conn, T0 + dt.timedelta(seconds=60))
    clock.at(61)
    assert syncer.sync_entity("statements") == ROWS  # the change arrives: read once
    assert _balance(store, 7) == Decimal("0.00")
    # Inside the lookback the window is not final yet, but it is not re-read on every pass either.
    for second in (62, 63, 64):
        clock.at(second)
        assert syncer.sync_entity("statements") == no_change
    clock.at(66)  # 61 (when the reading pass began) + lookback: every row it read is final now
    assert syncer.sync_entity("statements") == ROWS  # the one settle re-read
    for second in (67, 120, 3600):
        clock.at(second)
        assert syncer.sync_entity("statements") == no_change


def test_a_bulk_change_read_after_the_lookback_is_read_exactly_once(firm: tuple[sqlite3.Connection, Syncer,
                                                                                 Clock, StateStore]) -> None:
    conn, syncer, clock, _ = firm
    _bulk_pay(conn, T0 + dt.timedelta(seconds=60))
    clock.at(60 + LOOKBACK + 1)  # the pass begins after the lookback: what it reads is final already
    assert syncer.sync_entity("statements") == ROWS
    for second in (67, 68, 600):
        clock.at(second)
        assert syncer.sync_entity("statements") == 0


def test_a_row_changed_during_the_sync_with_the_same_timestamp_is_not_lost(firm: tuple[sqlite3.Connection, Syncer,
                                                                                        Clock, StateStore]) -> None:
    conn, syncer, clock, store = firm
    when = T0 + dt.timedelta(seconds=60)
    _bulk_pay(conn, when)
    clock.at(61)
    changed: list[int] = []

    def change_a_read_row(entity: str, rows: int) -> None:
        if not changed:  # bill 1 sorts first, so it was in the first batch stored: read before this change
            conn.execute("UPDATE bills SET balance_pence = 4321, updated_at = ? WHERE id = 1", [_ts(when)])
            changed.append(rows)

    assert syncer.sync_entity("statements", change_a_read_row) == ROWS
    assert changed and _balance(store, 1) == Decimal("0.00")  # the pass had read bill 1 before it changed
    clock.at(62)
    assert syncer.sync_entity("statements") == 0  # not final yet: left for the settle re-read
    clock.at(66)
    assert syncer.sync_entity("statements") == ROWS
    assert _balance(store, 1) == Decimal("43.21")  # same timestamp, not lost
    clock.at(67)
    assert syncer.sync_entity("statements") == 0


def test_a_late_commit_with_an_older_timestamp_is_picked_up_once_final(firm: tuple[sqlite3.Connection, Syncer,
                                                                                    Clock, StateStore]) -> None:
    conn, syncer, clock, store = firm
    conn.execute("INSERT INTO bills VALUES (5001, 'INV-5001', 1, 500, 500, 'OPEN', ?)",
                 [_ts(T0 + dt.timedelta(seconds=60))])
    clock.at(61)
    assert syncer.sync_entity("statements") == 1
    # A transaction that began at 0:58 commits now, after that read, with its own older timestamp.
    conn.execute("INSERT INTO bills VALUES (5000, 'INV-5000', 1, 700, 700, 'OPEN', ?)",
                 [_ts(T0 + dt.timedelta(seconds=58))])
    clock.at(62)
    syncer.sync_entity("statements")
    clock.at(70)
    syncer.sync_entity("statements")
    assert _balance(store, 5000) == Decimal("7.00")


def test_the_horizon_takes_the_watermark_form() -> None:
    now = dt.datetime(2026, 6, 1, 12, 0, 10, tzinfo=dt.UTC)
    london = ZoneInfo("Europe/London")
    assert clock_horizon("2026-06-01 11:00:00", now, 5, london) == "2026-06-01 13:00:05"  # naive text, firm zone
    assert clock_horizon("2026-06-01T11:00:00.123", now, 5, ZoneInfo("UTC")) == "2026-06-01T12:00:05.000"
    assert clock_horizon(dt.datetime(2026, 1, 1), now, 5, london) == dt.datetime(2026, 6, 1, 13, 0, 5)
    assert clock_horizon(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), now, 5, london) == now - dt.timedelta(seconds=5)
    assert clock_horizon(1234, now, 5, london) is None  # a rowversion: no clock, the lookback alone
    assert clock_horizon("20260601", now, 5, london) is None  # text of a shape we cannot write


def test_driver_values_write_money_and_dates_as_exact_text() -> None:
    """The state store's text for money is format(v, "f") whatever the Decimal's exponent (str() would write
    1E+2), and dates are ISO text; a page's repeated dates are the same text."""
    day = dt.date(2026, 12, 1)
    rows = [(str(i), f"B{i}", "M1", day, None, amount, Decimal("0.00"), "GBP", "open", False)
            for i, amount in enumerate([Decimal("12.50"), Decimal("1E+2"), Decimal("-0.05"), Decimal("0E-7")])]
    values = driver_values(firm_statements, "sqlite", rows)
    assert [v[5] for v in values] == ["12.50", "100", "-0.05", "0.0000000"]
    assert {v[3] for v in values} == {"2026-12-01"} and {v[4] for v in values} == {None}
    plain = driver_values(firm_statements, "sqlite", rows[:1] + rows[2:])
    assert [v[5] for v in plain] == ["12.50", "-0.05", "0.0000000"]
