"""The console's browser-test harness, shared by tests/api/test_console*.py: headless Chromium (Debian's, never
downloaded) against a real agent serving the demo firm and the sandbox pay page; screenshots and an axe-core
accessibility check. Fixtures are defined here under ``*_fixture`` names and imported by each test module."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from delivery_support import sms_server, smtp_server
from tests_support import ARTIFACTS, PASSWORD, bearer, person, require

from agent.api.app import create_app
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from connectors.providers.sandbox import SandboxPayServer

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# axe-core, vendored for the tests only (MPL-2.0, licence beside it); the agent never serves it.
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"


@dataclasses.dataclass
class Agent:
    home: Path
    rt: Runtime
    url: str
    token: str  # an API token of the clerk "clerk"
    admin_token: str  # and of the admin "admin"; in the browser both sign in with name and password
    pay: SandboxPayServer


def _serve(rt: Runtime) -> tuple[uvicorn.Server, threading.Thread]:
    """The API with the console mounted (create_app mounts it), as the service serves it, on a free port."""
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=0, log_config=None,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    return server, thread


@pytest.fixture(scope="module", name="agent")
def agent_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """The demo home as `bootstrap.py run` makes it: no email or SMS set up."""
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
        yield Agent(home, rt, f"http://127.0.0.1:{port}", bearer(rt.store), bearer(rt.store, "admin"), pay)
    finally:
        server.should_exit = True
        thread.join(10)
        pay.stop()
        rt.close()


@contextmanager
def delivery_set_up(agent: Agent) -> Iterator[Any]:
    """Email and SMS set up for the duration, against a real SMTP server and a Twilio-shaped gateway; yields the
    SMS gateway's record (its ``bad_numbers`` make a text fail) and restores the demo's "not set up" after."""
    smtp, sms = agent.rt.settings.smtp, agent.rt.settings.sms
    before = smtp.model_copy(), sms.model_copy()
    with smtp_server() as (_box, port), sms_server() as (gateway, url):
        smtp.host, smtp.port, smtp.security, smtp.from_address = "127.0.0.1", port, "none", "billing@demo.example"
        sms.url, sms.account, sms.from_number, sms.token_secret = url, "AC0123", "+447700900999", "sms-token"
        agent.rt.secrets.set("sms-token", "tok-123")
        try:
            yield gateway
        finally:
            for target, saved in zip((smtp, sms), before, strict=True):
                for name in type(saved).model_fields:
                    setattr(target, name, getattr(saved, name))


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        require(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def new_page(browser: Any, width: int = 1280, height: int = 900) -> Any:
    context = browser.new_context(accept_downloads=True, viewport={"width": width, "height": height})
    context.set_default_timeout(8000)
    tab = context.new_page()
    tab.errors = []
    tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    return tab


@pytest.fixture(name="page")
def page_fixture(browser: Any, agent: Agent) -> Iterator[Any]:
    tab = new_page(browser)
    yield tab
    tab.context.close()
    assert not tab.errors, f"JavaScript errors in the console: {tab.errors}"


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def lands_on(page: Any, where: str) -> None:
    """Wait until the tab shows ``where`` (a query string allowed), however it got there.

    Unlike ``page.wait_for_url`` this polls the address, so a navigation the console's script starts (a 401 sends
    it to the login page) cannot abort the wait with ``net::ERR_ABORTED``, which made CI red once.
    """
    expect(page).to_have_url(re.compile(re.escape(where) + r"(\?[^#]*)?$"))


def sign_in(page: Any, agent: Agent, user: str = "clerk") -> None:
    """Sign in at the login page with the person's name and password, as staff do (``clerk`` or ``admin``)."""
    person(agent.rt.store, user, "admin" if user == "admin" else "clerk")
    page.goto(f"{agent.url}/console/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    lands_on(page, "/console/#debts")
    expect(page.locator("body[data-role]")).to_have_count(1)  # /console-info answered: formats and flags set


def go(page: Any, agent: Agent, screen: str) -> None:
    """Open a screen as a clerk would after sign-in: a hash change, not a reload."""
    page.evaluate(f"location.hash = '#{screen}'")
    playwright_api.expect(page.locator(f"#screen-{screen}")).to_be_visible()


def search(page: Any, text: str) -> None:
    """Keyboard only: Tab to the search box, replace what it holds, Enter."""
    for _ in range(20):
        if page.evaluate("document.activeElement && document.activeElement.id") == "search":
            break
        page.keyboard.press("Tab")
    else:
        pytest.fail("Tab never reached the search box")
    page.keyboard.press("Control+A")
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def expect(locator: Any) -> Any:
    return playwright_api.expect(locator)


def axe_violations(page: Any, context: str = "document") -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now (WCAG 2.1 A and AA rules)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))  # evaluate is not subject to the console's CSP
    found = page.evaluate(f"""async () => {{
        const r = await axe.run({context}, {{ runOnly: {{ type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a",
            "wcag21aa", "best-practice"] }}, resultTypes: ["violations"] }});
        return r.violations.map((v) => ({{ id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map((n) => n.target.join(" ") + ": " + n.failureSummary) }}));
    }}""")
    return [v for v in found if v["impact"] in ("serious", "critical")]


def assert_accessible(page: Any, where: str) -> None:
    bad = axe_violations(page)
    assert not bad, f"axe-core on {where}:\n" + json.dumps(bad, indent=1, ensure_ascii=False)
