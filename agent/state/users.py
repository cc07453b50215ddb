"""Named staff: who they are, their role, their password (an argon2id hash), their sessions and API tokens.

Roles: ``clerk`` (search, links, bulk, postings to read) and ``admin`` (everything). Session and API tokens are
256-bit random strings, kept as SHA-256 hashes only (argon2 is for guessable passwords; a random token needs no
stretching, and every request looks one up). Sessions live in the store, so a restart signs nobody out; they end
``SESSION_HOURS`` after sign-in. A disabled person's sessions and tokens stop working at once. Every change to a
person or a token is an audit entry in its own transaction (a refused one too), naming the role, whether they are
enabled and the token's id and label, never a password, hash or token.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection, Row

from agent.core.errors import RuleError
from agent.core.model import Actor
from agent.state import audit, throttle
from agent.state.schema import api_tokens, user_sessions, users
from agent.state.store import StateStore, utcnow

ROLES = ("clerk", "admin")
FIRST_ADMIN = "admin"
SESSION_HOURS = 12
MIN_PASSWORD = 10
NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
hasher = PasswordHasher()
_NOBODY = hasher.hash(secrets.token_urlsafe(16))  # verified against for unknown names: the same time as a real one


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    role: str
    has_password: bool
    created_at: dt.datetime
    disabled_at: dt.datetime | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def valid_name(name: str) -> str:
    """The name as stored (lower case), or a RuleError that says what a name may be."""
    clean = name.strip().lower()
    if not NAME.fullmatch(clean):
        raise RuleError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '-' or '@', starting with a "
                        "letter or digit")
    return clean


def _password_hash(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise RuleError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    return hasher.hash(password)


def _user(row: Row[Any]) -> User:
    m = row._mapping
    return User(m["name"], m["role"], m["password_hash"] is not None, m["created_at"], m["disabled_at"])


def audited(user: User) -> dict[str, object]:
    """A person as the audit trail keeps them: no password, only how they sign in."""
    return {"role": user.role, "enabled": user.disabled_at is None,
            "sign_in": "password" if user.has_password else "link only"}


def get(conn: Connection, name: str) -> User | None:
    row = conn.execute(select(users).where(users.c.name == name.strip().lower())).first()
    return None if row is None else _user(row)


def existing(conn: Connection, name: str) -> User:
    found = get(conn, name)
    if found is None:
        raise RuleError(f"no user {name!r}; 'ledgerlink users list' shows them")
    return found


def add(store: StateStore, actor: Actor, name: str, role: str, password: str | None) -> User:
    """A new person; without a password they can sign in only through a one-time link."""
    with audit.attempt(store, actor, "user.add", "user", name.strip().lower()) as act:
        clean = valid_name(name)
        if role not in ROLES:
            raise RuleError(f"role {role!r}: use one of {', '.join(ROLES)}")
        hashed = None if password is None else _password_hash(password)
        with store.begin() as conn:
            if get(conn, clean) is not None:
                raise RuleError(f"user {clean!r} already exists; 'ledgerlink users reset {clean}' sets a new "
                                "password")
            conn.execute(users.insert().values(name=clean, role=role, password_hash=hashed, created_at=utcnow()))
            user = existing(conn, clean)
            act.record(conn, after=audited(user))
            return user


def listed(store: StateStore) -> list[User]:
    with store.read() as conn:
        return [_user(r) for r in conn.execute(select(users).order_by(users.c.name))]


def active_admins(conn: Connection) -> list[str]:
    return list(conn.execute(select(users.c.name).where(users.c.role == "admin", users.c.disabled_at.is_(None))
                             .order_by(users.c.name)).scalars())


def link_user(store: StateStore, name: str | None) -> str:
    """Whom a sign-in link signs in: the named active person, or else the only active admin."""
    with store.read() as conn:
        if name is not None:
            user = existing(conn, name)
            if user.disabled_at is not None:
                raise RuleError(f"{user.name!r} is disabled; 'ledgerlink users reset {user.name}' enables them")
            return user.name
        admins = active_admins(conn)
    if len(admins) != 1:
        raise RuleError(f"name the admin to sign in with --user ({', '.join(admins) or 'there is no active admin'}; "
                        "'ledgerlink users add NAME --role admin' adds one)")
    return admins[0]


def ensure_first_admin(store: StateStore, actor: Actor) -> bool:
    """On a home with nobody in it, the user ``admin`` (no password: the sign-in link signs it in). True if made."""
    with store.read() as conn:  # read first: a write transaction with nothing to write still claims the store
        if conn.execute(select(func.count()).select_from(users)).scalar():
            return False
    with store.begin() as conn:
        if conn.execute(select(func.count()).select_from(users)).scalar():
            return False
        conn.execute(users.insert().values(name=FIRST_ADMIN, role="admin", created_at=utcnow()))
        audit.record(conn, actor, "user.add", "user", FIRST_ADMIN, after=audited(existing(conn, FIRST_ADMIN)))
        return True


def disable(store: StateStore, actor: Actor, name: str) -> int:
    """Sign the person out everywhere and revoke their API tokens for good (enabling them again brings none back:
    a token that leaked while they were away must not return); the last active admin cannot be disabled.
    Returns how many tokens were revoked."""
    with audit.attempt(store, actor, "user.disable", "user", name.strip().lower()) as act, store.begin() as conn:
        user = existing(conn, name)
        if user.role == "admin" and active_admins(conn) == [user.name]:
            raise RuleError(f"{user.name!r} is the only active admin; add another admin first")
        now = utcnow()
        conn.execute(update(users).where(users.c.name == user.name).values(disabled_at=now))
        conn.execute(delete(user_sessions).where(user_sessions.c.user_name == user.name))
        revoked = conn.execute(update(api_tokens).where(api_tokens.c.user_name == user.name,
                                                        api_tokens.c.revoked_at.is_(None))
                               .values(revoked_at=now)).rowcount
        act.record(conn, before=audited(user), after={"enabled": False, "revoked": revoked})
    return revoked


def reset(store: StateStore, actor: Actor, name: str, password: str | None) -> tuple[User, int]:
    """Lift a lock-out, enable the person again and, given one, set a new password. Also returns how many API
    tokens their disabling revoked (they stay revoked: 'ledgerlink api token --user' makes new ones)."""
    with audit.attempt(store, actor, "user.reset", "user", name.strip().lower()) as act, store.begin() as conn:
        user = existing(conn, name)
        if user.disabled_at is not None:  # a home disabled before tokens were revoked on disable: revoke them now
            conn.execute(update(api_tokens).where(api_tokens.c.user_name == user.name,
                                                  api_tokens.c.revoked_at.is_(None)).values(revoked_at=utcnow()))
        lost = 0 if user.disabled_at is None else conn.execute(
            select(func.count()).select_from(api_tokens).where(
                api_tokens.c.user_name == user.name, api_tokens.c.revoked_at >= user.disabled_at)).scalar_one()
        values: dict[str, object] = {"disabled_at": None}
        if password is not None:
            values["password_hash"] = _password_hash(password)
            conn.execute(delete(user_sessions).where(user_sessions.c.user_name == user.name))
        conn.execute(update(users).where(users.c.name == user.name).values(**values))
        after = dataclasses.replace(user, disabled_at=None, has_password=user.has_password or password is not None)
        act.record(conn, before=audited(user), after={
            **audited(after), "changed": "new password set" if password is not None else "unlocked only"})
    throttle.cleared(store, throttle.name_key(user.name))
    return after, lost


def check_password(store: StateStore, name: str, password: str) -> User | None:
    """The active person with this name and password, or None; the same work whether the name exists or not."""
    with store.read() as conn:
        row = conn.execute(select(users).where(users.c.name == name.strip().lower(),
                                               users.c.disabled_at.is_(None))).first()
    stored = row._mapping["password_hash"] if row is not None else None
    try:
        hasher.verify(stored or _NOBODY, password)
    except (VerificationError, InvalidHashError):
        return None
    return _user(row) if row is not None and stored else None


# ------------------------------------------------------------------------------------ sessions and tokens


def open_session(store: StateStore, name: str, hours: float = SESSION_HOURS) -> str:
    """A session token for one signed-in console tab."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with store.begin() as conn:
        conn.execute(delete(user_sessions).where(user_sessions.c.expires_at <= now))  # the expired, swept
        conn.execute(user_sessions.insert().values(token_hash=token_hash(token), user_name=name, created_at=now,
                                                   expires_at=now + dt.timedelta(hours=hours)))
    return token


