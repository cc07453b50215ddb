"""Stripe single-use Checkout Sessions; the link ref is the session id, payments are learnt from /v1/events.

Stripe lists newest first. Events are read forward from a time with ``created[gte]`` and ``starting_after``
paging (connectors.providers.cursor), not by ``ending_before=<last id>``: that returns only the page adjacent to
the id (stripe-python ``_list_object.py`` ``previous_page``), and an event that becomes visible after newer ones
would be behind the cursor for good.

Payment plans (issue 27) ride the Direct Debit contract on a saved card (docs.stripe.com/payments/save-and-reuse
?platform=checkout): ``setup_mandate`` makes a Customer and a Checkout Session in ``setup`` mode for it; the
"mandate" is the SetupIntent the finished session holds (``seti_``), from which the customer and the card are read
when charging. A card cannot be held until a date (``holds_collections`` False): ``create_collection`` confirms a
PaymentIntent off-session at once, under the instalment's idempotency key, with the collection's key in its
metadata, which is how its events are told from those of Checkout's own PaymentIntents (a paid link, whose
metadata carries link_id and no collection key). The mapping onto the contract's words is MANDATE_STATUS /
COLLECTION_STATUS below; events carry the mapped word in raw_status, as the engine reads it.

Idempotency (docs.stripe.com/idempotency; stripe-python ``_http_client.py`` ``_should_retry``): the first answer
for a key, a 500 included, is replayed for 24 hours, and a request made while another with the same key is in
flight gets 409. So a replayed 5xx is recovered from by finding the session the link may already have, else by
creating under a derived key; a 409 is transient.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import stripe
from pydantic import Field

from agent.core.errors import DataError, TransientError
from agent.core.model import MerchantAccount, from_minor, to_minor
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
    InvalidSignature,
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
    RefundRefused,
    RefundStatus,
    clip,
    schedule_text,
)
from connectors.providers.cursor import Position, pages, read_forward
from connectors.providers.gocardless import retry_after

if TYPE_CHECKING:
    from stripe.params import CustomerCreateParams, PaymentIntentCreateParams, RefundCreateParams
    from stripe.params.checkout import SessionCreateParams, SessionCreateParamsLineItemPriceDataProductData

T = TypeVar("T")

EVENT_TYPES = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.dispute.created",
    "charge.dispute.funds_reinstated",  # a dispute the firm won: the money is back (docs.stripe.com/disputes)
    # Saved cards and their charges (docs.stripe.com/api/events/types): a plan's instalments.
    "payment_intent.processing",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_method.detached",
)
# A setup session and its SetupIntent (stripe-python _checkout/_session.py status open/complete/expired;
# _setup_intent.py status) as the contract's mandate: open waits for the payer; complete with its SetupIntent
# succeeded is a card that can be charged; an expired session was never finished; a SetupIntent canceled, or
# succeeded but its card detached from the customer (POST /v1/payment_methods/{id}/detach, payment_method.detached),
# can be charged no more. requires_* / processing: the payer has not finished authenticating the card.
SESSION_MANDATE = {"open": MandateStatus.PENDING_CUSTOMER_APPROVAL, "expired": MandateStatus.EXPIRED}
SETUP_MANDATE = {
    "succeeded": MandateStatus.ACTIVE,
    "canceled": MandateStatus.CANCELLED,
    "requires_payment_method": MandateStatus.PENDING_CUSTOMER_APPROVAL,
    "requires_confirmation": MandateStatus.PENDING_CUSTOMER_APPROVAL,
    "requires_action": MandateStatus.PENDING_CUSTOMER_APPROVAL,
    "processing": MandateStatus.PENDING_CUSTOMER_APPROVAL,
}
# A PaymentIntent we create (confirm=true, off_session=true) as a collection (stripe-python _payment_intent.py;
# docs.stripe.com/payments/paymentintents/lifecycle): processing is with the card network (submitted); succeeded
# is collected (confirmed; charged_back once its charge is disputed); requires_payment_method after our confirm is
# a decline (failed: "if the payment attempt fails ... the PaymentIntent's status returns to
# requires_payment_method"); canceled is cancelled; requires_action: the card's bank asks the payer to
# authenticate. requires_confirmation and requires_capture never arise for an intent confirmed with automatic
# capture, and are reported unreadable rather than guessed.
COLLECTION_STATUS = {
    "processing": CollectionStatus.SUBMITTED,
    "succeeded": CollectionStatus.CONFIRMED,
    "requires_payment_method": CollectionStatus.FAILED,
    "canceled": CollectionStatus.CANCELLED,
    "requires_action": CollectionStatus.PENDING_CUSTOMER_APPROVAL,
}
INTENT_EVENTS = {
    "payment_intent.processing": EventKind.PAYMENT_PENDING,
    "payment_intent.succeeded": EventKind.PAYMENT_CONFIRMED,
    "payment_intent.payment_failed": EventKind.PAYMENT_FAILED,
    "payment_intent.canceled": EventKind.COLLECTION_CANCELLED,
}
COLLECTION_KEY = "ledgerlink_collection"  # PaymentIntent metadata: the collection's idempotency key (ours)
MANDATE_KEY = "ledgerlink_mandate"  # PaymentIntent metadata: the SetupIntent (our mandate ref) it charged
CHARGE_DATE_KEY = "charge_date"
DESCRIPTION_MAX = 1000  # PaymentIntent description (stripe/openapi spec3.json maxLength)
# Hosted Checkout requires success_url (only embedded ui_mode may omit it: stripe/stripe-node issue 1944, Stripe
# staff; stripe-python params/checkout/_session_create_params.py). Without an account's own page, the payer comes
# back to the session's page, which Stripe shows as complete.
DEFAULT_SUCCESS_URL = "https://checkout.stripe.com/c/pay/{CHECKOUT_SESSION_ID}"
SESSION_LIFETIME = dt.timedelta(hours=24)
# Length limits in Stripe's API reference (docs.stripe.com/api/checkout/sessions/create, /api/metadata).
CUSTOM_TEXT_MAX = 1200  # custom_text[submit][message]: a link's disclaimer, a saved card's plan
CLIENT_REFERENCE_MAX = 200  # client_reference_id
METADATA_VALUE_MAX = 500
# A dispute's balance_transactions are "zero, one, or two balance transactions that show funds withdrawn and
# reinstated" (stripe-python _dispute.py): an inquiry (warning_* statuses) moves no money.
# Payout statuses (stripe-python _payout.py): pending, in_transit, paid, failed, canceled.
PAYOUT_STATUS = {
    "pending": PayoutStatus.PENDING,
    "in_transit": PayoutStatus.PENDING,
    "paid": PayoutStatus.PAID,
    "failed": PayoutStatus.FAILED,
    "canceled": PayoutStatus.FAILED,
}
# Balance transaction types (stripe-python _balance_transaction.py; docs.stripe.com/reports/balance-transaction-
# types): ``amount`` is the gross, signed ("a negative value represents funds sent to another party"), ``fee`` what
# Stripe took on top (``fee_details`` breaks it into stripe_fee, application_fee and tax) and ``net`` = amount -
# fee. A dispute's withdrawal and reinstatement are ``adjustment``s told apart by ``reporting_category`` (dispute,
# dispute_reversal: docs.stripe.com/reports/reporting-categories). The ``payout`` transaction is the payout itself
# (minus its amount) and is no line of it. Any other type is kept, signed, as an adjustment.
TRANSACTION_KIND = {
    "charge": PayoutItemKind.PAYMENT,
    "payment": PayoutItemKind.PAYMENT,
    "refund": PayoutItemKind.REFUND,
    "payment_refund": PayoutItemKind.REFUND,
    "payment_failure_refund": PayoutItemKind.CHARGEBACK,  # a bank debit that failed after it was credited
    "stripe_fee": PayoutItemKind.FEE,
    "stripe_fx_fee": PayoutItemKind.FEE,
    "tax_fee": PayoutItemKind.FEE,
    "application_fee": PayoutItemKind.FEE,
}
CATEGORY_KIND = {"dispute": PayoutItemKind.CHARGEBACK, "dispute_reversal": PayoutItemKind.ADJUSTMENT}
# Refund statuses (stripe-python _refund.py): pending, requires_action, succeeded, failed, canceled.
REFUND_STATUS = {
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.PENDING,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.FAILED,
}
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")  # the API's enum (_refund_create_params.py)
# Error codes of a refund Stripe will not make (docs.stripe.com/error-codes): nothing or not that much left, a
# disputed charge.
REFUSED = ("charge_already_refunded", "amount_too_large", "charge_disputed")
TOLERANCE = 300  # seconds, as Stripe's own libraries
DEFAULT_TIMEOUT = 20.0
PAGE = 100  # Stripe's maximum page size


def _replayed_server_error(exc: stripe.StripeError) -> bool:
    """A 5xx that Stripe replayed from its idempotency store (``Idempotent-Replayed: true``)."""
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    return (exc.http_status or 0) >= 500 and headers.get("idempotent-replayed") == "true"


def _translate(exc: stripe.StripeError) -> Exception:
    """Map Stripe errors onto the agent's: transient ones are retried by agent.core.retry alone."""
    status = exc.http_status
    if isinstance(exc, stripe.RateLimitError):
        headers = {k.title(): v for k, v in (exc.headers or {}).items()}
        return TransientError("Stripe rate limit reached", retry_after=retry_after(headers))
    if isinstance(exc, stripe.APIConnectionError) or status is None or status >= 500:
        return TransientError(f"Stripe unreachable or failing ({status}): {exc.user_message or exc}")
    if status == 409:  # another request with the same idempotency key is in flight: its answer will be replayed
        return TransientError(f"Stripe: a request with this idempotency key is in progress: {exc.user_message or exc}")
    if status == 404:
        return LinkNotFound(f"Stripe: {exc.user_message or exc}")
    return ProviderError(f"Stripe refused the request ({status}): {exc.user_message or exc}")


