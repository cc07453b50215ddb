"""The gate in front of every request, before any body is read: the Host header, the token (bearer or console
cookie), the body size.

A foreign ``Host`` (DNS rebinding: a web page pointing its own name at 127.0.0.1) is refused; a request to a
non-public path without a right token is answered 401 before its body is read, so nobody can make the agent
parse 300 MB unauthenticated; and a body larger than the cap (a few MB; bulk uploads have their own) is cut off
with 413 while it streams in, whatever its Content-Length says.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("ledgerlink.api")
MAX_BODY = 2 * 1024 * 1024
MAX_UPLOAD = 50 * 1024 * 1024
UPLOAD_PATHS = ("/bulk/review",)
UNAUTHORISED = ("missing or wrong bearer token; sign in again, or make your own with "
                "'ledgerlink api token --user NAME'")
# pages and documents that carry no private data; a browser asks for /favicon.ico on its own, without a token
PUBLIC = ("/health", "/openapi.json", "/docs", "/console", "/favicon.ico")


class BodyTooLarge(Exception):
    """Raised inside the app's receive when the body passes its cap."""


class Guard:
    """Pure ASGI middleware, so nothing of the request is read before the checks pass."""

    def __init__(self, app: ASGIApp, *, hosts: Callable[[], Iterable[str]],
                 authorised: Callable[[Mapping[str, str]], bool]) -> None:
        self.app = app
        self.hosts = hosts
        self.authorised = authorised

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
        if host not in {h.lower() for h in self.hosts()}:
            await _answer(send, 421, f"unknown host {host!r}: this agent answers only on its own addresses")
            return
        path: str = scope.get("path", "")
        public = any(path == p or path.startswith(p + "/") for p in PUBLIC)
        if not public and not self.authorised(headers):
            address = (scope.get("client") or ("unknown",))[0]
            log.warning("refused %s %s from %s: 401 %s", scope.get("method"), path, address,
                        "wrong or expired token" if headers.get("authorization") or "cookie" in headers
                        else "no token")
            await _answer(send, 401, UNAUTHORISED, {"WWW-Authenticate": "Bearer"})
            return
        cap = MAX_UPLOAD if path in UPLOAD_PATHS else MAX_BODY
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            await _answer(send, 413, f"the request body is larger than {cap // (1024 * 1024)} MB")
            return
        started = False

        async def counted_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _capped(receive, cap), counted_send)
        except BodyTooLarge:
            if not started:
                await _answer(send, 413, f"the request body is larger than {cap // (1024 * 1024)} MB")


def _capped(receive: Receive, cap: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise BodyTooLarge
        return message

    return wrapped


async def _answer(send: Send, status: int, error: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
