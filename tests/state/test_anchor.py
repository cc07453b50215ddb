"""The audit trail anchored outside the store (issue 24, item 3): every attack a person who can write the state
database can make, scripted, each caught by ``audit.check`` naming the entry or the missing range; what they
cannot do without the keys in the secrets backend or the checkpoints kept elsewhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, delete, select, update

from agent.core.model import Actor
from agent.state import StateStore, audit
from agent.state.anchor import CHECKPOINTS, SECRET, AuditKeys, Checkpoint, Checkpoints, Seal
from agent.state.schema import audit_head, audit_log
from agent.state.store import utcnow

ALICE = Actor("user", "alice")
MALLORY = "user:mallory"


@dataclass
class Trail:
    """A state store whose trail is sealed with keys held in a vault the store's holder cannot read."""

    store: StateStore
    seal: Seal
    vault: dict[str, str]
    checkpoints: Checkpoints
    folder: Path

    @property
    def file(self) -> Path:
        return self.folder / CHECKPOINTS

    def add(self, n: int, action: str = "refund.create") -> None:
        for _ in range(n):
            with self.store.begin() as conn:
                audit.record(conn, ALICE, action, "payment", "pay_1", before=None,
                             after={"amount": Decimal("2000.00")})

    def check(self, *elsewhere: Path) -> audit.Verdict:
        return audit.check(self.store, self.seal, self.file, elsewhere)


def make(folder: Path, *, unkeyed: int = 0, keyed: int = 5) -> Trail:
    store = StateStore(f"sqlite:///{folder / 'state.db'}")
    vault: dict[str, str] = {}
    seal = Seal(lambda: vault.get(SECRET), lambda text: vault.__setitem__(SECRET, text))
    trail = Trail(store, seal, vault, Checkpoints(store, seal, folder / CHECKPOINTS), folder)
    trail.add(unkeyed)  # an older agent's entries: the store has no seal yet
    store.seal = seal
    assert seal.establish(store)
    trail.checkpoints.write(force=True)  # what the runtime does when it makes the keys
    trail.add(keyed)
    trail.checkpoints.write()
    return trail


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[Trail]:
    t = make(tmp_path)
    yield t
    t.store.close()


def rewrite(conn: Connection, start: int, edit: Callable[[dict[str, Any]], None] = lambda row: None) -> None:
    """The attack from the issue: change entries from ``start`` and recompute every hash after them with the
    project's own public entry_hash, then move the head; seals are copied as they are (no key to remake them)."""
    prev = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == start - 1)).scalar() or audit.GENESIS
    rows = [dict(r) for r in conn.execute(select(audit_log).where(audit_log.c.seq >= start)
                                          .order_by(audit_log.c.seq)).mappings()]
    for row in rows:
        if row["seq"] == start:
            edit(row)
        row["prev_hash"] = prev
        row["hash"] = prev = audit.entry_hash(row)
        conn.execute(update(audit_log).where(audit_log.c.seq == row["seq"]).values(
            **{k: v for k, v in row.items() if k != "seq"}))
    last = rows[-1]["seq"] if rows else start - 1
    conn.execute(update(audit_head).values(seq=last, hash=prev))


def refund_to_20(row: dict[str, Any]) -> None:
    row["after"], row["actor"] = audit.encode({"amount": "20.00"}), MALLORY


def test_entries_newer_than_the_checkpoint_are_named_as_not_yet_anchored(trail: Trail) -> None:
    trail.add(1)
    assert trail.check().checkpoints[0].endswith(" (entry 6 was written after it; the next checkpoint anchors them)")
    trail.add(2)
    assert trail.check().checkpoints[0].endswith(
        " (entries 6 to 8 were written after it; the next checkpoint anchors them)")
    trail.checkpoints.write()
    assert trail.check().checkpoints[0].startswith("entry 8, ") and "after it" not in trail.check().checkpoints[0]