def close_session(store: StateStore, token: str) -> None:
    with store.begin() as conn:
        conn.execute(delete(user_sessions).where(user_sessions.c.token_hash == token_hash(token)))


def new_token(store: StateStore, actor: Actor, name: str, label: str) -> tuple[int, str]:
    """A personal API token for an active person: its id (to revoke it) and the token, which only this shows."""
    token = secrets.token_urlsafe(32)
    with audit.attempt(store, actor, "token.create", "user", name.strip().lower()) as act, store.begin() as conn:
        user = existing(conn, name)
        if user.disabled_at is not None:
            raise RuleError(f"{user.name!r} is disabled; 'ledgerlink users reset {user.name}' enables them again")
        key = conn.execute(api_tokens.insert().values(token_hash=token_hash(token), user_name=user.name,
                                                      label=label, created_at=utcnow())).inserted_primary_key
        assert key is not None, "an INSERT's result has the new row's key"
        act.target("token", str(key[0]))
        act.record(conn, after={"owner": user.name, "label": label})
    return int(key[0]), token


def revoke_token(store: StateStore, actor: Actor, ident: int) -> str:
    """Revoke token ``ident``; the name of its owner."""
    with audit.attempt(store, actor, "token.revoke", "token", str(ident)) as act, store.begin() as conn:
        row = conn.execute(select(api_tokens.c.user_name, api_tokens.c.label).where(
            api_tokens.c.id == ident, api_tokens.c.revoked_at.is_(None))).mappings().first()
        if row is None:
            raise RuleError(f"no active API token {ident}; 'ledgerlink api token --list' shows them")
        conn.execute(update(api_tokens).where(api_tokens.c.id == ident).values(revoked_at=utcnow()))
        act.record(conn, before={"owner": row["user_name"], "label": row["label"], "revoked": False},
                   after={"revoked": True})
    return str(row["user_name"])


