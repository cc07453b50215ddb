"""The audit trail over the local API: admins read, check and export the trail; a clerk's token gets 403 on each
of those; any staff member reads a link's or posting's own history, worded for the screens."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from openpyxl import load_workbook
from tests_support import bearer

from agent.api import app as api
from agent.core.model import Actor
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state import audit

MATTER = "M-2026-0010"
ADMIN_ROUTES = ("/audit", "/audit/verify", "/audit/export")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[httpx.Client, dict[str, str], Runtime]]:
    home = tmp_path / "home"
    init_home(home)
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    Syncer(rt.store, rt.connector).sync()
    server = api.serve_api(rt, "127.0.0.1", 0)
    clerk, admin = bearer(rt.store, "clerk"), bearer(rt.store, "admin")  # made by cli:test-setup, audited
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {clerk}"}, timeout=10)
    try:
        yield http, {"Authorization": f"Bearer {admin}"}, rt
    finally:
        http.close()
        server.stop()
        rt.close()


def test_a_clerk_token_gets_403_on_every_audit_route(client: tuple[httpx.Client, dict[str, str], Runtime]) -> None:
    http, admin, _ = client
    for route in ADMIN_ROUTES:
        refused = http.get(route)
        assert refused.status_code == 403, route
        assert http.get(route, headers=admin).status_code == 200, route


def test_link_history_is_worded_and_the_admin_reads_the_whole_trail(
        client: tuple[httpx.Client, dict[str, str], Runtime]) -> None:
    http, admin, rt = client
    with rt.store.read() as conn:  # the first admin, the test's clerk, the admin's password and their tokens
        setup = [(e.actor, e.action) for e in audit.entries(conn)]
    assert sorted(setup) == [("cli:test-setup", "token.create")] * 2 + [
        ("cli:test-setup", "user.add"), ("cli:test-setup", "user.reset"), ("system:first-run", "user.add")]
    link = http.post("/links", json={"matter": MATTER}).json()
    assert http.post(f"/links/{link['id']}/cancel", json={"reason": "client asked"}).status_code == 200
    history = http.get(f"/links/{link['id']}/history").json()
    assert [(h["what"], h["action"], h["outcome"]) for h in history] == [
        ("Created", "link.create", "ok"), ("Cancelled", "link.cancel", "ok")]
    assert {(h["actor"], h["who"]) for h in history} == {("user:clerk", "clerk")}  # the person behind the token
    refused = http.post(f"/links/{link['id']}/cancel")  # no longer outstanding: 4xx and one failed entry
    assert 400 <= refused.status_code < 500
    last = http.get(f"/links/{link['id']}/history").json()[-1]
    assert last["what"].startswith("Cancelled: failed (") and last["outcome"] == "failed"
    trail = http.get("/audit", headers=admin, params={"object": f"link:{link['id']}"}).json()
    assert [t["seq"] for t in trail] == [h["seq"] for h in http.get(f"/links/{link['id']}/history").json()]
    verdict = http.get("/audit/verify", headers=admin).json()
    assert verdict.pop("checkpoints")[0].startswith("entry ")
    assert verdict == {"count": 3 + len(setup), "intact": True, "bad_entry": None, "problem": None, "sealed_from": 1}
    book = load_workbook(BytesIO(http.get("/audit/export", headers=admin).content))
    assert [c.value for c in book.active[1]][:4] == ["Entry", "When", "Who", "Action"]
    assert book.active.max_row == 4 + len(setup)
    with rt.store.begin() as conn:  # a job's entry reads as the job
        audit.record(conn, Actor("job", "reminders"), "link.email", "link", link["id"],
                     after={"recipient": "ada@example.com"})
    assert http.get(f"/links/{link['id']}/history").json()[-1]["who"] == "the reminders job"
    assert http.get(f"/links/{link['id']}/history").json()[-1]["what"] == "Emailed to ada@example.com"


def test_posting_history_and_filters(client: tuple[httpx.Client, dict[str, str], Runtime]) -> None:
    http, admin, rt = client
    with rt.store.begin() as conn:
        audit.record(conn, Actor("user", "alice"), "posting.remove", "posting", "7",
                     before={"state": "failed", "amount": Decimal("5.00")}, after={"state": "removed"})
    [entry] = http.get("/postings/7/history").json()
    assert (entry["who"], entry["what"], entry["before"]["amount"]) == ("alice", "Removed", "5.00")
    assert http.get("/audit", headers=admin, params={"user": "alice"}).json()[0]["seq"] == entry["seq"]
    assert http.get("/audit", headers=admin, params={"user": "bob"}).json() == []
    assert http.get("/audit", headers=admin, params={"since": "2999-01-01T00:00:00"}).json() == []
    assert http.get("/postings/abc/history").status_code == 422


def test_a_plan_email_reads_as_whom_the_payer_was_emailed(client: tuple[httpx.Client, dict[str, str], Runtime]) -> None:
    http, admin, rt = client
    with rt.store.begin() as conn:
        audit.record(conn, Actor("job", "plan-reminders"), "plan.email", "plan", "plan_x",
                     after={"purpose": "before", "recipient": "ada@example.com", "seq": 2})
    [entry] = http.get("/audit", headers=admin, params={"object": "plan:plan_x"}).json()
    assert entry["what"] == "Payer emailed about an instalment to ada@example.com"
