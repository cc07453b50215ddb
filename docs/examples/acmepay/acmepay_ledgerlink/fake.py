"""A fake Acme Pay server for the contract kits, written from Acme's API reference (README.md), not from the adapter.

Each rule cites its section (§). ``AcmeFake`` is also the kit's ``World``: the payer (``pay``) and Acme's back
office (``fail``, ``charge_back``, ``expire``), and it can show the pay page as the payer sees it (``payer_view``).
Faults (5xx, 429 with Retry-After, slow answers) come from ``FakeAPI``.
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import json
import re
import secrets
import urllib.request
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

from connectors.providers.contract import ProviderLink
from connectors.testkit.fakehttp import FakeAPI, Json, Request, Response, json_response

__all__ = ["API_KEY", "AcmeFake"]

API_KEY = "sk_test_acme"

ERROR_TYPES = {400: "invalid_request", 401: "authentication_error", 404: "not_found", 409: "conflict",
               422: "invalid_request", 429: "rate_limited"}  # §2.1 (5xx: api_error)
LIMITS = {"description": 140, "reference": 35, "payee_name": 70}  # §3.1
MONEY = re.compile(r"^\d+\.\d{2}$")  # §1.3
MAX_LIFE = dt.timedelta(days=30)  # §3.1 expires_at
PAGE = (1, 100, 20)  # §3.6, §5.3: limit 1..100, default 20


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class AcmeFake(FakeAPI):
    """Acme Pay's API on 127.0.0.1, holding one Acme account's links, payments and events in memory."""

    def __init__(self, api_key: str = API_KEY, payee_name: str = "Acme test merchant") -> None:
        super().__init__()
        self.api_key = api_key
        self.payee_name = payee_name  # §3.1: payee_name's default, the Acme account's name
        self.links: dict[str, Json] = {}
        self.payments: dict[str, Json] = {}
        self.events: list[Json] = []
        self._replays: dict[str, tuple[Json, Response]] = {}  # §2.3: key -> (the request, its 2xx answer)
        self._clock = dt.datetime.now(dt.UTC)

    # --- the API ------------------------------------------------------------------------------------------------

    def error_body(self, status: int) -> object:
        kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request")
        return {"error": {"type": kind, "code": kind, "message": f"HTTP {status}"}}  # §2.1

    def route(self, request: Request) -> Response:
        self._expire_due()  # §3.2 expired: Acme closes a link itself at expires_at
        parts = request.path.strip("/").split("/")
        try:
            if request.method == "GET" and len(parts) == 2 and parts[0] == "l":
                return self._pay_page(parts[1])
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":  # §1.1
                raise _Refused(401, "authentication_error", "no valid API key was given")
            return self._api(request, parts)
        except _Refused as refused:  # §2.1
            kind = ERROR_TYPES[refused.status]
            return json_response(refused.status, {"error": {"type": kind, "code": refused.code,
                                                            "message": str(refused)}})

    def _api(self, request: Request, parts: list[str]) -> Response:
        match request.method, parts:
            case "POST", ["v1", "payment_links"]:
                return self._idempotent(request, self._create_link)
            case "GET", ["v1", "payment_links"]:
                return self._list_links(request)
            case "GET", ["v1", "payment_links", ref]:
                return json_response(200, self._link(ref))
            case "POST", ["v1", "payment_links", ref, "cancel"]:
                return self._idempotent(request, lambda _body: self._cancel(ref))
            case "GET", ["v1", "events"]:
                return self._list_events(request)
            case "GET", ["v1", "events", event_id]:
                found = [e for e in self.events if e["id"] == event_id]
                if not found:
                    raise _Refused(404, "resource_missing", f"no event {event_id}")
                return json_response(200, found[0])
        raise _Refused(404, "resource_missing", f"no route {request.method} {request.path}")

    def _idempotent(self, request: Request, act: Any) -> Response:
        """§2.3: a POST needs a key; the same key and body answer the stored 2xx with Idempotent-Replayed."""
        key = request.headers.get("Idempotency-Key")
        if not key or len(key) > 255:
            raise _Refused(400, "idempotency_key", "POST requests need an Idempotency-Key of up to 255 characters")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise _Refused(400, "invalid_json", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise _Refused(400, "invalid_json", "the body is not a JSON object")
        asked = {"path": request.path, "body": body}
        if key in self._replays:
            stored, (status, headers, payload) = self._replays[key]
            if stored != asked:
                raise _Refused(422, "idempotency_key_reused", "this key was used with a different request")
            return status, {**headers, "Idempotent-Replayed": "true"}, payload
        response: Response = act(body)
        if 200 <= response[0] < 300:  # §2.3: only a 2xx answer is stored under its key
            self._replays[key] = (asked, response)
        return response

    def _create_link(self, body: Json) -> Response:
        """§3.3."""
        _check_fields(body)
        payer, metadata = body.get("payer") or {}, body.get("metadata") or {}
        now = self._now()
        try:
            expires_at = _parse(body["expires_at"])
        except ValueError:
            raise _Refused(400, "expires_at", "expires_at is not an RFC 3339 time") from None
        if not now < expires_at <= now + MAX_LIFE:
            raise _Refused(400, "expires_at", "expires_at must be in the next 30 days")
        ref = "pl_" + secrets.token_hex(8)
        self.links[ref] = {
            "id": ref, "object": "payment_link", "url": f"{self.url}/l/{ref}", "status": "open",
            "amount": body["amount"], "currency": body["currency"], "description": body["description"],
            "reference": body.get("reference") or "", "payee_name": body.get("payee_name") or self.payee_name,
            "payer": payer, "return_url": body.get("return_url"), "metadata": metadata,
            "expires_at": _time(expires_at), "created_at": _time(now), "amount_paid": None, "payments": [],
        }
        self._emit("payment_link.created", self._link(ref))
        return json_response(201, self._link(ref))
    def _cancel(self, ref: str) -> Response:
        """§3.5: only an open link can be cancelled."""
        link = self._stored_link(ref)
        if link["status"] != "open":
            raise _Refused(409, "link_not_cancellable", f"the link is {link['status']}")
        link["status"] = "cancelled"
        self._emit("payment_link.cancelled", self._link(ref))
        return json_response(200, self._link(ref))

    def _list_links(self, request: Request) -> Response:
        """§3.6: created at or after created_after, oldest first, paged by starting_after."""
        limit = _limit(request)
        since = request.param("created_after")
        try:
            floor = _parse(since) if since else None
        except ValueError:
            raise _Refused(400, "created_after", "created_after is not an RFC 3339 time") from None
        links = [ref for ref, link in self.links.items() if floor is None or _parse(link["created_at"]) >= floor]
        after = request.param("starting_after")
        if after:
            if after not in links:
                raise _Refused(400, "starting_after", f"no link {after} in this list")
            links = links[links.index(after) + 1:]
        return json_response(200, {"data": [self._link(ref) for ref in links[:limit]],
                                   "has_more": len(links) > limit})

    def _list_events(self, request: Request) -> Response:
        """§5.3: the events after ``after``, oldest first."""
        limit = _limit(request)
        after = request.param("after")
        ids = [e["id"] for e in self.events]
        if after and after not in ids:
            raise _Refused(400, "after", f"no event {after}")
        rest = self.events[ids.index(after) + 1:] if after else self.events
        return json_response(200, {"data": rest[:limit], "has_more": len(rest) > limit})

    def _pay_page(self, ref: str) -> Response:
        """§3.1: the pay page shows payee_name, "<currency> <amount>", description and reference, nothing else."""
        link = self.links.get(ref)
        if link is None:
            return 404, {"Content-Type": "text/html"}, b"<html><body>No such link</body></html>"
        shown = [f"Pay {link['payee_name']}", f"{link['currency']} {link['amount']}", link["description"],
                 f"Reference: {link['reference']}" if link["reference"] else "", f"Status: {link['status']}"]
        page = "<html><body>" + "".join(f"<p>{html.escape(line)}</p>" for line in shown if line) + "</body></html>"
        return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()

    # --- the World (payer and back office) ----------------------------------------------------------------------

    def pay(self, link: ProviderLink, amount: Decimal | None = None, confirm: bool = True) -> str:
        """The payer pays an open link (§4.2 pending, the link processing), settled at once unless ``confirm``
        is False."""
        with self.lock:
            stored = self._stored_link(link.ref)
            assert stored["status"] == "open", f"link {link.ref} is {stored['status']}, not open"
            ref = "py_" + secrets.token_hex(8)
            now = _time(self._now())
            self.payments[ref] = {
                "id": ref, "object": "payment", "payment_link": link.ref,
                "amount": f"{amount:.2f}" if amount is not None else stored["amount"],
                "currency": stored["currency"], "status": "pending", "created_at": now, "updated_at": now,
            }
            stored["payments"].append(ref)
            stored["status"] = "processing"
            self._emit("payment.pending", self._payment(ref))
            if confirm:
                self._move(ref, "pending", "succeeded")
                stored["status"], stored["amount_paid"] = "paid", self.payments[ref]["amount"]
            return ref

    def fail(self, payment_ref: str) -> None:
        """The payer's bank refuses a pending payment; the link opens again (§3.2 open, §4.2 failed)."""
        with self.lock:
            self._move(payment_ref, "pending", "failed")
            self.links[self.payments[payment_ref]["payment_link"]]["status"] = "open"

    def charge_back(self, payment_ref: str) -> None:
        """The payer's bank takes a succeeded payment back; the link stays paid (§3.2, §4.2 reversed)."""
        with self.lock:
            self._move(payment_ref, "succeeded", "reversed")

    def expire(self, link: ProviderLink) -> None:
        """Let the link's time run out: Acme closes it (§3.2 expired, §5.2 payment_link.expired)."""
        with self.lock:
            self._stored_link(link.ref)["expires_at"] = _time(self._now() - dt.timedelta(seconds=1))
            self._expire_due()

    def link_count(self) -> int:
        with self.lock:
            return len(self.links)

    def payer_view(self, link: ProviderLink) -> str:
        """The pay page's text, fetched from the link's URL as the payer's browser would."""
        with urllib.request.urlopen(link.url, timeout=5) as answer:  # the fake's own http:// URL
            page = answer.read().decode()
        return _text(page)

    # --- the store ----------------------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        """Now, strictly after every earlier time this fake gave (§5.3: events in the order they happened)."""
        self._clock = max(dt.datetime.now(dt.UTC), self._clock + dt.timedelta(microseconds=1))
        return self._clock

    def _stored_link(self, ref: str) -> Json:
        if ref not in self.links:
            raise _Refused(404, "resource_missing", f"no payment link {ref}")
        return self.links[ref]

    def _link(self, ref: str) -> Json:
        """§3.1: the link with its payments (§4.1) embedded, oldest first."""
        link = copy.deepcopy(self._stored_link(ref))
        link["payments"] = [self._payment(p) for p in link["payments"]]
        return link

    def _payment(self, ref: str) -> Json:
        return copy.deepcopy(self.payments[ref])

    def _move(self, ref: str, was: str, becomes: str) -> None:
        """§4.2: pending -> succeeded -> reversed, or pending -> failed."""
        payment = self.payments[ref]
        assert payment["status"] == was, f"payment {ref} is {payment['status']}, not {was}"
        payment["status"], payment["updated_at"] = becomes, _time(self._now())
        self._emit(f"payment.{becomes}", self._payment(ref))

    def _expire_due(self) -> None:
        with self.lock:
            now = self._now()
            for ref, link in self.links.items():
                if link["status"] == "open" and _parse(link["expires_at"]) <= now:
                    link["status"] = "expired"
                    self._emit("payment_link.expired", self._link(ref))

    def _emit(self, kind: str, obj: Json) -> None:
        """§5.1: the object as it is now, kept in the event for good."""
        self.events.append({"id": "ev_" + secrets.token_hex(8), "object": "event", "type": kind,
                            "created_at": _time(self._now()), "data": {"object": obj}})


