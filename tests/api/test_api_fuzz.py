"""schemathesis against the API's own OpenAPI document (issue 14): generated requests to every operation, with
the admin token (so every endpoint is reached), must never get a 500. A fixed budget of examples keeps it to CI's
time; the agent behind it is the demo firm on the sandbox, made in a temporary folder when this module loads
(schemathesis needs the app to generate its cases).

Each operation is a plain test with schemathesis's own strategy for it (valid and invalid requests alike), not
schemathesis's pytest plugin: under pytest-xdist, which runs the suite, that plugin's test passed although a
check failed (schemathesis 4.32), so a server error would have gone unseen."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.schemas import APIOperation
from tests_support import bearer

from agent.api.app import create_app
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state import users

FOLDER = Path(tempfile.mkdtemp(prefix="ledgerlink-fuzz-"))
atexit.register(shutil.rmtree, FOLDER, True)  # also where this module is only collected (a parallel run's worker)
init_home(FOLDER / "home")
RT = Runtime.for_home(FOLDER / "home")
RT.syncer.sync()
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(RT), headers={"Host": "127.0.0.1"})


@pytest.fixture(scope="module", autouse=True)
def _clean_up() -> Iterator[None]:
    yield
    RT.close()


TOKEN = [bearer(RT.store, "admin")]


def admin_token() -> str:
    """The admin's token, made again only when a generated request revoked it or disabled its person (making one
    hashes the test password with argon2, which is slow by design: once per case, it was most of the fuzz's time)."""
    holder = users.holder(RT.store, TOKEN[0])
    if holder is None or holder.role != "admin" or holder.disabled_at is not None:
        TOKEN[0] = bearer(RT.store, "admin")
    return TOKEN[0]


def _operations() -> dict[str, APIOperation[Any, Any, Any, Any]]:
    """Every operation of the document, by label ("POST /plans"); an operation schemathesis cannot read fails."""
    found = {}
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        found[result.ok().label] = result.ok()
    return found


OPERATIONS = _operations()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_generated_request_gets_a_server_error(label: str) -> None:
    operation = OPERATIONS[label]
    cases = st.one_of(*(operation.as_strategy(mode) for mode in GenerationMode))

    @given(case=cases)
    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def no_server_error(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {admin_token()}", "Host": "127.0.0.1"},
                               checks=[not_a_server_error])

    no_server_error()


def test_every_operation_is_fuzzed() -> None:
    assert len(OPERATIONS) > 40 and "POST /plans" in OPERATIONS and "GET /status" in OPERATIONS
