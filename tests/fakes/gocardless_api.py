"""A local GoCardless API: billing requests, billing request flows, payments and events, JSON as documented.

Sources (cite them when changing behaviour here): the gocardless-pro SDK in the venv (``services/*_service.py``
doc comments, which come from the API reference), gocardless/gocardless-dotnet ``GoCardless/Services/
EventService.cs``, ``Resources/Payment.cs``, ``Resources/BillingRequest.cs``, and /work/shared/notes/provider-apis.md.

* Lists are newest first with ``meta.cursors``; ``after=X`` pages to older records ("cursor pointing to the start
  of the desired set"), ``before=X`` to newer ones ("the end of the desired set"); ``created_at[gt|gte|lt|lte]``
  limit by creation time (EventListRequest.CreatedAtParam).
* Event creation is asynchronous: ``delay_events()`` holds new events back, with their creation times, until
  ``release_events()``, so an event can appear after newer ones (EventService.cs: "it can take some time between
  an action occurring and its corresponding event getting included in API responses").
* A Payment's links have no billing request; the billing request's ``fulfilled`` event carries
  ``links.payment_request_payment`` (Payment.cs; woocommerce-gateway-gocardless class-wc-gocardless-gateway.php).
* Billing request statuses: pending, ready_to_fulfil, fulfilling, fulfilled, cancelled (BillingRequest.cs): no
  expired or failed. A flow expires 7 days after creation and cannot be read back (only create and initialise).
* A retried payment: ``resubmission_requested`` (status pending_submission), then submitted and confirmed or
  failed (PaymentsService.retry in gocardless_pro/services/payments_service.py).
* Metadata (billing requests, their payment requests, payments, refunds): "up to 3 keys, with key names up to 50
  characters and values up to 500 characters" (the API reference, on every metadata parameter); more is a 422
  validation_failed naming the field. The payer's payment page shows the creditor's name, the amount and the
  payment request's ``description`` (``payer_view``); metadata is never shown. A mandate-only request's page shows
  the mandate request's ``description`` ("displayed to the payer when authorising the billing request").
* Event times are strictly increasing here (a millisecond apart at least); the real API can give several events
  one millisecond, which the adapter's cursor tolerates (connectors/providers/cursor.py).

Payouts, payout items and refunds (gocardless-dotnet ``Resources/Payout.cs``, ``PayoutItem.cs``, ``Refund.cs``;
gocardless_pro ``services/payout_items_service.py``, ``refunds_service.py``; developer.gocardless.com
"Reconciling payouts" and "Handling tax"):

* A payout has ``amount`` and ``deducted_fees`` in pence, ``reference`` (what the bank statement shows),
  ``arrival_date``, ``status`` pending / paid / bounced, ``links.creditor_bank_account``. ``GET /payouts`` pages
  like every list.
* ``GET /payout_items?payout=`` (payout required) is cursor-paged; items have no id. Each has ``type``,
  ``amount`` - a *string* of pence to one decimal place, positive for a credit and negative for a debit -,
  ``taxes`` and ``links`` (payment; mandate and refund on refund lines). Types: payment_paid_out (credit),
  payment_failed, payment_charged_back, payment_refunded, refund (debits), refund_funds_returned (credit),
  gocardless_fee, app_fee, revenue_share, surcharge_fee (debit, or credit when a failure or chargeback gives the
  fee back). Fees are "inclusive of VAT": ``taxes`` breaks the VAT out of the fee's own amount. GoCardless keeps
  some fees to a tenth of a penny and rounds the sum of a payout's items to the nearest penny.
* The fake's fee is 1% + 20p plus 20% VAT, each to a tenth of a penny, so a payout exercises that rounding.
  ``settle(gross=True)`` is a creditor whose fees are invoiced: no fee lines, ``deducted_fees`` 0.
* ``POST /refunds`` takes ``amount``, ``total_amount_confirmation`` (what the payment's refunds come to with
  this one; a mismatch is ``total_amount_confirmation_invalid``), ``links.payment``, ``reference``, ``metadata``;
  a repeat under an Idempotency-Key is 409 idempotent_creation_conflict naming the refund. A refund starts
  ``created``; statuses pending_submission, submitted, paid, cancelled, bounced, funds_returned follow. The fake
  refuses a refund of a payment not confirmed or paid out, and one over what is left, with a 422 (its wording is
  the fake's: the SDK documents no code for them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from agent.core.model import to_minor
from connectors.testkit.fakehttp import FakeAPI, Json, Request, Response, json_response

SECRET = "gc-webhook-secret"
FEE_RATE, FEE_FIXED, VAT_RATE = Decimal("0.01"), Decimal(20), Decimal("0.2")  # pence
TENTH = Decimal("0.1")
LIVE_REFUND = ("created", "pending_submission", "submitted", "paid")  # those still claiming part of the payment


def _pence(value: Decimal) -> str:
    """A payout item amount as GoCardless writes it: pence to one decimal place, in a string."""
    return str(value.quantize(TENTH))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _normal(value: str) -> str:
    """A created_at bound as the fake writes times (UTC, milliseconds, Z), so strings compare in time order."""
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, error_type: str, message: str, errors: list[dict[str, object]]) -> dict[str, object]:
    return {
        "error": {
            "type": error_type,
            "code": status,
            "message": message,
            "errors": errors,
            "documentation_url": f"https://developer.gocardless.com/api-reference#{error_type}",
            "request_id": "deadbeef-0000-4000-8000-000000000000",
        }
    }


CREDITOR_NAME = "Ledgerlink Test Creditor"  # the creditor's name, set in GoCardless's dashboard


def _metadata_problem(metadata: Json) -> str | None:
    """What breaks the API reference's metadata limits (3 keys, keys to 50 characters, values to 500)."""
    if len(metadata) > 3:
        return "must have at most 3 keys"
    if any(len(k) > 50 for k in metadata):
        return "keys must be at most 50 characters"
    if any(not isinstance(v, str) or len(v) > 500 for v in metadata.values()):
        return "values must be strings of at most 500 characters"
    return None


