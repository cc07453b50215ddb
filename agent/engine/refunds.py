"""Refunds: money back to a payer at the provider, and its reversal posted into the firm's books exactly once.

A refund is recorded ``requested`` (with who asked) in the same state-store transaction that checks it is no more
than was paid less what was already refunded, so two refunds at once can never both spend the same money. The
provider is then asked under an idempotency key derived from our own refund id, so a retry after a crash or a
timeout returns the same refund instead of paying twice; its result and the reversing postings are written in one
transaction. A refund left ``requested`` (a crash, an outage) is finished by ``resume`` with the same key.

On the audit trail a refund is two entries: ``refund.request`` (amount, reason, by the person who asked) in the
transaction that records it, or one failed entry when it is refused before that (more than is left); and
``refund.complete`` with the provider's answer in the transaction that records the answer (failed when the provider
refused), by the person who asked or, after a crash or an outage, by the refunds job that finished it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Connection, or_, select, update

from agent.core.errors import DataError, LedgerlinkError, RuleError
from agent.core.model import Actor, check_decimals
from agent.core.retry import call
from agent.state import StateStore, audit
from agent.state.schema import Row, payments, refunds
from agent.state.store import utcnow
from connectors.providers.contract import Provider, ProviderError, RefundStatus, pays_out
from postings.outbox import enqueue_refund, refund_room

log = logging.getLogger("ledgerlink.refunds")

REQUESTED = "requested"  # recorded, the provider not yet known to have it
RESUMER = Actor("job", "refunds")  # who finishes a refund left requested


@dataclass(frozen=True)
class RefundView:
    id: str
    payment_id: str
    payment_ref: str
    account: str
    amount: Decimal
    currency: str
    reason: str
    actor: str
    status: str = field(metadata={"description": "requested, pending, succeeded or failed"})
    provider_ref: str | None
    error: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class Refundable:
    """What a payment could still give back: the console's Refund is an action on the payment, not on a posting."""

    payment_id: str
    payment_ref: str
    amount: Decimal
    currency: str
    status: str
    refunded: Decimal = field(metadata={"description": "every refund not failed, requested ones included"})
    left: Decimal = field(metadata={"description": "what a refund may still give back"})


def _view(row: Row) -> RefundView:
    return RefundView(**{f.name: row[f.name] for f in dataclasses.fields(RefundView)})


_DETAILS = select(refunds, payments.c.payment_ref, payments.c.account).join(
    payments, payments.c.id == refunds.c.payment_id)


def refunded(conn: Connection, payment_id: str) -> Decimal:
    """What has been (or is being) refunded of a payment: every refund not failed."""
    amounts = conn.execute(select(refunds.c.amount).where(refunds.c.payment_id == payment_id,
                                                          refunds.c.status != RefundStatus.FAILED.value)).scalars()
    return sum(amounts, Decimal(0))


def _allowed(conn: Connection, payment: Row, amount: Decimal | None) -> Decimal:
    """The amount to refund (None: all that is left), refused above what was paid less what was refunded."""
    currency = payment["currency"]
    done = refunded(conn, payment["id"])
    left = payment["amount"] - done
    try:
        wanted = left if amount is None else check_decimals(amount, currency, field="--amount")
    except DataError as exc:
        raise RuleError(str(exc)) from None
    if wanted <= 0:
        raise RuleError(f"nothing to refund: payment {payment['payment_ref']} of {payment['amount']} {currency} "
                        f"has {left} {currency} left" if left <= 0 else "give a refund amount above 0")
    if wanted > left:
        raise RuleError(f"a refund of {wanted} {currency} is more than is left on payment "
                        f"{payment['payment_ref']}: paid {payment['amount']}, refunded {done}, so at most {left} "
                        f"{currency}; refund {left} or less")
    room = refund_room(conn, payment["id"])
    if wanted > room:
        raise RuleError(f"payment {payment['payment_ref']}: only {room} {currency} of it is posted to "
                        "statements; reallocate its unallocated posting first ('ledgerlink postings list')")
    return wanted


