"""Issue 19: every route of the app, tried anonymously, as a clerk and as an admin. A clerk reaches no admin
endpoint; nobody reaches a private one without a token; and the person behind a token is the one the audit sees.

The three route lists are the roles of the issue ("clerk: search, create/send/cancel links, bulk, view postings;
admin: everything, including settings, accounts, refunds, reallocation, users"), written out by hand: a route
added to the app without being put in one of them fails the first test, so nobody forgets to decide.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Mount, Route
from tests_support import PASSWORD, bearer, demo_runtime

from agent.api.app import create_app
from agent.api.auth import ActorDep
from agent.runtime import Runtime

PUBLIC = {("GET", "/health"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/console"), ("GET", "/console/"),
          ("GET", "/console/login"), ("POST", "/console/sign-in"), ("GET", "/console/static"),
          ("GET", "/favicon.ico")}
ADMIN = {("GET", "/settings/accounts/{name}"), ("PUT", "/settings/accounts/{name}"),
         ("POST", "/postings/{posting_id}/reallocate"), ("POST", "/postings/{posting_id}/remove"),
         ("POST", "/payments/{payment}/refund"), ("GET", "/audit"), ("GET", "/audit/verify"), ("GET", "/audit/export"),
         ("POST", "/payouts/pay-out-now")}
CLERK = {
    ("GET", "/status"), ("GET", "/matters"), ("GET", "/matters/{ref}"), ("GET", "/debts"), ("GET", "/links"),
    ("POST", "/links"),
    ("POST", "/links/quick"), ("GET", "/links/{link_id}"), ("POST", "/links/{link_id}/cancel"),
    ("POST", "/links/{link_id}/recreate"), ("POST", "/links/{link_id}/send"), ("GET", "/postings"),
    ("GET", "/postings/{posting_id}"), ("POST", "/postings/retry-failed"), ("POST", "/postings/{posting_id}/retry"),
    ("GET", "/collections"), ("GET", "/collections/{collection_id}"), ("POST", "/collections/{collection_id}/cancel"),
    ("GET", "/plans"), ("POST", "/plans"), ("POST", "/plans/preview"), ("GET", "/plans/{plan_id}"),
    ("POST", "/plans/{plan_id}/cancel"),
    ("GET", "/console-info"), ("GET", "/link-delivery"), ("GET", "/accounts"), ("GET", "/manage-postings"),
    ("GET", "/sent-pages"), ("GET", "/sent-pages/export"), ("GET", "/sent-pages/plans"),
    ("GET", "/sent-pages/plans/export"), ("GET", "/bulk/template"), ("POST", "/bulk/review"),
    ("POST", "/bulk/links"), ("POST", "/console/sign-out"), ("GET", "/payouts"), ("GET", "/payouts/breaches"),
    ("GET", "/payouts/{payout}"), ("GET", "/refunds"), ("GET", "/payments/{payment}/refund"),
    ("GET", "/links/{link_id}/history"),
    ("GET", "/postings/{posting_id}/history"),
}
PARAMS = {"name": "operating", "ref": "M-2026-0010", "link_id": "lnk_x", "posting_id": "1",
          "collection_id": "col_x", "plan_id": "plan_x", "payout": "po_x", "payment": "pay_x"}


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with demo_runtime(tmp_path_factory.mktemp("roles") / "home") as runtime:
        yield runtime


@pytest.fixture(scope="module")
def app(rt: Runtime) -> FastAPI:
    return create_app(rt)


def routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app answers: its API routes, console pages and the static mount."""
    return _walk(app.routes, "")


def _walk(table: Sequence[BaseRoute], prefix: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in table:
        included = getattr(route, "original_router", None)  # FastAPI >= 0.16x keeps an included router whole
        if included is not None:
            # route is FastAPI's private _IncludedRouter, which BaseRoute's type does not describe
            found |= _walk(included.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]
        elif isinstance(route, Mount):
            found.add(("GET", prefix + route.path))
        elif isinstance(route, Route):
            found |= {(m, prefix + route.path) for m in (route.methods or ()) if m != "HEAD"}
    return found


def url(path: str) -> str:
    if path == "/console/static":
        return "/console/static/app.js"
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], path)


def test_every_route_is_given_a_role(app: FastAPI) -> None:
    assert PUBLIC.isdisjoint(ADMIN) and PUBLIC.isdisjoint(CLERK) and ADMIN.isdisjoint(CLERK)
    assert routes(app) == PUBLIC | ADMIN | CLERK


def test_every_route_as_anonymous_clerk_and_admin(rt: Runtime, app: FastAPI,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    clerk, admin = bearer(rt.store, "clerk"), bearer(rt.store, "admin")
    client = TestClient(app, base_url="http://127.0.0.1")
    answers: dict[tuple[str, str], list[int]] = {}
    with caplog.at_level(logging.WARNING, "ledgerlink.api"):
        for method, path in sorted(routes(app)):
            body: dict[str, Any] = {"json": {}} if method in ("POST", "PUT") else {}
            answers[method, path] = [client.request(method, url(path), headers=h, **body).status_code
                                     for h in ({}, {"Authorization": f"Bearer {clerk}"},
                                               {"Authorization": f"Bearer {admin}"})]
    for (method, path), (anonymous, as_clerk, as_admin) in answers.items():
        where = f"{method} {path}: anonymous {anonymous}, clerk {as_clerk}, admin {as_admin}"
        assert max(anonymous, as_clerk, as_admin) < 500, where
        if (method, path) in PUBLIC:
            assert 401 not in (anonymous, as_clerk, as_admin) or path == "/console/sign-in", where
        elif (method, path) in ADMIN:
            assert (anonymous, as_clerk) == (401, 403) and as_admin not in (401, 403), where
        else:
            assert anonymous == 401 and as_clerk not in (401, 403) and as_admin not in (401, 403), where
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert sum(": 401 " in m for m in refusals) >= len(ADMIN | CLERK)  # every refusal is logged ...
    assert sum(": 403 " in m and "'clerk' is a clerk" in m for m in refusals) == len(ADMIN)
    assert not [m for m in refusals if clerk in m or admin in m]  # ... and no token in any of them


def test_the_actor_is_the_named_person_behind_the_token(rt: Runtime) -> None:
    app = create_app(rt)

    @app.get("/whoami")
    def whoami(actor: ActorDep) -> str:
        return str(actor)

    client = TestClient(app, base_url="http://127.0.0.1")
    for name, role in (("carol", "clerk"), ("ada", "admin")):
        token = bearer(rt.store, role, name)
        assert client.get("/whoami", headers={"Authorization": f"Bearer {token}"}).json() == f"user:{name}"
    session = client.post("/console/sign-in", json={"name": "Carol", "password": PASSWORD}).json()
    assert client.get("/whoami", headers={"Authorization": f"Bearer {session['token']}"}).json() == "user:carol"