class FakeGoCardless(FakeAPI):
    def __init__(self, ids_from: int = 1) -> None:
        """``ids_from``: where this server's ids start, so two accounts' servers never share an id (the
        provider's ids are unique across its accounts)."""
        super().__init__()
        self._ids = itertools.count(ids_from)
        self.billing_requests: dict[str, Json] = {}
        self.flows: dict[str, Json] = {}
        self.payments: dict[str, Json] = {}
        self.mandates: dict[str, Json] = {}
        self.events: list[Json] = []  # as published (visible), in publication order
        self._held: list[Json] | None = None  # created but not yet visible (delay_events)
        self._last_stamp: dt.datetime | None = None
        self._keys: dict[tuple[str, str], str] = {}
        self.payouts: dict[str, Json] = {}
        self.payout_items: dict[str, list[Json]] = {}
        self.refunds: dict[str, Json] = {}
        self._owed: list[Json] = []  # payout items not yet in a payout (refunds, chargebacks)
        self._fee_taken: set[str] = set()  # payments whose fee a payout deducted (given back on a chargeback)
        self.max_page = 500  # the API's largest page; limit_pages makes it smaller

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):012d}"

    def error_body(self, status: int) -> object:
        if status == 429:
            return _error(
                429,
                "invalid_api_usage",
                "Rate limit exceeded",
                [{"reason": "rate_limit_exceeded", "message": "Rate limit exceeded"}],
            )
        return _error(
            status,
            "gocardless",
            "Uh-oh! We've hit an error",
            [{"reason": "internal_server_error", "message": "Uh-oh! We've hit an error"}],
        )

    # --- the API -------------------------------------------------------------------------------------------

    def route(self, request: Request) -> Response:
        """Creates (POST /kind), cancels (POST /kind/id/actions/cancel), reads (GET /kind/id), lists (GET /kind)."""
        body = json.loads(request.body or b"{}")
        method, path = request.method, request.path
        if method == "POST" and (build := self._builders().get(path)):
            kind = path.removeprefix("/")
            return self._create(request, kind, body.get(kind, {}), build)
        if method == "POST" and (m := re.fullmatch(r"/(billing_requests|payments|mandates)/(\w+)/actions/cancel",
                                                    path)):
            return {"billing_requests": self._cancel, "payments": self._cancel_payment,
                    "mandates": self._cancel_mandate}[m[1]](m[2])
        if method == "GET" and (m := re.fullmatch(r"/(\w+)/(\w+)", path)):
            return self._read(m[1], m[2])
        if method == "GET" and (records := self._lists().get(path)):
            return self._list(request, path.removeprefix("/"), records())
        if method == "GET" and path == "/refunds":  # filtered by links.payment (RefundListRequest.payment)
            payment = request.param("payment")
            return self._list(request, "refunds", [r for r in self.refunds.values()
                                                   if payment in (None, r["links"]["payment"])])
        if method == "GET" and path == "/payout_items":
            return self._list_items(request)
        return self._not_found()

    def _builders(self) -> dict[str, Callable[[Json], Json | Response]]:
        """What makes each resource a POST creates, by path (the body wraps its parameters under the kind)."""
        return {"/billing_requests": self._new_br, "/billing_request_flows": self._new_flow,
                "/payments": self._new_payment, "/refunds": self._new_refund}

    def _lists(self) -> dict[str, Callable[[], list[dict[str, Any]]]]:
        """The records each listable path pages through, newest first (see _list)."""
        return {"/events": lambda: self.events, "/payments": lambda: list(self.payments.values()),
                "/billing_requests": lambda: list(self.billing_requests.values()),
                "/payouts": lambda: list(self.payouts.values())}

    def _read(self, kind: str, ident: str) -> Response:
        """One resource by id, wrapped under its kind as the API does; 404 for an unknown kind or id (flows
        cannot be read back)."""
        lookups: dict[str, Callable[[str], dict[str, Any] | None]] = {
            "billing_requests": self.billing_requests.get, "mandates": self.mandates.get,
            "payments": self.payments.get, "payouts": self.payouts.get, "refunds": self.refunds.get,
            "events": lambda i: next((e for e in self.events if e["id"] == i), None),
        }
        lookup = lookups.get(kind)
        found = lookup(ident) if lookup else None
        return json_response(200, {kind: found}) if found else self._not_found()

    def _not_found(self) -> Response:
        return json_response(
            404,
            _error(
                404,
                "invalid_api_usage",
                "Resource not found",
                [{"reason": "resource_not_found", "message": "Resource not found"}],
            ),
        )

    def _create(self, request: Request, kind: str, params: Json, build: Callable[[Json], Json | Response]) -> Response:
        key = request.headers.get("Idempotency-Key")
        if key and (kind, key) in self._keys:
            return json_response(
                409,
                _error(
                    409,
                    "invalid_state",
                    "A resource has already been created with this idempotency key",
                    [
                        {
                            "reason": "idempotent_creation_conflict",
                            "message": "A resource has already been created with this idempotency key",
                            "links": {"conflicting_resource_id": self._keys[(kind, key)]},
                        }
                    ],
                ),
            )
        created = build(params)
        if isinstance(created, tuple):
            return created
        if key:
            self._keys[(kind, key)] = created["id"]
        return json_response(201, {kind: created})

    def _new_br(self, params: Json) -> Json | Response:
        if params.get("mandate_request") and not params.get("payment_request"):
            return self._new_mandate_br(params)
        pr = params.get("payment_request") or {}
        for pointer, metadata in (("/billing_requests/metadata", params.get("metadata")),
                                  ("/billing_requests/payment_request/metadata", pr.get("metadata"))):
            if (problem := _metadata_problem(metadata or {})) is not None:
                return self._invalid("metadata", problem, pointer)
        amount = pr.get("amount")
        if not isinstance(amount, int) or amount <= 0:
            return json_response(
                422,
                _error(
                    422,
                    "validation_failed",
                    "Validation failed",
                    [
                        {
                            "field": "amount",
                            "message": "must be greater than 0",
                            "request_pointer": "/billing_requests/payment_request/amount",
                        }
                    ],
                ),
            )
        if pr.get("currency") not in ("GBP", "EUR"):
            return json_response(
                422,
                _error(
                    422,
                    "validation_failed",
                    "Validation failed",
                    [
                        {
                            "field": "currency",
                            "message": "is not supported for instant payments",
                            "request_pointer": "/billing_requests/payment_request/currency",
                        }
                    ],
                ),
            )
        br: Json = {
            "id": self._id("BRQ"),
            "created_at": _now(),
            "status": "pending",
            "mandate_request": None,
            "payment_request": {
                "amount": amount,
                "currency": pr["currency"],
                "description": pr.get("description"),
                "scheme": "faster_payments",
                "metadata": pr.get("metadata") or {},
                "links": {},
            },
            "metadata": params.get("metadata") or {},
            "links": {
                "customer": self._id("CU"),
                "creditor": "CR000000000001",
                "payment_request": self._id("PRQ"),
            },
            "actions": [],
            "fallback_enabled": False,
        }
        self.billing_requests[br["id"]] = br
        self._event("billing_requests", "created", billing_request=br["id"])
        return br

    def _new_mandate_br(self, params: Json) -> Json:
        currency = params["mandate_request"].get("currency", "GBP")
        br: Json = {
            "id": self._id("BRQ"),
            "created_at": _now(),
            "status": "pending",
            "mandate_request": {"currency": currency, "scheme": "bacs" if currency == "GBP" else "sepa_core",
                                "description": params["mandate_request"].get("description"), "links": {}},
            "payment_request": None,
            "metadata": params.get("metadata") or {},
            "links": {"customer": self._id("CU"), "creditor": "CR000000000001", "mandate_request": self._id("MRQ")},
            "actions": [],
            "fallback_enabled": False,
        }
        self.billing_requests[br["id"]] = br
        self._event("billing_requests", "created", billing_request=br["id"])
        return br

    def _invalid(self, field: str, message: str, pointer: str) -> Response:
        return json_response(
            422,
            _error(422, "validation_failed", "Validation failed",
                   [{"field": field, "message": message, "request_pointer": pointer}]),
        )

    def _new_payment(self, params: Json) -> Json | Response:
        """POST /payments against a mandate, which must be pending_customer_approval, pending_submission,
        submitted or active (the API reference)."""
        mandate = self.mandates.get((params.get("links") or {}).get("mandate", ""))
        if mandate is None:
            return self._invalid("mandate", "not found", "/payments/links/mandate")
        if mandate["status"] not in ("pending_customer_approval", "pending_submission", "submitted", "active"):
            return json_response(
                422,
                _error(422, "invalid_state", "Mandate is inactive",
                       [{"reason": "mandate_is_inactive", "message": "The mandate is not active"}]),
            )
        amount = params.get("amount")
        if not isinstance(amount, int) or amount <= 0:
            return self._invalid("amount", "must be greater than 0", "/payments/amount")
        payment = {
            "id": self._id("PM"),
            "created_at": _now(),
            "charge_date": params.get("charge_date") or dt.date.today().isoformat(),
            "status": "pending_submission",
            "amount": amount,
            "currency": params.get("currency"),
            "description": params.get("description"),
            "scheme": mandate["scheme"],
            "metadata": params.get("metadata") or {},
            "links": {"mandate": mandate["id"], "creditor": "CR000000000001"},
        }
        self.payments[payment["id"]] = payment
        self._event("payments", "created", payment=payment["id"])
        return payment

    def _cancel_payment(self, payment_id: str) -> Response:
        payment = self.payments.get(payment_id)
        if payment is None:
            return self._not_found()
        if payment["status"] != "pending_submission":
            return json_response(
                422,
                _error(422, "invalid_state", "Payment cannot be cancelled",
                       [{"reason": "cancellation_failed", "message": f"This payment is {payment['status']}"}]),
            )
        self._set(payment_id, "cancelled")
        return json_response(200, {"payments": payment})

    def _new_flow(self, params: Json) -> Json | Response:
        br_id = (params.get("links") or {}).get("billing_request")
        if br_id not in self.billing_requests:
            return json_response(
                422,
                _error(
                    422,
                    "validation_failed",
                    "Validation failed",
                    [
                        {
                            "field": "billing_request",
                            "message": "not found",
                            "request_pointer": "/billing_request_flows/links/billing_request",
                        }
                    ],
                ),
            )
        created = dt.datetime.now(dt.UTC)
        flow_id = self._id("BRF")
        flow = {
            "id": flow_id,
            "created_at": _now(),
            "auto_fulfil": True,
            "lock_currency": params.get("lock_currency"),
            "authorisation_url": f"https://pay-sandbox.gocardless.com/billing/static/flow?id={flow_id}",
            "expires_at": (created + dt.timedelta(days=7))
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "prefilled_customer": params.get("prefilled_customer") or {},
            "links": {"billing_request": br_id},
        }
        self.flows[flow_id] = flow
        return flow

    def _cancel(self, br_id: str) -> Response:
        br = self.billing_requests.get(br_id)
        if br is None:
            return self._not_found()
        if br["status"] in ("fulfilled", "fulfilling", "cancelled"):
            return json_response(
                422,
                _error(
                    422,
                    "invalid_state",
                    "Billing request cannot be cancelled",
                    [
                        {
                            "reason": f"billing_request_{br['status']}",
                            "message": f"This billing request is {br['status']} and cannot be cancelled",
                        }
                    ],
                ),
            )
        br["status"] = "cancelled"
        self._event("billing_requests", "cancelled", billing_request=br_id)
        return json_response(200, {"billing_requests": br})

    def _cancel_mandate(self, mandate_id: str) -> Response:
        """POST /mandates/{id}/actions/cancel: "Immediately cancels a mandate and all associated cancellable
        payments ... This will fail with a `cancellation_failed` error if the mandate is already cancelled"
        (MandatesService.cancel, gocardless_pro/services/mandates_service.py, from the API reference)."""
        mandate = self.mandates.get(mandate_id)
        if mandate is None:
            return self._not_found()
        if mandate["status"] == "cancelled":
            return json_response(422, _error(422, "invalid_state", "Mandate is already cancelled", [
                {"reason": "cancellation_failed", "message": "Mandate is already cancelled"}]))
        self.set_mandate(mandate_id, "cancelled")
        return json_response(200, {"mandates": mandate})

    def _list(self, request: Request, kind: str, records: list[Json]) -> Response:
        """Newest first by created_at, filtered by created_at[...] and paged by after/before (cursor pagination)."""
        limit = min(int(request.param("limit") or 50), self.max_page)
        newest_first = sorted(records, key=lambda r: (r["created_at"], r["id"]), reverse=True)
        for op, keep in (("gt", str.__gt__), ("gte", str.__ge__), ("lt", str.__lt__), ("lte", str.__le__)):
            bound = request.param(f"created_at[{op}]")
            if bound:
                bound = _normal(bound)
                newest_first = [r for r in newest_first if keep(r["created_at"], bound)]
        ids = [r["id"] for r in newest_first]
        after, before = request.param("after"), request.param("before")
        if after:
            start = ids.index(after) + 1 if after in ids else len(ids)
            page = newest_first[start : start + limit]
        elif before:
            end = ids.index(before) if before in ids else 0
            page = newest_first[max(0, end - limit) : end]
        else:
            page = newest_first[:limit]
        first = ids.index(page[0]["id"]) if page else 0
        last = ids.index(page[-1]["id"]) if page else 0
        cursors = {
            "before": page[0]["id"] if page and first > 0 else None,
            "after": page[-1]["id"] if page and last < len(ids) - 1 else None,
        }
        return json_response(200, {kind: page, "meta": {"cursors": cursors, "limit": limit}})

    # --- the payer and the back office ---------------------------------------------------------------------

    def _stamp(self) -> str:
        now = dt.datetime.now(dt.UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + dt.timedelta(milliseconds=1)
        self._last_stamp = now
        return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _event(self, resource_type: str, action: str, **links: str) -> None:
        event = {
            "id": self._id("EV"),
            "created_at": self._stamp(),
            "resource_type": resource_type,
            "action": action,
            "links": links,
            "details": {
                "origin": "gocardless",
                "cause": f"{resource_type}_{action}",
                "description": f"{resource_type} {action} [fake]",
            },
            "metadata": {},
        }
        (self.events if self._held is None else self._held).append(event)

    def delay_events(self) -> None:
        """Events created from now on exist (with their times) but are not listed until release_events."""
        with self.lock:
            self._held = []

    def release_events(self) -> None:
        with self.lock:
            held, self._held = self._held or [], None
            self.events.extend(held)

    def delete_events(self, **match: str) -> list[Json]:
        """Lose events (a feed that dropped them): those whose fields or links match; returns them."""
        with self.lock:
            def hit(event: Json) -> bool:
                return all(event.get(k) == v or event["links"].get(k) == v for k, v in match.items())

            lost = [e for e in self.events if hit(e)]
            self.events = [e for e in self.events if not hit(e)]
            return lost

    def pay(self, br_id: str, amount: Decimal | None = None, confirm: bool = True) -> str:
        with self.lock:
            br = self.billing_requests[br_id]
            pr = br["payment_request"]
            payment = {
                "id": self._id("PM"),
                "created_at": _now(),
                "status": "pending_submission",
                "amount": pr["amount"] if amount is None else to_minor(amount, pr["currency"]),
                "currency": pr["currency"],
                "description": pr["description"],
                "scheme": "faster_payments",
                "metadata": dict(pr["metadata"]),
                "links": {"creditor": "CR000000000001"},
            }
            self.payments[payment["id"]] = payment
            br["status"] = "fulfilled"
            br["links"]["payment_request_payment"] = payment["id"]
            self._event(
                "billing_requests", "fulfilled", billing_request=br_id, payment_request_payment=payment["id"]
            )
            self._event("payments", "created", payment=payment["id"])
            self._set(payment["id"], "submitted")
            if confirm:
                self._set(payment["id"], "confirmed")
            return str(payment["id"])

    def _set(self, payment_id: str, status: str, action: str | None = None) -> None:
        """A payment event names only the payment (Payment.cs has no billing request link)."""
        self.payments[payment_id]["status"] = status
        self._event("payments", action or status, payment=payment_id)

    def set_payment(self, payment_id: str, status: str) -> None:
        """The banks move a Direct Debit payment: submitted, confirmed, paid_out, failed, charged_back..."""
        with self.lock:
            self._set(payment_id, status)

    def resubmit(self, payment_id: str) -> None:
        """POST /payments/{id}/actions/retry on a failed payment (or Success+): resubmission_requested, then the
        payment goes through submission again (PaymentsService.retry)."""
        with self.lock:
            assert self.payments[payment_id]["status"] == "failed", "retry_failed: the payment has not failed"
            self._set(payment_id, "pending_submission", action="resubmission_requested")

    def complete_mandate_flow(self, br_id: str) -> str:
        """The payer finishes the Billing Request Flow: a mandate in pending_submission, the request fulfilled."""
        with self.lock:
            br = self.billing_requests[br_id]
            mandate = {
                "id": self._id("MD"),
                "created_at": _now(),
                "status": "pending_submission",
                "scheme": br["mandate_request"]["scheme"],
                "reference": f"LEDGERLINK-{len(self.mandates) + 1}",
                "metadata": {},
                "links": {"customer": br["links"]["customer"], "creditor": "CR000000000001"},
            }
            self.mandates[mandate["id"]] = mandate
            br["status"] = "fulfilled"
            br["links"]["mandate_request_mandate"] = mandate["id"]
            self._event("mandates", "created", mandate=mandate["id"])
            self._event("billing_requests", "fulfilled", billing_request=br_id,
                        mandate_request_mandate=mandate["id"])
            return str(mandate["id"])

    def set_mandate(self, mandate_id: str, status: str) -> None:
        """The mandate's status changes (the action named as GoCardless names it: active, failed, cancelled...).

        A cancelled mandate takes its cancellable payments with it: "Immediately cancels a mandate and all
        associated cancellable payments" (MandatesService.cancel in gocardless_pro/services/mandates_service.py,
        from the API reference); a payment is cancellable only while pending_submission (PaymentsService.cancel:
        "fail with a cancellation_failed error unless the payment's status is pending_submission"). Each is
        announced with its own payments ``cancelled`` event, after the mandate's.
        """
        with self.lock:
            self.mandates[mandate_id]["status"] = status
            self._event("mandates", status, mandate=mandate_id)
            if status == "cancelled":
                for payment in self.payments.values():
                    if (payment["links"].get("mandate") == mandate_id
                            and payment["status"] == "pending_submission"):
                        self._set(payment["id"], "cancelled")

    def fail(self, payment_id: str) -> None:
        with self.lock:
            self._set(payment_id, "failed")

    def charge_back(self, payment_id: str) -> None:
        """A paid-out payment charged back is debited from the next payout, its fee credited back (PayoutItem.cs:
        "in the case of a payment failure or chargeback, these will appear as credits")."""
        with self.lock:
            payment = self.payments[payment_id]
            if payment["status"] == "paid_out":
                self._owed.append({"type": "payment_charged_back", "amount": _pence(-Decimal(payment["amount"])),
                                   "taxes": [], "links": {"payment": payment_id}})
                if payment_id in self._fee_taken:
                    self._fee_taken.discard(payment_id)
                    self._owed.append(self._fee_item(payment_id, 1))
            self._set(payment_id, "charged_back")

    def expire(self, br_id: str) -> None:
        """The flow's 7 days pass: the payer can no longer use it. The billing request itself stays as it was
        (no expired status exists) and no event is published."""
        with self.lock:
            for flow in self.flows.values():
                if flow["links"]["billing_request"] == br_id:
                    flow["expires_at"] = _now()

    def link_count(self) -> int:
        return len(self.billing_requests)

    def payer_view(self, br_id: str) -> str:
        """The text GoCardless's payment page shows the payer for a billing request: the creditor, the amount
        and the payment request's description; for a mandate alone, the creditor and the mandate request's
        description, "displayed to the payer when authorising the billing request" (BillingRequest.cs)."""
        br = self.billing_requests[br_id]
        if br["payment_request"] is None:
            return "\n".join(t for t in (CREDITOR_NAME, br["mandate_request"]["description"]) if t)
        pr = br["payment_request"]
        amount = f"{pr['currency']} {Decimal(pr['amount']).scaleb(-2)}"
        return "\n".join(t for t in (CREDITOR_NAME, amount, pr["description"]) if t)

    # --- payouts and refunds: the API ----------------------------------------------------------------------

    def _list_items(self, request: Request) -> Response:
        """GET /payout_items?payout=: the payout is required; items have no id, so the cursors are opaque
        positions (cursor pagination: ``after`` names where the next page starts)."""
        payout_id = request.param("payout")
        if not payout_id:
            return self._invalid("payout", "is required", "/payout_items/payout")
        if payout_id not in self.payouts:
            return self._not_found()
        items = self.payout_items[payout_id]
        limit = min(int(request.param("limit") or 50), self.max_page)
        start = int(request.param("after") or 0)
        end = start + limit
        cursors = {"before": str(start) if start else None, "after": str(end) if end < len(items) else None}
        return json_response(200, {"payout_items": items[start:end], "meta": {"cursors": cursors, "limit": limit}})

    def _new_refund(self, params: Json) -> Json | Response:
        """POST /refunds (RefundsService.create): the payment must have been collected; the confirmation must be
        what the payment's live refunds come to with this one; no more than is left."""
        payment = self.payments.get((params.get("links") or {}).get("payment", ""))
        if payment is None:
            return self._invalid("payment", "not found", "/refunds/links/payment")
        amount = params.get("amount")
        if not isinstance(amount, int) or amount <= 0:
            return self._invalid("amount", "must be greater than 0", "/refunds/amount")
        if payment["status"] not in ("confirmed", "paid_out"):
            return self._refused("refund_payment_invalid_state", f"This payment is {payment['status']}")
        claimed = sum(r["amount"] for r in self.refunds.values()
                      if r["links"]["payment"] == payment["id"] and r["status"] in LIVE_REFUND)
        if params.get("total_amount_confirmation") != claimed + amount:
            return self._refused("total_amount_confirmation_invalid",
                                 f"The refunds of this payment would come to {claimed + amount}")
        if claimed + amount > payment["amount"]:
            return self._invalid("amount", f"exceeds the {payment['amount'] - claimed} left to refund",
                                 "/refunds/amount")
        refund = {
            "id": self._id("RF"), "created_at": _now(), "amount": amount, "currency": payment["currency"],
            "status": "created", "reference": params.get("reference"), "metadata": params.get("metadata") or {},
            "fx": {"fx_currency": None, "fx_amount": None, "exchange_rate": None, "estimated_exchange_rate": None},
            "links": {"payment": payment["id"], **({"mandate": m} if (m := payment["links"].get("mandate")) else {})},
        }
        self.refunds[refund["id"]] = refund
        self._event("refunds", "created", refund=refund["id"])
        self._owed.append({"type": "payment_refunded", "amount": _pence(-Decimal(amount)), "taxes": [],
                           "links": {**refund["links"], "refund": refund["id"]}})
        return refund

    def _refused(self, reason: str, message: str) -> Response:
        return json_response(422, _error(422, "invalid_state", message, [{"reason": reason, "message": message}]))

    # --- payouts: the back office --------------------------------------------------------------------------

    @staticmethod
    def fee(amount: int) -> tuple[Decimal, Decimal]:
        """The fake's fee on a payment of ``amount`` pence and the VAT on it, each to a tenth of a penny."""
        fee = (Decimal(amount) * FEE_RATE + FEE_FIXED).quantize(TENTH, ROUND_HALF_UP)
        return fee, (fee * VAT_RATE).quantize(TENTH, ROUND_HALF_UP)

    def _fee_item(self, payment_id: str, sign: int) -> Json:
        """A gocardless_fee line: the fee with its VAT (a debit; a credit when given back), ``taxes`` the VAT
        within it (signed as the fee here: the reference does not say, and the adapter never adds it)."""
        fee, vat = self.fee(self.payments[payment_id]["amount"])
        tax = {"amount": _pence(vat * sign), "currency": self.payments[payment_id]["currency"],
               "destination_amount": _pence(vat * sign), "destination_currency": "GBP",
               "exchange_rate": None, "tax_rate_id": "GB_VAT_1"}
        return {"type": "gocardless_fee", "amount": _pence((fee + vat) * sign), "taxes": [tax],
                "links": {"payment": payment_id}}

    def owes(self) -> bool:
        """Whether a payout is due: a confirmed payment not yet paid out, or a refund or chargeback to carry."""
        with self.lock:
            return bool(self._owed) or any(p["status"] == "confirmed" for p in self.payments.values())

    def settle(self, gross: bool = False) -> str:
        """Pay out every confirmed payment not yet paid out and every refund and chargeback since the last
        payout, in one payout; ``gross``: the fees are invoiced, not deducted. Its payments become paid_out."""
        with self.lock:
            payout_id = self._id("PO")
            items = list(self._owed)
            self._owed.clear()
            for payment in [p for p in self.payments.values() if p["status"] == "confirmed"]:
                items.append({"type": "payment_paid_out", "amount": _pence(Decimal(payment["amount"])),
                              "taxes": [], "links": {"payment": payment["id"]}})
                if not gross:
                    items.append(self._fee_item(payment["id"], -1))
                    self._fee_taken.add(payment["id"])
                payment["links"]["payout"] = payout_id
                self._set(payment["id"], "paid_out")
            total = sum((Decimal(i["amount"]) for i in items), Decimal(0))
            fees = sum((Decimal(i["amount"]) for i in items if i["type"] == "gocardless_fee"), Decimal(0))
            assert total > 0, "GoCardless pays out only a positive balance"
            for refund in self.refunds.values():
                refund["status"] = "paid" if refund["status"] in LIVE_REFUND else refund["status"]
            self.payouts[payout_id] = {
                "id": payout_id, "created_at": _now(), "amount": int(total.quantize(Decimal(1), ROUND_HALF_UP)),
                "deducted_fees": int(-fees.quantize(Decimal(1), ROUND_HALF_UP)), "currency": "GBP",
                "arrival_date": (dt.date.today() + dt.timedelta(days=1)).isoformat(), "payout_type": "merchant",
                "reference": f"GC-LEDGERLINK-{len(self.payouts) + 1}", "status": "paid", "metadata": {},
                "tax_currency": "GBP",
                "fx": {"fx_currency": None, "fx_amount": None, "exchange_rate": None, "estimated_exchange_rate": None},
                "links": {"creditor": "CR000000000001", "creditor_bank_account": "BA000000000001"},
            }
            self.payout_items[payout_id] = items
            self._event("payouts", "paid", payout=payout_id)
            return payout_id

    def refund(self, payment_id: str, amount: Decimal | None = None) -> str:
        """The firm refunds from GoCardless's dashboard (all that is left by default), as POST /refunds would."""
        with self.lock:
            payment = self.payments[payment_id]
            claimed = sum(r["amount"] for r in self.refunds.values()
                          if r["links"]["payment"] == payment_id and r["status"] in LIVE_REFUND)
            minor = payment["amount"] - claimed if amount is None else to_minor(amount, payment["currency"])
            made = self._new_refund({"amount": minor, "total_amount_confirmation": claimed + minor,
                                     "links": {"payment": payment_id}})
            assert isinstance(made, dict), f"GoCardless refused the refund: {made[2].decode()}"
            return str(made["id"])

    def fail_payout(self, payout_id: str) -> None:
        """The firm's bank returns the payout: status bounced (Payout.cs)."""
        with self.lock:
            self.payouts[payout_id]["status"] = "bounced"
            self._event("payouts", "bounced", payout=payout_id)

    def limit_pages(self, size: int) -> None:
        """List at most ``size`` records a page (the API's own limit is 500), so paging is exercised."""
        with self.lock:
            self.max_page = size


class GoCardlessSigner:
    """Signs deliveries as GoCardless does: hex HMAC-SHA256 of the raw body in ``Webhook-Signature``."""

    timestamped = False

    def body(self) -> bytes:
        return json.dumps(
            {
                "events": [
                    {
                        "id": "EV000000000999",
                        "created_at": _now(),
                        "resource_type": "billing_requests",
                        "action": "cancelled",
                        "links": {"billing_request": "BRQ000000000001"},
                        "details": {"origin": "api"},
                        "metadata": {},
                    }
                ]
            }
        ).encode()

    def sign(self, body: bytes, *, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        digest = hmac.new((secret or SECRET).encode(), body, hashlib.sha256).hexdigest()
        return {"Webhook-Signature": digest}
