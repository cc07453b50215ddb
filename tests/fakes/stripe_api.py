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
* What the payer sees (docs.stripe.com/api/checkout/sessions/create; ``_session_create_params.py``): the line
  item's ``product_data[name]`` and ``[description]``, and ``custom_text[submit][message]`` beside the pay button,
  "up to 1200 characters". ``client_reference_id`` is at most 200 characters (stripe/openapi spec3.json
  ``maxLength``); metadata at most 50 keys, keys up to 40 characters, values up to 500 (docs.stripe.com/api/
  metadata); a longer one is a 400 naming the parameter. ``payment_intent_data[description]`` and ``[metadata]``
  land on the PaymentIntent made when the session is paid (``payment_intents``). ``payer_view`` is the page's text.
* Event ``created`` times are whole seconds, so several events share one (the adapter's cursor and the engine's
  tie-break by status tolerate it); only a dispute's reinstatement is stamped a second later than anything
  before it, as it comes weeks after the dispute.

Saved cards and off-session charges (a payment plan's instalments: stripe-python ``_customer.py``,
``_setup_intent.py``, ``_payment_intent.py``, ``_payment_method.py``, ``_error.py`` ``CardError``, ``params/
checkout/_session_create_params.py``, ``params/_payment_intent_create_params.py``, ``params/
_setup_intent_list_params.py``; docs.stripe.com/payments/save-and-reuse?platform=checkout, /api/payment_intents,
/declines/codes, /error-codes, /api/events/types):

* ``POST /v1/customers`` (name, email, metadata). ``POST /v1/checkout/sessions`` with ``mode=setup``: no line
  items, ``currency`` "required in setup mode when allowed_payment_method_types is not set", optional ``customer``; its
  ``setup_intent`` is null until the payer finishes. ``complete_setup`` is the payer entering a test card: a
  PaymentMethod (type card) attached to the customer, a SetupIntent ``succeeded`` (usage off_session), the
  session ``complete`` with ``payment_status`` ``no_payment_required``, and the events ``setup_intent.succeeded``
  and ``checkout.session.completed``. ``GET /v1/setup_intents/{id}`` and ``?payment_method=`` list;
  ``POST /v1/payment_methods/{id}/detach`` (``detach``) clears its ``customer`` and emits
  ``payment_method.detached``; a detached card cannot be charged again (400).
* ``POST /v1/payment_intents`` with ``confirm=true`` and ``off_session=true`` on the customer's card: a card
  charge has no waiting stage, so it answers ``succeeded`` (a charge, its balance transaction and the card fee)
  with ``payment_intent.created``, ``charge.succeeded`` and ``payment_intent.succeeded``. After
  ``decline_next`` it answers 402 ``card_error`` / ``card_declined`` with the PaymentIntent in
  ``error.payment_intent``, now ``requires_payment_method`` with ``last_payment_error``, and emits
  ``payment_intent.payment_failed``. Keyed, so a replay gives the same object and other parameters under the same
  key are a 400 ``idempotency_error`` (above). ``POST /v1/payment_intents/{id}/cancel`` only from
  requires_payment_method / requires_capture / requires_confirmation / requires_action / processing, else 400
  ``payment_intent_unexpected_state``; it emits ``payment_intent.canceled``. ``expand[]=latest_charge`` gives the
  charge (``disputed``). ``charge_back`` works on these charges as on Checkout's.
* Checkout's own PaymentIntents (a paid link) emit ``payment_intent.succeeded`` too, carrying
  ``payment_intent_data[metadata]``.

Payouts, balance transactions and refunds (stripe-python ``_payout.py``, ``_balance_transaction.py``,
``_refund.py``, ``params/_balance_transaction_list_params.py``, ``params/_refund_create_params.py``;
docs.stripe.com/payouts/reconciliation, /reports/balance-transaction-types, /reports/reporting-categories,
/error-codes):

