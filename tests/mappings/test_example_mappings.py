"""The shipped example mappings validate, the JSON Schema is current, and the PostgreSQL, MariaDB and ODBC
examples work against real databases built the way each example describes."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests_support import odbc_connector

from agent.engine.sync import Syncer
from agent.state import StateStore
from agent.state.schema import firm_matters, firm_statements
from connectors.database.contract import Connector
from connectors.database.introspect import read_catalog
from connectors.database.sql import SQLAlchemyConnector
from connectors.testkit.databases import TempDatabase
from mappings.format import MappingFile, json_schema, load_mapping
from mappings.suggest import recognise

MAPPINGS = Path(__file__).parents[2] / "mappings"
NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("path", sorted(MAPPINGS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    source = load_mapping(path).source
    assert source.password_secret or (source.url is not None and source.url.startswith("sqlite"))


def test_committed_schema_is_current() -> None:
    assert json.loads((MAPPINGS / "schema.json").read_text()) == json_schema()


def pointed(name: str, **source: str) -> MappingFile:
    mapping = load_mapping(MAPPINGS / name)
    moved = mapping.source.model_copy(update={**source, "password_secret": None})
    return mapping.model_copy(update={"source": moved})


def run(db: TempDatabase, *ddl: str) -> None:
    engine = sa.create_engine(db.url)
    with engine.begin() as conn:
        for sql in ddl:
            conn.exec_driver_sql(sql)
    engine.dispose()


def sync_and_post(connector: Connector, tmp_path: Path, params: Mapping[str, Any]) -> StateStore:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    refused = [r for r in connector.dry_run() if r.verdict == "refused"]
    assert refused == []  # what check and hot reload run: the real database accepts every mapped statement
    Syncer(store, connector).sync()
    assert connector.write_posting(params) is True
    assert connector.write_posting(params) is False  # idempotent on the reference
    return store


def mirror(store: StateStore, table: sa.Table) -> dict[str, dict[str, Any]]:
    with store.read() as conn:
        return {r["key"]: dict(r) for r in conn.execute(sa.select(table)).mappings()}


def test_postgresql_example(pg_db: TempDatabase, tmp_path: Path) -> None:
    run(pg_db,
        "CREATE SCHEMA crm; CREATE SCHEMA practice; CREATE SCHEMA billing",
        "CREATE TABLE crm.contacts (contact_id INT PRIMARY KEY, display_name TEXT, email_address TEXT, mobile TEXT,"
        " modified_at TIMESTAMPTZ NOT NULL)",
        "CREATE TABLE practice.files (file_id INT PRIMARY KEY, file_ref TEXT, description TEXT, contact_id INT,"
        " file_status TEXT, modified_at TIMESTAMPTZ NOT NULL)",
        "CREATE TABLE billing.ledgers (ledger_id INT PRIMARY KEY, currency CHAR(3))",
        "CREATE TABLE billing.fee_notes (note_id INT PRIMARY KEY, note_no TEXT, file_id INT, ledger_id INT,"
        " issued_on DATE, due_on DATE, gross NUMERIC(12,2), outstanding NUMERIC(12,2), note_status TEXT,"
        " modified_at TIMESTAMPTZ NOT NULL)",
        "CREATE TABLE billing.receipts (external_ref TEXT PRIMARY KEY, note_id INT, amount NUMERIC(12,2),"
        " received_at TIMESTAMP, channel TEXT)",
        "INSERT INTO crm.contacts VALUES (1, 'Siobhán Ó Súilleabháin', 's@example.com', NULL, now())",
        "INSERT INTO practice.files VALUES (7, 'F-7', 'Probate', 1, 'OPEN', now()),"
        " (8, 'F-8', 'Old file', 1, 'ARCHIVED', now())",
        "INSERT INTO billing.ledgers VALUES (1, 'GBP'), (2, 'EUR')",
        "INSERT INTO billing.fee_notes VALUES (70, 'FN-70', 7, 1, '2026-10-01', '2026-10-31', 1200.50, 1200.50,"
        " 'ISSUED', now()), (71, 'FN-71', 7, 2, '2026-10-02', NULL, 99.99, 99.99, 'ISSUED', now()),"
        " (72, 'FN-72', 7, 1, NULL, NULL, 5.00, 5.00, 'DRAFT', now())")
    url = pg_db.url.render_as_string(hide_password=False)
    assert [m.path.name for m in recognise(read_catalog(url=url))] == ["postgresql.yaml"]  # mapping suggest's pick
    connector = SQLAlchemyConnector(pointed("postgresql.yaml", url=url))
    store = sync_and_post(connector, tmp_path, {"reference": "PM1:70", "statement_key": "70",
                                                "amount": Decimal("200.50"), "paid_at": NOW.replace(tzinfo=None),
                                                "method": "bank"})
    statements = mirror(store, firm_statements)
    assert set(statements) == {"70", "71"}  # the draft is filtered out by the example's query
    assert statements["71"]["currency"] == "EUR" and statements["70"]["amount"] == Decimal("1200.50")
    assert mirror(store, firm_matters)["8"]["status"] == "closed"
    engine = sa.create_engine(pg_db.url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT outstanding FROM billing.fee_notes WHERE note_id = 70").scalar() == \
            Decimal("1000.00")
    engine.dispose()


def test_mariadb_example_with_a_stored_procedure(maria_db: TempDatabase, tmp_path: Path) -> None:
    run(maria_db,
        "CREATE TABLE client (id INT PRIMARY KEY, full_name VARCHAR(100), email VARCHAR(100), phone VARCHAR(30),"
        " last_changed DATETIME(6) NOT NULL)",
        "CREATE TABLE case_file (id INT PRIMARY KEY, case_no VARCHAR(20), title VARCHAR(100), client_id INT,"
        " stage VARCHAR(20), is_deleted TINYINT NOT NULL DEFAULT 0, last_changed DATETIME(6) NOT NULL)",
        "CREATE TABLE invoice (id INT PRIMARY KEY, invoice_no VARCHAR(20), case_id INT, invoice_date DATE,"
        " due_date DATE, total DECIMAL(12,2), balance_due DECIMAL(12,2), status VARCHAR(10),"
        " last_changed DATETIME(6) NOT NULL)",
        "CREATE TABLE payment (gateway_ref VARCHAR(191) PRIMARY KEY, invoice_id INT, amount DECIMAL(12,2),"
        " paid_at DATETIME)",
        "CREATE PROCEDURE record_payment(IN ref VARCHAR(191), IN inv INT, IN amt DECIMAL(12,2), IN at DATETIME)"
        " BEGIN INSERT INTO payment VALUES (ref, inv, amt, at);"
        " UPDATE invoice SET balance_due = balance_due - amt WHERE id = inv; END",
        "INSERT INTO client VALUES (1, '渡辺 さくら', 'w@example.com', NULL, NOW(6))",
        "INSERT INTO case_file VALUES (3, 'C-3', 'Lease', 1, 'open', 0, NOW(6)), (4, 'C-4', 'Gone', 1, 'open', 1,"
        " NOW(6))",
        "INSERT INTO invoice VALUES (30, 'I-30', 3, '2026-10-01', '2026-10-31', 450.00, 450.00, 'open', NOW(6))")
    url = maria_db.url.render_as_string(hide_password=False)
    assert [m.path.name for m in recognise(read_catalog(url=url))] == ["mariadb.yaml"]
    connector = SQLAlchemyConnector(pointed("mariadb.yaml", url=url))
    store = sync_and_post(connector, tmp_path, {"reference": "PM2:30", "statement_key": "30",
                                                "amount": Decimal("450.00"), "paid_at": NOW.replace(tzinfo=None)})
    assert mirror(store, firm_matters)["4"]["deleted"]
    assert mirror(store, firm_statements)["30"]["balance"] == Decimal("450.00")
    engine = sa.create_engine(maria_db.url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM payment").scalar() == 1
        assert conn.exec_driver_sql("SELECT balance_due FROM invoice").scalar() == Decimal("0.00")
    engine.dispose()


def test_odbc_example(pg_db: TempDatabase, tmp_path: Path) -> None:
    odbc = odbc_connector("postgresql")
    run(pg_db,
        "CREATE TABLE customers (cust_id INT PRIMARY KEY, cust_name TEXT, cust_email TEXT, updated TIMESTAMP)",
        "CREATE TABLE jobs (job_id INT PRIMARY KEY, job_code TEXT, job_name TEXT, cust_id INT, updated TIMESTAMP)",
        "CREATE TABLE invoices (inv_id INT PRIMARY KEY, inv_no TEXT, job_id INT, inv_date DATE, due_date DATE,"
        " total_pence BIGINT, owed_pence BIGINT, updated TIMESTAMP)",
        "CREATE TABLE receipts (ref TEXT PRIMARY KEY, inv_id INT, pence BIGINT, taken_on DATE)",
        "INSERT INTO customers VALUES (1, 'Zoë Brontë', 'z@example.com', now())",
        "INSERT INTO jobs VALUES (5, 'J-5', 'Audit', 1, now())",
        "INSERT INTO invoices VALUES (50, 'INV-50', 5, '2026-10-01', NULL, 123456, 123456, now())")
    # the ODBC catalog functions find the same tables, keys and foreign keys the SQLAlchemy inspector does
    assert [m.path.name for m in recognise(read_catalog(connection_string=pg_db.odbc))] == ["odbc.yaml"]
    connector = odbc(pointed("odbc.yaml", connection_string=pg_db.odbc))
    store = sync_and_post(connector, tmp_path, {"reference": "PM3:50", "statement_key": "50",
                                                "amount_minor": 23456, "paid_on": NOW.date()})
    assert mirror(store, firm_statements)["50"]["amount"] == Decimal("1234.56")
    engine = sa.create_engine(pg_db.url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT owed_pence FROM invoices").scalar() == 100000
    engine.dispose()
    connector.close()
