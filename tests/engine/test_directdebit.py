"""Direct Debit (direct-debit-payment-scenarios.txt): the article's three scenarios and our edges through the real
scheduling path on the demo firm and the sandbox, manual Direct Debit, pending collections, results as postings;
then what only GoCardless's requests show, against the local fake API (every provider's mandates, collections,
statuses and events are the Direct Debit kit's: tests/connectors/test_directdebit_contract.py)."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from directdebit_support import (
    DUE,
    MATTER,
    PAST,
    PAYER,
    TODAY,
    add_bill,
    at_sandbox,
    balance,
    firm,
    home_fixture,  # noqa: F401  (pytest fixture "home")
    poll,
    rt_fixture,  # noqa: F401  (pytest fixture "rt")
    set_balance,
    sync,
)
from fakes.gocardless_api import FakeGoCardless
from tests_support import STAFF, bearer

from agent.cli.main import main
from agent.core.errors import RuleError
from agent.core.model import MerchantAccount
from agent.engine import directdebit as dd
from agent.runtime import Runtime
from agent.state.schema import payments, postings
from connectors.providers import sandbox
from connectors.providers.contract import (
    EventKind,
    MandatePayer,
    MandateStatus,
)
from connectors.providers.gocardless import GoCardlessProvider
from connectors.testkit.provider import drain


def schedule(rt: Runtime) -> dd.ScheduleResult:
    sync(rt)
    return rt.directdebit.schedule_collections(TODAY)


def current(rt: Runtime) -> dict[str, dd.CollectionView]:
    return {c.statement_key: c for c in rt.directdebit.list_collections() if c.current}


def figures(rt: Runtime, key: str) -> dd.Payable:
    with rt.store.read() as conn:
        return next(p for p, _ in dd.plan(conn, PAYER, TODAY) if p.statement.key == key)


# --- the article's scenarios --------------------------------------------------------------------------------


def test_scenario_1_unpaid_balance_brought_forward_collects_the_invoice(rt: Runtime, home: Path) -> None:
    add_bill(home, "BF-1", 5000, PAST)  # already due and unpaid: brought forward, not collected again
    invoice = add_bill(home, "INV-1", 3000, DUE)
    result = schedule(rt)
    assert len(result.created) == 1
    c = current(rt)[invoice]
    assert (c.amount, c.charge_date, c.kind, c.status) == (Decimal("30.00"), DUE, "auto", "pending_submission")
    assert at_sandbox(home, c.provider_ref) == ("30.00", "pending_submission")
    f = figures(rt, invoice)
    assert (f.brought_forward, f.invoice, f.payable, f.auto) == (Decimal(50), Decimal(30), Decimal(80), Decimal(30))


def test_scenario_2_no_outstanding_balance_collects_the_invoice(rt: Runtime, home: Path) -> None:
    invoice = add_bill(home, "INV-2", 5000, DUE)
    schedule(rt)
    assert current(rt)[invoice].amount == Decimal("50.00")
    f = figures(rt, invoice)
    assert (f.brought_forward, f.payable, f.auto) == (Decimal(0), Decimal(50), Decimal(50))


def test_scenario_3_in_credit_collects_nothing_and_refuses_a_manual_amount(rt: Runtime, home: Path) -> None:
    add_bill(home, "CN-3", -12000, PAST)
    invoice = add_bill(home, "INV-3", 5000, DUE)
    assert schedule(rt).created == []
    assert current(rt) == {}
    f = figures(rt, invoice)
    assert (f.brought_forward, f.payable, f.auto) == (Decimal(-120), Decimal(-70), Decimal(0))
    with pytest.raises(RuleError, match="in credit"):
        rt.directdebit.request_manual(STAFF, "INV-3", Decimal("10.00"), TODAY)


# --- edges ----------------------------------------------------------------------------------------------------


def test_payable_between_zero_and_the_invoice_collects_the_payable(rt: Runtime, home: Path) -> None:
    add_bill(home, "CN-4", -2000, PAST)
    invoice = add_bill(home, "INV-4", 5000, DUE)
    schedule(rt)
    assert current(rt)[invoice].amount == Decimal("30.00")


def test_zero_invoice_collects_nothing(rt: Runtime, home: Path) -> None:
    add_bill(home, "BF-5", 5000, PAST)
    add_bill(home, "INV-5", 0, DUE)
    assert schedule(rt).created == []
    assert rt.directdebit.list_collections() == []


def test_credit_note_before_the_due_date_recomputes_and_credits_are_not_spent_twice(rt: Runtime, home: Path) -> None:
    first = add_bill(home, "INV-6", 5000, DUE)
    schedule(rt)
    old = current(rt)[first]
    assert old.amount == Decimal("50.00")
    add_bill(home, "CN-6", -2000, DUE)  # a credit note: never collected, lowers what is payable
    result = schedule(rt)
    assert result.recomputed == [old.id]
    assert current(rt)[first].amount == Decimal("30.00")
    assert at_sandbox(home, old.provider_ref) == ("50.00", "cancelled")
    old_now = rt.directdebit.get_collection(old.id)
    assert old_now.status == "cancelled" and not old_now.current
    second = add_bill(home, "INV-6B", 1500, DUE + dt.timedelta(days=1))
    schedule(rt)
    # 50 - 20 + 15 owing in all: the credit already lowered INV-6's collection, so INV-6B is collected in full.
    assert {k: c.amount for k, c in current(rt).items()} == {first: Decimal("30.00"), second: Decimal("15.00")}
    assert schedule(rt).created == []  # nothing changes on a rerun


def test_statement_changed_before_due_date_recomputes_until_submitted(rt: Runtime, home: Path) -> None:
    invoice = add_bill(home, "INV-7", 5000, DUE)
    schedule(rt)
    set_balance(home, invoice, 4000)
    schedule(rt)
    c = current(rt)[invoice]
    assert c.amount == Decimal("40.00") and c.provider_ref is not None
    sandbox.set_collection(home, c.provider_ref, "submitted")  # gone to the bank before we heard of it
    set_balance(home, invoice, 3500)
    result = schedule(rt)
    assert result.kept == [c.id] and result.created == []  # the provider refused the cancel: it stands
    assert (current(rt)[invoice].amount, current(rt)[invoice].status) == (Decimal("40.00"), "submitted")
    assert schedule(rt).kept == []  # known to be submitted now: not tried again
    with pytest.raises(RuleError, match="would not cancel"):
        rt.directdebit.cancel_collection(STAFF, c.id)


def test_staff_cancel_is_not_undone_by_the_scheduler(rt: Runtime, home: Path) -> None:
    invoice = add_bill(home, "INV-8", 5000, DUE)
    schedule(rt)
    c = rt.directdebit.cancel_collection(STAFF, current(rt)[invoice].id)
    assert c.status == "cancelled"
    assert schedule(rt).created == []


def test_statement_already_due_is_not_collected_automatically(rt: Runtime, home: Path) -> None:
    add_bill(home, "OLD-9", 5000, TODAY)
    assert schedule(rt).created == []


# --- manual Direct Debit ----------------------------------------------------------------------------------------


def test_manual_amount_before_due_date_replaces_the_automatic_collection(rt: Runtime, home: Path) -> None:
    add_bill(home, "BF-10", 5000, PAST)
    invoice = add_bill(home, "INV-10", 3000, DUE)
    schedule(rt)
    auto = current(rt)[invoice]
    manual = rt.directdebit.request_manual(STAFF, "INV-10", Decimal("60.00"), TODAY)  # any amount up to the payable 80
    assert (manual.kind, manual.amount, manual.status, manual.current) == ("manual", Decimal("60.00"),
                                                                            "pending_submission", True)
    assert at_sandbox(home, auto.provider_ref) == ("30.00", "cancelled")
    assert current(rt) == {invoice: manual}
    assert schedule(rt).created == []  # the scheduler leaves the payer's choice alone
    with pytest.raises(RuleError, match="at most the payable 80"):
        rt.directdebit.request_manual(STAFF, "INV-10", Decimal("80.01"), TODAY)


@pytest.mark.parametrize("day", [DUE, DUE + dt.timedelta(days=1)], ids=["on", "after"])
def test_manual_amount_on_or_after_due_date_is_refused(rt: Runtime, home: Path, day: dt.date) -> None:
    add_bill(home, "INV-11", 3000, DUE)
    schedule(rt)
    with pytest.raises(RuleError, match=f"was due on {DUE}: a manual Direct Debit must be requested before"):
        rt.directdebit.request_manual(STAFF, "INV-11", Decimal("10.00"), day)


# --- pending collections and results -----------------------------------------------------------------------------


def test_pending_collections_reduce_the_link_default(rt: Runtime, home: Path) -> None:
    invoice = add_bill(home, "INV-12", 3000, DUE)
    add_bill(home, "BF-12", 5000, PAST)
    schedule(rt)
    d = rt.links.defaults(MATTER)
    assert (d.open_balance, d.pending_collections, d.amount) == (Decimal("80.00"), Decimal("30.00"), Decimal("50.00"))
    assert [c.statement_key for c in rt.directdebit.list_collections(MATTER, pending=True)] == [invoice]
    c = current(rt)[invoice]
    assert c.provider_ref is not None
    sandbox.set_collection(home, c.provider_ref, "submitted")
    poll(rt)
    assert rt.links.defaults(MATTER).pending_collections == Decimal("30.00")
    sandbox.set_collection(home, c.provider_ref, "confirmed")
    poll(rt)
    assert rt.links.defaults(MATTER).pending_collections == 0  # paid: now an unposted posting, not pending


def test_paid_collection_is_posted_and_a_failure_after_confirmation_is_reversed(rt: Runtime, home: Path) -> None:
    from postings.outbox import Outbox

    invoice = add_bill(home, "INV-13", 3000, DUE)
    schedule(rt)
    ref = current(rt)[invoice].provider_ref
    assert ref is not None
    for status in ("submitted", "confirmed"):
        sandbox.set_collection(home, ref, status)
    poll(rt)
    assert rt.directdebit.get_collection(current(rt)[invoice].id).status == "confirmed"
    with rt.store.read() as conn:
        pay = conn.execute(payments.select().where(payments.c.payment_ref == ref)).mappings().one()
        rows = conn.execute(postings.select().where(postings.c.payment_id == pay["id"])).mappings().all()
    assert (pay["method"], pay["link_id"], pay["status"]) == ("direct_debit", None, "confirmed")
    assert [(r["statement_key"], r["amount"], r["state"]) for r in rows] == [(invoice, Decimal("30.00"), "pending")]
    outbox = Outbox(rt.store, rt.connector, rt.mapping)
    assert outbox.run_once().get("posted") == 1
    with firm(home) as conn:
        assert conn.execute("SELECT amount_pence, method FROM receipts WHERE reference = ?",
                            (f"{ref}:{invoice}",)).fetchone() == (3000, "direct_debit")
    assert balance(home, invoice) == 0

    sandbox.set_collection(home, ref, "failed")  # a late failure after confirmation
    poll(rt)
    assert outbox.run_once().get("posted") == 1
    with firm(home) as conn:
        assert conn.execute("SELECT amount_pence FROM receipts WHERE reference = ?",
                            (f"{ref}:{invoice}:R",)).fetchone() == (-3000,)
    assert balance(home, invoice) == 3000  # the statement owes again
    assert rt.directdebit.get_collection(current(rt)[invoice].id).status == "failed"


def test_mandate_cancelled_by_the_payer_cancels_unsubmitted_collections(rt: Runtime, home: Path) -> None:
    invoice = add_bill(home, "INV-14", 3000, DUE)
    schedule(rt)
    mandate = rt.directdebit.list_mandates()[0]
    sandbox.set_mandate(home, mandate.setup_ref, "cancelled")
    poll(rt)
    assert rt.directdebit.list_mandates()[0].status == "cancelled"
    assert rt.directdebit.get_collection(current(rt)[invoice].id).status == "cancelled"
    assert rt.links.defaults(MATTER).pending_collections == 0


def test_refresh_catches_a_mandate_change_without_its_event(rt: Runtime, home: Path) -> None:
    sandbox.set_mandate(home, rt.directdebit.list_mandates()[0].setup_ref, "suspended_by_payer")
    assert rt.directdebit.refresh_mandates() == 1
    assert rt.directdebit.list_mandates()[0].status == "suspended_by_payer"
    add_bill(home, "INV-16", 3000, DUE)
    assert schedule(rt).created == []  # only active mandates are collected on


def test_sandbox_mandate_page_activates_the_mandate(home: Path) -> None:
    server = sandbox.SandboxPayServer(home).start()
    try:
        provider = sandbox.SandboxProvider(MerchantAccount(name="operating", api_base=server.url), None, home=str(home))
        setup = provider.setup_mandate(MandatePayer("90", "Ada Direct", "ada@example.com", "dd-page"))
        with urllib.request.urlopen(setup.url) as page:
            assert b"Set up Direct Debit" in page.read()
        with urllib.request.urlopen(urllib.request.Request(setup.url, data=b"", method="POST")) as page:
            assert b"Your Direct Debit is set up" in page.read()
        assert provider.get_mandate(setup.ref).status is MandateStatus.ACTIVE
        events, _ = drain(provider, None)
        assert [(e.kind, e.raw_status, e.mandate_ref) for e in events] == [
            (EventKind.MANDATE_CHANGED, "active", setup.ref)]
    finally:
        server.stop()


def test_cli(rt: Runtime, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    invoice = add_bill(home, "INV-15", 3000, DUE)
    sync(rt)
    assert main(["--home", str(home), "collections", "schedule"]) == 0
    assert main(["--home", str(home), "collections", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert [(c["statement_key"], c["amount"]) for c in listed] == [(invoice, "30.00")]
    assert main(["--home", str(home), "collections", "cancel", listed[0]["id"]]) == 0
    assert "[CANCELLED]" in capsys.readouterr().out
    assert main(["--home", str(home), "mandates", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "active"
    assert main(["--home", str(home), "mandates", "setup", "--payer", PAYER]) == 0
    assert "existing mandate" in capsys.readouterr().out
    assert main(["--home", str(home), "mandates", "refresh"]) == 0
    assert "0 mandate(s) changed" in capsys.readouterr().out
    assert main(["--home", str(home), "collections", "manual", "--statement", "INV-15", "--amount", "5"]) == 0
    assert "(manual)" in capsys.readouterr().out  # the payer may still choose an amount after a staff cancel
    assert main(["--home", str(home), "collections", "manual", "--statement", "INV-15", "--amount", "31"]) == 2
    assert "at most the payable 30.00" in capsys.readouterr().err


# --- GoCardless against the fake API -------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeGoCardless]:
    server = FakeGoCardless().start()
    yield server
    server.stop()


@pytest.fixture
def gc(api: FakeGoCardless) -> GoCardlessProvider:
    return GoCardlessProvider(MerchantAccount(name="operating", provider="gocardless", api_base=api.url),
                              "sandbox_token", timeout=2)


def test_gocardless_mandate_and_collection_requests_as_sent(gc: GoCardlessProvider, api: FakeGoCardless) -> None:
    """What only GoCardless's wire shows; the behaviour every Direct Debit provider owes (setup, idempotency, charge
    dates, cancel, events, every documented status) is the kit's: tests/connectors/test_directdebit_contract.py."""
    setup = gc.setup_mandate(MandatePayer("90", "Ada Direct", "ada@example.com", "dd-test-1"))
    assert setup.url.startswith("https://pay-sandbox.gocardless.com/")
    br = api.billing_requests[setup.ref]
    assert br["mandate_request"]["currency"] == "GBP" and br["payment_request"] is None
    mandate_id = api.complete_mandate_flow(setup.ref)
    got = gc.get_mandate(setup.ref)  # the setup ref leads to the mandate once the payer finished
    assert (got.ref, got.status, got.raw_status) == (mandate_id, MandateStatus.PENDING_SUBMISSION,
                                                     "pending_submission")
    api.set_mandate(mandate_id, "active")
    changed = [e for e in drain(gc, None)[0] if e.kind is EventKind.MANDATE_CHANGED]
    assert changed and all(e.raw_status == "active" for e in changed)  # each reads the mandate as it is now
    made = gc.create_collection(mandate_id, Decimal("30.00"), "GBP", DUE, "INV-1", "dd-col-1")
    sent = api.payments[made.ref]
    assert (sent["amount"], sent["charge_date"], sent["links"]["mandate"], sent["description"]) == (
        3000, DUE.isoformat(), mandate_id, "INV-1")


