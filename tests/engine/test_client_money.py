"""Client money end to end on the demo firm: trust payments to the client ledger, fees to the office side, payouts
reconciled to the penny, the net-of-fees breach, refunds.

The provider is a fixture parameter (``money``, tests/money_support.py): the embedded sandbox, and the GoCardless
and Stripe fakes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from money_support import (
    ADMIN,
    OFFICE_MATTERS,
    TRUST_MATTER,
    TRUST_MATTER_ID,
    MoneyWorld,
    firm,
    paid,
    post_all,
    runtime_for,
)
from sqlalchemy import select
from tests_support import bearer

from agent.api.app import serve_api
from agent.cli.doctor import diagnose
from agent.cli.main import main
from agent.core.errors import ConfigurationError, RuleError, TransientError
from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.runtime import Runtime
from agent.state.schema import audit_log, payments, postings
from postings.queries import posting_rows

ZERO = Decimal(0)


@pytest.fixture
def rt(home: Path, money: MoneyWorld) -> Iterator[Runtime]:
    runtime = runtime_for(home, money)
    yield runtime
    runtime.close()


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


def test_a_payout_posting_is_shown_by_the_cli_as_the_api_shows_it(
        rt: Runtime, money: MoneyWorld, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fees, deposit and transfer postings have no payment: ``postings show`` once crashed on them."""
    paid(rt, money, OFFICE_MATTERS[0], "100.00", "operating", "card")
    money.pay_out()
    rt.payouts.sync()
    post_all(rt)
    with rt.store.read() as conn:
        ids = conn.execute(select(postings.c.id).where(postings.c.payout_id.is_not(None))).scalars().all()
    assert ids
    server = serve_api(rt, "127.0.0.1", 0)
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {bearer(rt.store)}"}, timeout=10)
    for posting_id in ids:
        capsys.readouterr()
        assert main(["--home", str(home), "postings", "show", str(posting_id), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["payment"] is None and shown["posting"]["id"] == posting_id
        api = client.get(f"/postings/{posting_id}").json()
        assert [a["id"] for a in api["allocations"]] == [a["id"] for a in shown["allocations"]]
        assert main(["--home", str(home), "postings", "show", str(posting_id)]) == 0
        assert "postings of this payout:" in capsys.readouterr().out
    client.close()
    server.stop()


def test_a_net_of_fees_trust_payout_raises_the_breach_with_the_exact_amount(
        home: Path, money: MoneyWorld, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    rt = runtime_for(home, money, trust_net=True)
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
    rt = runtime_for(home, money)
    try:
        trust_poller = EventPoller(rt.store, rt.provider("trust"), "trust", retry_initial=0.01)
        for payer in ("90", "91"):
            money.activate_mandate(rt.directdebit.setup_mandate(ADMIN, payer, "trust").setup_ref)
        trust_poller.poll()
        if not money.provider.capabilities.holds_collections:  # Stripe: a saved card is never charged by itself
            assert rt.directdebit.schedule_collections().created == [] and rt.directdebit.list_collections() == []
            assert all(m.status == "active" for m in rt.directdebit.list_mandates())
            return
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
    rt = runtime_for(home, money, trust_net=True)
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


def test_a_refund_never_moves_the_payments_paid_time(rt: Runtime, money: MoneyWorld) -> None:
    """Paid at 15:41, refunded in part at 15:46: the receipt stays at 15:41 in every listing and in the books."""
    ref = paid(rt, money, OFFICE_MATTERS[0], "100.00", "operating", "card")
    post_all(rt)

    def times() -> tuple[Any, ...]:
        with rt.store.read() as conn:
            payment = conn.execute(select(payments).where(payments.c.payment_ref == ref)).mappings().one()
            posted = [p for p in posting_rows(conn) if p["payment_ref"] == ref and p["kind"] == "payment"]
        return payment["status"], payment["confirmed_at"], payment["status_at"], [p["status_at"] for p in posted]

    before = times()
    assert before[0] == "confirmed" and before[1] is not None
    payment_id = f"pay_{ref}"[:32]
    rt.refunds.refund(payment_id, Decimal("20.00"), "overcharged", ADMIN)
    poller = EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01)
    poller.poll()  # every event the provider has now, the refund's included
    poller.reconcile(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))  # the nightly re-read reports "now"
    post_all(rt)
    assert times() == before


def test_a_trust_link_is_never_answered_with_the_matters_office_link(rt: Runtime) -> None:
    """Link reuse matches the account asked for: each account has its own outstanding link on a matter."""
    office = rt.links.create(ADMIN, LinkRequest(matter=TRUST_MATTER, amount=Decimal("50.00"), account="operating"))
    trust = rt.links.create(ADMIN, LinkRequest(matter=TRUST_MATTER, amount=Decimal("2.00"), account="trust"))
    assert (trust.account, trust.amount, trust.existing) == ("trust", Decimal("2.00"), False)
    assert trust.id != office.id
    again = rt.links.create(ADMIN, LinkRequest(matter=TRUST_MATTER, amount=Decimal("2.00"), account="trust"))
    assert (again.id, again.existing) == (trust.id, True)
    open_trust = rt.links.defaults(TRUST_MATTER, "trust").existing
    assert open_trust is not None and open_trust.id == trust.id
    open_office = rt.links.defaults(TRUST_MATTER, "operating").existing
    assert open_office is not None and open_office.id == office.id


def test_client_money_stays_client_money_when_the_settings_change_under_it(
        home: Path, money: MoneyWorld, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A trust link sent, then the account's kind edited to operating: its payment still goes to the client
    ledger, new links in that account are refused until the kind is put back, and doctor says so."""
    rt = runtime_for(home, money)
    try:
        link = rt.links.create(ADMIN, LinkRequest(matter=TRUST_MATTER, amount=Decimal("300.00"), account="trust"))
        assert link.provider_ref is not None
    finally:
        rt.close()
    monkeypatch.setenv("LEDGERLINK_ACCOUNTS__TRUST__KIND", "operating")
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    try:
        assert rt.settings.account("trust").kind == "operating"
        with pytest.raises(ConfigurationError, match=r"account 'trust' is now kind 'operating'.*put its kind back"):
            rt.links.create(ADMIN, LinkRequest(matter=OFFICE_MATTERS[0], amount=Decimal("5.00"), account="trust"))
        assert any(f.verdict == "fail" and f.what == "account kind trust" for f in diagnose(rt))
        money.pay(rt, link.provider_ref, "card")
        EventPoller(rt.store, rt.provider("trust"), "trust", retry_initial=0.01).poll()
        post_all(rt)
        assert firm(home, "SELECT matter_id, amount_pence, entry FROM client_ledger") == [
            (TRUST_MATTER_ID, 30000, "payment")]
        with rt.store.read() as conn:
            assert conn.execute(select(payments.c.account_kind)).scalars().all() == ["trust"]
    finally:
        rt.close()


def _trust_quick_payment(rt: Runtime, money: MoneyWorld) -> tuple[str, int]:
    """A trust quick link paid: client money with no matter, one incomplete posting waiting for a person."""
    link = rt.links.create(ADMIN, LinkRequest(amount=Decimal("120.00"), name="Ada Payer", email="ada@example.com",
                                              account="trust"))
    assert link.provider_ref is not None
    ref = money.pay(rt, link.provider_ref, "card")
    EventPoller(rt.store, rt.provider("trust"), "trust", retry_initial=0.01).poll()
    with rt.store.read() as conn:
        [waiting] = [p for p in posting_rows(conn) if p["payment_ref"] == ref]
    assert (waiting["state"], waiting["section"], waiting["matter_key"]) == ("incomplete", "trust", None)
    return ref, waiting["id"]


def test_client_money_with_no_matter_goes_on_a_client_ledger_and_its_refund_follows(
        rt: Runtime, money: MoneyWorld, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, posting_id = _trust_quick_payment(rt, money)
    rt.refunds.refund(f"pay_{ref}"[:32], Decimal("20.00"), "paid too much", ADMIN)  # waits with it for a matter
    assert main(["--home", str(home), "postings", "assign", str(posting_id), "--matter", TRUST_MATTER]) == 0
    assert f"on the client ledger of matter {TRUST_MATTER}" in capsys.readouterr().out
    post_all(rt)
    assert sorted(firm(home, "SELECT matter_id, amount_pence FROM client_ledger")) == [
        (TRUST_MATTER_ID, -2000), (TRUST_MATTER_ID, 12000)]  # the money and its refund, once each
    with rt.store.read() as conn:
        assert conn.execute(select(audit_log.c.action).where(audit_log.c.action == "posting.assign")
                            ).scalars().all() == ["posting.assign"]
    with pytest.raises(RuleError, match="not client money waiting for a matter"):
        rt.outbox.assign(ADMIN, posting_id, TRUST_MATTER)  # once


def test_client_money_posted_by_hand_can_still_be_refunded(rt: Runtime, money: MoneyWorld) -> None:
    ref, posting_id = _trust_quick_payment(rt, money)
    rt.outbox.remove(ADMIN, posting_id, "posted by hand to the Smith client ledger")
    refund = rt.refunds.refund(f"pay_{ref}"[:32], None, "not needed after all", ADMIN)
    assert refund.amount == Decimal("120.00")
    with rt.store.read() as conn:
        [reversal] = [p for p in posting_rows(conn) if p["payment_ref"] == ref and p["kind"] == "reversal"]
    assert (reversal["state"], reversal["amount"]) == ("incomplete", Decimal("-120.00"))
    assert "post this refund by hand" in reversal["note"]


def test_an_empty_payouts_list_says_why_and_pay_out_now_is_the_sandbox_s(
    rt: Runtime, money: MoneyWorld, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 26: right after 'payouts sync' the list does not tell the reader to run it; it says there are none
    yet and why. 'payouts pay-out-now' pays the sandbox's settled payments out at once and reads them; a real
    provider is refused naming it, exit 2."""
    ref = paid(rt, money, OFFICE_MATTERS[0], "40.00", "operating")
    assert _cli(home, capsys, "payouts", "sync")[0] == 0
    code, out, _ = _cli(home, capsys, "payouts", "list")
    assert code == 0 and out.startswith("no payouts yet") and "run 'ledgerlink payouts sync'" not in out
    if money.name == "sandbox":
        assert "after midnight UTC" in out and "'ledgerlink payouts pay-out-now' pays out today's now" in out
    else:
        assert f"operating: {money.name} has paid nothing out" in out and "its own schedule" in out
    code, out, err = _cli(home, capsys, "payouts", "pay-out-now")
    if money.name == "sandbox":
        assert code == 0 and out.startswith("1 payout(s) made and read, 2 posting(s) queued"), out
        [payout] = json.loads(_cli(home, capsys, "payouts", "list", "--json")[1])
        items = json.loads(_cli(home, capsys, "payouts", "show", payout["id"], "--json")[1])["items"]
        assert {(i["kind"], i["amount"]) for i in items if i["payment_ref"] == ref} == {
            ("payment", "40.00"), ("fee", "-0.80")}
        assert _cli(home, capsys, "payouts", "pay-out-now")[1].startswith("nothing to pay out")
    else:
        assert code == 2 and "pay out now is for the sandbox only" in err
        assert f"operating ({money.name})" in err and "Traceback" not in err
    server = serve_api(rt, "127.0.0.1", 0)
    try:
        answer = httpx.post(f"{server.url}/payouts/pay-out-now", timeout=10,
                            headers={"Authorization": f"Bearer {bearer(rt.store, 'admin')}"})
    finally:
        server.stop()
    if money.name == "sandbox":
        assert answer.status_code == 200 and answer.json()["new"] == 0  # paid out above: nothing new
    else:
        assert answer.status_code == 422 and f"operating ({money.name})" in answer.text
