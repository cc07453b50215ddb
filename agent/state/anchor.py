"""The audit trail anchored outside the state store: what the person who holds the database cannot redo alone.

The hash chain (agent.state.audit) shows an entry edited, deleted or moved, but anyone who can write the store can
recompute it with the public ``entry_hash``. Two keys kept in the secrets backend, never in the store, close that:

* an **HMAC-SHA256 key** seals every entry (``mac`` over its key id, seq and hash). An entry edited and re-hashed
  no longer matches its seal, and an entry from ``keyed_from`` on that carries no seal was stripped. Rotation adds
  a key; a retired key still verifies the entries it sealed, but no entry after one sealed by a newer key.
* an **Ed25519 key** signs checkpoints of the head (seq, hash, time), appended to ``<home>/audit-checkpoints.jsonl``
  and logged, for the admin to ship elsewhere, and inserted into the firm's own database when the mapping has an
  ``audit`` section. Deleting the newest entries and moving the head back leaves a
  checkpoint naming entries that are no longer there.

The keys are one JSON secret (``audit-keys``) that the runtime reads and writes through ``load``/``save``, so this
layer stays free of the secrets backend.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Connection, select

from agent.core.errors import ConfigurationError, LedgerlinkError
from agent.state.schema import audit_head
from agent.state.store import StateStore, utcnow

SECRET = "audit-keys"  # the secret holding both keys
CHECKPOINTS = "audit-checkpoints.jsonl"  # in the agent's home, one signed checkpoint per line
log = logging.getLogger("ledgerlink.audit")


@dataclass(frozen=True)
class AuditKeys:
    """The HMAC keys (oldest first; the last one seals new entries), the first seq that must carry a seal, and
    the checkpoint signing key."""

    keyed_from: int
    hmac: tuple[tuple[str, bytes], ...]
    signing: bytes

    @classmethod
    def new(cls, keyed_from: int) -> AuditKeys:
        return cls(keyed_from, (("k1", secrets.token_bytes(32)),), secrets.token_bytes(32))

    @property
    def current(self) -> str:
        return self.hmac[-1][0]

    def rotated(self) -> AuditKeys:
        """A new current key; the old ones stay to verify what they sealed."""
        return replace(self, hmac=(*self.hmac, (f"k{len(self.hmac) + 1}", secrets.token_bytes(32))))

    def ordinal(self, key_id: str) -> int | None:
        return next((n for n, (kid, _) in enumerate(self.hmac) if kid == key_id), None)

    def seal(self, key_id: str, seq: int, entry_hash: str) -> str:
        key = dict(self.hmac)[key_id]
        return hmac.new(key, f"{key_id}:{seq}:{entry_hash}".encode(), hashlib.sha256).hexdigest()

    @property
    def public_key(self) -> str:
        """The checkpoint signer's public key (hex): what a checkpoint kept elsewhere must be signed by."""
        raw = Ed25519PrivateKey.from_private_bytes(self.signing).public_key()
        return raw.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def sign(self, payload: bytes) -> str:
        return Ed25519PrivateKey.from_private_bytes(self.signing).sign(payload).hex()

    def dumps(self) -> str:
        return json.dumps({"keyed_from": self.keyed_from, "signing": self.signing.hex(),
                           "hmac": [{"id": kid, "key": key.hex()} for kid, key in self.hmac]})

    @classmethod
    def loads(cls, text: str) -> AuditKeys:
        data = json.loads(text)
        return cls(int(data["keyed_from"]), tuple((k["id"], bytes.fromhex(k["key"])) for k in data["hmac"]),
                   bytes.fromhex(data["signing"]))


