"""Client money end to end on the demo firm: trust payments to the client ledger, fees to the office side, payouts
reconciled to the penny, the net-of-fees breach, refunds.

The provider is a fixture parameter (``money``): each ``MoneyWorld`` plays the payer and the provider's back office
for one provider: the embedded sandbox, and the GoCardless and Stripe fakes (tests/fakes), one fake server per
merchant account as each account is its own creditor or Stripe account. Fee figures are computed from the fee
schedule each provider documents (as its fake or the sandbox implements it), never copied from one provider.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest
from fakes.gocardless_api import FakeGoCardless
from fakes.stripe_api import FakeStripe
from sqlalchemy import select

from agent.cli.doctor import diagnose
from agent.cli.main import main
from agent.core.errors import RuleError, TransientError
from agent.core.model import Actor
from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.home.secrets import env_name
from agent.runtime import Runtime
from agent.state.schema import postings
from connectors.providers import sandbox

TRUST_MATTER, TRUST_MATTER_ID = "M-2026-0010", 10
OFFICE_MATTERS = ("M-2026-0011", "M-2026-0020", "M-2026-0030")
ADMIN = Actor("user", "bookkeeper")


PENNY = Decimal("0.01")


class MoneyWorld(Protocol):
    """One provider as the tests need it: the payer, the banks and the provider's settings and fee schedule."""

    name: ClassVar[str]
    fees_billed_apart: ClassVar[bool]  # a gross account's fees are invoiced, in no payout (else the fees_account's)
    repays_failed_payout: ClassVar[bool]  # a returned payout's money is paid out again with the next one
    holds_mandates: ClassVar[bool]

    def secrets(self) -> dict[str, str]:
        """Secret name -> value the configured accounts refer to (set in the environment)."""

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
        """The firm's bank returns a payout."""

    def fee(self, amount: str, method: str) -> Decimal:
        """The provider's fee on one payment, exactly as its schedule gives it (a tenth of a penny at GoCardless)."""

    def chargeback_fees(self, amount: str) -> list[Decimal]:
        """Fees a chargeback of a paid-out payment adds (positive) or gives back (negative)."""

    def paid_out(self, gross: Decimal, fees: list[Decimal]) -> Decimal:
        """What a payout of ``gross`` less exactly ``fees`` credits to the bank, rounded as the provider does."""

    def close(self) -> None: ...


class SandboxMoney:
    name = "sandbox"
    fees_billed_apart = False  # charged to the fees_account's payout
    repays_failed_payout = True
    holds_mandates = True

    def __init__(self, home: Path) -> None:
        self.home = home

    def secrets(self) -> dict[str, str]:
        return {}

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

    def fee(self, amount: str, method: str) -> Decimal:
        return sandbox.money.fee_for(Decimal(amount), "GBP", method)  # the schedule in sandbox/money.py

    def chargeback_fees(self, amount: str) -> list[Decimal]:
        return []  # the sandbox keeps the payment's fee and charges none for the dispute

    def paid_out(self, gross: Decimal, fees: list[Decimal]) -> Decimal:
        return gross - sum(fees, Decimal(0))

    def close(self) -> None:
        """Nothing to stop: the sandbox lives in the home's sandbox.db."""


