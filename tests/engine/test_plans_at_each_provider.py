"""Payment plans at each provider that can carry one (issue 27's "done means"): the sandbox, the GoCardless fake
(payments with a charge_date against the mandate, held until then) and the Stripe fake (a card saved in setup-mode
Checkout, charged off-session on each instalment's date). The rules are the plan engine's, the provider's part is
its documented API: a failed instalment, a debt paid elsewhere mid-plan, a payer in credit."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from directdebit_support import (  # noqa: F401  (home_fixture: the pytest fixture "home", the directdebit firm)
    DUE,
    MATTER,
    PAYER,
    TODAY,
    add_bill,
    balance,
    home_fixture,
    instalment_refs,
    plans_on,
    receipts,
    set_balance,
    sync,
)
from fakes.gocardless_api import FakeGoCardless
from money_support import GoCardlessMoney, MoneyWorld, SandboxMoney, StripeMoney, post_all, runtime_for
from tests_support import STAFF

from agent.core.errors import RuleError
from agent.engine.payments import EventPoller
from agent.engine.plans import LEAD_DAYS, PlanRequest
from agent.runtime import Runtime
from connectors.providers import sandbox

AT_EACH = pytest.mark.parametrize("money", ["gocardless", "sandbox", "stripe"], indirect=True)


def _with_mandate(home: Path, money: MoneyWorld) -> tuple[Runtime, EventPoller]:
    rt = runtime_for(home, money)
    money.activate_mandate(rt.directdebit.setup_mandate(STAFF, PAYER, "operating").setup_ref)
    poller = EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01)
    poller.poll()
    return rt, poller


def _submit(rt: Runtime, due_on: dt.date) -> None:
    """The plan job on the day the provider is asked: LEAD_DAYS ahead where it holds a collection to its date,
    on the date itself where it charges at once (a card)."""
    held = rt.provider("operating").capabilities.holds_collections
    plans_on(rt, due_on - dt.timedelta(days=LEAD_DAYS if held else 0)).submit_due()


def _instalment(rt: Runtime, poller: EventPoller, money: MoneyWorld, plan_id: str, n: int, due_on: dt.date, *,
                fails: bool = False) -> None:
    """Instalment ``n`` asked of the provider on its day, paid (or refused by the payer's bank: a card declined
    when charged, a Direct Debit failed once submitted), its result read and posted."""
    if fails and isinstance(money, StripeMoney):
        money.decline_next()  # 402 card_declined
    _submit(rt, due_on)
    ref = instalment_refs(rt, plan_id)[n]
    assert ref is not None, "the instalment was not asked of the provider on its day"
    if not fails:
        money.collect(ref)
    elif not isinstance(money, StripeMoney):
        _fail(money, ref)
    poller.poll()
    post_all(rt)


def _fail(money: MoneyWorld, ref: str) -> None:
    """The payer's bank refuses a collection already sent to it, as each provider's back office reports it."""
    if isinstance(money, GoCardlessMoney):
        api = money._api(ref)
        assert isinstance(api, FakeGoCardless)
        api.set_payment(ref, "submitted")
        api.fail(ref)
    else:
        assert isinstance(money, SandboxMoney)
        for status in ("submitted", "failed"):
            sandbox.set_collection(money.home, ref, status)


@AT_EACH
def test_a_failed_instalment_is_never_posted_stays_owed_and_the_plan_goes_on(home: Path, money: MoneyWorld) -> None:
    bill = add_bill(home, "INV-F3", 90000, DUE)
    rt, poller = _with_mandate(home, money)
    try:
        view = plans_on(rt).create(STAFF, PlanRequest(MATTER, count=3, first=TODAY + dt.timedelta(days=7)))
        plan_id = view.id or ""
        for n, instalment in enumerate(view.instalments):
            _instalment(rt, poller, money, plan_id, n, instalment.due_on, fails=n == 1)
        assert [i.state for i in rt.plans.get(plan_id).instalments] == ["confirmed", "failed", "confirmed"]
        refs = instalment_refs(rt, plan_id)
        assert [p for _, p in receipts(home, refs)] == [30000, 30000]  # nothing for the failed one, each once
        assert balance(home, bill) == 30000  # still owed: the plan never collects a missed instalment again
        plans_on(rt, view.instalments[-1].due_on + dt.timedelta(days=1)).submit_due()  # the job's next pass
        assert rt.plans.get(plan_id).status == "ended"
    finally:
        rt.close()


@AT_EACH
def test_a_debt_paid_elsewhere_mid_plan_trims_what_is_still_to_come(home: Path, money: MoneyWorld) -> None:
    bill = add_bill(home, "INV-E4", 40000, DUE)
    rt, poller = _with_mandate(home, money)
    try:
        view = plans_on(rt).create(STAFF, PlanRequest(MATTER, count=4, first=TODAY + dt.timedelta(days=7)))
        plan_id = view.id or ""
        _instalment(rt, poller, money, plan_id, 0, view.instalments[0].due_on)
        set_balance(home, bill, 15000)  # the payer paid 150.00 by bank transfer as well
        sync(rt)
        plans_on(rt, view.instalments[0].due_on).submit_due()
        after = rt.plans.get(plan_id)
        assert [(i.amount, i.state) for i in after.instalments] == [
            (Decimal("100.00"), "confirmed"), (Decimal("100.00"), "scheduled"), (Decimal("50.00"), "scheduled"),
            (Decimal("100.00"), "cancelled")]
        for n in (1, 2):
            _instalment(rt, poller, money, plan_id, n, after.instalments[n].due_on)
            sync(rt)
        assert balance(home, bill) == 0  # never more than is owed: 100 + 150 elsewhere + 100 + 50
        assert [p for _, p in receipts(home, instalment_refs(rt, plan_id))] == [10000, 10000, 5000]
        plans_on(rt, after.instalments[2].due_on + dt.timedelta(days=1)).submit_due()  # the job's next pass
        assert rt.plans.get(plan_id).status == "ended"
    finally:
        rt.close()


@AT_EACH
def test_a_plan_for_a_payer_in_credit_is_refused_and_nothing_is_asked_of_the_provider(
    home: Path, money: MoneyWorld
) -> None:
    add_bill(home, "INV-C1", 10000, DUE)
    add_bill(home, "CR-C1", -25000, DUE)  # a credit note: the payer is in credit overall
    rt, _ = _with_mandate(home, money)
    try:
        with pytest.raises(RuleError, match="in credit"):
            plans_on(rt).create(STAFF, PlanRequest(MATTER, count=2, statements=("INV-C1",)))
        assert rt.plans.list() == [] and rt.directdebit.list_collections() == []
    finally:
        rt.close()
