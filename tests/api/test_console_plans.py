"""A clerk sets up a payment plan in the console (issue 27): headless Chromium against the real agent, for a payer
whose Direct Debit mandate is active at the sandbox (tests/console_support.py has the harness)."""

from __future__ import annotations

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
from directdebit_support import MATTER, owing_3000_with_a_mandate


def with_mandate(agent: Agent) -> None:
    owing_3000_with_a_mandate(agent.rt, agent.home)


def test_a_clerk_sets_up_six_monthly_instalments_previewed_to_the_penny(page: Any, agent: Agent) -> None:
    with_mandate(agent)
    sign_in(page, agent)
    search(page, MATTER)
    page.get_by_role("button", name=f"Open {MATTER}").click()
    page.get_by_role("button", name="Payment plan").click()
    dialog = page.locator("#plan-dialog")
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