def _check_fields(body: Json) -> None:
    """§3.3's required fields, §1.3 money, §3.1's limits."""
    for name in ("amount", "currency", "description", "expires_at"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise _Refused(400, name, f"{name} is required and must be a string")
    if not MONEY.match(body["amount"]) or Decimal(body["amount"]) <= 0:
        raise _Refused(400, "amount", "amount must be a positive decimal string with two decimals (§1.3)")
    if not re.fullmatch(r"[A-Z]{3}", body["currency"]):
        raise _Refused(400, "currency", "currency must be an ISO 4217 code in capitals")
    for name, limit in LIMITS.items():
        if len(body.get(name) or "") > limit:
            raise _Refused(422, "field_too_long", f"{name} is longer than {limit} characters")
    payer = body.get("payer") or {}
    if len(payer.get("name", "")) > 70 or len(payer.get("email", "")) > 254:
        raise _Refused(422, "field_too_long", "payer.name or payer.email is too long")
    metadata = body.get("metadata") or {}
    if len(metadata) > 20 or any(len(k) > 40 or not isinstance(v, str) or len(v) > 500
                                 for k, v in metadata.items()):
        raise _Refused(422, "field_too_long", "metadata: at most 20 keys of 40 characters, values of 500")


def _limit(request: Request) -> int:
    low, high, default = PAGE
    text = request.param("limit")
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise _Refused(400, "limit", f"limit must be {low} to {high}")
    return int(text)


def _time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # §1.4


def _parse(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return when


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.lines.append(data.strip())


def _text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return "\n".join(parser.lines)
