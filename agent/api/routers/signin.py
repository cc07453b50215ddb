"""``POST /console/sign-in``: a name and password, or a one-time code (agent.state.signin), exchanged for a session
token, no token needed; ``POST /console/sign-out`` ends the session.

Password attempts are throttled per name and per client address (agent.state.throttle): a growing wait, then a
lock-out, answered 429 with Retry-After before the password is even checked.
"""

from __future__ import annotations

import logging
from typing import Annotated, Self

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.api.auth import SESSION_COOKIE, RuntimeDep, UserDep, bearer, client
from agent.runtime import Runtime
from agent.state import throttle
from agent.state.signin import redeem
from agent.state.users import SESSION_HOURS, User, check_password, close_session, get, open_session

log = logging.getLogger("ledgerlink.api")
public = APIRouter(tags=["console"])


class SignInIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(None, min_length=8, max_length=64, description="The code from a sign-in link.")
    name: str | None = Field(None, min_length=1, max_length=64, description="Your user name ...")
    password: str | None = Field(None, min_length=1, max_length=1024, description="... and your password.")

    @model_validator(mode="after")
    def one_way(self) -> Self:
        if (self.code is None) == (self.name is None or self.password is None):
            raise ValueError("send either a code, or a name and a password")
        return self


class SessionOut(BaseModel):
    token: str = Field(description="The session token (the console keeps it in its HttpOnly cookie instead); an "
                                   "API client may send it as the bearer token.")
    user: str
    role: str


@public.post("/console/sign-in", response_model=SessionOut,
             responses={401: {"description": "Wrong name or password, or a used or expired code"},
                        429: {"description": "Too many failures: wait, or locked out"}})
def sign_in(rt: RuntimeDep, request: Request, body: SignInIn, response: Response) -> SessionOut:
    """Sign in with a name and password or a one-time code; a session of the person, ending after 12 hours."""
    if body.code is not None:
        name = redeem(rt.store, body.code)
        if name is None:
            log.warning("refused sign-in from %s: 401 a used, expired or unknown code", client(request))
            raise HTTPException(401, "this sign-in link was already used or has expired; ask for a new one "
                                     "('ledgerlink api login-link')")
        user = _active(rt, name)
    else:
        user = _password(rt, request, str(body.name), str(body.password))
    token = open_session(rt.store, user.name)
    # every tab of this browser shares the session for its hours; no script (nor another site) can read it
    response.set_cookie(SESSION_COOKIE, token, max_age=int(SESSION_HOURS * 3600), path="/", httponly=True,
                        samesite="strict")
    return SessionOut(token=token, user=user.name, role=user.role)


def _active(rt: Runtime, name: str) -> User:
    with rt.store.read() as conn:
        user = get(conn, name)
    if user is None or user.disabled_at is not None:
        log.warning("refused sign-in by a link: 401 %r is disabled", name)
        raise HTTPException(401, f"{name!r} may not sign in: the account is disabled")
    return user


def _password(rt: Runtime, request: Request, name: str, password: str) -> User:
    keys = throttle.keys(name, client(request))
    wait, locked = throttle.waiting(rt.store, keys)
    if wait:
        log.warning("refused sign-in from %s: 429 %s", client(request), "locked out" if locked else "too fast")
        reason = (f"too many failed sign-ins: locked for {max(1, round(wait / 60))} minutes, or until an admin "
                  f"runs 'ledgerlink users reset {name.strip().lower()}'" if locked
                  else f"wrong too often: wait {wait} seconds and try again")
        raise HTTPException(429, reason, headers={"Retry-After": str(wait)})
    user = check_password(rt.store, name, password)
    if user is None:
        throttle.failed(rt.store, keys)
        with rt.store.read() as conn:
            known = get(conn, name) is not None  # a password typed as the name stays out of the log
        log.warning("refused sign-in from %s: 401 wrong password for %s", client(request),
                    repr(name.strip().lower()) if known else "an unknown name")
        raise HTTPException(401, "wrong name or password (or the account is disabled)")
    throttle.cleared(rt.store, throttle.name_key(user.name))
    return user


@public.post("/console/sign-out", status_code=204, response_class=Response, response_model=None)
def sign_out(rt: RuntimeDep, _user: UserDep, request: Request, response: Response,
             credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """End the session, in every tab that shares it (an API token is not ended: revoke those with 'ledgerlink api
    token --revoke')."""
    close_session(rt.store, credentials.credentials if credentials else request.cookies.get(SESSION_COOKIE, ""))
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
