"""Client money end to end on the demo firm: trust payments to the client ledger, fees to the office side, payouts
reconciled to the penny, the net-of-fees breach, refunds.

The provider is a fixture parameter (``money``): each ``MoneyWorld`` plays the payer and the provider's back office
for one provider. Only the embedded sandbox is here today; the GoCardless and Stripe fakes join by adding a world
and a parameter, and every test below runs against them unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import pytest
from sqlalchemy import select

from agent.cli.doctor import diagnose
from agent.cli.main import main
from agent.core.errors import RuleError, TransientError
from agent.core.model import Actor
from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state.schema import postings
from connectors.providers import sandbox

TRUST_MATTER, TRUST_MATTER_ID = "M-2026-0010", 10
OFFICE_MATTERS = ("M-2026-0011", "M-2026-0020", "M-2026-0030")
ADMIN = Actor("user", "bookkeeper")


class MoneyWorld(Protocol):
    """One provider as the tests need it: the payer, the banks and the provider's settings."""

    def configure(self, config: str, *, trust_net: bool) -> str:
        """The demo ledgerlink.toml rewritten for this provider (its accounts; the trust account paid out net
        of fees when ``trust_net``)."""

    def pay(self, rt: Runtime, link_ref: str, method: str) -> str:
        """Pay a link as the payer; returns the provider's payment ref."""

    def charge_back(self, payment_ref: str) -> None: ...

    def pay_out(self) -> None:
        """The provider's end of day: pay every account out."""

    def activate_mandate(self, setup_ref: str) -> None:
        """The payer finishes the provider's mandate flow."""

    def collect(self, collection_ref: str) -> None:
        """The banks take a Direct Debit collection: submitted, then confirmed."""

    def fail_payout(self, payout_ref: str) -> None:
        """The firm's bank returns a payout; its money goes back to the provider's balance."""


class SandboxMoney:
    def __init__(self, home: Path) -> None:
        self.home = home

    def configure(self, config: str, *, trust_net: bool) -> str:
        return config.replace('payout_fees = "gross"', 'payout_fees = "net"') if trust_net else config

    def pay(self, rt: Runtime, link_ref: str, method: str) -> str:
        return sandbox.pay(self.home, link_ref, method=method)

    def charge_back(self, payment_ref: str) -> None:
        sandbox.charge_back(self.home, payment_ref)

    def pay_out(self) -> None:
        sandbox.pay_out(self.home)

    def activate_mandate(self, setup_ref: str) -> None:
        sandbox.set_mandate(self.home, setup_ref, "active")

    def collect(self, collection_ref: str) -> None:
        for status in ("submitted", "confirmed"):
            sandbox.set_collection(self.home, collection_ref, status)

    def fail_payout(self, payout_ref: str) -> None:
        sandbox.fail_payout(self.home, payout_ref)


WORLDS = {"sandbox": SandboxMoney}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    init_home(home)
    return home


@pytest.fixture(params=sorted(WORLDS))
def money(request: pytest.FixtureRequest, home: Path) -> MoneyWorld:
    world: MoneyWorld = WORLDS[request.param](home)
    return world


def _runtime(home: Path, money: MoneyWorld, *, trust_net: bool = False) -> Runtime:
    config = home / "ledgerlink.toml"
    config.write_text(money.configure(config.read_text(), trust_net=trust_net))
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    Syncer(rt.store, rt.connector).sync()
    return rt


@pytest.fixture
def rt(home: Path, money: MoneyWorld) -> Iterator[Runtime]:
    runtime = _runtime(home, money)
    yield runtime
    runtime.close()


def firm(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "demo-firm.db") as conn:
        return conn.execute(sql).fetchall()


def paid(rt: Runtime, money: MoneyWorld, matter: str, amount: str, account: str, method: str = "card") -> str:
    link = rt.links.create(ADMIN, LinkRequest(matter=matter, amount=Decimal(amount), account=account))
    assert link.provider_ref is not None
    ref = money.pay(rt, link.provider_ref, method)
    EventPoller(rt.store, rt.provider(account), account, retry_initial=0.01).poll()
    return ref


def post_all(rt: Runtime) -> None:
    rt.outbox.reversal_wait = dt.timedelta(0)
    for _ in range(5):  # a reversal waits for its original: a few passes settle everything
        if not rt.outbox.run_once():
            return


