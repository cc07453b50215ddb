"""``POST /console/sign-in``: a one-time code (agent.state.signin) exchanged for a session token, no token needed."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from agent.api.auth import RuntimeDep, Tokens
from agent.state.signin import redeem

public = APIRouter(tags=["console"])


class SignInIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=8, max_length=64, description="The code from the sign-in link.")


class SessionOut(BaseModel):
    token: str = Field(description="A session token for this tab: send it as the bearer token.")
    role: str


@public.post("/console/sign-in", response_model=SessionOut, responses={401: {"description": "Used or expired"}})
def sign_in(rt: RuntimeDep, request: Request, body: SignInIn) -> SessionOut:
    """Exchange a one-time code for a session; a code that was used or has expired is refused."""
    role = redeem(rt.store, body.code)
    if role is None:
        raise HTTPException(401, "this sign-in link was already used or has expired; ask for a new one "
                                 "('ledgerlink api login-link')")
    tokens: Tokens = request.app.state.tokens
    return SessionOut(token=tokens.open_session(role), role=role)
