"""Provider events -> payments in the state store, idempotent and order-proof.

Events are read from a stored cursor; each page's events, their effects and the new cursor are written in ONE
transaction, so a crash re-reads at most one page and duplicates are ignored by (account, event_id).

A payment's status is that of its latest event by the provider's own time (``occurred_at``; the ladder
pending < confirmed < failed < charged_back only breaks ties), so events arriving in any order settle on the same
status. Statuses can go round: a GoCardless payment goes failed -> resubmission_requested -> submitted ->
confirmed when retried, a Stripe dispute that the firm wins is reinstated. A pending event never replaces a
settled status (it says nothing about the money). What the firm's books hold follows the status: confirmed means
posted once, failed or charged back means not posted (reversed if it was).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, select, update

from agent.core.retry import call
from agent.engine.directdebit import apply_event as apply_direct_debit
from agent.state import StateStore
from agent.state.schema import links, payments, postings, provider_cursors, provider_events
from agent.state.statuses import LINK_OPEN, PAYMENT_UNPOSTED, LinkState, PaymentState, move
from agent.state.store import utcnow
from connectors.providers.contract import (
    EventKind,
    LinkStatus,
    PaymentMethod,
    Provider,
    ProviderError,
    ProviderEvent,
)
from postings.outbox import enqueue_payment, enqueue_repost, enqueue_reversal, is_posted

log = logging.getLogger("ledgerlink.payments")

RANK = {PaymentState.PENDING: 0, PaymentState.CONFIRMED: 1, PaymentState.FAILED: 2, PaymentState.CHARGED_BACK: 3}
EVENT_STATUS = {
    EventKind.PAYMENT_PENDING: PaymentState.PENDING,
    EventKind.PAYMENT_CONFIRMED: PaymentState.CONFIRMED,
    EventKind.PAYMENT_FAILED: PaymentState.FAILED,
    EventKind.PAYMENT_CHARGED_BACK: PaymentState.CHARGED_BACK,
}


@dataclass
class PollResult:
    events: int = 0
    new: int = 0
    remainders: list[str] = field(default_factory=list)  # links with a partial payment whose remainder needs a link
    parked: int = 0  # events that could not be read, stored for a retry


@dataclass
class ReconcileResult:
    """What a reconciliation found: states applied from the provider, and payments it does not know."""

    checked: int = 0  # payments and links the provider listed
    applied: int = 0  # of which a state we had missed (a new payment or a new status)
    unknown_at_provider: list[str] = field(default_factory=list)  # our payment ids the provider did not list
    retried: list[str] = field(default_factory=list)  # parked events now read
    remainders: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParkedEvent:
    account: str
    event_id: str
    raw_status: str
    error: str
    occurred_at: dt.datetime
    received_at: dt.datetime


def _link_for(conn: Connection, account: str, ref: str | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    row = conn.execute(select(links).where(links.c.account == account, links.c.provider_ref == ref)).mappings().first()
    return dict(row) if row else None


def apply_event(conn: Connection, account: str, provider: str, event: ProviderEvent, *,
                trust: bool = False) -> tuple[bool, str | None]:
    """Record one event and its effect. Returns (new, link id with a remainder owing after a partial payment)."""
    seen = conn.execute(select(provider_events.c.event_id).where(
        provider_events.c.account == account, provider_events.c.event_id == event.event_id)).first()
    if seen:
        return False, None
    conn.execute(provider_events.insert().values(
        account=account, event_id=event.event_id, kind=event.kind.value, link_ref=event.link_ref,
        payment_ref=event.payment_ref, amount=event.amount, currency=event.currency, raw_status=event.raw_status,
        occurred_at=event.occurred_at, received_at=utcnow(), error=event.error))
    if event.kind is EventKind.UNREADABLE:
        log.warning("parked provider event %s (%s): %s", event.event_id, event.raw_status, event.error)
        return True, None  # parked: listed by parked_events, read again by EventPoller.retry_parked
    if event.method is PaymentMethod.DIRECT_DEBIT and apply_direct_debit(conn, account, event):
        return True, None  # a mandate change or a collection cancelled before any money moved
    link = _link_for(conn, account, event.link_ref)
    if event.kind in (EventKind.LINK_EXPIRED, EventKind.LINK_CANCELLED):
        if link and link["status"] == LinkStatus.OUTSTANDING.value:
            status = LinkState.EXPIRED if event.kind == EventKind.LINK_EXPIRED else LinkState.CANCELLED
            move(conn, links, status, links.c.id == link["id"], closed_at=event.occurred_at, outstanding_key=None,
                 status_reason=f"reported by the provider ({event.raw_status or event.kind.value})")
        return True, None
    return True, _apply_payment(conn, account, provider, event, link, trust)


def _supersedes(status: PaymentState, at: dt.datetime, previous: str, previous_at: dt.datetime) -> bool:
    """Whether an event's status replaces the payment's: the later event by the provider's time wins.

    The same status again (a repeated event, a re-read that reports "now") changes nothing, so a payment keeps the
    time it was paid whatever is read about it later."""
    if status == "pending" or status == previous:
        return False  # pending over a settled status is only information
    if previous == "pending":
        return True
    return (at, RANK[status]) > (previous_at, RANK[PaymentState(previous)])


def _apply_payment(conn: Connection, account: str, provider: str, event: ProviderEvent,
                   link: dict[str, Any] | None, trust: bool) -> str | None:
    status = EVENT_STATUS[event.kind]
    row = conn.execute(select(payments).where(payments.c.account == account,
                                              payments.c.payment_ref == event.payment_ref)).mappings().first()
    relinked = False
    if row is None:
        if event.amount is None or event.currency is None:
            log.warning("event %s for payment %s has no amount; waiting for one that does",
                        event.event_id, event.payment_ref)
            return None
        payment_id = f"pay_{event.payment_ref}"[:32]
        # Client money or not is the link's, fixed when it was sent; a payment with no link of ours takes the
        # account's kind as it is now, once. The payment keeps it for good.
        kind = link["account_kind"] if link and link["account_kind"] else "trust" if trust else "operating"
        trust = kind == "trust"
        conn.execute(payments.insert().values(
            id=payment_id, account=account, provider=provider, payment_ref=event.payment_ref,
            link_id=link["id"] if link else None, amount=event.amount, currency=event.currency, status=status,
            method=event.method.value, status_at=event.occurred_at,
            confirmed_at=event.occurred_at if status == "confirmed" else None, created_at=utcnow(),
            account_kind=kind))
    else:
        payment_id = row["id"]
        if link is not None and row["link_id"] is None:
            # The link is learnt late (GoCardless names a payment's billing request only on the request's
            # fulfilled event, which can come after the payment's own events): allocate again through the link.
            kind = link["account_kind"] or row["account_kind"]
            conn.execute(update(payments).where(payments.c.id == payment_id).values(link_id=link["id"],
                                                                                  account_kind=kind))
            relinked = True
        else:
            kind = row["account_kind"]
        trust = kind == "trust" if kind else trust
        if _supersedes(status, event.occurred_at, row["status"], row["status_at"]):
            # Paid once: a payment confirmed again (a dispute won) keeps the time it was first paid.
            first_paid: dict[str, Any] = ({"confirmed_at": event.occurred_at}
                                          if status == "confirmed" and row["confirmed_at"] is None else {})
            move(conn, payments, status, payments.c.id == payment_id, status_at=event.occurred_at, **first_paid)
        else:
            status = PaymentState(row["status"])  # a late or repeated event never moves a payment back
    remainder = None
    if link and link["status"] in LINK_OPEN and status in PAYMENT_UNPOSTED:
        # Single-use: any payment, full or partial, closes the link.
        paid = event.amount if event.amount is not None else link["amount"]
        short = link["amount"] - paid
        reason = f"partial payment: {short} {link['currency']} still owing" if short > 0 else None
        move(conn, links, LinkState.PAYMENT_RECEIVED, links.c.id == link["id"], closed_at=event.occurred_at,
             outstanding_key=None, status_reason=reason)
        remainder = link["id"] if short > 0 and link["matter_key"] else None
    _settle_books(conn, payment_id, status, relinked, trust)
    return remainder


def _settle_books(conn: Connection, payment_id: str, status: str, relinked: bool, trust: bool) -> None:
    """Make the outbox hold what the status says: confirmed posted exactly once, failed or charged back not.
    A trust account's payment goes to the matter's client ledger (postings.trust)."""
    posted = is_posted(conn, payment_id)
    if status == "confirmed":
        if posted and relinked:
            enqueue_reversal(conn, payment_id, "allocated again to the payment's link")
            posted = is_posted(conn, payment_id)
        if not posted:
            enqueue = enqueue_repost if _has_postings(conn, payment_id) else enqueue_payment
            enqueue(conn, payment_id, trust=trust)
    elif status in ("failed", "charged_back") and posted:
        enqueue_reversal(conn, payment_id, f"payment {status.replace('_', ' ')} at the provider")


def _has_postings(conn: Connection, payment_id: str) -> bool:
    return conn.execute(select(postings.c.id).where(postings.c.payment_id == payment_id).limit(1)).first() is not None


class EventPoller:
    """Reads one account's events from its cursor; the cursor advances only with the stored events."""

    def __init__(self, store: StateStore, provider: Provider, account: str, *, page_size: int = 100,
                 retry_initial: float = 0.5, attempts: int = 5) -> None:
        self.store = store
        self.provider = provider
        self.account = account
        self.page_size = page_size
        self.retry_initial = retry_initial
        self.attempts = attempts  # the service passes 1: it backs a failing account off itself
        self.trust = provider.account.kind == "trust"
        # The cursor as this poller last read or saved it: the service keeps one poller per account, and an idle
        # poll then reads nothing from the store. Behind after another process moved it, it only re-reads
        # events the store already has, which apply_event ignores by event id.
        self._cursor: tuple[str | None] | None = None

    def cursor(self) -> str | None:
        if self._cursor is None:
            with self.store.read() as conn:
                self._cursor = (conn.execute(select(provider_cursors.c.cursor).where(
                    provider_cursors.c.account == self.account)).scalar(),)
        return self._cursor[0]

    def _save_cursor(self, conn: Connection, cursor: str | None) -> None:
        done = conn.execute(update(provider_cursors).where(provider_cursors.c.account == self.account)
                            .values(cursor=cursor, updated_at=utcnow()))
        if done.rowcount == 0:
            conn.execute(provider_cursors.insert().values(account=self.account, cursor=cursor, updated_at=utcnow()))

    def poll(self, *, since: dt.datetime | None = None, from_start: bool = False) -> PollResult:
        """Read every new page. ``from_start`` re-reads the whole history (reconcile) without moving the cursor
        back; ``since`` limits that re-read to events on or after a date."""
        result = PollResult()
        cursor = None if from_start else self.cursor()
        while True:
            page = call(self.provider.events, cursor, self.page_size, attempts=self.attempts,
                        initial=self.retry_initial)
            if not page.events and page.cursor == cursor and not page.has_more:
                return result  # nothing new: an idle poll writes nothing
            with self.store.begin() as conn:
                for event in page.events:
                    if since and event.occurred_at < since:
                        continue
                    new, remainder = apply_event(conn, self.account, self.provider.name, event, trust=self.trust)
                    result.events += 1
                    result.new += new
                    result.parked += new and event.kind is EventKind.UNREADABLE
                    if remainder:
                        result.remainders.append(remainder)
                if not from_start and page.cursor is not None:
                    self._save_cursor(conn, page.cursor)
            if not from_start and page.cursor is not None:
                self._cursor = (page.cursor,)  # after the commit: a rolled-back page is read again
            cursor = page.cursor if page.cursor is not None else cursor
            if not page.has_more:  # a page of events we do not follow is not the end of the feed
                return result

    def retry_parked(self) -> list[str]:
        """Read each parked event again; one now readable is applied (and leaves the parked list)."""
        done = []
        for parked in parked_events(self.store, self.account):
            try:
                event = call(self.provider.event, parked.event_id, attempts=self.attempts,
                             initial=self.retry_initial)
            except ProviderError as exc:
                event = ProviderEvent(parked.event_id, EventKind.UNREADABLE, parked.occurred_at, None, None, None,
                                      None, raw_status=parked.raw_status, error=f"{type(exc).__name__}: {exc}")
            with self.store.begin() as conn:
                if event is not None and event.kind is EventKind.UNREADABLE:
                    conn.execute(update(provider_events).where(
                        provider_events.c.account == self.account, provider_events.c.event_id == parked.event_id,
                    ).values(error=event.error, received_at=utcnow()))
                    continue
                conn.execute(delete(provider_events).where(provider_events.c.account == self.account,
                                                           provider_events.c.event_id == parked.event_id))
                if event is not None:
                    apply_event(conn, self.account, self.provider.name, event, trust=self.trust)
                done.append(parked.event_id)
        return done

    def reconcile(self, since: dt.datetime) -> ReconcileResult:
        """Heal lost events: apply the provider's current state of everything created since ``since``.

        A payment we never heard of is recorded and posted (once: the snapshot's event ids name the state, and the
        books follow the status); a status we missed is applied; our payments the provider did not list are
        reported. Parked events are retried first.
        """
        result = ReconcileResult(retried=self.retry_parked())
        snapshot = call(self.provider.snapshot, since, attempts=self.attempts, initial=self.retry_initial)
        listed = {event.payment_ref for event in snapshot if event.payment_ref}
        with self.store.begin() as conn:
            for event in snapshot:
                new, remainder = apply_event(conn, self.account, self.provider.name, event, trust=self.trust)
                result.checked += 1
                result.applied += new
                if remainder:
                    result.remainders.append(remainder)
            ours = conn.execute(select(payments.c.id, payments.c.payment_ref).where(
                payments.c.account == self.account, payments.c.created_at >= since)).all()
        result.unknown_at_provider = [row.id for row in ours if row.payment_ref not in listed]
        for payment_id in result.unknown_at_provider:
            log.warning("payment %s is not listed by %s for account %s", payment_id, self.provider.name, self.account)
        return result


def parked_events(store: StateStore, account: str | None = None) -> list[ParkedEvent]:
    """Events that could not be read (for ``payments`` listings and the console), oldest first."""
    query = select(provider_events).where(provider_events.c.kind == EventKind.UNREADABLE.value)
    if account is not None:
        query = query.where(provider_events.c.account == account)
    with store.read() as conn:
        rows = conn.execute(query.order_by(provider_events.c.occurred_at)).mappings().all()
    return [ParkedEvent(r["account"], r["event_id"], r["raw_status"] or "", r["error"] or "", r["occurred_at"],
                        r["received_at"]) for r in rows]
