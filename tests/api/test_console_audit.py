"""The audit trail in the console (headless Chromium): the link popup shows the link's own history, worded and in
the firm's time zone; the Audit trail screen is an admin's, a clerk is told so."""

from __future__ import annotations

import re
from typing import Any

from console_support import (
    Agent,
    agent_fixture,  # noqa: F401  (pytest fixture "agent")
    browser_fixture,  # noqa: F401  (pytest fixture "browser")
    delivery_set_up,
    expect,
    go,
    new_page,
    page_fixture,  # noqa: F401  (pytest fixture "page")
    search,
    shot,
    sign_in,
)

from agent.core.model import Actor
from agent.engine.configuration import change_account
from agent.engine.links import LinkRequest
from agent.state import audit

MATTER = "M-2026-0030"  # Nakamura: one statement, payer with an email


def test_the_popup_shows_who_did_what_and_only_an_admin_reads_the_trail(page: Any, browser: Any,
                                                                       agent: Agent) -> None:
    link = agent.rt.links.create(Actor("user", "alice"), LinkRequest(matter=MATTER))
    with delivery_set_up(agent):
        assert agent.rt.sender.send(Actor("user", "bob"), link.id, "email").ok
    with agent.rt.store.read() as conn:
        created, emailed = audit.history(conn, "link", link.id)
    zone = agent.rt.settings.zone

    def at(entry: audit.Entry) -> str:
        local = entry.at.astimezone(zone)
        return f"{local.day} {local:%b %Y, %H:%M}"

    sign_in(page, agent)
    search(page, MATTER)
    page.get_by_role("button", name="Instant Bank Pay").click()
    history = page.locator("#pay-dialog .link-history li")
    expect(history).to_have_count(2)
    assert history.all_inner_texts() == [f"Created by alice at {at(created)}",
                                         f"Emailed to {link.payer_email} by bob at {at(emailed)}"]
    shot(page, "30-link-history")
    page.keyboard.press("Escape")
    go(page, agent, "audit")
    expect(page.locator("#admin-only")).to_contain_text("for administrators")
    expect(page.locator("#audit-list")).to_have_count(0)

    admin = new_page(browser)
    sign_in(admin, agent, "admin")
    go(admin, agent, "audit")
    expect(admin.locator("#audit-chain")).to_have_text(re.compile(
        r"^\d+ entries, chain intact\. Sealed from entry 1\. Matches entry \d+, the checkpoint of .*\.$"))
    rows = admin.locator(f'#audit-list tbody tr:has-text("link:{link.id}")')
    expect(rows).to_have_count(2)
    admin.get_by_label("Person").fill("bob")
    admin.get_by_role("button", name="Show").click()
    expect(admin.locator("#audit-list tbody tr")).to_have_count(1)
    expect(admin.locator("#audit-list tbody tr")).to_contain_text("Emailed")
    shot(admin, "31-audit-trail")

    # The Change column says what changed, field by field, not the objects before and after as JSON.
    config = agent.rt.settings.config_path
    days = agent.rt.settings.accounts["operating"].expiry_days
    change_account(agent.rt.store, config, Actor("user", "ada"), "operating", {"expiry_days": days + 1})
    try:
        admin.get_by_label("Person").fill("ada")
        admin.get_by_role("button", name="Show").click()
        changed = admin.locator("#audit-list tbody tr .changes li")
        expect(changed).to_have_count(1)
        expect(changed).to_have_text(f"expiry_days: {days} → {days + 1}")
        shot(admin, "32-audit-change")
    finally:
        change_account(agent.rt.store, config, Actor("user", "ada"), "operating", {"expiry_days": days})
    assert not admin.errors, admin.errors
    admin.context.close()
