"""The Acme Pay adapter: payment links and their event feed over Acme's HTTP API (README.md, "The Acme Pay API").

Section numbers (§) are the README's. Only what the Provider contract needs is used: links (§3), the payments on
them (§4) and the event list (§5). Bank payments only; Acme has no mandates, reports no payouts and (in this
example) is not asked for webhooks.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import httpx

from agent.core.errors import ConfigurationError, TransientError
from agent.core.model import MerchantAccount
from connectors.plugins import PluginOptions
from connectors.providers.contract import (
    CancelRefused,
    Capabilities,
    EventKind,
    EventPage,
    LinkNotFound,
    LinkSpec,
    LinkStatus,
    PaymentMethod,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderLink,
    clip,
)

__all__ = ["API_BASE", "AcmePayOptions", "AcmePayProvider"]

API_BASE = "https://api.acmepay.example"  # §1

# Link status -> LinkStatus, exactly Acme's set (§3.2). A pending payment leaves the link outstanding: it is not
# paid until the payment succeeds, and a failed one reopens it.
LINK_STATUS: dict[str, LinkStatus] = {
    "open": LinkStatus.OUTSTANDING,
    "processing": LinkStatus.OUTSTANDING,
    "paid": LinkStatus.PAYMENT_RECEIVED,
    "cancelled": LinkStatus.CANCELLED,
    "expired": LinkStatus.EXPIRED,
}

# Payment status -> EventKind, exactly Acme's set (§4.2). Only "succeeded" is money received.
PAYMENT_KIND: dict[str, EventKind] = {
    "pending": EventKind.PAYMENT_PENDING,
    "succeeded": EventKind.PAYMENT_CONFIRMED,
    "failed": EventKind.PAYMENT_FAILED,
    "reversed": EventKind.PAYMENT_CHARGED_BACK,
}

# Event type -> EventKind (§5.2). payment_link.created is not followed: the agent made the link and knows it.
EVENT_KIND: dict[str, EventKind | None] = {
    "payment_link.created": None,
    "payment_link.cancelled": EventKind.LINK_CANCELLED,
    "payment_link.expired": EventKind.LINK_EXPIRED,
    "payment.pending": EventKind.PAYMENT_PENDING,
    "payment.succeeded": EventKind.PAYMENT_CONFIRMED,
    "payment.failed": EventKind.PAYMENT_FAILED,
    "payment.reversed": EventKind.PAYMENT_CHARGED_BACK,
}

# A closed link in the reconciliation snapshot (§3.2).
CLOSED_KIND: dict[str, EventKind] = {"cancelled": EventKind.LINK_CANCELLED, "expired": EventKind.LINK_EXPIRED}

# Field limits (§3.1): Acme refuses a longer value, so each is cut to its limit here.
DESCRIPTION_MAX, REFERENCE_MAX, NAME_MAX, METADATA_VALUE_MAX, METADATA_KEY_MAX, METADATA_KEYS = 140, 35, 70, 500, 40, 20

PAGE_MAX = 100  # §3.6, §5.3
SNAPSHOT_MARGIN = dt.timedelta(days=1)  # "list generously before since" (Provider.snapshot)


class AcmePayOptions(PluginOptions):
    """An account's ``options`` for Acme Pay."""

    return_url: str | None = None  # where Acme sends the payer after paying (§3.1 return_url)
    timeout: float = 30.0  # seconds per HTTP request, connect and read


