"""The local HTTP API: what a button in the matter software or the web console calls.

It adds no business rule of its own. Every endpoint calls an engine through the runtime, and failures map to
HTTP status codes (agent.api.errors). Money is a decimal string in JSON, never a float, both ways. It binds
127.0.0.1 by default. Every endpoint except ``GET /health`` and sign-in needs ``Authorization: Bearer <token>``:
a console session (sign in with name and password) or a personal API token (``ledgerlink api token --user NAME``).
Clerks may search, create, send and cancel links, bulk upload and read postings; settings, reallocating and
removing postings need an admin.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import uvicorn
from fastapi import APIRouter, Depends, FastAPI

from agent import __version__
from agent.api import console
from agent.api.auth import Tokens, require_admin, require_token, settle_users
from agent.api.console.router import router as console_router
from agent.api.docs import mount_docs
from agent.api.errors import install_error_handlers
from agent.api.guard import Guard
from agent.api.routers import (
    audit,
    collections,
    links,
    matters,
    money,
    plans,
    postings,
    settings,
    signin,
    status,
)
from agent.api.routers.common import ERRORS
from agent.api.schemas import ErrorOut
from agent.core.errors import ConfigurationError
from agent.runtime import Runtime

__all__ = ["ApiServer", "create_app", "serve_api"]

log = logging.getLogger("ledgerlink.api")
STAFF_ROUTERS = (status.router, matters.router, links.router, postings.router, collections.router, plans.router,
                 money.router, console_router, audit.staff)
ADMIN_ROUTERS = (settings.router, audit.admin)


def allowed_hosts(rt: Runtime) -> set[str]:
    """The names a browser on this computer uses for the agent; any other Host is a rebinding attempt."""
    return {"127.0.0.1", "localhost", "::1", rt.settings.api_host}


def create_app(rt: Runtime) -> FastAPI:
    """The API over one runtime. Users are first read on the first request, so building the app reads nothing."""
    app = FastAPI(title="Ledgerlink local API", version=__version__,
                  description=(__doc__ or "").strip(), separate_input_output_schemas=True,
                  docs_url=None, redoc_url=None)
    app.state.rt = rt
    app.state.tokens = tokens = Tokens(rt)
    app.add_middleware(Guard, hosts=lambda: allowed_hosts(rt), authorised=tokens.authorised)
    install_error_handlers(app)
    app.include_router(status.public)
    app.include_router(signin.public)
    staff = APIRouter(dependencies=[Depends(require_token)], responses=ERRORS)
    for router in STAFF_ROUTERS:
        staff.include_router(router)
    app.include_router(staff)
    for router in ADMIN_ROUTERS:
        app.include_router(router, dependencies=[Depends(require_admin)],
                           responses={**ERRORS, 403: {"model": ErrorOut}})
    mount_docs(app)
    console.mount(app)  # the staff console: static pages calling these same endpoints with the same token
    return app


# ------------------------------------------------------------------------------------------- serving


class CalmServer(uvicorn.Server):
    """uvicorn with its housekeeping tick (the Date header, noticing should_exit) once a second instead of ten
    times: an idle agent's API thread then sleeps. on_tick refreshes the headers when counter % 10 == 0."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000
            await asyncio.sleep(TICK)


TICK = 1.0  # seconds: the API's stop is noticed within this


class ApiServer:
    """uvicorn in a background thread, so the service loop keeps the main thread and its signal handlers."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Finish requests in flight, then close the socket."""
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_api(rt: Runtime, host: str = "127.0.0.1", port: int = 8766, *, start_timeout: float = 10.0) -> ApiServer:
    """Start the API on host:port (0 picks a free port) and return once it accepts connections."""
    settle_users(rt)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the local API listens on %s, not only on this computer; keep the tokens safe", host)
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default, which lets any local process choose its "client
    # address" (and so dodge the per-address lock-out); only proxies an admin names are believed.
    proxies = rt.settings.trusted_proxies
    config = uvicorn.Config(create_app(rt), host=host, port=port, log_config=None, lifespan="off",
                            timeout_graceful_shutdown=5, server_header=False, proxy_headers=bool(proxies),
                            forwarded_allow_ips=",".join(proxies) if proxies else "")
    server = CalmServer(config)
    thread = threading.Thread(target=server.run, name="ledgerlink-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigurationError(f"the local API could not listen on {host}:{port} (port in use?); "
                                     "set api_port in ledgerlink.toml")
        time.sleep(0.01)
    handle = ApiServer(server, thread)
    log.info("local API on %s (OpenAPI at %s/docs)", handle.url, handle.url)
    return handle
