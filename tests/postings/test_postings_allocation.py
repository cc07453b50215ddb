"""Allocation of a payment over its link's statements, and the enqueue contract with agent/payments.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from crash_worker import add_payment, add_statement
from sqlalchemy import select

from agent.state import StateStore
from agent.state.schema import postings
from postings.outbox import enqueue_payment, enqueue_reversal

D = Decimal


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def rows(store: StateStore) -> list[dict[str, Any]]:
    with store.read() as conn:
        return [dict(r) for r in conn.execute(select(postings).order_by(postings.c.id)).mappings()]


def shares(store: StateStore) -> dict[str, tuple[Decimal, str]]:
    return {r["reference"]: (r["amount"], r["state"]) for r in rows(store)}


def test_explicit_amounts_first_then_oldest_statement_first(store: StateStore) -> None:
    with store.begin() as conn:
        add_statement(conn, "NEW", D("100.00"), issue_date=dt.date(2026, 3, 1))
        add_statement(conn, "OLD", D("40.00"), issue_date=dt.date(2026, 1, 1))
        add_statement(conn, "MID", D("70.00"), issue_date=dt.date(2026, 2, 1))
        add_statement(conn, "EXP", D("30.00"), issue_date=dt.date(2026, 4, 1))
        add_payment(conn, "p1", D("100.00"), [("NEW", D("100.00"), False), ("OLD", D("40.00"), False),
                                              ("MID", D("70.00"), False), ("EXP", D("25.00"), True)])
    assert shares(store) == {
        "p1:EXP": (D("25.00"), "pending"),  # explicit first
        "p1:OLD": (D("40.00"), "pending"),  # then oldest, up to its balance
        "p1:MID": (D("35.00"), "pending"),  # what is left
    }


def test_overpayment_remainder_is_incomplete_with_a_reason(store: StateStore) -> None:
    with store.begin() as conn:
        add_statement(conn, "S1", D("60.00"))
        add_payment(conn, "p1", D("75.50"), [("S1", D("60.00"), False)])
    (posted, left) = rows(store)
    assert (posted["reference"], posted["amount"], posted["state"]) == ("p1:S1", D("60.00"), "pending")
    assert (left["reference"], left["amount"], left["state"]) == ("p1:unallocated", D("15.50"), "incomplete")
    assert "overpayment: 15.50 GBP" in left["note"]
    assert left["statement_key"] is None


def test_payment_without_a_link_or_statements_is_never_guessed(store: StateStore) -> None:
    with store.begin() as conn:
        add_statement(conn, "S1", D("60.00"))
        add_payment(conn, "nolink", D("10.00"), None)
        add_payment(conn, "quick", D("12.00"), [], matter_key="M-S1")
    by_ref = {r["reference"]: r for r in rows(store)}
    assert set(by_ref) == {"nolink:unallocated", "quick:unallocated"}
    assert "did not come through a payment link" in by_ref["nolink:unallocated"]["note"]
    assert "quick link with no statements" in by_ref["quick:unallocated"]["note"]
    assert by_ref["quick:unallocated"]["matter_key"] == "M-S1"
    assert {r["state"] for r in by_ref.values()} == {"incomplete"}


@pytest.mark.parametrize(("kind", "reason"), [("void", "is void"), ("deleted", "was deleted"),
                                              ("gone", "no longer in the firm database")])
def test_explicit_amount_for_an_unusable_statement_stays_unallocated(store: StateStore, kind: str,
                                                                      reason: str) -> None:
    with store.begin() as conn:
        add_statement(conn, "OK", D("100.00"))
        if kind != "gone":
            add_statement(conn, "BAD", D("50.00"), status="void" if kind == "void" else "open",
                          deleted=kind == "deleted")
        add_payment(conn, "p1", D("80.00"), [("BAD", D("50.00"), True), ("OK", D("30.00"), False)])
    assert shares(store) == {"p1:OK": (D("30.00"), "pending"), "p1:unallocated": (D("50.00"), "incomplete")}
    note = rows(store)[1]["note"]
    assert "50.00 earmarked for it but statement" in note and reason in note


def test_explicit_amount_above_what_is_owed_is_not_moved_elsewhere(store: StateStore) -> None:
    with store.begin() as conn:
        add_statement(conn, "A", D("20.00"))
        add_statement(conn, "B", D("500.00"))
        add_payment(conn, "p1", D("50.00"), [("A", D("50.00"), True), ("B", D("0"), False)])
    assert shares(store) == {"p1:A": (D("20.00"), "pending"), "p1:unallocated": (D("30.00"), "incomplete")}
    assert "more than it owes" in rows(store)[1]["note"]


def test_statement_in_another_currency_is_not_used(store: StateStore) -> None:
    with store.begin() as conn:
        add_statement(conn, "EUR", D("100.00"), currency="EUR")
        add_payment(conn, "p1", D("10.00"), [("EUR", D("10.00"), False)])
    (only,) = rows(store)
    assert only["state"] == "incomplete" and "in EUR, the payment in GBP" in only["note"]


def test_unposted_postings_reduce_the_balance_the_next_payment_sees(store: StateStore) -> None:
    with store.begin() as conn:
        add_statement(conn, "S1", D("100.00"))
        add_payment(conn, "p1", D("70.00"), [("S1", D("100.00"), False)])
        add_payment(conn, "p2", D("70.00"), [("S1", D("100.00"), False)])
    assert shares(store) == {"p1:S1": (D("70.00"), "pending"), "p2:S1": (D("30.00"), "pending"),
                             "p2:unallocated": (D("40.00"), "incomplete")}


def test_enqueue_payment_is_idempotent(store: StateStore) -> None:
    with store.begin() as conn:
        add_statement(conn, "S1", D("100.00"))
        pid = add_payment(conn, "p1", D("70.00"), [("S1", D("70.00"), True)])
        assert enqueue_payment(conn, pid) == []
    assert len(rows(store)) == 1


def test_reversal_removes_untried_postings_and_reverses_the_rest_idempotently(store: StateStore) -> None:
    with store.begin() as conn:
        add_statement(conn, "A", D("100.00"))
        add_statement(conn, "B", D("100.00"))
        pid = add_payment(conn, "p1", D("250.00"), [("A", D("100.00"), True), ("B", D("100.00"), True)])
        conn.execute(postings.update().where(postings.c.reference == "p1:A").values(state="posted"))
        first = enqueue_reversal(conn, pid, "payment failed at the provider")
        assert enqueue_reversal(conn, pid, "payment failed at the provider") == []
    assert len(first) == 1
    assert shares(store) == {
        "p1:A": (D("100.00"), "posted"),
        "p1:B": (D("100.00"), "removed"),  # never tried: nothing reached the firm database
        "p1:unallocated": (D("50.00"), "removed"),
        "p1:A:R": (D("-100.00"), "pending"),
    }
    assert rows(store)[-1]["kind"] == "reversal"
