"""The staff console end to end: headless Chromium against a real agent, the demo firm and the sandbox pay page.
Screenshots of each screen go to test-artifacts/console/ (tests/console_support.py has the harness)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from console_support import (
    Agent,
    agent_fixture,  # noqa: F401  (pytest fixture "agent")
    assert_accessible,
    browser_fixture,  # noqa: F401  (pytest fixture "browser")
    delivery_set_up,
    expect,
    go,
    lands_on,
    new_page,
    page_fixture,  # noqa: F401  (pytest fixture "page")
    search,
    shot,
    sign_in,
)
from openpyxl import load_workbook
from tests_support import ARTIFACTS, PASSWORD, STAFF, person

from agent.core.model import Actor
from agent.engine.links import LinkRequest
from agent.engine.sync import Syncer
from agent.service.loop import poll_payments
from agent.state import audit
from connectors.providers import sandbox
from connectors.providers.sandbox import SandboxProvider
from postings.outbox import Outbox

MATTER = "M-2026-0010"  # Okafor: INV-1001 644.30 + INV-1002 1443.75, payer has an email
NO_EMAIL = "M-2026-0040"  # Ó Súilleabháin: payer without an email
SENDS = "M-2026-0030"  # Nakamura: one statement, email and phone (+44 7700 900003)
THREE = "M-2026-0050"  # Fernández: three open statements
MONEY = r"^-?£\d{1,3}(,\d{3})*\.\d{2}$"
DATE = r"^\d{1,2} [A-Z][a-z]{2} \d{4}$"
MOMENT = r"^\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2}$"


def test_login_page_refuses_a_wrong_password_signs_in_by_name_and_signs_out(page: Any, agent: Agent) -> None:
    person(agent.rt.store, "clerk", "clerk")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.goto(f"{agent.url}/console/")
    lands_on(page, "/console/login")  # ?expired=1: the first request found no session
    page.get_by_label("User name").fill("clerk")
    page.get_by_label("Password").fill("not the password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    shot(page, "01-login")
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    lands_on(page, "/console/#debts")
    expect(page.locator("#signed-in-as")).to_have_text("clerk (clerk)")
    session = {c["name"]: c["value"] for c in page.context.cookies()}["ledgerlink_session"]
    assert session and PASSWORD not in page.url
    page.get_by_role("button", name="Sign out").click()
    lands_on(page, "/console/login")
    ended = httpx.get(f"{agent.url}/status", headers={"Authorization": f"Bearer {session}"})
    assert ended.status_code == 401  # signing out ends the session at the agent, not only in the tab
    assert not [url for url in asked if "favicon" in url]  # the pages name no icon to fetch
    assert httpx.get(f"{agent.url}/favicon.ico").status_code == 204  # a browser asking anyway gets no 401


def test_instant_bank_pay_from_search_to_posting(page: Any, agent: Agent) -> None:
    sign_in(page, agent)
    assert "token=" not in page.url
    search(page, "okafor")
    results = page.locator("#matters-table tbody tr")
    expect(results).to_have_count(2)
    page.get_by_role("button", name=f"Open {MATTER}").click()
    expect(page.locator("#statements-table")).to_contain_text("INV-1002")
    expect(page.locator("#open-balance")).to_have_text("£2,088.05")
    shot(page, "02-debts")

    page.get_by_role("button", name="Instant Bank Pay").click()
    dialog = page.locator("#pay-dialog")
    expect(dialog.get_by_label("Amount (GBP)")).to_have_value("2088.05")
    expect(dialog.get_by_label("Description")).to_have_value(agent.rt.links.description())
    shot(page, "03-popup")
    dialog.get_by_label("Description").fill("Probate fees to date")
    dialog.get_by_label("Description").press("Enter")  # Enter submits the form
    expect(dialog.locator(".link-view h3")).to_contain_text("Payment link created")
    expect(dialog.locator(".badge")).to_have_text("Outstanding")
    expect(dialog.locator(".delivery")).to_contain_text("Not sent to the payer yet")
    url = dialog.get_by_label("Payment link").input_value()
    assert url.startswith(f"{agent.pay.url}/pay/")
    for name in ("Copy", "Open", "Cancel & Create New"):
        expect(dialog.get_by_role("button", name=name, exact=True)).to_be_visible()
    shot(page, "04-link-ready")

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    banner = page.locator("#link-sent-marker")
    expect(banner).to_contain_text("Link created at")
    expect(banner).not_to_contain_text("sent")  # created is not sent: nothing was emailed or texted
    page.get_by_role("button", name="Instant Bank Pay").click()
    expect(dialog.locator(".link-view h3")).to_contain_text("already has a payment link")
    assert dialog.get_by_label("Payment link").input_value() == url  # the SAME link, not a second one
    shot(page, "05-existing-link")
    page.keyboard.press("Escape")

    payer = page.context.new_page()
    payer.goto(url)
    expect(payer.locator("#amount")).to_contain_text("2088.05")
    # what the payer is paying, by the numbers the firm writes (issue 24 item 9)
    expect(payer.locator("#firm")).to_have_text("Demo Legal LLP")
    expect(payer.locator("#matter")).to_have_text(MATTER)
    expect(payer.locator("#invoices")).to_have_text("INV-1001, INV-1002")
    expect(payer.locator("#disclaimer")).to_contain_text("regulated by the Solicitors Regulation Authority")
    payer.get_by_role("button", name="Pay by bank").click()
    expect(payer.get_by_role("status")).to_contain_text("payment was received")
    # the receipt says how much was paid, to whom and for what (issue 26)
    expect(payer.locator("#amount-paid")).to_have_text("GBP 2088.05")
    expect(payer.get_by_role("status")).to_contain_text("to Demo Legal LLP")
    expect(payer.locator("#matter")).to_have_text(MATTER)
    shot(payer, "04b-payer-receipt")
    payer.close()

    assert poll_payments(agent.rt) >= 1
    assert Outbox(agent.rt.store, agent.rt.connector, agent.rt.mapping).run_once().get("posted") == 2
    go(page, agent, "postings")
    rows = page.locator("#postings-list tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first.locator(".badge")).to_have_text("Posted")
    expect(rows.first).to_contain_text("Written into the matter system")
    expect(rows.first).to_contain_text(MATTER)
    shot(page, "06-postings")

    Syncer(agent.rt.store, agent.rt.connector).sync()
    go(page, agent, "debts")
    search(page, MATTER)
    expect(page.locator("#open-balance")).to_have_text("£0.00")  # "GBP 0" beside "GBP 0.00" no more
    expect(page.locator("#matter")).to_contain_text("No open statements")

    go(page, agent, "sent")
    page.get_by_label("Payment Received").check()
    expect(page.locator("#links-table tbody tr")).to_have_count(1)
    expect(page.locator("#links-table .badge")).to_have_text("Payment received")
    shot(page, "07-sent-pages")


def test_email_required_when_the_payer_has_none(page: Any, agent: Agent) -> None:
    sign_in(page, agent)
    search(page, NO_EMAIL)
    page.get_by_role("button", name="Instant Bank Pay").click()
    dialog = page.locator("#pay-dialog")
    expect(dialog.locator("#email-required")).to_contain_text("no email address")
    expect(dialog.get_by_role("button", name="Create link")).to_be_disabled()
    shot(page, "08-email-required")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_sent_pages_columns_export_and_cancel(page: Any, agent: Agent) -> None:
    link = agent.rt.links.create(STAFF, LinkRequest(matter="M-2026-0011"))
    sign_in(page, agent)
    go(page, agent, "sent")
    row = page.locator(f'#links-table tr[data-link="{link.id}"]')
    expect(row).to_contain_text("M-2026-0011")
    assert "Invoice Number" in page.locator("#links-table thead th").all_inner_texts()  # shown by default
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    row.get_by_role("button", name=f"Copy link {link.id}").click()
    expect(page.locator("#notice")).to_contain_text("copied")
    assert page.evaluate("navigator.clipboard.readText()") == link.url

    page.get_by_role("button", name="Columns…").click()
    page.get_by_role("checkbox", name="Link ID").check()
    page.get_by_role("button", name="Move Link ID up").click()
    shot(page, "09-columns")
    page.keyboard.press("Escape")
    headings = page.locator("#links-table thead th").all_inner_texts()
    assert "Link ID" in headings

    with page.expect_download() as download:
        page.get_by_role("button", name="Export to Excel").click()
    saved = ARTIFACTS / "sent-pages.xlsx"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    download.value.save_as(saved)
    assert re.fullmatch(r"sent-pages-outstanding-\d{4}-\d{2}-\d{2}\.xlsx", download.value.suggested_filename)
    sheet = load_workbook(saved).active
    header = [c.value for c in sheet[1]]
    assert header[: len(headings) - 1] == headings[:-1]
    assert any(link.id in [c.value for c in r] for r in sheet.iter_rows(min_row=2))
    status = header.index("Status")
    assert {r[status].value for r in sheet.iter_rows(min_row=2)} <= {"Outstanding", "Being created",
                                                                      "Payment received", "Cancelled", "Expired",
                                                                      "Failed"}  # in words, as on the screen

    page.once("dialog", lambda confirm: confirm.accept())
    row.get_by_role("button", name=f"Cancel link {link.id}").click()
    expect(page.locator("#notice")).to_contain_text("cancelled")
    assert agent.rt.links.get(link.id).status == "cancelled"


def test_quick_link_and_admin_settings(page: Any, agent: Agent) -> None:
    sign_in(page, agent)
    go(page, agent, "quick")
    quick = page.locator("#screen-quick")
    quick.get_by_label("No, I will copy the link myself").check()
    quick.get_by_label("Amount due").fill("120.00")
    quick.get_by_label("Name", exact=True).fill("Dana Reed")
    # Issue 26: a link staff copy and send themselves needs no email (the guide's manual delivery)
    expect(quick.get_by_label("Email (optional)")).to_have_value("")
    quick.get_by_label("Invoice number").fill("OLD-77")
    quick.get_by_label("Amount due").fill("120,00")  # a clerk's slip: said in words beside the field, marked
    quick.get_by_role("button", name="Generate Link").click()
    expect(page.locator("#quick-error")).to_contain_text("Amount due: ")
    expect(page.locator("#quick-error")).not_to_contain_text("body.")
    expect(quick.get_by_label("Amount due")).to_have_attribute("aria-invalid", "true")
    expect(quick.get_by_label("Amount due")).to_be_focused()
    shot(page, "10a-quick-link-refused")
    quick.get_by_label("Amount due").fill("120.00")
    quick.get_by_role("button", name="Generate Link").click()
    expect(page.locator("#quick-result .badge")).to_have_text("Outstanding")
    expect(page.locator("#quick-result .link-amount")).to_have_text("£120.00")
    made = next(link for link in agent.rt.links.find(None, None) if link.invoice_number == "OLD-77")
    assert made.payer_name == "Dana Reed" and made.payer_email is None
    shot(page, "10-quick-link")

    sign_in(page, agent, "admin")
    go(page, agent, "settings")
    form = page.locator('form[data-account="trust"]')
    form.get_by_label("Disclaimer on the payment page").fill("Client account (trust).")
    form.get_by_role("button", name="Save trust").click()
    expect(form.get_by_role("status")).to_contain_text("Saved")
    assert "Client account (trust)." in (agent.home / "ledgerlink.toml").read_text(encoding="utf-8")
    shot(page, "11-settings-admin")


# ------------------------------------------------------------------------------ issue 15, item by item


def test_demo_run_loads_the_demo_settings_it_just_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 1: `run --demo` on an empty home serves the demo's own accounts and firm name, not the defaults."""
    from agent.cli import home as home_cli
    from agent.cli.main import main

    seen: dict[str, Any] = {}

    def run_service(rt: Any, once: bool = False) -> int:
        seen["accounts"], seen["service"] = sorted(rt.settings.accounts), rt.settings.service_name
        seen["description"] = rt.links.description()
        return 0

    monkeypatch.setattr(home_cli, "run_service", run_service)
    monkeypatch.delenv("LEDGERLINK_HOME", raising=False)
    assert main(["--home", str(tmp_path / "fresh"), "run", "--demo", "--once"]) == 0
    assert seen["accounts"] == ["operating", "trust"]
    assert seen["service"] == "Demo Legal LLP" and seen["description"].startswith("Demo Legal LLP")


