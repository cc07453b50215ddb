"""The audit trail's hash chain: verify names the first edited, deleted or moved entry; two processes appending to
one store (SQLite and PostgreSQL) never fork it; secrets never reach it."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from agent.core.errors import TransientError
from agent.core.model import Actor
from agent.core.scrub import reveal
from agent.state import StateStore, audit
from agent.state.schema import audit_head, audit_log
from connectors.testkit.databases import TempDatabase

ALICE = Actor("user", "alice")


def filled(url: str, n: int = 5) -> StateStore:
    store = StateStore(url)
    for i in range(1, n + 1):
        with store.begin() as conn:
            audit.record(conn, ALICE, "link.cancel", "link", f"lnk_{i}", before={"status": "outstanding"},
                         after={"status": "cancelled", "amount": Decimal(f"{i}.10")})
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = filled(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def verdict(store: StateStore) -> audit.Verdict:
    with store.read() as conn:
        return audit.verify(conn)


def test_an_untouched_chain_is_intact_and_reads_back(store: StateStore) -> None:
    assert verdict(store) == audit.Verdict(5)
    with store.read() as conn:
        entries = audit.entries(conn)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == audit.GENESIS and entries[1].prev_hash == entries[0].hash
    assert entries[2].actor == "user:alice" and entries[2].object == "link:lnk_3"
    assert entries[2].after == {"status": "cancelled", "amount": "3.10"}  # money as exact text, never a float


def test_an_edited_entry_is_named(store: StateStore) -> None:
    with store.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(actor="user:mallory"))
    v = verdict(store)
    assert (v.intact, v.bad_seq) == (False, 3) and "changed" in (v.problem or "")


def test_an_edited_value_even_with_its_hash_recomputed_breaks_the_next_link(store: StateStore) -> None:
    with store.begin() as conn:
        row = dict(conn.execute(select(audit_log).where(audit_log.c.seq == 2)).mappings().one())
        row["after"] = audit.encode({"status": "cancelled", "amount": "0.01"})
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(after=row["after"],
                                                                           hash=audit.entry_hash(row)))
    v = verdict(store)
    assert (v.intact, v.bad_seq) == (False, 3) and "does not follow" in (v.problem or "")


def test_a_deleted_entry_is_named(store: StateStore) -> None:
    with store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 2))
    v = verdict(store)
    assert (v.intact, v.bad_seq) == (False, 3) and v.problem == "entry 2 was deleted (entry 3 comes next)"


def test_deleting_the_newest_entries_is_caught_by_the_head(store: StateStore) -> None:
    with store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq >= 4))
    v = verdict(store)
    assert (v.intact, v.bad_seq) == (False, 5) and "newest entries were deleted" in (v.problem or "")


def test_a_reordered_entry_is_named(store: StateStore) -> None:
    with store.begin() as conn:  # swap entries 2 and 4 whole, their seq kept in place
        rows = {r["seq"]: dict(r) for r in conn.execute(select(audit_log).where(audit_log.c.seq.in_([2, 4])))
                .mappings()}
        for seq, other in ((2, 4), (4, 2)):
            values = {k: v for k, v in rows[other].items() if k != "seq"}
            conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(**values))
    v = verdict(store)
    assert (v.intact, v.bad_seq) == (False, 2)


def test_a_failed_attempt_writes_one_entry_with_the_error(store: StateStore) -> None:
    with pytest.raises(RuntimeError), audit.attempt(store, ALICE, "link.cancel", "link", "lnk_9"):
        raise RuntimeError("the provider refused")
    with store.read() as conn:
        last = audit.entries(conn, obj="link:lnk_9")
    assert [(e.outcome, e.error, e.actor) for e in last] == [("failed", "the provider refused", "user:alice")]
    assert verdict(store).intact


def test_secrets_never_reach_the_trail(store: StateStore) -> None:
    reveal("s3cr3t-value-123")
    with store.begin() as conn:
        audit.record(conn, ALICE, "account.change", "account", "operating",
                     after={"password": "hunter2", "api_token": "abc", "password_secret": "smtp-password",
                            "note": "uses s3cr3t-value-123", "url": "postgresql://app:pw123@db/firm"},
                     error=None)
    with store.read() as conn:
        text = conn.execute(select(audit_log.c.after).where(audit_log.c.seq == 6)).scalar_one()
    assert "hunter2" not in text and "abc" not in text and "s3cr3t-value-123" not in text and "pw123" not in text
    assert '"password_secret":"smtp-password"' in text  # a secret's name is fine: it is not the secret


def _append(url: str, name: str, count: int) -> None:
    store = StateStore(url)
    for i in range(count):
        with store.begin() as conn:
            audit.record(conn, Actor("user", name), "posting.retry", "posting", str(i))
    store.close()


def _race(url: str) -> None:
    StateStore(url).close()  # migrated once, before the writers start
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_append, args=(url, name, 40)) for name in ("alice", "bob")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    store = StateStore(url)
    try:
        with store.read() as conn:
            assert audit.verify(conn) == audit.Verdict(80)
            assert conn.execute(select(audit_head.c.seq)).scalar_one() == 80
            actors = {e.actor for e in audit.entries(conn)}
        assert actors == {"user:alice", "user:bob"}
    finally:
        store.close()


def test_two_processes_never_fork_the_chain_sqlite(tmp_path: Path) -> None:
    _race(f"sqlite:///{tmp_path / 'state.db'}")


@pytest.mark.postgres
def test_two_processes_never_fork_the_chain_postgresql(pg_db: TempDatabase) -> None:
    _race(pg_db.url.render_as_string(hide_password=False))


def test_a_jobs_transient_failure_is_retried_not_recorded_but_a_persons_is(store: StateStore) -> None:
    for actor in (Actor("job", "requests"), ALICE):
        with pytest.raises(TransientError), audit.attempt(store, actor, "link.create", "matter", "M-1"):
            raise TransientError("provider unavailable")
    with store.read() as conn:
        assert [(e.actor, e.outcome) for e in audit.entries(conn, obj="matter:M-1")] == [("user:alice", "failed")]
