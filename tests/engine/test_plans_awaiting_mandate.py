"""A payment plan for a payer with no mandate yet (issue 27, "a pay page that sets up the plan"): made with its
mandate setup only when asked, awaiting it while holding the money, started by the plan job once the mandate is
active (its dates moved later if the payer took too long), cancelled when the setup fails; on the sandbox, whose
mandate page shows the schedule, and on the GoCardless and Stripe fakes through their own mandate events."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from directdebit_support import (  # noqa: F401  (home_fixture: the pytest fixture "home", payer 90 and no mandate)
    DUE,
    MATTER,
    PAYER,
    TODAY,
    add_bill,
    at_sandbox,
    home_fixture,
    instalment_refs,
    plans_on,
    poll,
    sync,
)
from fakes.gocardless_api import FakeGoCardless
from fakes.stripe_api import FakeStripe
from money_support import GoCardlessMoney, MoneyWorld, StripeMoney, runtime_for
from tests_support import STAFF, bearer

from agent.cli.main import main
from agent.core.errors import RuleError
from agent.engine.payments import EventPoller
from agent.engine.plans import LEAD_DAYS, SETUP_DAYS, PlanRequest, instalments
from agent.runtime import Runtime
from agent.state import audit
from agent.state.owed import matter_owed
from connectors.providers import sandbox

FIRST = TODAY + dt.timedelta(days=7)


@pytest.fixture(name="rt")
def rt_fixture(home: Path) -> Iterator[Runtime]:
    """Payer 90 owes 600.00 on one bill and has never set up a mandate."""
    add_bill(home, "INV-A1", 60000, DUE)
    runtime = Runtime.for_home(home)
    runtime.links.retry_initial = 0.01
    sync(runtime)
    yield runtime
    runtime.close()


def _asked(count: int = 3, first: dt.date = FIRST) -> PlanRequest:
    return PlanRequest(MATTER, count=count, first=first, set_up_mandate=True)


def _dates(first: dt.date, total: str = "600.00") -> list[dt.date]:
    """A monthly plan's three dates from ``first``."""
    return [d for d, _ in instalments(Decimal(total), "GBP", count=3, first=first)]


def _actions(rt: Runtime, plan_id: str | None) -> list[str]:
    with rt.store.read() as conn:
        return [e.action for e in audit.entries(conn, obj=f"plan:{plan_id}")]


def _get(url: str) -> str:
    with urllib.request.urlopen(url) as page:
        return str(page.read().decode())


def test_without_a_mandate_a_plan_is_refused_unless_its_setup_is_asked_for(rt: Runtime) -> None:
    with pytest.raises(RuleError, match="--set-up-mandate"):
        rt.plans.create(STAFF, PlanRequest(MATTER, count=3))
    assert rt.plans.list() == [] and rt.directdebit.list_mandates() == []  # nothing asked of the payer
    preview = rt.plans.preview(_asked())
    assert preview.needs_mandate and preview.setup_url is None and preview.account == "operating"
    assert rt.directdebit.list_mandates() == []  # a preview changes nothing


def test_the_payer_sees_the_schedule_authorises_it_and_the_next_pass_starts_the_plan(rt: Runtime,
                                                                                   home: Path) -> None:
    view = plans_on(rt).create(STAFF, _asked())
    assert view.status == "awaiting_mandate" and view.needs_mandate and view.setup_url
    assert [(i.due_on, i.amount, i.state) for i in view.instalments] == [
        (d, Decimal("200.00"), "scheduled") for d in _dates(FIRST)]
    [mandate] = rt.directdebit.list_mandates(PAYER)
    assert view.setup_url == mandate.url and mandate.status == "pending_customer_approval"
    assert _actions(rt, view.id) == ["plan.create"]

    server = sandbox.SandboxPayServer(home).start()
    try:
        page = server.url + urlsplit(view.setup_url).path
        shown = _get(page)
        assert "authorise Direct Debits to pay this plan" in shown
        for i in view.instalments:
            assert f"{i.due_on:%d %B %Y}" in shown and "GBP 200.00" in shown
        assert 'id="plan-total">GBP 600.00<' in shown
        with urllib.request.urlopen(urllib.request.Request(page, data=b"", method="POST")) as answer:
            assert b"Your Direct Debit is set up" in answer.read()
    finally:
        server.stop()
    assert rt.plans.get(view.id or "").status == "awaiting_mandate"  # nothing until the mandate is read
    poll(rt)  # the mandate's event
    day = FIRST - dt.timedelta(days=LEAD_DAYS)
    assert plans_on(rt, day).submit_due() == 1  # the job's next pass: started, the first instalment submitted
    started = rt.plans.get(view.id or "")
    assert started.status == "active" and started.setup_url is None and not started.needs_mandate
    assert [i.due_on for i in started.instalments] == [i.due_on for i in view.instalments]  # in time: unmoved
    assert [i.state for i in started.instalments] == ["pending_submission", "scheduled", "scheduled"]
    assert _actions(rt, view.id) == ["plan.create", "plan.start", "plan.instalment"]
    ref = instalment_refs(rt, view.id or "")[0]
    assert ref is not None and at_sandbox(home, ref) == ("200.00", "pending_submission")