class AcmePayProvider(Provider):
    """One Acme Pay account, talking to ``account.api_base`` (default ``https://api.acmepay.example``)."""

    name = "acmepay"
    capabilities = Capabilities(
        methods=(PaymentMethod.BANK,),  # Acme takes bank payments only
        max_expiry=dt.timedelta(days=30),  # §3.1 expires_at: at most 30 days after creation
        # stable_url: True (§3.1: one URL for the life of the link); reports_expiry: True (§3.2 expired);
        # cancelled_status and cancel_event: the defaults (§3.5 cancelled, §5.2 payment_link.cancelled);
        # shows_firm_name: True (§3.1 payee_name is shown as who is paid).
        shows_disclaimer=False,  # §3.1: the pay page has no place for a free-text notice
        webhooks=False,  # Acme's webhooks are not used by this example; the event feed (§5.3) is polled
    )
    Options = AcmePayOptions
    options: AcmePayOptions

    _client: httpx.Client | None
    _STATUS_NAMES: ClassVar[dict[int, str]] = {401: "the API key was refused", 403: "the API key may not do this"}

    def __init__(self, account: MerchantAccount, credentials: str | None, *, home: str | None = None) -> None:
        super().__init__(account, credentials, home=home)
        self._client = None

    # --- links (§3) ---------------------------------------------------------------------------------------------

    def create_link(self, spec: LinkSpec) -> ProviderLink:
        # The payer knows the debt by the description, the matter and the invoices: all three go in the shown
        # description (§3.1), the invoices (else the matter) also in the reference. link_id and metadata are
        # for Acme's records only (metadata is never shown, §3.1).
        description = spec.description + (f" ({spec.paying_for})" if spec.paying_for else "")
        body: dict[str, Any] = {
            "amount": _money(spec.amount),
            "currency": spec.currency,
            "description": clip(description, DESCRIPTION_MAX),
            "expires_at": _time(spec.expires_at),
            "payer": {"name": clip(spec.payer_name, NAME_MAX), "email": spec.payer_email},
            "metadata": _metadata({"link_id": spec.link_id, **spec.metadata}),
        }
        if spec.reference:
            body["reference"] = clip(spec.reference, REFERENCE_MAX)
        if spec.firm_name:
            body["payee_name"] = clip(spec.firm_name, NAME_MAX)
        if self.options.return_url:
            body["return_url"] = self.options.return_url
        # §2.3: the same key and body answer the original link, so a create retried after a timeout makes one.
        return _link(self._call("POST", "/v1/payment_links", json=body, idempotency_key=spec.idempotency_key))

    def get_link(self, ref: str) -> ProviderLink:
        try:
            return _link(self._call("GET", f"/v1/payment_links/{ref}"))
        except _NotFound:
            raise LinkNotFound(f"Acme Pay has no link {ref!r}") from None

    def cancel_link(self, ref: str) -> ProviderLink:
        try:
            # One key per link: a cancel retried after a timeout is answered as the first was (§2.3).
            answer = self._call("POST", f"/v1/payment_links/{ref}/cancel", json={}, idempotency_key=f"cancel-{ref}")
        except _NotFound:
            raise LinkNotFound(f"Acme Pay has no link {ref!r}") from None
        except _Conflict as refused:  # §3.5: paid, processing, expired or already cancelled
            link = self.get_link(ref)
            raise CancelRefused(f"Acme Pay would not cancel link {ref} ({link.status}): {refused}", link) from None
        return _link(answer)

    # --- events (§5) --------------------------------------------------------------------------------------------

    def events(self, cursor: str | None, limit: int = 100) -> EventPage:
        params: dict[str, str | int] = {"limit": max(1, min(limit, PAGE_MAX))}
        if cursor:
            params["after"] = cursor
        page = self._call("GET", "/v1/events", params=params)
        data = page.get("data")
        if not isinstance(data, list):
            raise ProviderError(f"Acme Pay answered an event list without data: {page!r}")
        events = [event for raw in data if (event := _event(raw)) is not None]
        # The cursor is the last event *read*, followed or not (§5.3 after=), so a page of unfollowed events moves
        # the feed on; a page with nothing new keeps the cursor it was given.
        last = next((raw.get("id") for raw in reversed(data) if isinstance(raw, dict) and raw.get("id")), None)
        return EventPage(events=events, cursor=str(last) if last else cursor, has_more=bool(page.get("has_more")))

    def event(self, event_id: str) -> ProviderEvent | None:
        try:
            raw = self._call("GET", f"/v1/events/{event_id}")
        except _NotFound:
            return None  # §5.3: events are kept for 30 days
        return _event(raw)

    def snapshot(self, since: dt.datetime) -> list[ProviderEvent]:
        """Every link created since ``since`` (a day's margin), its payments at their current status and a closed
        link as closed; ids ``reconcile:<ref>:<status>``."""
        params: dict[str, str | int] = {"created_after": _time(since - SNAPSHOT_MARGIN), "limit": PAGE_MAX}
        found: list[ProviderEvent] = []
        while True:
            page = self._call("GET", "/v1/payment_links", params=params)
            links = page.get("data") or []
            for link in links:
                found.extend(_reconciled(link))
            if not page.get("has_more") or not links:
                return found
            params["starting_after"] = str(links[-1]["id"])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- the wire -----------------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            if not self.credentials:
                raise ConfigurationError(f"account {self.account.name!r} has no Acme Pay API key (credentials)")
            self._client = httpx.Client(
                base_url=(self.account.api_base or API_BASE).rstrip("/"),
                headers={"Authorization": f"Bearer {self.credentials}", "Accept": "application/json"},  # §1.1
                timeout=self.options.timeout,
            )
        return self._client

    def _call(self, method: str, path: str, *, json: dict[str, Any] | None = None,
              params: dict[str, str | int] | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}  # §2.3
        try:
            response = self._http().request(method, path, json=json, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientError(f"Acme Pay did not answer {method} {path} in {self.options.timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"Acme Pay could not be reached ({method} {path}): {exc}") from exc
        status = response.status_code
        if status < 400:
            try:
                body = response.json()
            except ValueError as exc:
                raise TransientError(f"Acme Pay answered {method} {path} with a body that is not JSON") from exc
            if not isinstance(body, dict):
                raise ProviderError(f"Acme Pay answered {method} {path} with {body!r}")
            return body
        raise self._refusal(response, f"Acme Pay refused {method} {path}: {status} {_error(response)}")

    def _refusal(self, response: httpx.Response, message: str) -> Exception:
        """§2.1's statuses as the error tree has them: 429 (§2.2) and 5xx retried, the rest refused for good."""
        status = response.status_code
        if status == 429 or status >= 500:  # 5xx api_error: Acme's fault; the same key makes a retry safe (§2.3)
            return TransientError(message, retry_after=_retry_after(response.headers.get("Retry-After")))
        if status == 404:
            return _NotFound(message)
        if status == 409:
            return _Conflict(message)
        if status in self._STATUS_NAMES:
            return ProviderError(f"{message} ({self._STATUS_NAMES[status]} for account {self.account.name!r})")
        return ProviderError(message)


class _NotFound(ProviderError):
    """§2.1 404 not_found; each caller says what was missing (LinkNotFound for a link)."""


class _Conflict(ProviderError):
    """§2.1 409 conflict: the resource's state forbids the request."""


# --- mapping Acme's objects -------------------------------------------------------------------------------------


def _link(raw: dict[str, Any]) -> ProviderLink:
    status = raw.get("status")
    if status not in LINK_STATUS:
        raise ProviderError(f"Acme Pay link {raw.get('id')!r} has an undocumented status {status!r}")
    paid = raw.get("amount_paid")
    return ProviderLink(
        ref=str(raw["id"]),
        url=str(raw["url"]),
        status=LINK_STATUS[status],
        expires_at=_parse_time(raw["expires_at"]) if raw.get("expires_at") else None,
        amount_paid=_amount(paid) if paid is not None else None,
    )


def _event(raw: object) -> ProviderEvent | None:
    """One Acme event as the agent's, None for a type it does not follow, UNREADABLE for one it cannot read."""
    event_id = str(raw.get("id", "")) if isinstance(raw, dict) else ""
    try:
        if not isinstance(raw, dict):
            raise TypeError(f"an event that is not an object: {raw!r}")
        kind_of = raw["type"]
        if kind_of not in EVENT_KIND:
            # §5.2 "new types may be added": one the agent does not know is parked, visible, not dropped.
            raise ValueError(f"undocumented event type {kind_of!r}")
        kind = EVENT_KIND[kind_of]
        if kind is None:
            return None
        obj = raw["data"]["object"]
        occurred = _parse_time(raw["created_at"])
        if kind_of.startswith("payment."):
            if PAYMENT_KIND.get(obj["status"]) is not kind:
                raise ValueError(f"{kind_of} event for a payment that is {obj['status']!r}")
            return _payment_event(event_id, kind, occurred, obj)
        return ProviderEvent(event_id=event_id, kind=kind, occurred_at=occurred, link_ref=str(obj["id"]),
                             payment_ref=None, amount=None, currency=None, raw_status=str(obj["status"]))
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        return ProviderEvent(event_id=event_id or "unknown", kind=EventKind.UNREADABLE,
                             occurred_at=dt.datetime.now(dt.UTC), link_ref=None, payment_ref=None, amount=None,
                             currency=None, error=f"Acme Pay event {event_id or '?'} could not be read: {exc}")


def _payment_event(event_id: str, kind: EventKind, occurred: dt.datetime, payment: dict[str, Any]) -> ProviderEvent:
    return ProviderEvent(event_id=event_id, kind=kind, occurred_at=occurred, link_ref=str(payment["payment_link"]),
                         payment_ref=str(payment["id"]), amount=_amount(payment["amount"]),
                         currency=str(payment["currency"]), method=PaymentMethod.BANK,
                         raw_status=str(payment["status"]))


def _reconciled(link: dict[str, Any]) -> list[ProviderEvent]:
    """A link's payments at their status now, and the link itself if it closed unpaid (§3.1, §4.1)."""
    found = []
    for payment in link.get("payments") or []:
        ref, status = payment.get("id"), payment.get("status")
        kind = PAYMENT_KIND.get(status)
        event_id = f"reconcile:{ref}:{status}"
        if kind is None:
            found.append(ProviderEvent(event_id=event_id, kind=EventKind.UNREADABLE,
                                       occurred_at=dt.datetime.now(dt.UTC), link_ref=link.get("id"),
                                       payment_ref=ref, amount=None, currency=None,
                                       error=f"Acme Pay payment {ref} has an undocumented status {status!r}"))
            continue
        found.append(_payment_event(event_id, kind, _parse_time(payment["updated_at"]), payment))
    if link.get("status") in CLOSED_KIND:
        found.append(ProviderEvent(event_id=f"reconcile:{link['id']}:{link['status']}",
                                   kind=CLOSED_KIND[link["status"]], occurred_at=_parse_time(link["created_at"]),
                                   link_ref=str(link["id"]), payment_ref=None, amount=None, currency=None,
                                   raw_status=str(link["status"])))
    return found


# --- values -----------------------------------------------------------------------------------------------------


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"  # §1.3; Acme's currencies all have two decimals


def _amount(text: object) -> Decimal:
    if not isinstance(text, str):  # §1.3: money is a string; a JSON number would have lost pennies already
        raise ValueError(f"amount {text!r} is not a decimal string")
    return Decimal(text)


def _time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # §1.4


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _metadata(values: dict[str, str]) -> dict[str, str]:
    """§3.1: at most 20 keys of 40 characters, values of 500."""
    return {clip(key, METADATA_KEY_MAX): clip(value, METADATA_VALUE_MAX)
            for key, value in list(values.items())[:METADATA_KEYS]}


def _error(response: httpx.Response) -> str:
    """§2.1's envelope as one line, or the start of whatever came instead (a proxy's HTML page)."""
    try:
        error = response.json()["error"]
        return f"{error['type']}/{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _retry_after(value: str | None) -> float | None:
    """§2.2 gives seconds; an HTTP date (RFC 9110 allows one) is read too."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