def bulk_upload(page: Any, path: Path) -> None:
    page.get_by_label("Spreadsheet (CSV or TXT)").set_input_files(str(path))
    page.locator("#bulk-form").get_by_role("button", name="Upload").click()


def test_bulk_problems_show_row_field_and_reason(page: Any, agent: Agent, tmp_path: Path) -> None:
    """Item 2: each problem is a row: the spreadsheet row, the column and the reason (never [object Object])."""
    header = "Invoice number,Invoice date,Due date,Recipient name,Recipient email,Amount,Custom message\n"
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "B-1,2026-11-01,2026-12-01,Ann Lee,ann@example.com,12.345,\n"
                   "B-2,31/31/2026,2026-12-01,Bo Park,not-an-email,40.00,\n", encoding="utf-8")
    sign_in(page, agent)
    go(page, agent, "bulk")
    bulk_upload(page, bad)
    problems = page.locator("#bulk-problems tbody tr")
    expect(problems.first).to_be_visible()
    texts = problems.all_inner_texts()
    assert texts and not any("[object Object]" in t for t in texts), texts
    cells = [r.split("\t") for r in texts]
    assert {c[0] for c in cells} == {"2", "3"}  # rows as the spreadsheet numbers them (header is row 1)
    assert all(len(c) == 4 and c[1] and c[3] for c in cells), cells  # every problem names a column and a reason
    amount = next(c for c in cells if c[0] == "2")
    assert amount[1] == "Amount" and amount[2] == "12.345" and "decimal" in amount[3]
    expect(page.locator("#bulk-review")).to_be_empty()
    shot(page, "12-bulk-problems")

    good = tmp_path / "good.csv"
    good.write_text(header + "B-10,2026-11-01,2026-12-01,Ann Lee,ann@example.com,1250.5,Fees\n", encoding="utf-8")
    bulk_upload(page, good)
    expect(page.locator("#bulk-problems")).to_have_count(0)
    row = page.locator("#bulk-rows tbody tr").first
    expect(row).to_contain_text("Ann Lee")
    expect(row).to_contain_text("£1,250.50")
    expect(row).to_contain_text("1 Nov 2026")
    send_all = page.get_by_role("button", name="Send All: email not set up")
    expect(send_all).to_be_disabled()
    expect(page.locator("#bulk-why")).to_have_text("Email is not set up for this firm yet; ask your administrator.")
    with page.expect_download():
        page.get_by_role("button", name="Generate Links for Download").click()
    expect(row).to_contain_text("Link created, not sent")
    shot(page, "13-bulk-review")


