"""GoCardless Instant Bank Pay: a Billing Request (the payment) plus a Billing Request Flow (the link).

The link ref is the billing request id. GoCardless lists events newest first and creates them asynchronously, so
they are read forward from a time with ``created_at[gte]`` and ``after`` paging (connectors.providers.cursor);
``before`` is documented only as "cursor pointing to the end of the desired set" (gocardless-dotnet
``Services/EventService.cs``). A payment made through a billing request is tied to it only by the request's
``fulfilled`` event (``links.payment_request_payment``): a Payment's own links have no billing request
(gocardless-dotnet ``Resources/Payment.cs``; gocardless/woocommerce-gateway-gocardless maps it so too).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar, TypeVar

import requests
from gocardless_pro import errors as gc_errors
from gocardless_pro import services
from gocardless_pro.api_client import ApiClient

from agent.core.errors import DataError, TransientError
from agent.core.model import MerchantAccount, from_minor, to_minor
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

T = TypeVar("T")
log = logging.getLogger("ledgerlink.gocardless")
METADATA_KEYS, METADATA_VALUE_MAX = 3, 500  # API reference: "up to 3 keys ... values up to 500 characters"

# Billing request statuses are pending, ready_to_fulfil, fulfilling, fulfilled and cancelled: there is no expired
# or failed (gocardless-dotnet Resources/BillingRequest.cs). Fulfilled means a payment was created, not received:
# the link's state then follows that payment (PAYMENT_STATUS).
STATUS = {
    "pending": LinkStatus.OUTSTANDING,
    "ready_to_fulfil": LinkStatus.OUTSTANDING,
    "fulfilling": LinkStatus.OUTSTANDING,
    "cancelled": LinkStatus.CANCELLED,
}
# A fulfilled request's payment: its status -> (the link's status, the event kind a snapshot reports).
PAYMENT_STATUS = {
    "pending_customer_approval": (LinkStatus.PAYMENT_RECEIVED, EventKind.PAYMENT_PENDING),
    "pending_submission": (LinkStatus.PAYMENT_RECEIVED, EventKind.PAYMENT_PENDING),
    "submitted": (LinkStatus.PAYMENT_RECEIVED, EventKind.PAYMENT_PENDING),
    "confirmed": (LinkStatus.PAYMENT_RECEIVED, EventKind.PAYMENT_CONFIRMED),
    "paid_out": (LinkStatus.PAYMENT_RECEIVED, EventKind.PAYMENT_CONFIRMED),
    "failed": (LinkStatus.FAILED, EventKind.PAYMENT_FAILED),
    "charged_back": (LinkStatus.FAILED, EventKind.PAYMENT_CHARGED_BACK),
    "cancelled": (LinkStatus.FAILED, EventKind.PAYMENT_FAILED),
    "customer_approval_denied": (LinkStatus.FAILED, EventKind.PAYMENT_FAILED),
}
# Payment event actions (gocardless-dotnet Resources/Event.cs, PaymentService.cs): a retried payment goes
# failed -> resubmission_requested -> submitted -> confirmed (gocardless_pro PaymentsService.retry).
PAYMENT_ACTIONS = {
    "created": EventKind.PAYMENT_PENDING,
    "customer_approval_granted": EventKind.PAYMENT_PENDING,
    "pending_submission": EventKind.PAYMENT_PENDING,
    "submitted": EventKind.PAYMENT_PENDING,
    "resubmission_requested": EventKind.PAYMENT_PENDING,
    "confirmed": EventKind.PAYMENT_CONFIRMED,
    "paid_out": EventKind.PAYMENT_CONFIRMED,
    "failed": EventKind.PAYMENT_FAILED,
    "charged_back": EventKind.PAYMENT_CHARGED_BACK,
}
# Direct Debit payments (links.mandate set): event action -> (kind, the payment's status after it).
COLLECTION_ACTIONS = {
    "created": (EventKind.PAYMENT_PENDING, CollectionStatus.PENDING_SUBMISSION),
    "customer_approval_granted": (EventKind.PAYMENT_PENDING, CollectionStatus.PENDING_SUBMISSION),
    "submitted": (EventKind.PAYMENT_PENDING, CollectionStatus.SUBMITTED),
    "resubmission_requested": (EventKind.PAYMENT_PENDING, CollectionStatus.PENDING_SUBMISSION),
    "confirmed": (EventKind.PAYMENT_CONFIRMED, CollectionStatus.CONFIRMED),
    "paid_out": (EventKind.PAYMENT_CONFIRMED, CollectionStatus.PAID_OUT),
    "failed": (EventKind.PAYMENT_FAILED, CollectionStatus.FAILED),
    "charged_back": (EventKind.PAYMENT_CHARGED_BACK, CollectionStatus.CHARGED_BACK),
    "cancelled": (EventKind.COLLECTION_CANCELLED, CollectionStatus.CANCELLED),
    "customer_approval_denied": (EventKind.COLLECTION_CANCELLED, CollectionStatus.CUSTOMER_APPROVAL_DENIED),
}
# A Direct Debit payment's status -> the kind a snapshot reports.
COLLECTION_KIND = {
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
# A mandate setup is a billing request until the payer finishes the flow; what its status means for the mandate.
SETUP_STATUS = {
    "pending": MandateStatus.PENDING_CUSTOMER_APPROVAL,
    "ready_to_fulfil": MandateStatus.PENDING_CUSTOMER_APPROVAL,
    "fulfilling": MandateStatus.PENDING_CUSTOMER_APPROVAL,
    "cancelled": MandateStatus.CANCELLED,
}
# Payout statuses are pending, paid and bounced (gocardless_pro resources/payout.py; API reference "Payouts").
PAYOUT_STATUS = {"pending": PayoutStatus.PENDING, "paid": PayoutStatus.PAID, "bounced": PayoutStatus.FAILED}
# Payout item types and their documented direction (gocardless-dotnet Resources/PayoutItem.cs, from the API
# reference): the sign is already in ``amount`` ("the positive (credit) or negative (debit) value of the item"),
# so a kind never flips it. gocardless_fee and surcharge_fee are "inclusive of VAT if applicable": ``taxes`` only
# breaks the tax out of the fee's amount, and adding it again would count it twice. A late payment failure takes
# the money back as a chargeback does; a returned refund gives it back. A type not listed here is kept, signed as
# GoCardless gives it, as an adjustment (so the items still add up), and logged.
ITEM_KIND = {
    "payment_paid_out": PayoutItemKind.PAYMENT,
    "payment_failed": PayoutItemKind.CHARGEBACK,
    "payment_charged_back": PayoutItemKind.CHARGEBACK,
    "payment_refunded": PayoutItemKind.REFUND,
    "refund": PayoutItemKind.REFUND,
    "refund_funds_returned": PayoutItemKind.ADJUSTMENT,
    "gocardless_fee": PayoutItemKind.FEE,
    "app_fee": PayoutItemKind.FEE,
    "surcharge_fee": PayoutItemKind.FEE,
    "revenue_share": PayoutItemKind.ADJUSTMENT,  # a partner's share of fees: income, shown in partner payouts only
}
# Refund statuses (gocardless-dotnet Resources/Refund.cs): created, pending_submission, submitted, paid,
# cancelled, bounced, funds_returned. The first four still claim part of the payment.
REFUND_STATUS = {
    "created": RefundStatus.PENDING,
    "pending_submission": RefundStatus.PENDING,
    "submitted": RefundStatus.PENDING,
    "paid": RefundStatus.SUCCEEDED,
    "cancelled": RefundStatus.FAILED,
    "bounced": RefundStatus.FAILED,
    "funds_returned": RefundStatus.FAILED,
}
PENCE = re.compile(r"-?[0-9]{1,15}(\.[0-9])?", re.ASCII)
FLOW_LIFETIME = dt.timedelta(days=7)
DEFAULT_TIMEOUT = 20.0
ENVIRONMENTS = {"live": "https://api.gocardless.com", "sandbox": "https://api-sandbox.gocardless.com"}
PAGE = 500  # GoCardless's maximum page size


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from Retry-After or GoCardless's RateLimit-Reset (an HTTP date, or seconds)."""
    for name in ("Retry-After", "RateLimit-Reset"):
        value = headers.get(name)
        if not value:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    return None


