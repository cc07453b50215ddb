"""One-time console sign-in codes: the link the agent prints at start, and ``ledgerlink api login-link``.

A code is worthless after one use or after ``CODE_MINUTES``, so it may be logged and printed in full (the old link
carried the permanent token, which the log had to scrub, and which stayed in the browser's history). Only its hash
is stored; the API exchanges it once for a session of the named person it was made for.
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select, update

from agent.state.schema import sign_in_codes
from agent.state.store import StateStore, utcnow
from agent.state.users import existing, token_hash

CODE_MINUTES = 10


def new_code(store: StateStore, user: str, minutes: int = CODE_MINUTES) -> str:
    """A fresh code that signs one browser tab in as the person ``user``."""
    code = secrets.token_urlsafe(18)
    now = utcnow()
    with store.begin() as conn:
        person = existing(conn, user)
        conn.execute(sign_in_codes.insert().values(code_hash=token_hash(code), role=person.role,
                                                   user_name=person.name, created_at=now,
                                                   expires_at=now + dt.timedelta(minutes=minutes)))
    return code


def redeem(store: StateStore, code: str) -> str | None:
    """The name of the person the code signs in, once: None for an unknown, used or expired code."""
    now = utcnow()
    c = sign_in_codes.c
    with store.begin() as conn:
        name = conn.execute(select(c.user_name).where(c.code_hash == token_hash(code), c.used_at.is_(None),
                                                      c.user_name.is_not(None), c.expires_at > now)).scalar()
        if name is None:
            return None
        conn.execute(update(sign_in_codes).where(c.code_hash == token_hash(code)).values(used_at=now))
    return str(name)
