"""Every state the state store holds, with the moves allowed between them, in one place.

The providers' own status sets (connectors.providers.contract) are what a provider reports; these are the values
our tables store, including the internal ones no provider knows (``creating``, ``refused``). A stored state is
changed only through :func:`move`, which adds "the row is in a state that may move there" to the UPDATE's own
WHERE clause: an illegal move changes nothing (and says so by its row count) even when two writers race, and a
caller that names the states it moves from learns at once when one of them can never reach the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, update

from agent.core.errors import LedgerlinkError


class IllegalMove(LedgerlinkError):
    """A programming error: code asked for a move the state machine does not allow."""


# ------------------------------------------------------------------------------------------------- links
class LinkState(StrEnum):
    CREATING = "creating"  # internal: row reserved, the provider has not yet confirmed the link
    OUTSTANDING = "outstanding"
    PAYMENT_RECEIVED = "payment_received"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


_CLOSED_LINK: frozenset[LinkState] = frozenset()
LINK_MOVES: Mapping[LinkState, frozenset[LinkState]] = {
    # a payment can land on a link still being created (the provider answered late); a quick link that could not
    # be made is failed; a link the provider never confirmed can be cancelled by staff
    LinkState.CREATING: frozenset({LinkState.OUTSTANDING, LinkState.PAYMENT_RECEIVED, LinkState.FAILED,
                                   LinkState.CANCELLED}),
    LinkState.OUTSTANDING: frozenset({LinkState.PAYMENT_RECEIVED, LinkState.CANCELLED, LinkState.EXPIRED,
                                      LinkState.FAILED}),
    LinkState.PAYMENT_RECEIVED: _CLOSED_LINK,  # single use: a paid link never reopens (a new one is made)
    LinkState.CANCELLED: _CLOSED_LINK,
    LinkState.EXPIRED: _CLOSED_LINK,
    LinkState.FAILED: _CLOSED_LINK,
}
LINK_CREATING = LinkState.CREATING
LINK_OUTSTANDING = LinkState.OUTSTANDING
LINK_STATUSES = tuple(LinkState)
LINK_OPEN = (LinkState.CREATING, LinkState.OUTSTANDING)  # a debt with one of these has its link: no second one

# ------------------------------------------------------------------------------------------------- payments
class PaymentState(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CHARGED_BACK = "charged_back"


PAYMENT_MOVES: Mapping[PaymentState, frozenset[PaymentState]] = {
    PaymentState.PENDING: frozenset({PaymentState.CONFIRMED, PaymentState.FAILED, PaymentState.CHARGED_BACK}),
    # a confirmed payment can fail late (a bank payment returned) or be charged back
    PaymentState.CONFIRMED: frozenset({PaymentState.FAILED, PaymentState.CHARGED_BACK}),
    # a retried Direct Debit is collected after all; a dispute is won
    PaymentState.FAILED: frozenset({PaymentState.CONFIRMED, PaymentState.CHARGED_BACK}),
    # a dispute is won, or the provider reports the charged-back payment failed after all
    PaymentState.CHARGED_BACK: frozenset({PaymentState.CONFIRMED, PaymentState.FAILED}),
}
PAYMENT_UNPOSTED = (PaymentState.PENDING, PaymentState.CONFIRMED)  # money taken or on its way


# ------------------------------------------------------------------------------------------------- postings
class PostingState(StrEnum):
    PENDING = "pending"
    POSTING = "posting"  # claimed by an outbox pass, being written
    POSTED = "posted"
    RETRYING = "retrying"
    FAILED = "failed"
    INCOMPLETE = "incomplete"  # needs a person: no statement or no matter to put it on
    REMOVED = "removed"


POSTING_MOVES: Mapping[PostingState, frozenset[PostingState]] = {
    # claimed; a reversal deferred until its original is written; withdrawn, cancelled or removed by a person
    PostingState.PENDING: frozenset({PostingState.POSTING, PostingState.PENDING, PostingState.REMOVED}),
    # written; the target said "not now" or a transient fault; gave up; a reversal sent back to wait or dropped
    # because its original never got there; a claim left by a pass that was killed is taken over by the next
    PostingState.POSTING: frozenset({PostingState.POSTED, PostingState.RETRYING, PostingState.FAILED,
                                     PostingState.PENDING, PostingState.REMOVED, PostingState.POSTING}),
    PostingState.RETRYING: frozenset({PostingState.POSTING, PostingState.PENDING, PostingState.REMOVED}),
    # retried by a person; found in the firm database after all; never got there, or removed by a person
    PostingState.FAILED: frozenset({PostingState.PENDING, PostingState.POSTED, PostingState.REMOVED}),
    # a person put it on a ledger (its waiting reversal goes with it) or took it out
    PostingState.INCOMPLETE: frozenset({PostingState.PENDING, PostingState.REMOVED}),
    # a withdrawn reversal stands again when its payment fails a second time
    PostingState.REMOVED: frozenset({PostingState.PENDING}),
    PostingState.POSTED: frozenset(),  # in the firm's books: only a reversing posting undoes it
}
POSTING_STATES = tuple(PostingState)
POSTING_IN_FLIGHT = (PostingState.PENDING, PostingState.POSTING, PostingState.RETRYING,
                     PostingState.FAILED)  # allocated, not yet in the firm's books


# ------------------------------------------------------------------------------------------ Direct Debit
class CollectionState(StrEnum):
    """GoCardless's payment statuses (kept exactly, as the provider contract's CollectionStatus) and two of ours."""

    CREATING = "creating"  # internal: row reserved, the provider has not yet confirmed the collection
    REFUSED = "refused"  # internal: the provider refused to create it (note says why); a person decides
    PENDING_CUSTOMER_APPROVAL = "pending_customer_approval"
    PENDING_SUBMISSION = "pending_submission"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    PAID_OUT = "paid_out"
    CANCELLED = "cancelled"
    CUSTOMER_APPROVAL_DENIED = "customer_approval_denied"
    FAILED = "failed"
    CHARGED_BACK = "charged_back"


_C = CollectionState
COLLECTION_CREATING = _C.CREATING
COLLECTION_REFUSED = _C.REFUSED
COLLECTION_PENDING = (_C.PENDING_CUSTOMER_APPROVAL, _C.PENDING_SUBMISSION, _C.SUBMITTED)  # no money moved yet
COLLECTION_LIVE = (_C.CREATING, *COLLECTION_PENDING)  # will still take money
COLLECTION_CANCELLABLE = (_C.PENDING_CUSTOMER_APPROVAL, _C.PENDING_SUBMISSION)
COLLECTION_PAID = frozenset({_C.CONFIRMED.value, _C.PAID_OUT.value})  # the money arrived (paid out: and moved on)
_REPORTED = frozenset(_C) - {_C.CREATING, _C.REFUSED}  # what the provider can report of a collection it made
COLLECTION_MOVES: Mapping[CollectionState, frozenset[CollectionState]] = {
    _C.CREATING: _REPORTED | {_C.REFUSED},
    _C.REFUSED: _REPORTED,  # a person gave up on it, or the provider reports it made after all
    # GoCardless moves a payment forward through its lifecycle, and a failed one can be retried (back to
    # pending_submission) and a charged-back one re-collected after a dispute: any reported status may follow
    # any other, except that nothing goes back to being created or refused.
    **{status: _REPORTED for status in _REPORTED},
}
del _C

# ------------------------------------------------------------------------------------------------ payment plans
class PlanState(StrEnum):
    AWAITING_MANDATE = "awaiting_mandate"  # made with the payer's mandate setup: nothing is collected until it is done
    ACTIVE = "active"
    ENDED = "ended"  # every instalment is paid, failed or cancelled: nothing more will be collected
    CANCELLED = "cancelled"  # by staff, because the debt was voided, or because its mandate setup failed


PLAN_MOVES: Mapping[PlanState, frozenset[PlanState]] = {
    # the payer finished the setup; the debt was paid elsewhere meanwhile; the setup failed or staff gave up
    PlanState.AWAITING_MANDATE: frozenset({PlanState.ACTIVE, PlanState.ENDED, PlanState.CANCELLED}),
    PlanState.ACTIVE: frozenset({PlanState.ENDED, PlanState.CANCELLED}),
    PlanState.ENDED: frozenset(),
    PlanState.CANCELLED: frozenset(),
}
# A plan in one of these holds its matter (one plan each) and its instalments' money: what is owed counts them,
# and no link or automatic collection asks for the same money.
PLAN_HOLDING = (PlanState.AWAITING_MANDATE, PlanState.ACTIVE)


class InstalmentState(StrEnum):
    """Where an instalment is on our side; once submitted, its money status is its collection's."""

    SCHEDULED = "scheduled"  # waiting for its date
    SUBMITTED = "submitted"  # a Direct Debit collection was made for it
    CANCELLED = "cancelled"  # the plan was cancelled, or the debt no longer needs it


