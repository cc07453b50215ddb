"""The staff web console, served under /console by the agent's own FastAPI app.

It is static HTML, CSS and vanilla JavaScript (no build step, nothing from the internet) that calls the local
HTTP API with the staff member's bearer token, kept in sessionStorage. Static pages rather than server-rendered
ones because the token only ever travels in the Authorization header: no cookie, so no CSRF surface, and the
console holds no business rule of its own - every number it shows comes from the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
PREFIX = "/console"

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


def login_url(base: str, token: str) -> str:
    """The one-time sign-in link the service prints at start. The token rides in the #fragment, which browsers
    never send to a server, so it stays out of access logs; the login page moves it to sessionStorage."""
    return f"{base.rstrip('/')}{PREFIX}/login#token={quote(token, safe='')}"


def mount(app: FastAPI) -> None:
    """Serve the console's static pages under /console on ``app`` (its endpoints are in console.router)."""

    @app.get(PREFIX, include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    @app.get(f"{PREFIX}/", include_in_schema=False)
    def console_index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get(f"{PREFIX}/login", include_in_schema=False)
    def console_login() -> FileResponse:
        return FileResponse(STATIC / "login.html")

    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")

    @app.middleware("http")
    async def console_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if request.url.path.startswith(PREFIX):
            response.headers.update(SECURITY_HEADERS)
        return response
