"""Payment plans (issue 27): a debt paid in Direct Debit instalments on the demo firm and the sandbox, each
instalment a collection through the real Direct Debit path, posted once into the firm's receipts."""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from directdebit_support import (
    DUE,
    MATTER,
    PAYER,
    TODAY,
    add_bill,
    at_sandbox,
    balance,
    firm,
    home_fixture,  # noqa: F401  (pytest fixture "home")
    instalment_refs,
    plans_on,
    poll,
    receipts,
    rt_fixture,  # noqa: F401  (pytest fixture "rt")
    set_balance,
    sync,
)
from fakes.stripe_api import FakeStripe
from hypothesis import given, settings
from hypothesis import strategies as st
from money_support import MoneyWorld, StripeMoney, post_all, runtime_for
from tests_support import STAFF, bearer

from agent.cli.main import main
from agent.core.errors import LedgerlinkError, RuleError
from agent.engine.payments import EventPoller
from agent.engine.plans import LEAD_DAYS, PlanRequest, instalments
from agent.runtime import Runtime
from agent.state import audit
from connectors.providers import sandbox
from postings.outbox import Outbox

# --- the schedule ---------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(extra=st.integers(0, 10**9), count=st.integers(2, 60))
def test_instalments_add_up_to_the_total_to_the_penny(extra: int, count: int) -> None:
    total = Decimal(count + extra).scaleb(-2)  # at least a penny each
    schedule = instalments(total, "GBP", count=count, first=TODAY)
    amounts = [a for _, a in schedule]
    assert sum(amounts) == total and len(amounts) == count
    assert len(set(amounts[:-1])) == 1 and amounts[-1] >= amounts[0]  # equal, the remainder on the last
    assert all(a.as_tuple().exponent == -2 for a in amounts)


def test_the_remainder_goes_on_the_last_and_an_instalment_amount_sets_the_count() -> None:
    assert [a for _, a in instalments(Decimal("100.00"), "GBP", count=3, first=TODAY)] == [
        Decimal("33.33"), Decimal("33.33"), Decimal("33.34")]
    assert [a for _, a in instalments(Decimal("250.00"), "GBP", amount=Decimal("100.00"), first=TODAY)] == [
        Decimal("100.00"), Decimal("100.00"), Decimal("50.00")]
    assert [a for _, a in instalments(Decimal("1000"), "JPY", count=3, first=TODAY)] == [
        Decimal("333"), Decimal("333"), Decimal("334")]  # no minor unit: whole yen