INSTALMENT_MOVES: Mapping[InstalmentState, frozenset[InstalmentState]] = {
    InstalmentState.SCHEDULED: frozenset({InstalmentState.SUBMITTED, InstalmentState.CANCELLED}),
    InstalmentState.SUBMITTED: frozenset(),
    InstalmentState.CANCELLED: frozenset(),
}

# ------------------------------------------------------------------------------------------------ reminders
REMINDER_DONE = ("sending", "sent", "unknown", "skipped")  # a step in one of these states is never sent (again)

MOVES: Mapping[type[StrEnum], Mapping[Any, frozenset[Any]]] = {
    LinkState: LINK_MOVES, PaymentState: PAYMENT_MOVES, PostingState: POSTING_MOVES,
    CollectionState: COLLECTION_MOVES, PlanState: PLAN_MOVES, InstalmentState: INSTALMENT_MOVES,
}


def sources(target: StrEnum) -> tuple[str, ...]:
    """The states that may move to ``target``."""
    return tuple(state.value for state, targets in MOVES[type(target)].items() if target in targets)


def move(conn: Connection, table: Table, target: StrEnum, *where: ColumnElement[bool],
         from_: tuple[StrEnum, ...] | None = None, params: Mapping[str, Any] | None = None, **values: Any) -> int:
    """Move the rows ``where`` selects to ``target`` (with ``values``), only those in a state that may go there;
    returns how many moved. ``from_`` narrows the states moved from, each of which must be allowed to move;
    ``params`` fill bound parameters of ``where``."""
    allowed = sources(target)
    if from_ is not None:
        wrong = [str(state) for state in from_ if state.value not in allowed]
        if wrong:
            raise IllegalMove(f"{table.name}: {', '.join(wrong)} can never move to {target}")
        allowed = tuple(state.value for state in from_)
    column = table.c.state if "state" in table.c else table.c.status
    query = update(table).where(*where, column.in_(allowed)).values({column.key: target.value, **values})
    return conn.execute(query, dict(params or {})).rowcount