* A payout: ``amount`` in minor units, ``currency`` lower case, ``arrival_date`` and ``created`` unix seconds,
  ``status`` pending / in_transit / paid / failed / canceled, ``statement_descriptor`` (null unless set),
  ``automatic``, ``balance_transaction``, ``failure_balance_transaction``. ``GET /v1/payouts`` pages as every list.
* ``GET /v1/balance_transactions?payout=po_`` ("for automatic Stripe payouts only") lists what the payout carried
  *and the payout's own transaction* (type payout, minus the payout's amount). Each transaction has ``amount``
  (gross, signed), ``fee`` (positive, what Stripe took), ``net`` = amount - fee, ``fee_details`` (amount, type
  stripe_fee / application_fee / tax, description), ``type``, ``reporting_category`` and ``source`` (an id, or
  the object with ``expand[]=data.source``). A charge is type charge; a refund type refund; a dispute's
  withdrawal and reinstatement are type adjustment with reporting_category dispute / dispute_reversal, and a
  dispute fee in ``fee``. The fake's card fee is 1.5% + 20p, its dispute fee GBP 20 (Stripe's UK prices).
  ``settle(gross=True)`` is an account whose fees are billed separately: its transactions carry no fee.
* ``POST /v1/refunds``: ``payment_intent``, ``amount`` (default: what is left), ``reason`` one of duplicate /
  fraudulent / requested_by_customer (anything else is a 400), ``metadata``. Nothing left is 400
  ``charge_already_refunded``; more than is left is 400 ``amount_too_large``; an unknown payment intent 400
  ``resource_missing``. A card refund answers ``succeeded``; keyed requests are replayed as every keyed POST.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import parse_qsl

from agent.core.model import to_minor
from fakes import FakeAPI, Json, Request, Response, json_response

SECRET = "whsec_fake"
CARD_RATE, CARD_FIXED, DISPUTE_FEE = Decimal("0.015"), 20, 2000  # minor units


def _error(error_type: str, message: str, **extra: str) -> dict[str, object]:
    return {"error": {"type": error_type, "message": message, **extra}}


def _nested(form: dict[str, str], prefix: str) -> dict[str, str]:
    """``prefix[key]=value`` form fields (Stripe's encoding of a hash) as a dict."""
    return {k[len(prefix) + 1:-1]: v for k, v in form.items() if k.startswith(prefix + "[") and k.endswith("]")
            and "[" not in k[len(prefix) + 1:-1]}


def _custom_text(form: dict[str, str]) -> Json:
    """A session's ``custom_text`` as Stripe returns it; only ``submit`` (beside the confirmation button, in payment
    and setup mode alike: _session_create_params.py) is kept, the rest is null."""
    submit = form.get("custom_text[submit][message]")
    return {"after_submit": None, "shipping_address": None, "submit": {"message": submit} if submit else None,
            "terms_of_service_acceptance": None}