# payment id -> the API's attributes of that payment: fetched once for all the events of a page that name it
PaymentCache = dict[str, Mapping[str, Any]]


class _ApiClient(ApiClient):  # type: ignore[misc]  # gocardless_pro ships no type information: ApiClient is Any
    """Keeps the HTTP status and rate-limit wait on SDK errors, which the SDK itself drops."""

    def _handle_errors(self, response: requests.Response) -> None:
        try:
            super()._handle_errors(response)
        except gc_errors.GoCardlessProError as exc:
            exc.http_status = response.status_code
            exc.retry_after = retry_after(response.headers)
            raise


def _translate(exc: Exception) -> Exception:
    """Map SDK and transport errors onto the agent's: transient ones are retried by agent.core.retry alone."""
    if isinstance(exc, requests.Timeout | requests.ConnectionError):
        return TransientError(f"GoCardless unreachable: {exc}")
    status = getattr(exc, "http_status", None)
    if status == 429:
        return TransientError("GoCardless rate limit reached", retry_after=getattr(exc, "retry_after", None))
    if status is None or status >= 500 or isinstance(exc, gc_errors.GoCardlessInternalError):
        return TransientError(f"GoCardless server error ({status}): {exc}")
    if status == 404:
        return LinkNotFound(f"GoCardless: {exc}")
    return ProviderError(f"GoCardless refused the request ({status}): {exc}")


