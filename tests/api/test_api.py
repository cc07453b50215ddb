"""The local API on a real uvicorn server on 127.0.0.1 (an ephemeral port), over the demo firm and the sandbox."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from tests_support import bearer

from agent import __version__
from agent.api import app as api
from agent.api.routers import links as link_routes
from agent.cli.main import main
from agent.core.errors import TransientError
from agent.core.model import Actor
from agent.engine.sending import email_text
from agent.engine.sync import Syncer
from agent.home.accounts import dump_toml
from agent.home.demo import init_home
from agent.home.settings import load_settings
from agent.runtime import Runtime
from agent.service.loop import poll_payments
from agent.state import audit
from agent.state.schema import api_replays, links, postings
from connectors.providers import sandbox

MATTER = "M-2026-0010"  # Okafor probate: INV-1001 (644.30) + INV-1002 (1443.75), payer has an email
NO_EMAIL = "M-2026-0040"


@dataclasses.dataclass
class Env:
    home: Path
    rt: Runtime
    server: api.ApiServer
    client: httpx.Client  # carries the token of the clerk "clerk"
    token: str
    admin_token: str  # of the admin "admin"

    def as_admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    home = tmp_path / "home"
    init_home(home)
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    Syncer(rt.store, rt.connector).sync()
    server = api.serve_api(rt, "127.0.0.1", 0)
    token, admin_token = bearer(rt.store), bearer(rt.store, "admin")
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    try:
        yield Env(home, rt, server, client, token, admin_token)
    finally:
        client.close()
        server.stop()
        rt.close()


def create(env: Env, **body: Any) -> httpx.Response:
    return env.client.post("/links", json={"matter": MATTER, **body})


def test_a_refund_asked_again_with_its_idempotency_key_is_the_first_refund(env: Env) -> None:
    """A client that lost the answer (or whose agent was killed mid-request) asks again with the same key: the
    first answer comes back and the provider holds one refund, as Stripe's Idempotency-Key works."""
    paid_posting(env)
    payment_ref = env.client.get("/postings").json()[0]["payment_id"].removeprefix("pay_")
    body = {"amount": "100.00", "reason": "client overpaid"}
    keyed = {**env.as_admin(), "Idempotency-Key": "refund-2026-12-06-1"}
    first = env.client.post(f"/payments/{payment_ref}/refund", json=body, headers=keyed)
    again = env.client.post(f"/payments/{payment_ref}/refund", json=body, headers=keyed)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = env.client.post(f"/payments/{payment_ref}/refund", json={**body, "amount": "5.00"}, headers=keyed)
    assert other.status_code == 422 and "other parameters" in other.json()["error"]
    # Killed after the refund was made and before the answer was kept: the claim is left with no answer.
    with env.rt.store.begin() as conn:
        conn.execute(update(api_replays).values(status=None, body=None,
                                                created_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)))
    retried = env.client.post(f"/payments/{payment_ref}/refund", json=body, headers=keyed)
    assert retried.status_code == 200 and retried.json()["id"] == first.json()["id"]
    assert "Idempotent-Replayed" not in retried.headers  # run again, and the engine found the same refund
    assert [r["id"] for r in env.client.get("/refunds").json()] == [first.json()["id"]]
    with sqlite3.connect(env.home / "sandbox.db") as conn:
        assert conn.execute("SELECT COUNT(*), SUM(amount) FROM refunds").fetchone()[0] == 1
    unkeyed = env.client.post(f"/payments/{payment_ref}/refund", json=body, headers=env.as_admin())
    assert unkeyed.json()["id"] != first.json()["id"]  # without a key, a second request is a second refund


def test_a_quick_link_asked_again_with_its_idempotency_key_is_one_link(env: Env) -> None:
    body = {"name": "Ada Payer", "email": "ada@example.com", "amount": "25.00"}
    keyed = {"Idempotency-Key": "9f2c1e4a-quick"}
    first = env.client.post("/links/quick", json=body, headers=keyed)
    with env.rt.store.begin() as conn:  # cut off before its answer was kept
        conn.execute(update(api_replays).values(status=None, body=None,
                                                created_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)))
    again = env.client.post("/links/quick", json=body, headers=keyed)
    assert first.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert env.client.post("/links/quick", json=body, headers={"Idempotency-Key": ""}).status_code == 422
    assert len(env.client.get("/links").json()) == 1


