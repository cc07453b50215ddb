"""Issue 19: named staff in the state store (on each database it may live on), and the sign-in throttle."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, update

from agent.core.errors import RuleError
from agent.core.model import Actor
from agent.state import StateStore, throttle, users
from agent.state.schema import sign_in_failures, user_sessions
from agent.state.schema import users as users_table
from agent.state.signin import new_code, redeem
from agent.state.store import utcnow
from connectors.testkit.databases import TempDatabase

PASSWORD = "a long enough password"
ADMIN, FIRST_RUN = Actor("user", "boss"), Actor("system", "first-run")


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def test_people_sessions_and_tokens_on_every_state_database(any_db: TempDatabase) -> None:
    store = StateStore(any_db.url.render_as_string(hide_password=False))
    try:
        made = users.ensure_first_admin(store, FIRST_RUN)
        assert made and not users.ensure_first_admin(store, FIRST_RUN)  # once, on an empty home
        clerk = users.add(store, ADMIN, "Jo.Smith@firm", "clerk", PASSWORD)
        assert (clerk.name, clerk.role, clerk.has_password) == ("jo.smith@firm", "clerk", True)
        with store.read() as conn:
            stored = conn.execute(select(users_table.c.password_hash).where(users_table.c.name == clerk.name)).scalar()
        assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored
        assert users.check_password(store, "JO.SMITH@FIRM", PASSWORD) == clerk
        assert users.check_password(store, clerk.name, PASSWORD + "!") is None
        assert users.check_password(store, "nobody", PASSWORD) is None
        assert users.check_password(store, "admin", "") is None  # no password: only a sign-in link

        session = users.open_session(store, clerk.name)
        ident, token = users.new_token(store, ADMIN, clerk.name, "matter software")
        with store.read() as conn:
            hashes = [*conn.execute(select(user_sessions.c.token_hash)).scalars()]
        assert session not in hashes and users.token_hash(session) in hashes  # only the hash is kept
        assert users.holder(store, session) == clerk and users.holder(store, token) == clerk
        assert users.holder(store, "not-a-token") is None and users.holder(store, "") is None

        code = new_code(store, "admin")
        assert redeem(store, code) == "admin" and redeem(store, code) is None

        _, other = users.new_token(store, ADMIN, clerk.name, "spare")
        with pytest.MonkeyPatch.context() as later:  # revoked an hour before the disabling (MariaDB keeps seconds)
            later.setattr(users, "utcnow", lambda: utcnow() - dt.timedelta(hours=1))
            assert users.revoke_token(store, ADMIN, ident) == clerk.name
        assert users.holder(store, token) is None
        with pytest.raises(RuleError, match="no active API token"):
            users.revoke_token(store, ADMIN, ident)
        _, third = users.new_token(store, ADMIN, clerk.name, "third")

        assert users.disable(store, ADMIN, clerk.name) == 2  # "spare" and "third"; the revoked one not again
        assert users.holder(store, session) is None and users.holder(store, other) is None
        assert users.reset(store, ADMIN, clerk.name, None) == (clerk, 2)  # unlock only: re-enabled ...
        assert users.check_password(store, clerk.name, PASSWORD) == clerk
        for old in (session, token, other, third):  # ... but no session or token of before comes back
            assert users.holder(store, old) is None
        assert users.reset(store, ADMIN, clerk.name, None)[1] == 0  # not disabled: nothing to say
    finally:
        store.close()


def test_sessions_survive_a_restart_and_end_when_they_expire(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = StateStore(url)
    users.add(first, ADMIN, "jo", "clerk", PASSWORD)
    session = users.open_session(first, "jo")
    first.close()
    again = StateStore(url)  # the agent restarted
    assert users.holder(again, session) is not None
    with again.begin() as conn:
        conn.execute(update(user_sessions).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    assert users.holder(again, session) is None


def test_mistakes_are_refused_with_the_fix(store: StateStore) -> None:
    users.add(store, ADMIN, "boss", "admin", PASSWORD)
    for call, message in (
            (lambda: users.add(store, ADMIN, "boss", "clerk", PASSWORD), "already exists"),
            (lambda: users.add(store, ADMIN, "with space", "clerk", PASSWORD), "user name 'with space'"),
            (lambda: users.add(store, ADMIN, "jo", "partner", PASSWORD), "role 'partner': use one of clerk, admin"),
            (lambda: users.add(store, ADMIN, "jo", "clerk", "short"), "at least 10 characters"),
            (lambda: users.disable(store, ADMIN, "boss"), "only active admin"),
            (lambda: users.reset(store, ADMIN, "ghost", PASSWORD), "no user 'ghost'"),
            (lambda: users.link_user(store, "ghost"), "no user 'ghost'")):
        with pytest.raises(RuleError, match=message):
            call()
    assert users.link_user(store, None) == "boss"
    users.add(store, ADMIN, "second", "admin", None)
    with pytest.raises(RuleError, match=r"name the admin to sign in with --user \(boss, second"):
        users.link_user(store, None)
    users.disable(store, ADMIN, "boss")  # another admin is left now
    assert users.link_user(store, None) == "second"


def test_the_throttle_waits_longer_each_time_then_locks_and_forgets(store: StateStore) -> None:
    now = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
    keys = throttle.keys("Jo", "10.0.0.5")
    waits = []
    for _ in range(throttle.LOCK_AFTER["user"]):
        throttle.failed(store, keys, now)
        waits.append(throttle.waiting(store, keys, now))
        now += dt.timedelta(minutes=1, seconds=1)  # past every wait short of a lock-out
    assert [w for w, _locked in waits] == [0, 0, 2, 3, 5, 9, 17, 33, 61, 15 * 60 + 1]
    assert [locked for _w, locked in waits] == [False] * 9 + [True]
    now -= dt.timedelta(minutes=1, seconds=1)
    assert throttle.waiting(store, throttle.keys("jo", "10.0.0.9"), now + dt.timedelta(minutes=14))[1]  # the name
    assert throttle.waiting(store, keys, now + dt.timedelta(minutes=15, seconds=1)) == (0, False)  # by time
    throttle.failed(store, keys, now + dt.timedelta(minutes=16))  # and the count starts again
    assert throttle.waiting(store, keys, now + dt.timedelta(minutes=16)) == (0, False)
    throttle.cleared(store, throttle.name_key("JO"))
    with store.read() as conn:
        assert [k for k in conn.execute(select(sign_in_failures.c.key)).scalars()] == ["addr:10.0.0.5"]


def test_one_address_trying_many_names_is_locked_out(store: StateStore) -> None:
    now = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
    for i in range(throttle.LOCK_AFTER["addr"]):
        throttle.failed(store, throttle.keys(f"name{i}", "10.0.0.7"), now)
    assert throttle.waiting(store, throttle.keys("someone-else", "10.0.0.7"), now)[1]
    assert throttle.waiting(store, throttle.keys("someone-else", "10.0.0.8"), now) == (0, False)


def test_reset_lifts_a_lock_out(store: StateStore) -> None:
    users.add(store, ADMIN, "jo", "clerk", PASSWORD)
    for _ in range(throttle.LOCK_AFTER["user"]):
        throttle.failed(store, throttle.keys("jo", "10.0.0.5"))
    assert throttle.waiting(store, [throttle.name_key("jo")])[1]
    users.reset(store, ADMIN, "jo", None)
    assert throttle.waiting(store, [throttle.name_key("jo")]) == (0, False)