def test_a_mandate_finished_late_moves_every_date_later_never_short_of_notice(rt: Runtime, home: Path) -> None:
    view = plans_on(rt).create(STAFF, _asked(first=FIRST))
    sandbox.set_mandate(home, rt.directdebit.list_mandates(PAYER)[0].setup_ref, "active")
    poll(rt)
    late = FIRST + dt.timedelta(days=3)  # the first date has passed while the payer was asked
    plans_on(rt, late).submit_due()
    started = rt.plans.get(view.id or "")
    first = late + dt.timedelta(days=LEAD_DAYS)
    assert [i.due_on for i in started.instalments] == _dates(first)  # LEAD_DAYS from that day, monthly still
    assert started.instalments[0].note == f"moved from {FIRST}: the Direct Debit was set up on {late}"
    assert [i.state for i in started.instalments] == ["pending_submission", "scheduled", "scheduled"]
    collection = rt.directdebit.get_collection(started.instalments[0].collection_id or "")
    assert collection.charge_date == first  # asked LEAD_DAYS ahead, for its (new) date
    with rt.store.read() as conn:
        [start] = [e for e in audit.entries(conn, obj=f"plan:{view.id}") if e.action == "plan.start"]
    assert start.after["moved"][0] == [1, FIRST.isoformat(), first.isoformat()]


def test_a_mandate_finished_in_good_time_keeps_the_dates_agreed(rt: Runtime, home: Path) -> None:
    view = plans_on(rt).create(STAFF, _asked(first=TODAY + dt.timedelta(days=30)))
    sandbox.set_mandate(home, rt.directdebit.list_mandates(PAYER)[0].setup_ref, "active")
    poll(rt)
    assert plans_on(rt, TODAY + dt.timedelta(days=2)).submit_due() == 0  # started; nothing due yet
    started = rt.plans.get(view.id or "")
    assert started.status == "active" and [i.due_on for i in started.instalments] == _dates(
        TODAY + dt.timedelta(days=30))
    assert {i.note for i in started.instalments} == {None}


@pytest.mark.parametrize("outcome", ["failed", "cancelled", "expired"])
def test_a_mandate_setup_that_can_never_finish_cancels_the_plan(rt: Runtime, home: Path, outcome: str) -> None:
    view = plans_on(rt).create(STAFF, _asked())
    sandbox.set_mandate(home, rt.directdebit.list_mandates(PAYER)[0].setup_ref, outcome)
    poll(rt)
    assert plans_on(rt).submit_due() == 0
    gone = rt.plans.get(view.id or "")
    assert gone.status == "cancelled"
    assert gone.note == f"the payer's Direct Debit setup is {outcome}: nothing was collected"
    assert {i.state for i in gone.instalments} == {"cancelled"} and rt.directdebit.list_collections() == []
    assert _actions(rt, view.id) == ["plan.create", "plan.cancel"]
    assert rt.links.defaults(MATTER).amount == Decimal("600.00")  # the money is free to ask for again
    again = plans_on(rt).create(STAFF, _asked())  # a new plan may be made: it asks for a new mandate
    assert again.status == "awaiting_mandate" and again.setup_url != view.setup_url