def test_bulk_send_all_says_emailed_to_whom(page: Any, agent: Agent, tmp_path: Path) -> None:
    """Item 3 for Send All: each row says what its send did, from the send record."""
    header = "Invoice number,Invoice date,Due date,Recipient name,Recipient email,Amount,Custom message\n"
    file = tmp_path / "send.csv"
    file.write_text(header + "B-20,2026-11-01,2026-12-01,Cy Moss,cy@example.com,80.00,\n", encoding="utf-8")
    with delivery_set_up(agent):
        sign_in(page, agent)
        go(page, agent, "bulk")
        bulk_upload(page, file)
        page.get_by_role("button", name="Send All", exact=True).click()
        expect(page.locator("#bulk-rows tbody tr").first).to_contain_text("Emailed to cy@example.com at ")


def test_debt_row_and_banner_say_exactly_what_happened(page: Any, agent: Agent) -> None:
    """Item 3: created; emailed to X at T; texted to Y at T; sending failed (why), on the popup, the matter's
    banner and the search result row."""
    with delivery_set_up(agent) as gateway:
        sign_in(page, agent)
        search(page, SENDS)
        page.get_by_role("button", name="Instant Bank Pay").click()
        dialog = page.locator("#pay-dialog")
        dialog.get_by_role("button", name="Create link").click()
        story = dialog.locator(".delivery")
        expect(story).to_contain_text("Link created at")
        expect(story).to_contain_text("Not sent to the payer yet")

        sender = page.locator("#send-dialog")
        dialog.get_by_role("button", name="Send via email").click()
        sender.get_by_role("button", name="Send email").click()
        expect(sender.get_by_role("status")).to_have_text(
            re.compile(r"^Emailed to nakamura@example\.com at \d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2}\.$"))
        sender.locator(".actions").get_by_role("button", name="Close").click()
        dialog.get_by_role("button", name="Send via text").click()
        sender.get_by_role("button", name="Send text").click()
        expect(sender.get_by_role("status")).to_contain_text("Texted to +447700900003 at ")
        sender.locator(".actions").get_by_role("button", name="Close").click()
        gateway.bad_numbers.add("+447700900003")
        dialog.get_by_role("button", name="Send via text").click()
        sender.get_by_role("button", name="Send text").click()
        failed = sender.get_by_role("status")
        expect(failed).to_contain_text("Sending by text to +447700900003 failed at ")
        expect(failed).to_contain_text("not a valid phone number")
        shot(page, "14-send-failed")
        sender.locator(".actions").get_by_role("button", name="Close").click()
        expect(story.locator("li")).to_have_count(4)
        link_id = dialog.locator(".link-view").get_attribute("data-link-id")
        agent.rt.sender.send(STAFF, link_id, "email", purpose="reminder:1")
        page.keyboard.press("Escape")

    banner = page.locator("#link-sent-marker li")
    expect(banner).to_have_count(5)
    words = banner.all_inner_texts()
    assert words[0].startswith("Link created at ")
    assert words[1].startswith("Emailed to nakamura@example.com at ")
    assert words[2].startswith("Texted to +447700900003 at ")
    assert words[3].startswith("Sending by text to +447700900003 failed at ") and "(code 21211)" in words[3]
    assert words[4].startswith("Reminder emailed to nakamura@example.com at ")  # the reminders job's send
    search(page, "Nakamura")
    expect(page.locator(f'#matters-table tr[data-matter="{SENDS}"] .delivery-cell')).to_contain_text(
        "Reminder emailed to nakamura@example.com at ")
    shot(page, "15-debt-delivery")


