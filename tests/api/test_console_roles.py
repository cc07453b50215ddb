"""Issue 19 in headless Chromium: a clerk signed in by name goes through every screen of the console and is never
refused (the console asks nothing of an admin endpoint for them) and is shown no admin action; an admin is shown
them; and a name locked out by wrong passwords is told so on the login page."""

from __future__ import annotations

from typing import Any

from console_support import (
    Agent,
    agent_fixture,  # noqa: F401  (pytest fixture "agent")
    browser_fixture,  # noqa: F401  (pytest fixture "browser")
    expect,
    go,
    page_fixture,  # noqa: F401  (pytest fixture "page")
    shot,
    sign_in,
)
from tests_support import PASSWORD, STAFF, person

from agent.engine.links import LinkRequest
from agent.service.loop import poll_payments
from agent.state import throttle
from connectors.providers import sandbox

SCREENS = ("debts", "quick", "bulk", "sent", "postings", "settings")  # the console's nav, every one
ADMIN_PATHS = ("/settings/", "/reallocate", "/remove", "/users", "/audit", "/refund")


def api_answers(page: Any) -> list[tuple[int, str]]:
    answers: list[tuple[int, str]] = []
    page.on("response", lambda r: answers.append((r.status, r.url)) if "/console/static/" not in r.url else None)
    return answers


def test_a_clerk_goes_through_every_screen_unrefused_and_sees_no_admin_action(page: Any, agent: Agent) -> None:
    link = agent.rt.links.create(STAFF, LinkRequest(matter="M-2026-0030"))
    assert link.provider_ref is not None
    sandbox.pay(agent.home, link.provider_ref)
    poll_payments(agent.rt)  # a pending posting: an admin may remove it
    answers = api_answers(page)
    sign_in(page, agent, "clerk")
    expect(page.locator("body")).to_have_attribute("data-role", "clerk")
    for screen in SCREENS:
        go(page, agent, screen)
        page.wait_for_load_state("networkidle")
    go(page, agent, "postings")
    expect(page.locator("#postings-list tbody tr").first).to_be_visible()
    expect(page.get_by_role("button", name="Remove posting")).to_have_count(0)
    expect(page.get_by_role("button", name="Reallocate posting")).to_have_count(0)
    go(page, agent, "settings")
    expect(page.locator("#admin-only")).to_contain_text("you are signed in as clerk, a clerk")
    expect(page.locator("#settings-body form")).to_have_count(0)
    shot(page, "30-clerk-settings")
    refused = [(status, url) for status, url in answers if status in (401, 403)]
    assert not refused, refused
    assert not [url for _status, url in answers if any(p in url for p in ADMIN_PATHS)]  # not even asked
    assert len(answers) > len(SCREENS)

    sign_in(page, agent, "admin")
    expect(page.locator("body")).to_have_attribute("data-role", "admin")
    go(page, agent, "postings")
    expect(page.get_by_role("button", name="Remove posting").first).to_be_visible()
    go(page, agent, "settings")
    expect(page.locator('form[data-account="trust"]')).to_be_visible()


def test_the_login_page_says_when_a_name_is_paused_or_locked(page: Any, agent: Agent) -> None:
    person(agent.rt.store, "locked-clerk", "clerk")
    try:
        page.goto(f"{agent.url}/console/login")
        for _ in range(throttle.FREE["user"]):
            page.get_by_label("User name").fill("locked-clerk")
            page.get_by_label("Password").fill("not the password")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text("not accepted")
            page.evaluate("document.getElementById('login-error').textContent = ''")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("Sign-in is paused: wrong too often: wait")
        for _ in range(throttle.LOCK_AFTER["user"]):
            throttle.failed(agent.rt.store, [throttle.name_key("locked-clerk")])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("locked for 15 minutes")
        expect(page.get_by_role("alert")).to_contain_text("ledgerlink users reset locked-clerk")
        shot(page, "31-login-locked")
        assert page.url.endswith("/console/login")
    finally:
        for key in throttle.keys("locked-clerk", "127.0.0.1"):
            throttle.cleared(agent.rt.store, key)  # the other tests sign in from the same address
