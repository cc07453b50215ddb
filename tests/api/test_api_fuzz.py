"""schemathesis against the API's own OpenAPI document (issue 14): generated requests to every operation, with
the admin token (so every endpoint is reached), must never get a 500. A fixed budget of examples keeps it to CI's
time; the agent behind it is the demo firm on the sandbox, made in a temporary folder when this module loads
(schemathesis needs the app to generate its cases)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from tests_support import bearer

from agent.api.app import create_app
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state import users

FOLDER = Path(tempfile.mkdtemp(prefix="ledgerlink-fuzz-"))
init_home(FOLDER / "home")
RT = Runtime.for_home(FOLDER / "home")
RT.syncer.sync()
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(RT), headers={"Host": "127.0.0.1"})


@pytest.fixture(scope="module", autouse=True)
def _clean_up() -> Iterator[None]:
    yield
    RT.close()
    shutil.rmtree(FOLDER, ignore_errors=True)


TOKEN = [bearer(RT.store, "admin")]


def admin_token() -> str:
    """The admin's token, made again only when a generated request revoked it or disabled its person (making one
    hashes the test password with argon2, which is slow by design: once per case, it was most of the fuzz's time)."""
    holder = users.holder(RT.store, TOKEN[0])
    if holder is None or holder.role != "admin" or holder.disabled_at is not None:
        TOKEN[0] = bearer(RT.store, "admin")
    return TOKEN[0]


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_token()}", "Host": "127.0.0.1"},
                           checks=[not_a_server_error])
