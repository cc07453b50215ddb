"""The stored states and their moves: every provider status has a stored state, every state is reachable, a
posted posting or a paid link never moves back, and ``move`` refuses an illegal move in the UPDATE itself."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from agent.state import StateStore
from agent.state.schema import postings
from agent.state.statuses import (
    MOVES,
    CollectionState,
    IllegalMove,
    InstalmentState,
    LinkState,
    PaymentState,
    PlanState,
    PostingState,
    move,
    sources,
)
from connectors.providers.contract import CollectionStatus, LinkStatus

INITIAL: dict[type[StrEnum], set[Any]] = {
    LinkState: {LinkState.CREATING},
    PaymentState: {PaymentState.PENDING, PaymentState.CONFIRMED, PaymentState.FAILED},  # a first event may settle
    PostingState: {PostingState.PENDING, PostingState.INCOMPLETE},
    CollectionState: {CollectionState.CREATING},
    PlanState: {PlanState.ACTIVE, PlanState.AWAITING_MANDATE},  # made on a mandate, or with its setup
    InstalmentState: {InstalmentState.SCHEDULED},
}


def test_every_status_a_provider_reports_is_a_stored_state() -> None:
    assert {s.value for s in LinkStatus} <= {s.value for s in LinkState}
    assert {s.value for s in CollectionStatus} <= {s.value for s in CollectionState}


@pytest.mark.parametrize("kind", list(MOVES), ids=lambda k: k.__name__)
def test_every_state_has_its_moves_and_is_reachable_from_where_rows_start(kind: type[StrEnum]) -> None:
    moves = MOVES[kind]
    assert set(moves) == set(kind), "each state says where it may go, if only nowhere"
    seen, todo = set(INITIAL[kind]), list(INITIAL[kind])
    while todo:
        for target in moves[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    assert seen == set(kind)


def test_what_is_done_stays_done() -> None:
    assert MOVES[PostingState][PostingState.POSTED] == frozenset()  # only a reversing posting undoes it
    for closed in (LinkState.PAYMENT_RECEIVED, LinkState.CANCELLED, LinkState.EXPIRED, LinkState.FAILED):
        assert MOVES[LinkState][closed] == frozenset()  # single use: a new link is made instead
    assert LinkState.OUTSTANDING.value not in sources(LinkState.CREATING)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    now = dt.datetime.now(dt.UTC)
    with s.begin() as conn:
        for i, state in enumerate(PostingState, start=1):
            conn.execute(postings.insert().values(
                id=i, reference=f"ref-{state}", kind="payment", amount=Decimal("1.00"), currency="GBP",
                account="office", state=state, created_at=now, updated_at=now))
    yield s
    s.close()


def _states(store: StateStore) -> dict[str, str]:
    with store.read() as conn:
        return {ref: state for ref, state in conn.execute(select(postings.c.reference, postings.c.state))}


def test_move_changes_only_rows_that_may_go_there(store: StateStore) -> None:
    with store.begin() as conn:
        moved = move(conn, postings, PostingState.PENDING, postings.c.id > 0, note="retry everything")
    after = _states(store)
    allowed = set(sources(PostingState.PENDING))
    assert moved == len(allowed)
    for state in PostingState:
        assert after[f"ref-{state}"] == (PostingState.PENDING if state in allowed else state)
    assert after["ref-posted"] == "posted"  # a posted posting never goes back to the queue


def test_naming_a_state_that_can_never_move_there_is_refused_before_anything_is_written(store: StateStore) -> None:
    with pytest.raises(IllegalMove, match="posted can never move to pending"), store.begin() as conn:
        move(conn, postings, PostingState.PENDING, postings.c.reference == "ref-posted",
             from_=(PostingState.FAILED, PostingState.POSTED))
    assert _states(store)["ref-posted"] == "posted"


def test_from_narrows_the_move_to_the_states_named(store: StateStore) -> None:
    with store.begin() as conn:
        moved = move(conn, postings, PostingState.REMOVED, postings.c.id > 0, from_=(PostingState.INCOMPLETE,))
    assert moved == 1
    assert _states(store)["ref-incomplete"] == "removed"
    assert _states(store)["ref-pending"] == "pending"
