"""The console as staff use it across a working day: popup actions against the real API, a session shared by the
tabs of one browser, what a clerk's menu offers. Headless Chromium (tests/console_support.py has the harness)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from console_support import (
    Agent,
    agent_fixture,  # noqa: F401  (pytest fixture "agent")
    browser_fixture,  # noqa: F401  (pytest fixture "browser")
    expect,
    page_fixture,  # noqa: F401  (pytest fixture "page")
    search,
    shot,
    sign_in,
)

MATTER = "M-2026-0010"  # Okafor: two open statements, the payer has an email


def test_cancel_and_create_new_cancels_the_old_link_and_makes_a_new_one(page: Any, agent: Agent) -> None:
    sign_in(page, agent)
    search(page, MATTER)
    page.get_by_role("button", name=f"Open {MATTER}").click()
    page.get_by_role("button", name="Instant Bank Pay").click()
    dialog = page.locator("#pay-dialog")
    dialog.get_by_role("button", name="Create link").click()
    expect(dialog.locator(".link-view h3")).to_contain_text("Payment link")
    old_id = dialog.locator(".link-view").get_attribute("data-link-id")
    dialog.get_by_role("button", name="Cancel & Create New", exact=True).click()
    dialog.get_by_label("Amount (GBP)").fill("100.00")
    dialog.get_by_role("button", name="Cancel old link & create new").click()
    expect(dialog.locator(".notice")).to_contain_text(f"Link {old_id} was cancelled")
    shot(page, "staff-01-recreated")
    new_id = dialog.locator(".link-view").get_attribute("data-link-id")
    assert old_id and new_id and new_id != old_id
    assert agent.rt.links.get(old_id).status == "cancelled"
    new = agent.rt.links.get(new_id)
    assert new.status == "outstanding" and new.amount == Decimal("100.00")