def test_an_untouched_sealed_trail_verifies_against_its_checkpoint(trail: Trail) -> None:
    v = trail.check()
    assert v.intact and v.count == 5 and v.keyed_from == 1
    assert len(v.checkpoints) == 1 and v.checkpoints[0].startswith("entry 5, the checkpoint of ")
    with trail.store.read() as conn:
        sealed = conn.execute(select(audit_log.c.key_id, audit_log.c.mac)).all()
    assert {k for k, _ in sealed} == {"k1"} and all(len(m) == 64 for _, m in sealed)
    keys = AuditKeys.loads(trail.vault[SECRET])  # the key never reaches the store
    assert dict(keys.hmac)["k1"].hex().encode() not in (trail.folder / "state.db").read_bytes()


def test_an_edited_refund_with_every_hash_recomputed_is_named(trail: Trail) -> None:
    with trail.store.begin() as conn:
        rewrite(conn, 3, refund_to_20)
    v = trail.check()  # the chain's links and hashes all check out, as the issue found; the seal does not
    assert (v.intact, v.bad_seq) == (False, 3)
    assert v.problem == ("entry 3 was changed after it was written: its seal does not match (its hashes were "
                         "recomputed without the audit key)")


def test_deleting_the_newest_entries_and_moving_the_head_back_names_the_missing_range(trail: Trail) -> None:
    with trail.store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq >= 3))
        rewrite(conn, 3)  # the head moved back to entry 2
    v = trail.check()
    assert (v.intact, v.bad_seq) == (False, 3)
    assert v.problem is not None and v.problem.startswith("entries 3 to 5 are missing: the checkpoint of ")
    assert v.problem.endswith("says the trail reached entry 5")


def test_a_trail_truncated_and_written_again_no_longer_matches_its_checkpoint(trail: Trail) -> None:
    with trail.store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq >= 4))
        rewrite(conn, 4)
    trail.add(3, action="link.cancel")  # the agent goes on and seals new entries 4, 5, 6 properly
    v = trail.check()
    assert (v.intact, v.bad_seq) == (False, 5)
    assert "is not the entry the checkpoint of" in (v.problem or "") and "replaced since" in (v.problem or "")


def test_a_reordered_trail_is_named(trail: Trail) -> None:
    with trail.store.begin() as conn:
        two, three = (dict(conn.execute(select(audit_log).where(audit_log.c.seq == s)).mappings().one())
                      for s in (2, 3))
        for seq, row in ((2, three), (3, two)):
            conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(
                **{k: v for k, v in row.items() if k != "seq"}))
    v = trail.check()
    assert (v.intact, v.bad_seq) == (False, 2)


def test_a_reordered_trail_recomputed_fails_on_its_seal(trail: Trail) -> None:
    with trail.store.begin() as conn:
        def swap(row: dict[str, Any]) -> None:
            row["action"] = "link.cancel"
        rewrite(conn, 2, swap)
    v = trail.check()
    assert (v.intact, v.bad_seq) == (False, 2) and "seal does not match" in (v.problem or "")


def test_stripping_the_seals_is_named(trail: Trail) -> None:
    with trail.store.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq >= 4).values(key_id=None, mac=None))
        rewrite(conn, 4, refund_to_20)
    v = trail.check()
    assert (v.intact, v.bad_seq) == (False, 4)
    assert v.problem == "entry 4 carries no seal, though the trail is sealed from entry 1: its seal was removed"


def test_a_checkpoint_signed_with_another_key_is_named(trail: Trail) -> None:
    with trail.store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq >= 4))
        rewrite(conn, 4)
    forger = AuditKeys.new(1)
    with trail.store.read() as conn:
        head = conn.execute(select(audit_head)).mappings().one()
    lines = trail.file.read_text().splitlines()
    last = Checkpoint.parse(lines[-1])
    assert last is not None
    fake = Checkpoint.make(forger, head["seq"], head["hash"], last.at)
    trail.file.write_text("\n".join([*lines[:-1], fake.line()]) + "\n")
    v = trail.check()
    assert not v.intact and v.problem == (f"line {len(lines)} of {trail.file} is a checkpoint this agent's audit key "
                                          "did not sign: it was written or altered by someone else")


