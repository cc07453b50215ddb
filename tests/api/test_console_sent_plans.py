"""Payment plans on Sent Pages (issue 27, item 5) in headless Chromium against the real agent: a clerk sees a plan
beside the links under the same status filter, opens the plan view from its row, exports it a row per instalment
and cancels it from its row (tests/console_support.py has the harness)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from console_support import (
    Agent,
    agent_fixture,  # noqa: F401  (pytest fixture "agent")
    assert_accessible,
    browser_fixture,  # noqa: F401  (pytest fixture "browser")
    delivery_set_up,
    expect,
    go,
    page_fixture,  # noqa: F401  (pytest fixture "page")
    shot,
    sign_in,
)
from directdebit_support import MATTER, owing_3000_with_a_mandate, poll
from openpyxl import load_workbook
from tests_support import ARTIFACTS, STAFF

from agent.core.model import Actor
from agent.engine.export import money_format
from agent.engine.plans import PlanRequest
from agent.state import audit
from connectors.providers import sandbox

JOB = Actor("job", "plan-reminders")


def with_mandate(agent: Agent) -> None:
    owing_3000_with_a_mandate(agent.rt, agent.home)


def test_a_clerk_sees_opens_exports_and_cancels_a_plan_on_sent_pages(page: Any, agent: Agent) -> None:
    with_mandate(agent)
    plan = agent.rt.plans.create(STAFF, PlanRequest(MATTER, count=6))
    plan_id = plan.id or ""
    first = agent.rt.directdebit.get_collection(plan.instalments[0].collection_id or "").provider_ref or ""
    for status in ("submitted", "confirmed"):  # the first instalment is paid
        sandbox.set_collection(agent.home, first, status)
    poll(agent.rt)
    second = plan.instalments[1].due_on
    with delivery_set_up(agent):  # the second instalment's reminder, three days before it (a real SMTP server)
        assert agent.rt.plan_reminders.run(JOB, today=second - dt.timedelta(days=3)) == 1

    sign_in(page, agent)
    go(page, agent, "sent")
    expect(page.get_by_label("Outstanding")).to_be_checked()
    row = page.locator(f'#plans-list tr[data-plan="{plan_id}"]')
    expect(row.locator(".badge")).to_have_text("Active")  # the links' badge style, in words
    cells = row.locator("td")
    expect(cells.nth(2)).to_have_text(MATTER)
    expect(cells.nth(3)).to_have_text("Ada Direct")
    expect(cells.nth(4)).to_have_text("£3,000.00")
    expect(cells.nth(5)).to_have_text("1 of 6")
    expect(cells.nth(6)).to_have_text("£2,500.00")  # five instalments still to collect
    expect(cells.nth(7).locator(f'time[datetime="{second.isoformat()}"]')).to_be_visible()
    expect(cells.nth(7)).to_contain_text("£500.00")
    expect(page.locator("#plans-list caption")).to_have_text("Active payment plans: 1")
    shot(page, "sent-plans-01-outstanding")
    assert_accessible(page, "Sent Pages with a payment plan")

    # the one filter reads for plans as for links
    page.get_by_label("Cancelled").check()
    expect(page.locator("#sent-plans-table")).to_have_text("No cancelled payment plans.")
    page.get_by_label("Expired").check()
    expect(page.locator("#sent-plans-table")).to_contain_text("Payment plans do not expire")
    expect(page.get_by_role("button", name="Export plans to Excel")).to_be_disabled()
    page.get_by_label("All").check()
    expect(row).to_be_visible()
    page.set_viewport_size({"width": 860, "height": 900})
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")  # the table scrolls in place
    shot(page, "sent-plans-02-all-860")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_label("Outstanding").check()

    row.get_by_role("button", name=f"Open plan {plan_id}").click()
    dialog = page.locator("#plan-dialog")
    expect(dialog.locator("#plan-id")).to_have_text(f"{plan_id} · active")
    expect(dialog).to_contain_text(MATTER)
    expect(dialog.locator("#plan-body")).not_to_contain_text("null")  # opened without a note: none is shown
    instalments = dialog.locator("#plan-instalments tbody tr")
    expect(instalments).to_have_count(6)
    expect(instalments.nth(0)).to_contain_text("Paid")
    expect(instalments.nth(1)).to_contain_text("Scheduled")
    emails = dialog.locator("#plan-emails tbody tr")
    expect(emails).to_have_count(1)
    expect(emails.nth(0)).to_contain_text("Before the instalment")
    expect(emails.nth(0)).to_contain_text("ada@example.com")
    expect(emails.nth(0)).to_contain_text("Sent")
    shot(page, "sent-plans-03-plan-view")
    assert_accessible(page, "the plan view opened from Sent Pages")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(row.get_by_role("button", name=f"Open plan {plan_id}")).to_be_focused()  # back where the clerk was

    with page.expect_download() as download:
        page.get_by_role("button", name="Export plans to Excel").click()
    assert download.value.suggested_filename.startswith("payment-plans-active-")
    saved = ARTIFACTS / "payment-plans.xlsx"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    download.value.save_as(saved)
    sheet = load_workbook(saved).active
    header = [c.value for c in sheet[1]]
    rows = [dict(zip(header, r, strict=True)) for r in sheet.iter_rows(min_row=2)]
    assert [(r["Plan ID"].value, r["Instalment"].value, r["Amount"].value, r["State"].value) for r in rows] == [
        (plan_id, n, 500, "Paid" if n == 1 else "Scheduled") for n in range(1, 7)]
    assert {r["Amount"].number_format for r in rows} == {money_format("GBP")}
    expect(page.locator("#notice")).to_contain_text("a row per instalment")

    page.once("dialog", lambda confirm: confirm.dismiss())  # a second thought: nothing changes
    row.get_by_role("button", name=f"Cancel plan {plan_id}").click()
    expect(row.get_by_role("button", name=f"Cancel plan {plan_id}")).to_be_visible()
    assert agent.rt.plans.get(plan_id).status == "active"
    page.once("dialog", lambda confirm: confirm.accept())
    row.get_by_role("button", name=f"Cancel plan {plan_id}").click()
    expect(page.locator("#notice")).to_contain_text(f"Plan {plan_id} cancelled.")
    expect(page.locator("#sent-plans-table")).to_have_text("No active payment plans.")
    page.get_by_label("Cancelled").check()
    expect(row.locator(".badge")).to_have_text("Cancelled")
    expect(row.locator("td").nth(6)).to_have_text("£0.00")
    expect(row.get_by_role("button", name=f"Cancel plan {plan_id}")).to_have_count(0)  # only an active plan
    shot(page, "sent-plans-04-cancelled")
    assert_accessible(page, "Sent Pages with a cancelled plan")
    done = agent.rt.plans.get(plan_id)
    assert done.status == "cancelled" and done.note == "cancelled by staff (Sent Pages)"
    with agent.rt.store.read() as conn:
        [entry] = [e for e in audit.history(conn, "plan", plan_id) if e.action == "plan.cancel"]
    assert (entry.actor, entry.outcome) == ("user:clerk", "ok")