def test_collections_in_the_local_api(rt: Runtime, home: Path) -> None:
    from fastapi.testclient import TestClient

    from agent.api.app import create_app

    invoice = add_bill(home, "INV-API", 4000, DUE)
    schedule(rt)
    client = TestClient(create_app(rt), base_url="http://127.0.0.1")
    auth = {"Authorization": f"Bearer {bearer(rt.store)}"}
    assert client.get("/collections").status_code == 401
    listed = client.get("/collections", params={"pending": True}, headers=auth).json()
    mine = next(c for c in listed if c["statement_key"] == invoice)
    assert (mine["amount"], mine["status"]) == ("40.00", "pending_submission")  # money as a decimal string
    assert client.get(f"/collections/{mine['id']}", headers=auth).json()["id"] == mine["id"]
    cancelled = client.post(f"/collections/{mine['id']}/cancel", headers=auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert at_sandbox(home, mine["provider_ref"])[1] == "cancelled"


def test_retried_collection_after_a_failure_is_posted_once(rt: Runtime, home: Path) -> None:
    """Issue 12, defect 1: failed -> resubmission_requested -> submitted -> confirmed posts the money once."""
    from postings.outbox import Outbox

    invoice = add_bill(home, "INV-40", 3000, DUE)
    schedule(rt)
    ref = current(rt)[invoice].provider_ref
    assert ref is not None
    outbox = Outbox(rt.store, rt.connector, rt.mapping)
    for status in ("submitted", "failed"):
        sandbox.set_collection(home, ref, status)
    poll(rt)
    assert rt.directdebit.get_collection(current(rt)[invoice].id).status == "failed"
    sandbox.resubmit_collection(home, ref)  # staff or Success+ retry it
    for status in ("submitted", "confirmed"):
        sandbox.set_collection(home, ref, status)
    poll(rt)
    assert rt.directdebit.get_collection(current(rt)[invoice].id).status == "confirmed"
    assert outbox.run_once().get("posted") == 1
    assert balance(home, invoice) == 0
    poll(rt)
    assert outbox.run_once().get("posted") is None  # nothing doubled
    assert balance(home, invoice) == 0