def test_trust_payment_posts_gross_to_the_client_ledger_and_its_fee_to_operating(
        rt: Runtime, money: MoneyWorld, home: Path) -> None:
    bills_before = firm(home, "SELECT bill_no, balance_pence FROM bills ORDER BY bill_no")
    trust_ref = paid(rt, money, TRUST_MATTER, "300.00", "trust", "card")
    office_ref = paid(rt, money, OFFICE_MATTERS[0], "100.00", "operating", "card")
    money.pay_out()
    result = rt.payouts.sync()
    post_all(rt)

    assert firm(home, "SELECT matter_id, amount_pence, entry FROM client_ledger") == [
        (TRUST_MATTER_ID, 30000, "payment")]  # gross, on account for the matter
    trust_bills = [b for b in bills_before if b[0] in ("INV-1001", "INV-1002")]
    assert [b for b in firm(home, "SELECT bill_no, balance_pence FROM bills ORDER BY bill_no")
            if b[0] in ("INV-1001", "INV-1002")] == trust_bills  # never allocated to an office bill
    assert result.breaches == [] and rt.payouts.breaches() == []
    trust = rt.payouts.listing("trust")
    assert [(p.amount, p.fees) for p in trust] == [(Decimal("300.00"), Decimal(0))]
    [office] = rt.payouts.listing("operating")
    shown = rt.payouts.show(office.payout_ref)
    fees = {i.payment_ref: i.amount for i in shown.items if i.kind == "fee"}
    assert fees == {trust_ref: Decimal("-4.70"), office_ref: Decimal("-1.70")}  # 1.5% + 0.20 each
    assert firm(home, "SELECT account, amount_pence FROM office_expenses") == [("operating", 640)]
    assert sorted(firm(home, "SELECT account, amount_pence FROM bank_deposits")) == [
        ("operating", 9360), ("trust", 30000)]


