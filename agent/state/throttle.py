"""Brute-force protection for sign-in, per name (``user:NAME``) and per client address (``addr:IP``).

The first ``FREE`` failures cost nothing (a typo); each one from then on makes the next attempt wait twice as long
(1 s, 2 s, ... up to a minute), and the ``LOCK_AFTER``-th locks the key for ``LOCK_MINUTES``. A key forgets its
failures ``LOCK_MINUTES`` after the last one, which is also how a lock-out ends by itself; ``ledgerlink users
reset NAME`` ends a name's at once. Failures are counted for unknown names too, so trying names reveals nothing.
Kept in the state store, so a restart does not reset the count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, select, update

from agent.state.schema import sign_in_failures
from agent.state.store import StateStore, utcnow

FREE = {"user": 3, "addr": 10}  # an office behind one address has many people mistyping
LOCK_AFTER = {"user": 10, "addr": 30}
MAX_DELAY = 60.0
LOCK_MINUTES = 15


def name_key(name: str) -> str:
    return f"user:{name.strip().lower()}"


def keys(name: str, address: str) -> list[str]:
    return [name_key(name), f"addr:{address}"]


def _delay(key: str, failures: int) -> dt.timedelta:
    kind = key.split(":", 1)[0]
    if failures >= LOCK_AFTER[kind]:
        return dt.timedelta(minutes=LOCK_MINUTES)
    if failures < FREE[kind]:
        return dt.timedelta(0)
    return dt.timedelta(seconds=min(2.0 ** (failures - FREE[kind]), MAX_DELAY))


def waiting(store: StateStore, names: Sequence[str], now: dt.datetime | None = None) -> tuple[int, bool]:
    """Seconds to wait before another attempt may be checked (0: go ahead), and whether a key is locked out."""
    now = now or utcnow()
    c = sign_in_failures.c
    with store.read() as conn:
        rows = conn.execute(select(c.key, c.failures, c.not_before).where(c.key.in_(names))).all()
    wait, locked = 0, False
    for key, failures, not_before in rows:
        if not_before > now:
            wait = max(wait, int((not_before - now).total_seconds()) + 1)
            locked = locked or failures >= LOCK_AFTER[key.split(":", 1)[0]]
    return wait, locked


def failed(store: StateStore, names: Sequence[str], now: dt.datetime | None = None) -> None:
    """Count a failed attempt against each key."""
    now = now or utcnow()
    c = sign_in_failures.c
    with store.begin() as conn:
        for key in names:
            row = conn.execute(select(c.failures, c.last_failure_at).where(c.key == key)).first()
            fresh = row is None or now - row.last_failure_at > dt.timedelta(minutes=LOCK_MINUTES)
            failures = 1 if fresh or row is None else row.failures + 1
            values = {"failures": failures, "last_failure_at": now, "not_before": now + _delay(key, failures)}
            if row is None:
                conn.execute(sign_in_failures.insert().values(key=key, **values))
            else:
                conn.execute(update(sign_in_failures).where(c.key == key).values(**values))


def cleared(store: StateStore, key: str) -> None:
    """Forget a key's failures: a right password for the name, or an admin's reset."""
    with store.begin() as conn:
        conn.execute(delete(sign_in_failures).where(sign_in_failures.c.key == key))
