"""One-time console sign-in codes: the link the agent prints at start, and ``ledgerlink api login-link``.

A code is worthless after one use or after ``CODE_MINUTES``, so it may be logged and printed in full (the old link
carried the permanent token, which the log had to scrub, and which stayed in the browser's history). Only its hash
is stored; the API exchanges it once for a session token that lives in the tab's session storage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select, update

from agent.state.schema import sign_in_codes
from agent.state.store import StateStore, utcnow

CODE_MINUTES = 10


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def new_code(store: StateStore, role: str = "user", minutes: int = CODE_MINUTES) -> str:
    """A fresh code that signs one browser tab in as ``role`` (``user`` or ``admin``)."""
    code = secrets.token_urlsafe(18)
    now = utcnow()
    with store.begin() as conn:
        conn.execute(sign_in_codes.insert().values(code_hash=_hash(code), role=role, created_at=now,
                                                   expires_at=now + dt.timedelta(minutes=minutes)))
    return code


def redeem(store: StateStore, code: str) -> str | None:
    """The code's role, once: None for an unknown, used or expired code."""
    now = utcnow()
    c = sign_in_codes.c
    with store.begin() as conn:
        role = conn.execute(select(c.role).where(c.code_hash == _hash(code), c.used_at.is_(None),
                                                 c.expires_at > now)).scalar()
        if role is None:
            return None
        conn.execute(update(sign_in_codes).where(c.code_hash == _hash(code)).values(used_at=now))
    return str(role)