class Seal:
    """The live keys of one agent: read from the secrets backend when first needed and again whenever the head
    names a key this process does not hold (another process rotated)."""

    def __init__(self, load: Callable[[], str | None], save: Callable[[str], None]) -> None:
        self._load, self._save = load, save
        self._keys: AuditKeys | None = None

    @property
    def keys(self) -> AuditKeys | None:
        if self._keys is None:
            self.reload()
        return self._keys

    def reload(self) -> None:
        text = self._load()
        self._keys = AuditKeys.loads(text) if text else None

    def key_for(self, head_key: str | None) -> tuple[AuditKeys, str] | None:
        """The keys and the key id the next entry is sealed with: the head's, or the current one when the head
        names none; None while the trail is not keyed."""
        keys = self.keys
        if keys is not None and head_key is not None and keys.ordinal(head_key) is None:
            self.reload()
            keys = self._keys
        if keys is None:
            return None
        return keys, head_key if head_key is not None and keys.ordinal(head_key) is not None else keys.current

    def establish(self, store: StateStore) -> bool:
        """Make the keys if there are none (a new home, or the first start after an upgrade): the trail is keyed
        from the next entry, and the caller writes the checkpoint that seals the entries before it. Returns
        whether keys were made. Under the head's lock, so two processes starting at once make one set."""
        if self.keys is not None:
            return False
        with store.begin() as conn:
            head = _lock_head(conn)
            self.reload()
            if self._keys is not None:
                return False
            keys = AuditKeys.new(keyed_from=head + 1)
            self._save(keys.dumps())
            self._keys = keys
        return True

    def rotate(self, conn: Connection) -> tuple[str, str]:
        """Add a key and make it the one new entries are sealed with; the caller records the rotation (sealed
        with the new key) in the same transaction. Returns (old id, new id)."""
        _lock_head(conn)
        self.reload()
        if self._keys is None:
            raise ConfigurationError("the audit trail is not sealed yet: the secrets backend holds no audit keys "
                                     "(an environment-only backend cannot make them)")
        old, keys = self._keys.current, self._keys.rotated()
        self._save(keys.dumps())
        self._keys = keys
        conn.execute(audit_head.update().where(audit_head.c.id == 1).values(key_id=keys.current))
        return old, keys.current


def _lock_head(conn: Connection) -> int:
    """Lock the head row (writers wait) and return its seq."""
    seq: int = conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update()).scalar_one()
    return seq


# ------------------------------------------------------------------------------------------------ checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the trail reached entry ``seq`` with hash ``hash`` at ``at``."""

    seq: int
    hash: str
    at: dt.datetime
    signer: str
    sig: str

    @staticmethod
    def payload(seq: int, entry_hash: str, at: dt.datetime) -> bytes:
        stamp = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return json.dumps(["ledgerlink-audit-checkpoint", seq, entry_hash, stamp], separators=(",", ":")).encode()

    @classmethod
    def make(cls, keys: AuditKeys, seq: int, entry_hash: str, at: dt.datetime) -> Checkpoint:
        at = at.replace(microsecond=0)
        return cls(seq, entry_hash, at, keys.public_key, keys.sign(cls.payload(seq, entry_hash, at)))

    def line(self) -> str:
        return json.dumps({"audit_checkpoint": self.seq, "hash": self.hash,
                           "at": self.at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "signer": self.signer, "sig": self.sig}, separators=(",", ":"))

    def fields(self) -> dict[str, object]:
        """The checkpoint as a firm-database row's values (mappings.format.AUDIT_FIELDS)."""
        return {"seq": self.seq, "hash": self.hash, "at": self.at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "signer": self.signer, "sig": self.sig}

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Checkpoint | None:
        """A checkpoint from a firm-database row (AUDIT_FIELDS order); None when it is no checkpoint at all. A
        signed time stored in a timestamp column comes back as a datetime: naive is read as UTC."""
        try:
            seq, entry_hash, at, signer, sig = row
            when = at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(str(at).strip())
            when = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
            return cls(int(seq), str(entry_hash).strip(), when, str(signer).strip(), str(sig).strip())
        except (ValueError, TypeError):
            return None

    @classmethod
    def parse(cls, text: str) -> Checkpoint | None:
        """The checkpoint in a line of the checkpoint file or of the agent's log; None for any other line."""
        start = text.find('{"audit_checkpoint"')
        if start < 0:
            return None
        try:
            data = json.loads(text[start:].strip())
            return cls(int(data["audit_checkpoint"]), str(data["hash"]), dt.datetime.fromisoformat(data["at"]),
                       str(data["signer"]), str(data["sig"]))
        except (ValueError, KeyError, TypeError):
            return None

    def signed_by(self, public_key: str) -> bool:
        if self.signer != public_key:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(
                bytes.fromhex(self.sig), self.payload(self.seq, self.hash, self.at))
        except (InvalidSignature, ValueError):
            return False
        return True