def test_a_net_of_fees_trust_payout_raises_the_breach_with_the_exact_amount(
        home: Path, money: MoneyWorld, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    rt = _runtime(home, money, trust_net=True)
    try:
        paid(rt, money, TRUST_MATTER, "250.00", "trust", "card")
        money.pay_out()
        with caplog.at_level(logging.ERROR, logger="ledgerlink.payouts"):
            result = rt.payouts.sync()
        post_all(rt)
        [breach] = result.breaches
        assert (breach.account, breach.fees_account, breach.amount) == ("trust", "operating", Decimal("3.95"))
        assert "transfer GBP 3.95 from 'operating' to 'trust'" in caplog.text
        assert rt.payouts.breaches() == [breach]  # stands until a person clears it
        assert firm(home, "SELECT from_account, to_account, amount_pence FROM transfer_requests") == [
            ("operating", "trust", 395)]
        assert firm(home, "SELECT account, amount_pence FROM office_expenses") == [("operating", 395)]
        assert firm(home, "SELECT amount_pence FROM client_ledger") == [(25000,)]  # the client's money, gross
        assert any(f.verdict == "fail" and "3.95" in f.detail for f in diagnose(rt))
    finally:
        rt.close()
    assert main(["--home", str(home), "payouts", "list"]) == 0
    assert "3.95 short: BREACH" in capsys.readouterr().out
    payout = json.loads(_cli(home, capsys, "payouts", "list", "--json")[1])[0]["id"]
    assert _cli(home, capsys, "payouts", "clear", payout, "--note", "transfer FT123")[0] == 0
    assert json.loads(_cli(home, capsys, "payouts", "list", "--json")[1])[0]["breach_cleared_at"]


def _cli(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--home", str(home), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_day_of_payments_fees_a_refund_and_a_chargeback_reconciles_to_the_penny(
        rt: Runtime, money: MoneyWorld, home: Path) -> None:
    card = paid(rt, money, OFFICE_MATTERS[0], "120.00", "operating", "card")
    bank = paid(rt, money, OFFICE_MATTERS[1], "80.00", "operating", "bank")
    assert bank != card
    disputed = paid(rt, money, OFFICE_MATTERS[2], "45.50", "operating", "card")
    post_all(rt)
    refund = rt.refunds.refund(card, Decimal("20.00"), "overcharged", ADMIN)
    assert (refund.status, refund.actor) == ("succeeded", "user:bookkeeper")
    money.charge_back(disputed)
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
    money.pay_out()
    rt.payouts.sync()
    post_all(rt)

    [payout] = rt.payouts.listing("operating")
    shown = rt.payouts.show(payout.payout_ref)
    assert shown.adds_up and shown.items_total == shown.amount
    kinds = sorted((i.kind, i.amount) for i in shown.items)
    assert kinds == sorted([("payment", Decimal("120.00")), ("payment", Decimal("80.00")),
                            ("payment", Decimal("45.50")), ("fee", Decimal("-2.00")), ("fee", Decimal("-0.80")),
                            ("fee", Decimal("-0.88")), ("refund", Decimal("-20.00")),
                            ("chargeback", Decimal("-45.50"))])
    assert payout.amount == Decimal("176.32")
    [refund_line] = [i for i in shown.items if i.kind == "refund"]
    assert refund_line.refund is not None and refund.id in refund_line.refund  # the refund on its payout
    assert firm(home, "SELECT amount_pence FROM bank_deposits") == [(17632,)]  # the bank credit, to the penny
    assert firm(home, "SELECT amount_pence FROM office_expenses") == [(368,)]
    receipts = sorted(r[0] for r in firm(home, "SELECT amount_pence FROM receipts"))
    assert receipts == sorted([12000, 8000, 4550, -2000, -4550])  # refund and chargeback reversed once each


def test_a_refund_over_what_is_left_is_refused(rt: Runtime, money: MoneyWorld, home: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ref = paid(rt, money, OFFICE_MATTERS[0], "60.00", "operating", "card")
    rt.refunds.refund(ref, Decimal("50.00"), "most of it", ADMIN)
    rt.close()
    code, _, err = _cli(home, capsys, "payments", "refund", ref, "--amount", "10.01", "--reason", "too much")
    assert code == 2
    assert err.strip().count("\n") == 0 and "at most 10.00 GBP" in err and "Traceback" not in err
    code, out, _ = _cli(home, capsys, "payments", "refund", ref, "--reason", "the rest", "--json")
    assert code == 0 and json.loads(out)["amount"] == "10.00"
    assert _cli(home, capsys, "payments", "refund", ref, "--amount", "0.01", "--reason", "more")[0] == 2


def test_the_mapping_check_refuses_a_trust_account_without_postings_trust(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mapping = home / "mapping.yaml"
    text = mapping.read_text()
    mapping.write_text(text[:text.index("  # Client money")] + text[text.index("requests:"):])
    code, _, err = _cli(home, capsys, "mapping", "check", str(mapping))
    assert code == 2
    assert f"{mapping}:" in err and "postings: account(s) 'trust' are trust (client) accounts" in err
    assert "add 'trust:' under postings" in err


def test_direct_debit_on_a_trust_account_is_client_money_and_a_payer_in_credit_gets_no_collection(
        home: Path, money: MoneyWorld) -> None:
    due = dt.date.today() + dt.timedelta(days=10)
    with sqlite3.connect(home / "demo-firm.db") as conn:
        conn.execute("INSERT INTO clients (id, name, email) VALUES (90, 'Ada Direct', 'ada@example.com')")
        conn.execute("INSERT INTO payers (id, client_id, name, email) VALUES (90, 90, 'Ada Direct', 'ada@example.com')")
        conn.execute("INSERT INTO matters (id, matter_no, title, client_id, payer_id) VALUES (900, 'M-DD', 'Lease', "
                     "90, 90)")
        conn.execute("INSERT INTO bills (bill_no, matter_id, issued_on, due_on, total_pence, balance_pence) VALUES "
                     "('INV-DD', 900, ?, ?, 3000, 3000)", ((due - dt.timedelta(days=30)).isoformat(), due.isoformat()))
        conn.execute("INSERT INTO clients (id, name, email) VALUES (91, 'Cal Credit', 'cal@example.com')")
        conn.execute("INSERT INTO payers (id, client_id, name, email) VALUES (91, 91, 'Cal Credit', 'cal@example.com')")
        conn.execute("INSERT INTO matters (id, matter_no, title, client_id, payer_id) VALUES (910, 'M-CR', 'Sale', "
                     "91, 91)")
        conn.execute("INSERT INTO bills (bill_no, matter_id, issued_on, due_on, total_pence, balance_pence) VALUES "
                     "('CN-CR', 910, '2026-01-01', '2026-01-31', -5000, -5000), "
                     "('INV-CR', 910, ?, ?, 2000, 2000)", ((due - dt.timedelta(days=30)).isoformat(), due.isoformat()))
    rt = _runtime(home, money)
    try:
        trust_poller = EventPoller(rt.store, rt.provider("trust"), "trust", retry_initial=0.01)
        for payer in ("90", "91"):
            money.activate_mandate(rt.directdebit.setup_mandate(ADMIN, payer, "trust").setup_ref)
        trust_poller.poll()
        assert len(rt.directdebit.schedule_collections().created) == 1  # the payer in credit: no collection
        [made] = rt.directdebit.list_collections()
        assert (made.statement_key, made.amount, made.account) == (_bill_key(home, "INV-DD"), Decimal("30.00"),
                                                                   "trust")
        assert made.provider_ref is not None
        money.collect(made.provider_ref)
        trust_poller.poll()
        post_all(rt)
        assert firm(home, "SELECT matter_id, amount_pence FROM client_ledger") == [(900, 3000)]
        assert firm(home, "SELECT count(*) FROM receipts") == [(0,)]  # never a receipt against the office bill
        assert firm(home, "SELECT balance_pence FROM bills WHERE bill_no = 'INV-DD'") == [(3000,)]
        with rt.store.read() as conn:  # and nothing at all for the payer in credit
            assert conn.execute(select(postings.c.id).where(postings.c.matter_key == "910")).all() == []
        money.pay_out()
        rt.payouts.sync()
        [payout] = rt.payouts.listing("trust")
        assert (payout.amount, payout.fees, payout.shortfall) == (Decimal("30.00"), Decimal(0), None)
    finally:
        rt.close()


def _bill_key(home: Path, number: str) -> str:
    return str(firm(home, f"SELECT id FROM bills WHERE bill_no = '{number}'")[0][0])


def test_one_account_whose_payouts_fail_does_not_stop_the_others(rt: Runtime, money: MoneyWorld,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    paid(rt, money, TRUST_MATTER, "80.00", "trust", "card")
    money.pay_out()

    def down(_since: object) -> None:
        raise TransientError("503 from the provider")

    monkeypatch.setattr(rt.provider("operating"), "payouts", down)
    rt.payouts.attempts = 1
    with pytest.raises(TransientError, match="operating: 503"):
        rt.payouts.sync()
    assert [p.amount for p in rt.payouts.listing("trust")] == [Decimal("80.00")]
    status = rt.store.component_status()
    assert "503" in status["payouts:operating"]["last_error"] and status["payouts:trust"]["last_ok_at"]


def test_a_payout_the_bank_returns_is_reversed_and_its_money_posted_once_with_the_next(
        rt: Runtime, money: MoneyWorld, home: Path) -> None:
    paid(rt, money, OFFICE_MATTERS[0], "100.00", "operating", "card")
    money.pay_out()
    rt.payouts.sync()
    post_all(rt)
    [first] = rt.payouts.listing("operating")
    money.fail_payout(first.payout_ref)
    assert rt.payouts.sync().updated == 1
    post_all(rt)
    assert sorted(firm(home, "SELECT amount_pence FROM bank_deposits")) == [(-9830,), (9830,)]  # in, then out
    money.pay_out()
    rt.payouts.sync()
    post_all(rt)
    statuses = sorted((p.status, p.amount) for p in rt.payouts.listing("operating"))
    assert statuses == [("failed", Decimal("98.30")), ("paid", Decimal("98.30"))]
    assert sum(r[0] for r in firm(home, "SELECT amount_pence FROM bank_deposits")) == 9830  # one bank credit
    assert sum(r[0] for r in firm(home, "SELECT amount_pence FROM office_expenses")) == 170  # the fee, once


def test_client_money_with_no_matter_waits_for_a_person_and_never_goes_to_an_office_bill(
        rt: Runtime, money: MoneyWorld) -> None:
    link = rt.links.create(ADMIN, LinkRequest(amount=Decimal("75.00"), name="Ann Lee", email="ann@example.com",
                                       account="trust"))
    assert link.provider_ref is not None
    money.pay(rt, link.provider_ref, "card")
    EventPoller(rt.store, rt.provider("trust"), "trust", retry_initial=0.01).poll()
    with rt.store.read() as conn:
        [row] = conn.execute(select(postings)).mappings().all()
    assert (row["state"], row["section"], row["statement_key"]) == ("incomplete", "trust", None)
    assert "client money with no matter" in row["note"]
    with pytest.raises(RuleError, match="client money: it belongs on a matter's client ledger"):
        rt.outbox.reallocate(ADMIN, row["id"], {"1": Decimal("75.00")})
