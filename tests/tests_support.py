"""Helpers shared by test modules (conftest fixtures cannot be imported)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.api.app import ApiServer, serve_api
from agent.core.model import Actor
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state import users
from agent.state.store import StateStore
from connectors.database.contract import Connector
from connectors.testkit.databases import in_ci, odbc_unavailable

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"  # the console's screenshots
PASSWORD = "correct horse battery"  # every test person's password (argon2-hashed like a real one)
SETUP = Actor("cli", "test-setup")  # who makes the test people, on the audit trail like any other


def require(reason: str | None) -> None:
    """Skip with the reason on a laptop; fail under CI=true, where a missing server is never a silent skip."""
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and a required server or driver is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def odbc_connector(kind: str) -> type[Connector]:
    """The ODBC connector, once unixODBC and ``kind``'s driver are known to be installed (a skip, or under CI=true a
    failure, when not): its module loads libodbc, so nothing imports it before this check."""
    require(odbc_unavailable(kind))
    from connectors.database.odbc import ODBCConnector

    return ODBCConnector


def person(store: StateStore, name: str, role: str) -> str:
    """The named person with role ``role`` and the password PASSWORD, made (or given the password) as needed."""
    with store.read() as conn:
        found = users.get(conn, name)
    if found is None:
        users.add(store, SETUP, name, role, PASSWORD)
    else:
        assert found.role == role, f"{name!r} is a {found.role}, not a {role}"
        users.reset(store, SETUP, name, PASSWORD)
    return name


def bearer(store: StateStore, role: str = "clerk", name: str | None = None) -> str:
    """A personal API token of the person ``name`` (default: named after the role), made for the test."""
    return users.new_token(store, SETUP, person(store, name or role, role), "test")[1]


# The person the engine tests act as: the audit trail records every change under an actor.
STAFF = Actor("user", "test-clerk")


@contextmanager
def demo_runtime(home: Path, *, sync: bool = True) -> Iterator[Runtime]:
    """A runtime on the demo home at ``home`` (made unless it is there), links retrying at once, the mirror synced
    first unless ``sync`` is False; closed afterwards."""
    if not home.exists():
        init_home(home)
    runtime = Runtime.for_home(home)
    runtime.links.retry_initial = 0.01
    if sync:
        Syncer(runtime.store, runtime.connector).sync()
    try:
        yield runtime
    finally:
        runtime.close()


@contextmanager
def api_server(runtime: Runtime) -> Iterator[ApiServer]:
    """The HTTP API of ``runtime`` on a free port of 127.0.0.1, stopped afterwards."""
    server = serve_api(runtime, "127.0.0.1", 0)
    try:
        yield server
    finally:
        server.stop()