class FakeMoney:
    """A provider played by one fake server per account; ``trust_net`` chooses how the trust server settles."""

    name: ClassVar[str]
    fees_billed_apart = True  # settle(gross=True): the fees are invoiced (GoCardless) or billed separately (Stripe)
    repays_failed_payout: ClassVar[bool]
    holds_mandates: ClassVar[bool]

    def __init__(self, home: Path) -> None:
        self.apis = {"operating": self.server(1), "trust": self.server(10**6)}
        for api in self.apis.values():
            api.start()
        self.trust_net = False

    @staticmethod
    def server(ids_from: int) -> FakeGoCardless | FakeStripe:
        raise NotImplementedError

    def secrets(self) -> dict[str, str]:
        return {f"{self.name}-{account}": f"token-{account}" for account in self.apis}

    def configure(self, config: str, *, trust_net: bool) -> str:
        self.trust_net = trust_net
        for account, api in self.apis.items():
            config = re.sub(rf'(\[accounts\.{account}\]\n(?:[^\[]*?\n)?)provider = "sandbox"\n',
                            rf'\1provider = "{self.name}"\napi_base = "{api.url}"\n'
                            rf'credentials = "secret:{self.name}-{account}"\n', config)
        assert config.count(f'provider = "{self.name}"') == 2, config
        return config

    def _api(self, ref: str) -> Any:
        [api] = [a for a in self.apis.values() if self.knows(a, ref)]
        return api

    @staticmethod
    def knows(api: Any, ref: str) -> bool:
        raise NotImplementedError

    def pay(self, rt: Runtime, link_ref: str, method: str) -> str:
        return str(self._api(link_ref).pay(link_ref, None, True))

    def charge_back(self, payment_ref: str) -> None:
        self._api(payment_ref).charge_back(payment_ref)

    def pay_out(self) -> None:
        for account, api in self.apis.items():
            if api.owes():  # neither provider pays out an empty balance
                api.settle(account == "trust" and not self.trust_net)

    def fail_payout(self, payout_ref: str) -> None:
        self._api(payout_ref).fail_payout(payout_ref)

    def close(self) -> None:
        for api in self.apis.values():
            api.stop()


class GoCardlessMoney(FakeMoney):
    """Instant Bank Pay and Direct Debit; the fee is the fake's (tests/fakes/gocardless_api.py): 1% + 20p plus 20%
    VAT, each to a tenth of a penny, a payout's sum rounded to the penny."""

    name = "gocardless"
    repays_failed_payout = False  # a bounced payout is GoCardless's to re-send; the fake does not (Payout.cs)
    holds_mandates = True

    @staticmethod
    def server(ids_from: int) -> FakeGoCardless:
        return FakeGoCardless(ids_from)

    @staticmethod
    def knows(api: Any, ref: str) -> bool:
        return ref in api.billing_requests or ref in api.payments or ref in api.payouts

    def activate_mandate(self, setup_ref: str) -> None:
        api = self._api(setup_ref)
        api.set_mandate(api.complete_mandate_flow(setup_ref), "active")

    def collect(self, collection_ref: str) -> None:
        for status in ("submitted", "confirmed"):
            self._api(collection_ref).set_payment(collection_ref, status)

    def fee(self, amount: str, method: str) -> Decimal:
        fee, vat = FakeGoCardless.fee(int(Decimal(amount) * 100))
        return (fee + vat) / 100

    def chargeback_fees(self, amount: str) -> list[Decimal]:
        return [-self.fee(amount, "bank")]  # given back (PayoutItem.cs: credits on a chargeback)

    def paid_out(self, gross: Decimal, fees: list[Decimal]) -> Decimal:
        return (gross - sum(fees, Decimal(0))).quantize(PENNY, ROUND_HALF_UP)


class StripeMoney(FakeMoney):
    """Checkout; the fee is the fake's (tests/fakes/stripe_api.py, Stripe's UK prices): 1.5% + 20p on every
    charge, GBP 20 a dispute."""

    name = "stripe"
    repays_failed_payout = True  # a payout_failure transaction returns the money to the balance
    holds_mandates = False

    @staticmethod
    def server(ids_from: int) -> FakeStripe:
        return FakeStripe(ids_from)

    @staticmethod
    def knows(api: Any, ref: str) -> bool:
        return (ref in api.sessions or ref in api.payouts
                or any(s["payment_intent"] == ref for s in api.sessions.values()))

    def activate_mandate(self, setup_ref: str) -> None:
        raise AssertionError("Stripe holds no mandates")

    def collect(self, collection_ref: str) -> None:
        raise AssertionError("Stripe holds no mandates")

    def fee(self, amount: str, method: str) -> Decimal:
        return ((Decimal(amount) * Decimal("0.015")).quantize(PENNY, ROUND_HALF_UP) + Decimal("0.20"))

    def chargeback_fees(self, amount: str) -> list[Decimal]:
        return [Decimal("20.00")]  # the dispute fee; the charge's own fee is not given back

    def paid_out(self, gross: Decimal, fees: list[Decimal]) -> Decimal:
        return gross - sum(fees, Decimal(0))


