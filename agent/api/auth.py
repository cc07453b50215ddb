"""Who is calling the local API: the named person behind a console session or a personal API token, and their role.

Both kinds of token are kept as hashes in the state store (agent.state.users). The shared clerk and admin tokens
of 0.2 and earlier are adopted on first use: each becomes a personal token (of ``staff``, a clerk, and of
``admin``) so clients set up with them keep working, and leaves the keyring. The runtime is put on the app by the
app factory, so routers read it per request and never import the factory. Every 401 and 403 is logged with the
path and the client's address, never the token, password or code.

The console holds its session in an HttpOnly, SameSite=Strict cookie, so every tab of one browser shares it and
no script can read it; a state-changing request carried by that cookie must also send ``X-Ledgerlink-Console``, a
header another site's page cannot add without a CORS preflight this API never grants (CSRF). API clients send
their token as a bearer header and need no such header.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agent.api.guard import UNAUTHORISED
from agent.core.errors import ConfigurationError, TransientError
from agent.core.model import Actor
from agent.core.scrub import reveal
from agent.runtime import Runtime
from agent.state.users import FIRST_ADMIN, User, adopt_token, ensure_first_admin, holder

log = logging.getLogger("ledgerlink.api")

SETTLER = Actor("system", "first-run")  # who makes the first admin and adopts the shared tokens
SHARED_TOKENS = {"api-admin-token": (FIRST_ADMIN, "admin"), "api-token": ("staff", "clerk")}  # 0.2 and earlier
bearer = HTTPBearer(auto_error=False)
SESSION_COOKIE = "ledgerlink_session"
CSRF_HEADER = "X-Ledgerlink-Console"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_token(cookie_header: str) -> str:
    """The console session in a raw ``Cookie`` header, or ""."""
    try:
        jar = SimpleCookie(cookie_header)
    except CookieError:
        return ""
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel is not None else ""


def shared_label(secret: str) -> str:
    """The label of the personal token a shared one became, by which doctor knows it is still in use."""
    return f"shared {secret} of an earlier release"


def settle_users(rt: Runtime) -> None:
    """Make the first admin of a new home, and adopt the shared tokens of an upgraded one (once)."""
    if ensure_first_admin(rt.store, SETTLER):
        log.info("created the admin user %r: 'ledgerlink api login-link' signs it in, 'ledgerlink users reset %s' "
                 "gives it a password", FIRST_ADMIN, FIRST_ADMIN)
    for secret, (name, role) in SHARED_TOKENS.items():
        try:
            token = rt.secrets.get(secret)
        except ConfigurationError:
            continue
        if adopt_token(rt.store, SETTLER, token, name, role, shared_label(secret)):
            log.warning("the shared %s is now the personal token of %r; give each client its own ('ledgerlink api "
                        "token --user NAME') and then revoke it ('ledgerlink api token --list')", secret, name)
        rt.secrets.delete(secret)


def runtime(request: Request) -> Runtime:
    """The runtime of the app serving this request."""
    rt: Runtime = request.app.state.rt
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


def client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Tokens:
    """The people behind bearer tokens of one runtime; the store is first read on the first request."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._settled = False

    def user(self, given: str) -> User | None:
        """The active person whose session or API token ``given`` is."""
        if not self._settled:
            try:
                settle_users(self.rt)
                self._settled = True
            except TransientError as exc:  # a full disk: the tokens there still work; settle on a later request
                log.warning("could not settle the users yet: %s", exc)
        user = holder(self.rt.store, given)
        if user is not None:
            reveal(given)  # only its hash is stored: learnt here, so a log line that quotes it is scrubbed
        return user

    def authorised(self, headers: Mapping[str, str]) -> bool:
        """For a request's headers (lower-case names): a right bearer token, or else a right session cookie?"""
        header = headers.get("authorization", "")
        if header:
            scheme, _, given = header.partition(" ")
            return scheme.lower() == "bearer" and self.user(given.strip()) is not None
        given = cookie_token(headers.get("cookie", ""))
        return bool(given) and self.user(given) is not None


def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The caller's role, ``clerk`` or ``admin``, for a right token (the person is kept for the request); 401."""
    tokens: Tokens = request.app.state.tokens
    given = credentials.credentials if credentials else request.cookies.get(SESSION_COOKIE, "")
    user = tokens.user(given)
    if user is None:
        log.warning("refused %s %s from %s: 401 %s", request.method, request.url.path, client(request),
                    "wrong or expired token" if given else "no token")
        raise HTTPException(401, UNAUTHORISED, headers={"WWW-Authenticate": "Bearer"})
    if credentials is None and request.method not in SAFE_METHODS and CSRF_HEADER not in request.headers:
        log.warning("refused %s %s from %s: 403 a session cookie without the %s header", request.method,
                    request.url.path, client(request), CSRF_HEADER)
        raise HTTPException(403, f"a console request must send the {CSRF_HEADER} header (a request from another "
                                 "site is refused); API clients send their token as 'Authorization: Bearer'")
    request.state.user = user
    return user.role


def signed_in(request: Request, _role: Annotated[str, Depends(require_token)]) -> User:
    """The person behind this request."""
    user: User = request.state.user
    return user


def require_admin(who: Annotated[str, Depends(require_token)], request: Request) -> str:
    """``admin``; 403 for a clerk."""
    if who != "admin":
        user: User = request.state.user
        log.warning("refused %s %s from %s: 403 %r is a clerk", request.method, request.url.path, client(request),
                    user.name)
        raise HTTPException(403, f"this needs an admin and {user.name!r} is a clerk; ask an administrator")
    return who


def current_actor(user: Annotated[User, Depends(signed_in)]) -> Actor:
    """The person behind this request, for the audit trail."""
    return Actor("user", user.name)


ActorDep = Annotated[Actor, Depends(current_actor)]
UserDep = Annotated[User, Depends(signed_in)]