class Refunds:
    """The refund engine; the store and the providers are handed in by the composition root."""

    def __init__(self, store: StateStore, providers: Callable[[str], Provider], *, retry_initial: float = 0.5,
                 attempts: int = 5) -> None:
        self.store = store
        self.providers = providers
        self.retry_initial = retry_initial
        self.attempts = attempts

    def refund(self, payment: str, amount: Decimal | None, reason: str, actor: Actor,
               request_key: str | None = None) -> RefundView:
        """Refund ``amount`` (None: all that is left) of a confirmed payment, by its id or provider ref. The same
        ``request_key`` (an API client's Idempotency-Key) asked again is the same refund, never a second one."""
        return self._complete(self.request(payment, amount, reason, actor, request_key), actor)

    def request(self, payment: str, amount: Decimal | None, reason: str, actor: Actor,
                request_key: str | None = None) -> str:
        """Check and record a refund as requested, in one transaction; returns its id (``resume`` finishes it)."""
        with audit.attempt(self.store, actor, "refund.request", "payment", payment,
                           before={"amount": amount, "reason": reason}) as act:
            return self._request(payment, amount, reason.strip(), actor, act, request_key)

    def _request(self, payment: str, amount: Decimal | None, reason: str, actor: Actor, act: audit.Attempt,
                 request_key: str | None) -> str:
        if not reason:
            raise RuleError("say why the payment is refunded (--reason)")
        keyed = "rf" + hashlib.sha256(request_key.encode()).hexdigest()[:16] if request_key else None
        with self.store.begin() as conn:
            if keyed and conn.execute(select(refunds.c.id).where(refunds.c.id == keyed)).first():
                act.unchanged()  # asked again after a lost answer: the refund already recorded
                return keyed
            row = conn.execute(select(payments).where(or_(payments.c.id == payment, payments.c.payment_ref == payment))
                               .with_for_update()).mappings().first()
            if row is None:
                raise RuleError(f"no payment {payment!r}; 'ledgerlink postings list' shows each posting's payment")
            if row["status"] != "confirmed":
                raise RuleError(f"payment {row['payment_ref']} is {row['status'].replace('_', ' ')}; only a "
                                "confirmed payment can be refunded")
            wanted = _allowed(conn, row, amount)
            refund_id = keyed or "rf" + secrets.token_hex(8)
            now = utcnow()
            conn.execute(refunds.insert().values(
                id=refund_id, payment_id=row["id"], amount=wanted, currency=row["currency"], reason=reason,
                actor=str(actor), status=REQUESTED, idempotency_key=f"ledgerlink-refund-{refund_id}",
                created_at=now, updated_at=now))
            act.target("refund", refund_id)
            act.record(conn, before={"payment": row["payment_ref"], "paid": row["amount"],
                                     "refunded": refunded(conn, row["id"]) - wanted},
                       after={"payment": row["payment_ref"], "amount": wanted, "currency": row["currency"],
                              "reason": reason, "status": REQUESTED})
        log.info("refund %s of %s %s on payment %s requested by %s", refund_id, wanted, row["currency"],
                 row["payment_ref"], actor)
        return refund_id

    def _complete(self, refund_id: str, actor: Actor) -> RefundView:
        """Ask the provider (idempotently) and record its answer with the reversal; TransientError leaves the
        refund requested, for ``resume``."""
        row = self._get(refund_id)
        provider = self.providers(row["account"])
        if not provider.capabilities.payouts:
            self._fail(refund_id, f"{provider.name} cannot refund through Ledgerlink", actor)
            raise RuleError(f"account {row['account']!r} uses {provider.name}, which cannot refund through Ledgerlink")
        try:
            result = call(pays_out(provider).refund, row["payment_ref"], row["amount"], row["currency"], row["reason"],
                          row["idempotency_key"], attempts=self.attempts, initial=self.retry_initial)
        except ProviderError as exc:
            self._fail(refund_id, str(exc), actor)
            raise RuleError(f"{provider.name} refused the refund: {exc}") from None
        with self.store.begin() as conn:
            done = conn.execute(update(refunds).where(refunds.c.id == refund_id, refunds.c.status == REQUESTED)
                                .values(status=result.status.value, provider_ref=result.ref, updated_at=utcnow()))
            if done.rowcount and result.status is not RefundStatus.FAILED:
                enqueue_refund(conn, row["payment_id"], refund_id, row["amount"], f"refunded: {row['reason']}")
            if done.rowcount:
                failed = result.status is RefundStatus.FAILED
                audit.record(conn, actor, "refund.complete", "refund", refund_id, before={"status": REQUESTED},
                             after={"status": result.status.value, "provider_ref": result.ref},
                             outcome="failed" if failed else "ok", error="the provider failed it" if failed else None)
        return _view(self._get(refund_id))

    def _fail(self, refund_id: str, error: str, actor: Actor) -> None:
        """The provider refused: the refund failed, and that is its one failed entry."""
        with self.store.begin() as conn:
            done = conn.execute(update(refunds).where(refunds.c.id == refund_id, refunds.c.status == REQUESTED)
                                .values(status=RefundStatus.FAILED.value, error=error, updated_at=utcnow()))
            if done.rowcount:
                audit.record(conn, actor, "refund.complete", "refund", refund_id, before={"status": REQUESTED},
                             after={"status": RefundStatus.FAILED.value}, outcome="failed", error=error)

    def _get(self, refund_id: str) -> Row:
        with self.store.read() as conn:
            row = conn.execute(_DETAILS.where(refunds.c.id == refund_id)).mappings().first()
        if row is None:
            raise RuleError(f"no refund {refund_id}")
        return row

    def resume(self) -> int:
        """Finish refunds left requested by a crash or an outage, under their own keys; returns how many."""
        with self.store.read() as conn:
            waiting = conn.execute(select(refunds.c.id).where(refunds.c.status == REQUESTED)
                                   .order_by(refunds.c.created_at)).scalars().all()
        finished = 0
        for refund_id in waiting:
            try:
                self._complete(refund_id, RESUMER)
                finished += 1
            except LedgerlinkError as exc:
                log.warning("refund %s: %s", refund_id, exc)
        return finished

    def refundable(self, payment: str) -> Refundable:
        """A payment (by id or provider ref) with what was refunded and what is left to refund."""
        with self.store.read() as conn:
            row = conn.execute(select(payments).where(or_(payments.c.id == payment,
                                                          payments.c.payment_ref == payment))).mappings().first()
            if row is None:
                raise RuleError(f"no payment {payment!r}; 'ledgerlink payments list' shows the payments")
            done = refunded(conn, row["id"])
        left = row["amount"] - done if row["status"] == "confirmed" else Decimal(0)
        return Refundable(row["id"], row["payment_ref"], row["amount"], row["currency"], row["status"], done, left)

    def listing(self, payment: str | None = None) -> list[RefundView]:
        query = _DETAILS.order_by(refunds.c.created_at)
        if payment:
            query = query.where(or_(payments.c.id == payment, payments.c.payment_ref == payment))
        with self.store.read() as conn:
            return [_view(r) for r in conn.execute(query).mappings()]