def tokens(store: StateStore) -> list[dict[str, object]]:
    with store.read() as conn:
        return [dict(r) for r in conn.execute(select(api_tokens.c.id, api_tokens.c.user_name, api_tokens.c.label,
                                                     api_tokens.c.created_at, api_tokens.c.revoked_at)
                                              .order_by(api_tokens.c.id)).mappings()]


def holder(store: StateStore, token: str) -> User | None:
    """The active person a session or API token belongs to; None for an unknown, expired or revoked one."""
    if not token:
        return None
    hashed, now = token_hash(token), utcnow()
    with store.read() as conn:
        name = conn.execute(select(user_sessions.c.user_name).where(
            user_sessions.c.token_hash == hashed, user_sessions.c.expires_at > now)).scalar()
        if name is None:
            name = conn.execute(select(api_tokens.c.user_name).where(
                api_tokens.c.token_hash == hashed, api_tokens.c.revoked_at.is_(None))).scalar()
        user = None if name is None else get(conn, name)
    return user if user is not None and user.disabled_at is None else None


def adopt_token(store: StateStore, actor: Actor, token: str, name: str, role: str, label: str) -> bool:
    """Keep a token made elsewhere (an old shared one) working as ``name``'s, making that person if need be."""
    with store.begin() as conn:
        if conn.execute(select(api_tokens.c.id).where(api_tokens.c.token_hash == token_hash(token))).first():
            return False
        if get(conn, name) is None:
            conn.execute(users.insert().values(name=name, role=role, created_at=utcnow()))
            audit.record(conn, actor, "user.add", "user", name, after=audited(existing(conn, name)))
        key = conn.execute(api_tokens.insert().values(token_hash=token_hash(token), user_name=name, label=label,
                                                      created_at=utcnow())).inserted_primary_key
        assert key is not None, "an INSERT's result has the new row's key"
        audit.record(conn, actor, "token.adopt", "token", str(key[0]), after={"owner": name, "label": label})
    return True