WORLDS: dict[str, type[SandboxMoney] | type[GoCardlessMoney] | type[StripeMoney]] = {
    "sandbox": SandboxMoney, "gocardless": GoCardlessMoney, "stripe": StripeMoney}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    init_home(home)
    return home


@pytest.fixture(params=sorted(WORLDS))
def money(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MoneyWorld]:
    world: MoneyWorld = WORLDS[request.param](home)
    for name, value in world.secrets().items():
        monkeypatch.setenv(env_name(name), value)  # credentials by reference, never in the config file
    yield world
    world.close()


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
    assert shown.adds_up
    fees = {i.payment_ref: i.amount for i in shown.items if i.kind == "fee"}
    expected = {office_ref: -money.fee("100.00", "card")}  # whole pence at every provider for these amounts
    if not money.fees_billed_apart:  # the trust payment's fee is charged to the operating payout
        expected[trust_ref] = -money.fee("300.00", "card")
    assert fees == expected
    fee_pence = -int(sum(expected.values()) * 100)
    assert firm(home, "SELECT account, amount_pence FROM office_expenses") == [("operating", fee_pence)]
    assert sorted(firm(home, "SELECT account, amount_pence FROM bank_deposits")) == [
        ("operating", 10000 - fee_pence), ("trust", 30000)]


