"""Issue 19: sign-in with name and password over HTTP, its lock-out and how it ends, refusals logged without
secrets, and the shared tokens of an earlier release kept working as personal ones."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import or_, update
from tests_support import PASSWORD, SETUP, api_server, demo_runtime, person

from agent.api.app import ApiServer, serve_api
from agent.api.auth import settle_users
from agent.cli.main import main
from agent.core.errors import ConfigurationError
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state import throttle, users
from agent.state.schema import sign_in_failures


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Runtime, ApiServer]]:
    with demo_runtime(tmp_path / "home", sync=False) as rt, api_server(rt) as server:
        yield rt, server


def sign_in(server: ApiServer, name: str, password: str) -> httpx.Response:
    return httpx.post(f"{server.url}/console/sign-in", json={"name": name, "password": password}, timeout=10)


def time_passes(rt: Runtime) -> None:
    """Every wait short of a lock-out over: the next attempt may be checked."""
    c = sign_in_failures.c
    with rt.store.begin() as conn:
        conn.execute(update(sign_in_failures).where(or_(c.key.like("addr:%"), c.failures < throttle.LOCK_AFTER["user"]))
                     .values(not_before=dt.datetime.now(dt.UTC)))


def test_wrong_passwords_wait_longer_then_lock_out_until_reset(served: tuple[Runtime, ApiServer],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    rt, server = served
    person(rt.store, "jo", "clerk")
    ok = sign_in(server, "Jo", PASSWORD)
    assert ok.status_code == 200 and (ok.json()["user"], ok.json()["role"]) == ("jo", "clerk")
    statuses = []
    with caplog.at_level(logging.WARNING, "ledgerlink.api"):
        for attempt in range(throttle.LOCK_AFTER["user"]):
            statuses.append(sign_in(server, "jo", f"guess number {attempt}").status_code)
            if attempt >= throttle.FREE["user"] - 1:  # from the third failure on, the next attempt waits, right or not
                paused = sign_in(server, "jo", PASSWORD)
                assert paused.status_code == 429 and int(paused.headers["retry-after"]) >= 1
            time_passes(rt)
    assert statuses == [401] * throttle.LOCK_AFTER["user"]
    locked = sign_in(server, "jo", PASSWORD)
    assert locked.status_code == 429 and "locked for 15 minutes" in locked.json()["error"]
    assert "ledgerlink users reset" in locked.json()["error"]
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "401 wrong password for 'jo'" in log and "429 locked out" in log
    assert "guess number" not in log and PASSWORD not in log

    assert main(["--home", str(rt.settings.home), "users", "reset", "jo", "--unlock-only"]) == 0
    assert sign_in(server, "jo", PASSWORD).status_code == 200


def test_a_lock_out_ends_by_itself(served: tuple[Runtime, ApiServer]) -> None:
    rt, server = served
    person(rt.store, "jo", "clerk")
    for _ in range(throttle.LOCK_AFTER["user"]):
        throttle.failed(rt.store, [throttle.name_key("jo")])
    assert sign_in(server, "jo", PASSWORD).status_code == 429
    with rt.store.begin() as conn:  # LOCK_MINUTES later
        later = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=throttle.LOCK_MINUTES, seconds=1)
        conn.execute(update(sign_in_failures).values(not_before=later, last_failure_at=later))
    assert sign_in(server, "jo", PASSWORD).status_code == 200


def test_a_password_typed_as_the_name_stays_out_of_the_log(served: tuple[Runtime, ApiServer],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    _rt, server = served
    with caplog.at_level(logging.WARNING, "ledgerlink.api"):
        assert sign_in(server, "Hunter2-secret", "x").status_code == 401
        assert httpx.post(f"{server.url}/console/sign-in", json={"code": "code-that-is-wrong"}).status_code == 401
        assert httpx.get(f"{server.url}/status", headers={"Authorization": "Bearer tok-in-header"}).status_code == 401
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "wrong password for an unknown name" in log and "a used, expired or unknown code" in log
    assert "refused GET /status from 127.0.0.1: 401 wrong or expired token" in log
    assert not any(secret in log for secret in ("Hunter2", "code-that-is-wrong", "tok-in-header"))


def test_a_disabled_person_is_signed_out_and_cannot_sign_in(served: tuple[Runtime, ApiServer]) -> None:
    rt, server = served
    person(rt.store, "jo", "clerk")
    session = sign_in(server, "jo", PASSWORD).json()["token"]
    users.disable(rt.store, SETUP, "jo")
    assert httpx.get(f"{server.url}/status", headers={"Authorization": f"Bearer {session}"}).status_code == 401
    assert sign_in(server, "jo", PASSWORD).status_code == 401


def test_the_shared_tokens_of_an_earlier_release_become_personal_ones(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "home"
    init_home(home)
    rt = Runtime.for_home(home)
    rt.secrets.set("api-token", "old-shared-clerk-token-0123456789")  # as 0.2 left them in the keyring
    rt.secrets.set("api-admin-token", "old-shared-admin-token-0123456789")
    with caplog.at_level(logging.WARNING, "ledgerlink.api"):
        server = serve_api(rt, "127.0.0.1", 0)
    try:
        for token, name, settings in (("old-shared-clerk-token-0123456789", "staff", 403),
                                      ("old-shared-admin-token-0123456789", "admin", 200)):
            auth = {"Authorization": f"Bearer {token}"}
            assert httpx.get(f"{server.url}/console-info", headers=auth).json()["user"] == name
            assert httpx.get(f"{server.url}/settings/accounts/operating", headers=auth).status_code == settings
    finally:
        server.stop()
    for secret in ("api-token", "api-admin-token"):
        with pytest.raises(ConfigurationError):
            rt.secrets.get(secret)  # out of the keyring: the store keeps only the hash
    assert "is now the personal token of 'staff'" in caplog.text and "old-shared" not in caplog.text
    settle_users(rt)  # again: nothing doubled
    assert [(t["user_name"], t["label"]) for t in users.tokens(rt.store)] == [
        ("admin", "shared api-admin-token of an earlier release"), ("staff", "shared api-token of an earlier release")]
    rt.close()


def test_a_forwarded_header_neither_dodges_the_address_lock_out_nor_reaches_the_log(
        served: tuple[Runtime, ApiServer], caplog: pytest.LogCaptureFixture) -> None:
    """Nothing sits in front of a 127.0.0.1 service: X-Forwarded-For is the caller's own words, not its address."""
    rt, server = served
    person(rt.store, "jo", "clerk")
    with caplog.at_level(logging.WARNING, "ledgerlink.api"):
        for attempt in range(throttle.LOCK_AFTER["addr"]):  # a guesser rotating the header and the name
            time_passes(rt)  # (which would lift an address lock: so before each attempt, not after the last)
            forged = {"X-Forwarded-For": f"10.0.{attempt}.1"}
            assert httpx.post(f"{server.url}/console/sign-in", json={"name": f"guess{attempt}", "password": "x" * 12},
                              headers=forged, timeout=10).status_code == 401
        rotated = httpx.post(f"{server.url}/console/sign-in", json={"name": "jo", "password": PASSWORD},
                             headers={"X-Forwarded-For": "10.99.0.1"}, timeout=10)
    assert rotated.status_code == 429  # this address is locked, whatever the header says
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused sign-in from 127.0.0.1: 401" in log and "10.0." not in log and "10.99" not in log


def test_a_named_proxy_is_believed(tmp_path: Path) -> None:
    with demo_runtime(tmp_path / "home", sync=False) as rt:
        rt.settings.trusted_proxies = ["127.0.0.1"]
        person(rt.store, "jo", "clerk")
        for _ in range(throttle.LOCK_AFTER["addr"]):
            throttle.failed(rt.store, ["addr:127.0.0.1"])
        with api_server(rt) as server:
            through = httpx.post(f"{server.url}/console/sign-in", json={"name": "jo", "password": PASSWORD},
                                 headers={"X-Forwarded-For": "192.0.2.7"}, timeout=10)
    assert through.status_code == 200  # the proxy's own address is locked, the client behind it is not