def test_search_forgives_a_typo_and_finds_an_invoice_number(page: Any, agent: Agent) -> None:
    """Issue 17: two letters swapped in a client's name still list their matters; an invoice number finds its
    one matter, which opens by itself."""
    sign_in(page, agent)
    search(page, "Nakamrua")
    expect(page.locator("#matters-table tbody tr")).to_have_count(2)
    expect(page.locator(f'#matters-table tr[data-matter="{SENDS}"]')).to_contain_text("Nakamura")
    page.locator("#search").focus()  # back to the box, as a click would
    search(page, "INV-1001")
    expect(page.locator("#matter-title")).to_contain_text(MATTER)
    expect(page.locator("#matters-table tbody tr")).to_have_count(1)


def test_email_not_set_up_says_so_before_send_is_pressed(browser: Any, agent: Agent) -> None:
    """Item 4: the clerk is told to ask the administrator; the admin is told what to set."""
    link = agent.rt.links.create(STAFF, LinkRequest(matter="M-2026-0060"))
    clerk = "Email is not set up for this firm yet; ask your administrator."
    admin = "Email is not set up: set [smtp] from_address in ledgerlink.toml"
    for user, expected, name in (("clerk", clerk, "16-clerk-no-email"), ("admin", admin, "17-admin-no-email")):
        page = new_page(browser)
        sign_in(page, agent, user)
        search(page, "M-2026-0060")
        page.get_by_role("button", name="Instant Bank Pay").click()
        dialog = page.locator("#pay-dialog")
        send = dialog.get_by_role("button", name="Send via email: not set up")
        expect(send).to_be_disabled()
        expect(dialog.locator(f"#why-email-{link.id}")).to_contain_text(expected)
        assert send.get_attribute("aria-describedby") == f"why-email-{link.id}"
        expect(dialog.get_by_role("button", name="Send via text: not set up")).to_be_disabled()
        shot(page, name)
        page.keyboard.press("Escape")
        go(page, agent, "quick")
        expect(page.get_by_label("Yes, email it to the recipient")).to_be_disabled()
        expect(page.get_by_label("No, I will copy the link myself")).to_be_checked()
        expect(page.locator("#quick-send-why")).to_contain_text(expected)
        expect(page.locator("#quick-submit")).to_have_text("Generate Link")
        assert not page.errors
        page.context.close()


