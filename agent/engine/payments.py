"""Provider events -> payments in the state store, idempotent and order-proof.

Events are read from a stored cursor; each page's events, their effects and the new cursor are written in ONE
transaction, so a crash re-reads at most one page and duplicates are ignored by (account, event_id). A payment
only moves up its ladder (pending < confirmed < failed < charged_back), so events arriving out of order are
harmless. Only a confirmed payment is postable; a failure or chargeback after confirmation is reversed.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from agent.core.retry import call
from agent.engine.directdebit import apply_event as apply_direct_debit
from agent.state import StateStore
from agent.state.schema import links, payments, provider_cursors, provider_events
from agent.state.store import utcnow
from connectors.providers.contract import EventKind, LinkStatus, PaymentMethod, Provider, ProviderEvent
from postings.outbox import enqueue_payment, enqueue_reversal

log = logging.getLogger("ledgerlink.payments")

RANK = {"pending": 0, "confirmed": 1, "failed": 2, "charged_back": 3}
EVENT_STATUS = {
    EventKind.PAYMENT_PENDING: "pending",
    EventKind.PAYMENT_CONFIRMED: "confirmed",
    EventKind.PAYMENT_FAILED: "failed",
    EventKind.PAYMENT_CHARGED_BACK: "charged_back",
}


@dataclass
class PollResult:
    events: int = 0
    new: int = 0
    remainders: list[str] | None = None  # link ids with a partial payment whose remainder needs a new link


def _link_for(conn: Connection, account: str, ref: str | None) -> dict | None:
    if ref is None:
        return None
    row = conn.execute(select(links).where(links.c.account == account, links.c.provider_ref == ref)).mappings().first()
    return dict(row) if row else None


def apply_event(conn: Connection, account: str, provider: str, event: ProviderEvent) -> tuple[bool, str | None]:
    """Record one event and its effect. Returns (new, link id with a remainder owing after a partial payment)."""
    seen = conn.execute(select(provider_events.c.event_id).where(
        provider_events.c.account == account, provider_events.c.event_id == event.event_id)).first()
    if seen:
        return False, None
    conn.execute(provider_events.insert().values(
        account=account, event_id=event.event_id, kind=event.kind.value, link_ref=event.link_ref,
        payment_ref=event.payment_ref, amount=event.amount, currency=event.currency, raw_status=event.raw_status,
        occurred_at=event.occurred_at, received_at=utcnow()))
    if event.method is PaymentMethod.DIRECT_DEBIT and apply_direct_debit(conn, account, event):
        return True, None  # a mandate change or a collection cancelled before any money moved
    link = _link_for(conn, account, event.link_ref)
    if event.kind in (EventKind.LINK_EXPIRED, EventKind.LINK_CANCELLED):
        if link and link["status"] == LinkStatus.OUTSTANDING.value:
            status = LinkStatus.EXPIRED if event.kind == EventKind.LINK_EXPIRED else LinkStatus.CANCELLED
            conn.execute(update(links).where(links.c.id == link["id"]).values(
                status=status.value, closed_at=event.occurred_at, outstanding_key=None,
                status_reason=f"reported by the provider ({event.raw_status or event.kind.value})"))
        return True, None
    return True, _apply_payment(conn, account, provider, event, link)


def _apply_payment(conn: Connection, account: str, provider: str, event: ProviderEvent,
                   link: dict | None) -> str | None:
    status = EVENT_STATUS[event.kind]
    row = conn.execute(select(payments).where(payments.c.account == account,
                                              payments.c.payment_ref == event.payment_ref)).mappings().first()
    if row is None:
        if event.amount is None or event.currency is None:
            log.warning("event %s for payment %s has no amount; waiting for one that does",
                        event.event_id, event.payment_ref)
            return None
        payment_id = f"pay_{event.payment_ref}"[:32]
        conn.execute(payments.insert().values(
            id=payment_id, account=account, provider=provider, payment_ref=event.payment_ref,
            link_id=link["id"] if link else None, amount=event.amount, currency=event.currency, status=status,
            method=event.method.value, status_at=event.occurred_at,
            confirmed_at=event.occurred_at if status == "confirmed" else None, created_at=utcnow()))
        previous = None
    else:
        payment_id, previous = row["id"], row["status"]
        if RANK[status] <= RANK[previous]:
            return None  # a late or repeated event never moves a payment back
        conn.execute(update(payments).where(payments.c.id == payment_id).values(
            status=status, status_at=event.occurred_at,
            **({"confirmed_at": event.occurred_at} if status == "confirmed" else {})))
    remainder = None
    if status in ("pending", "confirmed") and link and link["status"] in ("creating", "outstanding"):
        # Single-use: any payment, full or partial, closes the link.
        paid = event.amount if event.amount is not None else link["amount"]
        short = link["amount"] - paid
        reason = f"partial payment: {short} {link['currency']} still owing" if short > 0 else None
        conn.execute(update(links).where(links.c.id == link["id"]).values(
            status=LinkStatus.PAYMENT_RECEIVED.value, closed_at=event.occurred_at, outstanding_key=None,
            status_reason=reason))
        remainder = link["id"] if short > 0 and link["matter_key"] else None
    if status == "confirmed":
        enqueue_payment(conn, payment_id)
    elif status in ("failed", "charged_back") and previous == "confirmed":
        enqueue_reversal(conn, payment_id, f"payment {status.replace('_', ' ')} at the provider")
    return remainder


class EventPoller:
    """Reads one account's events from its cursor; the cursor advances only with the stored events."""

    def __init__(self, store: StateStore, provider: Provider, account: str, *, page_size: int = 100,
                 retry_initial: float = 0.5) -> None:
        self.store = store
        self.provider = provider
        self.account = account
        self.page_size = page_size
        self.retry_initial = retry_initial

    def cursor(self) -> str | None:
        with self.store.read() as conn:
            return conn.execute(select(provider_cursors.c.cursor).where(
                provider_cursors.c.account == self.account)).scalar()

    def _save_cursor(self, conn: Connection, cursor: str | None) -> None:
        done = conn.execute(update(provider_cursors).where(provider_cursors.c.account == self.account)
                            .values(cursor=cursor, updated_at=utcnow()))
        if done.rowcount == 0:
            conn.execute(provider_cursors.insert().values(account=self.account, cursor=cursor, updated_at=utcnow()))

    def poll(self, *, since: dt.datetime | None = None, from_start: bool = False) -> PollResult:
        """Read every new page. ``from_start`` re-reads the whole history (reconcile) without moving the cursor
        back; ``since`` limits that re-read to events on or after a date."""
        result = PollResult(remainders=[])
        cursor = None if from_start else self.cursor()
        while True:
            page = call(self.provider.events, cursor, self.page_size, initial=self.retry_initial)
            with self.store.begin() as conn:
                for event in page.events:
                    if since and event.occurred_at < since:
                        continue
                    new, remainder = apply_event(conn, self.account, self.provider.name, event)
                    result.events += 1
                    result.new += new
                    if remainder:
                        result.remainders.append(remainder)
                if not from_start and page.cursor is not None:
                    self._save_cursor(conn, page.cursor)
            cursor = page.cursor if page.cursor is not None else cursor
            if not page.has_more or not page.events:
                return result