def test_an_awaiting_plan_holds_its_money_as_an_active_one_does(rt: Runtime, home: Path) -> None:
    plans_on(rt).create(STAFF, _asked(count=3))
    assert rt.links.defaults(MATTER).amount == 0  # no link asks for what the payer is being asked to agree to
    with rt.store.read() as conn:
        owed = matter_owed(conn, rt.plans.list()[0].matter_key)
    assert owed.figures.pending_collections == Decimal("600.00") and owed.figures.amount == 0
    sandbox.set_mandate(home, rt.directdebit.list_mandates(PAYER)[0].setup_ref, "active")
    poll(rt)
    assert rt.directdebit.schedule_collections(TODAY).created == []  # the mandate is the plan's, not auto ones'
    with pytest.raises(RuleError, match="awaiting its mandate"):
        rt.plans.create(STAFF, _asked())  # one plan a matter, waiting or not


def test_a_pending_setup_is_reused_and_staff_can_cancel_while_waiting(rt: Runtime) -> None:
    pending = rt.directdebit.setup_mandate(STAFF, PAYER)
    view = plans_on(rt).create(STAFF, _asked())
    assert [m.id for m in rt.directdebit.list_mandates(PAYER)] == [pending.id]
    assert view.setup_url == pending.url
    cancelled = rt.plans.cancel(STAFF, view.id or "", "the payer paid by card")
    assert cancelled.status == "cancelled" and {i.state for i in cancelled.instalments} == {"cancelled"}
    assert rt.links.defaults(MATTER).amount == Decimal("600.00")
    assert plans_on(rt).submit_due() == 0 and rt.plans.get(view.id or "").status == "cancelled"
    # The setup was the clerk's own, started before the plan: the plan's end leaves it with the payer.
    assert [m.status for m in rt.directdebit.list_mandates(PAYER)] == ["pending_customer_approval"]


def _mandate_actions(rt: Runtime, mandate_id: str) -> list[tuple[str, str, dict[str, object]]]:
    with rt.store.read() as conn:
        return [(e.action, e.actor, e.after) for e in audit.entries(conn, obj=f"mandate:{mandate_id}")]


def test_cancelling_a_waiting_plan_ends_the_setup_made_for_it(rt: Runtime, home: Path) -> None:
    """The payer was shown the plan's dates; once the plan is cancelled they must not be able to authorise it, nor
    would a mandate given for it be used to collect the whole debt automatically."""
    view = plans_on(rt).create(STAFF, _asked())
    [mandate] = rt.directdebit.list_mandates(PAYER)
    rt.plans.cancel(STAFF, view.id or "", "agreed by phone to pay at once")
    [ended] = rt.directdebit.list_mandates(PAYER)
    assert (ended.id, ended.status) == (mandate.id, "cancelled")
    assert _mandate_actions(rt, mandate.id) == [("mandate.cancel", str(STAFF), {
        "status": "cancelled", "reason": f"plan {view.id}: agreed by phone to pay at once"})]
    with rt.store.read() as conn:
        [entry] = [e for e in audit.entries(conn, obj=f"plan:{view.id}") if e.action == "plan.cancel"]
    assert "mandate_setup_not_ended" not in entry.after
    server = sandbox.SandboxPayServer(home).start()
    try:
        page = server.url + urlsplit(view.setup_url or "").path
        assert "This mandate is cancelled" in _get(page)
        with urllib.request.urlopen(urllib.request.Request(page, data=b"", method="POST")) as answer:
            assert b"Your Direct Debit is set up" not in answer.read()  # the payer cannot finish it now
    finally:
        server.stop()
    poll(rt)
    assert rt.directdebit.schedule_collections(TODAY).created == []
    assert rt.directdebit.list_mandates(PAYER)[0].status == "cancelled"


def test_a_mandate_given_for_a_plan_cancelled_before_it_began_is_cancelled_too(rt: Runtime, home: Path) -> None:
    view = plans_on(rt).create(STAFF, _asked())
    [mandate] = rt.directdebit.list_mandates(PAYER)
    sandbox.set_mandate(home, mandate.setup_ref, "pending_submission")  # the payer finished; the bank has it
    poll(rt)
    rt.plans.cancel(STAFF, view.id or "")
    assert rt.directdebit.list_mandates(PAYER)[0].status == "cancelled"
    poll(rt)
    assert rt.directdebit.schedule_collections(TODAY).created == []


