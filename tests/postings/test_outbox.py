"""Every outbox state transition against a real (SQLite) firm database, plus the Manage Postings CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from crash_worker import POSTINGS_SQL, add_payment, add_statement, create_firm, firm_mapping, read_firm
from sqlalchemy import select
from tests_support import STAFF

from agent.cli import postings as cli
from agent.cli.output import Commands
from agent.core.errors import ConfigurationError, RuleError
from agent.state import StateStore
from agent.state.schema import payments, postings
from connectors.database.sql import SQLAlchemyConnector
from mappings.format import MappingFile
from postings.outbox import Outbox, backoff, enqueue_reversal, posting_uuid

D = Decimal
T0 = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Env:
    """A state store, a SQLite firm with statements S1 (100.00) and S2 (50.00), and an outbox factory."""

    def __init__(self, tmp: Path, postings_yaml: str = POSTINGS_SQL) -> None:
        self.firm_path = tmp / "firm.db"
        self.firm_url = f"sqlite:///{self.firm_path}"
        create_firm(self.firm_url, {"S1": 10_000, "S2": 5_000})
        self.store = StateStore(f"sqlite:///{tmp / 'state.db'}")
        with self.store.begin() as conn:
            add_statement(conn, "S1", D("100.00"), issue_date=dt.date(2026, 1, 1))
            add_statement(conn, "S2", D("50.00"), issue_date=dt.date(2026, 2, 1))
        self.mapping: MappingFile = firm_mapping(self.firm_url, postings_yaml, "{connect_args: {timeout: 0.05}}")
        self.connector = SQLAlchemyConnector(self.mapping)
        self.clock = Clock()

    def outbox(self, **kw: Any) -> Outbox:
        return Outbox(self.store, self.connector, self.mapping, clock=self.clock, batch_size=50, **kw)

    def pay(self, ref: str, amount: str, items: list[tuple[str, str, bool]] | None, **kw: Any) -> str:
        with self.store.begin() as conn:
            return add_payment(conn, ref, D(amount), None if items is None else
                               [(k, D(a), e) for k, a, e in items], **kw)

    def posting(self, reference: str) -> dict[str, Any]:
        with self.store.read() as conn:
            return dict(conn.execute(select(postings).where(postings.c.reference == reference)).mappings().one())

    def states(self) -> dict[str, str]:
        with self.store.read() as conn:
            return {r: s for r, s in conn.execute(select(postings.c.reference, postings.c.state))}

    def lock_firm(self) -> sqlite3.Connection:
        """Another program holding the firm database's write lock (a 'table locked' fault)."""
        lock = sqlite3.connect(self.firm_path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        return lock


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.connector.close()
    e.store.close()


def test_pending_posting_posted_and_the_balance_moves(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    env.pay("p2", "20.00", [("S2", "20.00", True)])
    seen: list[str] = []
    write = env.connector.write_posting

    def spy(params: Any) -> bool:
        seen.append(env.posting(params["reference"])["state"])  # committed before the target is touched
        return write(params)

    monkeypatch.setattr(env.connector, "write_posting", spy)
    assert env.outbox().run_once() == {"posted": 2}
    assert seen == ["posting", "posting"]
    firm = read_firm(env.firm_url)
    assert firm.receipts == {"p1:S1": 3000, "p2:S2": 2000}
    assert firm.balances == {"S1": 7000, "S2": 3000}
    row = env.posting("p1:S1")
    assert (row["state"], row["attempts"], row["posted_at"]) == ("posted", 1, T0)
    assert env.outbox().run_once() == {}


def test_transient_error_retries_later_then_posts(env: Env) -> None:
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    outbox = env.outbox(backoff_initial=1.0)
    lock = env.lock_firm()
    assert outbox.run_once() == {"retrying": 1}
    row = env.posting("p1:S1")
    assert row["state"] == "retrying" and row["attempts"] == 1 and "database is locked" in row["last_error"]
    assert T0 < row["next_attempt_at"] <= T0 + dt.timedelta(seconds=60)
    assert outbox.run_once() == {}  # not due yet
    lock.rollback()
    lock.close()
    env.clock.advance(61)
    assert outbox.run_once() == {"posted": 1}
    assert read_firm(env.firm_url).receipts == {"p1:S1": 3000}
    assert env.posting("p1:S1")["attempts"] == 2


def test_attempts_exhausted_fails(env: Env) -> None:
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    outbox = env.outbox(attempts=2)
    lock = env.lock_firm()
    try:
        assert outbox.run_once() == {"retrying": 1}
        env.clock.advance(61)
        assert outbox.run_once() == {"failed": 1}
    finally:
        lock.close()
    row = env.posting("p1:S1")
    assert row["state"] == "failed" and row["last_error"].startswith("gave up after 2 attempts")
    assert read_firm(env.firm_url).receipts == {}


def test_permanent_error_fails_at_once_with_the_database_message(tmp_path: Path) -> None:
    # The mapping binds client_key (NULL here) into a NOT NULL column: a constraint violation.
    env = Env(tmp_path, POSTINGS_SQL.replace(":method)", ":client_key)"))
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    assert env.outbox().run_once() == {"failed": 1}
    row = env.posting("p1:S1")
    assert row["state"] == "failed" and row["attempts"] == 1
    assert "NOT NULL constraint failed: receipts.method" in row["last_error"]
    assert read_firm(env.firm_url).balances == {"S1": 10_000, "S2": 5_000}  # rolled back with the insert
    env.connector.close()


def test_failed_then_retry_posts_after_the_cause_is_fixed(env: Env) -> None:
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    firm = sqlite3.connect(env.firm_path, isolation_level=None)
    firm.execute("ALTER TABLE receipts RENAME TO receipts_old")
    outbox = env.outbox()
    assert outbox.run_once() == {"failed": 1}
    assert "no such table: receipts" in env.posting("p1:S1")["last_error"]
    firm.execute("ALTER TABLE receipts_old RENAME TO receipts")
    firm.close()
    outbox.retry(STAFF, env.posting("p1:S1")["id"])
    assert env.posting("p1:S1")["state"] == "pending"
    assert outbox.run_once() == {"posted": 1}
    assert read_firm(env.firm_url).receipts == {"p1:S1": 3000}
    with pytest.raises(RuleError, match="only failed or retrying"):
        outbox.retry(STAFF, env.posting("p1:S1")["id"])


def test_retry_failed_requeues_every_failed_posting(env: Env) -> None:
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    env.pay("p2", "10.00", [("S2", "10.00", True)])
    with env.store.begin() as conn:
        conn.execute(postings.update().values(state="failed", attempts=3, last_error="boom"))
    assert env.outbox().retry_failed(STAFF) == 2
    assert set(env.states().values()) == {"pending"}


def test_incomplete_is_reallocated_into_proper_postings(env: Env) -> None:
    env.pay("p1", "40.00", None)
    outbox = env.outbox()
    assert outbox.run_once() == {}  # incomplete postings are never written
    pid = env.posting("p1:unallocated")["id"]
    with pytest.raises(RuleError, match=r"add up to 35\.00"):
        outbox.reallocate(STAFF, pid, {"S1": D("25.00"), "S2": D("10.00")})
    with pytest.raises(RuleError, match="no longer in the firm database"):
        outbox.reallocate(STAFF, pid, {"NOPE": D("40.00")})
    outbox.reallocate(STAFF, pid, {"S1": D("25.00"), "S2": D("15.00")})
    assert env.states() == {"p1:unallocated": "removed", "p1:S1": "pending", "p1:S2": "pending"}
    assert "reallocated to S1 25.00, S2 15.00" in env.posting("p1:unallocated")["note"]
    assert outbox.run_once() == {"posted": 2}
    assert read_firm(env.firm_url).receipts == {"p1:S1": 2500, "p1:S2": 1500}
    with pytest.raises(RuleError, match="only incomplete"):
        outbox.reallocate(STAFF, pid, {"S1": D("40.00")})


def test_remove_hands_a_posting_to_a_person(env: Env) -> None:
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    outbox = env.outbox()
    pid = env.posting("p1:S1")["id"]
    outbox.remove(STAFF, pid, "posted by hand in the matter system")
    row = env.posting("p1:S1")
    assert (row["state"], row["note"]) == ("removed", "posted by hand in the matter system")
    assert outbox.run_once() == {}
    with pytest.raises(RuleError, match="only pending"):
        outbox.remove(STAFF, pid, "again")


def test_reversal_after_a_posted_payment_fails(env: Env) -> None:
    pay_id = env.pay("p1", "30.00", [("S1", "30.00", True)])
    outbox = env.outbox()
    assert outbox.run_once() == {"posted": 1}
    with env.store.begin() as conn:
        assert len(enqueue_reversal(conn, pay_id, "payment charged back at the provider")) == 1
    assert outbox.run_once() == {"posted": 1}
    firm = read_firm(env.firm_url)
    assert firm.receipts == {"p1:S1": 3000, "p1:S1:R": -3000}
    assert firm.balances["S1"] == 10_000  # the debt owes again
    assert env.posting("p1:S1:R")["amount"] == D("-30.00")


def test_reversal_waits_for_its_original_and_is_dropped_if_it_never_got_there(env: Env) -> None:
    pay_id = env.pay("p1", "30.00", [("S1", "30.00", True)])
    with env.store.begin() as conn:  # tried once and left retrying: it may or may not be in the firm database
        conn.execute(postings.update().values(state="retrying", attempts=1, last_error="lost connection",
                                              next_attempt_at=T0 + dt.timedelta(seconds=30)))
        enqueue_reversal(conn, pay_id, "payment failed at the provider")
    outbox = env.outbox()
    assert outbox.run_once() == {"deferred": 1}
    assert env.posting("p1:S1:R")["next_attempt_at"] == T0 + dt.timedelta(seconds=31)
    with env.store.begin() as conn:
        conn.execute(postings.update().where(postings.c.reference == "p1:S1").values(state="failed"))
    env.clock.advance(31)
    assert outbox.run_once() == {"removed": 1}
    assert env.states() == {"p1:S1": "removed", "p1:S1:R": "removed"}
    assert read_firm(env.firm_url).receipts == {}


def test_posting_left_by_a_crash_is_checked_against_the_target_first(env: Env,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    env.pay("p2", "20.00", [("S2", "20.00", True)])
    crashed = env.outbox()
    with env.store.begin() as conn:  # both claimed, then the process died ...
        conn.execute(postings.update().values(state="posting", updated_at=T0))
    from postings.outbox import posting_params
    from postings.queries import POSTING_DETAILS

    with env.store.read() as conn:  # ... p1 after the target committed, p2 before it wrote anything
        row = conn.execute(POSTING_DETAILS.where(postings.c.reference == "p1:S1")).mappings().one()
    assert crashed.connector is not None and crashed.connector.write_posting(posting_params(dict(row)))
    asked: list[str] = []
    exists = env.connector.posting_exists

    def spy(reference: str, section: str | None = None) -> bool:
        asked.append(reference)
        return exists(reference, section)

    monkeypatch.setattr(env.connector, "posting_exists", spy)
    env.clock.advance(1)
    assert env.outbox().run_once() == {"already": 1, "posted": 1}
    assert asked == ["p1:S1", "p2:S2"]
    firm = read_firm(env.firm_url)
    assert firm.receipts == {"p1:S1": 3000, "p2:S2": 2000}
    assert firm.balances == {"S1": 7000, "S2": 3000}  # moved exactly once
    assert env.posting("p1:S1")["note"] == "already in the firm database"


def test_backoff_is_jittered_exponential_capped_and_honours_retry_after() -> None:
    assert all(0 <= backoff(1, 1.0) <= 2 for _ in range(50))
    assert all(backoff(30, 1.0) <= 60 for _ in range(50))
    assert backoff(1, 1.0, retry_after=7) == 7
    assert backoff(1, 1.0, retry_after=600) == 60


# ------------------------------------------------------------------------------------------- the CLI


def run_cli(env: Env, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(Commands(parser))
    args = parser.parse_args(argv)
    rt = SimpleNamespace(store=env.store, connector=env.connector, mapping=env.mapping)
    code: int = args.handler(args, rt)
    return code


def test_manage_postings_cli(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.pay("p1", "130.00", [("S1", "100.00", True)])
    assert run_cli(env, ["postings", "list", "--status", "incomplete", "--json"]) == 0
    (incomplete,) = json.loads(capsys.readouterr().out)
    assert (incomplete["reference"], incomplete["amount"]) == ("p1:unallocated", "30.00")
    run_cli(env, ["postings", "reallocate", str(incomplete["id"]), "--statement", "S2=30.00"])
    assert "reallocated into posting(s)" in capsys.readouterr().out
    env.outbox().run_once()
    run_cli(env, ["postings", "show", str(incomplete["id"])])
    shown = capsys.readouterr().out
    assert "p1:unallocated" in shown and "p1:S2" in shown and "posted" in shown
    run_cli(env, ["payments", "list", "--json"])
    assert json.loads(capsys.readouterr().out)[0]["payment_ref"] == "p1"
    with pytest.raises(RuleError, match="STATEMENT=AMOUNT"):
        run_cli(env, ["postings", "reallocate", "1", "--statement", "S2"])
    with pytest.raises(RuleError, match="not both"):
        run_cli(env, ["postings", "retry", "1", "--failed"])
    run_cli(env, ["postings", "list"])
    assert "posted" in capsys.readouterr().out


def test_a_missing_column_fails_at_once_naming_the_statement_and_the_column(tmp_path: Path) -> None:
    env = Env(tmp_path, POSTINGS_SQL.replace("received_at, method)", "received_at, methd)"))
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    assert env.outbox().run_once() == {"failed": 1}  # not ~10 minutes of retrying
    row = env.posting("p1:S1")
    assert row["state"] == "failed" and row["attempts"] == 1 and row["next_attempt_at"] is None
    assert "table receipts has no column named methd" in row["last_error"]
    assert "posting p1:S1 (statement S1)" in row["last_error"]
    assert "INSERT INTO receipts (reference, statement_id, amount_pence, received_at, methd) VALUES" in \
        row["last_error"]
    env.connector.close()


READY_SQL = POSTINGS_SQL.replace(
    "  exists:", "  ready: SELECT COUNT(*) = 0, MAX(who) FROM book_open WHERE book = 'sales'\n  exists:")


def test_not_ready_waits_as_retrying_with_its_reason_and_posts_when_ready(tmp_path: Path) -> None:
    env = Env(tmp_path, READY_SQL)
    with sqlite3.connect(env.firm_path) as firm:
        firm.execute("CREATE TABLE book_open (book TEXT, who TEXT)")
        firm.execute("INSERT INTO book_open VALUES ('sales', 'sales ledger open on PC-7 (J. Smith)')")
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    env.pay("p2", "20.00", [("S2", "20.00", True)])
    outbox = env.outbox(attempts=3, ready_wait=10)
    for _ in range(5):  # far more passes than attempts: "not now" is not a failure
        assert outbox.run_once() == {"waiting": 2}
        assert outbox.run_once() == {}  # not due again yet
        env.clock.advance(10)
    for ref in ("p1:S1", "p2:S2"):
        row = env.posting(ref)
        assert (row["state"], row["attempts"]) == ("retrying", 0)
        assert row["last_error"] == "the firm database is not ready: sales ledger open on PC-7 (J. Smith)"
    assert read_firm(env.firm_url).receipts == {}
    with sqlite3.connect(env.firm_path) as firm:
        firm.execute("DELETE FROM book_open")
    assert outbox.run_once() == {"posted": 2}
    assert read_firm(env.firm_url).receipts == {"p1:S1": 3000, "p2:S2": 2000}
    env.connector.close()


PARAMS_SQL = """\
params: {bank_account: 1200, source_tag: ledgerlink}
postings:
  kind: sql
  exists: SELECT 1 FROM receipts WHERE reference = :reference
  statements:
    - >-
      INSERT INTO receipts (reference, statement_id, amount_pence, received_at, method)
      VALUES (:reference, :statement_key, :amount_minor, :paid_at_local, :source_tag)
    - INSERT INTO journal (id, hex, account, reference, day) VALUES (:posting_uuid, :posting_uuid_hex, :bank_account,
      :reference, :paid_on_local)
    - UPDATE journal SET account = account + 1 WHERE id = :posting_uuid
"""


def test_params_posting_uuid_and_local_payment_time(tmp_path: Path) -> None:
    env = Env(tmp_path, PARAMS_SQL)
    env.mapping = env.mapping.model_copy(update={"timezone": "America/Los_Angeles"})
    with sqlite3.connect(env.firm_path) as firm:
        firm.execute("CREATE TABLE journal (id TEXT, hex TEXT, account INTEGER, reference TEXT, day TEXT)")
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    late = dt.datetime(2026, 5, 2, 5, 48, tzinfo=dt.UTC)  # 22:48 on 1 May in Los Angeles
    with env.store.begin() as conn:
        conn.execute(payments.update().values(confirmed_at=late, status_at=late))
    assert env.outbox().run_once() == {"posted": 1}
    with sqlite3.connect(env.firm_path) as firm:
        received, method = firm.execute("SELECT received_at, method FROM receipts").fetchone()
        uid, hexed, account, reference, day = firm.execute("SELECT * FROM journal").fetchone()
    assert received.startswith("2026-05-01 22:48") and method == "ledgerlink"
    assert day == "2026-05-01" and account == 1201 and reference == "p1:S1"
    assert uid == str(uuid.UUID(hexed)) and uid == str(posting_uuid("p1:S1"))
    env.connector.close()


def test_params_must_not_shadow_ours_and_unknown_ones_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as err:
        Env(tmp_path, PARAMS_SQL.replace("source_tag: ledgerlink", "reference: x").replace(":bank_account,", ":bank,"))
    text = str(err.value)
    assert "params.reference: :reference is one of Ledgerlink's own parameters" in text
    assert "unknown parameter :bank;" in text and ":bank_account" in text


def test_posting_params_offer_every_documented_name_with_its_value(env: Env) -> None:
    """Made when named, each value is what the mapping documentation says; a posting value wins over a mapping
    constant of the same name, and the constants are offered too."""
    from mappings.format import POSTING_PARAMS
    from postings.outbox import posting_params
    from postings.queries import POSTING_DETAILS

    env.pay("p1", "30.00", [("S1", "30.00", True)])
    with env.store.read() as conn:
        row = conn.execute(POSTING_DETAILS.where(postings.c.reference == "p1:S1")).mappings().one()
    mapping = env.mapping.model_copy(update={"params": {"ledger": "SL", "reference": "not this"},
                                             "timezone": "Europe/London"})
    params = posting_params(dict(row), mapping)
    assert set(params) == set(POSTING_PARAMS) | {"ledger"} and len(params) == len(POSTING_PARAMS) + 1
    uid = posting_uuid("p1:S1")
    paid = row["confirmed_at"] or row["status_at"]
    expected = {
        "reference": "p1:S1", "payment_id": row["payment_ref"], "provider": row["provider"], "kind": "payment",
        "amount": D("30.00"), "amount_abs": D("30.00"), "amount_minor": 3000, "amount_text": "30.00",
        "currency": "GBP", "statement_key": "S1", "statement_number": row["statement_number"],
        "matter_key": row["matter_key"], "matter_number": row["matter_number"],
        "client_key": row["client_key"] or row["link_client"], "paid_at": paid.astimezone(dt.UTC).replace(tzinfo=None),
        "paid_on": paid.astimezone(dt.UTC).date(), "method": row["method"], "description": row["description"],
        "link_id": row["link_id"], "paid_at_local": paid.astimezone(ZoneInfo("Europe/London")).replace(tzinfo=None),
        "paid_on_local": paid.astimezone(ZoneInfo("Europe/London")).date(), "posting_uuid": str(uid),
        "posting_uuid_hex": uid.hex, "section": row["section"], "account": row["account"],
        "account_kind": "operating", "payout_id": None, "bank_reference": None, "from_account": row["fees_account"],
        "payer_name": row["payer_name"], "ledger": "SL",
    }
    assert dict(params) == expected
    with pytest.raises(KeyError):
        params["no_such_name"]


def test_the_existence_check_binds_only_the_reference_and_the_mappings_params(tmp_path: Path) -> None:
    """The check also runs on its own (before a retry, after a failed write), knowing only the reference: a
    posting's other parameters there are refused at load, by line; the mapping's own params are bound."""
    with pytest.raises(ConfigurationError) as err:
        Env(tmp_path, PARAMS_SQL.replace("WHERE reference = :reference", "WHERE reference = :reference AND "
                                         "statement_id = :statement_key"))
    assert ":statement_key cannot be bound here: the existence check also runs on its own" in str(err.value)
    (tmp_path / "constants").mkdir()
    env = Env(tmp_path / "constants", PARAMS_SQL.replace("WHERE reference = :reference",
                                                         "WHERE reference = :reference AND method = :source_tag"))
    with sqlite3.connect(env.firm_path) as firm:
        firm.execute("CREATE TABLE journal (id TEXT, hex TEXT, account INTEGER, reference TEXT, day TEXT)")
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    env.outbox().run_once()
    assert env.states() == {"p1:S1": "posted"}
    assert env.connector.posting_exists("p1:S1") is True
    env.connector.close()
