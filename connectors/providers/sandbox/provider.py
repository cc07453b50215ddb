"""The embedded offline provider: what the agent talks to, over the state in ``<home>/sandbox.db`` (world.py)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import Field

from agent.core.errors import ConfigurationError, DataError
from agent.core.model import MerchantAccount, check_decimals
from connectors.plugins import PluginOptions
from connectors.providers.contract import (
    SETTLED_MANDATES,
    CancelRefused,
    Capabilities,
    Collection,
    CollectionCancelRefused,
    CollectionStatus,
    DirectDebitProvider,
    EventKind,
    EventPage,
    LinkNotFound,
    LinkSpec,
    LinkStatus,
    Mandate,
    MandatePayer,
    MandateSetup,
    MandateStatus,
    PaymentMethod,
    Payout,
    PayoutItem,
    PayoutItemKind,
    PayoutProvider,
    PayoutStatus,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderLink,
    Refund,
    RefundStatus,
)
from connectors.providers.sandbox.money import pay_out_lines, register
from connectors.providers.sandbox.money import refund as refund_payment
from connectors.providers.sandbox.world import (
    _COLLECTION_MOVES,
    COLLECTABLE_MANDATES,
    DEFAULT_BASE,
    ChangeWatch,
    _add_event,
    _collection_row,
    _db,
    _dd_event,
    _expire,
    _iso,
    _link_row,
    _mandate_row,
    _move_collection,
    _now,
    _to_collection,
    _to_link,
    next_expiry,
    pay_out,
    set_mandate,
)

_PAYMENT_KIND = {
    "pending": EventKind.PAYMENT_PENDING,
    "confirmed": EventKind.PAYMENT_CONFIRMED,
    "failed": EventKind.PAYMENT_FAILED,
    "charged_back": EventKind.PAYMENT_CHARGED_BACK,
}
_COLLECTION_KIND = {
    CollectionStatus.PENDING_CUSTOMER_APPROVAL: EventKind.PAYMENT_PENDING,
    CollectionStatus.PENDING_SUBMISSION: EventKind.PAYMENT_PENDING,
    CollectionStatus.SUBMITTED: EventKind.PAYMENT_PENDING,
    CollectionStatus.CONFIRMED: EventKind.PAYMENT_CONFIRMED,
    CollectionStatus.PAID_OUT: EventKind.PAYMENT_CONFIRMED,
    CollectionStatus.FAILED: EventKind.PAYMENT_FAILED,
    CollectionStatus.CHARGED_BACK: EventKind.PAYMENT_CHARGED_BACK,
    CollectionStatus.CANCELLED: EventKind.COLLECTION_CANCELLED,
    CollectionStatus.CUSTOMER_APPROVAL_DENIED: EventKind.COLLECTION_CANCELLED,
}


def _to_event(row: sqlite3.Row) -> ProviderEvent:
    return ProviderEvent(
        event_id=str(row["id"]),
        kind=EventKind(row["kind"]),
        occurred_at=dt.datetime.fromisoformat(row["occurred_at"]),
        link_ref=row["link_ref"],
        payment_ref=row["payment_ref"],
        amount=Decimal(row["amount"]) if row["amount"] is not None else None,
        currency=row["currency"],
        method=PaymentMethod(row["method"]),
        raw_status=row["raw_status"],
        mandate_ref=row["mandate_ref"],
    )


class SandboxOptions(PluginOptions):
    """A sandbox account's ``options``."""

    payout_fees: Literal["gross", "net"] = Field(
        default="gross",
        description="gross pays this account out in full and takes its fees from the fees_account's payout (the "
        "compliant set-up for trust money); net deducts them from this account's own payout.",
    )