def test_a_setup_shared_by_the_payers_two_plans_outlives_the_first_cancelled(rt: Runtime, home: Path) -> None:
    """The payer's second matter's plan reuses the setup the first's started: cancelling the first must not end
    the setup the second still waits on; it becomes the second's, ended with it."""
    with sqlite3.connect(home / "demo-firm.db") as conn:
        conn.execute("INSERT INTO matters (id, matter_no, title, client_id, payer_id) VALUES "
                     "(901, 'M-2026-0901', 'Deed', 90, 90)")
        conn.execute("INSERT INTO bills (bill_no, matter_id, issued_on, due_on, total_pence, balance_pence) VALUES "
                     "('INV-B1', 901, ?, ?, 30000, 30000)", ((DUE - dt.timedelta(days=30)).isoformat(),
                                                             DUE.isoformat()))
    sync(rt)
    first = plans_on(rt).create(STAFF, _asked())
    second = plans_on(rt).create(STAFF, PlanRequest("M-2026-0901", count=2, first=FIRST, set_up_mandate=True))
    assert second.setup_url == first.setup_url and len(rt.directdebit.list_mandates(PAYER)) == 1
    rt.plans.cancel(STAFF, first.id or "")
    assert rt.directdebit.list_mandates(PAYER)[0].status == "pending_customer_approval"
    assert plans_on(rt).submit_due() == 0 and rt.plans.get(second.id or "").status == "awaiting_mandate"
    rt.plans.cancel(STAFF, second.id or "")
    assert rt.directdebit.list_mandates(PAYER)[0].status == "cancelled"


def test_a_setup_the_payer_never_finishes_lapses_with_its_plan(rt: Runtime) -> None:
    """GoCardless's setup page lapses after 7 days while its billing request stays pending: without a limit the
    plan would hold the debt, so no link could ask for it, for ever."""
    view = plans_on(rt).create(STAFF, _asked(first=TODAY + dt.timedelta(days=30)))
    plans_on(rt, TODAY + dt.timedelta(days=SETUP_DAYS - 1)).submit_due()
    assert rt.plans.get(view.id or "").status == "awaiting_mandate"
    assert rt.links.defaults(MATTER).amount == 0
    plans_on(rt, TODAY + dt.timedelta(days=SETUP_DAYS)).submit_due()
    lapsed = rt.plans.get(view.id or "")
    assert lapsed.status == "cancelled" and {i.state for i in lapsed.instalments} == {"cancelled"}
    assert lapsed.note is not None and lapsed.note.startswith(
        f"the payer did not set up the Direct Debit within {SETUP_DAYS} days (asked on ")
    assert [m.status for m in rt.directdebit.list_mandates(PAYER)] == ["cancelled"]
    assert _actions(rt, view.id) == ["plan.create", "plan.cancel"]
    assert rt.links.defaults(MATTER).amount == Decimal("600.00")  # free to be asked for again


