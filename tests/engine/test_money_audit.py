"""Issue 19 on refunds and payouts: a refund's request (amount, reason, who) is one entry in the transaction that
records it, the provider's answer a second by whoever completed it (the refunds job after an outage); a refund
refused by our rules or by the provider is exactly one failed entry; clearing a client-money breach is one entry
with the person who recorded it, also when refused. Sandbox provider, demo firm."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from agent.core.errors import RuleError
from agent.core.model import Actor
from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state import audit
from connectors.providers import sandbox
from connectors.providers.contract import PayoutProvider

OFFICE_MATTER, TRUST_MATTER = "M-2026-0011", "M-2026-0010"
ALICE, BOB = Actor("user", "alice"), Actor("user", "bob")


def _runtime(home: Path, *, trust_net: bool = False) -> Runtime:
    init_home(home)
    config = home / "ledgerlink.toml"
    if trust_net:  # the trust account paid out net of fees: the breach a person clears
        config.write_text(config.read_text().replace('payout_fees = "gross"', 'payout_fees = "net"'))
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    Syncer(rt.store, rt.connector).sync()
    return rt


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = _runtime(tmp_path / "home")
    yield runtime
    runtime.close()


def paid(rt: Runtime, matter: str, amount: str, account: str) -> str:
    link = rt.links.create(ALICE, LinkRequest(matter=matter, amount=Decimal(amount), account=account))
    assert link.provider_ref is not None
    ref = sandbox.pay(rt.settings.home, link.provider_ref, method="card")
    EventPoller(rt.store, rt.provider(account), account, retry_initial=0.01).poll()
    return ref


def trail(rt: Runtime, since: int) -> list[tuple[str, str, str, str]]:
    """(who, action, object, outcome) of every entry after ``since``; the chain intact throughout."""
    assert audit.check(rt.store, rt.audit_seal, rt.checkpoint_file).intact
    with rt.store.read() as conn:
        return [(e.actor, e.action, e.object, e.outcome) for e in audit.entries(conn) if e.seq > since]


def last_seq(rt: Runtime) -> int:
    with rt.store.read() as conn:
        return audit.entries(conn, limit=1)[0].seq


def entry(rt: Runtime, seq: int) -> audit.Entry:
    with rt.store.read() as conn:
        [found] = [e for e in audit.entries(conn) if e.seq == seq]
    return found


def test_a_refund_is_its_request_and_the_providers_answer(rt: Runtime) -> None:
    ref = paid(rt, OFFICE_MATTER, "60.00", "operating")
    start = last_seq(rt)
    refund = rt.refunds.refund(ref, Decimal("20.00"), "overcharged", BOB)
    assert trail(rt, start) == [("user:bob", "refund.request", f"refund:{refund.id}", "ok"),
                                ("user:bob", "refund.complete", f"refund:{refund.id}", "ok")]
    asked, answered = entry(rt, start + 1), entry(rt, start + 2)
    assert asked.after == {"payment": ref, "amount": "20.00", "currency": "GBP", "reason": "overcharged",
                           "status": "requested"}
    assert asked.before == {"payment": ref, "paid": "60.00", "refunded": "0.00"}
    assert answered.after == {"status": "succeeded", "provider_ref": refund.provider_ref}


def test_a_refund_over_what_is_left_writes_one_failed_entry(rt: Runtime) -> None:
    ref = paid(rt, OFFICE_MATTER, "60.00", "operating")
    rt.refunds.refund(ref, Decimal("50.00"), "most of it", BOB)
    start = last_seq(rt)
    with pytest.raises(RuleError, match=r"at most 10\.00 GBP"):
        rt.refunds.refund(ref, Decimal("10.01"), "too much", ALICE)
    assert trail(rt, start) == [("user:alice", "refund.request", f"payment:{ref}", "failed")]
    refused = entry(rt, start + 1)
    assert "at most 10.00 GBP" in (refused.error or "")
    assert refused.before == {"amount": "10.01", "reason": "too much"}
    with pytest.raises(RuleError, match="say why"):
        rt.refunds.refund(ref, None, "  ", ALICE)
    assert trail(rt, start + 1) == [("user:alice", "refund.request", f"payment:{ref}", "failed")]


def test_a_refund_the_provider_refuses_writes_one_failed_entry(rt: Runtime) -> None:
    ref = paid(rt, OFFICE_MATTER, "60.00", "operating")
    # refunded in the provider's dashboard, outside Ledgerlink: the provider has nothing left to refund
    provider = rt.provider("operating")
    assert isinstance(provider, PayoutProvider)
    provider.refund(ref, Decimal("60.00"), "GBP", "dashboard", "dashboard-refund-1")
    start = last_seq(rt)
    with pytest.raises(RuleError, match="refused the refund"):
        rt.refunds.refund(ref, Decimal("10.00"), "duplicate", BOB)
    [refund] = rt.refunds.listing(ref)
    assert trail(rt, start) == [("user:bob", "refund.request", f"refund:{refund.id}", "ok"),
                                ("user:bob", "refund.complete", f"refund:{refund.id}", "failed")]
    assert "refund_exceeds_amount" in (entry(rt, start + 2).error or "")
    assert rt.refunds.resume() == 0 and len(trail(rt, start)) == 2  # failed for good: nothing more


def test_a_refund_finished_after_an_outage_is_answered_by_the_refunds_job(rt: Runtime) -> None:
    ref = paid(rt, OFFICE_MATTER, "60.00", "operating")
    start = last_seq(rt)
    refund_id = rt.refunds.request(ref, Decimal("5.00"), "goodwill", BOB)  # the provider not reached: a crash
    assert rt.refunds.resume() == 1 and rt.refunds.resume() == 0
    assert trail(rt, start) == [("user:bob", "refund.request", f"refund:{refund_id}", "ok"),
                                ("job:refunds", "refund.complete", f"refund:{refund_id}", "ok")]


def test_clearing_a_breach_writes_one_entry_also_when_refused(tmp_path: Path) -> None:
    rt = _runtime(tmp_path / "home", trust_net=True)
    try:
        paid(rt, TRUST_MATTER, "250.00", "trust")
        sandbox.pay_out(rt.settings.home)
        [breach] = rt.payouts.sync().breaches
        start = last_seq(rt)
        with pytest.raises(RuleError, match="--note"):
            rt.payouts.clear(ALICE, breach.payout_id, " ")
        rt.payouts.clear(BOB, breach.payout_id, "transfer FT123")
        with pytest.raises(RuleError, match="has no open breach"):
            rt.payouts.clear(ALICE, breach.payout_id, "again")
        assert trail(rt, start) == [("user:alice", "payout.clear", f"payout:{breach.payout_id}", "failed"),
                                    ("user:bob", "payout.clear", f"payout:{breach.payout_id}", "ok"),
                                    ("user:alice", "payout.clear", f"payout:{breach.payout_id}", "failed")]
        cleared = entry(rt, start + 2)
        assert cleared.before["shortfall"] == "3.95" and cleared.before["cleared"] is False
        assert cleared.after == {"cleared": True, "note": "transfer FT123"}
        assert rt.payouts.breaches() == []
    finally:
        rt.close()
