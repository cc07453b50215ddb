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
* Event times are strictly increasing here (a millisecond apart at least); the real API can give several events
  one millisecond, which the adapter's cursor tolerates (connectors/providers/cursor.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from agent.core.model import to_minor
from fakes import FakeAPI, Request, Response, json_response

SECRET = "gc-webhook-secret"


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


class FakeGoCardless(FakeAPI):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.billing_requests: dict[str, dict] = {}
        self.flows: dict[str, dict] = {}
        self.payments: dict[str, dict] = {}
        self.mandates: dict[str, dict] = {}
        self.events: list[dict] = []  # as published (visible), in publication order
        self._held: list[dict] | None = None  # created but not yet visible (delay_events)
        self._last_stamp: dt.datetime | None = None
        self._keys: dict[tuple[str, str], str] = {}

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
        if method == "POST" and (m := re.fullmatch(r"/(billing_requests|payments)/(\w+)/actions/cancel", path)):
            return (self._cancel if m[1] == "billing_requests" else self._cancel_payment)(m[2])
        if method == "GET" and (m := re.fullmatch(r"/(\w+)/(\w+)", path)):
            return self._read(m[1], m[2])
        if method == "GET" and (records := self._lists().get(path)):
            return self._list(request, path.removeprefix("/"), records())
        return self._not_found()

    def _builders(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any] | Response]]:
        """What makes each resource a POST creates, by path (the body wraps its parameters under the kind)."""
        return {"/billing_requests": self._new_br, "/billing_request_flows": self._new_flow,
                "/payments": self._new_payment}

    def _lists(self) -> dict[str, Callable[[], list[dict[str, Any]]]]:
        """The records each listable path pages through, newest first (see _list)."""
        return {"/events": lambda: self.events, "/payments": lambda: list(self.payments.values()),
                "/billing_requests": lambda: list(self.billing_requests.values())}

    def _read(self, kind: str, ident: str) -> Response:
        """One resource by id, wrapped under its kind as the API does; 404 for an unknown kind or id (flows
        cannot be read back)."""
        lookups: dict[str, Callable[[str], dict[str, Any] | None]] = {
            "billing_requests": self.billing_requests.get, "mandates": self.mandates.get,
            "payments": self.payments.get, "events": lambda i: next((e for e in self.events if e["id"] == i), None),
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

    def _create(self, request: Request, kind: str, params: dict, build) -> Response:  # type: ignore[no-untyped-def]
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

    def _new_br(self, params: dict) -> dict | Response:
        if params.get("mandate_request") and not params.get("payment_request"):
            return self._new_mandate_br(params)
        pr = params.get("payment_request") or {}
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
        br = {
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

    def _new_mandate_br(self, params: dict) -> dict:
        currency = params["mandate_request"].get("currency", "GBP")
        br = {
            "id": self._id("BRQ"),
            "created_at": _now(),
            "status": "pending",
            "mandate_request": {"currency": currency, "scheme": "bacs" if currency == "GBP" else "sepa_core",
                                "links": {}},
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

    def _new_payment(self, params: dict) -> dict | Response:
        """POST /payments against a mandate, which must be pending_customer_approval, pending_submission,
        submitted or active (the API reference)."""
        mandate = self.mandates.get((params.get("links") or {}).get("mandate"))
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

    def _new_flow(self, params: dict) -> dict | Response:
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

    def _list(self, request: Request, kind: str, records: list[dict]) -> Response:
        """Newest first by created_at, filtered by created_at[...] and paged by after/before (cursor pagination)."""
        limit = min(int(request.param("limit") or 50), 500)
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

    def delete_events(self, **match: str) -> list[dict]:
        """Lose events (a feed that dropped them): those whose fields or links match; returns them."""
        with self.lock:
            def hit(event: dict) -> bool:
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
            return payment["id"]

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
            return mandate["id"]

    def set_mandate(self, mandate_id: str, status: str) -> None:
        """The mandate's status changes (the action named as GoCardless names it: active, failed, cancelled...)."""
        with self.lock:
            self.mandates[mandate_id]["status"] = status
            self._event("mandates", status, mandate=mandate_id)

    def fail(self, payment_id: str) -> None:
        with self.lock:
            self._set(payment_id, "failed")

    def charge_back(self, payment_id: str) -> None:
        with self.lock:
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
