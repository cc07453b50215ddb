"""``/health`` (no token) and ``/status``: what a service monitor and the console's header read."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agent import __version__
from agent.api.auth import RuntimeDep
from agent.api.schemas import ComponentOut, HealthOut, StatusOut
from agent.engine.payouts import open_breaches
from agent.state.store import utcnow
from postings.queries import state_counts

public = APIRouter(tags=["status"])
router = APIRouter(tags=["status"])


@public.get("/favicon.ico", status_code=204, include_in_schema=False)
def favicon() -> Response:
    """No icon: answered so that a browser's own request is neither a 401 nor a warning in the log."""
    return Response(status_code=204)


@public.get("/health", response_model=HealthOut)
def health() -> HealthOut:
    """Liveness for a service monitor; no token needed and nothing private in it."""
    return HealthOut(version=__version__)


@router.get("/status", response_model=StatusOut)
def status(rt: RuntimeDep) -> StatusOut:
    parts = rt.store.component_status()
    with rt.store.read() as conn:
        backlog = state_counts(conn)
        breaches = [b.message for b in open_breaches(conn)]
    now = utcnow()
    last_sync = parts.get("sync", {}).get("last_ok_at")
    return StatusOut(
        version=__version__, now=now, last_sync=last_sync,
        lag_seconds=(now - last_sync).total_seconds() if last_sync else None, backlog=backlog,
        components={name: ComponentOut(**{k: row[k] for k in ComponentOut.model_fields})
                    for name, row in parts.items()},
        state_store=rt.store.full, client_money=breaches,
    )
