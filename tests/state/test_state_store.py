"""State store: migrations upgrade an older agent's state in place; money and timestamps stay exact."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import StatementError

from agent.state import StateStore
from agent.state.accounts import stamp_kinds
from agent.state.schema import checkpoints, firm_statements, links
from connectors.testkit.databases import TempDatabase


def test_upgrade_in_place_keeps_older_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    old = StateStore(url, migrate=False)
    old.migrate("0001")  # what an older agent left behind
    with old.begin() as conn:
        conn.execute(firm_statements.insert().values(
            key="7", number="INV-7", matter_key="m", amount=Decimal("123.45"), balance=Decimal("0.10"),
            currency="GBP", status="open", deleted=False))
    assert "links" not in inspect(old.engine).get_table_names()
    old.close()

    new = StateStore(url)  # a newer agent opens it
    assert new.revision() == StateStore.head()
    assert "links" in inspect(new.engine).get_table_names()
    with new.read() as conn:
        row = conn.execute(select(firm_statements)).mappings().one()
    assert (row["amount"], row["balance"]) == (Decimal("123.45"), Decimal("0.10"))


def test_postgresql_state_store(pg_db: TempDatabase) -> None:
    store = StateStore(pg_db.url.render_as_string(hide_password=False))
    when = dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with store.begin() as conn:
        conn.execute(checkpoints.insert().values(entity="x", rows_synced=0, updated_at=when))
    with store.read() as conn:
        got = conn.execute(select(checkpoints.c.updated_at)).scalar_one()
    assert got == when and got.tzinfo is not None
    assert "links" in inspect(store.engine).get_table_names()
    with pytest.raises(StatementError, match="naive datetime"), store.begin() as conn:
        conn.execute(links.update().values(created_at=dt.datetime(2026, 1, 1)))
    store.close()


def test_a_quarantined_statement_is_not_offered_as_owing(tmp_path: Path) -> None:
    """Its last mirrored balance may be stale while the firm's row cannot be read: no link offers it."""
    from agent.state.mirror import open_statements
    from agent.state.schema import firm_matters, quarantine

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    now = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    with store.begin() as conn:
        conn.execute(firm_matters.insert().values(key="m", number="M-1", name="", status="open", deleted=False))
        for key in ("1", "2"):
            conn.execute(firm_statements.insert().values(
                key=key, number=f"INV-{key}", matter_key="m", amount=Decimal("10.00"), balance=Decimal("10.00"),
                currency="GBP", status="open", deleted=False))
        conn.execute(quarantine.insert().values(entity="statements", key="2", number="INV-2", field="balance",
                                                reason="10.005 is not whole minor units", first_seen=now,
                                                last_seen=now))
    with store.read() as conn:
        assert [s.number for s in open_statements(conn, "m")] == ["INV-1"]
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_an_older_agents_matter_links_are_keyed_by_account_and_stamped_with_its_kind(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """0016 on every state-store database: a matter's outstanding link becomes its account's, and the first start
    after the upgrade fixes each row's kind from the settings of that day."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        db: TempDatabase = request.getfixturevalue("pg_db" if kind == "postgresql" else "maria_db")
        url = db.url.render_as_string(hide_password=False)
    old = StateStore(url, migrate=False)
    old.migrate("0015")
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    with old.begin() as conn:
        for n, (account, key) in enumerate([("operating", "matter:m1"), ("trust", None)]):
            conn.execute(links.insert().values(
                id=f"l{n}", account=account, provider="sandbox", status="outstanding", amount=Decimal("1.00"),
                currency="GBP", description="d", matter_key="m1", created_at=now, expires_at=now,
                outstanding_key=key, idempotency_key=f"k{n}"))
    old.close()
    new = StateStore(url)
    assert new.upgraded
    with new.begin() as conn:
        assert conn.execute(select(links.c.outstanding_key).order_by(links.c.id)).scalars().all() == [
            "matter:m1/operating", None]
        stamp_kinds(conn, {"operating": "operating", "trust": "trust"})
        assert conn.execute(select(links.c.account_kind).order_by(links.c.id)).scalars().all() == [
            "operating", "trust"]
    new.close()