class GoCardlessProvider(Provider, DirectDebitProvider, PayoutProvider):
    name: ClassVar[str] = "gocardless"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=(PaymentMethod.BANK,),
        # A Billing Request Flow expires 7 days after creation (API reference example: created_at
        # 2022-11-01T16:28:31Z, expires_at 2022-11-08T16:28:31Z) and its lifetime cannot be set.
        max_expiry=FLOW_LIFETIME,
        # A flow cannot be read back (the flows service has create and initialise only): each create, and each
        # retried mandate setup, makes a new flow for the same billing request, at a new URL.
        stable_url=False,
        stable_setup_url=False,
        reports_expiry=False,  # billing requests have no expired status (BillingRequest.cs)
        shows_firm_name=False,  # the payment page shows the creditor's name, set in GoCardless's dashboard
        shows_disclaimer=False,  # the billing request API has no field for one
        webhooks=True,
        direct_debit=True,
        payouts=True,
    )

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
            raise ProviderError(f"merchant account {account.name!r}: no GoCardless access token")
        self.webhook_secret = webhook_secret
        # The SDK's two environments; sandbox access tokens start with "sandbox_".
        base = account.api_base or ENVIRONMENTS["sandbox" if credentials.startswith("sandbox_") else "live"]
        api = _ApiClient(base, credentials, timeout=timeout)
        # One attempt each (max_network_retries=1): agent.core.retry is the only retry policy.
        self._billing_requests = services.BillingRequestsService(api, 1, 0)
        self._flows = services.BillingRequestFlowsService(api, 1, 0)
        self._payments = services.PaymentsService(api, 1, 0)
        self._mandates = services.MandatesService(api, 1, 0)
        self._events = services.EventsService(api, 1, 0)
        self._payouts = services.PayoutsService(api, 1, 0)
        self._payout_items = services.PayoutItemsService(api, 1, 0)
        self._refunds = services.RefundsService(api, 1, 0)
        self._now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (gc_errors.GoCardlessProError, requests.RequestException) as exc:
            raise _translate(exc) from exc

    def create_link(self, spec: LinkSpec) -> ProviderLink:
        """Billing request under the engine's idempotency key (retries get it back), then a flow."""
        try:
            minor = to_minor(spec.amount, spec.currency)
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        # What the payer sees, per GoCardless's API reference (developer.gocardless.com/api-reference, billing
        # requests): the payment request's description on the payment page, with the matter and invoice numbers;
        # the firm's name there is the creditor's, set in GoCardless's dashboard, and the API has no field for a
        # disclaimer. The reference goes in metadata ("up to 3 keys, with key names up to 50 characters and
        # values up to 500 characters"), for the firm's reconciliation.
        metadata = {
            key: clip(value, METADATA_VALUE_MAX)
            for key, value in {
                "link_id": spec.link_id,
                **({"reference": spec.reference} if spec.reference else {}),
                **spec.metadata,
            }.items()
        }
        if len(metadata) > METADATA_KEYS:
            raise ProviderError(f"GoCardless allows {METADATA_KEYS} metadata keys, not {len(metadata)}: "
                                f"{', '.join(metadata)}")
        description = f"{spec.description} ({spec.paying_for})" if spec.paying_for else spec.description
        # The SDK answers a 409 idempotent_creation_conflict by fetching the conflicting billing request.
        br = self._call(
            self._billing_requests.create,
            params={
                "payment_request": {
                    "amount": minor,
                    "currency": spec.currency,
                    "description": description,
                    "metadata": metadata,
                },
                "metadata": {k: v for k, v in metadata.items() if k in ("link_id", "reference")},
            },
            headers={"Idempotency-Key": spec.idempotency_key},
        )
        if br.status not in ("pending", "ready_to_fulfil"):
            return self._link(br, url="")
        given, _, family = spec.payer_name.rpartition(" ")
        flow = self._call(
            self._flows.create,
            params={
                "links": {"billing_request": br.id},
                "lock_currency": True,
                "prefilled_customer": {
                    "email": spec.payer_email,
                    "given_name": given or family,
                    "family_name": family,
                },
            },
        )
        return self._link(br, url=flow.authorisation_url, expires_at=_parse_time(flow.expires_at))

    def _link(self, br: Any, url: str, expires_at: dt.datetime | None = None) -> ProviderLink:
        """A fulfilled request made a payment: the link is used up, paid once that payment is confirmed."""
        paid = None
        status = STATUS.get(br.status, LinkStatus.OUTSTANDING)
        payment_id = (br.attributes.get("links") or {}).get("payment_request_payment")
        if payment_id:
            payment = self._call(self._payments.get, payment_id).attributes
            status = PAYMENT_STATUS.get(payment["status"], (LinkStatus.PAYMENT_RECEIVED, None))[0]
            if payment["status"] in ("confirmed", "paid_out"):
                paid = from_minor(int(payment["amount"]), payment["currency"])
        return ProviderLink(ref=br.id, url=url, status=status, expires_at=expires_at, amount_paid=paid)

    def get_link(self, ref: str) -> ProviderLink:
        """GoCardless cannot read a flow back, so the URL is empty: the engine keeps the one from create."""
        return self._link(self._call(self._billing_requests.get, ref), url="")

    def cancel_link(self, ref: str) -> ProviderLink:
        try:
            return self._link(self._call(self._billing_requests.cancel, ref), url="")
        except LinkNotFound:
            raise
        except ProviderError as exc:
            current = self.get_link(ref)
            if current.status is LinkStatus.CANCELLED:
                return current
            raise CancelRefused(
                f"GoCardless would not cancel {ref} ({current.status}): {exc}", current
            ) from exc

    def events(self, cursor: str | None, limit: int = 100) -> EventPage:
        """Unseen events after ``cursor`` oldest first; the cursor advances over events we do not map too."""
        position = Position.load(cursor)
        if position.legacy_id is not None:  # an older agent's cursor: the id of the last event it read
            legacy = self._call(self._events.get, position.legacy_id).attributes
            position = Position(newest=_parse_time(legacy["created_at"]), seen={legacy["id"]: _parse_time(
                legacy["created_at"])})
        batch = read_forward(position, self._list_events, lambda r: (r["id"], _parse_time(r["created_at"])), limit)
        payments: PaymentCache = {}
        mapped = [event for item in batch.records if (event := self._read(item, payments)) is not None]
        return EventPage(mapped, batch.position.dump(), has_more=batch.has_more)

    def _list_events(self, since: dt.datetime | None) -> Iterator[dict[str, Any]]:
        """Every event created on or after ``since``, newest first, paged with ``after`` as documented."""
        bound = {"created_at[gte]": _format_time(since)} if since else {}

        def fetch(after: str | None) -> tuple[list[dict[str, Any]], str | None]:
            params = {"limit": PAGE, **bound, **({"after": after} if after else {})}
            page = self._call(self._events.list, params=params)
            return [record.attributes for record in page.records], page.after

        return iter(pages(fetch))

    def event(self, event_id: str) -> ProviderEvent | None:
        return self._map(self._call(self._events.get, event_id).attributes, {})

    def _read(self, raw: Mapping[str, Any], payments: PaymentCache) -> ProviderEvent | None:
        """Map one event; one that cannot be read is returned UNREADABLE (parked), so the feed goes on."""
        try:
            return self._map(raw, payments)
        except (ProviderError, KeyError, ValueError, TypeError) as exc:
            links = raw.get("links") or {}
            return ProviderEvent(
                event_id=str(raw.get("id")),
                kind=EventKind.UNREADABLE,
                occurred_at=_parse_time(raw["created_at"]),
                link_ref=links.get("billing_request"),
                payment_ref=links.get("payment"),
                amount=None,
                currency=None,
                raw_status=f"{raw.get('resource_type')}.{raw.get('action')}",
                mandate_ref=links.get("mandate"),
                error=f"{type(exc).__name__}: {exc}",
            )

    def _payment(self, payment_id: str, payments: PaymentCache) -> Mapping[str, Any]:
        if payment_id not in payments:
            payments[payment_id] = self._call(self._payments.get, payment_id).attributes
        return payments[payment_id]

    def _map(self, raw: Mapping[str, Any], payments: PaymentCache) -> ProviderEvent | None:
        links = raw.get("links") or {}
        occurred = _parse_time(raw["created_at"])
        action = raw.get("action", "")
        resource = raw.get("resource_type")
        if resource == "billing_requests" and action == "cancelled":
            return ProviderEvent(
                raw["id"],
                EventKind.LINK_CANCELLED,
                occurred,
                links.get("billing_request"),
                None,
                None,
                None,
                raw_status=f"billing_requests.{action}",
            )
        if resource == "mandates" or (resource == "billing_requests" and links.get("mandate_request_mandate")):
            return self._mandate_event(raw, occurred)
        if resource == "billing_requests" and action == "fulfilled" and links.get("payment_request_payment"):
            # The only documented tie between a payment and its billing request; it means "a payment was
            # created", so it is pending whatever the payment's later events say.
            payment = self._payment(links["payment_request_payment"], payments)
            return ProviderEvent(
                event_id=raw["id"],
                kind=EventKind.PAYMENT_PENDING,
                occurred_at=occurred,
                link_ref=links["billing_request"],
                payment_ref=payment["id"],
                amount=from_minor(int(payment["amount"]), payment["currency"]),
                currency=payment["currency"],
                method=PaymentMethod.BANK,
                raw_status="billing_requests.fulfilled",
            )
        if resource != "payments" or action not in PAYMENT_ACTIONS.keys() | COLLECTION_ACTIONS:
            return None
        payment = self._payment(links["payment"], payments)
        if (payment.get("links") or {}).get("mandate"):
            return self._collection_event(raw, occurred, payment)
        if action not in PAYMENT_ACTIONS:
            return None
        return ProviderEvent(
            event_id=raw["id"],
            kind=PAYMENT_ACTIONS[action],
            occurred_at=occurred,
            link_ref=None,  # learnt from the billing request's fulfilled event
            payment_ref=payment["id"],
            amount=from_minor(int(payment["amount"]), payment["currency"]),
            currency=payment["currency"],
            method=PaymentMethod.BANK,
            raw_status=f"payments.{action}",
        )

    def snapshot(self, since: dt.datetime) -> list[ProviderEvent]:
        """Payments created since ``since`` and billing requests whose flow could still be used then, as they are
        now. A payment's billing request is found through the request (``payment_request_payment``)."""
        now = self._now()
        requests_ = self._list("billing_requests", self._billing_requests, since - FLOW_LIFETIME)
        link_of = {
            br["links"]["payment_request_payment"]: br["id"]
            for br in requests_
            if br.get("payment_request") and (br.get("links") or {}).get("payment_request_payment")
        }
        out: list[ProviderEvent] = []
        for br in requests_:
            if br.get("payment_request") and br["status"] == "cancelled":
                out.append(ProviderEvent(f"reconcile:{br['id']}:cancelled", EventKind.LINK_CANCELLED, now,
                                         br["id"], None, None, None, raw_status="billing_requests.cancelled"))
        # A day before ``since`` too: a payment made just before it may have been learnt (and stored) after it.
        for payment in self._list("payments", self._payments, since - dt.timedelta(days=1)):
            mandate = (payment.get("links") or {}).get("mandate")
            amount = from_minor(int(payment["amount"]), payment["currency"])
            base = {"event_id": f"reconcile:{payment['id']}:{payment['status']}", "occurred_at": now,
                    "payment_ref": payment["id"], "amount": amount, "currency": payment["currency"]}
            if payment["status"] not in PAYMENT_STATUS:  # undocumented: reported, not guessed at
                log.warning("GoCardless payment %s has an undocumented status %r", payment["id"], payment["status"])
            elif mandate:
                status = CollectionStatus(payment["status"])
                out.append(ProviderEvent(kind=COLLECTION_KIND[status], link_ref=None,
                                         method=PaymentMethod.DIRECT_DEBIT, raw_status=status.value,
                                         mandate_ref=mandate, **base))
            else:
                kind = PAYMENT_STATUS[payment["status"]][1]
                out.append(ProviderEvent(kind=kind, link_ref=link_of.get(payment["id"]), method=PaymentMethod.BANK,
                                         raw_status=f"payments.{payment['status']}", **base))
        return out

    def _list(self, kind: str, service: Any, since: dt.datetime | None, **filters: str) -> list[dict[str, Any]]:
        """Every record of a cursor-paged list (``after``), created on or after ``since`` where given."""
        bound = {"created_at[gte]": _format_time(since)} if since else {}

        def fetch(after: str | None) -> tuple[list[dict[str, Any]], str | None]:
            params = {"limit": PAGE, **bound, **filters, **({"after": after} if after else {})}
            page = self._call(service.list, params=params)
            return [record.attributes for record in page.records], page.after

        return list(pages(fetch))

    def _collection_event(
        self, raw: Mapping[str, Any], occurred: dt.datetime, payment: Mapping[str, Any]
    ) -> ProviderEvent | None:
        if raw["action"] not in COLLECTION_ACTIONS:
            return None
        kind, status = COLLECTION_ACTIONS[raw["action"]]
        return ProviderEvent(
            event_id=raw["id"],
            kind=kind,
            occurred_at=occurred,
            link_ref=None,
            payment_ref=payment["id"],
            amount=from_minor(int(payment["amount"]), payment["currency"]),
            currency=payment["currency"],
            method=PaymentMethod.DIRECT_DEBIT,
            raw_status=status.value,
            mandate_ref=payment["links"]["mandate"],
        )

    def _mandate_event(self, raw: Mapping[str, Any], occurred: dt.datetime) -> ProviderEvent:
        """The mandate's current status (a mandate event's action is not always a status, e.g. transferred)."""
        links = raw.get("links") or {}
        mandate_id = links.get("mandate") or links["mandate_request_mandate"]
        return ProviderEvent(
            event_id=raw["id"],
            kind=EventKind.MANDATE_CHANGED,
            occurred_at=occurred,
            link_ref=links.get("billing_request"),
            payment_ref=None,
            amount=None,
            currency=None,
            method=PaymentMethod.DIRECT_DEBIT,
            raw_status=self.get_mandate(mandate_id).raw_status,
            mandate_ref=mandate_id,
        )

    # --- Direct Debit ---------------------------------------------------------------------------------------

    def setup_mandate(self, payer: MandatePayer) -> MandateSetup:
        """A Billing Request with a mandate_request, and the Billing Request Flow the payer completes. A plan's
        schedule goes in the mandate request's ``description``, "displayed to the payer when authorising the
        billing request" (BillingRequest.cs, MandateRequest.Description in gocardless-dotnet)."""
        mandate_request: dict[str, str] = {"currency": self.account.currency}
        if payer.schedule:
            mandate_request["description"] = schedule_text(payer.schedule)
        br = self._call(
            self._billing_requests.create,
            params={
                "mandate_request": mandate_request,
                "metadata": {"payer_key": payer.key[:500]},
            },
            headers={"Idempotency-Key": payer.idempotency_key},
        )
        given, _, family = payer.name.rpartition(" ")
        flow = self._call(
            self._flows.create,
            params={
                "links": {"billing_request": br.id},
                "prefilled_customer": {"email": payer.email, "given_name": given or family, "family_name": family},
            },
        )
        return MandateSetup(ref=br.id, url=flow.authorisation_url)

    def get_mandate(self, ref: str) -> Mandate:
        """A mandate id (MD...) or the setup's billing request id (BRQ...), which leads to the mandate once made."""
        if ref.startswith("BRQ"):
            br = self._call(self._billing_requests.get, ref).attributes
            mandate_id = (br.get("links") or {}).get("mandate_request_mandate")
            if not mandate_id:
                status = SETUP_STATUS.get(br["status"])
                if status is None:
                    raise ProviderError(f"GoCardless billing request {ref} is {br['status']} but made no mandate")
                return Mandate(ref=ref, status=status, raw_status=f"billing_requests.{br['status']}")
            ref = mandate_id
        mandate = self._call(self._mandates.get, ref).attributes
        try:
            status = MandateStatus(mandate["status"])
        except ValueError:
            raise ProviderError(f"GoCardless mandate {ref} has an undocumented status {mandate['status']!r}") from None
        return Mandate(ref=ref, status=status, raw_status=mandate["status"])

    def cancel_mandate(self, ref: str) -> Mandate:
        """While the payer has not finished, the billing request's cancel action ("Immediately cancels a billing
        request, causing all billing request flows to expire": BillingRequestsService.cancel); once a mandate is
        made, the mandate's ("Immediately cancels a mandate and all associated cancellable payments ... will fail
        with a cancellation_failed error if the mandate is already cancelled": MandatesService.cancel). A payer
        who finishes between the read and the cancel made a mandate: it is read again and that is cancelled."""
        current = self.get_mandate(ref)
        if current.ref.startswith("BRQ") and current.status not in SETTLED_MANDATES:
            try:
                self._call(self._billing_requests.cancel, current.ref)
            except LinkNotFound:
                raise
            except ProviderError:
                pass  # fulfilled meanwhile: the mandate it made is cancelled below
            current = self.get_mandate(ref)
        if not current.ref.startswith("BRQ") and current.status not in SETTLED_MANDATES:
            try:
                self._call(self._mandates.cancel, current.ref)
            except LinkNotFound:
                raise
            except ProviderError:
                if self.get_mandate(current.ref).status is not MandateStatus.CANCELLED:
                    raise
            current = self.get_mandate(current.ref)
        return current

    @staticmethod
    def _collection(payment: Mapping[str, Any]) -> Collection:
        try:
            status = CollectionStatus(payment["status"])
        except ValueError:
            raise ProviderError(
                f"GoCardless payment {payment['id']} has an undocumented status {payment['status']!r}"
            ) from None
        charge = payment.get("charge_date")
        return Collection(
            ref=payment["id"],
            status=status,
            amount=from_minor(int(payment["amount"]), payment["currency"]),
            currency=payment["currency"],
            charge_date=dt.date.fromisoformat(charge) if charge else None,
        )

    def create_collection(
        self,
        mandate_ref: str,
        amount: Decimal,
        currency: str,
        charge_date: dt.date | None,
        description: str,
        idempotency_key: str,
    ) -> Collection:
        """A payment against the mandate; without a charge_date GoCardless takes the earliest possible."""
        try:
            minor = to_minor(amount, currency)
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        params: dict[str, Any] = {
            "amount": minor,
            "currency": currency,
            "description": description,
            "links": {"mandate": mandate_ref},
        }
        if charge_date is not None:
            params["charge_date"] = charge_date.isoformat()
        payment = self._call(self._payments.create, params=params, headers={"Idempotency-Key": idempotency_key})
        return self._collection(payment.attributes)

    def get_collection(self, ref: str) -> Collection:
        return self._collection(self._call(self._payments.get, ref).attributes)

    def cancel_collection(self, ref: str) -> Collection:
        """The payments cancel action: GoCardless allows it only while the payment is pending_submission."""
        try:
            return self._collection(self._call(self._payments.cancel, ref).attributes)
        except LinkNotFound:
            raise
        except ProviderError as exc:
            current = self.get_collection(ref)
            if current.status is CollectionStatus.CANCELLED:
                return current
            raise CollectionCancelRefused(
                f"GoCardless would not cancel {ref} ({current.status}): {exc}", current
            ) from exc

    # --- payouts and refunds ---------------------------------------------------------------------------------

    def payouts(self, since: dt.datetime) -> list[Payout]:
        """``GET /payouts?created_at[gte]=``, every page, oldest first."""
        listed = self._list("payouts", self._payouts, since)
        return sorted((_payout(raw) for raw in listed), key=lambda p: (p.created_at, p.ref))

    def payout_items(self, payout_ref: str) -> list[PayoutItem]:
        """``GET /payout_items?payout=``, every page, in whole pence.

        GoCardless keeps some fees to a tenth of a penny and rounds the sum of a payout's items to the nearest
        penny (PayoutItem.cs, ``amount``). Each line is rounded to the penny here, and what that moves is one
        more fee line (``fee_rounding``) - only when the exact sum is within half a penny of the payout, as
        GoCardless's rounding leaves it: items that do not add up (one missing, say) are returned as they are,
        for the payouts engine to report.
        """
        payout = self._call(self._payouts.get, payout_ref).attributes
        currency = payout["currency"]
        listed = self._list("payout_items", self._payout_items, None, payout=payout_ref)
        exact = [_pence(raw) for raw in listed]
        items = [_item(raw, pence, currency, f"{payout_ref}:{n}") for n, (raw, pence) in enumerate(
            zip(listed, exact, strict=True))]
        if abs(sum(exact, Decimal(0)) - int(payout["amount"])) > Decimal("0.5"):
            log.warning("GoCardless payout %s: its items do not add up to its amount", payout_ref)
            return items
        rest = from_minor(int(payout["amount"]), currency) - sum((item.amount for item in items), Decimal(0))
        if rest:
            items.append(PayoutItem(PayoutItemKind.FEE, rest, None, f"{payout_ref}:rounding", "fee_rounding"))
        return items

    def refund(self, payment_ref: str, amount: Decimal, currency: str, reason: str,
               idempotency_key: str) -> Refund:
        """``POST /refunds`` with ``total_amount_confirmation``: what the payment's live refunds come to with this
        one, GoCardless's guard against two refunds made unaware of each other (RefundsService.create). A repeat
        under the key is answered 409 idempotent_creation_conflict, and the SDK then reads that refund back.
        The reason goes in metadata: ``reference`` is printed on the payer's statement, its length set by the
        scheme."""
        try:
            minor = to_minor(amount, currency)
        except DataError as exc:
            raise RefundRefused(str(exc)) from None
        claimed = sum(int(r["amount"]) for r in self._list("refunds", self._refunds, None, payment=payment_ref)
                      if REFUND_STATUS.get(r["status"]) is not RefundStatus.FAILED)
        params = {"amount": minor, "total_amount_confirmation": claimed + minor, "links": {"payment": payment_ref},
                  "metadata": {"reason": reason[:500]}}
        try:
            created = self._call(self._refunds.create, params=params, headers={"Idempotency-Key": idempotency_key})
        except LinkNotFound:
            raise
        except ProviderError as exc:  # 422 validation_failed / invalid_state: more than is left, a wrong state
            raise RefundRefused(f"GoCardless would not refund {payment_ref}: {exc}") from exc
        return _refund(created.attributes)

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
        """``Webhook-Signature`` is the hex HMAC-SHA256 of the raw body under the endpoint secret."""
        if not self.webhook_secret:
            raise ProviderError(f"merchant account {self.account.name!r} has no GoCardless webhook secret")
        given = next((v for k, v in headers.items() if k.lower() == "webhook-signature"), "")
        expected = hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        if not given or not hmac.compare_digest(given, expected):
            raise InvalidSignature("GoCardless webhook signature does not match")
        payments: PaymentCache = {}
        return [e for item in json.loads(body)["events"] if (e := self._read(item, payments)) is not None]