def test_a_clerk_never_sees_the_config_file_when_email_goes_away(browser: Any, agent: Agent) -> None:
    """Item 4 when the setting vanishes after the page loaded: the API's 409 reaches the clerk as plain words."""
    agent.rt.links.create(STAFF, LinkRequest(matter="M-2026-0071"))
    smtp = agent.rt.settings.smtp
    page = new_page(browser)
    smtp.from_address = "billing@demo.example"
    try:
        sign_in(page, agent)  # the console reads "email is set up"
    finally:
        smtp.from_address = None  # and then it is not
    search(page, "M-2026-0071")
    page.get_by_role("button", name="Instant Bank Pay").click()
    page.locator("#pay-dialog").get_by_role("button", name="Send via email").click()
    sender = page.locator("#send-dialog")
    sender.get_by_role("button", name="Send email").click()
    expect(sender.get_by_role("status")).to_have_text("Email is not set up for this firm yet; ask your administrator.")
    assert not page.errors
    page.context.close()


def test_money_and_dates_in_the_firms_locale_and_time_zone(browser: Any, agent: Agent) -> None:
    """Item 5: one style on every table (format.js); another firm locale and zone change every screen alike."""
    link = agent.rt.links.create(STAFF, LinkRequest(matter="M-2026-0090"))
    page = new_page(browser)
    sign_in(page, agent)
    search(page, THREE)
    for text in page.locator("#matter .facts dd").all_inner_texts()[2:]:
        assert re.match(MONEY, text), text
    for row in page.locator("#statements-table tbody tr").all():
        issued, due, billed, balance = row.locator("td").all_inner_texts()[1:]
        assert re.match(DATE, issued) and re.match(DATE, due), (issued, due)
        assert re.match(MONEY, billed) and re.match(MONEY, balance), (billed, balance)
    expect(page.locator("#agent-status")).to_contain_text(re.compile("synced " + MOMENT.lstrip("^")))
    exact = page.evaluate("""async () => { const f = await import("/console/static/format.js");
        return [f.money("12345678901234567.89", "GBP"), f.money("12.345", "GBP"), f.money("-5", "GBP"),
                f.when("2026-06-29"), f.when("2026-06-29T23:30:00Z")]; }""")
    # never through a float, never rounded; a calendar date never moved by a zone; a moment in London time (BST)
    assert exact == ["£12,345,678,901,234,567.89", "£12.345", "-£5.00", "29 Jun 2026", "30 Jun 2026, 00:30"], exact
    go(page, agent, "sent")
    page.get_by_label("All").check()
    expect(page.locator("#links-table caption")).to_contain_text("All:")
    created = page.locator("#links-table tbody tr td:first-child").all_inner_texts()
    assert created and all(re.match(DATE, t) for t in created), created
    go(page, agent, "postings")
    for row in page.locator("#postings-list tbody tr").all():
        assert re.match(MONEY, row.locator("td.num").inner_text())
        assert re.match(MOMENT, row.locator("td:nth-child(3)").inner_text().splitlines()[0])
    page.context.close()

    settings = agent.rt.settings
    before = settings.firm_locale, settings.firm_timezone
    settings.firm_locale, settings.firm_timezone = "de-DE", "America/New_York"
    try:
        page = new_page(browser)
        sign_in(page, agent)
        search(page, THREE)
        expect(page.locator("#open-balance")).to_have_text("5.286,83\u00a0£")
        search(page, "M-2026-0090")
        local = link.created_at.astimezone(ZoneInfo("America/New_York"))
        expect(page.locator("#link-sent-marker li").first).to_have_text(
            f"Link created at {local:%d.%m.%Y, %H:%M}")
        shot(page, "18-locale-de")
        page.context.close()
    finally:
        settings.firm_locale, settings.firm_timezone = before


def one_line(locator: Any) -> bool:
    """The element's text (if any) sits on a single line box: it did not wrap."""
    return bool(locator.evaluate("e => { const r = document.createRange(); r.selectNodeContents(e); "
                                 "return new Set([...r.getClientRects()].map((b) => Math.round(b.top))).size <= 1; }"))


