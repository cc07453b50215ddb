"""``Idempotency-Key`` on the money-changing routes: a client that lost an answer asks again with the same key
and gets the first answer back (``Idempotent-Replayed: true``) instead of a second link or refund, for 24 hours.

As Stripe's API does (https://docs.stripe.com/api/idempotent_requests): keys are the client's own (up to 255
characters), scoped to the caller's credential; the same key with another method, path or body is refused; a key
whose first request is still running is a 409. Only a finished answer is kept: a request that raised (refused,
invalid) is forgotten, so asking again runs it again, which changes nothing it had not changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from agent.state import replays
from agent.state.store import StateStore

HEADER = "Idempotency-Key"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _sha(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def request_key(request: Request) -> str | None:
    """The caller's key for this request, scoped to its credential, for engines that make a write idempotent by
    it (a refund's id); ``None`` without the header."""
    key: str | None = getattr(request.state, "request_key", None)
    return key


def _refusal(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


class IdempotentRoute(APIRoute):
    """A route that honours ``Idempotency-Key``; the Guard has checked Host and token before this reads a body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            raw = request.headers.get(HEADER)
            if raw is None or request.method not in WRITES:
                return await handler(request)
            if not raw.strip() or len(raw) > 255:
                return _refusal(422, f"{HEADER}: give 1 to 255 characters, e.g. a UUID made for this request")
            store: StateStore = request.app.state.rt.store
            credential = request.headers.get("authorization") or request.headers.get("cookie") or ""
            key = _sha(f"{credential}\n{raw}".encode())
            claim = await run_in_threadpool(replays.claim, store, key, request.method, request.url.path,
                                            _sha(await request.body()))
            if claim.verdict == "differs":
                return _refusal(422, f"{HEADER} {raw!r} was first used for {claim.first} with other parameters; "
                                     "use a new key for a new request")
            if claim.verdict == "running":
                return _refusal(409, f"a request with {HEADER} {raw!r} is still running; ask again in a moment")
            if claim.verdict == "replay":
                return Response(claim.body or "", status_code=claim.status or 200, media_type="application/json",
                                headers={"Idempotent-Replayed": "true"})
            request.state.request_key = key
            try:
                response = await handler(request)
            except BaseException:
                await run_in_threadpool(replays.forget, store, key)
                raise
            body = bytes(response.body).decode()
            await run_in_threadpool(replays.answer, store, key, response.status_code, body)
            return response

        return route


__all__ = ["HEADER", "IdempotentRoute", "request_key"]
