"""Issue 15 item 8: every console screen and popup passes axe-core (no serious or critical violation, WCAG 2.1 A/AA
and best practice), and a clerk can do the main job by keyboard alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from console_support import (
    Agent,
    agent_fixture,  # noqa: F401  (pytest fixture "agent")
    assert_accessible,
    axe_violations,
    browser_fixture,  # noqa: F401  (pytest fixture "browser")
    expect,
    go,
    page_fixture,  # noqa: F401  (pytest fixture "page")
    search,
    shot,
    sign_in,
)
from tests_support import STAFF

from agent.engine.links import LinkRequest

HEADER = "Invoice number,Invoice date,Due date,Recipient name,Recipient email,Amount,Custom message\n"


def focused(page: Any) -> str:
    """What has keyboard focus, as a person would name it."""
    return str(page.evaluate("""() => { const e = document.activeElement; if (!e) return '';
        return (e.getAttribute('aria-label') || e.labels?.[0]?.textContent || e.textContent || e.id).trim(); }"""))


def tab_to(page: Any, name: str, limit: int = 40) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if focused(page) == name:
            return
    raise AssertionError(f"Tab never reached {name!r}; last focus {focused(page)!r}")


def test_the_axe_check_finds_a_planted_violation(page: Any, agent: Agent) -> None:
    """The check itself works: an unlabelled field and a nameless button are reported."""
    page.goto(f"{agent.url}/console/login")
    page.evaluate("document.body.append(Object.assign(document.createElement('input'), {id: 'planted'}), "
                  "document.createElement('button'))")
    found = {v["id"] for v in axe_violations(page)}
    assert {"label", "button-name"} <= found, found


def test_every_screen_and_popup_passes_axe(page: Any, agent: Agent, tmp_path: Path) -> None:
    agent.rt.links.create(STAFF, LinkRequest(matter="M-2026-0031"))
    page.goto(f"{agent.url}/console/login")
    assert_accessible(page, "the sign-in page")
    sign_in(page, agent)
    assert_accessible(page, "Debts, empty")
    search(page, "Nakamura")
    page.get_by_role("button", name="Open M-2026-0031").click()
    expect(page.locator("#link-sent-marker")).to_be_visible()
    assert_accessible(page, "Debts with results and a matter card")
    page.get_by_role("button", name="Instant Bank Pay").click()
    expect(page.locator("#pay-dialog .link-view")).to_be_visible()
    assert_accessible(page, "the Instant Bank Pay popup with a link")
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Open M-2026-0030").click()
    expect(page.get_by_role("heading", name=re.compile(r"^M-2026-0030"))).to_be_visible()  # its card, not the last
    page.get_by_role("button", name="Instant Bank Pay").click()
    expect(page.locator("#pay-form")).to_be_visible()
    assert_accessible(page, "the Instant Bank Pay form")
    page.keyboard.press("Escape")

    for screen in ("quick", "sent", "postings", "settings"):
        go(page, agent, screen)
        page.wait_for_load_state("networkidle")
        assert_accessible(page, f"#{screen} (clerk)")
    go(page, agent, "sent")
    page.get_by_role("button", name="Columns…").click()
    assert_accessible(page, "the Columns popup")
    page.keyboard.press("Escape")

    go(page, agent, "bulk")
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "A-1,2026-11-01,2026-12-01,Ann Lee,ann@example.com,12.345,\n", encoding="utf-8")
    page.get_by_label("Spreadsheet (CSV or TXT)").set_input_files(str(bad))
    page.locator("#bulk-form").get_by_role("button", name="Upload").click()
    expect(page.locator("#bulk-problems")).to_be_visible()
    assert_accessible(page, "Bulk upload with problems")
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "A-2,2026-11-01,2026-12-01,Ann Lee,ann@example.com,12.34,\n", encoding="utf-8")
    page.get_by_label("Spreadsheet (CSV or TXT)").set_input_files(str(good))
    page.locator("#bulk-form").get_by_role("button", name="Upload").click()
    expect(page.locator("#bulk-rows")).to_be_visible()
    assert_accessible(page, "Bulk upload review")

    sign_in(page, agent, "admin")
    go(page, agent, "settings")
    expect(page.locator('form[data-account="trust"]')).to_be_visible()
    assert_accessible(page, "Settings (admin)")


def test_a_clerk_makes_a_link_by_keyboard_alone(page: Any, agent: Agent) -> None:
    """Skip link, the search, the matter, the popup, Create link and Escape: no mouse anywhere."""
    sign_in(page, agent)
    page.keyboard.press("Tab")
    assert focused(page) == "Skip to content"
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    assert page.url.endswith("#debts")
    search(page, "Okafor")  # two matters: nothing opens by itself
    expect(page.locator("#matters-table tbody tr")).to_have_count(2)
    tab_to(page, "Open M-2026-0010")
    page.keyboard.press("Enter")
    expect(page.locator("#matter .card")).to_be_visible()
    tab_to(page, "Instant Bank Pay")
    page.keyboard.press("Enter")
    dialog = page.locator("#pay-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Amount (GBP)")).to_be_focused()  # focus starts where the clerk types
    tab_to(page, "Create link", limit=20)
    page.keyboard.press("Enter")
    expect(dialog.locator(".link-view h3")).to_contain_text("Payment link created")
    expect(dialog.get_by_role("button", name="Copy")).to_be_focused()  # focus moves to the result's first action
    shot(page, "22-keyboard-link")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator("#link-sent-marker")).to_contain_text("Link created at")
    expect(page.get_by_role("button", name="Instant Bank Pay")).to_be_focused()  # back where the clerk was

    # The screens by keyboard: Tab to a nav link, Enter; focus is visibly marked.
    tab_to(page, "Sent Pages", limit=60)
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid", outline
    page.keyboard.press("Enter")
    expect(page.locator("#screen-sent")).to_be_visible()
    expect(page.locator('#links-table tr[data-link]').first).to_be_visible()
