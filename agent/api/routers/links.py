"""``/links``: create, find, list, cancel, recreate and send payment links through the link engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response

from agent.api.auth import ActorDep, RuntimeDep
from agent.api.errors import found, plain
from agent.api.idempotency import IdempotentRoute, request_key
from agent.api.schemas import CancelIn, ErrorOut, LinkCreate, LinkOut, QuickLinkCreate, Recreate, SendIn, link_out
from agent.core.model import Actor
from agent.engine.links import Link, LinkRequest
from agent.runtime import Runtime

from .common import MISSING

router = APIRouter(tags=["links"], route_class=IdempotentRoute)
NO_DELIVERY = "sending links is not available in this build (no delivery engine)"


def _send(rt: Runtime, actor: Actor, link_id: str, channel: str) -> Any:
    return rt.sender.send(actor, link_id, channel)  # type: ignore[arg-type]  # SendIn has already checked the channel


send_link: Callable[[Runtime, Actor, str, str], Any] | None = _send  # a build without delivery sets None (501)


def known_account(rt: Runtime, name: str | None) -> None:
    """A request naming an account this agent does not have is the caller's mistake: 422, naming the field."""
    if name is not None and name not in rt.settings.accounts:
        raise HTTPException(422, f"account: unknown merchant account {name!r}; configured: "
                                 f"{', '.join(sorted(rt.settings.accounts))}")


def _created(link: Link, response: Response) -> Any:
    response.status_code = 200 if link.existing else 201
    return link_out(link)


@router.post("/links", response_model=LinkOut, status_code=201,
             responses={200: {"model": LinkOut, "description": "The debt's existing outstanding link"}})
def create_link(rt: RuntimeDep, actor: ActorDep, body: LinkCreate, response: Response) -> Any:
    """201 with a new link, or 200 with ``existing: true`` when the debt already has an outstanding one."""
    known_account(rt, body.account)
    return _created(rt.links.create(actor, LinkRequest(**body.model_dump())), response)


@router.post("/links/quick", response_model=LinkOut, status_code=201,
             responses={200: {"model": LinkOut, "description": "The invoice's existing outstanding link"}})
def create_quick_link(rt: RuntimeDep, actor: ActorDep, body: QuickLinkCreate, response: Response,
                      request: Request) -> Any:
    """A link for someone without a matter (name, email, amount, optional invoice)."""
    known_account(rt, body.account)
    return _created(rt.links.create(actor, LinkRequest(**body.model_dump(), request_key=request_key(request))),
                    response)


@router.get("/links", response_model=list[LinkOut])  # type: ignore[valid-type]
def list_links(rt: RuntimeDep, status: Annotated[list[str] | None, Query(description="Repeat for several")] = None,
               matter: str | None = None) -> list[Any]:
    return [link_out(link) for link in rt.links.find(status, matter)]


@router.get("/links/{link_id}", response_model=LinkOut, responses=MISSING)
def get_link(rt: RuntimeDep, link_id: str) -> Any:
    with found(f"link {link_id!r}"):
        return link_out(rt.links.get(link_id))


@router.post("/links/{link_id}/cancel", response_model=LinkOut, responses=MISSING)
def cancel_link(rt: RuntimeDep, actor: ActorDep, link_id: str, body: CancelIn | None = None) -> Any:
    with found(f"link {link_id!r}"):
        rt.links.get(link_id)
    return link_out(rt.links.cancel(actor, link_id, reason=(body or CancelIn()).reason))


@router.post("/links/{link_id}/recreate", response_model=LinkOut, status_code=201, responses=MISSING)
def recreate_link(rt: RuntimeDep, actor: ActorDep, link_id: str, body: Recreate | None = None) -> Any:
    """Cancel & Create New: the old link is cancelled at the provider first, then a new one is made."""
    with found(f"link {link_id!r}"):
        old = rt.links.get(link_id)
    request = None
    if body is not None:
        known_account(rt, body.account)
        fields = body.model_dump()
        if old.matter_key is None:
            request = LinkRequest(description=body.description)
        else:
            request = LinkRequest(matter=old.matter_key, **{**fields, "account": body.account or old.account})
    return link_out(rt.links.recreate(actor, link_id, request))


@router.post("/links/{link_id}/send", response_model=dict[str, Any],
             responses={**MISSING, 501: {"model": ErrorOut}})
def send(rt: RuntimeDep, actor: ActorDep, link_id: str, body: SendIn) -> dict[str, Any]:
    """Send the link to the payer by email or text (agent.engine.sending); the answer is the send's record."""
    with found(f"link {link_id!r}"):
        rt.links.get(link_id)
    if send_link is None:
        raise HTTPException(501, NO_DELIVERY)
    result: dict[str, Any] = plain(send_link(rt, actor, link_id, body.channel))
    return result
