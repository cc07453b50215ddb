"""The console's one-time sign-in (issue 14 item 6): the printed link carries a code that works once and for a
few minutes, is exchanged for a session token of the named person (issue 19) kept in the tab, and may be logged
in full."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from console_support import ARGS, CHROMIUM, lands_on
from playwright.sync_api import sync_playwright
from sqlalchemy import update
from tests_support import api_server, demo_runtime, person, require

from agent.api.app import ApiServer
from agent.api.console import sign_in_url
from agent.cli.main import main
from agent.runtime import Runtime
from agent.state.schema import sign_in_codes
from agent.state.signin import new_code, redeem


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Runtime, ApiServer]]:
    with demo_runtime(tmp_path / "home", sync=False) as rt, api_server(rt) as server:
        yield rt, server


def test_a_code_signs_in_once_and_its_session_works(served: tuple[Runtime, ApiServer]) -> None:
    rt, server = served
    code = new_code(rt.store, person(rt.store, "clerk", "clerk"))
    first = httpx.post(f"{server.url}/console/sign-in", json={"code": code})
    assert first.status_code == 200 and (first.json()["user"], first.json()["role"]) == ("clerk", "clerk")
    session = {"Authorization": f"Bearer {first.json()['token']}"}
    assert httpx.get(f"{server.url}/status", headers=session).status_code == 200
    assert httpx.get(f"{server.url}/settings/accounts/operating", headers=session).status_code == 403
    again = httpx.post(f"{server.url}/console/sign-in", json={"code": code})
    assert again.status_code == 401 and "already used" in again.json()["error"]
    admin = httpx.post(f"{server.url}/console/sign-in", json={"code": new_code(rt.store, "admin")}).json()
    assert (admin["user"], admin["role"]) == ("admin", "admin")  # the first admin, made when the API started
    settings = httpx.get(f"{server.url}/settings/accounts/operating",
                         headers={"Authorization": f"Bearer {admin['token']}"})
    assert settings.status_code == 200  # an admin's code gives an admin session


def test_an_expired_code_is_refused(served: tuple[Runtime, ApiServer]) -> None:
    rt, _server = served
    code = new_code(rt.store, "admin")
    with rt.store.begin() as conn:
        conn.execute(update(sign_in_codes).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    assert redeem(rt.store, code) is None


def test_the_cli_prints_a_link_in_full_and_the_browser_signs_in_with_it(
        served: tuple[Runtime, ApiServer], capsys: pytest.CaptureFixture[str]) -> None:
    rt, server = served
    assert main(["--home", str(rt.settings.home), "api", "login-link"]) == 0
    code = capsys.readouterr().out.strip().rsplit("#code=", 1)[1]
    assert len(code) >= 20 and "***" not in code  # worthless after use: nothing to scrub
    if not Path(CHROMIUM).exists():
        require(f"Chromium is not installed at {CHROMIUM}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(sign_in_url(server.url, code))
        lands_on(page, "/console/#debts")
        assert "code=" not in page.url
        jar = {c["name"]: c for c in page.context.cookies()}
        assert jar["ledgerlink_session"]["httpOnly"] and jar["ledgerlink_session"]["value"] not in ("", code)
        page.goto(sign_in_url(server.url, code))  # the same link again: refused, with words
        page.get_by_role("alert").wait_for()
        assert "already used" in page.get_by_role("alert").inner_text()
        browser.close()
