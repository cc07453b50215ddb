"""Payment-plan reminders (issue 27): an email before each instalment and one after a failed one, on a real SMTP
server, each sent at most once (twice run, two runtimes at once) and after downtime only the latest."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from delivery_support import Mailbox, configure, smtp_server
from directdebit_support import (
    DUE,
    MATTER,
    TODAY,
    add_bill,
    firm,
    make_home,
    poll,
    set_balance,
    sync,
    with_active_mandate,
)
from tests_support import STAFF, bearer

from agent.cli.main import main
from agent.core.errors import ConfigurationError
from agent.core.model import Actor
from agent.engine.plan_reminders import PlanReminders
from agent.engine.plans import PlanRequest, Plans, PlanView
from agent.home.settings import load_settings
from agent.runtime import Runtime
from agent.state import audit
from connectors.providers import sandbox
from postings.outbox import Outbox

JOB = Actor("job", "plan-reminders")
DAYS = 3  # the default plan_reminder_days


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[tuple[Path, Mailbox]]:
    home = make_home(tmp_path / "home")
    with smtp_server() as (box, port):
        configure(home, port)
        yield home, box


@pytest.fixture
def rt(mail: tuple[Path, Mailbox]) -> Iterator[Runtime]:
    runtime = with_active_mandate(mail[0])
    yield runtime
    runtime.close()


def remind(rt: Runtime, day: dt.date) -> int:
    return PlanReminders(rt.settings, rt.store, rt.sender, today=lambda: day).run(JOB)


def create(rt: Runtime, count: int) -> PlanView:
    sync(rt)
    return Plans(rt.settings, rt.store, rt.directdebit, today=lambda: TODAY).create(STAFF, PlanRequest(MATTER,
                                                                                                      count=count))


def make_plan(rt: Runtime, home: Path, pence: int, count: int) -> str:
    add_bill(home, "INV-R1", pence, DUE)
    return create(rt, count).id or ""


def charge_date(rt: Runtime, plan_id: str, seq: int) -> dt.date:
    """The day the money is taken: the provider's charge date once submitted, else the plan's date."""
    instalment = rt.plans.get(plan_id).instalments[seq - 1]
    if instalment.collection_id is None:
        return instalment.due_on
    return rt.directdebit.get_collection(instalment.collection_id).charge_date or instalment.due_on


def steps(rt: Runtime, plan_id: str) -> list[tuple[int, str, str]]:
    return [(r.seq, r.step, r.status) for r in rt.plan_reminders.history(plan_id)]


def emails(rt: Runtime, plan_id: str) -> list[audit.Entry]:
    with rt.store.read() as conn:
        return [e for e in audit.history(conn, "plan", plan_id) if e.action == "plan.email"]


def pay(rt: Runtime, home: Path, plan_id: str, seq: int, *statuses: str) -> None:
    """Move an instalment's collection at the sandbox and read the provider's events."""
    collection_id = rt.plans.get(plan_id).instalments[seq - 1].collection_id
    ref = rt.directdebit.get_collection(collection_id or "").provider_ref
    assert ref is not None
    for status in statuses:
        sandbox.set_collection(home, ref, status)
    poll(rt)


def test_a_reminder_days_before_the_charge_date_once(rt: Runtime, mail: tuple[Path, Mailbox],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    home, box = mail
    plan_id = make_plan(rt, home, 30000, 3)
    assert rt.plans.get(plan_id).instalments[0].state == "pending_submission"  # a collection at the provider
    charge = charge_date(rt, plan_id, 1)
    assert remind(rt, charge - dt.timedelta(days=DAYS + 1)) == 0  # not yet
    assert remind(rt, charge - dt.timedelta(days=DAYS)) == 1
    assert remind(rt, charge - dt.timedelta(days=DAYS)) == 0  # the job runs again
    assert remind(rt, charge - dt.timedelta(days=1)) == 0
    other = Runtime.for_home(home)  # a restarted agent: only the state store remembers
    try:
        assert remind(other, charge - dt.timedelta(days=1)) == 0
    finally:
        other.close()
    assert len(box.messages) == 1
    message = box.messages[0]
    day = f"{charge:%d %B %Y}"
    assert message["To"] == "Ada Direct <ada@example.com>"
    assert message["Subject"] == f"Payment plan with Demo Legal LLP: GBP 100.00 by Direct Debit on {day}"
    body = message.get_content()
    for said in ("Instalment 1 of your payment plan for matter M-2026-0900 (Lease)", "Amount:      GBP 100.00",
                 f"Date:        {day}", "under the Direct Debit mandate you gave us",
                 "After it, GBP 200.00 in 2 instalments"):
        assert said in body
    assert steps(rt, plan_id) == [(1, "before", "sent")]
    [entry] = emails(rt, plan_id)
    assert (entry.actor, entry.outcome, entry.after["recipient"], entry.after["purpose"]) == (
        "job:plan-reminders", "ok", "ada@example.com", "reminder:before")
    assert main(["--home", str(home), "plans", "show", plan_id]) == 0
    shown = capsys.readouterr().out
    assert "emails to the payer" in shown and "1. before  sent" in shown and "to ada@example.com" in shown


def test_two_runtimes_at_once_send_one_reminder(rt: Runtime, mail: tuple[Path, Mailbox]) -> None:
    home, box = mail
    plan_id = make_plan(rt, home, 30000, 3)
    day = charge_date(rt, plan_id, 1) - dt.timedelta(days=DAYS)
    runners = [Runtime.for_home(home) for _ in range(2)]
    results: list[int] = []
    barrier = threading.Barrier(2)

    def run(r: Runtime) -> None:
        barrier.wait()
        results.append(remind(r, day))

    threads = [threading.Thread(target=run, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in runners:
        r.close()
    assert sorted(results) == [0, 1] and len(box.messages) == 1


def test_a_reduced_instalment_is_reminded_at_its_amount_and_a_cancelled_one_not_at_all(
        rt: Runtime, mail: tuple[Path, Mailbox]) -> None:
    home, box = mail
    bill = add_bill(home, "INV-R2", 40000, DUE)
    plan_id = create(rt, 4).id or ""
    pay(rt, home, plan_id, 1, "submitted", "confirmed")
    Outbox(rt.store, rt.connector, rt.mapping).run_once()  # the first 100.00 is in the firm's books
    set_balance(home, bill, 15000)  # 100.00 by the plan, and 150.00 by bank transfer as well
    sync(rt)
    Plans(rt.settings, rt.store, rt.directdebit, today=lambda: TODAY).submit_due()
    after = rt.plans.get(plan_id).instalments
    assert [(i.amount, i.state) for i in after][2:] == [(Decimal("50.00"), "scheduled"),
                                                        (Decimal("100.00"), "cancelled")]
    assert remind(rt, after[2].due_on - dt.timedelta(days=DAYS)) == 1
    assert "GBP 50.00 by Direct Debit" in str(box.messages[-1]["Subject"])
    assert "It is the last instalment of the plan." in box.messages[-1].get_content()
    assert remind(rt, after[3].due_on - dt.timedelta(days=DAYS)) == 0  # cancelled: never collected, never reminded
    assert [(s, step) for s, step, _ in steps(rt, plan_id)] == [(3, "before")]


def test_a_cancelled_plan_sends_nothing(rt: Runtime, mail: tuple[Path, Mailbox]) -> None:
    home, box = mail
    plan_id = make_plan(rt, home, 30000, 3)
    rt.plans.cancel(STAFF, plan_id, "paid by card")
    for instalment in rt.plans.get(plan_id).instalments:
        assert remind(rt, instalment.due_on - dt.timedelta(days=DAYS)) == 0
    assert box.messages == [] and steps(rt, plan_id) == []


@pytest.mark.parametrize(("statuses", "said"), [
    (("submitted", "failed"), "was not collected: your bank reported that the payment failed"),
    (("submitted", "confirmed", "charged_back"), "was collected and then returned to you by your bank"),
])
def test_a_failed_instalment_sends_one_email_with_what_is_still_owed(
        rt: Runtime, mail: tuple[Path, Mailbox], statuses: tuple[str, ...], said: str) -> None:
    home, box = mail
    plan_id = make_plan(rt, home, 30000, 3)
    assert remind(rt, TODAY) == 0  # nothing due yet: the first reminder is three days before its charge date
    pay(rt, home, plan_id, 1, *statuses)
    assert remind(rt, TODAY) == 1
    assert remind(rt, TODAY + dt.timedelta(days=1)) == 0
    [message] = box.messages
    body = message.get_content()
    second = f"{rt.plans.get(plan_id).instalments[1].due_on:%d %B %Y}"
    assert "GBP 100.00 was " in str(message["Subject"])
    assert said in body
    for figure in ("Missed:                     GBP 100.00 (instalment 1)",
                   f"Still to be collected:      GBP 200.00 in 2 instalments, the next on {second}",
                   "Still owed under the plan:  GBP 300.00",
                   "a missed instalment is not collected again by Direct Debit under the plan",
                   "The remaining instalments are still collected by Direct Debit on their dates."):
        assert figure in body
    assert "retr" not in body.lower()  # the plan makes no retry, so the email promises none
    assert steps(rt, plan_id) == [(1, "failed", "sent")]
    assert [e.after["purpose"] for e in emails(rt, plan_id)] == ["reminder:failed"]

    from fastapi.testclient import TestClient

    from agent.api.app import create_app

    client = TestClient(create_app(rt), base_url="http://127.0.0.1")
    shown = client.get(f"/plans/{plan_id}", headers={"Authorization": f"Bearer {bearer(rt.store)}"}).json()
    assert [(r["seq"], r["step"], r["status"], r["recipient"]) for r in shown["reminders"]] == [
        (1, "failed", "sent", "ada@example.com")]


def test_no_email_for_a_payer_whose_address_was_removed(rt: Runtime, mail: tuple[Path, Mailbox]) -> None:
    home, box = mail
    plan_id = make_plan(rt, home, 30000, 3)
    with firm(home) as conn:
        conn.execute("UPDATE payers SET email = NULL WHERE id = 90")  # removed in the firm's database since
    sync(rt)
    assert remind(rt, charge_date(rt, plan_id, 1) - dt.timedelta(days=DAYS)) == 0
    assert box.messages == [] and steps(rt, plan_id) == [(1, "before", "skipped")]
    [entry] = emails(rt, plan_id)
    assert entry.outcome == "failed" and "no email address" in (entry.error or "")


def test_a_refused_email_is_retried_an_accepted_one_is_not(rt: Runtime, mail: tuple[Path, Mailbox]) -> None:
    home, box = mail
    plan_id = make_plan(rt, home, 30000, 3)
    day = charge_date(rt, plan_id, 1) - dt.timedelta(days=DAYS)
    box.refuse = True
    assert remind(rt, day) == 0 and steps(rt, plan_id) == [(1, "before", "failed")]  # nothing reached the payer
    box.refuse = False
    assert remind(rt, day) == 1 and remind(rt, day) == 0
    assert steps(rt, plan_id) == [(1, "before", "sent")] and len(box.messages) == 1
    assert [e.outcome for e in emails(rt, plan_id)] == ["failed", "ok"]


def test_after_downtime_only_the_latest_step(rt: Runtime, mail: tuple[Path, Mailbox]) -> None:
    home, box = mail
    plan_id = make_plan(rt, home, 30000, 3)
    charge = charge_date(rt, plan_id, 1)
    # down from before the first reminder was due until after that instalment failed: one email, the failure's
    pay(rt, home, plan_id, 1, "submitted", "failed")
    assert remind(rt, charge - dt.timedelta(days=1)) == 1
    assert steps(rt, plan_id) == [(1, "before", "skipped"), (1, "failed", "sent")]
    assert "missed" in str(box.messages[-1]["Subject"])
    # down again past the second instalment's date: its reminder is news by now, the third's is sent
    third = rt.plans.get(plan_id).instalments[2].due_on
    assert remind(rt, third - dt.timedelta(days=1)) == 1
    assert steps(rt, plan_id)[2:] == [(3, "before", "sent")] and len(box.messages) == 2


def test_the_days_before_are_a_setting_and_0_sends_only_failures(rt: Runtime, mail: tuple[Path, Mailbox]) -> None:
    home, box = mail
    with pytest.raises(ConfigurationError, match="plan_reminder_days"):
        load_settings(home, plan_reminder_days=31)
    plan_id = make_plan(rt, home, 30000, 3)
    off = rt.settings.model_copy(update={"plan_reminder_days": 0})
    charge = charge_date(rt, plan_id, 1)
    assert PlanReminders(off, rt.store, rt.sender, today=lambda: charge - dt.timedelta(days=1)).run(JOB) == 0
    pay(rt, home, plan_id, 1, "submitted", "failed")
    assert PlanReminders(off, rt.store, rt.sender, today=lambda: charge).run(JOB) == 1
    assert steps(rt, plan_id) == [(1, "failed", "sent")] and len(box.messages) == 1
