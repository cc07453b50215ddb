"""Exactly once under SIGKILL: workers are killed at random moments (some between the target's commit and the
local mark) and restarted until everything is posted; the firm database must then hold each payment once."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from crash_worker import drive, outbox_states, read_firm, refund_states, seed_crash_run, seed_refunds
from fakes.gocardless_api import FakeGoCardless
from fakes.stripe_api import FakeStripe
from sqlalchemy.engine import URL

from agent.state import StateStore, audit
from connectors.testkit.databases import TempDatabase

PAYMENTS = int(os.environ.get("LEDGERLINK_TEST_CRASH_PAYMENTS", "600"))  # enough work to land 50 kills
MIN_KILLS = 50


@pytest.mark.timeout(120)
def test_exactly_once_under_sigkill(any_db: TempDatabase, tmp_path: Path) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    balances, paid = seed_crash_run(state_url, any_db.url, PAYMENTS)

    result = drive(state_url, any_db.url, tmp_path, min_kills=MIN_KILLS, delay=(0.005, 0.08),
                   commit_probability=0.03, seed=PAYMENTS)

    assert result.kills + result.commit_kills >= MIN_KILLS, result
    assert result.commit_kills >= 1, result  # some kills landed between the target's commit and the local mark
    firm = read_firm(any_db.url)
    expected = {f"P{i:05d}" for i in range(PAYMENTS)}
    assert firm.duplicates == 0
    assert {ref.split(":")[0] for ref in firm.receipts} == expected
    assert len(firm.receipts) == PAYMENTS  # exactly one receipt per payment
    assert sum(firm.receipts.values()) == paid  # integer pence: exact
    moved = {k: balances[k] - firm.balances[k] for k in balances}
    per_statement: dict[str, int] = {}
    for ref, pence in firm.receipts.items():
        key = ref.split(":")[1]
        per_statement[key] = per_statement.get(key, 0) + pence
    assert moved == {k: per_statement.get(k, 0) for k in balances}  # every balance moved exactly once
    assert outbox_states(state_url) == {"posted": PAYMENTS}


def assert_reversed_once(firm_url: URL | str, state_url: str, balances: dict[str, int], paid: int, payments: int,
                         refunded: dict[str, int]) -> None:
    """The firm database holds each payment once and one reversal per refund, to the penny, with no duplicate
    reference; every posting of the outbox is posted."""
    firm = read_firm(firm_url)
    assert firm.duplicates == 0
    reversals = {ref: pence for ref, pence in firm.receipts.items() if ":R" in ref}
    assert sorted(ref.rsplit(":R", 1)[1] for ref in reversals) == sorted(refunded)  # one reversal per refund
    assert sum(reversals.values()) == -sum(refunded.values())
    assert sum(firm.receipts.values()) == paid - sum(refunded.values())
    assert sum(balances.values()) - sum(firm.balances.values()) == paid - sum(refunded.values())
    assert outbox_states(state_url) == {"posted": payments + len(refunded)}


@pytest.mark.timeout(180)
def test_refund_and_reversal_exactly_once_under_sigkill(any_db: TempDatabase, tmp_path: Path) -> None:
    """Refunds left requested are finished by workers killed at random, some right after the provider refunded
    and before the state store knew: one refund each at the provider, one reversal each in the firm database."""
    payments = 130  # enough work that 20 kills land before it runs out (self-kills count toward them; at 100, a
    # loaded machine once ran out after 19)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    sandbox_home = tmp_path / "sandbox"
    balances, paid = seed_crash_run(state_url, any_db.url, payments)
    refunded = seed_refunds(state_url, sandbox_home)

    result = drive(state_url, any_db.url, tmp_path, min_kills=20, delay=(0.005, 0.08), commit_probability=0.05,
                   seed=payments, sandbox_home=sandbox_home)

    assert result.kills + result.commit_kills >= 20, result
    kills = (tmp_path / "commit-kills.txt").read_text().splitlines()
    assert any(k.startswith("refund ") for k in kills), result  # killed after the provider refunded
    assert refund_states(state_url) == {"succeeded": len(refunded)}
    with sqlite3.connect(sandbox_home / "sandbox.db") as conn:
        at_provider = conn.execute("SELECT idempotency_key, amount FROM refunds").fetchall()
    assert sorted(key for key, _ in at_provider) == sorted(f"ledgerlink-refund-{r}" for r in refunded)  # once each
    assert_reversed_once(any_db.url, state_url, balances, paid, payments, refunded)
    with sqlite3.connect(tmp_path / "state.db") as conn:  # the audit trail: one request and one answer each
        entries = conn.execute("SELECT action, object_id, COUNT(*) FROM audit_log WHERE action LIKE 'refund.%' "
                               "GROUP BY action, object_id").fetchall()
    assert sorted(entries) == sorted([("refund.request", r, 1) for r in refunded] +
                                     [("refund.complete", r, 1) for r in refunded])
    store = StateStore(state_url)
    try:
        with store.read() as state:
            assert audit.verify(state).intact
    finally:
        store.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["gocardless", "stripe"])
def test_refund_and_reversal_exactly_once_under_sigkill_at_a_fake_provider(
        kind: str, sqlite_db: TempDatabase, tmp_path: Path) -> None:
    """The same at GoCardless and Stripe (their fakes, which replay or refuse a repeated idempotency key as the
    providers document): killed right after the provider refunded, the retry under the same key makes no second
    refund, and each reversal is posted once."""
    payments = 45
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    api = (FakeGoCardless() if kind == "gocardless" else FakeStripe()).start()
    try:
        fake = f"{kind} {api.url}"
        balances, paid = seed_crash_run(state_url, sqlite_db.url, payments)
        refunded = seed_refunds(state_url, tmp_path / "sandbox", fake=(fake, api))

        result = drive(state_url, sqlite_db.url, tmp_path, min_kills=10, delay=(0.005, 0.08),
                       commit_probability=0.05, seed=payments, sandbox_home=tmp_path / "sandbox", fake=fake)

        kills = (tmp_path / "commit-kills.txt").read_text().splitlines()
        assert any(k.startswith("refund ") for k in kills), result  # killed after the provider refunded
        answered = "pending" if kind == "gocardless" else "succeeded"  # a GoCardless refund is created, then paid
        assert refund_states(state_url) == {answered: len(refunded)}
        at_provider = sorted(int(r["amount"]) for r in api.refunds.values())  # minor units at both
        assert at_provider == sorted(refunded.values())  # one refund each, of the amount asked
        assert_reversed_once(sqlite_db.url, state_url, balances, paid, payments, refunded)
    finally:
        api.stop()
