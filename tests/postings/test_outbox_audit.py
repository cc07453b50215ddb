"""Manage Postings' operations on the audit trail: each retry, reallocation and removal writes exactly one entry
with the person and the posting, in the change's transaction; a refused one writes one failed entry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from crash_worker import POSTINGS_SQL, add_payment, add_statement, create_firm, firm_mapping
from sqlalchemy import select

from agent.core.errors import RuleError
from agent.core.model import Actor
from agent.state import StateStore, audit
from agent.state.schema import postings
from connectors.database.sql import SQLAlchemyConnector
from postings.outbox import Outbox

D = Decimal
ALICE, BOB = Actor("user", "alice"), Actor("cli", "bob")


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    firm_url = f"sqlite:///{tmp_path / 'firm.db'}"
    create_firm(firm_url, {"S1": 10_000, "S2": 5_000})
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    with store.begin() as conn:
        add_statement(conn, "S1", D("100.00"), issue_date=dt.date(2026, 1, 1))
        add_statement(conn, "S2", D("50.00"), issue_date=dt.date(2026, 2, 1))
        add_payment(conn, "p1", D("30.00"), [("S1", D("30.00"), True)])
        add_payment(conn, "p2", D("40.00"), None)  # unallocated: incomplete
    mapping = firm_mapping(firm_url, POSTINGS_SQL, "{connect_args: {timeout: 0.05}}")
    box = Outbox(store, SQLAlchemyConnector(mapping), mapping)
    yield box
    assert box.connector is not None
    box.connector.close()
    store.close()


def pid(box: Outbox, reference: str) -> int:
    with box.store.read() as conn:
        return int(conn.execute(select(postings.c.id).where(postings.c.reference == reference)).scalar_one())


def trail(box: Outbox) -> list[tuple[str, str, str, str]]:
    with box.store.read() as conn:
        assert audit.verify(conn).intact
        return [(e.actor, e.action, e.object, e.outcome) for e in audit.entries(conn)]


def test_retry_and_retry_failed_write_one_entry_each(outbox: Outbox) -> None:
    p1 = pid(outbox, "p1:S1")
    with outbox.store.begin() as conn:
        conn.execute(postings.update().where(postings.c.id == p1).values(state="failed", last_error="boom"))
    outbox.retry(ALICE, p1)
    with pytest.raises(RuleError, match="only failed or retrying"):
        outbox.retry(BOB, p1)
    assert trail(outbox) == [("user:alice", "posting.retry", f"posting:{p1}", "ok"),
                             ("cli:bob", "posting.retry", f"posting:{p1}", "failed")]
    with outbox.store.read() as conn:
        first, second = audit.history(conn, "posting", str(p1))
    assert (first.before["state"], first.after["state"]) == ("failed", "pending")
    assert "only failed or retrying" in (second.error or "")
    with outbox.store.begin() as conn:
        conn.execute(postings.update().where(postings.c.id == p1).values(state="failed"))
    assert outbox.retry_failed(BOB) == 1
    assert trail(outbox)[-1] == ("cli:bob", "posting.retry", f"posting:{p1}", "ok")


def test_reallocate_writes_one_entry_with_the_split(outbox: Outbox) -> None:
    p2 = pid(outbox, "p2:unallocated")
    with pytest.raises(RuleError, match="add up to"):
        outbox.reallocate(BOB, p2, {"S1": D("25.00")})
    outbox.reallocate(ALICE, p2, {"S1": D("25.00"), "S2": D("15.00")})
    assert trail(outbox) == [("cli:bob", "posting.reallocate", f"posting:{p2}", "failed"),
                             ("user:alice", "posting.reallocate", f"posting:{p2}", "ok")]
    with outbox.store.read() as conn:
        done = audit.history(conn, "posting", str(p2))[-1]
    assert done.before["state"] == "incomplete" and done.before["amount"] == "40.00"
    assert sorted(tuple(v) for v in done.after["postings"].values()) == [("S1", "25.00"), ("S2", "15.00")]


def test_remove_writes_one_entry_also_when_refused(outbox: Outbox) -> None:
    p1 = pid(outbox, "p1:S1")
    with pytest.raises(RuleError, match="say why"):
        outbox.remove(ALICE, p1, "  ")
    outbox.remove(ALICE, p1, "posted by hand")
    assert trail(outbox) == [("user:alice", "posting.remove", f"posting:{p1}", "failed"),
                             ("user:alice", "posting.remove", f"posting:{p1}", "ok")]
    with outbox.store.read() as conn:
        done = audit.history(conn, "posting", str(p1))[-1]
    assert (done.before["state"], done.after["state"], done.after["note"]) == ("pending", "removed", "posted by hand")
