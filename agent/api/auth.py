"""Who may call the local API: the staff token, the admin token, and the runtime each request works on.

Both tokens are secrets in the keyring, made on first use. The runtime is put on the app by the app factory, so
routers read it per request and never import the factory.
"""

from __future__ import annotations

import logging
import secrets as pysecrets
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agent.core.errors import ConfigurationError
from agent.core.model import Actor
from agent.home.secrets import Secrets
from agent.runtime import Runtime

log = logging.getLogger("ledgerlink.api")

SESSION_HOURS = 12
TOKEN = "api-token"
ADMIN_TOKEN = "api-admin-token"
bearer = HTTPBearer(auto_error=False)


def ensure_token(store: Secrets, name: str = TOKEN) -> str:
    """The token kept as secret ``name``, made and stored on first use so no one has to invent one."""
    try:
        return store.get(name)
    except ConfigurationError:
        token = pysecrets.token_urlsafe(32)
        store.set(name, token)
        log.info("created the %s secret; 'ledgerlink api token%s' prints it", name,
                 " --admin" if name == ADMIN_TOKEN else "")
        return store.get(name)


def runtime(request: Request) -> Runtime:
    """The runtime of the app serving this request."""
    rt: Runtime = request.app.state.rt
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


class Tokens:
    """The two tokens of one runtime, read on first use: building the app needs no secrets."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._pair: tuple[str, str] | None = None
        self._sessions: dict[str, tuple[str, float]] = {}  # session token -> role, monotonic expiry

    def open_session(self, role: str) -> str:
        """A session token for one signed-in tab; it lives in this process only and ends after SESSION_HOURS."""
        session = pysecrets.token_urlsafe(32)
        self._sessions[session] = (role, time.monotonic() + SESSION_HOURS * 3600)
        return session

    def role(self, given: str) -> str | None:
        """``admin``, ``user`` or None for the bearer token ``given``."""
        if self._pair is None:
            self._pair = ensure_token(self.rt.secrets, TOKEN), ensure_token(self.rt.secrets, ADMIN_TOKEN)
        user, admin = self._pair
        if given and pysecrets.compare_digest(given, admin):
            return "admin"
        if given and pysecrets.compare_digest(given, user):
            return "user"
        role, expires = self._sessions.get(given, ("", 0.0))
        if role and time.monotonic() < expires:
            return role
        self._sessions.pop(given, None)
        return None

    def authorised(self, header: str) -> bool:
        """For an ``Authorization`` header as sent: is it a right bearer token?"""
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and self.role(given.strip()) is not None


def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """``user`` or ``admin`` for a right token; 401 otherwise."""
    tokens: Tokens = request.app.state.tokens
    role = tokens.role(credentials.credentials if credentials else "")
    if role is not None:
        return role
    raise HTTPException(401, "missing or wrong bearer token; 'ledgerlink api token' prints it",
                        headers={"WWW-Authenticate": "Bearer"})


def require_admin(who: Annotated[str, Depends(require_token)]) -> str:
    if who != "admin":
        raise HTTPException(403, "this changes settings: use the admin token ('ledgerlink api token --admin')")
    return who


def current_actor(role: Annotated[str, Depends(require_token)]) -> Actor:
    """The person behind this request, for the audit trail (the token's role until staff sign in by name)."""
    return Actor("user", role)


ActorDep = Annotated[Actor, Depends(current_actor)]
