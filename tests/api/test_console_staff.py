"""The console as staff use it across a working day: popup actions against the real API, a session shared by the
tabs of one browser, what a clerk's menu offers. Headless Chromium (tests/console_support.py has the harness)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from console_support import (
    Agent,
    agent_fixture,  # noqa: F401  (pytest fixture "agent")
    browser_fixture,  # noqa: F401  (pytest fixture "browser")
    expect,
    lands_on,
    page_fixture,  # noqa: F401  (pytest fixture "page")
    search,
    shot,
    sign_in,
)
from tests_support import PASSWORD, person

from agent.core.model import Actor
from agent.state import users

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


def test_one_session_for_every_tab_until_sign_out_or_disable(page: Any, agent: Agent) -> None:
    sign_in(page, agent)
    jar = {c["name"]: c for c in page.context.cookies()}["ledgerlink_session"]
    assert jar["httpOnly"] and jar["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # no script of the page can read the session
    second = page.context.new_page()  # a matter opened in a new tab of the same browser: no sign-in page
    second.goto(f"{agent.url}/console/#debts")
    search(second, MATTER)
    second.get_by_role("button", name=f"Open {MATTER}").click()
    expect(second.locator("#statements-table")).to_contain_text("INV-1002")
    shot(second, "staff-02-second-tab")
    page.get_by_role("button", name="Sign out").click()
    lands_on(page, "/console/login")
    second.goto(f"{agent.url}/console/#sent")  # the other tab is signed out too
    lands_on(second, "/console/login")

    sign_in(page, agent)
    users.disable(agent.rt.store, Actor("user", "admin"), "clerk")  # ends it in every tab
    page.reload(wait_until="commit")  # the console's script navigates on at once
    lands_on(page, "/console/login")
    users.reset(agent.rt.store, Actor("user", "admin"), "clerk", None)


def test_a_cookie_alone_cannot_change_anything(agent: Agent) -> None:
    """CSRF: another site's form or fetch carries the cookie but cannot add the console's header."""
    person(agent.rt.store, "clerk", "clerk")
    signed = httpx.post(f"{agent.url}/console/sign-in", json={"name": "clerk", "password": PASSWORD})
    cookie = {"ledgerlink_session": signed.cookies["ledgerlink_session"]}
    with httpx.Client(base_url=agent.url, cookies=cookie) as browser_like:
        assert browser_like.get("/status").status_code == 200  # reading with the cookie is fine
        forged = browser_like.post("/links", json={"matter": MATTER})
        assert forged.status_code == 403 and "X-Ledgerlink-Console" in forged.json()["error"]
        bearer = httpx.get(f"{agent.url}/status", headers={"Authorization": f"Bearer {agent.admin_token}"})
        assert bearer.status_code == 200  # API clients keep their bearer token
        assert browser_like.post("/console/sign-out", headers={"X-Ledgerlink-Console": "1"}).status_code == 204
        assert browser_like.get("/status").status_code == 401


def test_a_clerks_menu_has_no_admin_screens(page: Any, agent: Agent) -> None:
    sign_in(page, agent)
    menu = page.get_by_role("navigation", name="Screens")
    expect(menu.get_by_role("link", name="Sent Pages")).to_be_visible()
    for admin_only in ("Settings", "Audit"):
        expect(menu.get_by_role("link", name=admin_only)).to_be_hidden()
    page.evaluate("location.hash = '#audit'")  # typed into the address bar: words that fit sign-in by name
    expect(page.locator("#admin-only")).to_contain_text("for administrators")
    expect(page.locator("#admin-only")).not_to_contain_text("token")
    shot(page, "staff-03-clerk-menu")
    page.get_by_role("button", name="Sign out").click()
    lands_on(page, "/console/login")  # the console's own navigation, or our goto below is aborted by it
    sign_in(page, agent, "admin")
    for admin_only in ("Settings", "Audit"):
        expect(menu.get_by_role("link", name=admin_only)).to_be_visible()
