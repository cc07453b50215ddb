"""The first answer to each ``Idempotency-Key``, kept 24 hours, so an API client that lost an answer can ask again
without doing the thing twice (issue 24, item 8; Stripe's API behaves the same way:
https://docs.stripe.com/api/idempotent_requests).

A key is claimed in its own transaction before the request runs and answered after it; a request cut off in
between (the agent killed) leaves a claim with no answer, which a later retry may take over once it is older than
``STALE``: the engines behind the money routes are themselves idempotent (a matter's outstanding link, a refund's id
derived from the key), so running it again makes nothing twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from agent.state.schema import api_replays
from agent.state.store import StateStore, utcnow

KEPT = dt.timedelta(hours=24)
STALE = dt.timedelta(seconds=60)  # longer than any request takes: a claim this old was cut off


@dataclass(frozen=True)
class Claim:
    """What to do with a request carrying a key: ``run`` it, or ``replay`` (status and body), or refuse it because
    the key ``differs`` (other method, path or body) or is ``running`` now."""

    verdict: str  # run | replay | differs | running
    status: int | None = None
    body: str | None = None
    first: str | None = None  # "POST /links": what the key was first used for


def claim(store: StateStore, key: str, method: str, path: str, body_sha256: str) -> Claim:
    now = utcnow()
    try:
        with store.begin() as conn:
            conn.execute(delete(api_replays).where(api_replays.c.created_at < now - KEPT))
            row = conn.execute(select(api_replays).where(api_replays.c.key == key).with_for_update()
                               ).mappings().first()
            if row is None:
                conn.execute(api_replays.insert().values(key=key, method=method, path=path,
                                                         body_sha256=body_sha256, created_at=now))
                return Claim("run")
            first = f"{row['method']} {row['path']}"
            if (row["method"], row["path"], row["body_sha256"]) != (method, path, body_sha256):
                return Claim("differs", first=first)
            if row["status"] is not None:
                return Claim("replay", row["status"], row["body"], first)
            if row["created_at"] > now - STALE:
                return Claim("running", first=first)
            _touch(conn, key, now)  # cut off: this retry takes it over
            return Claim("run")
    except IntegrityError:  # another request with the same key claimed it a moment ago
        return Claim("running", first=f"{method} {path}")


def _touch(conn: Connection, key: str, now: dt.datetime) -> None:
    conn.execute(update(api_replays).where(api_replays.c.key == key).values(created_at=now))


def forget(store: StateStore, key: str) -> None:
    """Drop a claim whose request failed before it answered, so the client's retry runs again."""
    with store.begin() as conn:
        conn.execute(delete(api_replays).where(api_replays.c.key == key))


def answer(store: StateStore, key: str, status: int, body: str) -> None:
    """Keep the first answer (2xx or 4xx); a server error is forgotten, so the client's retry runs again."""
    with store.begin() as conn:
        if status >= 500:
            conn.execute(delete(api_replays).where(api_replays.c.key == key))
        else:
            conn.execute(update(api_replays).where(api_replays.c.key == key).values(status=status, body=body))


__all__ = ["KEPT", "STALE", "Claim", "answer", "claim", "forget"]
