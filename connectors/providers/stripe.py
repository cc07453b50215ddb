"""Stripe single-use Checkout Sessions; the link ref is the session id, payments are learnt from /v1/events.

Stripe lists newest first; ``ending_before=<id>`` returns the page immediately newer than ``<id>`` (still
newest first), so reading forward is ``ending_before=<last seen>`` reversed (docs.stripe.com/api/pagination).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import stripe

from agent.core.errors import DataError, TransientError
from agent.core.model import MerchantAccount, from_minor, to_minor
from connectors.providers.contract import (
    CancelRefused,
    EventKind,
    EventPage,
    InvalidSignature,
    LinkNotFound,
    LinkSpec,
    LinkStatus,
    PaymentMethod,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderLink,
)
from connectors.providers.gocardless import retry_after

T = TypeVar("T")

EVENT_TYPES = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.dispute.created",
)
TOLERANCE = 300  # seconds, as Stripe's own libraries
DEFAULT_TIMEOUT = 20.0
PAGE = 100  # Stripe's maximum page size


def _translate(exc: stripe.StripeError) -> Exception:
    """Map Stripe errors onto the agent's: transient ones are retried by agent.core.retry alone."""
    status = exc.http_status
    if isinstance(exc, stripe.RateLimitError):
        headers = {k.title(): v for k, v in (exc.headers or {}).items()}
        return TransientError("Stripe rate limit reached", retry_after=retry_after(headers))
    if isinstance(exc, stripe.APIConnectionError) or status is None or status >= 500:
        return TransientError(f"Stripe unreachable or failing ({status}): {exc.user_message or exc}")
    if status == 404:
        return LinkNotFound(f"Stripe: {exc.user_message or exc}")
    return ProviderError(f"Stripe refused the request ({status}): {exc.user_message or exc}")


class StripeProvider(Provider):
    name: ClassVar[str] = "stripe"
    # Checkout Session expires_at "must be between 30 minutes and 24 hours after the current time"
    # (docs.stripe.com/payments/checkout/managing-limited-inventory).
    max_expiry: ClassVar[dt.timedelta] = dt.timedelta(hours=24)
    methods: ClassVar[tuple[PaymentMethod, ...]] = (PaymentMethod.CARD, PaymentMethod.BANK)

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

    def create_link(self, spec: LinkSpec) -> ProviderLink:
        try:
            minor = to_minor(spec.amount, spec.currency)
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        metadata = {
            "link_id": spec.link_id,
            **({"reference": spec.reference} if spec.reference else {}),
            **spec.metadata,
        }
        session = self._call(
            self._client.v1.checkout.sessions.create,
            params={
                "mode": "payment",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": spec.currency.lower(),
                            "unit_amount": minor,
                            "product_data": {"name": spec.description},
                        },
                    }
                ],
                "expires_at": int(spec.expires_at.timestamp()),
                "client_reference_id": spec.link_id,
                "customer_email": spec.payer_email,
                "metadata": metadata,
                "payment_intent_data": {"metadata": {"link_id": spec.link_id}},
            },
            options={"idempotency_key": spec.idempotency_key},
        )
        return self._link(session.to_dict())

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
        if cursor is None:
            raw, has_more = self._oldest(limit)
        else:
            page = self._list(ending_before=cursor, limit=min(limit, PAGE))
            raw, has_more = list(reversed(page["data"])), bool(page["has_more"])
        mapped = [event for item in raw if (event := self._map(item)) is not None]
        return EventPage(mapped, raw[-1]["id"] if raw else cursor, has_more=has_more)

    def _list(self, **params: Any) -> dict[str, Any]:
        page = self._call(self._client.v1.events.list, params={"types": list(EVENT_TYPES), **params})
        return page.to_dict()

    def _oldest(self, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """From the beginning: page back through the (30 days of) retained events to the oldest."""
        records: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": PAGE}
        while True:
            page = self._list(**params)
            records.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                return list(reversed(records))[:limit], len(records) > limit
            params["starting_after"] = page["data"][-1]["id"]

    def _map(self, raw: Mapping[str, Any]) -> ProviderEvent | None:
        obj = raw["data"]["object"]
        occurred = dt.datetime.fromtimestamp(raw["created"], dt.UTC)
        kind: EventKind | None
        event_type = raw["type"]
        if event_type == "charge.dispute.created":
            intent = obj.get("payment_intent")
            sessions = (
                self._call(
                    self._client.v1.checkout.sessions.list, params={"payment_intent": intent, "limit": 1}
                )
                if intent
                else None
            )
            link_ref = sessions.data[0].id if sessions and sessions.data else None
            return ProviderEvent(
                raw["id"],
                EventKind.PAYMENT_CHARGED_BACK,
                occurred,
                link_ref,
                intent,
                from_minor(int(obj["amount"]), obj["currency"].upper()),
                obj["currency"].upper(),
                PaymentMethod.CARD,
                raw_status=event_type,
            )
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
        event = self._map(json.loads(body))
        return [event] if event is not None else []