def paid_posting(env: Env) -> list[dict[str, Any]]:
    """Create a link, pay it at the sandbox and read the payment: its postings wait in the outbox."""
    link = create(env, amount="700.00").json()
    sandbox.pay(env.home, link["provider_ref"])
    poll_payments(env.rt)
    listed: list[dict[str, Any]] = env.client.get("/postings").json()
    return listed


# ------------------------------------------------------------------------------------------- auth


def test_binds_loopback_and_every_endpoint_but_health_needs_the_token(env: Env) -> None:
    host, port = env.server.server.servers[0].sockets[0].getsockname()[:2]
    assert (host, port) == ("127.0.0.1", env.server.port)
    paths = env.client.get("/openapi.json").json()["paths"]
    bare = httpx.Client(base_url=env.server.url, timeout=10)
    wrong = httpx.Client(base_url=env.server.url, headers={"Authorization": "Bearer not-the-token"}, timeout=10)
    checked = 0
    for path, methods in paths.items():
        url = path.format(link_id="lnk_x", ref=MATTER, posting_id=1, name="operating", id=1,
                          collection_id="col_x", payout="po_x", payment="pay_x", plan_id="plan_x")
        for method in methods:
            if path == "/health":
                assert bare.request(method, url).status_code == 200
                continue
            if path == "/console/sign-in":  # needs no token: the one-time code or the password is the credential
                assert bare.request(method, url, json={"code": "not-a-real-code"}).status_code == 401
                assert bare.request(method, url, json={"name": "clerk", "password": "wrong"}).status_code == 401
                continue
            for client in (bare, wrong):
                response = client.request(method, url, json={})
                assert response.status_code == 401, (method, path)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "ledgerlink api token" in response.json()["error"]
            checked += 1
    assert checked >= 27  # the API's own endpoints and the console's (agent/api/console/router.py)
    assert "not-the-token" not in wrong.get("/status").text