def test_layout_spacing_no_wrapping_choose_statements_and_clerk_settings(browser: Any, agent: Agent) -> None:
    """Item 6 at 860 px: the card clear of the table; Sent Pages on one line; choose-statements mode hides the
    Amount and keeps Create link in view; a clerk's Settings says why and shows no form."""
    agent.rt.links.create(STAFF, LinkRequest(matter="M-2026-0070"))
    page = new_page(browser, 860, 860)
    sign_in(page, agent)
    search(page, "Fernández")
    page.get_by_role("button", name=f"Open {THREE}").click()
    table = page.locator("#matters-table").bounding_box()
    card = page.locator("#matter .card").bounding_box()
    assert card["y"] - (table["y"] + table["height"]) >= 16, (table, card)

    page.get_by_role("button", name="Instant Bank Pay").click()
    dialog = page.locator("#pay-dialog")
    dialog.get_by_label("Choose statements and amounts").check()
    expect(dialog.get_by_label("Amount (GBP)")).to_be_hidden()
    expect(dialog.locator("#pick-table")).to_be_visible()
    create = dialog.get_by_role("button", name="Create link")
    box, frame = create.bounding_box(), dialog.bounding_box()
    assert frame["y"] <= box["y"] and box["y"] + box["height"] <= min(frame["y"] + frame["height"], 860), (box, frame)
    shot(page, "19-choose-statements-860")
    dialog.get_by_label("The remaining balance (oldest statements first)").check()
    expect(dialog.get_by_label("Amount (GBP)")).to_be_visible()
    page.keyboard.press("Escape")

    go(page, agent, "sent")
    page.get_by_label("All").check()
    expect(page.locator("#links-table caption")).to_contain_text("All:")
    for column in (1, 3):  # Created, Matter
        for cell in page.locator(f"#links-table tbody td:nth-child({column})").all():
            assert one_line(cell), cell.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")  # wide tables scroll in place
    shot(page, "20-sent-pages-860")

    go(page, agent, "settings")
    expect(page.locator("#admin-only")).to_contain_text("Settings are for administrators")
    expect(page.locator("#admin-only")).to_contain_text("ask your administrator")
    expect(page.locator("#settings-body form, #settings-body textarea")).to_have_count(0)
    expect(page.locator("#accounts-summary")).to_contain_text("trust")
    shot(page, "21-settings-clerk")
    assert not page.errors
    page.context.close()


def test_extra_endpoints_remove_and_reallocate_postings(agent: Agent) -> None:
    import httpx

    from connectors.providers import sandbox

    link = agent.rt.links.create(STAFF, LinkRequest(matter="M-2026-0020"))
    assert link.provider_ref is not None
    sandbox.pay(agent.home, link.provider_ref)
    poll_payments(agent.rt)
    with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {agent.token}"}) as client:
        assert httpx.get(f"{agent.url}/manage-postings").status_code == 401
        pending = client.get("/manage-postings", params={"status": "pending"}).json()
        mine = [p for p in pending if p["link_id"] == link.id]
        assert mine and mine[0]["matter_number"] == "M-2026-0020"
        move = f"/postings/{mine[0]['id']}/reallocate"
        assert client.post(move, json={"statements": {"INV-1001": "1.00"}}).status_code == 403  # a clerk may not
        admin = {"Authorization": f"Bearer {agent.admin_token}"}
        refused = client.post(move, json={"statements": {"INV-1001": "1.00"}}, headers=admin)
        assert refused.status_code == 422 and "only incomplete" in refused.json()["error"]
        remove = f"/postings/{mine[0]['id']}/remove"
        assert client.post(remove, json={"reason": "recorded by hand"}).status_code == 403
        removed = client.post(remove, json={"reason": "recorded by hand"}, headers=admin)
        assert removed.json()["state"] == "removed"
        assert [a["default"] for a in client.get("/accounts").json()] == [True, False]


def test_console_info_and_link_delivery_endpoints(agent: Agent) -> None:
    """The read-only fields the console relies on: role, locale, zone, channel readiness; a matter's sends."""
    import httpx

    with httpx.Client(base_url=agent.url) as client:
        clerk = client.get("/console-info", headers={"Authorization": f"Bearer {agent.token}"}).json()
        admin = client.get("/console-info", headers={"Authorization": f"Bearer {agent.admin_token}"}).json()
        assert clerk == {**admin, "user": "clerk", "role": "clerk"}
        assert (admin["user"], admin["role"]) == ("admin", "admin")
        assert clerk["firm_name"] == "Demo Legal LLP" and clerk["locale"] == "en-GB"
        assert clerk["time_zone"] == "Europe/London"
        assert clerk["email"] == {"ready": False, "missing": ["[smtp] from_address"]}
        assert clerk["sms"]["ready"] is False and "[sms] account" in clerk["sms"]["missing"]
        link = agent.rt.links.create(STAFF, LinkRequest(matter="M-2026-0080"))
        found = client.get("/link-delivery", params={"matter": ["M-2026-0080", "M-2026-0100"]},
                           headers={"Authorization": f"Bearer {agent.token}"}).json()
        assert [(d["matter_number"], d["link_id"], d["sends"]) for d in found] == [("M-2026-0080", link.id, [])]
        assert client.get("/link-delivery", params={"matter": "M-2026-0080"}).status_code == 401


