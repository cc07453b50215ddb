"""Shared fixtures: the demo ``home``, and throw-away databases on the real servers. Under CI=true an unreachable
server FAILS the test (never a silent skip); elsewhere the test skips with the reason."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from money_support import WORLDS, MoneyWorld
from tests_support import ARTIFACTS, require

from agent.home.demo import init_home
from agent.home.secrets import env_name
from connectors.testkit.databases import (
    TempDatabase,
    mariadb_server,
    odbc_unavailable,
    postgres_server,
    temp_database,
    unavailable,
)

RUN_MARK = "PYTEST_LEDGERLINK_RUN"  # set by the outermost pytest of a run (not LEDGERLINK_: those are settings)


def pytest_sessionstart(session: pytest.Session) -> None:
    """The console's screenshots are made afresh each run, cleared once by the run itself: never by a worker of
    a parallel run (pytest-xdist), nor by a pytest a test starts (test_release.py, test_provider_example.py),
    either of which would delete what another test has just saved. The run marks itself in the environment,
    which its workers and their children inherit."""
    if os.environ.get(RUN_MARK) or hasattr(session.config, "workerinput"):
        return
    os.environ[RUN_MARK] = "1"
    shutil.rmtree(ARTIFACTS, ignore_errors=True)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh demo home (settings, the demo mapping and the demo firm's database); a module that needs another
    home defines its own ``home``."""
    made = tmp_path / "home"
    init_home(made)
    return made


@pytest.fixture(scope="session")
def postgres_ok() -> None:
    require(unavailable(postgres_server()))


@pytest.fixture(scope="session")
def mariadb_ok() -> None:
    require(unavailable(mariadb_server()))


@pytest.fixture
def pg_db(postgres_ok: None) -> Iterator[TempDatabase]:
    with temp_database("postgresql") as db:
        yield db


@pytest.fixture
def maria_db(mariadb_ok: None) -> Iterator[TempDatabase]:
    with temp_database("mariadb") as db:
        yield db


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[TempDatabase]:
    with temp_database("sqlite", tmp_path) as db:
        yield db


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TempDatabase]:
    """The same test on all three databases."""
    kind = request.param
    if kind == "postgresql":
        require(unavailable(postgres_server()))
    elif kind == "mariadb":
        require(unavailable(mariadb_server()))
    with temp_database(kind, tmp_path) as db:
        yield db


@pytest.fixture
def odbc_ok() -> None:
    for kind in ("postgresql", "mariadb", "sqlite"):
        require(odbc_unavailable(kind))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's real home, keyring or LEDGERLINK_* settings."""
    import os

    for name in list(os.environ):
        if name.startswith("LEDGERLINK_") and not name.startswith("LEDGERLINK_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGERLINK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")


@pytest.fixture(params=sorted(WORLDS))
def money(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MoneyWorld]:
    """One provider's world (tests/money_support.py) for the test's ``home``; credentials by reference in the
    environment, never in the config file."""
    world: MoneyWorld = WORLDS[request.param](home)
    for name, value in world.secrets().items():
        monkeypatch.setenv(env_name(name), value)
    yield world
    world.close()
