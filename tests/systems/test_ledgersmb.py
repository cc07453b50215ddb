"""The shipped LedgerSMB mapping against a real LedgerSMB 1.6 company database (Debian's ledgersmb) on the real
PostgreSQL server, judged by LedgerSMB's own code: the company is made by LedgerSMB's own loader
(LedgerSMB::Database->create_and_load, then its UK chart of accounts), and every verdict is what its own
payment_get_open_invoices says is still due, never our SQL.

A full payment, a part payment and its settling remainder, one link paying two invoices, a charge-back reversed
by LedgerSMB's payment__reverse, a part refund, a payment into a closed period refused by LedgerSMB, workers
killed while writing (every payment exactly once), the assistant recognising the company, and the rehearsal.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from money_support import ADMIN, post_all
from systems_support import debts, firm_runtime, paid_link, pay, poll, post_while_killing
from tests_support import require

from agent.engine.sync import Syncer
from agent.runtime import Runtime
from connectors.database.introspect import read_catalog
from connectors.providers import sandbox
from connectors.testkit.databases import postgres_server, unavailable
from mappings.suggest import recognise
from postings.queries import posting_rows

LSMB = Path("/usr/share/ledgersmb")
MAPPING = Path(__file__).parents[2] / "mappings" / "ledgersmb.yaml"
CUSTOMERS = {"C001": ("Ada Lovelace", "ada@example.com"), "C002": ("Siobhán Ó Súilleabháin", "siobhan@example.com")}
INVOICES = {"INV-1": ("C001", "100.00"), "INV-2": ("C002", "250.00"), "INV-3": ("C001", "60.00")}


def ledgersmb_unavailable() -> str | None:
    if not (LSMB / "lib" / "LedgerSMB" / "Database.pm").is_file():
        return f"LedgerSMB is not installed ({LSMB}); Debian: apt install ledgersmb"
    return unavailable(postgres_server())


def make_company(name: str) -> None:
    """A company database as LedgerSMB's own setup makes one: its schema, modules and changes, then a chart."""
    server = postgres_server()
    script = (f'my $db = LedgerSMB::Database->new(dbname => "{name}", username => "{server.user}", '
              f'password => "{server.password}", host => "{server.host}", port => {server.port}, '
              f'source_dir => "{LSMB / "sql"}"); $db->create_and_load({{log => "/dev/null", errlog => "/dev/null"}});')
    done = subprocess.run(["perl", f"-I{LSMB / 'lib'}", "-MLedgerSMB::Database", "-e", script], cwd=LSMB,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with company(name) as conn:
        conn.execute((LSMB / "sql" / "coa" / "uk" / "chart" / "General.sql").read_text())
        for number, (person, email) in CUSTOMERS.items():
            entity = conn.execute("INSERT INTO entity (name, entity_class, country_id) VALUES (%s, 2, "
                                  "(SELECT id FROM country WHERE short_name = 'GB')) RETURNING id", (person,))
            entity_id = returned(entity)
            conn.execute("INSERT INTO company (entity_id, legal_name) VALUES (%s, %s)", (entity_id, person))
            credit = conn.execute("INSERT INTO entity_credit_account (entity_id, entity_class, meta_number, "
                                  "ar_ap_account_id, curr) VALUES (%s, 2, %s, (SELECT id FROM account WHERE "
                                  "accno = '1100'), 'GBP') RETURNING id", (entity_id, number))
            conn.execute("INSERT INTO eca_to_contact (credit_id, contact_class_id, contact) VALUES (%s, 12, %s)",
                         (returned(credit), email))
        for invoice, (customer, amount) in INVOICES.items():  # an AR transaction as AA.pm posts one
            row = conn.execute(
                "INSERT INTO ar (invnumber, transdate, amount, netamount, duedate, curr, approved, "
                "entity_credit_account) SELECT %s, DATE '2026-11-02', %s, %s, DATE '2026-12-02', 'GBP', true, id "
                "FROM entity_credit_account WHERE meta_number = %s RETURNING id", (invoice, amount, amount, customer))
            ar_id = returned(row)
            conn.execute("INSERT INTO acc_trans (trans_id, chart_id, amount, transdate, approved) VALUES "
                         "(%s, (SELECT id FROM account WHERE accno = '1100'), -%s, DATE '2026-11-02', true), "
                         "(%s, (SELECT id FROM account WHERE accno = '4000'), %s, DATE '2026-11-02', true)",
                         (ar_id, Decimal(amount), ar_id, Decimal(amount)))


def returned(cursor: psycopg.Cursor[Any]) -> Any:
    """The id an ``INSERT ... RETURNING id`` gave back."""
    row = cursor.fetchone()
    assert row is not None
    return row[0]


def company(name: str) -> psycopg.Connection[Any]:
    server = postgres_server()
    return psycopg.connect(host=server.host, port=server.port, user=server.user, password=server.password or None,
                           dbname=name, autocommit=False)


def due(name: str) -> dict[str, Decimal]:
    """What LedgerSMB's own payment_get_open_invoices says each customer invoice still owes."""
    with company(name) as conn:
        rows = conn.execute(
            "SELECT i.invnumber, i.due FROM entity_credit_account c, LATERAL payment_get_open_invoices("
            "2, c.id, 'GBP', NULL, NULL, NULL, NULL) i WHERE c.entity_class = 2").fetchall()
    return {number: Decimal(amount).quantize(Decimal("0.01")) for number, amount in rows}


def admin(sql: str) -> None:
    server = postgres_server()
    with psycopg.connect(host=server.host, port=server.port, user=server.user, dbname="postgres",
                         password=server.password or None, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def template() -> Iterator[str]:
    """One company made by LedgerSMB's loader; each test gets a copy of it (CREATE DATABASE ... TEMPLATE)."""
    require(ledgersmb_unavailable())
    name = f"lsmb_template_{uuid.uuid4().hex[:8]}"
    make_company(name)
    yield name
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(template: str) -> Iterator[str]:
    name = f"lsmb_{uuid.uuid4().hex[:12]}"
    admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield name
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def rt(db: str, tmp_path: Path) -> Iterator[Runtime]:
    server = postgres_server()
    text = MAPPING.read_text(encoding="utf-8").replace(
        "postgresql+psycopg://ledgerlink@db.example.internal/acme",
        f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{db}").replace(
        "  password_secret: ledgersmb-db-password\n", "")
    runtime = firm_runtime(tmp_path / "home", text)
    yield runtime
    runtime.close()


def test_the_company_reads_as_customers_and_open_ar(rt: Runtime, db: str) -> None:
    assert debts(rt, "C001") == {"INV-1": Decimal("100.00"), "INV-3": Decimal("60.00")}
    assert debts(rt, "C002") == {"INV-2": Decimal("250.00")}
    assert due(db) == {"INV-1": Decimal("100.00"), "INV-2": Decimal("250.00"), "INV-3": Decimal("60.00")}


def test_a_full_payment_through_payment_post_leaves_nothing_due(rt: Runtime, db: str) -> None:
    pay(rt, "C001", statements={"INV-1": "100.00"})
    assert "INV-1" not in due(db) or due(db)["INV-1"] == 0
    assert due(db)["INV-3"] == Decimal("60.00")
    assert debts(rt, "C001") == {"INV-3": Decimal("60.00")}  # never offered again


def test_a_part_payment_then_the_remainder(rt: Runtime, db: str) -> None:
    pay(rt, "C002", "100.00")
    assert due(db)["INV-2"] == Decimal("150.00")
    assert debts(rt, "C002") == {"INV-2": Decimal("150.00")}
    pay(rt, "C002")
    assert due(db).get("INV-2", Decimal(0)) == 0


def test_one_link_paying_two_invoices_is_one_payment_on_each(rt: Runtime, db: str) -> None:
    pay(rt, "C001")  # INV-1 and INV-3: 160.00
    left = due(db)
    assert left.get("INV-1", Decimal(0)) == 0 and left.get("INV-3", Decimal(0)) == 0
    with company(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM payment").fetchone() == (2,)


def test_a_charge_back_is_reversed_by_payment_reverse(rt: Runtime, db: str) -> None:
    ref = pay(rt, "C001", statements={"INV-1": "100.00"})
    sandbox.charge_back(rt.settings.home, ref)
    poll(rt)
    post_all(rt)
    assert due(db)["INV-1"] == Decimal("100.00")
    with company(db) as conn:  # LedgerSMB's own reversal: its lines say so, and no second payment was made
        assert conn.execute("SELECT COUNT(*) FROM acc_trans WHERE memo LIKE 'Reversing %'").fetchone() == (2,)
        assert conn.execute("SELECT COUNT(*) FROM payment").fetchone() == (1,)
    Syncer(rt.store, rt.connector).sync()
    assert debts(rt, "C001")["INV-1"] == Decimal("100.00")


def test_a_part_refund_is_a_negative_payment(rt: Runtime, db: str) -> None:
    ref = pay(rt, "C001", statements={"INV-1": "100.00"})
    rt.refunds.refund(ref, Decimal("30.00"), "overcharged", ADMIN)
    poll(rt)
    post_all(rt)
    assert due(db)["INV-1"] == Decimal("30.00")
    with company(db) as conn:  # a payment of -30.00, not a reversal of the whole
        assert conn.execute("SELECT COUNT(*) FROM payment").fetchone() == (2,)
        assert conn.execute("SELECT COUNT(*) FROM acc_trans WHERE memo LIKE 'Reversing %'").fetchone() == (0,)


def test_a_payment_into_a_closed_period_is_refused_by_ledgersmb_and_nothing_is_written(rt: Runtime, db: str) -> None:
    with company(db) as conn:
        conn.execute("INSERT INTO account_checkpoint (end_date, account_id, amount) "
                     "VALUES (DATE '2999-12-31', (SELECT id FROM account WHERE accno = '1200'), 0)")
    paid_link(rt, "C001", statements={"INV-1": "100.00"})
    post_all(rt)
    with rt.store.read() as conn:
        [row] = posting_rows(conn)
    assert row["state"] != "posted" and "closed period" in str(row["last_error"])
    assert "statement INV-1" in str(row["last_error"])
    assert due(db)["INV-1"] == Decimal("100.00")
    with company(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM payment").fetchone() == (0,)


def test_killed_while_writing_every_payment_is_posted_exactly_once(rt: Runtime, db: str) -> None:
    for _ in range(20):
        paid_link(rt, "C002", "10.00")
    assert post_while_killing(rt) >= 3, "the workers were hardly killed: the test proved nothing"
    assert due(db)["INV-2"] == Decimal("50.00")
    with company(db) as conn:  # acc_trans has no UNIQUE on source to hide a double
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT source) FROM acc_trans a JOIN account c ON "
                            "c.id = a.chart_id WHERE c.accno = '1200' AND a.source LIKE 'pay_%'").fetchone() == (20, 20)


def test_the_assistant_recognises_the_company_and_check_rehearses_every_statement(rt: Runtime, db: str) -> None:
    server = postgres_server()
    matches = recognise(read_catalog(url=f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{db}"))
    assert matches and matches[0].name == "LedgerSMB"
    assert [r for r in rt.connector.dry_run() if r.verdict != "ok"] == []
    with company(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM payment").fetchone() == (0,)  # the rehearsal was rolled back