def test_the_footer_says_which_version_is_running(page: Any, agent: Agent) -> None:
    """Issue 16 item 6: the version a clerk can read out to support, the same as /status and --version."""
    from agent import __version__

    sign_in(page, agent)
    expect(page.locator("footer.about")).to_have_text(f"Ledgerlink {__version__}")


def test_refund_is_an_action_on_the_payment_prefilled_with_what_is_left(page: Any, agent: Agent) -> None:
    """A payment split over two bills: one Refund for the payment, pre-filled with all that is left and showing
    both postings, not one Refund per posting row pre-filled with that row's part."""
    first, second = agent.rt.links.defaults(THREE).statements[:2]
    paid = first.balance + Decimal("1.00")  # the first bill in full and 1.00 of the second
    link = agent.rt.links.create(STAFF, LinkRequest(matter=THREE, amount=paid))
    assert link.provider_ref is not None
    ref = sandbox.pay(agent.home, link.provider_ref, method="card")
    poll_payments(agent.rt)
    Outbox(agent.rt.store, agent.rt.connector, agent.rt.mapping).run_once()
    sign_in(page, agent, "admin")
    go(page, agent, "postings")
    expect(page.locator("#postings-list tbody tr", has_text=ref)).to_have_count(2)
    refunds = page.get_by_role("button", name=f"Refund payment {ref}")
    expect(refunds).to_have_count(1)
    refunds.click()
    dialog = page.locator("#posting-dialog")
    expect(dialog.get_by_label("Amount to refund")).to_have_value(str(paid))
    expect(dialog.locator("#refund-postings tbody tr")).to_have_count(2)
    expect(dialog).to_contain_text(first.number)
    expect(dialog).to_contain_text(second.number)
    page.screenshot(path=str(agent.home / "refund-popup.png"))
    dialog.get_by_label("Amount to refund").fill("1.00")
    dialog.get_by_label("Why").fill("overpaid")
    dialog.get_by_role("button", name="Refund", exact=True).click()
    expect(page.locator("#notice")).to_contain_text("succeeded at the provider")
    page.get_by_role("button", name=f"Refund payment {ref}").click()
    expect(page.locator("#posting-dialog").get_by_label("Amount to refund")).to_have_value(str(paid - 1))
    page.keyboard.press("Escape")


def test_payouts_page_the_client_money_banner_and_the_admin_refund(page: Any, agent: Agent) -> None:
    """A trust account paid out net of fees (the sandbox set to net for it): the banner names the transfer, the
    Payouts page shows each payout's breakdown and whether it adds up, and only an admin sees Refund."""
    link = agent.rt.links.create(STAFF, LinkRequest(matter=THREE, amount=Decimal("200.00"), account="trust"))
    assert link.provider_ref is not None
    net = agent.rt.settings.accounts["trust"].model_copy(update={"options": {"payout_fees": "net"}})
    SandboxProvider(net, None, home=str(agent.home))  # the provider's own setting for this account, from now
    sandbox.pay(agent.home, link.provider_ref, method="card")
    office = agent.rt.links.create(STAFF, LinkRequest(matter=SENDS, amount=Decimal("50.00")))
    assert office.provider_ref is not None
    sandbox.pay(agent.home, office.provider_ref, method="card")
    poll_payments(agent.rt)
    Outbox(agent.rt.store, agent.rt.connector, agent.rt.mapping).run_once()
    sandbox.pay_out(agent.home)
    [breach] = agent.rt.payouts.sync().breaches
    try:
        sign_in(page, agent)
        expect(page.locator("#client-money")).to_contain_text("transfer GBP 3.20 from 'operating' to 'trust'")
        go(page, agent, "payouts")
        row = page.locator(f'tr[data-payout="{breach.payout_id}"]')
        expect(row).to_contain_text("trust (client)")
        expect(row).to_contain_text("Breach: £3.20 of fees taken from client money")
        expect(page.locator("#payouts-list")).to_contain_text("Adds up to the penny")
        row.get_by_role("button").click()
        expect(page.locator("#payout-items")).to_contain_text("fee")
        assert_accessible(page, "the payout popup")
        page.keyboard.press("Escape")
        assert_accessible(page, "#payouts with a breach")
        go(page, agent, "postings")
        expect(page.locator("#postings-list")).to_be_visible()
        assert page.get_by_role("button", name=re.compile("^Refund")).count() == 0  # a clerk cannot refund
        sign_in(page, agent, "admin")
        go(page, agent, "postings")
        page.get_by_role("button", name=re.compile("^Refund payment")).first.click()
        page.get_by_label("Amount to refund").fill("999.00")
        page.get_by_label("Why").fill("overpaid")
        page.locator("#posting-dialog").get_by_role("button", name="Refund", exact=True).click()
        expect(page.locator("#posting-dialog [role=alert]")).to_contain_text("more than is left")
        assert_accessible(page, "the refund popup with its error")
        page.get_by_label("Amount to refund").fill("10.00")
        page.locator("#posting-dialog").get_by_role("button", name="Refund", exact=True).click()
        expect(page.locator("#notice")).to_contain_text("succeeded at the provider")
        newest = agent.rt.refunds.listing()[-1]
        assert (newest.actor, newest.amount) == ("user:admin", Decimal("10.00"))
    finally:
        agent.rt.payouts.clear(Actor("user", "admin"), breach.payout_id, "transferred in the test")
        SandboxProvider(agent.rt.settings.accounts["trust"], None, home=str(agent.home))