def _payout(raw: Mapping[str, Any]) -> Payout:
    status = PAYOUT_STATUS.get(raw["status"])
    if status is None:
        raise ProviderError(f"GoCardless payout {raw['id']} has an undocumented status {raw['status']!r}")
    arrival = raw.get("arrival_date")
    return Payout(
        ref=raw["id"],
        amount=from_minor(int(raw["amount"]), raw["currency"]),
        currency=raw["currency"],
        status=status,
        created_at=_parse_time(raw["created_at"]),
        arrival_date=dt.date.fromisoformat(arrival) if arrival else None,
        bank_reference=raw.get("reference") or "",
        raw_status=raw["status"],
    )


def _pence(raw: Mapping[str, Any]) -> Decimal:
    """A payout item's ``amount``: a string of pence to one decimal place, signed (PayoutItem.cs), read strictly."""
    text = raw.get("amount")
    if not isinstance(text, str) or not PENCE.fullmatch(text):
        raise ProviderError(f"GoCardless payout item amount {text!r} is not pence to one decimal place")
    return Decimal(text)


def _item(raw: Mapping[str, Any], pence: Decimal, currency: str, place: str) -> PayoutItem:
    """One payout item in whole pence. Items have no id of their own, so one is named by its place in the
    payout; a refund line by its refund (``links.refund``, PayoutItem.cs), so the refund made is found on it."""
    kind = ITEM_KIND.get(raw["type"])
    if kind is None:
        log.warning("GoCardless payout item type %r is undocumented: kept as an adjustment", raw["type"])
        kind = PayoutItemKind.ADJUSTMENT
    whole = pence.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    links = raw.get("links") or {}
    ref = links.get("refund") or place if kind is PayoutItemKind.REFUND else place
    return PayoutItem(kind, from_minor(int(whole), currency), links.get("payment"), ref, raw["type"])


def _refund(raw: Mapping[str, Any]) -> Refund:
    status = REFUND_STATUS.get(raw["status"])
    if status is None:
        raise ProviderError(f"GoCardless refund {raw['id']} has an undocumented status {raw['status']!r}")
    return Refund(
        ref=raw["id"],
        payment_ref=(raw.get("links") or {}).get("payment") or "",
        amount=from_minor(int(raw["amount"]), raw["currency"]),
        currency=raw["currency"],
        status=status,
        created_at=_parse_time(raw["created_at"]),
        raw_status=raw["status"],
    )


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _format_time(value: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as GoCardless writes its own times."""
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