def test_a_deleted_checkpoint_file_is_named(trail: Trail) -> None:
    trail.file.unlink()
    v = trail.check()
    assert not v.intact and v.problem is not None and "is missing" in v.problem and "deleted" in v.problem


def test_a_copy_kept_elsewhere_catches_what_the_home_file_no_longer_shows(trail: Trail, tmp_path: Path) -> None:
    shipped = tmp_path / "elsewhere.jsonl"
    trail.add(2)
    trail.checkpoints.write()  # the trail reached entry 7; the admin ships the file
    shutil.copy(trail.file, shipped)
    # the holder of the store AND the home drops entries 6-7 and the newest checkpoint line
    with trail.store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq >= 6))
        rewrite(conn, 6)
    trail.file.write_text("\n".join(trail.file.read_text().splitlines()[:-1]) + "\n")
    assert trail.check().intact
    v = trail.check(shipped)
    assert (v.intact, v.bad_seq) == (False, 6) and f"in {shipped} says the trail reached entry 7" in (v.problem or "")


def test_the_agents_log_serves_as_a_checkpoint_source(trail: Trail, tmp_path: Path) -> None:
    log = tmp_path / "ledgerlink.log"
    newest = trail.file.read_text().splitlines()[-1]
    log.write_text(f"2026-12-06 14:00:00 INFO ledgerlink.audit audit checkpoint {newest}\n"
                   "2026-12-06 14:00:01 INFO ledgerlink something else\n")
    assert trail.check(log).intact
    with trail.store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 5))
        rewrite(conn, 5)
    trail.file.write_text(trail.file.read_text().splitlines()[0] + "\n")  # home file cut back to the first one
    assert not trail.check(log).intact


def test_after_rotation_the_old_key_verifies_old_entries_but_cannot_seal_new_ones(trail: Trail) -> None:
    old, new = audit.rotate_key(trail.store, trail.seal, ALICE)
    assert (old, new) == ("k1", "k2")
    trail.add(2)
    assert trail.check().intact
    with trail.store.read() as conn:
        keys = dict(conn.execute(select(audit_log.c.seq, audit_log.c.key_id)).all())
    assert [keys[s] for s in range(1, 9)] == ["k1"] * 5 + ["k2"] * 3
    # someone who stole k1 re-seals entry 8 with it after editing it
    stolen = AuditKeys.loads(trail.vault[SECRET])
    with trail.store.begin() as conn:
        rewrite(conn, 8, refund_to_20)
        row = conn.execute(select(audit_log).where(audit_log.c.seq == 8)).mappings().one()
        conn.execute(update(audit_log).where(audit_log.c.seq == 8).values(
            key_id="k1", mac=stolen.seal("k1", 8, row["hash"])))
    v = trail.check()
    assert (v.intact, v.bad_seq) == (False, 8) and "retired key k1" in (v.problem or "")


def test_another_process_picks_up_a_rotation_from_the_head(trail: Trail) -> None:
    other = Seal(lambda: trail.vault.get(SECRET), lambda text: trail.vault.__setitem__(SECRET, text))
    assert other.keys is not None and other.keys.current == "k1"  # read before the rotation
    audit.rotate_key(trail.store, trail.seal, ALICE)
    trail.store.seal = other
    trail.add(1)
    with trail.store.read() as conn:
        assert conn.execute(select(audit_log.c.key_id).where(audit_log.c.seq == 7)).scalar() == "k2"
    assert trail.check().intact


def test_lost_keys_are_not_mistaken_for_an_unsealed_trail(trail: Trail) -> None:
    trail.vault.clear()
    trail.seal.reload()
    v = trail.check()
    assert (v.intact, v.bad_seq) == (False, 1) and "restore the 'audit-keys' secret" in (v.problem or "")


def test_an_upgraded_trail_is_sealed_by_its_first_checkpoint(tmp_path: Path) -> None:
    t = make(tmp_path, unkeyed=4, keyed=2)
    v = t.check()
    assert v.intact and v.keyed_from == 5
    first = Checkpoint.parse(t.file.read_text().splitlines()[0])
    assert first is not None and first.seq == 4
    with t.store.begin() as conn:  # an entry from before keying, edited and recomputed
        rewrite(conn, 2, refund_to_20)
    v = t.check()
    assert (v.intact, v.bad_seq) == (False, 4)
    assert "is not the entry the checkpoint of" in (v.problem or "") and "from before the trail was sealed" in (
        v.problem or "")