def test_the_command_line_prints_the_link_and_refuses_mistakes(rt: Runtime, home: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--home", str(home)]
    assert main([*base, "plans", "create", "--matter", MATTER, "--instalments", "3"]) == 2
    assert "--set-up-mandate" in capsys.readouterr().err
    assert main([*base, "plans", "preview", "--matter", MATTER, "--instalments", "3", "--set-up-mandate"]) == 0
    assert "asks the payer to set one up" in capsys.readouterr().out
    assert main([*base, "plans", "create", "--matter", MATTER, "--instalments", "3", "--set-up-mandate"]) == 0
    out = capsys.readouterr().out
    [mandate] = rt.directdebit.list_mandates(PAYER)
    assert "[AWAITING_MANDATE]" in out and f"send them {mandate.url}" in out
    assert main([*base, "plans", "list"]) == 0 and "awaiting_mandate" in capsys.readouterr().out
    plan_id = rt.plans.list()[0].id or ""
    assert main([*base, "plans", "show", plan_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "awaiting_mandate" and shown["setup_url"] == mandate.url
    with pytest.raises(SystemExit) as exited:
        main([*base, "plans", "create", "--matter", MATTER, "--instalments", "3", "--set-up-mandate", "yes"])
    assert exited.value.code == 2 and "unrecognized arguments: yes" in capsys.readouterr().err


def test_staff_cancel_a_mandate_setup_from_the_command_line(rt: Runtime, home: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A setup sent to the wrong payer, say: ``mandates cancel`` ends it; a second try and an unknown id are the
    clerk's mistakes, told how to find the right one (exit code 2)."""
    base = ["--home", str(home)]
    mandate = rt.directdebit.setup_mandate(STAFF, PAYER)
    assert main([*base, "mandates", "cancel", mandate.id, "--reason", "sent to the wrong payer"]) == 0
    assert f"{mandate.id} cancelled" in capsys.readouterr().out
    assert rt.directdebit.list_mandates(PAYER)[0].status == "cancelled"
    assert main([*base, "mandates", "cancel", mandate.id]) == 2
    assert "is cancelled; nothing to cancel" in capsys.readouterr().err
    assert main([*base, "mandates", "cancel", "mdt_nosuch"]) == 2
    assert "'ledgerlink mandates list' shows the mandates" in capsys.readouterr().err


def test_the_local_api_takes_the_same_choice(rt: Runtime) -> None:
    from fastapi.testclient import TestClient

    from agent.api.app import create_app

    client = TestClient(create_app(rt), base_url="http://127.0.0.1")
    auth = {"Authorization": f"Bearer {bearer(rt.store)}"}
    terms = {"matter": MATTER, "instalments": 3}
    refused = client.post("/plans", json=terms, headers=auth)
    assert refused.status_code == 422 and "--set-up-mandate" in refused.text
    preview = client.post("/plans/preview", json={**terms, "set_up_mandate": True}, headers=auth)
    assert preview.status_code == 200 and preview.json()["needs_mandate"] is True
    assert client.post("/plans", json={**terms, "set_up_mandate": "maybe"}, headers=auth).status_code == 422
    made = client.post("/plans", json={**terms, "set_up_mandate": True}, headers=auth)
    assert made.status_code == 201 and made.json()["status"] == "awaiting_mandate"
    assert made.json()["setup_url"] == rt.directdebit.list_mandates(PAYER)[0].url


# --- at the GoCardless and Stripe fakes ---------------------------------------------------------------------------


@pytest.mark.parametrize("money", ["gocardless", "stripe"], indirect=True)
def test_the_plan_starts_on_the_providers_own_mandate_events(home: Path, money: MoneyWorld) -> None:
    add_bill(home, "INV-A2", 90000, DUE)
    rt = runtime_for(home, money)
    try:
        view = plans_on(rt).create(STAFF, _asked(count=3))
        assert view.status == "awaiting_mandate" and view.setup_url
        [mandate] = rt.directdebit.list_mandates(PAYER)
        api = money.apis["operating"]  # type: ignore[attr-defined]
        assert isinstance(api, FakeGoCardless | FakeStripe)
        shown = api.payer_view(mandate.setup_ref)  # what the provider's own page shows the payer
        assert f"3 payments, GBP 900.00 in all, {FIRST} to {view.instalments[-1].due_on}" in shown
        assert "GBP 300.00 each" in shown
        money.activate_mandate(mandate.setup_ref)
        EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
        held = isinstance(money, GoCardlessMoney)
        day = FIRST - dt.timedelta(days=LEAD_DAYS if held else 0)
        assert plans_on(rt, day).submit_due() == 1
        started = rt.plans.get(view.id or "")
        assert started.status == "active" and started.instalments[0].due_on == FIRST
        ref = instalment_refs(rt, view.id or "")[0]
        assert ref is not None
        if isinstance(money, StripeMoney):
            assert api.payment_intents[ref]["amount"] == 30000  # type: ignore[union-attr]
        else:
            assert api.payments[ref]["charge_date"] == FIRST.isoformat()  # type: ignore[union-attr]
    finally:
        rt.close()


@pytest.mark.parametrize("money", ["gocardless", "stripe"], indirect=True)
def test_cancelling_a_waiting_plan_ends_the_providers_setup(home: Path, money: MoneyWorld) -> None:
    """GoCardless: the billing request cancelled ("causing all billing request flows to expire"); Stripe: the
    setup-mode Checkout Session expired, as each API documents."""
    add_bill(home, "INV-A2", 90000, DUE)
    rt = runtime_for(home, money)
    try:
        view = plans_on(rt).create(STAFF, _asked(count=3))
        [mandate] = rt.directdebit.list_mandates(PAYER)
        rt.plans.cancel(STAFF, view.id or "")
        api = money.apis["operating"]  # type: ignore[attr-defined]
        if isinstance(api, FakeGoCardless):
            assert api.billing_requests[mandate.setup_ref]["status"] == "cancelled"
            assert rt.directdebit.list_mandates(PAYER)[0].status == "cancelled"
        else:
            assert isinstance(api, FakeStripe)
            assert api.sessions[mandate.setup_ref]["status"] == "expired"
            assert rt.directdebit.list_mandates(PAYER)[0].status == "expired"
    finally:
        rt.close()
