"""A local Stripe API: Checkout Sessions, Disputes and Events, form-encoded requests and JSON answers as documented.

Sources (cite them when changing behaviour here): stripe-python in the venv (``params/checkout/
_session_create_params.py``, ``params/_event_list_params.py``, ``_list_object.py``, ``_http_client.py``), Stripe's
published spec (stripe/openapi ``openapi/spec3.json``), docs.stripe.com/idempotency and /api/pagination, stripe/
stripe-node issue 1944, and /work/shared/notes/provider-apis.md.

* Lists are newest first; ``starting_after=X`` pages to older records, ``ending_before=X`` returns the page
  immediately newer than X; ``created[gt|gte|lt|lte]`` limit by creation time (whole seconds).
* Event creation can lag (``delay_events``/``release_events``), so an event can appear after newer ones.
* Idempotency: the first answer for a key is saved and replayed for 24 hours, 500s included, with
  ``Idempotent-Replayed: true``; other parameters under the same key are a 400 idempotency_error; a request made
  while another with the same key is in flight gets 409 and is not saved (``key_in_flight``).
* Hosted Checkout Sessions need ``success_url`` (400 parameter_missing otherwise); ``expires_at`` must be 30
  minutes to 24 hours ahead; only open sessions can be expired.
* Event ``created`` times are whole seconds, so several events share one (the adapter's cursor and the engine's
  tie-break by status tolerate it); only a dispute's reinstatement is stamped a second later than anything
  before it, as it comes weeks after the dispute.
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
        self.disputes: dict[str, dict] = {}
        self.events: list[dict] = []  # as published (visible), in publication order
        self._held: list[dict] | None = None
        self._last_created = 0
        self._replays: dict[str, tuple[str, Response]] = {}
        self._in_flight: set[str] = set()
        self._poisoned = 0

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
            if key in self._in_flight:
                return json_response(
                    409,
                    _error(
                        "idempotency_error",
                        "There is currently another in-progress request using this Idempotent Key (that probably "
                        "means you submitted twice, and the other request is still going through).",
                    ),
                )
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
            if self._poisoned:
                self._poisoned -= 1
                response = json_response(500, self.error_body(500))
            else:
                response = self._route(request)
            self._replays[key] = (request.body.decode(), response)  # 500s included: replayed for 24 hours
            return response
        return self._route(request)

    def key_in_flight(self, key: str, busy: bool = True) -> None:
        """Another request with this idempotency key is being processed (until called with busy=False)."""
        with self.lock:
            (self._in_flight.add if busy else self._in_flight.discard)(key)

    def fail_next_saved(self, times: int = 1) -> None:
        """Stripe itself fails the next keyed POSTs with a 500 and saves that answer under their keys."""
        with self.lock:
            self._poisoned += times

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
            data = [s for s in self.sessions.values() if pi is None or s["payment_intent"] == pi]
            return self._list(request, path, data)
        if request.method == "GET" and path == "/v1/disputes":
            return self._list(request, path, list(self.disputes.values()))
        if request.method == "GET" and path == "/v1/events":
            types = {v for k, v in request.query if re.fullmatch(r"types\[\d*\]", k)}
            return self._list(request, path, [e for e in self.events if not types or e["type"] in types])
        if request.method == "GET" and (m := re.fullmatch(r"/v1/events/(\w+)", path)):
            event = next((e for e in self.events if e["id"] == m[1]), None)
            if event is None:
                return json_response(404, _error("invalid_request_error", f"No such event: '{m[1]}'",
                                                 code="resource_missing", param="id"))
            return json_response(200, event)
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
        if not form.get("success_url"):
            return json_response(
                400,
                _error("invalid_request_error", "Missing required param: success_url.", code="parameter_missing",
                       param="success_url"),
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
            "success_url": form.get("success_url"),
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

    def _list(self, request: Request, url: str, records: list[dict]) -> Response:
        """Newest first by created, filtered by created[...], paged by starting_after / ending_before."""
        limit = min(int(request.param("limit") or 10), 100)
        newest_first = sorted(records, key=lambda r: (r["created"], r["id"]), reverse=True)
        for op, keep in (("gt", int.__gt__), ("gte", int.__ge__), ("lt", int.__lt__), ("lte", int.__le__)):
            bound = request.param(f"created[{op}]")
            if bound:
                newest_first = [r for r in newest_first if keep(r["created"], int(bound))]
        ids = [r["id"] for r in newest_first]
        after, before = request.param("starting_after"), request.param("ending_before")
        if after:
            start = ids.index(after) + 1 if after in ids else len(ids)
            page, has_more = newest_first[start : start + limit], len(ids) > start + limit
        elif before:
            end = ids.index(before) if before in ids else 0
            page, has_more = newest_first[max(0, end - limit) : end], end - limit > 0
        else:
            page, has_more = newest_first[:limit], len(ids) > limit
        return json_response(200, {"object": "list", "url": url, "has_more": has_more, "data": page})

    def _created(self) -> int:
        self._last_created = max(int(time.time()), self._last_created)
        return self._last_created

    def _event(self, event_type: str, obj: dict) -> None:
        (self.events if self._held is None else self._held).append(
            {
                "id": self._id("evt"),
                "object": "event",
                "type": event_type,
                "created": self._created(),
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
        """The payer disputes the charge: the amount is withdrawn from the firm's balance."""
        with self.lock:
            session = self._by_intent(payment_intent)
            dispute = {
                "id": self._id("dp"),
                "object": "dispute",
                "amount": session["amount_total"],
                "currency": session["currency"],
                "payment_intent": payment_intent,
                "charge": self._id("ch"),
                "reason": "fraudulent",
                "status": "needs_response",
                "created": int(time.time()),
                # "zero, one, or two balance transactions that show funds withdrawn and reinstated" (_dispute.py)
                "balance_transactions": [{"id": self._id("txn"), "amount": -session["amount_total"]}],
            }
            self.disputes[dispute["id"]] = dispute
            self._event("charge.dispute.created", dispute)

    def win_dispute(self, payment_intent: str) -> None:
        """The firm wins: status won and charge.dispute.funds_reinstated, the money is back."""
        with self.lock:
            dispute = [d for d in self.disputes.values()
                       if d["payment_intent"] == payment_intent and d["balance_transactions"]][-1]
            dispute["status"] = "won"
            dispute["balance_transactions"].append({"id": self._id("txn"), "amount": dispute["amount"]})
            self._last_created += 1  # decided weeks after it was opened: never in the dispute's own second
            self._event("charge.dispute.funds_reinstated", dispute)

    def inquire(self, payment_intent: str) -> None:
        """An inquiry (retrieval request): a dispute in warning_needs_response, no funds withdrawn."""
        with self.lock:
            session = self._by_intent(payment_intent)
            dispute = {"id": self._id("dp"), "object": "dispute", "amount": session["amount_total"],
                       "currency": session["currency"], "payment_intent": payment_intent, "charge": self._id("ch"),
                       "reason": "general", "status": "warning_needs_response", "created": int(time.time()),
                       "balance_transactions": []}
            self.disputes[dispute["id"]] = dispute
            self._event("charge.dispute.created", dispute)

    def delay_events(self) -> None:
        """Events created from now on exist (with their times) but are not listed until release_events."""
        with self.lock:
            self._held = []

    def release_events(self) -> None:
        with self.lock:
            held, self._held = self._held or [], None
            self.events.extend(held)

    def delete_events(self, event_type: str | None = None) -> list[dict]:
        """Lose events (a feed that dropped them), of one type or all; returns them."""
        with self.lock:
            lost = [e for e in self.events if event_type in (None, e["type"])]
            self.events = [e for e in self.events if e not in lost]
            return lost

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
