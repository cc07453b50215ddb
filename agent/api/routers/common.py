"""OpenAPI answers the routers share."""

from __future__ import annotations

from typing import Any

from agent.api.schemas import ErrorOut

MISSING: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}}
