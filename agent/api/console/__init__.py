"""The staff web console, served under /console by the agent's own FastAPI app.

It is static HTML, CSS and vanilla JavaScript (no build step, nothing from the internet) that calls the local
HTTP API with the session token of the signed-in person (name and password, or a one-time link), kept in
sessionStorage. Static pages rather than server-rendered
ones because the token only ever travels in the Authorization header: no cookie, so no CSRF surface, and the
console holds no business rule of its own - every number it shows comes from the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from agent.core.errors import ConfigurationError

PREFIX = "/console"


def static_dir() -> Path:
    """The console's files, package data of this package. Starlette serves a directory on disk, so an install
    whose packages are not plain files (a zip) cannot serve the console, and says so at start."""
    static = resources.files("agent.api.console") / "static"
    if not isinstance(static, Path) or not (static / "index.html").is_file():
        raise ConfigurationError(f"the console's files are missing from this installation ({static}); "
                                 "reinstall Ledgerlink")
    return static


# Everything the console needs comes from this origin; inline script is refused, so injected markup cannot run.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def sign_in_url(base: str, code: str) -> str:
    """The sign-in link with a one-time code (agent.state.signin): safe to log and print, useless once used. The
    code rides in the #fragment, which browsers never send to a server, so it stays out of access logs."""
    return f"{base.rstrip('/')}{PREFIX}/login#code={quote(code, safe='')}"


def mount(app: FastAPI) -> None:
    """Serve the console's static pages under /console on ``app`` (its endpoints are in console.router)."""
    static = static_dir()

    @app.get(PREFIX, include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    @app.get(f"{PREFIX}/", include_in_schema=False)
    def console_index() -> FileResponse:
        return FileResponse(static / "index.html")

    @app.get(f"{PREFIX}/login", include_in_schema=False)
    def console_login() -> FileResponse:
        return FileResponse(static / "login.html")

    app.mount(f"{PREFIX}/static", StaticFiles(directory=static), name="console-static")

    @app.middleware("http")
    async def console_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if request.url.path.startswith(PREFIX):
            response.headers.update(SECURITY_HEADERS)
        return response
