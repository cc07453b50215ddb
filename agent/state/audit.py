"""The audit trail a regulator would accept: who changed money or configuration, when, what, and the values.

Every change appends one entry IN the change's own transaction (``record``), so the entry and the change commit or
roll back together; a refused or failed action appends one entry of its own afterwards (``attempt``). Entries are
chained: each holds the hash of the one before it and its own hash over a canonical encoding of its fields, so
``verify`` names the first entry that was edited, deleted or moved. Appends lock the one-row ``audit_head`` first,
which makes writers from several processes take turns: the chain never forks.

The chain alone can be recomputed by whoever holds the database; each entry is therefore also sealed with a key
kept outside it, and signed checkpoints of the head are kept outside it too (agent.state.anchor).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, or_, select, update

from agent.core.errors import TransientError
from agent.core.model import Actor
from agent.core.scrub import scrub
from agent.state.anchor import SECRET, AuditKeys, Checkpoint, Latest, Seal, latest
from agent.state.schema import Row, audit_head, audit_log
from agent.state.store import AUDIT_SEAL, StateStore, utcnow

GENESIS = "0" * 64  # the prev_hash of the first entry
# Keys whose values are never written: a secret's *name* (password_secret, token_secret) is fine, its value is not.
SECRET_WORDS = ("password", "token", "api_key", "apikey", "credential", "webhook_secret_value")
UNATTENDED = ("job", "intake", "system")  # actors that retry by themselves
URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")  # postgresql://user:PASSWORD@host


@dataclass(frozen=True)
class Entry:
    """One audit entry as read back; ``before``/``after`` are the decoded JSON."""

    seq: int
    at: dt.datetime
    actor: str
    action: str
    object_kind: str
    object_id: str
    outcome: str
    error: str | None
    before: Any
    after: Any
    prev_hash: str
    hash: str
    key_id: str | None = None
    mac: str | None = None

    @property
    def object(self) -> str:
        return f"{self.object_kind}:{self.object_id}"


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: the entries checked and, when the chain is broken, the first bad entry and why."""

    count: int
    bad_seq: int | None = None
    problem: str | None = None
    keyed_from: int | None = None  # the first entry that must carry a seal; None: the trail is not keyed
    checkpoints: tuple[str, ...] = ()  # the checkpoints the trail was found to match, in words

    @property
    def intact(self) -> bool:
        return self.problem is None


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _redact(value: Any) -> Any:
    """Values safe to keep for ever: secret-looking keys dropped to ***, secret values scrubbed from text."""
    if isinstance(value, Mapping):
        return {str(k): "***" if _secret_key(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return URL_PASSWORD.sub(r"\1***@", scrub(value)) if isinstance(value, str) else value


def _secret_key(key: str) -> bool:
    low = key.lower()
    return not low.endswith("_secret") and any(word in low for word in SECRET_WORDS)


def encode(value: Any) -> str | None:
    """Canonical JSON (sorted keys, no spaces, exact decimals) of ``value``, redacted; None stays None."""
    if value is None:
        return None
    return json.dumps(_redact(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)


ENTRY_FIELDS = ("seq", "at", "actor", "action", "object_kind", "object_id", "outcome", "error", "before", "after",
                "prev_hash", "hash")


def entry_hash(fields: Row) -> str:
    """SHA-256 over the canonical encoding of an entry's fields, its seq and the hash before it included."""
    at: dt.datetime = fields["at"]
    canonical = [fields["seq"], at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), fields["actor"],
                 fields["action"], fields["object_kind"], fields["object_id"], fields["outcome"], fields["error"],
                 fields["before"], fields["after"], fields["prev_hash"]]
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the keys whose values differ, from each side: what a settings change actually changed."""
    keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys if k in before}, {k: after.get(k) for k in keys if k in after}


def record(conn: Connection, actor: Actor, action: str, object_kind: str, object_id: str, *,
           before: Any = None, after: Any = None, outcome: str = "ok", error: str | None = None) -> int:
    """Append one entry in the caller's transaction (the change's own); returns its seq.

    The head row is locked first (SELECT ... FOR UPDATE; SQLite's BEGIN IMMEDIATE already serialises writers),
    so a second writer waits for this transaction and then chains onto this entry.
    """
    head = conn.execute(select(audit_head).where(audit_head.c.id == 1).with_for_update()).mappings().one()
    fields: dict[str, Any] = {
        "seq": head["seq"] + 1, "at": utcnow().replace(microsecond=0), "actor": str(actor)[:191],
        "action": action, "object_kind": object_kind, "object_id": str(object_id)[:191], "outcome": outcome,
        "error": scrub(error) if error else None, "before": encode(before), "after": encode(after),
        "prev_hash": head["hash"],
    }
    fields["hash"] = entry_hash(fields)
    seal: Seal | None = conn.info.get(AUDIT_SEAL)
    sealing = seal.key_for(head["key_id"]) if seal is not None else None
    moved: dict[str, Any] = {"seq": fields["seq"], "hash": fields["hash"]}
    if sealing is not None:
        keys, key_id = sealing
        fields["key_id"], fields["mac"] = key_id, keys.seal(key_id, fields["seq"], fields["hash"])
        moved["key_id"] = key_id
    conn.execute(audit_log.insert().values(**fields))
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(**moved))
    seq: int = fields["seq"]
    return seq


class Attempt:
    """An action under way: ``done`` once its entry is in the change's transaction, so a failure after that is
    not recorded twice. ``target`` may be refined once the object is known (a link made for a matter)."""

    def __init__(self, actor: Actor, action: str, object_kind: str, object_id: str, before: Any) -> None:
        self.actor, self.action = actor, action
        self.object_kind, self.object_id, self.before = object_kind, object_id, before
        self.done = False

    def target(self, object_kind: str, object_id: str) -> None:
        self.object_kind, self.object_id = object_kind, object_id

    def unchanged(self) -> None:
        """Nothing was changed (an existing link or mandate handed back): no entry, now or on a later error."""
        self.done = True

    def record(self, conn: Connection, *, before: Any = None, after: Any = None, outcome: str = "ok",
               error: str | None = None, action: str | None = None) -> int:
        """The action's one entry, in the change's transaction."""
        seq = record(conn, self.actor, action or self.action, self.object_kind, self.object_id,
                     before=self.before if before is None else before, after=after, outcome=outcome, error=error)
        self.done = True
        return seq


@contextmanager
def attempt(store: StateStore, actor: Actor, action: str, object_kind: str, object_id: str, *,
            before: Any = None) -> Iterator[Attempt]:
    """Run an action that records its own entry on success; if it raises first, append one ``failed`` entry
    (with the error) in a transaction of its own (the change's was rolled back) and re-raise.

    A job's or intake's transient failure (a provider outage) is not an entry: nothing changed, the same row is
    tried again at every pass until it goes through, and that outcome is the one recorded; /status shows the outage.
    """
    current = Attempt(actor, action, object_kind, object_id, before)
    try:
        yield current
    except Exception as exc:
        retried = isinstance(exc, TransientError) and actor.kind in UNATTENDED
        if not current.done and not retried:
            with store.begin() as conn:
                current.record(conn, outcome="failed", error=str(exc) or type(exc).__name__)
        raise


def _entry(row: Row) -> Entry:
    values = dict(row)
    for side in ("before", "after"):
        values[side] = json.loads(values[side]) if values[side] is not None else None
    return Entry(**values)


def entries(conn: Connection, *, actor: str | None = None, obj: str | None = None, since: dt.datetime | None = None,
            until: dt.datetime | None = None, limit: int | None = None) -> list[Entry]:
    """Entries oldest first. ``actor`` matches "kind:name" or the name alone; ``obj`` "kind:id" or the id alone;
    ``since`` is inclusive and ``until`` exclusive."""
    query = select(audit_log).order_by(audit_log.c.seq)
    if actor:
        query = query.where(or_(audit_log.c.actor == actor, audit_log.c.actor.like(f"%:{actor}")))
    if obj:
        kind, _, ident = obj.partition(":")
        query = query.where((audit_log.c.object_kind == kind) & (audit_log.c.object_id == ident) if ident
                            else audit_log.c.object_id == obj)
    if since:
        query = query.where(audit_log.c.at >= since)
    if until:
        query = query.where(audit_log.c.at < until)
    if limit:
        query = query.order_by(None).order_by(audit_log.c.seq.desc()).limit(limit)
        return sorted((_entry(r) for r in conn.execute(query).mappings()), key=lambda e: e.seq)
    return [_entry(r) for r in conn.execute(query).mappings()]


def history(conn: Connection, object_kind: str, object_id: str) -> list[Entry]:
    """One object's entries, oldest first: what the link popup and the posting detail show."""
    return entries(conn, obj=f"{object_kind}:{object_id}")


def _sealed(row: Row, keys: AuditKeys, newest: int) -> tuple[int, str | None]:
    """(the key's ordinal, the problem or None) for an entry that must carry a seal."""
    seq, key_id, mac = row["seq"], row["key_id"], row["mac"]
    if key_id is None or mac is None:
        return newest, (f"entry {seq} carries no seal, though the trail is sealed from entry {keys.keyed_from}: "
                        "its seal was removed")
    ordinal = keys.ordinal(key_id)
    if ordinal is None:
        return newest, f"entry {seq} is sealed with key {key_id}, which the secrets backend does not hold"
    if ordinal < newest:
        return newest, (f"entry {seq} is sealed with the retired key {key_id}, after entries sealed with "
                        f"{keys.hmac[newest][0]}: it was written with an old key")
    if not hmac.compare_digest(keys.seal(key_id, seq, row["hash"]), mac):
        return ordinal, (f"entry {seq} was changed after it was written: its seal does not match (its hashes were "
                         "recomputed without the audit key)")
    return ordinal, None


def _at(source: Latest, checkpoint: Checkpoint) -> str:
    return f"the checkpoint of {checkpoint.at:%Y-%m-%d %H:%M:%S} UTC in {source.source}"


class _Walk:
    """The chain walked entry by entry: what the next entry must be, and the newest key seen so far."""

    def __init__(self, keys: AuditKeys | None, checkpoints: Sequence[Latest]) -> None:
        self.keys, self.checkpoints = keys, checkpoints
        self.wanted = {c.seq: (cp, c) for cp in checkpoints for c in (cp.sealing, cp.checkpoint) if c is not None}
        self.prev, self.next, self.count, self.newest = GENESIS, 1, 0, 0

    def step(self, row: Row) -> str | None:
        """The problem with this entry, or None (and the walk moves on)."""
        self.count += 1
        seq = row["seq"]
        if seq != self.next:
            gone = f"entry {self.next} was" if seq == self.next + 1 else f"entries {self.next} to {seq - 1} were"
            return f"{gone} deleted (entry {seq} comes next)"
        if row["prev_hash"] != self.prev:
            return (f"entry {seq} does not follow the entry before it: an entry before it was deleted, changed or "
                    "moved")
        if entry_hash(row) != row["hash"]:
            return f"entry {seq} was changed after it was written (its hash does not match)"
        if self.keys is not None and seq >= self.keys.keyed_from:
            self.newest, problem = _sealed(row, self.keys, self.newest)
            if problem:
                return problem
        elif self.keys is None and row["mac"] is not None:
            return (f"entry {seq} is sealed, but the secrets backend holds no audit keys to check it: restore the "
                    f"'{SECRET}' secret")
        source, cp = self.wanted.get(seq, (None, None))
        if source is not None and cp is not None and cp.hash != row["hash"]:
            unkeyed = self.keys is not None and seq < self.keys.keyed_from
            return (f"entry {seq} is not the entry {_at(source, cp)} sealed: "
                    + ("an entry from before the trail was sealed was changed" if unkeyed
                       else "the trail up to it was replaced since"))
        self.prev, self.next = row["hash"], seq + 1
        return None

    def missing(self) -> str | None:
        """Entries a checkpoint saw that the trail no longer has."""
        last = self.next - 1
        for cp in self.checkpoints:
            if cp.checkpoint is not None and cp.checkpoint.seq > last:
                gone = (f"entry {last + 1} is" if cp.checkpoint.seq == last + 1
                        else f"entries {last + 1} to {cp.checkpoint.seq} are")
                return f"{gone} missing: {_at(cp, cp.checkpoint)} says the trail reached entry {cp.checkpoint.seq}"
        return None


def verify(conn: Connection, keys: AuditKeys | None = None, checkpoints: Sequence[Latest] = ()) -> Verdict:
    """Walk the chain from the first entry, one batch of rows at a time (memory stays flat however long the
    trail); the first entry whose seq, link, hash or seal is wrong is named. Then each source's latest checkpoint
    must name an entry that is still there, with the same hash.

    Without ``keys`` only the chain is checked, and a trail that carries seals is refused (the keys are gone).
    """
    keyed_from = keys.keyed_from if keys is not None else None
    forged = next((cp for cp in checkpoints if cp.forged), None)
    if forged is not None:
        return Verdict(0, forged.checkpoint.seq if forged.checkpoint else None, forged.forged, keyed_from)
    walk = _Walk(keys, checkpoints)
    query = select(*(audit_log.c[name] for name in (*ENTRY_FIELDS, "key_id", "mac")))
    for row in conn.execute(query.order_by(audit_log.c.seq).execution_options(yield_per=2000)).mappings():
        problem = walk.step(row)
        if problem:
            return Verdict(walk.count, row["seq"], problem, keyed_from)
    last = walk.next - 1
    problem = walk.missing()
    if problem:
        return Verdict(walk.count, last + 1, problem, keyed_from)
    head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).mappings().one()
    if head["seq"] != last or head["hash"] != walk.prev:
        return Verdict(walk.count, head["seq"], f"the trail ends at entry {last} but entry {head['seq']} was "
                       "written: the newest entries were deleted", keyed_from)
    matched = tuple(f"entry {cp.checkpoint.seq}, {_at(cp, cp.checkpoint)}{_newer(cp.checkpoint.seq, last)}"
                    for cp in checkpoints if cp.checkpoint is not None)
    return Verdict(walk.count, keyed_from=keyed_from, checkpoints=matched)


def _newer(seq: int, last: int) -> str:
    """Entries written since a checkpoint are chained but not yet anchored outside: say so, so that "matches entry
    5" is not read as "all 9 entries are anchored"."""
    if last <= seq:
        return ""
    which = f"entry {last} was" if last == seq + 1 else f"entries {seq + 1} to {last} were"
    return f" ({which} written after it; the next checkpoint anchors them)"


def check(store: StateStore, seal: Seal | None, home_file: Path, elsewhere: Sequence[Path] = (),
          also: Sequence[Latest] = ()) -> Verdict:
    """``verify`` with this agent's keys and the latest checkpoint of the home's checkpoint file, of each file
    kept elsewhere (a copy of it, or the agent's log), and ``also`` (the firm database's audit table, read by
    the runtime). A keyed trail whose home checkpoint file is gone fails: the keys were made with a
    first checkpoint in it."""
    keys = seal.keys if seal is not None else None
    if keys is None:
        with store.read() as conn:
            return verify(conn)
    if not home_file.exists():
        return Verdict(0, None, f"the checkpoint file {home_file} is missing, though the trail has been sealed "
                       f"from entry {keys.keyed_from}: it was deleted", keys.keyed_from)
    found = [latest(path, keys) for path in (home_file, *elsewhere)] + list(also)
    with store.read() as conn:
        return verify(conn, keys, found)


def rotate_key(store: StateStore, seal: Seal, actor: Actor) -> tuple[str, str]:
    """A new audit key seals every entry from now on, starting with this rotation's own; the old key stays to
    verify the entries it sealed. Returns (old id, new id)."""
    with store.begin() as conn:
        old, new = seal.rotate(conn)
        record(conn, actor, "audit.key_rotated", "audit_key", new, before={"key": old}, after={"key": new})
    return old, new


def newest_seq(store: StateStore) -> int:
    """The newest entry's seq (0 for an empty trail)."""
    with store.read() as conn:
        seq: int = conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar_one()
    return seq