def test_two_starts_at_once_make_one_set_of_keys(tmp_path: Path) -> None:
    t = make(tmp_path)
    late = Seal(lambda: t.vault.get(SECRET), lambda text: pytest.fail("a second set of keys was made"))
    late._keys = None
    assert late.establish(t.store) is False


VERIFY_CHILD = """
import resource, sys
from pathlib import Path
from agent.state import StateStore, audit
from agent.state.anchor import CHECKPOINTS, Seal
folder, keys = Path(sys.argv[1]), sys.stdin.read()
store = StateStore(f"sqlite:///{folder / 'state.db'}")
verdict = audit.check(store, Seal(lambda: keys, lambda text: None), folder / CHECKPOINTS)
print(verdict.count, verdict.intact, verdict.problem, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _bulk_sealed(t: Trail, total: int) -> None:
    """``total`` sealed entries written in bulk, exactly as record() would write them one by one."""
    keys = t.seal.keys
    assert keys is not None
    prev, at = audit.GENESIS, utcnow().replace(microsecond=0)
    after = audit.encode({"amount": "2000.00"})
    with t.store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        cursor.execute("BEGIN")
        batch: list[tuple[Any, ...]] = []
        for seq in range(1, total + 1):
            fields = {"seq": seq, "at": at, "actor": "user:alice", "action": "refund.create",
                      "object_kind": "payment", "object_id": f"pay_{seq}", "outcome": "ok", "error": None,
                      "before": None, "after": after, "prev_hash": prev}
            prev = audit.entry_hash(fields)
            batch.append((seq, at.strftime("%Y-%m-%d %H:%M:%S.000000"), "user:alice", "refund.create", "payment",
                          f"pay_{seq}", "ok", after, fields["prev_hash"], prev, "k1", keys.seal("k1", seq, prev)))
            if len(batch) == 50_000 or seq == total:
                cursor.executemany("INSERT INTO audit_log (seq, at, actor, action, object_kind, object_id, outcome,"
                                   " after, prev_hash, hash, key_id, mac) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", batch)
                batch.clear()
        cursor.execute("UPDATE audit_head SET seq = ?, hash = ?, key_id = 'k1'", (total, prev))
        cursor.execute("COMMIT")
    t.checkpoints.write()


def _verified_in_child(t: Trail) -> tuple[str, int]:
    """The verdict line and the peak RSS (KiB) of a fresh process that verifies the trail."""
    out = subprocess.run([sys.executable, "-c", VERIFY_CHILD, str(t.folder)], input=t.vault[SECRET],
                         capture_output=True, text=True, check=True, timeout=600).stdout.split()
    return " ".join(out[:-1]), int(out[-1])


def test_a_million_entries_verify_in_bounded_memory(tmp_path: Path) -> None:
    """1M sealed entries verify in a process whose peak memory is that of verifying 1,000: the walk holds one
    batch of rows at a time."""
    small, large = make(tmp_path / "small", keyed=0), make(tmp_path / "large", keyed=0)
    _bulk_sealed(small, 1_000)
    _bulk_sealed(large, 1_000_000)
    (small_verdict, small_rss), (large_verdict, large_rss) = _verified_in_child(small), _verified_in_child(large)
    assert (small_verdict, large_verdict) == ("1000 True None", "1000000 True None")
    assert large_rss < small_rss + 16 * 1024, f"verify grew from {small_rss} KiB to {large_rss} KiB"


def test_checkpoint_lines_are_plain_json_a_log_shipper_can_read(trail: Trail) -> None:
    data = json.loads(trail.file.read_text().splitlines()[-1])
    assert set(data) == {"audit_checkpoint", "hash", "at", "signer", "sig"} and data["audit_checkpoint"] == 5
