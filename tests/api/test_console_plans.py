"""A clerk sets up a payment plan in the console (issue 27): headless Chromium against the real agent, for a payer
whose Direct Debit mandate is active at the sandbox, and for one with none yet, who is sent the sandbox's page to
see the instalments and set up the Direct Debit (tests/console_support.py has the harness)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from console_support import (
    Agent,
    agent_fixture,  # noqa: F401  (pytest fixture "agent")
    assert_accessible,
    browser_fixture,  # noqa: F401  (pytest fixture "browser")
    expect,
    page_fixture,  # noqa: F401  (pytest fixture "page")
    search,
    shot,
    sign_in,
)
from directdebit_support import DUE, MATTER, TODAY, firm, owing_3000_with_a_mandate, poll, sync

from agent.engine.plans import LEAD_DAYS


def with_mandate(agent: Agent) -> None:
    owing_3000_with_a_mandate(agent.rt, agent.home)


def plan_dialog(page: Any, agent: Agent, matter: str) -> Any:
    """Signed in as a clerk, the matter found and opened, and its Payment plan popup."""
    sign_in(page, agent)
    search(page, matter)
    page.get_by_role("button", name=f"Open {matter}").click()
    page.get_by_role("button", name="Payment plan").click()
    return page.locator("#plan-dialog")


def test_a_clerk_sets_up_six_monthly_instalments_previewed_to_the_penny(page: Any, agent: Agent) -> None:
    with_mandate(agent)
    dialog = plan_dialog(page, agent, MATTER)
    expect(dialog.get_by_label("Plan total (GBP)")).to_have_value("3000.00")
    dialog.get_by_label("Number of instalments", exact=True).check()
    dialog.locator("#plan-instalments-count").fill("7")
    dialog.get_by_role("button", name="Preview instalments").click()
    rows = dialog.locator("#plan-instalments tbody tr")
    expect(rows).to_have_count(7)
    expect(rows.nth(0)).to_contain_text("£428.57")
    expect(rows.nth(6)).to_contain_text("£428.58")  # the remainder on the last: 6 x 428.57 + 428.58 = 3,000.00
    expect(dialog.locator("#plan-instalments tfoot")).to_contain_text("£3,000.00")
    shot(page, "plans-01-preview")
    assert_accessible(page, "the payment plan preview")
    assert agent.rt.plans.list() == []  # a preview makes nothing

    dialog.locator("#plan-total").fill("3500.00")  # more than is owed: said by the field, nothing made
    dialog.get_by_role("button", name="Preview instalments").click()
    expect(dialog.get_by_role("alert")).to_contain_text("more than the 3000.00")
    dialog.locator("#plan-total").fill("3000.00")
    dialog.locator("#plan-instalments-count").fill("6")
    dialog.get_by_role("button", name="Preview instalments").click()
    expect(rows).to_have_count(6)
    dialog.get_by_role("button", name="Set up plan").click()
    expect(dialog.locator(".notice")).to_contain_text("The plan is set up")
    expect(rows).to_have_count(6)
    expect(rows.nth(0)).to_contain_text("With the provider")  # five days away: submitted at once
    expect(rows.nth(1)).to_contain_text("Scheduled")
    shot(page, "plans-02-made")
    [plan] = agent.rt.plans.list()
    assert plan.status == "active" and plan.total == 3000

    page.keyboard.press("Escape")
    expect(page.locator("#matter")).to_contain_text("Left to collect")
    page.get_by_role("button", name="Payment plan").click()
    expect(dialog.locator(".notice")).to_contain_text("already has a payment plan")
    page.once("dialog", lambda d: d.accept())
    dialog.get_by_role("button", name="Cancel plan").click()
    expect(dialog.locator(".notice")).to_contain_text("The plan was cancelled")
    expect(rows.nth(1)).to_contain_text("Cancelled")
    shot(page, "plans-03-cancelled")
    assert agent.rt.plans.get(plan.id or "").status == "cancelled"


WAITING = "M-2026-0910"


def owing_900_without_a_mandate(agent: Agent) -> None:
    """Payer 91, Bea Waiting, owes 900.00 on matter M-2026-0910 and has never set up a Direct Debit."""
    with firm(agent.home) as conn:
        conn.execute("INSERT INTO clients (id, name, email) VALUES (91, 'Bea Waiting', 'bea@example.com')")
        conn.execute("INSERT INTO payers (id, client_id, name, email) VALUES (91, 91, 'Bea Waiting', "
                     "'bea@example.com')")
        conn.execute("INSERT INTO matters (id, matter_no, title, client_id, payer_id) VALUES (910, ?, 'Probate', 91, "
                     "91)", (WAITING,))
        conn.execute("INSERT INTO bills (bill_no, matter_id, issued_on, due_on, total_pence, balance_pence) VALUES "
                     "('INV-W1', 910, ?, ?, 90000, 90000)",
                     ((DUE - dt.timedelta(days=30)).isoformat(), DUE.isoformat()))
    sync(agent.rt)


def test_a_payer_without_a_mandate_is_sent_the_page_that_sets_up_the_plan(page: Any, agent: Agent) -> None:
    owing_900_without_a_mandate(agent)
    dialog = plan_dialog(page, agent, WAITING)
    dialog.locator("#plan-instalments-count").fill("3")
    dialog.get_by_role("button", name="Preview instalments").click()
    expect(dialog.locator("#plan-no-mandate")).to_contain_text("Bea Waiting has no active Direct Debit mandate")
    create = dialog.get_by_role("button", name="Set up plan")
    expect(create).to_be_disabled()  # never without the clerk's choice
    consent = dialog.get_by_label("Send the payer a page to see these instalments and set up the Direct Debit; "
                                  "the plan starts when they do")
    expect(consent).not_to_be_checked()
    consent.check()
    shot(page, "plans-04-no-mandate")
    assert_accessible(page, "the payment plan preview for a payer without a mandate")
    assert agent.rt.plans.list(WAITING) == [] and agent.rt.directdebit.list_mandates("91") == []
    create.click()
    link = dialog.locator("#plan-setup-url")
    expect(dialog.locator("#plan-setup")).to_contain_text("Waiting for Bea Waiting to set up the Direct Debit")
    expect(dialog.locator("#plan-id")).to_contain_text("waiting for the payer's Direct Debit")
    [plan] = agent.rt.plans.list(WAITING)
    [mandate] = agent.rt.directdebit.list_mandates("91")
    assert plan.status == "awaiting_mandate" and plan.setup_url == mandate.url
    expect(link).to_have_text(mandate.url or "")
    shot(page, "plans-05-awaiting-mandate")
    assert_accessible(page, "a plan awaiting its mandate")

    payer = page.context.new_page()  # the payer opens the link sent to them
    payer.goto(mandate.url)
    expect(payer.locator("#plan tbody tr")).to_have_count(3)
    expect(payer.locator("#plan-total")).to_have_text("GBP 900.00")
    shot(payer, "plans-06-payer-mandate-page")
    payer.get_by_role("button", name="Set up Direct Debit").click()
    expect(payer.get_by_role("status")).to_contain_text("Your Direct Debit is set up")
    payer.close()
    poll(agent.rt)
    agent.rt.plans.submit_due()  # the service's plan job
    assert agent.rt.plans.get(plan.id or "").status == "active"
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Payment plan").click()
    expect(dialog.locator("#plan-id")).to_contain_text("active")
    expect(dialog.locator("#plan-setup")).to_have_count(0)
    first = dialog.locator("#plan-instalments tbody tr").nth(0)
    expect(first).to_contain_text("With the provider" if plan.instalments[0].due_on <= TODAY + dt.timedelta(
        days=LEAD_DAYS) else "Scheduled")
