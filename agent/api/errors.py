"""How the API answers a failure: one problem shape, ``{"error": message}``, with the status the failure means.

A person's mistake (a rule, bad data, an unknown id) is a 4xx; a provider's refusal is 502; an outage is 503 with
Retry-After. Every message is scrubbed of secrets.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.core.errors import (
    ConfigurationError,
    DataError,
    LedgerlinkError,
    NotSetUp,
    RuleError,
    TransientError,
)
from agent.core.scrub import scrub
from connectors.providers.contract import ProviderError


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
    def handle(status: int) -> Callable[[Request, Exception], JSONResponse]:
        return lambda _request, exc: _error(status, str(exc))

    app.add_exception_handler(RuleError, handle(422))
    app.add_exception_handler(DataError, handle(422))
    app.add_exception_handler(NotSetUp, handle(409))  # nothing wrong with the request: the firm must set it up
    app.add_exception_handler(ConfigurationError, handle(500))
    app.add_exception_handler(ProviderError, handle(502))
    app.add_exception_handler(LedgerlinkError, handle(500))

    def transient(_request: Request, exc: Exception) -> JSONResponse:
        wait = getattr(exc, "retry_after", None) or 5
        return _error(503, str(exc), {"Retry-After": str(math.ceil(wait))})

    def http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    def invalid(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": scrub(f"invalid request: {problems}"),
                             "detail": jsonable_encoder(exc.errors(), exclude={"input", "ctx"})}, status_code=422)

    app.add_exception_handler(TransientError, transient)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)