def test_health_needs_no_token_and_says_the_version(env: Env) -> None:
    response = httpx.get(f"{env.server.url}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


def test_admin_endpoints_refuse_a_clerk(env: Env) -> None:
    assert env.client.get("/settings/accounts/operating").status_code == 403
    refused = env.client.put("/settings/accounts/operating", json={"expiry_days": 3})
    assert refused.status_code == 403
    assert "needs an admin" in refused.json()["error"] and "'clerk'" in refused.json()["error"]
    assert "expiry_days = 3" not in env.rt.settings.config_path.read_text()
    # an admin's token also works for everything else
    assert env.client.get("/status", headers=env.as_admin()).status_code == 200


# ------------------------------------------------------------------------------------------- status, matters


def test_status_shows_last_sync_lag_backlog_and_errors(env: Env) -> None:
    env.rt.store.record_ok("sync")
    env.rt.store.record_error("postings", "firm database unreachable")
    paid_posting(env)
    body = env.client.get("/status").json()
    assert body["last_sync"] is not None and 0 <= body["lag_seconds"] < 60
    assert body["backlog"] == {"pending": 2}  # 700.00 over INV-1001 (644.30) and INV-1002 (55.70)
    assert body["components"]["postings"]["last_error"] == "firm database unreachable"
    assert body["components"]["sync"]["last_error"] is None


def test_matter_search_shows_the_link_sent_marker(env: Env) -> None:
    found = env.client.get("/matters", params={"q": "okafor"}).json()
    assert MATTER in [m["number"] for m in found]
    assert not next(m for m in found if m["number"] == MATTER)["link_sent"]
    create(env)
    found = env.client.get("/matters", params={"q": MATTER}).json()
    assert found[0]["number"] == MATTER and found[0]["link_sent"] is True
    assert env.client.get("/matters", params={"q": "nobody-has-this-name"}).json() == []
    assert env.client.get("/matters").status_code == 422


def test_matter_detail_has_statements_balance_and_link_defaults(env: Env) -> None:
    body = env.client.get(f"/matters/{MATTER}").json()
    assert [s["number"] for s in body["statements"]] == ["INV-1001", "INV-1002"]
    assert body["statements"][0]["balance"] == "644.30"  # money is a decimal string, never a float
    assert body["open_balance"] == {"GBP": "2088.05"}
    assert (body["default_amount"], body["currency"], body["payer_email"]) == ("2088.05", "GBP", "okafor@example.com")
    assert body["default_description"].startswith("Demo Legal LLP ")
    assert body["existing_link"] is None and body["link_sent"] is False
    link = create(env, amount="100.00").json()
    body = env.client.get(f"/matters/{MATTER}").json()
    assert body["existing_link"]["id"] == link["id"] and body["link_sent"] is True
    assert env.client.get("/matters/M-0000-NONE").status_code == 404


# ------------------------------------------------------------------------------------------- links


def test_create_link_then_the_same_link_again(env: Env) -> None:
    first = create(env, statements={"INV-1001": "644.30"}, description="Probate fees")
    assert first.status_code == 201
    link = first.json()
    assert (link["amount"], link["description"], link["existing"], link["status"]) == (
        "644.30", "Probate fees", False, "outstanding")
    assert link["url"]
    again = create(env)
    assert again.status_code == 200
    assert again.json()["id"] == link["id"] and again.json()["existing"] is True


def test_create_link_errors_map_to_status_codes(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    no_email = env.client.post("/links", json={"matter": NO_EMAIL})
    assert no_email.status_code == 422 and "no email address" in no_email.json()["error"]
    too_much = create(env, amount="99999.00")
    assert too_much.status_code == 422 and "more than" in too_much.json()["error"]
    assert create(env, amount=100.5).status_code == 422  # a JSON number is refused: money is a string
    assert "decimal string" in create(env, amount=100.5).json()["error"]
    unknown = env.client.post("/links", json={"matter": "M-0000-NONE"})
    assert unknown.status_code == 422 and "unknown matter" in unknown.json()["error"]
    bad_account = create(env, account="nope")
    # the client named an account that does not exist: its mistake, a 4xx naming the field (issue 14 item 4)
    assert bad_account.status_code == 422 and "account: unknown merchant account 'nope'" in bad_account.json()["error"]

    def outage(_actor: Actor, _request: Any) -> None:
        raise TransientError("provider rate limit", retry_after=7.2)

    monkeypatch.setattr(env.rt.links, "create", outage)
    busy = create(env)
    assert (busy.status_code, busy.headers["retry-after"], busy.json()) == (
        503, "8", {"error": "provider rate limit"})


def test_quick_link_created_then_existing(env: Env) -> None:
    body = {"name": "Ada Client", "email": "ada@example.com", "amount": "120.00", "invoice": "Q-1"}
    first = env.client.post("/links/quick", json=body)
    assert first.status_code == 201 and first.json()["matter_key"] is None
    again = env.client.post("/links/quick", json=body)
    assert (again.status_code, again.json()["id"], again.json()["existing"]) == (200, first.json()["id"], True)
    missing = env.client.post("/links/quick", json={**body, "email": "not-an-address", "invoice": "Q-2"})
    assert missing.status_code == 422 and "email" in missing.json()["error"]
    # To copy and send by hand: no email needed; emailing that link later says what is missing.
    by_hand = env.client.post("/links/quick", json={"name": "Ben Hand", "amount": "30.00", "invoice": "Q-3"})
    assert by_hand.status_code == 201 and by_hand.json()["url"]
    sent = env.client.post(f"/links/{by_hand.json()['id']}/send", json={"channel": "email"})
    assert 400 <= sent.status_code < 500 or sent.json()["ok"] is False, sent.text
    assert "email" in sent.text.lower()


def test_list_and_get_links(env: Env) -> None:
    link = create(env, amount="10.00").json()
    quick = env.client.post("/links/quick", json={"name": "B", "email": "b@example.com", "amount": "5.00"}).json()
    env.client.post(f"/links/{quick['id']}/cancel")
    assert {x["id"] for x in env.client.get("/links").json()} == {link["id"], quick["id"]}
    assert [x["id"] for x in env.client.get("/links", params={"status": "outstanding"}).json()] == [link["id"]]
    both = env.client.get("/links", params=[("status", "outstanding"), ("status", "cancelled")]).json()
    assert len(both) == 2
    assert [x["id"] for x in env.client.get("/links", params={"matter": MATTER}).json()] == [link["id"]]
    assert env.client.get(f"/links/{link['id']}").json() == {**link, "existing": False}
    assert env.client.get("/links/lnk_unknown").status_code == 404


def test_cancel_link(env: Env) -> None:
    link = create(env).json()
    cancelled = env.client.post(f"/links/{link['id']}/cancel", json={"reason": "client paid by cheque"})
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["status_reason"]) == ("cancelled", "client paid by cheque")
    again = env.client.post(f"/links/{link['id']}/cancel")
    assert again.status_code == 422 and "not outstanding" in again.json()["error"]
    assert env.client.post("/links/lnk_unknown/cancel").status_code == 404
    assert create(env).status_code == 201  # the debt is free for a new link


def test_cancel_and_create_new(env: Env) -> None:
    old = create(env, amount="100.00").json()
    fresh = env.client.post(f"/links/{old['id']}/recreate", json={"amount": "250.00", "description": "Revised"})
    assert fresh.status_code == 201
    new = fresh.json()
    assert (new["replaces"], new["amount"], new["description"], new["existing"]) == (
        old["id"], "250.00", "Revised", False)
    assert new["id"] != old["id"] and new["provider_ref"] != old["provider_ref"]
    assert env.client.get(f"/links/{old['id']}").json()["status"] == "cancelled"
    # no body: the clerk's amount and description again (issue 13 item 8; it used to fall back to the balance)
    plain = env.client.post(f"/links/{new['id']}/recreate")
    assert plain.status_code == 201 and (plain.json()["amount"], plain.json()["description"]) == ("250.00", "Revised")
    assert env.client.post("/links/lnk_unknown/recreate").status_code == 404


def test_recreate_a_paid_link_is_refused_and_nothing_new_is_made(env: Env) -> None:
    link = create(env).json()
    sandbox.pay(env.home, link["provider_ref"])
    refused = env.client.post(f"/links/{link['id']}/recreate")
    assert refused.status_code == 422 and "was paid" in refused.json()["error"]
    with env.rt.store.read() as conn:
        assert conn.execute(select(links.c.id)).scalars().all() == [link["id"]]


@dataclasses.dataclass
class FakeRecord:
    link_id: str
    channel: str
    amount: Decimal


def test_send_calls_delivery_or_says_it_is_not_there(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    link = create(env).json()
    monkeypatch.setattr(link_routes, "send_link", None)
    missing = env.client.post(f"/links/{link['id']}/send", json={"channel": "email"})
    assert missing.status_code == 501 and missing.json()["error"] == link_routes.NO_DELIVERY
    calls = []

    def send_link(rt: Runtime, actor: Actor, link_id: str, channel: str) -> FakeRecord:
        calls.append((rt, actor.kind, link_id, channel))
        return FakeRecord(link_id, channel, Decimal("2088.05"))

    monkeypatch.setattr(link_routes, "send_link", send_link)
    sent = env.client.post(f"/links/{link['id']}/send", json={"channel": "sms"})
    assert sent.status_code == 200
    assert sent.json() == {"link_id": link["id"], "channel": "sms", "amount": "2088.05"}
    assert calls == [(env.rt, "user", link["id"], "sms")]  # the person behind the token
    assert env.client.post(f"/links/{link['id']}/send", json={"channel": "fax"}).status_code == 422
    assert env.client.post("/links/lnk_unknown/send", json={"channel": "email"}).status_code == 404


# ------------------------------------------------------------------------------------------- postings


def test_list_and_show_postings(env: Env) -> None:
    listed = paid_posting(env)
    assert [(p["statement_key"], p["amount"], p["state"]) for p in listed] == [
        ("1", "644.30", "pending"), ("2", "55.70", "pending")]
    assert env.client.get("/postings", params={"status": "failed"}).json() == []
    detail = env.client.get(f"/postings/{listed[1]['id']}").json()
    assert detail["posting"] == listed[1]
    assert (detail["payment"]["amount"], detail["payment"]["status"]) == ("700.00", "confirmed")
    assert [a["id"] for a in detail["allocations"]] == [p["id"] for p in listed]
    assert env.client.get("/postings/999999").status_code == 404


def test_retry_postings(env: Env) -> None:
    listed = paid_posting(env)
    first, second = listed[0]["id"], listed[1]["id"]
    refused = env.client.post(f"/postings/{first}/retry")
    assert refused.status_code == 422 and "only failed or retrying" in refused.json()["error"]
    with env.rt.store.begin() as conn:
        conn.execute(update(postings).values(state="failed", attempts=8, last_error="lock timeout"))
    retried = env.client.post(f"/postings/{first}/retry")
    assert retried.status_code == 200 and (retried.json()["state"], retried.json()["attempts"]) == ("pending", 0)
    assert env.client.post("/postings/retry-failed").json() == {"retried": 1}
    assert env.client.get(f"/postings/{second}").json()["posting"]["state"] == "pending"
    assert env.client.post("/postings/999999/retry").status_code == 404


# ------------------------------------------------------------------------------------------- settings, OpenAPI


def test_admin_reads_and_changes_account_settings(env: Env) -> None:
    current = env.client.get("/settings/accounts/trust", headers=env.as_admin())
    assert current.status_code == 200 and current.json()["expiry_days"] == 14
    changed = env.client.put("/settings/accounts/trust", headers=env.as_admin(),
                             json={"expiry_days": 21, "reminder_days": [2, 5], "disclaimer": 'Say "hi"\nback'})
    assert changed.status_code == 200 and changed.json()["expiry_days"] == 21
    data = tomllib.loads(env.rt.settings.config_path.read_text())
    assert data["accounts"]["trust"] == {"kind": "client", "provider": "sandbox", "currency": "GBP",
                                         "expiry_days": 21, "options": {"payout_fees": "gross"},
                                         "fees_account": "operating", "reminder_days": [2, 5],
                                         "disclaimer": 'Say "hi"\nback'}
    assert data["service_name"] == "Demo Legal LLP" and data["accounts"]["operating"]["expiry_days"] == 7
    settings = load_settings(env.home)  # takes effect on the next start
    assert (settings.accounts["trust"].expiry_days, settings.accounts["trust"].reminder_days) == (21, [2, 5])
    bad = env.client.put("/settings/accounts/trust", headers=env.as_admin(), json={"expiry_days": 0})
    assert bad.status_code == 422 and "expiry_days" in bad.json()["error"]
    assert tomllib.loads(env.rt.settings.config_path.read_text())["accounts"]["trust"]["expiry_days"] == 21
    assert env.client.get("/settings/accounts/nope", headers=env.as_admin()).status_code == 404


@pytest.mark.parametrize("message", ["Please pay {amount by Friday", "Pay {amount:>5000000000}", "Pay {amount!r}",
                                     "Pay {link.__class__}", "Pay } now"])
def test_a_message_template_that_cannot_be_filled_in_is_refused_when_saved(env: Env, message: str) -> None:
    """Once every email of the account failed with a 500; a format width could build a 5 GB string."""
    before = env.rt.settings.config_path.read_text()
    bad = env.client.put("/settings/accounts/trust", headers=env.as_admin(), json={"default_message": message})
    assert bad.status_code == 422 and "placeholder" in bad.json()["error"], bad.text
    assert env.rt.settings.config_path.read_text() == before


def test_a_plain_message_template_is_filled_in_and_an_unknown_placeholder_kept(env: Env) -> None:
    account = env.rt.settings.accounts["trust"].model_copy(update={"default_message": "Pay {amount} {soon} {{ok}}"})
    link = env.rt.links.get(create(env, amount="10.00").json()["id"])
    _, body = email_text(link, account, env.rt.settings)
    assert "Pay GBP 10.00 {soon} {ok}" in body


def test_openapi_lists_every_path_and_money_as_strings(env: Env, tmp_path: Path) -> None:
    expected = {
        "/health": {"get"}, "/status": {"get"}, "/matters": {"get"}, "/matters/{ref}": {"get"}, "/debts": {"get"},
        "/links": {"get", "post"}, "/links/quick": {"post"}, "/links/{link_id}": {"get"},
        "/links/{link_id}/cancel": {"post"}, "/links/{link_id}/recreate": {"post"}, "/links/{link_id}/send": {"post"},
        "/postings": {"get"}, "/postings/{posting_id}": {"get"}, "/postings/{posting_id}/retry": {"post"},
        "/postings/retry-failed": {"post"}, "/settings/accounts/{name}": {"get", "put"},
        # the console's endpoints, same token
        "/accounts": {"get"}, "/manage-postings": {"get"}, "/postings/{posting_id}/reallocate": {"post"},
        "/postings/{posting_id}/remove": {"post"}, "/sent-pages": {"get"}, "/sent-pages/export": {"get"},
        "/sent-pages/plans": {"get"}, "/sent-pages/plans/export": {"get"},
        "/bulk/template": {"get"}, "/bulk/review": {"post"}, "/bulk/links": {"post"},
        "/console-info": {"get"}, "/link-delivery": {"get"}, "/console/sign-in": {"post"},
        "/console/sign-out": {"post"}, "/collections": {"get"}, "/collections/{collection_id}": {"get"},
        "/collections/{collection_id}/cancel": {"post"},
        "/plans": {"get", "post"}, "/plans/preview": {"post"}, "/plans/{plan_id}": {"get"},
        "/plans/{plan_id}/cancel": {"post"},
        "/payouts": {"get"}, "/payouts/breaches": {"get"}, "/payouts/{payout}": {"get"}, "/refunds": {"get"},
        "/payouts/pay-out-now": {"post"},
        "/payments/{payment}/refund": {"get", "post"},
        # the audit trail: the whole of it for admins, each link's and posting's own history for staff
        "/audit": {"get"}, "/audit/verify": {"get"}, "/audit/export": {"get"},
        "/links/{link_id}/history": {"get"}, "/postings/{posting_id}/history": {"get"},
    }
    served = env.client.get("/openapi.json").json()
    assert {path: set(methods) for path, methods in served["paths"].items()} == expected
    assert served["components"]["schemas"]["LinkOut"]["properties"]["amount"]["type"] == "string"
    assert env.client.get("/docs").status_code == 200
    out = tmp_path / "openapi.json"
    assert main(["--home", str(env.home), "api", "openapi", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["paths"].keys() == expected.keys()


def test_toml_writer_round_trips() -> None:
    data = {"a": 1, "b": True, "c": "x \"q\" \\ é", "accounts": {"op": {"days": [1, 2], "msg": "m"}, "t": {}}}
    assert tomllib.loads(dump_toml(data)) == data


# ------------------------------------------------------------------------------------------- payouts and refunds


def test_refund_is_admin_only_refused_over_what_is_left_and_shown_on_its_payout(env: Env) -> None:
    paid_posting(env)
    payment_ref = env.client.get("/postings").json()[0]["payment_id"].removeprefix("pay_")
    body = {"amount": "100.00", "reason": "client overpaid"}
    assert env.client.post(f"/payments/{payment_ref}/refund", json=body).status_code == 403  # staff token
    done = env.client.post(f"/payments/{payment_ref}/refund", json=body, headers=env.as_admin())
    assert done.status_code == 200, done.text
    assert (done.json()["amount"], done.json()["status"], done.json()["actor"]) == ("100.00", "succeeded",
                                                                                    "user:admin")
    over = env.client.post(f"/payments/{payment_ref}/refund", json={"amount": "600.01", "reason": "too much"},
                           headers=env.as_admin())
    assert over.status_code == 422 and "at most 600.00 GBP" in over.json()["error"]
    assert env.client.post("/payments/nope/refund", json=body, headers=env.as_admin()).status_code == 422
    sandbox.pay_out(env.home)
    env.rt.payouts.sync()
    [payout] = env.client.get("/payouts").json()
    assert payout["adds_up"] is True and payout["amount"] == "598.00"  # 700 - 100 refunded - 2.00 bank fee
    shown = env.client.get(f"/payouts/{payout['payout_ref']}").json()
    [refund_item] = [i for i in shown["items"] if i["kind"] == "refund"]
    assert refund_item["amount"] == "-100.00" and done.json()["id"] in refund_item["refund"]
    assert env.client.get("/payouts/unknown").status_code == 422
    assert env.client.get("/payouts/breaches").json() == []
    assert env.client.get("/status").json()["client_money"] == []
    payout_postings = [p for p in env.client.get("/postings").json() if p["payment_id"] is None]
    assert [(p["section"], p["amount"]) for p in payout_postings] == [("fees", "2.00"), ("deposits", "598.00")]
    detail = env.client.get(f"/postings/{payout_postings[1]['id']}").json()
    assert detail["payment"] is None and len(detail["allocations"]) == 2  # the payout's postings


# ------------------------------------------------------------------------------------------- debts


def test_debts_open_on_what_is_owed_oldest_first_paged_and_filtered(env: Env) -> None:
    """The Debts list: every matter that owes, oldest debt first (then largest), with the firm's balance and what
    is left to collect once money on its way is counted; paged; by account currency, matter status and link."""
    with sqlite3.connect(env.home / "demo-firm.db") as conn:
        expected = conn.execute(
            "SELECT m.matter_no, MIN(b.issued_on), SUM(b.balance_pence), m.state FROM bills b JOIN matters m ON m.id = "
            "b.matter_id WHERE b.state = 'OPEN' GROUP BY m.id HAVING SUM(b.balance_pence) != 0").fetchall()
    assert len(expected) > 10
    first = env.client.get("/debts", params={"limit": 5})
    assert first.status_code == 200
    body = first.json()
    assert body["total"] == len(expected) and len(body["debts"]) == 5
    everything = env.client.get("/debts", params={"limit": 200}).json()["debts"]
    assert [d["matter"]["number"] for d in everything[:5]] == [d["matter"]["number"] for d in body["debts"]]
    ranked = sorted(expected, key=lambda r: (r[1], -r[2], r[0]))
    assert [d["matter"]["number"] for d in everything] == [r[0] for r in ranked]
    assert {d["matter"]["number"]: Decimal(d["open_balance"]) for d in everything} == {
        r[0]: Decimal(r[2]) / 100 for r in expected}  # exact, from the mirror
    second = env.client.get("/debts", params={"limit": 5, "offset": 5}).json()["debts"]
    assert [d["matter"]["number"] for d in second] == [d["matter"]["number"] for d in everything[5:10]]
    largest = env.client.get("/debts", params={"order": "largest", "limit": 200}).json()["debts"]
    sizes = [Decimal(d["open_balance"]) for d in largest]
    assert sizes == sorted(sizes, reverse=True)

    # A link paid but not yet posted: what is left to collect drops at once, the firm's balance does not.
    link = create(env, amount="100.00").json()
    sandbox.pay(env.home, link["provider_ref"])
    poll_payments(env.rt)
    okafor = next(d for d in env.client.get("/debts", params={"limit": 200}).json()["debts"]
                  if d["matter"]["number"] == MATTER)
    assert Decimal(okafor["open_balance"]) - Decimal(okafor["left_to_collect"]) == Decimal("100.00")
    waiting = env.client.post("/links", json={"matter": "M-2026-0030"}).json()
    outstanding = env.client.get("/debts", params={"link": "outstanding"}).json()
    assert [d["matter"]["number"] for d in outstanding["debts"]] == ["M-2026-0030"] and waiting["id"]
    assert all(d["matter"]["link_sent"] for d in outstanding["debts"])
    none = env.client.get("/debts", params={"link": "none", "limit": 200}).json()
    assert none["total"] == body["total"] - 1
    closed = env.client.get("/debts", params={"status": "closed"}).json()["debts"]
    assert [d["matter"]["number"] for d in closed] == [r[0] for r in ranked if r[3] == "C"] != []
    assert env.client.get("/debts", params={"account": "operating"}).json()["total"] == body["total"]  # GBP
    for bad in ({"account": "nosuch"}, {"limit": 0}, {"order": "newest"}, {"offset": -1}):
        answer = env.client.get("/debts", params=bad)
        assert answer.status_code == 422, bad


def test_an_invalid_request_names_its_fields_in_words_and_is_on_the_audit_trail(env: Env) -> None:
    """Issue 26: a refused request says which field and what is wrong without developer prefixes, so the console can
    mark the field; a state-changing one is an audit entry (who, the route, the fields), never its values."""
    answer = env.client.post("/links", json={"matter": MATTER, "amount": "10,50", "colour": "red"})
    assert answer.status_code == 422
    body = answer.json()
    fields = {f["field"]: f["message"] for f in body["fields"]}
    assert set(fields) == {"amount", "colour"} and fields["colour"] == "is not a field of this request"
    assert "decimal comma" in fields["amount"] or "10,50" in fields["amount"], fields
    assert "body." not in body["error"] and "Value error" not in body["error"]
    assert body["error"].startswith(("amount: ", "colour: "))
    with env.rt.store.read() as conn:
        entries = [e for e in audit.entries(conn) if e.action == "request.refused"]
    assert len(entries) == 1 and entries[0].actor == "user:clerk" and entries[0].outcome == "failed"
    assert entries[0].object_id == "POST /links" and entries[0].before == {"fields": ["amount", "colour"]}
    assert "10,50" not in json.dumps(entries[0].before)
    assert env.client.get("/debts", params={"limit": 0}).status_code == 422
    with env.rt.store.read() as conn:  # a read refused is not an entry
        assert len([e for e in audit.entries(conn) if e.action == "request.refused"]) == 1
