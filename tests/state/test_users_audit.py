"""Issue 19: every change to a person or an API token is one audit entry with the right person and object, also
when it is refused; the first admin and the adopted shared tokens are the system's; no entry holds a password,
hash or token."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.core.errors import RuleError
from agent.core.model import Actor
from agent.state import StateStore, audit, users

PASSWORD = "a long enough password"
BOSS, FIRST_RUN = Actor("user", "boss"), Actor("system", "first-run")


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def trail(store: StateStore, since: int = 0) -> list[tuple[str, str, str, str]]:
    """(who, action, object, outcome) of every entry after ``since``; the chain intact throughout."""
    with store.read() as conn:
        assert audit.verify(conn).intact
        return [(e.actor, e.action, e.object, e.outcome) for e in audit.entries(conn) if e.seq > since]


def newest(store: StateStore) -> audit.Entry:
    with store.read() as conn:
        return audit.entries(conn, limit=1)[0]


def test_each_user_change_writes_one_entry_with_no_secret(store: StateStore) -> None:
    assert users.ensure_first_admin(store, FIRST_RUN) and not users.ensure_first_admin(store, FIRST_RUN)
    assert trail(store) == [("system:first-run", "user.add", "user:admin", "ok")]
    assert newest(store).after == {"role": "admin", "enabled": True, "sign_in": "link only"}
    users.add(store, BOSS, "Jo", "clerk", PASSWORD)
    assert trail(store, 1) == [("user:boss", "user.add", "user:jo", "ok")]
    assert newest(store).after == {"role": "clerk", "enabled": True, "sign_in": "password"}
    ident, token = users.new_token(store, BOSS, "jo", "matter software")
    assert trail(store, 2) == [("user:boss", "token.create", f"token:{ident}", "ok")]
    assert newest(store).after == {"owner": "jo", "label": "matter software"}
    users.disable(store, BOSS, "jo")
    assert trail(store, 3) == [("user:boss", "user.disable", "user:jo", "ok")]
    assert (newest(store).before["enabled"], newest(store).after) == (True, {"enabled": False, "revoked": 1})
    users.reset(store, BOSS, "jo", "another long password")
    assert trail(store, 4) == [("user:boss", "user.reset", "user:jo", "ok")]
    assert (newest(store).before["enabled"], newest(store).after["enabled"]) == (False, True)
    assert newest(store).after["changed"] == "new password set"
    ident, token = users.new_token(store, BOSS, "jo", "matter software")  # the old one stays revoked
    assert trail(store, 5)[0][1] == "token.create"
    assert users.revoke_token(store, BOSS, ident) == "jo"
    assert trail(store, 6) == [("user:boss", "token.revoke", f"token:{ident}", "ok")]
    assert newest(store).before == {"owner": "jo", "label": "matter software", "revoked": False}
    with store.read() as conn:
        written = "".join(f"{e.before}{e.after}{e.error}" for e in audit.entries(conn))
    hashes = [users.token_hash(token)]
    assert not any(secret in written for secret in (PASSWORD, "another long password", token, *hashes, "$argon2"))


def test_a_refused_user_change_writes_one_failed_entry(store: StateStore) -> None:
    users.add(store, BOSS, "boss", "admin", PASSWORD)
    for call, message, action, obj in (
            (lambda: users.add(store, BOSS, "boss", "clerk", PASSWORD), "already exists", "user.add", "user:boss"),
            (lambda: users.add(store, BOSS, "jo", "partner", PASSWORD), "role 'partner'", "user.add", "user:jo"),
            (lambda: users.add(store, BOSS, "jo", "clerk", "tiny-pw9"), "at least 10", "user.add", "user:jo"),
            (lambda: users.disable(store, BOSS, "boss"), "only active admin", "user.disable", "user:boss"),
            (lambda: users.reset(store, BOSS, "ghost", None), "no user 'ghost'", "user.reset", "user:ghost"),
            (lambda: users.new_token(store, BOSS, "ghost", "x"), "no user 'ghost'", "token.create", "user:ghost"),
            (lambda: users.revoke_token(store, BOSS, 99), "no active API token 99", "token.revoke", "token:99")):
        seq = newest(store).seq
        with pytest.raises(RuleError, match=message):
            call()
        assert trail(store, seq) == [("user:boss", action, obj, "failed")]
        assert message in (newest(store).error or "")
    with store.read() as conn:
        assert "tiny-pw9" not in "".join(f"{e.before}{e.after}{e.error}" for e in audit.entries(conn))


def test_an_adopted_shared_token_is_the_systems_entry_once(store: StateStore) -> None:
    shared = "an-old-shared-token-value"
    assert users.adopt_token(store, FIRST_RUN, shared, "staff", "clerk", "shared api-token of an earlier release")
    assert not users.adopt_token(store, FIRST_RUN, shared, "staff", "clerk", "again")
    [made, kept] = trail(store)
    assert made == ("system:first-run", "user.add", "user:staff", "ok")
    assert kept[:2] == ("system:first-run", "token.adopt") and kept[2].startswith("token:")
    assert newest(store).after == {"owner": "staff", "label": "shared api-token of an earlier release"}
    with store.read() as conn:
        assert shared not in "".join(f"{e.before}{e.after}" for e in audit.entries(conn))