def test_sandbox_pay_out_now_shows_the_payout_and_its_fees_within_a_minute(page: Any, agent: Agent) -> None:
    """Issue 26 item 6: an admin's Pay out now makes the sandbox pay out today's settled payments and reads
    them, so the payout, its fee and deposit postings show at once; a clerk has no such button, the API refuses
    one, and no real provider is asked to (tests/cli/test_cli.py: exit 2 naming it)."""
    link = agent.rt.links.create(STAFF, LinkRequest(name="Ada Payer", email="ada@example.com",
                                                    amount=Decimal("40.00")))  # a quick link: owed or not
    assert link.provider_ref is not None
    paid = sandbox.pay(agent.home, link.provider_ref, method="card")
    poll_payments(agent.rt)
    refused = httpx.post(f"{agent.url}/payouts/pay-out-now", headers={"Authorization": f"Bearer {agent.token}"})
    assert refused.status_code == 403  # a clerk's token
    sign_in(page, agent)
    go(page, agent, "payouts")
    expect(page.get_by_role("button", name="Pay out now (sandbox)")).to_be_hidden()
    sign_in(page, agent, "admin")
    go(page, agent, "payouts")
    page.get_by_role("button", name="Pay out now (sandbox)").click()
    expect(page.locator("#notice")).to_contain_text(re.compile(r"\d+ payouts? made and read; \d+ postings? queued"))
    [payout] = [v for v in map(agent.rt.payouts.show, (p.id for p in agent.rt.payouts.listing()))
                if any(i.payment_ref == paid for i in v.items)]
    ours = {(i.kind, i.amount) for i in payout.items if i.payment_ref == paid}
    assert ours == {("payment", Decimal("40.00")), ("fee", Decimal("-0.80"))}  # card: 1.5% + 0.20
    assert payout.adds_up and payout.status == "paid"
    row = page.locator(f'tr[data-payout="{payout.id}"]')
    expect(row).to_contain_text("Adds up to the penny")
    expect(row).to_contain_text(f"£{payout.fees:.2f}")
    assert_accessible(page, "#payouts after pay out now")
    shot(page, "20-payouts-after-pay-out-now")
    with agent.rt.store.read() as conn:
        [entry] = [e for e in audit.entries(conn, obj="provider:sandbox") if e.action == "payout.pay_out_now"]
    assert entry.actor == "user:admin" and entry.outcome == "ok"
    page.get_by_role("button", name="Pay out now (sandbox)").click()  # nothing new settled: said so
    expect(page.locator("#notice")).to_contain_text("Nothing to pay out")


def test_debts_open_on_what_is_owed_filtered_and_opened_from_the_list(page: Any, agent: Agent) -> None:
    """Issue 26: the Debts screen lists what is owed before anything is searched, oldest debt first, with the
    firm's balance and what is left to collect; the filters narrow it and Open opens the matter."""
    agent.rt.links.create(Actor("user", "alice"), LinkRequest(matter=THREE))
    headers = {"Authorization": f"Bearer {agent.token}"}
    everything = httpx.get(f"{agent.url}/debts", params={"limit": 25}, headers=headers).json()
    waiting = httpx.get(f"{agent.url}/debts", params={"link": "outstanding", "limit": 25}, headers=headers).json()
    sign_in(page, agent)
    rows = page.locator("#owed-table tbody tr")
    expect(rows).to_have_count(len(everything["debts"]))
    expect(page.locator("#owed-table caption")).to_have_text(
        f"1\u2013{len(everything['debts'])} of {everything['total']} matters owing")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.matter)") == [d["matter"]["number"]
                                                                      for d in everything["debts"]]
    first = rows.first.locator("td")
    expect(first.nth(4)).to_have_text(re.compile(MONEY))
    expect(first.nth(2)).to_have_text(re.compile(DATE))
    shot(page, "05-debts-owed")
    page.get_by_label("Payment link").select_option("outstanding")
    expect(rows).to_have_count(len(waiting["debts"]))
    expect(page.locator(f'#owed-table tr[data-matter="{THREE}"]')).to_contain_text("Waiting to be paid")
    page.locator(f'#owed-table tr[data-matter="{THREE}"]').get_by_role("button", name="Open").click()
    expect(page.locator("#matter-title")).to_contain_text(THREE)
    assert not page.errors, page.errors