class FakeStripe(FakeAPI):
    def __init__(self, ids_from: int = 1) -> None:
        """``ids_from``: where this server's ids start, so two accounts' servers never share an id (the
        provider's ids are unique across its accounts)."""
        super().__init__()
        self._ids = itertools.count(ids_from)
        self.sessions: dict[str, Json] = {}
        self.disputes: dict[str, Json] = {}
        self.events: list[Json] = []  # as published (visible), in publication order
        self._held: list[Json] | None = None
        self._last_created = 0
        self._replays: dict[str, tuple[str, Response]] = {}
        self._in_flight: set[str] = set()
        self._poisoned = 0
        self.charges: dict[str, Json] = {}
        self.payment_intents: dict[str, Json] = {}
        self._intent_data: dict[str, Json] = {}  # session -> its payment_intent_data, until it is paid
        self.refunds: dict[str, Json] = {}
        self.payouts: dict[str, Json] = {}
        self.balance_transactions: dict[str, Json] = {}
        self._paid_in: dict[str, str] = {}  # balance transaction -> the payout that carried it
        self.max_page = 100  # the API's largest page; limit_pages makes it smaller
        self.customers: dict[str, Json] = {}
        self.setup_intents: dict[str, Json] = {}
        self.payment_methods: dict[str, Json] = {}
        self._declines = 0

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
            # filtered by charge and payment_intent (stripe-python params/_dispute_list_params.py)
            return self._list(request, path, [d for d in self.disputes.values() if all(
                request.param(key) in (None, "", d[key]) for key in ("charge", "payment_intent"))])
        sections = {"refunds": self._money, "payouts": self._money, "balance_transactions": self._money,
                    "customers": self._cards, "setup_intents": self._cards, "payment_methods": self._cards,
                    "payment_intents": self._intents}
        if (handler := sections.get([*path.split("/"), "", "", ""][2])) is not None:
            return handler(request, form)
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

    def _cards(self, request: Request, form: dict[str, str]) -> Response:
        """Customers, SetupIntents, PaymentMethods and PaymentIntents (saved cards charged off-session)."""
        path, method = request.path, request.method
        if method == "POST" and path == "/v1/customers":
            made: Json = {"id": self._id("cus"), "object": "customer", "name": form.get("name"),
                          "email": form.get("email"), "metadata": _nested(form, "metadata"),
                          "created": int(time.time()), "livemode": False}
            self.customers[made["id"]] = made
            return json_response(200, made)
        if method == "GET" and path == "/v1/setup_intents":
            card, customer = request.param("payment_method"), request.param("customer")
            return self._list(request, path, [i for i in self.setup_intents.values()
                                              if card in (None, i["payment_method"])
                                              and customer in (None, i["customer"])])
        if method == "GET" and (m := re.fullmatch(r"/v1/(setup_intents|payment_methods|payment_intents)/(\w+)", path)):
            found: Json | None = getattr(self, m[1]).get(m[2])
            if found is None:
                return self._no_such(m[1][:-1], m[2], "intent" if "intents" in m[1] else "payment_method")
            return json_response(200, self._expanded(request, found))
        if method == "POST" and (m := re.fullmatch(r"/v1/payment_methods/(\w+)/detach", path)):
            pm = self.payment_methods.get(m[1])
            if pm is None:
                return self._no_such("payment_method", m[1], "payment_method")
            if pm["customer"] is None:
                return json_response(400, _error("invalid_request_error", "The payment method you provided is "
                                                 "not attached to a customer so detachment is impossible."))
            self._detach(pm)
            return json_response(200, pm)
        return json_response(404, _error("invalid_request_error", f"Unrecognized request URL ({path})."))

    def _intents(self, request: Request, form: dict[str, str]) -> Response:
        """PaymentIntents: create (confirmed off-session), retrieve, cancel."""
        path, method = request.path, request.method
        if method == "GET" and (m := re.fullmatch(r"/v1/payment_intents/(\w+)", path)):
            return self._cards(request, form)
        if method == "POST" and path == "/v1/payment_intents":
            return self._create_intent(form)
        if method == "POST" and (m := re.fullmatch(r"/v1/payment_intents/(\w+)/cancel", path)):
            intent = self.payment_intents.get(m[1])
            if intent is None:
                return self._no_such("payment_intent", m[1], "intent")
            cancellable = ("requires_payment_method", "requires_capture", "requires_confirmation", "requires_action",
                           "processing")
            if intent["status"] not in cancellable:
                return json_response(400, _error(
                    "invalid_request_error", "You cannot cancel this PaymentIntent because it has a status of "
                    f"{intent['status']}. Only a PaymentIntent with one of the following statuses may be canceled: "
                    f"{', '.join(cancellable)}.", code="payment_intent_unexpected_state"))
            intent.update(status="canceled", canceled_at=int(time.time()),
                          cancellation_reason=form.get("cancellation_reason"))
            self._event("payment_intent.canceled", intent)
            return json_response(200, intent)
        return json_response(404, _error("invalid_request_error", f"Unrecognized request URL ({path})."))

    def _expanded(self, request: Request, obj: Json) -> Json:
        """``expand[]=latest_charge`` / ``payment_method``: the object in place of its id."""
        expand = {v for k, v in request.query if re.fullmatch(r"expand\[\d*\]", k)}
        out = dict(obj)
        if "latest_charge" in expand and out.get("latest_charge"):
            out["latest_charge"] = self.charges[out["latest_charge"]]
        if "payment_method" in expand and out.get("payment_method"):
            out["payment_method"] = self.payment_methods[out["payment_method"]]
        return out

    def _create_intent(self, form: dict[str, str]) -> Response:
        """POST /v1/payment_intents, confirmed off-session on a saved card."""
        amount = int(form.get("amount") or 0)
        if amount <= 0:
            return json_response(400, _error("invalid_request_error", "Invalid integer: must be positive.",
                                             param="amount"))
        if not form.get("currency"):
            return json_response(400, _error("invalid_request_error", "Missing required param: currency.",
                                             code="parameter_missing", param="currency"))
        pm = self.payment_methods.get(form.get("payment_method", ""))
        customer = form.get("customer")
        if pm is None:
            return self._no_such("PaymentMethod", form.get("payment_method", ""), "payment_method", 400)
        if pm["customer"] is None:
            return json_response(400, _error(
                "invalid_request_error", "The provided PaymentMethod was previously used with a PaymentIntent without "
                "Customer attachment, shared with a connected account without Customer attachment, or was detached "
                "from a Customer. It may not be used again.", param="payment_method"))
        if pm["customer"] != customer:
            return json_response(400, _error("invalid_request_error", "The provided PaymentMethod does not belong "
                                             f"to Customer {customer}.", param="payment_method"))
        intent = {"id": self._id("pi"), "object": "payment_intent", "amount": amount, "amount_received": 0,
                  "currency": form["currency"], "customer": customer, "payment_method": pm["id"],
                  "description": form.get("description"), "metadata": _nested(form, "metadata"),
                  "status": "requires_confirmation", "created": int(time.time()), "latest_charge": None,
                  "last_payment_error": None, "canceled_at": None, "cancellation_reason": None,
                  "capture_method": "automatic", "confirmation_method": "automatic", "livemode": False}
        self.payment_intents[intent["id"]] = intent
        self._event("payment_intent.created", intent)
        if form.get("confirm") != "true":
            return json_response(200, intent)
        if self._declines:
            self._declines -= 1
            error = {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                     "message": "Your card was declined.", "payment_method": dict(pm)}
            intent.update(status="requires_payment_method", last_payment_error=error)
            self._event("payment_intent.payment_failed", intent)
            return json_response(402, {"error": {**error, "payment_intent": dict(intent)}})
        intent.update(status="succeeded", amount_received=amount)
        intent["latest_charge"] = self._charge_intent(intent)
        self._event("charge.succeeded", self.charges[intent["latest_charge"]])
        self._event("payment_intent.succeeded", intent)
        return json_response(200, intent)

    def _charge_intent(self, intent: Json) -> str:
        """The charge a succeeded PaymentIntent made, with its balance transaction and the card fee."""
        amount = intent["amount"]
        charge = {"id": self._id("ch"), "object": "charge", "amount": amount, "amount_refunded": 0,
                  "refunded": False, "currency": intent["currency"], "payment_intent": intent["id"],
                  "status": "succeeded", "disputed": False, "created": int(time.time()), "balance_transaction": None}
        fee = int((Decimal(amount) * CARD_RATE).quantize(Decimal(1), ROUND_HALF_UP)) + CARD_FIXED
        charge["balance_transaction"] = self._transaction("charge", "charge", amount, fee, charge)
        self.charges[charge["id"]] = charge
        return str(charge["id"])

    def _detach(self, pm: Json) -> None:
        pm["customer"] = None
        event_obj = dict(pm)
        self._event("payment_method.detached", event_obj)

    # --- the payer's card and the card networks (saved cards) ------------------------------------------------

    def complete_setup(self, session_id: str, card: str = "4242424242424242") -> str:
        """The payer enters a test card on a setup-mode session; returns the SetupIntent's id."""
        with self.lock:
            session = self.sessions[session_id]
            assert session["mode"] == "setup" and session["status"] == "open", session
            customer = session["customer"]
            pm = {"id": self._id("pm"), "object": "payment_method", "type": "card", "customer": customer,
                  "card": {"brand": "visa", "last4": card[-4:], "exp_month": 12, "exp_year": 2030},
                  "created": int(time.time()), "livemode": False}
            self.payment_methods[pm["id"]] = pm
            intent = {"id": self._id("seti"), "object": "setup_intent", "status": "succeeded", "customer": customer,
                      "payment_method": pm["id"], "usage": "off_session", "created": int(time.time()),
                      "metadata": {}, "last_setup_error": None, "livemode": False}
            self.setup_intents[intent["id"]] = intent
            session.update(status="complete", setup_intent=intent["id"])
            self._event("setup_intent.succeeded", intent)
            self._event("checkout.session.completed", session)
            return str(intent["id"])

    def detach(self, payment_method: str) -> None:
        """The firm removes the saved card (the payer asked, or their bank cancelled the card)."""
        with self.lock:
            self._detach(self.payment_methods[payment_method])

    def decline_next(self, times: int = 1) -> None:
        """The payer's bank declines the next off-session charges (test card 4000000000000002's card_declined)."""
        with self.lock:
            self._declines += times

    def set_intent_status(self, payment_intent: str, status: str) -> None:
        """Stripe's record of the PaymentIntent says ``status`` (any it documents), however it got there."""
        with self.lock:
            self.payment_intents[payment_intent]["status"] = status

    def _money(self, request: Request, form: dict[str, str]) -> Response:
        """Refunds, payouts and balance transactions."""
        path = request.path
        if request.method == "POST" and path == "/v1/refunds":
            return self._refund(form)
        if request.method == "GET" and path == "/v1/payouts":
            return self._list(request, path, list(self.payouts.values()))
        if request.method == "GET" and (m := re.fullmatch(r"/v1/(payouts|refunds)/(\w+)", path)):
            found = getattr(self, m[1]).get(m[2])
            return json_response(200, found) if found else self._no_such(m[1][:-1], m[2], "id")
        if request.method == "GET" and path == "/v1/balance_transactions":
            return self._transactions(request)
        return json_response(404, _error("invalid_request_error", f"Unrecognized request URL ({path})."))

    def _no_such(self, kind: str, ident: str, param: str, status: int = 404) -> Response:
        return json_response(status, _error("invalid_request_error", f"No such {kind}: '{ident}'",
                                            code="resource_missing", param=param))

    def _transactions(self, request: Request) -> Response:
        """GET /v1/balance_transactions, ``payout=`` filtering, ``expand[]=data.source`` giving the objects."""
        payout = request.param("payout")
        if payout is not None and payout not in self.payouts:
            return self._no_such("payout", payout, "payout", 400)
        records = [bt for bt in self.balance_transactions.values()
                   if payout is None or self._paid_in.get(bt["id"]) == payout]
        status, headers, body = self._list(request, request.path, records)
        expand = {v for k, v in request.query if re.fullmatch(r"expand\[\d*\]", k)}
        if "data.source" not in expand:
            return status, headers, body
        page = json.loads(body)
        for bt in page["data"]:
            bt["source"] = self._object(bt["source"])
        return json_response(status, page)

    def _object(self, ident: str) -> Json | None:
        """What a balance transaction's source id names, by its prefix."""
        stores = {"ch": self.charges, "re": self.refunds, "dp": self.disputes, "po": self.payouts}
        return stores.get(ident.split("_", 1)[0], {}).get(ident)

    def _refund(self, form: dict[str, str]) -> Response:
        """POST /v1/refunds for a payment intent: what is left of its charge, at most."""
        intent = form.get("payment_intent", "")
        charge = next((c for c in self.charges.values() if c["payment_intent"] == intent), None)
        if charge is None:
            return self._no_such("payment_intent", intent, "payment_intent", 400)
        reason = form.get("reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            return json_response(400, _error("invalid_request_error", "Invalid reason: must be one of duplicate, "
                                             "fraudulent, or requested_by_customer", param="reason"))
        if charge["disputed"]:
            return json_response(400, _error("invalid_request_error", f"Charge {charge['id']} has been charged "
                                             "back; cannot issue a refund.", code="charge_disputed"))
        left = charge["amount"] - charge["amount_refunded"]
        if left == 0:
            return json_response(400, _error("invalid_request_error", f"Charge {charge['id']} has already been "
                                             "refunded.", code="charge_already_refunded"))
        amount = int(form.get("amount") or left)
        if amount > left:
            return json_response(400, _error(
                "invalid_request_error", f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({left})", code="amount_too_large", param="amount"))
        refund = {"id": self._id("re"), "object": "refund", "amount": amount, "currency": charge["currency"],
                  "payment_intent": intent, "charge": charge["id"], "status": "succeeded", "reason": reason,
                  "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
                  "created": int(time.time()), "balance_transaction": None}
        refund["balance_transaction"] = self._transaction("refund", "refund", -amount, 0, refund)
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        return json_response(200, refund)

    def _transaction(self, bt_type: str, category: str, amount: int, fee: int, source: Json) -> str:
        """A balance transaction on the account's balance, not yet paid out."""
        txn = {"id": self._id("txn"), "object": "balance_transaction", "amount": amount, "fee": fee,
               "net": amount - fee, "currency": source["currency"], "type": bt_type, "reporting_category": category,
               "source": source["id"], "status": "pending", "created": int(time.time()),
               "available_on": int(time.time()) + 86400 * 2, "description": None, "exchange_rate": None,
               "fee_details": [{"amount": fee, "application": None, "currency": source["currency"],
                                "description": "Stripe processing fees", "type": "stripe_fee"}] if fee else []}
        self.balance_transactions[txn["id"]] = txn
        return str(txn["id"])

    def _charge(self, session: Json) -> None:
        """The payment succeeded: a charge and its balance transaction, the card fee taken from it."""
        intent = self.payment_intents[session["payment_intent"]]
        intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=self._charge_intent(intent))
        self._event("payment_intent.succeeded", intent)

    def owes(self) -> bool:
        """Whether a balance transaction is waiting for a payout."""
        with self.lock:
            return any(bt not in self._paid_in for bt in self.balance_transactions)

    def settle(self, gross: bool = False) -> str:
        """One automatic payout of every balance transaction not yet paid out (``gross``: fees billed
        separately, so none is deducted), with the payout's own transaction; it is paid."""
        with self.lock:
            carried = [bt for bt in self.balance_transactions.values() if bt["id"] not in self._paid_in]
            for bt in carried if gross else []:
                bt.update(fee=0, net=bt["amount"], fee_details=[])
            amount = sum(bt["net"] for bt in carried)
            assert amount > 0, "Stripe pays out only a positive balance"
            now = int(time.time())
            payout = {"id": self._id("po"), "object": "payout", "amount": amount, "currency": "gbp",
                      "arrival_date": now - now % 86400 + 86400, "automatic": True, "created": now,
                      "status": "paid", "method": "standard", "type": "bank_account", "statement_descriptor": None,
                      "destination": "ba_00000000000001", "failure_balance_transaction": None,
                      "failure_code": None, "failure_message": None, "balance_transaction": None,
                      "reconciliation_status": "completed", "source_type": "card", "livemode": False}
            payout["balance_transaction"] = self._transaction("payout", "payout", -amount, 0, payout)
            for bt in [*carried, self.balance_transactions[payout["balance_transaction"]]]:
                self._paid_in[bt["id"]] = payout["id"]
                bt["status"] = "available"
            self.payouts[payout["id"]] = payout
            return str(payout["id"])

    def refund(self, payment_intent: str, amount: Decimal | None = None) -> str:
        """The firm refunds from Stripe's dashboard (all that is left by default), as POST /v1/refunds would."""
        with self.lock:
            currency = self._by_intent(payment_intent)["currency"].upper()
            form = {"payment_intent": payment_intent, **({"amount": str(to_minor(amount, currency))} if amount else {})}
            status, _, body = self._refund(form)
            assert status == 200, f"Stripe refused the refund: {body.decode()}"
            return str(json.loads(body)["id"])

    def fail_payout(self, payout_id: str) -> None:
        """The firm's bank returns the payout: failed, and a payout_failure transaction gives the money back to
        the balance (paid out again with the next payout)."""
        with self.lock:
            payout = self.payouts[payout_id]
            payout.update(status="failed", failure_code="account_closed",
                          failure_message="The bank account has been closed.")
            payout["failure_balance_transaction"] = self._transaction(
                "payout_failure", "payout_reversal", payout["amount"], 0, payout)

    def limit_pages(self, size: int) -> None:
        """List at most ``size`` records a page (the API's own limit is 100), so paging is exercised."""
        with self.lock:
            self.max_page = size

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
        if form.get("mode") == "setup":
            return self._create_setup(form, now, expires_at)
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
        if (refused := self._too_long(form)) is not None:
            return refused
        session_id = self._id("cs_test")
        self._intent_data[session_id] = {"description": form.get("payment_intent_data[description]"),
                                         "metadata": _nested(form, "payment_intent_data[metadata]")}
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
            "metadata": _nested(form, "metadata"),
            "custom_text": _custom_text(form),
            "line_item_name": form.get("line_items[0][price_data][product_data][name]"),
            "line_item_description": form.get("line_items[0][price_data][product_data][description]"),
            "payment_intent": None,
            "livemode": False,
        }
        self.sessions[session_id] = session
        return json_response(200, session)

    def _create_setup(self, form: dict[str, str], now: int, expires_at: int) -> Response:
        """A setup-mode session: saves a card for later, takes no money (no line items)."""
        if any(k.startswith("line_items") for k in form):
            return json_response(400, _error("invalid_request_error", "You can not pass `line_items` in `setup` "
                                             "mode.", param="line_items"))
        if not form.get("currency") and not any(k.startswith("allowed_payment_method_types") for k in form):
            return json_response(400, _error("invalid_request_error", "Missing required param: currency.",
                                             code="parameter_missing", param="currency"))
        customer = form.get("customer")
        if customer is not None and customer not in self.customers:
            return self._no_such("customer", customer, "customer", 400)
        if (refused := self._too_long(form)) is not None:
            return refused
        session_id = self._id("cs_test")
        session = {"id": session_id, "object": "checkout.session", "mode": "setup", "status": "open",
                   "payment_status": "no_payment_required", "amount_total": None, "amount_subtotal": None,
                   "currency": form.get("currency"), "customer": customer,
                   "url": f"https://checkout.stripe.com/c/pay/{session_id}", "success_url": form.get("success_url"),
                   "expires_at": expires_at, "created": now, "client_reference_id": form.get("client_reference_id"),
                   "metadata": _nested(form, "metadata"), "setup_intent": None, "payment_intent": None,
                   "custom_text": _custom_text(form), "livemode": False}
        self.sessions[session_id] = session
        return json_response(200, session)

    @staticmethod
    def _too_long(form: dict[str, str]) -> Response | None:
        """Stripe's documented length limits on what a session carries: a 400 naming the parameter."""
        limits = {"custom_text[submit][message]": 1200, "client_reference_id": 200}
        for param, limit in limits.items():
            if len(form.get(param) or "") > limit:
                return json_response(400, _error("invalid_request_error", f"Invalid string: {form[param][:50]}...;"
                                                 f" must be at most {limit} characters", param=param))
        for prefix in ("metadata", "payment_intent_data[metadata]"):
            metadata = _nested(form, prefix)
            problem = ("metadata must have at most 50 keys" if len(metadata) > 50 else
                       "metadata keys must be at most 40 characters" if any(len(k) > 40 for k in metadata) else
                       "metadata values must be at most 500 characters" if any(len(v) > 500 for v in
                                                                               metadata.values()) else None)
            if problem:
                return json_response(400, _error("invalid_request_error", f"Invalid {prefix}: {problem}.",
                                                 param=prefix))
        return None

    def payer_view(self, session_id: str) -> str:
        """The text Checkout shows the payer for a session: the amount, the line item and the custom text (a
        setup session: the custom text alone, as it takes no money and has no line items)."""
        session = self.sessions[session_id]
        submit = (session["custom_text"]["submit"] or {}).get("message")
        if session["mode"] == "setup":
            return submit or ""
        amount = f"{session['currency'].upper()} {Decimal(session['amount_total']).scaleb(-2)}"
        return "\n".join(t for t in (amount, session["line_item_name"], session["line_item_description"], submit)
                         if t)

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

    def _expire(self, session: Json) -> None:
        session["status"] = "expired"
        self._event("checkout.session.expired", session)

    def _list(self, request: Request, url: str, records: list[Json]) -> Response:
        """Newest first by created, filtered by created[...], paged by starting_after / ending_before."""
        limit = min(int(request.param("limit") or 10), self.max_page)
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

    def _event(self, event_type: str, obj: Json) -> None:
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
            intent = self._id("pi")
            session.update(status="complete", payment_intent=intent)
            self.payment_intents[intent] = {
                "id": intent, "object": "payment_intent", "amount": session["amount_total"],
                "currency": session["currency"], "status": "processing", "customer": None, "payment_method": None,
                "latest_charge": None, "created": int(time.time()), **self._intent_data[session_id]}
            self._event("checkout.session.completed", session)
            if confirm:
                session["payment_status"] = "paid"
                self._charge(session)
                self._event("checkout.session.async_payment_succeeded", session)
            return intent

    def _by_intent(self, payment_intent: str) -> Json:
        return next(s for s in self.sessions.values() if s["payment_intent"] == payment_intent)

    def fail(self, payment_intent: str) -> None:
        with self.lock:
            intent = self.payment_intents[payment_intent]
            intent["status"] = "requires_payment_method"
            self._event("payment_intent.payment_failed", intent)
            self._event("checkout.session.async_payment_failed", self._by_intent(payment_intent))

    def charge_back(self, payment_intent: str) -> None:
        """The payer disputes the charge: the amount and the dispute fee are withdrawn from the firm's balance
        (a balance transaction of type adjustment, reporting_category dispute)."""
        with self.lock:
            intent = self.payment_intents[payment_intent]
            charge = next((c for c in self.charges.values() if c["payment_intent"] == payment_intent), None)
            dispute = {
                "id": self._id("dp"),
                "object": "dispute",
                "amount": intent["amount"],
                "currency": intent["currency"],
                "payment_intent": payment_intent,
                "charge": charge["id"] if charge else self._id("ch"),
                "reason": "fraudulent",
                "status": "needs_response",
                "created": int(time.time()),
                "balance_transactions": [],
            }
            # "zero, one, or two balance transactions that show funds withdrawn and reinstated" (_dispute.py)
            self._dispute_move(dispute, -dispute["amount"], DISPUTE_FEE, "dispute")
            if charge:
                charge["disputed"] = True
            self.disputes[dispute["id"]] = dispute
            self._event("charge.dispute.created", dispute)

    def _dispute_move(self, dispute: Json, amount: int, fee: int, category: str) -> None:
        txn = self._transaction("adjustment", category, amount, fee, dispute)
        dispute["balance_transactions"].append(dict(self.balance_transactions[txn]))

    def win_dispute(self, payment_intent: str) -> None:
        """The firm wins: status won and charge.dispute.funds_reinstated, the money is back (the fee is not)."""
        with self.lock:
            dispute = [d for d in self.disputes.values()
                       if d["payment_intent"] == payment_intent and d["balance_transactions"]][-1]
            dispute["status"] = "won"
            self._dispute_move(dispute, dispute["amount"], 0, "dispute_reversal")
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

    def delete_events(self, event_type: str | None = None) -> list[Json]:
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