def test_monthly_dates_on_the_31st_fall_on_each_months_last_day() -> None:
    dates = [d for d, _ in instalments(Decimal("400.00"), "GBP", count=4, first=dt.date(2027, 1, 31))]
    assert dates == [dt.date(2027, 1, 31), dt.date(2027, 2, 28), dt.date(2027, 3, 31), dt.date(2027, 4, 30)]
    weekly = [d for d, _ in instalments(Decimal("20.00"), "GBP", count=2, frequency="fortnightly",
                                         first=dt.date(2027, 1, 1))]
    assert weekly == [dt.date(2027, 1, 1), dt.date(2027, 1, 15)]


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"count": 1}, "2 to 60 instalments"),
    ({"count": 61}, "2 to 60 instalments"),
    ({"count": 3, "amount": Decimal("1.00")}, "not both"),
    ({"amount": Decimal("0.10")}, "would take 1000"),
    ({"amount": Decimal("100.00")}, "less than the total"),
    ({"amount": Decimal("1.001")}, "decimal"),
])
def test_a_schedule_that_cannot_be_kept_is_refused_saying_why(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(LedgerlinkError, match=says):  # a RuleError, or a DataError for the decimals
        instalments(Decimal("100.00"), "GBP", first=TODAY, **kwargs)  # type: ignore[arg-type]


# --- a plan on the demo firm ---------------------------------------------------------------------------------


def actions(rt: Runtime, plan_id: str | None) -> list[str]:
    with rt.store.read() as conn:
        return [e.action for e in audit.history(conn, "plan", plan_id or "")]


def pay(rt: Runtime, home: Path, ref: str | None, *statuses: str) -> None:
    assert ref is not None, "the collection was never created at the provider"
    for status in statuses:
        sandbox.set_collection(home, ref, status)
    poll(rt)


def test_preview_shows_the_instalments_and_changes_nothing(rt: Runtime, home: Path) -> None:
    add_bill(home, "INV-P1", 60000, DUE)
    sync(rt)
    view = rt.plans.preview(PlanRequest(MATTER, count=6))
    assert (view.id, view.status, view.total, view.owed) == (None, "preview", Decimal("600.00"), Decimal("600.00"))
    assert [i.amount for i in view.instalments] == [Decimal("100.00")] * 6
    assert view.instalments[0].due_on == TODAY + dt.timedelta(days=LEAD_DAYS)
    assert rt.plans.list() == [] and rt.directdebit.list_collections() == []


def test_six_instalments_each_posted_once_and_the_plan_ends_paid(rt: Runtime, home: Path) -> None:
    older = add_bill(home, "INV-P2", 40000, DUE - dt.timedelta(days=5))
    newer = add_bill(home, "INV-P3", 20000, DUE)
    sync(rt)
    plans = plans_on(rt)
    view = plans.create(STAFF, PlanRequest(MATTER, count=6))
    assert view.status == "active" and view.statements == ("INV-P2", "INV-P3")
    assert [i.state for i in view.instalments] == ["pending_submission"] + ["scheduled"] * 5  # the first is due
    assert rt.directdebit.schedule_collections(TODAY).created == []  # the plan collects these, not auto ones
    assert rt.links.defaults(MATTER).amount == 0  # what is owed counts the instalments still to come
    outbox = Outbox(rt.store, rt.connector, rt.mapping)

    for n in range(6):
        day = TODAY + dt.timedelta(days=31 * n)
        plans_on(rt, day).submit_due()
        plans_on(rt, day).submit_due()  # a second pass makes nothing twice
        refs = instalment_refs(rt, view.id or "")
        assert sum(r is not None for r in refs) == n + 1
        assert at_sandbox(home, refs[n]) == ("100.00", "pending_submission")
        pay(rt, home, refs[n], "submitted", "confirmed")
        outbox.run_once()
        sync(rt)
    assert balance(home, older) == 0 and balance(home, newer) == 0
    mine = receipts(home, instalment_refs(rt, view.id or ""))
    assert sum(p for _, p in mine) == 60000
    assert len({r for r, _ in mine}) == len(mine)  # each receipt once
    # oldest first: the first four instalments pay INV-P2, the last two INV-P3
    assert [r.split(":")[1] for r, _ in mine] == [older] * 4 + [newer] * 2
    plans_on(rt, TODAY + dt.timedelta(days=200)).submit_due()
    done = rt.plans.get(view.id or "")
    assert done.status == "ended" and [i.state for i in done.instalments] == ["confirmed"] * 6
    assert actions(rt, view.id)[0] == "plan.create" and actions(rt, view.id)[-1] == "plan.end"
    assert actions(rt, view.id).count("plan.instalment") == 6


def test_a_failed_instalment_is_reported_and_a_late_failure_reversed(rt: Runtime, home: Path) -> None:
    bill = add_bill(home, "INV-P4", 30000, DUE)
    sync(rt)
    view = plans_on(rt).create(STAFF, PlanRequest(MATTER, count=3))
    outbox = Outbox(rt.store, rt.connector, rt.mapping)
    first = instalment_refs(rt, view.id or "")[0]
    pay(rt, home, first, "submitted", "failed")
    assert rt.plans.get(view.id or "").instalments[0].state == "failed"
    assert outbox.run_once().get("posted") is None and balance(home, bill) == 30000  # nothing was paid
    plans_on(rt, TODAY + dt.timedelta(days=31)).submit_due()
    second = instalment_refs(rt, view.id or "")[1]
    pay(rt, home, second, "submitted", "confirmed")
    assert outbox.run_once().get("posted") == 1 and balance(home, bill) == 20000
    pay(rt, home, second, "failed")  # the bank takes it back after confirming it
    assert outbox.run_once().get("posted") == 1 and balance(home, bill) == 30000
    with firm(home) as conn:
        assert conn.execute("SELECT amount_pence FROM receipts WHERE reference = ?",
                            (f"{second}:{bill}:R",)).fetchone() == (-10000,)


def test_a_debt_paid_elsewhere_mid_plan_trims_the_instalments_still_to_come(rt: Runtime, home: Path) -> None:
    bill = add_bill(home, "INV-P5", 40000, DUE)
    sync(rt)
    view = plans_on(rt).create(STAFF, PlanRequest(MATTER, count=4))
    pay(rt, home, instalment_refs(rt, view.id or "")[0], "submitted", "confirmed")
    Outbox(rt.store, rt.connector, rt.mapping).run_once()
    set_balance(home, bill, 15000)  # the payer paid 150.00 by bank transfer as well
    sync(rt)
    plans_on(rt, TODAY + dt.timedelta(days=1)).submit_due()
    after = rt.plans.get(view.id or "")
    assert [(i.amount, i.state) for i in after.instalments] == [
        (Decimal("100.00"), "confirmed"), (Decimal("100.00"), "scheduled"), (Decimal("50.00"), "scheduled"),
        (Decimal("100.00"), "cancelled")]
    assert "plan.follow_debt" in actions(rt, view.id)
    set_balance(home, bill, 0)  # and then the rest
    sync(rt)
    plans_on(rt, TODAY + dt.timedelta(days=2)).submit_due()
    ended = rt.plans.get(view.id or "")
    assert ended.status == "ended" and [i.state for i in ended.instalments][1:] == ["cancelled"] * 3


def test_a_collection_cut_off_by_a_crash_is_made_once_under_its_key(rt: Runtime, home: Path) -> None:
    add_bill(home, "INV-P6", 20000, DUE)
    sync(rt)
    plans = plans_on(rt, TODAY - dt.timedelta(days=LEAD_DAYS + 1))  # made so nothing is due yet
    view = plans.create(STAFF, PlanRequest(MATTER, count=2, first=TODAY))
    assert instalment_refs(rt, view.id or "") == [None, None]
    collection_id = plans_on(rt)._reserve_next(view.id or "", TODAY)  # reserved, then the process died
    assert collection_id is not None and rt.directdebit.get_collection(collection_id).status == "creating"
    rt.directdebit.schedule_collections(TODAY)  # the service's next pass finishes it
    plans_on(rt).submit_due()
    refs = instalment_refs(rt, view.id or "")
    assert refs[0] is not None and refs[1] is None
    with sqlite3.connect(home / sandbox.DB_NAME) as conn:
        assert conn.execute("SELECT count(*) FROM collections WHERE amount = '100.00'").fetchone() == (1,)


def test_cancel_stops_what_is_still_to_come(rt: Runtime, home: Path) -> None:
    add_bill(home, "INV-P7", 30000, DUE)
    sync(rt)
    view = plans_on(rt).create(STAFF, PlanRequest(MATTER, amount=Decimal("100.00")))
    first = instalment_refs(rt, view.id or "")[0]
    done = rt.plans.cancel(STAFF, view.id or "", "client asked to pay by card")
    assert done.status == "cancelled" and done.note == "client asked to pay by card"
    assert [i.state for i in done.instalments] == ["cancelled"] * 3
    assert at_sandbox(home, first)[1] == "cancelled"
    assert rt.links.defaults(MATTER).amount == Decimal("300.00")  # owed again, offered again
    with pytest.raises(RuleError, match="only an active plan"):
        rt.plans.cancel(STAFF, view.id or "")


def test_plans_are_refused_where_they_must_not_collect(rt: Runtime, home: Path) -> None:
    with pytest.raises(RuleError, match="no open statements"):
        rt.plans.preview(PlanRequest(MATTER, count=2))
    bill = add_bill(home, "INV-P8", 10000, DUE)
    credit = add_bill(home, "CR-P8", -25000, DUE)  # a credit note: the payer is in credit overall
    sync(rt)
    with pytest.raises(RuleError, match="in credit"):
        rt.plans.preview(PlanRequest(MATTER, count=2, statements=("INV-P8",)))
    set_balance(home, credit, 0)  # the credit was refunded
    sync(rt)
    with pytest.raises(RuleError, match=r"more than the 100\.00"):
        rt.plans.preview(PlanRequest(MATTER, count=2, total=Decimal("100.01")))
    with pytest.raises(RuleError, match="not an open statement"):
        rt.plans.preview(PlanRequest(MATTER, count=2, statements=("NOPE",)))
    rt.plans.create(STAFF, PlanRequest(MATTER, count=2))
    with pytest.raises(RuleError, match="already has an active plan"):
        rt.plans.create(STAFF, PlanRequest(MATTER, count=2, statements=(bill,)))


def test_a_mandate_on_the_client_money_account_is_never_used(home: Path) -> None:
    runtime = Runtime.for_home(home)
    try:
        sync(runtime)
        mandate = runtime.directdebit.setup_mandate(STAFF, PAYER, "trust")
        sandbox.set_mandate(home, mandate.setup_ref, "active")
        EventPoller(runtime.store, runtime.provider("trust"), "trust", retry_initial=0.01).poll()
        add_bill(home, "INV-P9", 10000, DUE)
        sync(runtime)
        with pytest.raises(RuleError, match="client money"):
            runtime.plans.preview(PlanRequest(MATTER, count=2))
    finally:
        runtime.close()


def test_plans_from_the_command_line(rt: Runtime, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_bill(home, "INV-P10", 12000, DUE)
    sync(rt)
    base = ["--home", str(home)]
    assert main([*base, "plans", "preview", "--matter", MATTER, "--instalments", "3"]) == 0
    assert "40.00" in capsys.readouterr().out and rt.plans.list() == []
    assert main([*base, "plans", "create", "--matter", MATTER, "--amount", "50.00", "--frequency", "weekly"]) == 0
    out = capsys.readouterr().out
    assert "[ACTIVE]" in out and "50.00" in out and "20.00" in out
    plan_id = rt.plans.list()[0].id or ""
    assert main([*base, "plans", "list"]) == 0 and plan_id in capsys.readouterr().out
    assert main([*base, "plans", "show", plan_id, "--json"]) == 0 and '"total": "120.00"' in capsys.readouterr().out
    assert main([*base, "plans", "cancel", plan_id]) == 0 and "[CANCELLED]" in capsys.readouterr().out
    for wrong in (["--amount", "1,50"], ["--instalments", "2", "--first", "soon"], ["--frequency", "monthly"]):
        with pytest.raises(SystemExit) as exited:
            main([*base, "plans", "create", "--matter", MATTER, *wrong])
        assert exited.value.code == 2
    assert main([*base, "plans", "show", "plan_nope"]) == 2
    err = capsys.readouterr().err
    assert "decimal comma" in err and "YYYY-MM-DD" in err and "one of the arguments" in err and "plans list" in err
    assert "Traceback" not in err


def test_an_instalment_paid_out_since_still_counts_as_paid(rt: Runtime, home: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Once was "1/2 paid" after the provider paid the first instalment out: only confirmed was counted."""
    add_bill(home, "INV-P11", 20000, DUE)
    sync(rt)
    view = plans_on(rt).create(STAFF, PlanRequest(MATTER, count=2, first=TODAY))
    refs = instalment_refs(rt, view.id or "")
    pay(rt, home, refs[0], "submitted", "confirmed", "paid_out")
    plans_on(rt, TODAY + dt.timedelta(days=31)).submit_due()
    pay(rt, home, instalment_refs(rt, view.id or "")[1], "submitted", "confirmed")
    assert [i.state for i in rt.plans.get(view.id or "").instalments] == ["paid_out", "confirmed"]
    assert rt.plans.get(view.id or "").paid == 2
    assert main(["--home", str(home), "plans", "list"]) == 0 and "2/2 paid" in capsys.readouterr().out


def test_plans_in_the_local_api(rt: Runtime, home: Path) -> None:
    from fastapi.testclient import TestClient

    from agent.api.app import create_app

    add_bill(home, "INV-API", 9000, DUE)
    sync(rt)
    client = TestClient(create_app(rt), base_url="http://127.0.0.1")
    auth = {"Authorization": f"Bearer {bearer(rt.store)}"}
    terms = {"matter": MATTER, "instalments": 3, "frequency": "fortnightly"}
    assert client.post("/plans/preview", json=terms).status_code == 401
    preview = client.post("/plans/preview", json=terms, headers=auth)
    assert preview.status_code == 200 and [i["amount"] for i in preview.json()["instalments"]] == ["30.00"] * 3
    for bad, field in (({**terms, "amount": "30.00"}, None), ({**terms, "instalments": 1}, "instalments"),
                       ({"matter": MATTER, "amount": 30}, "amount"), ({**terms, "frequency": "daily"}, "frequency"),
                       ({**terms, "total": "90.01"}, None)):
        refused = client.post("/plans/preview", json=bad, headers=auth)
        assert refused.status_code == 422, refused.text
        if field is not None:
            assert field in [f["field"] for f in refused.json()["fields"]], refused.text
    keyed = {**auth, "Idempotency-Key": "plan-2026-12-07-1"}
    made = client.post("/plans", json=terms, headers=keyed)
    assert made.status_code == 201 and made.json()["status"] == "active"
    plan_id = made.json()["id"]
    # asked again after a lost answer: the first plan comes back, not a refusal or a second plan
    again = client.post("/plans", json=terms, headers=keyed)
    assert again.status_code == 201 and again.json()["id"] == plan_id
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.post("/plans", json={**terms, "instalments": 4}, headers=keyed).status_code == 422
    assert [p["id"] for p in client.get("/plans", params={"matter": MATTER}, headers=auth).json()] == [plan_id]
    assert client.post("/plans", json=terms, headers=auth).status_code == 422  # one active plan per matter
    assert client.get("/plans/plan_nope", headers=auth).status_code == 404
    cancelled = client.post(f"/plans/{plan_id}/cancel", json={"reason": "paid by card"}, headers=auth)
    assert cancelled.status_code == 200 and cancelled.json()["note"] == "paid by card"
    assert client.post("/plans/plan_nope/cancel", headers=auth).status_code == 404


@pytest.mark.parametrize("money", ["gocardless", "sandbox", "stripe"], indirect=True)
def test_a_3000_bill_in_six_monthly_instalments_at_each_direct_debit_provider(home: Path, money: MoneyWorld) -> None:
    """The issue's case at the GoCardless fake (payments with a charge_date on the mandate, as the API reference
    documents), the sandbox and Stripe (a card saved in setup-mode Checkout, a PaymentIntent charged off-session on
    each instalment's date): each instalment posted once, a charged-back one reversed, the debt paid to the end."""
    bill = add_bill(home, "INV-3000", 300000, DUE)
    rt = runtime_for(home, money)
    try:
        money.activate_mandate(rt.directdebit.setup_mandate(STAFF, PAYER, "operating").setup_ref)
        poller = EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01)
        poller.poll()
        held = rt.directdebit.holds_collections("operating")
        assert held is (money.name != "stripe")
        view = plans_on(rt).create(STAFF, PlanRequest(MATTER, count=6))
        assert [i.amount for i in view.instalments] == [Decimal("500.00")] * 6
        for n in range(6):
            due_on = view.instalments[n].due_on
            if not held:  # a card is charged on the instalment's date, not a day before
                plans_on(rt, due_on - dt.timedelta(days=1)).submit_due()
                assert instalment_refs(rt, view.id or "")[n] is None
            plans_on(rt, due_on - dt.timedelta(days=LEAD_DAYS if held else 0)).submit_due()
            ref = instalment_refs(rt, view.id or "")[n]
            assert ref is not None
            money.collect(ref)
            poller.poll()
            post_all(rt)
            if n == 1:  # the payer disputes the second instalment: reversed, owed again
                if money.name == "sandbox":
                    sandbox.set_collection(home, ref, "charged_back")
                else:
                    money.charge_back(ref)
                poller.poll()
                post_all(rt)
                assert balance(home, bill) == 300000 - 50000
            sync(rt)
        mine = receipts(home, instalment_refs(rt, view.id or ""))
        assert sum(p for _, p in mine) == 300000 - 50000 and len({r for r, _ in mine}) == len(mine) == 7
        assert balance(home, bill) == 50000  # the charged-back instalment is still owed, not collected again
        plans_on(rt, TODAY + dt.timedelta(days=200)).submit_due()
        done = rt.plans.get(view.id or "")
        assert done.status == "ended" and [i.state for i in done.instalments].count("charged_back") == 1
        assert rt.links.defaults(MATTER).amount == Decimal("500.00")  # offered again by link, once the plan ended
    finally:
        rt.close()


@pytest.mark.parametrize("money", ["stripe"], indirect=True)
def test_a_declined_card_instalment_is_reported_and_the_plan_goes_on(home: Path, money: MoneyWorld) -> None:
    """Stripe declines the second charge (402 card_declined): the instalment is failed, nothing is posted for it,
    it is still owed, and the plan charges the next instalments on their dates (the engine does not retry it:
    a card decline has no retry on the provider's terms, unlike GoCardless's Success+)."""
    bill = add_bill(home, "INV-CARD", 90000, DUE)
    rt = runtime_for(home, money)
    try:
        money.activate_mandate(rt.directdebit.setup_mandate(STAFF, PAYER, "operating").setup_ref)
        poller = EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01)
        poller.poll()
        view = plans_on(rt).create(STAFF, PlanRequest(MATTER, count=3, first=TODAY))
        plan_id = view.id or ""
        for n, instalment in enumerate(view.instalments):
            if n == 1:
                assert isinstance(money, StripeMoney)
                money.decline_next()
            plans_on(rt, instalment.due_on).submit_due()
            poller.poll()
            post_all(rt)
        states = [i.state for i in rt.plans.get(plan_id).instalments]
        assert states == ["confirmed", "failed", "confirmed"]
        refs = instalment_refs(rt, plan_id)
        assert [p for _, p in receipts(home, refs)] == [30000, 30000]
        assert balance(home, bill) == 30000  # the declined instalment is still owed
        assert rt.plans.get(plan_id).status == "ended"
    finally:
        rt.close()


@pytest.mark.parametrize("money", ["stripe"], indirect=True)
def test_a_saved_card_is_never_charged_for_a_statement_by_itself(home: Path, money: MoneyWorld) -> None:
    """Automatic collection and Pay Now need a provider that holds a collection to its date; a card saved for a
    plan is charged for the plan's instalments alone."""
    add_bill(home, "INV-AUTO", 12000, DUE)
    rt = runtime_for(home, money)
    try:
        money.activate_mandate(rt.directdebit.setup_mandate(STAFF, PAYER, "operating").setup_ref)
        EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
        assert [m.status for m in rt.directdebit.list_mandates(PAYER)] == ["active"]
        assert rt.directdebit.schedule_collections(TODAY).created == []
        with pytest.raises(RuleError, match="payment plan's instalments only"):
            rt.directdebit.request_manual(STAFF, "INV-AUTO", Decimal("10.00"), today=TODAY)
        assert rt.directdebit.list_collections() == []
        assert isinstance(money, StripeMoney)
        assert all(api.payment_intents == {} for api in money.apis.values() if isinstance(api, FakeStripe))
    finally:
        rt.close()


@pytest.mark.parametrize("money", ["stripe"], indirect=True)
def test_plans_create_on_a_stripe_account_from_the_command_line(home: Path, money: MoneyWorld,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI goes through the engines: a plan on a saved card is made, and no card is charged before an
    instalment's date (the first, by default, is LEAD_DAYS ahead: a held provider would submit it now)."""
    add_bill(home, "INV-CLI", 12000, DUE)
    rt = runtime_for(home, money)
    try:
        money.activate_mandate(rt.directdebit.setup_mandate(STAFF, PAYER, "operating").setup_ref)
        EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
        base = ["--home", str(home)]
        assert main([*base, "plans", "create", "--matter", MATTER, "--instalments", "3"]) == 0
        assert "[ACTIVE]" in capsys.readouterr().out
        [plan] = rt.plans.list()
        assert [i.state for i in plan.instalments] == ["scheduled"] * 3  # the first is due in LEAD_DAYS days
        assert rt.directdebit.list_collections() == []
    finally:
        rt.close()
