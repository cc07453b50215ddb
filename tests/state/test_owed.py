"""What is owed (agent.state.owed), read by links, Direct Debit planning, the manual Direct Debit check and
allocation alike: a payment taken by link is never collected again by Direct Debit while its posting waits, and a
refund raises what is owed by what went back instead of counting as an unposted payment."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from money_support import ADMIN, WORLDS, MoneyWorld, firm, paid, post_all, runtime_for
from sqlalchemy import select

from agent.core.errors import RuleError
from agent.engine.payments import EventPoller
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state.owed import matter_owed, statements_owed
from agent.state.schema import postings

DUE = dt.date.today() + dt.timedelta(days=10)
DD_MATTER = "M-DD"
DIRECT_DEBIT = sorted(name for name, world in WORLDS.items() if world.provider.capabilities.holds_collections)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The demo firm, and a payer of our own with one 50.00 bill due in ten days."""
    home = tmp_path / "home"
    init_home(home)
    with sqlite3.connect(home / "demo-firm.db") as conn:
        conn.execute("INSERT INTO clients (id, name, email) VALUES (90, 'Ada Direct', 'ada@example.com')")
        conn.execute("INSERT INTO payers (id, client_id, name, email) VALUES (90, 90, 'Ada Direct', 'ada@example.com')")
        conn.execute("INSERT INTO matters (id, matter_no, title, client_id, payer_id) VALUES (900, ?, 'Lease', 90, 90)",
                     (DD_MATTER,))
        conn.execute("INSERT INTO bills (bill_no, matter_id, issued_on, due_on, total_pence, balance_pence) "
                     "VALUES ('INV-DD', 900, ?, ?, 5000, 5000)", ((DUE - dt.timedelta(days=30)).isoformat(),
                                                                  DUE.isoformat()))
    return home


@pytest.fixture
def rt(home: Path, money: MoneyWorld) -> Iterator[Runtime]:
    runtime = runtime_for(home, money)
    yield runtime
    runtime.close()


def _owing_pence(home: Path, matter: str) -> int:
    [(pence,)] = firm(home, "SELECT sum(b.balance_pence) FROM bills b JOIN matters m ON m.id = b.matter_id "
                            f"WHERE m.matter_no = '{matter}'")
    return int(pence)


@pytest.mark.parametrize("money", DIRECT_DEBIT, indirect=True)
def test_a_bill_paid_by_link_is_not_collected_by_direct_debit_while_its_posting_waits(
        rt: Runtime, money: MoneyWorld, home: Path) -> None:
    money.activate_mandate(rt.directdebit.setup_mandate(ADMIN, "90").setup_ref)
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
    paid(rt, money, DD_MATTER, "50.00", "operating")
    with rt.store.read() as conn:  # the payment is recorded; its posting waits (the outbox has not run)
        assert conn.execute(select(postings.c.state, postings.c.amount)).all() == [("pending", Decimal("50.00"))]
        [bill] = matter_owed(conn, rt.links.defaults(DD_MATTER).matter_key).statements
        [owed] = statements_owed(conn, [bill])
    assert (owed.figures.open_balance, owed.figures.unposted_payments, owed.figures.amount) == (
        Decimal("50.00"), Decimal("50.00"), Decimal(0))

    result = rt.directdebit.schedule_collections()
    assert result.created == [] and rt.directdebit.list_collections() == []  # never charged twice
    assert rt.links.defaults(DD_MATTER).amount == Decimal(0)
    with pytest.raises(RuleError, match=r"in credit|nothing to collect"):
        rt.directdebit.request_manual(ADMIN, "INV-DD", Decimal("10.00"))

    post_all(rt)  # written into the firm's books, then read back: still nothing to collect, for the same reason
    Syncer(rt.store, rt.connector).sync()
    assert _owing_pence(home, DD_MATTER) == 0
    assert rt.directdebit.schedule_collections().created == []
    assert rt.links.defaults(DD_MATTER).amount == Decimal(0)


def test_a_refund_raises_what_is_owed_by_what_went_back(rt: Runtime, money: MoneyWorld, home: Path) -> None:
    matter = "M-2026-0010"
    ref = paid(rt, money, matter, "1000.00", "operating")
    post_all(rt)
    Syncer(rt.store, rt.connector).sync()
    owing = Decimal(_owing_pence(home, matter)) / 100
    before = rt.links.defaults(matter)
    assert (before.amount, before.unposted_payments, before.unposted_reversals) == (owing, Decimal(0), Decimal(0))

    rt.refunds.refund(ref, Decimal("100.00"), "overcharged", ADMIN)
    waiting = rt.links.defaults(matter)  # the reversal is not in the firm's books yet: the 100.00 is owed again
    assert (waiting.unposted_payments, waiting.unposted_reversals) == (Decimal(0), Decimal("100.00"))
    assert waiting.amount == owing + Decimal("100.00")

    post_all(rt)
    Syncer(rt.store, rt.connector).sync()
    assert Decimal(_owing_pence(home, matter)) / 100 == owing + Decimal("100.00")
    after = rt.links.defaults(matter)
    assert (after.amount, after.unposted_payments, after.unposted_reversals) == (
        owing + Decimal("100.00"), Decimal(0), Decimal(0))


def test_client_money_never_counts_as_paying_an_office_bill(rt: Runtime, money: MoneyWorld) -> None:
    """A trust payment on a matter is the client's money on account: the office bills still owe all they did."""
    matter = "M-2026-0010"
    before = rt.links.defaults(matter, "operating")
    paid(rt, money, matter, "300.00", "trust")
    waiting = rt.links.defaults(matter, "operating")
    assert (waiting.amount, waiting.unposted_payments) == (before.amount, Decimal(0))
    post_all(rt)
    assert rt.links.defaults(matter, "operating").amount == before.amount
