"""The staff console end to end: headless Chromium (Debian's, never downloaded) against a real agent, the demo
firm and the sandbox pay page. Screenshots of each screen go to test-artifacts/console/."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from openpyxl import load_workbook
from tests_support import require

from agent.api.app import ADMIN_TOKEN, create_app, ensure_token
from agent.api.console import login_url, mount
from agent.engine.links import LinkRequest
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.service.loop import poll_payments
from connectors.providers.sandbox import SandboxPayServer
from postings.outbox import Outbox

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
MATTER = "M-2026-0010"  # Okafor: INV-1001 644.30 + INV-1002 1443.75, payer has an email
NO_EMAIL = "M-2026-0040"  # Ó Súilleabháin: payer without an email


@dataclasses.dataclass
class Agent:
    home: Path
    rt: Runtime
    url: str
    token: str
    admin_token: str
    pay: SandboxPayServer


def _serve(rt: Runtime) -> tuple[uvicorn.Server, threading.Thread]:
    """The API with the console mounted, as the service serves it, on a free port of 127.0.0.1."""
    app = create_app(rt)
    mount(app)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    return server, thread


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    home = tmp_path_factory.mktemp("console") / "home"
    init_home(home)
    pay = SandboxPayServer(home).start()
    config = home / "ledgerlink.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace('provider = "sandbox"', f'provider = "sandbox"\napi_base = "{pay.url}"')
    config.write_text('secrets_backend = "file"\n' + text, encoding="utf-8")
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    Syncer(rt.store, rt.connector).sync()
    rt.store.record_ok("sync")  # what the service's sync job records
    server, thread = _serve(rt)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Agent(home, rt, f"http://127.0.0.1:{port}", ensure_token(rt.secrets),
                    ensure_token(rt.secrets, ADMIN_TOKEN), pay)
    finally:
        server.should_exit = True
        thread.join(10)
        pay.stop()
        rt.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        require(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object, agent: Agent) -> Iterator[object]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    context.set_default_timeout(8000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


def shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def sign_in(page: object, agent: Agent, token: str | None = None) -> None:
    page.goto(login_url(agent.url, token or agent.token))  # type: ignore[attr-defined]
    page.wait_for_url("**/console/#debts")  # type: ignore[attr-defined]


def search(page: object, text: str) -> None:
    """Keyboard only: Tab to the search box, type, Enter."""
    for _ in range(20):
        if page.evaluate("document.activeElement && document.activeElement.id") == "search":  # type: ignore[attr-defined]
            break
        page.keyboard.press("Tab")  # type: ignore[attr-defined]
    else:
        pytest.fail("Tab never reached the search box")
    page.keyboard.type(text)  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]


def expect(locator: object) -> object:
    return playwright_api.expect(locator)


# ------------------------------------------------------------------------------------------- tests


def test_login_page_refuses_a_wrong_token_and_accepts_the_right_one(page: object, agent: Agent) -> None:
    page.goto(f"{agent.url}/console/")  # type: ignore[attr-defined]
    page.wait_for_url("**/console/login")  # type: ignore[attr-defined]
    page.get_by_label("Access token").fill("not-the-token")  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    expect(page.get_by_role("alert")).to_contain_text("not accepted")  # type: ignore[attr-defined]
    shot(page, "01-login")
    page.get_by_label("Access token").fill(agent.token)  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.wait_for_url("**/console/#debts")  # type: ignore[attr-defined]
    assert "token" not in page.url  # type: ignore[attr-defined]


def test_instant_bank_pay_from_search_to_posting(page: object, agent: Agent) -> None:
    sign_in(page, agent)
    assert "token=" not in page.url  # type: ignore[attr-defined]
    search(page, "okafor")
    results = page.locator("#matters-table tbody tr")  # type: ignore[attr-defined]
    expect(results).to_have_count(2)
    page.get_by_role("button", name=f"Open {MATTER}").click()  # type: ignore[attr-defined]
    expect(page.locator("#statements-table")).to_contain_text("INV-1002")  # type: ignore[attr-defined]
    expect(page.locator("#open-balance")).to_have_text("GBP 2,088.05")  # type: ignore[attr-defined]
    shot(page, "02-debts")

    page.get_by_role("button", name="Instant Bank Pay").click()  # type: ignore[attr-defined]
    dialog = page.locator("#pay-dialog")  # type: ignore[attr-defined]
    expect(dialog.get_by_label("Amount (GBP)")).to_have_value("2088.05")
    expect(dialog.get_by_label("Description")).to_have_value(agent.rt.links.description())
    shot(page, "03-popup")
    dialog.get_by_label("Description").fill("Probate fees to date")
    dialog.get_by_label("Description").press("Enter")  # Enter submits the form
    expect(dialog.locator(".link-view h3")).to_contain_text("Payment link ready")
    expect(dialog.locator(".badge")).to_have_text("Outstanding")
    url = dialog.get_by_label("Payment link").input_value()
    assert url.startswith(f"{agent.pay.url}/pay/")
    for name in ("Copy", "Open", "Send via email", "Send via text", "Cancel & Create New"):
        expect(dialog.get_by_role("button", name=name, exact=True)).to_be_visible()
    shot(page, "04-link-ready")

    page.keyboard.press("Escape")  # type: ignore[attr-defined]
    expect(dialog).to_be_hidden()
    expect(page.locator("#link-sent-marker")).to_contain_text("Payment link sent")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Instant Bank Pay").click()  # type: ignore[attr-defined]
    expect(dialog.locator(".link-view h3")).to_contain_text("already has a payment link")
    assert dialog.get_by_label("Payment link").input_value() == url  # the SAME link, not a second one
    shot(page, "05-existing-link")
    page.keyboard.press("Escape")  # type: ignore[attr-defined]

    payer = page.context.new_page()  # type: ignore[attr-defined]
    payer.goto(url)
    expect(payer.locator("#amount")).to_have_text("GBP 2088.05")
    payer.get_by_role("button", name="Pay by bank").click()
    expect(payer.get_by_role("status")).to_contain_text("payment was received")
    payer.close()

    assert poll_payments(agent.rt) >= 1
    assert Outbox(agent.rt.store, agent.rt.connector, agent.rt.mapping).run_once().get("posted") == 2
    page.goto(f"{agent.url}/console/#postings")  # type: ignore[attr-defined]
    rows = page.locator("#postings-list tbody tr")  # type: ignore[attr-defined]
    expect(rows).to_have_count(2)
    expect(rows.first.locator(".badge")).to_have_text("Posted")
    expect(rows.first).to_contain_text("Written into the matter system")
    expect(rows.first).to_contain_text(MATTER)
    shot(page, "06-postings")

    Syncer(agent.rt.store, agent.rt.connector).sync()
    page.goto(f"{agent.url}/console/#debts")  # type: ignore[attr-defined]
    search(page, MATTER)
    expect(page.locator("#open-balance")).to_have_text("GBP 0")  # type: ignore[attr-defined]
    expect(page.locator("#matter")).to_contain_text("No open statements")  # type: ignore[attr-defined]

    page.goto(f"{agent.url}/console/#sent")  # type: ignore[attr-defined]
    page.get_by_label("Payment Received").check()  # type: ignore[attr-defined]
    expect(page.locator("#links-table tbody tr")).to_have_count(1)  # type: ignore[attr-defined]
    expect(page.locator("#links-table .badge")).to_have_text("Payment received")  # type: ignore[attr-defined]
    shot(page, "07-sent-pages")


def test_email_required_when_the_payer_has_none(page: object, agent: Agent) -> None:
    sign_in(page, agent)
    search(page, NO_EMAIL)
    page.get_by_role("button", name="Instant Bank Pay").click()  # type: ignore[attr-defined]
    dialog = page.locator("#pay-dialog")  # type: ignore[attr-defined]
    expect(dialog.locator("#email-required")).to_contain_text("no email address")
    expect(dialog.get_by_role("button", name="Create link")).to_be_disabled()
    shot(page, "08-email-required")
    page.keyboard.press("Escape")  # type: ignore[attr-defined]
    expect(dialog).to_be_hidden()


def test_sent_pages_columns_export_and_cancel(page: object, agent: Agent) -> None:
    link = agent.rt.links.create(LinkRequest(matter="M-2026-0011"))
    sign_in(page, agent)
    page.goto(f"{agent.url}/console/#sent")  # type: ignore[attr-defined]
    row = page.locator(f'#links-table tr[data-link="{link.id}"]')  # type: ignore[attr-defined]
    expect(row).to_contain_text("M-2026-0011")

    page.get_by_role("button", name="Columns…").click()  # type: ignore[attr-defined]
    page.get_by_role("checkbox", name="Link ID").check()  # type: ignore[attr-defined]
    page.get_by_role("button", name="Move Link ID up").click()  # type: ignore[attr-defined]
    shot(page, "09-columns")
    page.keyboard.press("Escape")  # type: ignore[attr-defined]
    headings = page.locator("#links-table thead th").all_inner_texts()  # type: ignore[attr-defined]
    assert "Link ID" in headings

    with page.expect_download() as download:  # type: ignore[attr-defined]
        page.get_by_role("button", name="Export to Excel").click()  # type: ignore[attr-defined]
    saved = ARTIFACTS / "sent-pages.xlsx"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    download.value.save_as(saved)
    sheet = load_workbook(saved).active
    header = [c.value for c in sheet[1]]
    assert header[: len(headings) - 1] == headings[:-1]
    assert any(link.id in [c.value for c in r] for r in sheet.iter_rows(min_row=2))

    page.once("dialog", lambda confirm: confirm.accept())  # type: ignore[attr-defined]
    row.get_by_role("button", name=f"Cancel link {link.id}").click()
    expect(page.locator("#notice")).to_contain_text("cancelled")  # type: ignore[attr-defined]
    assert agent.rt.links.get(link.id).status == "cancelled"


def test_other_screens_and_admin_settings(page: object, agent: Agent) -> None:
    sign_in(page, agent)
    page.goto(f"{agent.url}/console/#quick")  # type: ignore[attr-defined]
    quick = page.locator("#screen-quick")  # type: ignore[attr-defined]
    quick.get_by_label("No, I will copy the link myself").check()
    quick.get_by_label("Amount due").fill("120.00")
    quick.get_by_label("Name", exact=True).fill("Dana Reed")
    quick.get_by_label("Email", exact=True).fill("dana@example.com")
    quick.get_by_label("Invoice number").fill("OLD-77")
    quick.get_by_role("button", name="Generate Link").click()
    expect(page.locator("#quick-result .badge")).to_have_text("Outstanding")  # type: ignore[attr-defined]
    shot(page, "10-quick-link")

    page.goto(f"{agent.url}/console/#settings")  # type: ignore[attr-defined]
    expect(page.locator("#admin-only")).to_contain_text("administrators")  # type: ignore[attr-defined]
    sign_in(page, agent, agent.admin_token)
    page.goto(f"{agent.url}/console/#settings")  # type: ignore[attr-defined]
    form = page.locator('form[data-account="trust"]')  # type: ignore[attr-defined]
    form.get_by_label("Disclaimer on the payment page").fill("Client account (trust).")
    form.get_by_role("button", name="Save trust").click()
    expect(form.get_by_role("status")).to_contain_text("Saved")
    assert "Client account (trust)." in (agent.home / "ledgerlink.toml").read_text(encoding="utf-8")
    shot(page, "11-settings")


@pytest.fixture(scope="module", autouse=True)
def _fresh_artifacts() -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)


def test_extra_endpoints_remove_and_reallocate_postings(agent: Agent) -> None:
    import httpx

    from connectors.providers import sandbox

    link = agent.rt.links.create(LinkRequest(matter="M-2026-0020"))
    sandbox.pay(agent.home, link.provider_ref)
    poll_payments(agent.rt)
    with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {agent.token}"}) as client:
        assert httpx.get(f"{agent.url}/manage-postings").status_code == 401
        pending = client.get("/manage-postings", params={"status": "pending"}).json()
        mine = [p for p in pending if p["link_id"] == link.id]
        assert mine and mine[0]["matter_number"] == "M-2026-0020"
        refused = client.post(f"/postings/{mine[0]['id']}/reallocate", json={"statements": {"INV-1001": "1.00"}})
        assert refused.status_code == 422 and "only incomplete" in refused.json()["error"]
        removed = client.post(f"/postings/{mine[0]['id']}/remove", json={"reason": "recorded by hand"})
        assert removed.json()["state"] == "removed"
        assert [a["default"] for a in client.get("/accounts").json()] == [True, False]
