"""The psycopg write-back path (connectors/database/driver.py): the same transaction as the stepwise one, on the
driver's cursor. It must still check the reference inside the write's own SERIALIZABLE transaction, write each
reference once, and on a database error roll everything back and let the stepwise path name the statement."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from crash_worker import POSTINGS_SQL, create_firm, firm_mapping, read_firm
from sqlalchemy import create_engine, text

from agent.core.errors import DataError, TransientError
from connectors.database.driver import DriverWriter
from connectors.database.sql import SQLAlchemyConnector
from connectors.testkit.databases import TempDatabase

# the crash firm's write-back, recording the transaction's isolation level as the receipt's method
ISOLATION_SQL = POSTINGS_SQL.replace(":paid_at, :method)", ":paid_at, current_setting('transaction_isolation'))")


def params(reference: str, statement: str = "S1", amount: int = 250) -> dict[str, Any]:
    return {"reference": reference, "statement_key": statement, "amount_minor": amount,
            "paid_at": dt.datetime(2026, 12, 1, 9, 30), "method": "card"}


def methods(db: TempDatabase) -> set[str]:
    """The receipts' method column as written."""
    engine = create_engine(db.url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT method FROM receipts")).scalars())
    finally:
        engine.dispose()


def no_fallback(*_: Any) -> bool:
    raise AssertionError("the posting fell back to the stepwise path")


def test_writes_once_inside_a_serializable_transaction(pg_db: TempDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    create_firm(pg_db.url, {"S1": 1000})
    connector = SQLAlchemyConnector(firm_mapping(pg_db.url, ISOLATION_SQL))
    monkeypatch.setattr(connector, "_write_stepwise", no_fallback)  # the driver path alone must do it
    try:
        assert isinstance(connector._direct, DriverWriter)
        assert connector.write_posting(params("P1:S1")) is True
        assert connector.write_posting(params("P1:S1")) is False  # the reference is there: nothing written
        assert connector.write_posting(params("P2:S1", amount=100)) is True
    finally:
        connector.close()
    firm = read_firm(pg_db.url)
    assert firm.receipts == {"P1:S1": 250, "P2:S1": 100}
    assert firm.balances == {"S1": 650}
    assert methods(pg_db) == {"serializable"}


def test_a_failing_write_rolls_back_and_is_named(pg_db: TempDatabase) -> None:
    create_firm(pg_db.url, {"S1": 1000})
    engine = create_engine(pg_db.url)
    with engine.begin() as conn:  # the balance may not go below zero: the UPDATE, second statement, fails
        conn.execute(text("ALTER TABLE statements ADD CONSTRAINT paid CHECK (balance_pence >= 0)"))
    engine.dispose()
    connector = SQLAlchemyConnector(firm_mapping(pg_db.url))
    try:
        with pytest.raises(DataError, match=r"posting P1:S1 \(statement S1\), statement UPDATE statements"):
            connector.write_posting(params("P1:S1", amount=5000))
        assert connector.write_posting(params("P2:S1")) is True  # the writer connection is usable again
    finally:
        connector.close()
    firm = read_firm(pg_db.url)
    assert firm.receipts == {"P2:S1": 250}  # the failed posting's INSERT was rolled back
    assert firm.balances == {"S1": 750}


ODD_SQL = """\
postings:
  kind: sql
  ready: SELECT 1, 'ready' -- the books are open
  exists: SELECT 1 FROM receipts WHERE reference = :reference AND method LIKE '%' -- any method
  statements:
    - >-
      INSERT INTO receipts (reference, statement_id, amount_pence, received_at, method)
      VALUES (:reference, :statement_key, :amount_minor, :paid_at, '50%') -- a literal per cent
    - UPDATE statements SET balance_pence = balance_pence - :amount_minor WHERE id = :statement_key -- last
"""


def test_comments_per_cents_and_a_reset_session_change_nothing(pg_db: TempDatabase,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each statement is prepared once per session and run in two round trips: a literal %, a trailing -- comment
    and a ready check keep their meaning, and a session whose prepared statements were dropped (a reset, a
    pooler) prepares them again instead of failing."""
    create_firm(pg_db.url, {"S1": 1000})
    connector = SQLAlchemyConnector(firm_mapping(pg_db.url, ODD_SQL))
    monkeypatch.setattr(connector, "_write_stepwise", no_fallback)
    try:
        assert connector.write_posting(params("P1:S1")) is True
        assert connector.write_posting(params("P1:S1")) is False
        raw = connector._writer_connection().connection.driver_connection
        assert raw is not None
        prepared = {r[0] for r in raw.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'ledgerlink%'")}
        raw.commit()
        assert len(prepared) == 4  # ready, exists and the two writes
        raw.execute("DEALLOCATE ALL")  # as a session reset would
        raw.commit()
        monkeypatch.undo()  # the posting that finds them gone goes the stepwise way once, and says nothing
        assert connector.write_posting(params("P2:S1", amount=100)) is True
        monkeypatch.setattr(connector, "_write_stepwise", no_fallback)
        assert connector.write_posting(params("P3:S1", amount=50)) is True  # prepared again
    finally:
        connector.close()
    firm = read_firm(pg_db.url)
    assert firm.receipts == {"P1:S1": 250, "P2:S1": 100, "P3:S1": 50}
    assert firm.balances == {"S1": 600}
    assert methods(pg_db) == {"50%"}


def test_prepared_statements_turned_off_post_the_stepwise_way(pg_db: TempDatabase) -> None:
    """psycopg's documented setting for PgBouncer in transaction mode (no prepared statements): the writer
    prepares nothing and each posting goes through SQLAlchemy, still once."""
    create_firm(pg_db.url, {"S1": 1000})
    connector = SQLAlchemyConnector(firm_mapping(pg_db.url, options="{connect_args: {prepare_threshold: null}}"))
    try:
        assert connector.write_posting(params("P1:S1")) is True
        assert connector.write_posting(params("P1:S1")) is False
        raw = connector._writer_connection().connection.driver_connection
        assert raw is not None
        assert [r[0] for r in raw.execute("SELECT name FROM pg_prepared_statements")] == []
        raw.rollback()
    finally:
        connector.close()
    assert read_firm(pg_db.url).receipts == {"P1:S1": 250}


def test_a_dropped_connection_is_a_transient_error_and_the_next_posting_reconnects(pg_db: TempDatabase) -> None:
    """The server ends the writer's session between postings (a restart, a failover): that posting is a transient
    error, written nowhere, and the next one runs on a new connection and is written once."""
    create_firm(pg_db.url, {"S1": 1000})
    connector = SQLAlchemyConnector(firm_mapping(pg_db.url))
    engine = create_engine(pg_db.url)
    try:
        assert connector.write_posting(params("P1:S1")) is True
        raw = connector._writer_connection().connection.driver_connection
        assert raw is not None
        pid = raw.info.backend_pid
        with engine.begin() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(TransientError):
            connector.write_posting(params("P2:S1"))
        assert connector.write_posting(params("P2:S1")) is True
        assert connector.write_posting(params("P2:S1")) is False
    finally:
        connector.close()
        engine.dispose()
    firm = read_firm(pg_db.url)
    assert firm.receipts == {"P1:S1": 250, "P2:S1": 250} and firm.duplicates == 0
    assert firm.balances == {"S1": 500}