def read_checkpoints(path: Path) -> Iterator[tuple[int, Checkpoint]]:
    """(line number, checkpoint) for each checkpoint line of a checkpoint file or a log, one line at a time."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, text in enumerate(lines, 1):
            found = Checkpoint.parse(text)
            if found is not None:
                yield number, found


@dataclass(frozen=True)
class Latest:
    """The newest checkpoint a file holds that this agent's key signed, and the first line it did not sign."""

    source: str
    checkpoint: Checkpoint | None
    forged: str | None = None
    sealing: Checkpoint | None = None  # the one made with the keys: it seals the entries from before keying


def latest_of(source: str, found: Iterable[tuple[str, Checkpoint | None]], keys: AuditKeys) -> Latest:
    """The newest checkpoint among ``(where, checkpoint)`` pairs from one source, each of which this agent's key
    must have signed (None: a row that is no checkpoint at all)."""
    newest: Checkpoint | None = None
    sealing: Checkpoint | None = None
    for where, checkpoint in found:
        if checkpoint is None or not checkpoint.signed_by(keys.public_key):
            return Latest(source, newest, f"{where} is a checkpoint this agent's audit key did not sign: it was "
                          "written or altered by someone else")
        if newest is None or checkpoint.seq >= newest.seq:
            newest = checkpoint
        if sealing is None and checkpoint.seq == keys.keyed_from - 1:
            sealing = checkpoint
    return Latest(source, newest, sealing=sealing)


def latest(path: Path, keys: AuditKeys) -> Latest:
    """The newest checkpoint of a checkpoint file or a log; every checkpoint line in it must be signed."""
    return latest_of(str(path), ((f"line {n} of {path}", cp) for n, cp in read_checkpoints(path)), keys)


def firm_latest(table: str, rows: Sequence[Sequence[Any]], keys: AuditKeys) -> Latest:
    """The newest checkpoint of the firm database's audit table, from its rows of the highest seq."""
    source = f"the firm database's table {table}"
    return latest_of(source, ((f"the row of entry {row[0]} in {table}", Checkpoint.from_row(row)) for row in rows),
                     keys)


class Checkpoints:
    """Writes a signed checkpoint of the head to the home's checkpoint file and the log whenever the head moved,
    and hands it to ``copy`` (the firm database's audit table). A copy that fails is logged and tried again with
    the newest checkpoint on the next write, head moved or not."""

    def __init__(self, store: StateStore, seal: Seal, path: Path,
                 copy: Callable[[Checkpoint], object] | None = None) -> None:
        self.store, self.seal, self.path, self.copy = store, seal, path, copy
        self._written: tuple[int, str] | None = None
        self._owed: Checkpoint | None = None  # the checkpoint a failed copy still lacks

    def write(self, *, force: bool = False) -> Checkpoint | None:
        """Checkpoint the head now (None when the trail is not keyed, or unchanged since the last one)."""
        keys = self.seal.keys
        if keys is None:
            return None
        with self.store.read() as conn:
            head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
        if not force and (self._written or self._last_in_file()) == (head.seq, head.hash):
            self._copy(self._owed)
            return None
        checkpoint = Checkpoint.make(keys, head.seq, head.hash, utcnow())
        with self.path.open("a", encoding="utf-8") as out:
            out.write(checkpoint.line() + "\n")
            out.flush()
            os.fsync(out.fileno())
        log.info("audit checkpoint %s", checkpoint.line())
        self._written = (head.seq, head.hash)
        self._copy(checkpoint)
        return checkpoint

    def _copy(self, checkpoint: Checkpoint | None) -> None:
        if self.copy is None or checkpoint is None:
            return
        try:
            self.copy(checkpoint)
        except LedgerlinkError as exc:
            self._owed = checkpoint
            log.warning("audit checkpoint of entry %s not copied to the firm database (tried again with the "
                        "next): %s", checkpoint.seq, exc)
        else:
            self._owed = None

    def _last_in_file(self) -> tuple[int, str] | None:
        """The newest line's (seq, hash), read from the file's end: a command run often stays cheap."""
        try:
            with self.path.open("rb") as data:
                data.seek(max(0, data.seek(0, os.SEEK_END) - 4096))
                tail = data.read().decode("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return None
        last = Checkpoint.parse(tail[-1]) if tail else None
        return (last.seq, last.hash) if last is not None else None