class StripeOptions(PluginOptions):
    """A Stripe account's ``options``."""

    success_url: str | None = Field(
        default=None,
        description="Where the payer lands after paying at Checkout (hosted Checkout requires one); "
        "{CHECKOUT_SESSION_ID} is filled in by Stripe. Unset: the session's own page, shown as complete.",
    )


class StripeProvider(Provider, PayoutProvider, DirectDebitProvider):
    name: ClassVar[str] = "stripe"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=(PaymentMethod.CARD, PaymentMethod.BANK),
        # Checkout Session expires_at "must be between 30 minutes and 24 hours after the current time"
        # (docs.stripe.com/payments/checkout/managing-limited-inventory).
        max_expiry=dt.timedelta(hours=24),
        cancelled_status=LinkStatus.EXPIRED,  # a session can only be expired (POST /v1/checkout/sessions/:id/expire)
        cancel_event=EventKind.LINK_EXPIRED,  # ... and reports checkout.session.expired
        shows_firm_name=False,  # Checkout shows the Stripe account's business name, set in Stripe's dashboard
        webhooks=True,
        direct_debit=True,
        payouts=True,
        holds_collections=False,  # a card is charged when the PaymentIntent is confirmed
        # A mandate is a SetupIntent, a collection a PaymentIntent: Stripe's words, mapped (SETUP_MANDATE,
        # COLLECTION_STATUS); Mandate.raw_status keeps the SetupIntent's.
        speaks_contract_statuses=False,
        # A SetupIntent is succeeded when the payer finishes the setup session, and a succeeded one cannot be
        # canceled (only requires_payment_method / requires_confirmation / requires_action ones can: stripe-python
        # _setup_intent.py ``cancel``); what it can still lose is its card, detached for good ("Detachment is
        # permanent and irreversible": _payment_method.py ``detach``). pending_customer_approval and expired are
        # said of the setup session before that (pre_approval_status; an expired session).
        mandate_statuses=frozenset({MandateStatus.ACTIVE, MandateStatus.CANCELLED}),
        # COLLECTION_STATUS's words, and charged_back for a disputed charge. A PaymentIntent is never held for a
        # date or a bank's submission (no pending_submission), a card payment is not paid out on its own (a Payout
        # carries the balance: no paid_out), and a card has no approval to deny (no customer_approval_denied). Of
        # those kept, Stripe documents that a card confirmed off-session never stops at processing ("cards ... are
        # processed more quickly and don't go into the processing status": docs.stripe.com/payments/paymentintents/
        # lifecycle) nor at requires_action (an off-session intent that needs authentication fails to
        # requires_payment_method: support.stripe.com/questions/manual-confirmation-for-off-session-payments-
        # requiring-strong-customer-authentication-sca); submitted and pending_customer_approval are read should it
        # ever say them.
        collection_statuses=frozenset({
            CollectionStatus.PENDING_CUSTOMER_APPROVAL, CollectionStatus.SUBMITTED, CollectionStatus.CONFIRMED,
            CollectionStatus.FAILED, CollectionStatus.CANCELLED, CollectionStatus.CHARGED_BACK}),
    )
    Options: ClassVar[type[PluginOptions]] = StripeOptions
    options: StripeOptions  # set by Provider.__init__ from the account's options

    def __init__(
        self,
        account: MerchantAccount,
        credentials: str | None,
        *,
        home: str | None = None,
        webhook_secret: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(account, credentials, home=home)
        if not credentials:
            raise ProviderError(f"merchant account {account.name!r}: no Stripe secret key")
        self.webhook_secret = webhook_secret
        self._client = stripe.StripeClient(
            credentials,
            base_addresses={"api": account.api_base} if account.api_base else None,
            max_network_retries=0,  # agent.core.retry is the only retry policy
            http_client=stripe.RequestsClient(timeout=timeout),
        )

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc

    def _session_params(self, spec: LinkSpec) -> SessionCreateParams:
        try:
            minor = to_minor(spec.amount, spec.currency)
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        # What the payer sees and what the firm reconciles by, in the fields Stripe's API reference gives them
        # (https://docs.stripe.com/api/checkout/sessions/create): the line item's name and description on the
        # Checkout page, the disclaimer in custom_text[submit][message] beside the pay button (up to 1200
        # characters), the invoice reference in client_reference_id (up to 200) and on the PaymentIntent's
        # description ("often useful for displaying to users": receipts) and metadata (docs.stripe.com/api/
        # metadata: 50 keys, keys up to 40 characters, values up to 500). The firm's name on Checkout is the
        # Stripe account's business name, set in Stripe's dashboard.
        if len(spec.disclaimer) > CUSTOM_TEXT_MAX:
            raise ProviderError(
                f"account {self.account.name}: the disclaimer is {len(spec.disclaimer)} characters; Stripe shows at "
                f"most {CUSTOM_TEXT_MAX} beside the pay button (custom_text[submit][message]). Shorten it with "
                f"'ledgerlink accounts set {self.account.name} --disclaimer ...'")
        metadata = {
            key: clip(value, METADATA_VALUE_MAX)
            for key, value in {
                "link_id": spec.link_id,
                **({"reference": spec.reference} if spec.reference else {}),
                **spec.metadata,
            }.items()
        }
        product: SessionCreateParamsLineItemPriceDataProductData = {"name": spec.description}
        if spec.paying_for:
            product["description"] = spec.paying_for
        intent_description = " - ".join(p for p in (spec.firm_name, spec.paying_for or spec.description) if p)
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": spec.currency.lower(),
                        "unit_amount": minor,
                        "product_data": product,
                    },
                }
            ],
            "expires_at": int(spec.expires_at.timestamp()),
            "success_url": self.options.success_url or DEFAULT_SUCCESS_URL,
            "customer_email": spec.payer_email,
            "metadata": metadata,
            "payment_intent_data": {
                "description": intent_description,
                "metadata": {k: v for k, v in metadata.items() if k in ("link_id", "reference")},
            },
        }
        if spec.reference:
            params["client_reference_id"] = clip(spec.reference, CLIENT_REFERENCE_MAX)
        if spec.disclaimer:
            params["custom_text"] = {"submit": {"message": spec.disclaimer}}
        return params

    def create_link(self, spec: LinkSpec) -> ProviderLink:
        params = self._session_params(spec)
        try:
            session = self._client.v1.checkout.sessions.create(
                params=params, options={"idempotency_key": spec.idempotency_key}
            )
        except stripe.StripeError as exc:
            if not _replayed_server_error(exc):
                raise _translate(exc) from exc
            # Stripe saved a 500 under this key and will replay it for 24 hours: the session may or may not
            # exist. Find it by the link id, else create under a key derived from this one (so retries agree).
            found = self._find_session(spec.link_id)
            if found is not None:
                return self._link(found)
            session = self._call(
                self._client.v1.checkout.sessions.create,
                params=params,
                options={"idempotency_key": f"{spec.idempotency_key}:after-500"},
            )
        return self._link(session.to_dict())

    def _find_session(self, link_id: str) -> dict[str, Any] | None:
        """A session made for the link within a session's lifetime (the list cannot filter by metadata)."""
        since = int((dt.datetime.now(dt.UTC) - SESSION_LIFETIME - dt.timedelta(hours=1)).timestamp())
        for session in self._sessions(since):
            if (session.get("metadata") or {}).get("link_id") == link_id:
                return session
        return None

    def _sessions(self, since: int) -> list[dict[str, Any]]:
        return self._all(self._client.v1.checkout.sessions.list, created={"gte": since})

    def _all(self, list_fn: Callable[..., Any], **params: Any) -> list[dict[str, Any]]:
        """Every record of a Stripe list, newest first, paged with ``starting_after`` (docs.stripe.com/api)."""

        def fetch(after: str | None) -> tuple[list[dict[str, Any]], str | None]:
            query = {"limit": PAGE, **params, **({"starting_after": after} if after else {})}
            page = self._call(list_fn, params=query).to_dict()
            data = page["data"]
            return data, data[-1]["id"] if page["has_more"] and data else None

        return list(pages(fetch))

    def _link(self, session: Mapping[str, Any]) -> ProviderLink:
        status = {
            "open": LinkStatus.OUTSTANDING,
            "complete": LinkStatus.PAYMENT_RECEIVED,
            "expired": LinkStatus.EXPIRED,
        }.get(session["status"], LinkStatus.OUTSTANDING)
        paid = None
        if status is LinkStatus.PAYMENT_RECEIVED and session.get("amount_total") is not None:
            paid = from_minor(int(session["amount_total"]), session["currency"].upper())
        return ProviderLink(
            ref=session["id"],
            url=session.get("url") or "",
            status=status,
            amount_paid=paid,
            expires_at=dt.datetime.fromtimestamp(session["expires_at"], dt.UTC)
            if session.get("expires_at")
            else None,
        )

    def get_link(self, ref: str) -> ProviderLink:
        return self._link(self._call(self._client.v1.checkout.sessions.retrieve, ref).to_dict())

    def cancel_link(self, ref: str) -> ProviderLink:
        """Expire the open session; Stripe then reports it expired, which the engine treats as cancelled."""
        try:
            session = self._call(self._client.v1.checkout.sessions.expire, ref)
        except LinkNotFound:
            raise
        except ProviderError as exc:
            current = self.get_link(ref)
            raise CancelRefused(f"Stripe would not expire {ref} ({current.status}): {exc}", current) from exc
        link = self._link(session.to_dict())
        return ProviderLink(link.ref, link.url, LinkStatus.CANCELLED, link.expires_at, link.amount_paid)

    def events(self, cursor: str | None, limit: int = 100) -> EventPage:
        """Unseen events after ``cursor`` oldest first (Stripe keeps 30 days of them)."""
        position = Position.load(cursor)
        if position.legacy_id is not None:  # an older agent's cursor: the id of the last event it read
            legacy = self._call(self._client.v1.events.retrieve, position.legacy_id).to_dict()
            created = dt.datetime.fromtimestamp(legacy["created"], dt.UTC)
            position = Position(newest=created, seen={legacy["id"]: created})
        batch = read_forward(
            position, self._list_events, lambda r: (r["id"], dt.datetime.fromtimestamp(r["created"], dt.UTC)), limit
        )
        mapped = [event for item in batch.records if (event := self._read(item)) is not None]
        return EventPage(mapped, batch.position.dump(), has_more=batch.has_more)

    def _list_events(self, since: dt.datetime | None) -> list[dict[str, Any]]:
        """Every event of the mapped types created on or after ``since`` (whole seconds, rounded down)."""
        bound = {"created": {"gte": int(since.timestamp())}} if since else {}
        return self._all(self._client.v1.events.list, types=list(EVENT_TYPES), **bound)

    def event(self, event_id: str) -> ProviderEvent | None:
        return self._map(self._call(self._client.v1.events.retrieve, event_id).to_dict())

    def _read(self, raw: Mapping[str, Any]) -> ProviderEvent | None:
        """Map one event; one that cannot be read is returned UNREADABLE (parked), so the feed goes on."""
        try:
            return self._map(raw)
        except (ProviderError, KeyError, ValueError, TypeError, AttributeError) as exc:
            obj = (raw.get("data") or {}).get("object") or {}
            return ProviderEvent(
                str(raw.get("id")),
                EventKind.UNREADABLE,
                dt.datetime.fromtimestamp(raw["created"], dt.UTC),
                obj.get("id") if obj.get("object") == "checkout.session" else None,
                obj.get("id") if obj.get("object") == "payment_intent" else obj.get("payment_intent"),
                None,
                None,
                raw_status=str(raw.get("type")),
                error=f"{type(exc).__name__}: {exc}",
            )

    def snapshot(self, since: dt.datetime) -> list[ProviderEvent]:
        """Checkout Sessions that could still be paid since ``since`` and disputes opened since, as they are."""
        now = dt.datetime.now(dt.UTC)
        out: list[ProviderEvent] = []
        for session in self._sessions(int((since - SESSION_LIFETIME).timestamp())):
            if session["status"] == "expired":
                out.append(ProviderEvent(f"reconcile:{session['id']}:expired", EventKind.LINK_EXPIRED, now,
                                         session["id"], None, None, None, raw_status="checkout.session:expired"))
                continue
            kind = {"paid": EventKind.PAYMENT_CONFIRMED, "unpaid": EventKind.PAYMENT_PENDING}.get(
                session.get("payment_status", ""))
            if session["status"] != "complete" or kind is None or not session.get("payment_intent"):
                continue
            currency = session["currency"].upper()
            out.append(ProviderEvent(
                f"reconcile:{session['payment_intent']}:{session['payment_status']}", kind, now, session["id"],
                session["payment_intent"], from_minor(int(session["amount_total"]), currency), currency,
                PaymentMethod.CARD, raw_status=f"checkout.session:{session['payment_status']}"))
        for dispute in self._disputes(int(since.timestamp())):
            moves = len(dispute.get("balance_transactions") or [])
            if moves == 0:
                continue  # an inquiry, or not yet withdrawn: the money is where it was
            currency = dispute["currency"].upper()
            out.append(ProviderEvent(
                f"reconcile:{dispute['id']}:{moves}",
                EventKind.PAYMENT_CONFIRMED if moves > 1 else EventKind.PAYMENT_CHARGED_BACK, now, None,
                dispute["payment_intent"], from_minor(int(dispute["amount"]), currency), currency,
                PaymentMethod.CARD, raw_status=f"charge.dispute:{dispute['status']}"))
        return out

    def _disputes(self, since: int) -> list[dict[str, Any]]:
        return self._all(self._client.v1.disputes.list, created={"gte": since})

    def _dispute_event(self, raw: Mapping[str, Any], obj: Mapping[str, Any], occurred: dt.datetime) -> ProviderEvent:
        """A dispute takes the money back; a won one (funds reinstated) gives it again. The link is the session
        of the disputed payment intent."""
        intent = obj.get("payment_intent")
        if intent:
            disputed = self._call(self._client.v1.payment_intents.retrieve, intent).to_dict()
            if COLLECTION_KEY in (disputed.get("metadata") or {}):  # an instalment charged on a saved card
                won = raw["type"] == "charge.dispute.funds_reinstated"
                return self._collection_event(
                    raw, disputed, EventKind.PAYMENT_CONFIRMED if won else EventKind.PAYMENT_CHARGED_BACK,
                    CollectionStatus.CONFIRMED if won else CollectionStatus.CHARGED_BACK, occurred)
        sessions = (self._call(self._client.v1.checkout.sessions.list, params={"payment_intent": intent, "limit": 1})
                    if intent else None)
        link_ref = sessions.data[0].id if sessions and sessions.data else None
        won = raw["type"] == "charge.dispute.funds_reinstated"
        currency = obj["currency"].upper()
        return ProviderEvent(raw["id"], EventKind.PAYMENT_CONFIRMED if won else EventKind.PAYMENT_CHARGED_BACK,
                             occurred, link_ref, intent, from_minor(int(obj["amount"]), currency), currency,
                             PaymentMethod.CARD, raw_status=raw["type"])

    def _map(self, raw: Mapping[str, Any]) -> ProviderEvent | None:
        obj = raw["data"]["object"]
        occurred = dt.datetime.fromtimestamp(raw["created"], dt.UTC)
        kind: EventKind | None
        event_type = raw["type"]
        if event_type == "charge.dispute.created" and str(obj.get("status", "")).startswith("warning_"):
            return None  # an inquiry: no funds are withdrawn unless it becomes a dispute
        if event_type in ("charge.dispute.created", "charge.dispute.funds_reinstated"):
            return self._dispute_event(raw, obj, occurred)
        if event_type.startswith(("payment_intent.", "payment_method.")):
            return self._card_event(raw, obj, occurred)
        if obj.get("mode") == "setup" and event_type in ("checkout.session.completed", "checkout.session.expired"):
            return self._setup_event(raw, obj, occurred)
        if event_type == "checkout.session.expired":
            return ProviderEvent(
                raw["id"],
                EventKind.LINK_EXPIRED,
                occurred,
                obj["id"],
                None,
                None,
                None,
                raw_status=event_type,
            )
        if event_type == "checkout.session.completed":
            kind = {"paid": EventKind.PAYMENT_CONFIRMED, "unpaid": EventKind.PAYMENT_PENDING}.get(
                obj.get("payment_status", "")
            )
        else:
            kind = {
                "checkout.session.async_payment_succeeded": EventKind.PAYMENT_CONFIRMED,
                "checkout.session.async_payment_failed": EventKind.PAYMENT_FAILED,
            }.get(event_type)
        if kind is None:
            return None
        currency = obj["currency"].upper()
        return ProviderEvent(
            raw["id"],
            kind,
            occurred,
            obj["id"],
            obj.get("payment_intent"),
            from_minor(int(obj["amount_total"]), currency),
            currency,
            PaymentMethod.CARD,
            raw_status=f"{event_type}:{obj.get('payment_status', '')}",
        )

    # --- saved cards: the Direct Debit contract (payment plans) ----------------------------------------------

    def setup_mandate(self, payer: MandatePayer) -> MandateSetup:
        """``POST /v1/customers`` then ``POST /v1/checkout/sessions`` in ``mode=setup`` for that customer, each
        under a key derived from the payer's, so a retry gives the same customer and the same session
        (docs.stripe.com/payments/save-and-reuse?platform=checkout; ``_session_create_params.py``: ``currency``
        is required in setup mode unless allowed_payment_method_types is set; we set both, cards only, as only a
        card can be charged off-session here)."""
        customer_params: CustomerCreateParams = {
            "name": payer.name, "email": payer.email, "metadata": {"payer": clip(payer.key, METADATA_VALUE_MAX)}}
        customer = self._call(self._client.v1.customers.create, params=customer_params,
                              options={"idempotency_key": f"{payer.idempotency_key}:customer"})
        params: SessionCreateParams = {
            "mode": "setup",
            "customer": customer.id,
            "currency": self.account.currency.lower(),
            "allowed_payment_method_types": ["card"],
            "success_url": self.options.success_url or DEFAULT_SUCCESS_URL,
            "metadata": {"payer": clip(payer.key, METADATA_VALUE_MAX)},
        }
        if payer.schedule:  # beside the confirmation button, "up to 1200 characters" (_session_create_params.py)
            params["custom_text"] = {"submit": {"message": clip(schedule_text(payer.schedule), CUSTOM_TEXT_MAX)}}
        session = self._call(self._client.v1.checkout.sessions.create, params=params,
                             options={"idempotency_key": f"{payer.idempotency_key}:session"})
        return MandateSetup(session.id, session.url or "")

    def get_mandate(self, ref: str) -> Mandate:
        """By the SetupIntent (``seti_``) or by the setup session, which stands for it until it is complete."""
        if ref.startswith("seti_"):
            return self._mandate(self._setup_intent(ref))
        session = self._call(self._client.v1.checkout.sessions.retrieve, ref).to_dict()
        if session.get("mode") != "setup":
            raise LinkNotFound(f"Stripe: {ref} is a payment link, not a saved card's setup")
        if session["status"] == "complete" and session.get("setup_intent"):
            return self._mandate(self._setup_intent(session["setup_intent"]))
        status = SESSION_MANDATE.get(session["status"])
        if status is None:
            raise ProviderError(f"Stripe setup session {ref} has an undocumented status {session['status']!r}")
        return Mandate(ref, status, session["status"])

    def _setup_intent(self, ref: str) -> dict[str, Any]:
        """The SetupIntent with its PaymentMethod expanded (its ``customer`` is null once detached)."""
        intent = self._call(self._client.v1.setup_intents.retrieve, ref, params={"expand": ["payment_method"]})
        return intent.to_dict()

    @staticmethod
    def _mandate(intent: Mapping[str, Any]) -> Mandate:
        status = SETUP_MANDATE.get(intent["status"])
        if status is None:
            raise ProviderError(f"Stripe SetupIntent {intent['id']} has an undocumented status {intent['status']!r}")
        card = intent.get("payment_method")
        if status is MandateStatus.ACTIVE and isinstance(card, Mapping) and not card.get("customer"):
            return Mandate(intent["id"], MandateStatus.CANCELLED, "succeeded:payment_method_detached")
        return Mandate(intent["id"], status, intent["status"])

    def cancel_mandate(self, ref: str) -> Mandate:
        """While the payer has not finished, the setup session is expired (``POST /v1/checkout/sessions/{id}/
        expire``, which "works only on open sessions"); once the card is saved, it is detached from the customer
        (``POST /v1/payment_methods/{id}/detach``: "Detachment is permanent and irreversible", _payment_method.py),
        which is how get_mandate reads a card that can be charged no more. A payer who finishes between the read
        and the expiry saved a card: it is read again and that is detached."""
        current = self.get_mandate(ref)
        if not current.ref.startswith("seti_") and current.status not in SETTLED_MANDATES:
            try:
                self._call(self._client.v1.checkout.sessions.expire, current.ref)
            except LinkNotFound:
                raise
            except ProviderError:
                pass  # completed meanwhile: its card is detached below
            current = self.get_mandate(ref)
        if current.ref.startswith("seti_") and current.status not in SETTLED_MANDATES:
            card = self._setup_intent(current.ref).get("payment_method")
            if isinstance(card, Mapping):
                self._call(self._client.v1.payment_methods.detach, card["id"])
            current = self.get_mandate(current.ref)
        return current

    def create_collection(self, mandate_ref: str, amount: Decimal, currency: str, charge_date: dt.date | None,
                          description: str, idempotency_key: str) -> Collection:
        """``POST /v1/payment_intents`` confirmed off-session on the saved card, now (docs.stripe.com/payments/
        save-and-reuse "charge the saved payment method later"; ``_payment_intent_create_params.py``). A card
        cannot be charged on a later date, so a ``charge_date`` after today (UTC, a day's grace for the firm's
        zone) is refused. A decline is Stripe's 402 card_error with the PaymentIntent in ``error.payment_intent``
        (docs.stripe.com/declines): that is a failed collection, not a refusal; a retry under the same key is
        answered the same 402 (docs.stripe.com/idempotency), so it gives the same failed collection."""
        if charge_date is not None and charge_date > dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1):
            raise ProviderError(f"Stripe charges a saved card when asked; it cannot hold a charge until {charge_date}")
        try:
            minor = to_minor(amount, currency)
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        mandate = self.get_mandate(mandate_ref)
        if mandate.status is not MandateStatus.ACTIVE:
            raise ProviderError(f"Stripe: the saved card {mandate_ref} is {mandate.status} ({mandate.raw_status}); "
                                "it cannot be charged")
        intent = self._setup_intent(mandate.ref)
        card = intent["payment_method"]
        metadata = {COLLECTION_KEY: clip(idempotency_key, METADATA_VALUE_MAX), MANDATE_KEY: mandate.ref}
        if charge_date is not None:
            metadata[CHARGE_DATE_KEY] = charge_date.isoformat()
        params: PaymentIntentCreateParams = {
            "amount": minor,
            "currency": currency.lower(),
            "customer": intent["customer"],
            "payment_method": card["id"] if isinstance(card, Mapping) else card,
            "allowed_payment_method_types": ["card"],
            "off_session": True,
            "confirm": True,
            "description": clip(description, DESCRIPTION_MAX),
            "metadata": metadata,
        }
        try:
            made = self._client.v1.payment_intents.create(params=params, options={"idempotency_key": idempotency_key})
        except stripe.CardError as exc:
            body: Any = exc.json_body or {}
            declined = (body.get("error") or {}).get("payment_intent")
            if not isinstance(declined, Mapping):
                raise ProviderError(f"Stripe declined the card: {exc.user_message or exc}") from exc
            return self._collection(declined, False)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return self._collection(made.to_dict(), False)

    def get_collection(self, ref: str) -> Collection:
        """``GET /v1/payment_intents/{id}?expand[]=latest_charge``: a charge that was ever disputed says so
        (``disputed`` stays true after a won dispute), and then its disputes' balance transactions ("zero, one,
        or two ... that show funds withdrawn and reinstated", stripe-python ``_dispute.py``) say whether the money
        is gone: withdrawn and not reinstated is a charge-back; an inquiry or a won dispute is not."""
        if not ref.startswith("pi_"):
            raise LinkNotFound(f"Stripe: no such payment_intent: {ref!r}")
        intent = self._call(self._client.v1.payment_intents.retrieve, ref,
                            params={"expand": ["latest_charge"]}).to_dict()
        charge = intent.get("latest_charge")
        disputed = isinstance(charge, Mapping) and bool(charge.get("disputed"))
        return self._collection(intent, disputed and self._withdrawn(ref))

    def _withdrawn(self, intent: str) -> bool:
        """Whether the payment intent's disputes have taken its money and not given it back."""
        disputes = self._all(self._client.v1.disputes.list, payment_intent=intent)
        return sum(int(t["amount"]) for d in disputes for t in d.get("balance_transactions") or []) < 0

    @staticmethod
    def _collection(intent: Mapping[str, Any], disputed: bool) -> Collection:
        if COLLECTION_KEY not in (intent.get("metadata") or {}):
            raise LinkNotFound(f"Stripe: {intent['id']} is no collection of ours (a link's payment)")
        status = COLLECTION_STATUS.get(intent["status"])
        if status is None:
            raise ProviderError(f"Stripe PaymentIntent {intent['id']} has a status a collection never has: "
                                f"{intent['status']!r}")
        if status is CollectionStatus.CONFIRMED and disputed:
            status = CollectionStatus.CHARGED_BACK
        currency = intent["currency"].upper()
        day = (intent.get("metadata") or {}).get(CHARGE_DATE_KEY)
        return Collection(intent["id"], status, from_minor(int(intent["amount"]), currency), currency,
                          dt.date.fromisoformat(day) if day else
                          dt.datetime.fromtimestamp(intent["created"], dt.UTC).date())

    def cancel_collection(self, ref: str) -> Collection:
        """``POST /v1/payment_intents/{id}/cancel``; Stripe refuses it once succeeded (400
        payment_intent_unexpected_state: only requires_* and processing intents can be canceled)."""
        current = self.get_collection(ref)
        if current.status is CollectionStatus.CANCELLED:
            return current  # a retried cancel whose answer was lost
        try:
            self._call(self._client.v1.payment_intents.cancel, ref)
        except LinkNotFound:
            raise
        except ProviderError as exc:
            now = self.get_collection(ref)
            raise CollectionCancelRefused(f"Stripe would not cancel {ref} ({now.status}): {exc}", now) from exc
        return self.get_collection(ref)

    def _collection_event(self, raw: Mapping[str, Any], intent: Mapping[str, Any], kind: EventKind,
                          status: CollectionStatus, occurred: dt.datetime) -> ProviderEvent:
        currency = intent["currency"].upper()
        return ProviderEvent(raw["id"], kind, occurred, None, intent["id"],
                             from_minor(int(intent["amount"]), currency), currency, PaymentMethod.DIRECT_DEBIT,
                             raw_status=status.value, mandate_ref=(intent.get("metadata") or {}).get(MANDATE_KEY))

    def _card_event(self, raw: Mapping[str, Any], obj: Mapping[str, Any],
                    occurred: dt.datetime) -> ProviderEvent | None:
        """payment_intent.* of our collections (a link's PaymentIntents are told by its metadata: no collection
        key; their results come from its checkout.session.* events) and a detached card."""
        event_type = raw["type"]
        if event_type == "payment_method.detached":
            found = self._call(self._client.v1.setup_intents.list,
                               params={"payment_method": obj["id"], "limit": 1}).to_dict()["data"]
            if not found:
                return None  # a card saved otherwise than by our setup
            return ProviderEvent(raw["id"], EventKind.MANDATE_CHANGED, occurred, None, None, None, None,
                                 PaymentMethod.DIRECT_DEBIT, raw_status=MandateStatus.CANCELLED.value,
                                 mandate_ref=found[0]["id"])
        if COLLECTION_KEY not in (obj.get("metadata") or {}):
            return None
        status = COLLECTION_STATUS.get(obj["status"])
        if event_type == "payment_intent.payment_failed":
            status = CollectionStatus.FAILED  # the event says it; the object may have moved on since
        if status is None:
            raise ProviderError(f"Stripe {event_type} for {obj['id']} with status {obj['status']!r}")
        return self._collection_event(raw, obj, INTENT_EVENTS[event_type], status, occurred)

    def _setup_event(self, raw: Mapping[str, Any], obj: Mapping[str, Any], occurred: dt.datetime) -> ProviderEvent:
        """A setup session finished (its SetupIntent is the mandate) or expired unfinished."""
        if raw["type"] == "checkout.session.expired" or not obj.get("setup_intent"):
            return ProviderEvent(raw["id"], EventKind.MANDATE_CHANGED, occurred, obj["id"], None, None, None,
                                 PaymentMethod.DIRECT_DEBIT, raw_status=MandateStatus.EXPIRED.value,
                                 mandate_ref=obj["id"])
        mandate = self._mandate(self._setup_intent(obj["setup_intent"]))
        return ProviderEvent(raw["id"], EventKind.MANDATE_CHANGED, occurred, obj["id"], None, None, None,
                             PaymentMethod.DIRECT_DEBIT, raw_status=mandate.status.value, mandate_ref=mandate.ref)

    # --- payouts and refunds ---------------------------------------------------------------------------------

    def payouts(self, since: dt.datetime) -> list[Payout]:
        """``GET /v1/payouts?created[gte]=``, every page, oldest first."""
        listed = self._all(self._client.v1.payouts.list, created={"gte": int(since.timestamp())})
        return sorted((_payout(raw) for raw in listed), key=lambda p: (p.created_at, p.ref))

    def payout_items(self, payout_ref: str) -> list[PayoutItem]:
        """``GET /v1/balance_transactions?payout=`` with the sources expanded, every page: each transaction's
        gross, then its fees as lines of their own, so a payout net of fees shows them. The payment a line
        concerns is its source's payment intent (the payment_ref of this adapter)."""
        listed = self._all(self._client.v1.balance_transactions.list, payout=payout_ref, expand=["data.source"])
        items: list[PayoutItem] = []
        for bt in listed:
            if bt["type"] != "payout":
                items.extend(_lines(bt))
        return items

    def refund(self, payment_ref: str, amount: Decimal, currency: str, reason: str,
               idempotency_key: str) -> Refund:
        """``POST /v1/refunds`` for the payment intent. ``reason`` takes only Stripe's three words; free text is
        sent as requested_by_customer and kept whole in metadata."""
        try:
            minor = to_minor(amount, currency)
        except DataError as exc:
            raise RefundRefused(str(exc)) from None
        params: RefundCreateParams = {
            "payment_intent": payment_ref,
            "amount": minor,
            "reason": reason if reason in REFUND_REASONS else "requested_by_customer",
            "metadata": {"reason": reason[:500]},
        }
        try:
            refund = self._client.v1.refunds.create(params=params, options={"idempotency_key": idempotency_key})
        except stripe.InvalidRequestError as exc:
            if exc.code in REFUSED:
                raise RefundRefused(f"Stripe would not refund {payment_ref}: {exc.user_message or exc}") from exc
            raise _translate(exc) from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _refund(refund.to_dict())

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
        """``Stripe-Signature: t=..,v1=..``: HMAC-SHA256 of "t.body", at most 300 s old."""
        if not self.webhook_secret:
            raise ProviderError(f"merchant account {self.account.name!r} has no Stripe webhook secret")
        header = next((v for k, v in headers.items() if k.lower() == "stripe-signature"), "")
        parts = [item.split("=", 1) for item in header.split(",") if "=" in item]
        stamps = [v for k, v in parts if k == "t"]
        signatures = [v for k, v in parts if k == "v1"]
        if not stamps or not signatures or not stamps[0].isdigit():
            raise InvalidSignature("Stripe-Signature header missing or malformed")
        if abs(time.time() - int(stamps[0])) > TOLERANCE:
            raise InvalidSignature("Stripe webhook signature is too old")
        expected = hmac.new(
            self.webhook_secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        if not any(hmac.compare_digest(expected, sig) for sig in signatures):
            raise InvalidSignature("Stripe webhook signature does not match")
        event = self._read(json.loads(body))
        return [event] if event is not None else []


def _payout(raw: Mapping[str, Any]) -> Payout:
    status = PAYOUT_STATUS.get(raw["status"])
    if status is None:
        raise ProviderError(f"Stripe payout {raw['id']} has an undocumented status {raw['status']!r}")
    currency = raw["currency"].upper()
    arrival = raw.get("arrival_date")
    return Payout(
        ref=raw["id"],
        amount=from_minor(int(raw["amount"]), currency),
        currency=currency,
        status=status,
        created_at=dt.datetime.fromtimestamp(raw["created"], dt.UTC),
        arrival_date=dt.datetime.fromtimestamp(arrival, dt.UTC).date() if arrival else None,
        bank_reference=raw.get("statement_descriptor") or "",
        raw_status=raw["status"],
    )


def _lines(bt: Mapping[str, Any]) -> list[PayoutItem]:
    """A balance transaction's gross and its fees (``fee_details``, else ``fee``), which add up to its net. A
    refund's line is named by the refund (its source, as PayoutItem.ref asks), its fees by the transaction."""
    currency = bt["currency"].upper()
    source = bt.get("source")
    payment_ref = source.get("payment_intent") if isinstance(source, Mapping) else None
    kind = CATEGORY_KIND.get(bt.get("reporting_category", "")) or TRANSACTION_KIND.get(
        bt["type"], PayoutItemKind.ADJUSTMENT)
    ref = source["id"] if kind is PayoutItemKind.REFUND and isinstance(source, Mapping) else bt["id"]
    lines = [PayoutItem(kind, from_minor(int(bt["amount"]), currency), payment_ref, ref, bt["type"])]
    details = bt.get("fee_details") or []
    fees = [(int(d["amount"]), d.get("type") or "stripe_fee") for d in details] or [(int(bt.get("fee") or 0),
                                                                                     "stripe_fee")]
    if sum(amount for amount, _ in fees) != int(bt.get("fee") or 0):
        raise ProviderError(f"Stripe balance transaction {bt['id']}: fee_details do not add up to its fee")
    lines.extend(PayoutItem(PayoutItemKind.FEE, -from_minor(amount, currency), payment_ref, f"{bt['id']}:fee:{n}",
                            fee_type) for n, (amount, fee_type) in enumerate(fees) if amount)
    return lines


def _refund(raw: Mapping[str, Any]) -> Refund:
    status = REFUND_STATUS.get(raw["status"])
    if status is None:
        raise ProviderError(f"Stripe refund {raw['id']} has an undocumented status {raw['status']!r}")
    currency = raw["currency"].upper()
    return Refund(
        ref=raw["id"],
        payment_ref=raw.get("payment_intent") or "",
        amount=from_minor(int(raw["amount"]), currency),
        currency=currency,
        status=status,
        created_at=dt.datetime.fromtimestamp(raw["created"], dt.UTC),
        raw_status=raw["status"],
    )
