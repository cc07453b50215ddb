"""A local Stripe API: Checkout Sessions and Events, form-encoded requests and JSON answers as documented.

Lists are newest first; ``ending_before=X`` returns the page immediately newer than X, ``starting_after=X``
the page immediately older (docs.stripe.com/api/pagination). A repeated Idempotency-Key replays the first
answer.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from decimal import Decimal
from urllib.parse import parse_qsl

from agent.core.model import to_minor
from fakes import FakeAPI, Request, Response, json_response

SECRET = "whsec_fake"


def _error(error_type: str, message: str, **extra: str) -> dict[str, object]:
    return {"error": {"type": error_type, "message": message, **extra}}


class FakeStripe(FakeAPI):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.sessions: dict[str, dict] = {}
        self.events: list[dict] = []  # oldest first
        self._replays: dict[str, tuple[str, Response]] = {}

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):014d}"

    def error_body(self, status: int) -> object:
        if status == 429:
            return _error(
                "invalid_request_error", "Too many requests hit the API too quickly.", code="rate_limit"
            )
        return _error("api_error", "Something went wrong on Stripe's end.")

    def route(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key:
            if key in self._replays:
                body, (status, headers, payload) = self._replays[key]
                if body != request.body.decode():
                    return json_response(
                        400,
                        _error(
                            "idempotency_error",
                            "Keys for idempotent requests can only "
                            "be used with the same parameters they were first used with.",
                        ),
                    )
                return status, {**headers, "Idempotent-Replayed": "true"}, payload
            response = self._route(request)
            if response[0] < 500:
                self._replays[key] = (request.body.decode(), response)
            return response
        return self._route(request)

    def _route(self, request: Request) -> Response:
        form = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
        path = request.path
        if request.method == "POST" and path == "/v1/checkout/sessions":
            return self._create(form)
        if request.method == "POST" and (m := re.fullmatch(r"/v1/checkout/sessions/(\w+)/expire", path)):
            return self._expire_api(m[1])
        if request.method == "GET" and (m := re.fullmatch(r"/v1/checkout/sessions/(\w+)", path)):
            session = self.sessions.get(m[1])
            return json_response(200, session) if session else self._missing(m[1])
        if request.method == "GET" and path == "/v1/checkout/sessions":
            pi = request.param("payment_intent")
            data = [s for s in reversed(self.sessions.values()) if pi is None or s["payment_intent"] == pi]
            return json_response(200, {"object": "list", "url": path, "has_more": False, "data": data})
        if request.method == "GET" and path == "/v1/events":
            return self._list_events(request)
        return json_response(404, _error("invalid_request_error", f"Unrecognized request URL ({path})."))

    def _missing(self, session_id: str) -> Response:
        return json_response(
            404,
            _error(
                "invalid_request_error",
                f"No such checkout.session: '{session_id}'",
                code="resource_missing",
                param="session",
            ),
        )

    def _create(self, form: dict[str, str]) -> Response:
        now = int(time.time())
        expires_at = int(form.get("expires_at") or now + 86400)
        if not now + 1800 <= expires_at <= now + 86400:
            return json_response(
                400,
                _error(
                    "invalid_request_error",
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                    "Checkout Session creation.",
                    param="expires_at",
                ),
            )
        amount = int(form.get("line_items[0][price_data][unit_amount]") or 0)
        if amount <= 0:
            return json_response(
                400,
                _error(
                    "invalid_request_error",
                    "Invalid integer: must be positive.",
                    param="line_items[0][price_data][unit_amount]",
                ),
            )
        session_id = self._id("cs_test")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": form.get("mode"),
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": amount,
            "amount_subtotal": amount,
            "currency": form.get("line_items[0][price_data][currency]"),
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "expires_at": expires_at,
            "created": now,
            "client_reference_id": form.get("client_reference_id"),
            "customer_email": form.get("customer_email"),
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            "line_item_name": form.get("line_items[0][price_data][product_data][name]"),
            "payment_intent": None,
            "livemode": False,
        }
        self.sessions[session_id] = session
        return json_response(200, session)

    def _expire_api(self, session_id: str) -> Response:
        session = self.sessions.get(session_id)
        if session is None:
            return self._missing(session_id)
        if session["status"] != "open":
            return json_response(
                400,
                _error(
                    "invalid_request_error",
                    'Only Checkout Sessions with a status in ["open"] can be expired.',
                ),
            )
        self._expire(session)
        return json_response(200, session)

    def _expire(self, session: dict) -> None:
        session["status"] = "expired"
        self._event("checkout.session.expired", session)

    def _list_events(self, request: Request) -> Response:
        limit = min(int(request.param("limit") or 10), 100)
        types = {v for k, v in request.query if re.fullmatch(r"types\[\d*\]", k)}
        newest_first = [e for e in reversed(self.events) if not types or e["type"] in types]
        ids = [e["id"] for e in newest_first]
        after, before = request.param("starting_after"), request.param("ending_before")
        if after:
            start = ids.index(after) + 1
            page, has_more = newest_first[start : start + limit], len(ids) > start + limit
        elif before:
            end = ids.index(before)
            page, has_more = newest_first[max(0, end - limit) : end], end - limit > 0
        else:
            page, has_more = newest_first[:limit], len(ids) > limit
        return json_response(200, {"object": "list", "url": "/v1/events", "has_more": has_more, "data": page})

    def _event(self, event_type: str, obj: dict) -> None:
        self.events.append(
            {
                "id": self._id("evt"),
                "object": "event",
                "type": event_type,
                "created": int(time.time()),
                "api_version": "2024-06-20",
                "livemode": False,
                "pending_webhooks": 0,
                "request": {"id": None, "idempotency_key": None},
                "data": {"object": dict(obj)},
            }
        )

    # --- the payer and the back office ---------------------------------------------------------------------

    def pay(self, session_id: str, amount: Decimal | None = None, confirm: bool = True) -> str:
        """A delayed-notification (bank) payment: completed unpaid, then async success unless not confirm."""
        with self.lock:
            session = self.sessions[session_id]
            if amount is not None:
                session["amount_total"] = to_minor(amount, session["currency"].upper())
            session.update(status="complete", payment_intent=self._id("pi"))
            self._event("checkout.session.completed", session)
            if confirm:
                session["payment_status"] = "paid"
                self._event("checkout.session.async_payment_succeeded", session)
            return session["payment_intent"]

    def _by_intent(self, payment_intent: str) -> dict:
        return next(s for s in self.sessions.values() if s["payment_intent"] == payment_intent)

    def fail(self, payment_intent: str) -> None:
        with self.lock:
            self._event("checkout.session.async_payment_failed", self._by_intent(payment_intent))

    def charge_back(self, payment_intent: str) -> None:
        with self.lock:
            session = self._by_intent(payment_intent)
            self._event(
                "charge.dispute.created",
                {
                    "id": self._id("dp"),
                    "object": "dispute",
                    "amount": session["amount_total"],
                    "currency": session["currency"],
                    "payment_intent": payment_intent,
                    "charge": self._id("ch"),
                    "reason": "fraudulent",
                    "status": "needs_response",
                },
            )

    def expire(self, session_id: str) -> None:
        with self.lock:
            self._expire(self.sessions[session_id])

    def link_count(self) -> int:
        return len(self.sessions)


class StripeSigner:
    """Signs deliveries as Stripe does: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``."""

    timestamped = True

    def body(self) -> bytes:
        return json.dumps(
            {
                "id": "evt_webhook",
                "object": "event",
                "type": "checkout.session.expired",
                "created": int(time.time()),
                "data": {
                    "object": {
                        "id": "cs_test_webhook",
                        "object": "checkout.session",
                        "status": "expired",
                        "payment_status": "unpaid",
                        "amount_total": 12550,
                        "currency": "gbp",
                        "payment_intent": None,
                    }
                },
            }
        ).encode()

    def sign(self, body: bytes, *, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        t = int(time.time()) if timestamp is None else timestamp
        digest = hmac.new((secret or SECRET).encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Stripe-Signature": f"t={t},v1={digest}"}