class SandboxProvider(Provider, DirectDebitProvider, PayoutProvider):
    """Offline provider: state in ``<home>/sandbox.db``, links paid at ``{api_base}/pay/<ref>``."""

    name: ClassVar[str] = "sandbox"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=(PaymentMethod.BANK, PaymentMethod.CARD, PaymentMethod.DIRECT_DEBIT),
        max_expiry=dt.timedelta(days=90),
        direct_debit=True,
        payouts=True,
    )
    Options: ClassVar[type[PluginOptions]] = SandboxOptions
    options: SandboxOptions  # set by Provider.__init__ from the account's options

    def __init__(self, account: MerchantAccount, credentials: str | None, *, home: str | None = None) -> None:
        super().__init__(account, credentials, home=home)
        if home is None:
            raise ConfigurationError("the sandbox provider needs a home directory for sandbox.db")
        self.home: str = home  # the contract allows None; refused above, so every _db(self.home) has a folder
        self.base = (account.api_base or DEFAULT_BASE).rstrip("/")
        with _db(self.home) as conn:
            register(conn, account, self.options.payout_fees)
        self._watch = ChangeWatch(home)
        # After a read that reached the end of the feed: its cursor, the file's data_version before it, and the
        # next expiry. The same cursor, the same version and no expiry due: nothing new, without opening the file.
        self._quiet: tuple[str | None, int, dt.datetime | None] | None = None

    def create_link(self, spec: LinkSpec) -> ProviderLink:
        try:
            amount = check_decimals(spec.amount, spec.currency)
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        if amount <= 0:
            raise ProviderError(f"amount must be above 0, not {amount}")
        now = _now()
        expires_at = spec.expires_at if spec.expires_at.tzinfo else spec.expires_at.replace(tzinfo=dt.UTC)
        if not now < expires_at <= now + self.capabilities.max_expiry:
            raise ProviderError(f"expires_at must be in the future and within {self.capabilities.max_expiry.days} days")
        with _db(self.home) as conn:
            existing = conn.execute(
                "SELECT * FROM links WHERE account = ? AND idempotency_key = ?",
                (self.account.name, spec.idempotency_key),
            ).fetchone()
            if existing is not None:
                if Decimal(existing["amount"]) != amount or existing["currency"] != spec.currency:
                    raise ProviderError("idempotency key reused with a different amount or currency")
                return _to_link(existing)
            ref = secrets.token_urlsafe(16)
            conn.execute(
                "INSERT INTO links (ref, account, link_id, idempotency_key, amount, currency, description,"
                " reference, firm_name, matter_number, invoice_numbers, disclaimer,"
                " payer_name, payer_email, url, status, expires_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ref,
                    self.account.name,
                    spec.link_id,
                    spec.idempotency_key,
                    str(amount),
                    spec.currency,
                    spec.description,
                    spec.reference,
                    spec.firm_name,
                    spec.matter_number,
                    "\n".join(spec.invoice_numbers),
                    spec.disclaimer,
                    spec.payer_name,
                    spec.payer_email,
                    f"{self.base}/pay/{ref}",
                    LinkStatus.OUTSTANDING.value,
                    _iso(expires_at),
                    _iso(now),
                ),
            )
            return _to_link(_link_row(conn, ref))

    def get_link(self, ref: str) -> ProviderLink:
        with _db(self.home) as conn:
            _expire(conn, _now())
            return _to_link(_link_row(conn, ref))

    def cancel_link(self, ref: str) -> ProviderLink:
        with _db(self.home) as conn:
            _expire(conn, _now())
            row = _link_row(conn, ref)
            if row["status"] == LinkStatus.CANCELLED:
                return _to_link(row)
            if row["status"] != LinkStatus.OUTSTANDING:
                raise CancelRefused(f"sandbox link {ref} is {row['status']}", _to_link(row))
            conn.execute("UPDATE links SET status = ? WHERE ref = ?", (LinkStatus.CANCELLED.value, ref))
            _add_event(conn, row, EventKind.LINK_CANCELLED)
            return _to_link(_link_row(conn, ref))

    def events(self, cursor: str | None, limit: int = 100) -> EventPage:
        """Events after ``cursor`` (the last event's row id): the sandbox writes them in one file, in order."""
        try:
            after = int(cursor) if cursor is not None else 0
        except ValueError:
            raise ProviderError(f"not a sandbox event cursor: {cursor!r}") from None
        version, now = self._watch.version(), _now()
        if self._quiet is not None and self._quiet[:2] == (cursor, version):
            expiry = self._quiet[2]
            if expiry is None or now < expiry:
                return EventPage([], cursor, has_more=False)
        with _db(self.home) as conn:
            _expire(conn, now)
            rows = conn.execute(
                "SELECT * FROM events WHERE account = ? AND id > ? ORDER BY id LIMIT ?",
                (self.account.name, after, limit + 1),
            ).fetchall()
            expiry = next_expiry(conn)
        page = rows[:limit]
        events = [_to_event(row) for row in page]
        self._quiet = (cursor, version, expiry) if not rows else None
        return EventPage(events, str(page[-1]["id"]) if page else cursor, has_more=len(rows) > limit)

    def event(self, event_id: str) -> ProviderEvent | None:
        with _db(self.home) as conn:
            row = conn.execute(
                "SELECT * FROM events WHERE account = ? AND id = ?", (self.account.name, event_id)
            ).fetchone()
        if row is None:
            raise LinkNotFound(f"sandbox event {event_id!r} does not exist")
        return _to_event(row)

    def snapshot(self, since: dt.datetime) -> list[ProviderEvent]:
        """Payments of links that could still be paid since ``since``, collections created since, as they are."""
        now = _now()
        out: list[ProviderEvent] = []
        with _db(self.home) as conn:
            _expire(conn, now)
            links = conn.execute(
                "SELECT * FROM links WHERE account = ? AND created_at >= ?",
                (self.account.name, _iso(since - self.capabilities.max_expiry)),
            ).fetchall()
            for link in links:
                if link["status"] in (LinkStatus.CANCELLED, LinkStatus.EXPIRED):
                    cancelled = link["status"] == LinkStatus.CANCELLED
                    kind = EventKind.LINK_CANCELLED if cancelled else EventKind.LINK_EXPIRED
                    out.append(ProviderEvent(f"reconcile:{link['ref']}:{link['status']}", kind, now, link["ref"],
                                             None, None, None, raw_status=link["status"]))
                for pay_row in conn.execute("SELECT * FROM payments WHERE link_ref = ?", (link["ref"],)):
                    out.append(ProviderEvent(
                        f"reconcile:{pay_row['payment_ref']}:{pay_row['status']}", _PAYMENT_KIND[pay_row["status"]],
                        now, link["ref"], pay_row["payment_ref"], Decimal(pay_row["amount"]), pay_row["currency"],
                        PaymentMethod(pay_row["method"]), raw_status=pay_row["status"]))
            for coll in conn.execute(
                "SELECT * FROM collections WHERE account = ? AND created_at >= ?",
                (self.account.name, _iso(since - dt.timedelta(days=1))),
            ):
                out.append(ProviderEvent(
                    f"reconcile:{coll['ref']}:{coll['status']}", _COLLECTION_KIND[coll["status"]], now, None,
                    coll["ref"], Decimal(coll["amount"]), coll["currency"], PaymentMethod.DIRECT_DEBIT,
                    raw_status=coll["status"], mandate_ref=coll["mandate_ref"]))
        return out

    # --- Direct Debit -----------------------------------------------------------------------------------------

    def setup_mandate(self, payer: MandatePayer) -> MandateSetup:
        """A mandate awaiting the payer; set_mandate(home, ref, "active") is the payer finishing the flow. A plan's
        schedule is kept whole (JSON), for the mandate page to show as a table."""
        with _db(self.home) as conn:
            row = conn.execute(
                "SELECT * FROM mandates WHERE account = ? AND idempotency_key = ?",
                (self.account.name, payer.idempotency_key),
            ).fetchone()
            ref = row["ref"] if row is not None else "MD" + secrets.token_hex(6).upper()
            if row is None:
                conn.execute(
                    "INSERT INTO mandates (ref, account, payer_key, payer_name, payer_email, idempotency_key,"
                    " status, created_at, schedule) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ref,
                        self.account.name,
                        payer.key,
                        payer.name,
                        payer.email,
                        payer.idempotency_key,
                        MandateStatus.PENDING_CUSTOMER_APPROVAL.value,
                        _iso(_now()),
                        json.dumps([[d.due_on.isoformat(), str(d.amount), d.currency] for d in payer.schedule]),
                    ),
                )
        return MandateSetup(ref=ref, url=f"{self.base}/mandate/{ref}")

    def get_mandate(self, ref: str) -> Mandate:
        with _db(self.home) as conn:
            row = _mandate_row(conn, ref)
        return Mandate(ref=ref, status=MandateStatus(row["status"]), raw_status=row["status"])

    def create_collection(
        self,
        mandate_ref: str,
        amount: Decimal,
        currency: str,
        charge_date: dt.date | None,
        description: str,
        idempotency_key: str,
    ) -> Collection:
        try:
            amount = check_decimals(amount, currency)
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        if amount <= 0:
            raise ProviderError(f"amount must be above 0, not {amount}")
        today = _now().date()
        charge_date = charge_date or today
        if charge_date < today:
            raise ProviderError(f"charge_date {charge_date} is in the past")
        with _db(self.home) as conn:
            existing = conn.execute(
                "SELECT * FROM collections WHERE account = ? AND idempotency_key = ?",
                (self.account.name, idempotency_key),
            ).fetchone()
            if existing is not None:
                if Decimal(existing["amount"]) != amount or existing["currency"] != currency:
                    raise ProviderError("idempotency key reused with a different amount or currency")
                return _to_collection(existing)
            mandate = _mandate_row(conn, mandate_ref)
            if mandate["status"] not in COLLECTABLE_MANDATES:
                raise ProviderError(f"sandbox mandate {mandate_ref} is {mandate['status']}: mandate_is_inactive")
            ref = "PM" + secrets.token_hex(6).upper()
            conn.execute(
                "INSERT INTO collections (ref, account, mandate_ref, amount, currency, charge_date, description,"
                " idempotency_key, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ref,
                    self.account.name,
                    mandate_ref,
                    str(amount),
                    currency,
                    charge_date.isoformat(),
                    description,
                    idempotency_key,
                    CollectionStatus.PENDING_SUBMISSION.value,
                    _iso(_now()),
                ),
            )
            row = _collection_row(conn, ref)
            _dd_event(
                conn,
                self.account.name,
                EventKind.PAYMENT_PENDING,
                CollectionStatus.PENDING_SUBMISSION.value,
                mandate_ref=mandate_ref,
                collection=row,
            )
            return _to_collection(row)

    def get_collection(self, ref: str) -> Collection:
        with _db(self.home) as conn:
            return _to_collection(_collection_row(conn, ref))

    def cancel_collection(self, ref: str) -> Collection:
        with _db(self.home) as conn:
            row = _collection_row(conn, ref)
            if row["status"] == CollectionStatus.CANCELLED:
                return _to_collection(row)
            if row["status"] not in _COLLECTION_MOVES[CollectionStatus.CANCELLED][0]:
                raise CollectionCancelRefused(
                    f"sandbox collection {ref} is {row['status']}: cancellation_failed", _to_collection(row)
                )
            return _to_collection(_move_collection(conn, ref, CollectionStatus.CANCELLED))

    def cancel_mandate(self, ref: str) -> Mandate:
        """As when the payer cancels it (world.set_mandate): its collections not yet submitted are cancelled, and
        a setup not finished can no longer be (the mandate page says it is cancelled)."""
        if self.get_mandate(ref).status not in SETTLED_MANDATES:
            set_mandate(self.home, ref, MandateStatus.CANCELLED)
        return self.get_mandate(ref)



    # --- payouts and refunds (sandbox/money.py) ----------------------------------------------------------------

    def payouts(self, since: dt.datetime) -> list[Payout]:
        """Every payout of this account created at or after ``since``, oldest first; the days before today are
        paid out first, as a daily payout schedule would have."""
        now = _now()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        with _db(self.home) as conn:
            pay_out_lines(conn, _iso(midnight), now)
            rows = conn.execute(
                "SELECT * FROM payouts WHERE account = ? AND created_at >= ? ORDER BY created_at, ref",
                (self.account.name, _iso(since)),
            ).fetchall()
        return [
            Payout(ref=row["ref"], amount=Decimal(row["amount"]), currency=row["currency"],
                   status=PayoutStatus(row["status"]), created_at=dt.datetime.fromisoformat(row["created_at"]),
                   arrival_date=dt.date.fromisoformat(row["arrival_date"]), bank_reference=row["bank_reference"],
                   raw_status=row["status"])
            for row in rows
        ]

    def pay_out_now(self) -> list[str]:
        """Pay out every sandbox account's settled balance now (a demo need not wait for midnight); the new
        payouts' refs."""
        return pay_out(self.home)

    def payout_items(self, payout_ref: str) -> list[PayoutItem]:
        with _db(self.home) as conn:
            if conn.execute("SELECT 1 FROM payouts WHERE ref = ? AND account = ?",
                            (payout_ref, self.account.name)).fetchone() is None:
                raise ProviderError(f"sandbox payout {payout_ref!r} does not exist for account {self.account.name}")
            rows = conn.execute("SELECT * FROM balance WHERE payout_ref = ? ORDER BY id", (payout_ref,)).fetchall()
        return [PayoutItem(kind=PayoutItemKind(row["kind"]), amount=Decimal(row["amount"]),
                           payment_ref=row["payment_ref"], ref=row["ref"], raw_type=row["raw_type"]) for row in rows]

    def refund(self, payment_ref: str, amount: Decimal, currency: str, reason: str,
               idempotency_key: str) -> Refund:
        try:
            amount = check_decimals(amount, currency)
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        with _db(self.home) as conn:
            row = refund_payment(conn, self.account.name, payment_ref, amount, currency, reason, idempotency_key,
                                 _iso(_now()))
        return Refund(ref=row["ref"], payment_ref=row["payment_ref"], amount=Decimal(row["amount"]),
                      currency=row["currency"], status=RefundStatus(row["status"]),
                      created_at=dt.datetime.fromisoformat(row["created_at"]), raw_status=row["status"])

    def close(self) -> None:
        self._watch.close()
