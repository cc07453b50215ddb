"""How the API answers a failure: one problem shape, ``{"error": message}``, with the status the failure means.

A person's mistake (a rule, bad data, an unknown id) is a 4xx; a provider's refusal is 502; an outage is 503 with
Retry-After. Every message is scrubbed of secrets.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.core.errors import (
    DataError,
    LedgerlinkError,
    TransientError,
)
from agent.core.model import Actor
from agent.core.scrub import scrub
from agent.state import audit

log = logging.getLogger("ledgerlink.api")


@contextmanager
def found(what: str) -> Iterator[None]:
    """A DataError while looking up the path's own id is a 404, not a 422."""
    try:
        yield
    except DataError:
        raise HTTPException(404, f"unknown {what}") from None


def plain(value: Any) -> Any:
    """A SendRecord of any shape (dataclass, pydantic model, mapping) as JSON-ready data, money as strings."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": scrub(message)}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    def ours(_request: Request, exc: Exception) -> JSONResponse:
        """Each class says its status (agent.core.errors); an outage also says when to come back."""
        assert isinstance(exc, LedgerlinkError)
        if isinstance(exc, TransientError):
            wait = exc.retry_after or 5
            return _error(exc.http_status, str(exc), {"Retry-After": str(math.ceil(wait))})
        return _error(exc.http_status, str(exc))

    app.add_exception_handler(LedgerlinkError, ours)

    def http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = [{"field": _field(e["loc"]), "message": _worded(e)} for e in exc.errors()]
        message = scrub("; ".join(f"{f['field']}: {f['message']}" if f["field"] else f["message"] for f in fields))
        _audit_refusal(request, message, [f["field"] for f in fields])
        return JSONResponse({"error": message, "fields": fields,
                             "detail": jsonable_encoder(exc.errors(), exclude={"input", "ctx"})}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)


def _field(loc: Sequence[Any]) -> str:
    """Where a request's mistake is, as the form names it: 'amount', 'statements.INV-1', not 'body.amount'."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)


def _worded(error: Mapping[str, Any]) -> str:
    """pydantic's message without its developer prefixes, as a clerk reads it."""
    msg = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    field = _field(error["loc"]).split(".")[-1]
    msg = msg.removeprefix(f"{field}: ")  # our validators name the field already; the form shows it beside it
    if error["type"] == "missing":
        return "this is required"
    if error["type"] == "extra_forbidden":
        return "is not a field of this request"
    return msg


def _audit_refusal(request: Request, message: str, fields: list[str]) -> None:
    """A state-changing request a signed-in person made and the API refused as invalid is one entry (the README
    promises one for every refused action); what was sent is not kept, only which fields were wrong."""
    user = getattr(request.state, "user", None)
    if request.method in ("GET", "HEAD", "OPTIONS") or user is None:
        return
    store = request.app.state.rt.store
    try:
        with store.begin() as conn:
            audit.record(conn, Actor("user", user.name), "request.refused", "request",
                         f"{request.method} {request.url.path}", before={"fields": fields}, outcome="failed",
                         error=message)
    except LedgerlinkError as exc:  # the refusal is answered whatever the state store says; the log has it
        log.warning("refused %s %s not audited: %s", request.method, request.url.path, exc)