def test_a_net_of_fees_trust_payout_raises_the_breach_with_the_exact_amount(
        home: Path, money: MoneyWorld, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    rt = _runtime(home, money, trust_net=True)
    try:
        paid(rt, money, TRUST_MATTER, "250.00", "trust", "card")
        money.pay_out()
        with caplog.at_level(logging.ERROR, logger="ledgerlink.payouts"):
            result = rt.payouts.sync()
        post_all(rt)
        short = Decimal(250) - money.paid_out(Decimal(250), [money.fee("250.00", "card")])
        assert short > 0
        [breach] = result.breaches
        assert (breach.account, breach.fees_account, breach.amount) == ("trust", "operating", short)
        assert f"transfer GBP {short} from 'operating' to 'trust'" in caplog.text
        assert rt.payouts.breaches() == [breach]  # stands until a person clears it
        pence = int(short * 100)
        assert firm(home, "SELECT from_account, to_account, amount_pence FROM transfer_requests") == [
            ("operating", "trust", pence)]
        assert firm(home, "SELECT account, amount_pence FROM office_expenses") == [("operating", pence)]
        assert firm(home, "SELECT amount_pence FROM client_ledger") == [(25000,)]  # the client's money, gross
        assert any(f.verdict == "fail" and str(short) in f.detail for f in diagnose(rt))
    finally:
        rt.close()
    assert main(["--home", str(home), "payouts", "list"]) == 0
    assert f"{short} short: BREACH" in capsys.readouterr().out
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
    """Day one pays three payments out; on day two one is refunded in part, one charged back and a new one paid:
    each payout's items add up to its bank credit, exactly as the provider's fee schedule has it."""
    card = paid(rt, money, OFFICE_MATTERS[0], "120.00", "operating", "card")
    bank = paid(rt, money, OFFICE_MATTERS[1], "80.00", "operating", "bank")
    assert bank != card
    disputed = paid(rt, money, OFFICE_MATTERS[2], "45.50", "operating", "card")
    post_all(rt)
    money.pay_out()
    rt.payouts.sync()
    refund = rt.refunds.refund(card, Decimal("20.00"), "overcharged", ADMIN)
    assert refund.actor == "user:bookkeeper" and refund.status in ("pending", "succeeded")
    money.charge_back(disputed)
    fresh = paid(rt, money, OFFICE_MATTERS[0], "200.00", "operating", "bank")
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
    money.pay_out()
    rt.payouts.sync()
    post_all(rt)

    carries_card = {p.payout_ref: card in {i.payment_ref for i in rt.payouts.show(p.payout_ref).items
                                           if i.kind == "payment"} for p in rt.payouts.listing("operating")}
    [day_one] = [p for p in rt.payouts.listing("operating") if carries_card[p.payout_ref]]  # both may share a second
    [day_two] = [p for p in rt.payouts.listing("operating") if not carries_card[p.payout_ref]]
    day_one_fees = [money.fee("120.00", "card"), money.fee("80.00", "bank"), money.fee("45.50", "card")]
    assert day_one.amount == money.paid_out(Decimal("245.50"), day_one_fees)
    day_two_fees = [money.fee("200.00", "bank"), *money.chargeback_fees("45.50")]
    assert day_two.amount == money.paid_out(Decimal("200.00") - Decimal("20.00") - Decimal("45.50"), day_two_fees)
    for payout in (day_one, day_two):
        shown = rt.payouts.show(payout.payout_ref)
        assert shown.adds_up and shown.items_total == shown.amount
    shown = rt.payouts.show(day_two.payout_ref)
    named = sorted((i.kind, i.payment_ref, i.amount) for i in shown.items if i.kind in ("payment", "refund"))
    assert named == sorted([("payment", fresh, Decimal("200.00")), ("refund", card, Decimal("-20.00"))])
    assert [(i.payment_ref, i.amount) for i in shown.items if i.kind == "chargeback"] == [(disputed, Decimal("-45.50"))]
    [refund_line] = [i for i in shown.items if i.kind == "refund"]
    assert refund_line.refund is not None and refund.id in refund_line.refund  # the refund on its payout
    deposits = sorted(r[0] for r in firm(home, "SELECT amount_pence FROM bank_deposits"))
    assert deposits == sorted([int(day_one.amount * 100), int(day_two.amount * 100)])  # the bank credits
    fees = [p.fees for p in (day_one, day_two) if p.fees > 0]
    assert sorted(r[0] for r in firm(home, "SELECT amount_pence FROM office_expenses")) == sorted(
        int(f * 100) for f in fees)
    receipts = sorted(r[0] for r in firm(home, "SELECT amount_pence FROM receipts"))
    assert receipts == sorted([12000, 8000, 4550, 20000, -2000, -4550])  # refund and chargeback reversed once each


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
    if not money.holds_mandates:
        pytest.skip(f"{money.name} holds no mandates: Direct Debit is not offered there")
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
    net = money.paid_out(Decimal(100), [money.fee("100.00", "card")])
    assert first.amount == net
    pence = int(net * 100)
    assert sorted(firm(home, "SELECT amount_pence FROM bank_deposits")) == [(-pence,), (pence,)]  # in, then out
    if not money.repays_failed_payout:  # the money stays with the provider, to be sent again by it
        assert [p.status for p in rt.payouts.listing("operating")] == ["failed"]
        return
    money.pay_out()
    rt.payouts.sync()
    post_all(rt)
    statuses = sorted((p.status, p.amount) for p in rt.payouts.listing("operating"))
    assert statuses == [("failed", net), ("paid", net)]
    assert sum(r[0] for r in firm(home, "SELECT amount_pence FROM bank_deposits")) == pence  # one bank credit
    assert sum(r[0] for r in firm(home, "SELECT amount_pence FROM office_expenses")) == 10000 - pence  # once


def test_a_returned_net_trust_payout_keeps_its_fee_and_its_breach(home: Path, money: MoneyWorld) -> None:
    """The bank returning a payout gives back no fee: only the deposit is reversed, the client money is still
    short and the transfer request stands."""
    rt = _runtime(home, money, trust_net=True)
    try:
        paid(rt, money, TRUST_MATTER, "250.00", "trust", "card")
        money.pay_out()
        [breach] = rt.payouts.sync().breaches
        post_all(rt)
        money.fail_payout(breach.payout_ref)
        assert rt.payouts.sync().updated == 1
        post_all(rt)
        net = money.paid_out(Decimal(250), [money.fee("250.00", "card")])
        short = int((Decimal(250) - net) * 100)
        assert rt.payouts.breaches() == [breach]
        assert sorted(firm(home, "SELECT amount_pence FROM bank_deposits")) == [(-int(net * 100),), (int(net * 100),)]
        assert firm(home, "SELECT amount_pence FROM office_expenses") == [(short,)]
        assert firm(home, "SELECT amount_pence FROM transfer_requests") == [(short,)]
    finally:
        rt.close()


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
