"""``/matters``: search the mirror, and what the Send for Payment popup shows for one matter."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from agent.api.auth import RuntimeDep
from agent.api.errors import found
from agent.api.schemas import MatterDetailOut, MatterOut, StatementOut, link_out
from agent.engine.links import sent_markers
from agent.state.mirror import client_name, get_matter, open_balance
from agent.state.search import search_matters

from .common import MISSING

router = APIRouter(tags=["matters"])


@router.get("/matters", response_model=list[MatterOut])
def matters(rt: RuntimeDep, q: Annotated[str, Query(
        min_length=1, description="Part of a matter number, matter name, client or invoice number")]
            ) -> list[MatterOut]:
    with rt.store.read() as conn:
        rows = search_matters(conn, q)
        sent = sent_markers(conn, [r.matter.key for r in rows])
    return [MatterOut(**r.matter.model_dump(mode="json"), client_name=r.client_name, link_sent=r.matter.key in sent)
            for r in rows]


@router.get("/matters/{ref}", response_model=MatterDetailOut, responses=MISSING)
def matter(rt: RuntimeDep, ref: str) -> MatterDetailOut:
    """What the Send for Payment popup shows before a link is made."""
    with found(f"matter {ref!r}"), rt.store.read() as conn:
        matter = get_matter(conn, ref)
        client = client_name(conn, matter.client_key)
    defaults = rt.links.defaults(matter.key)
    return MatterDetailOut(
        matter=MatterOut(**matter.model_dump(mode="json"), client_name=client,
                         link_sent=defaults.existing is not None),
        statements=[StatementOut.model_validate(s) for s in defaults.statements],
        open_balance=open_balance(defaults.statements), pending_collections=defaults.pending_collections,
        unposted_payments=defaults.unposted_payments, unposted_reversals=defaults.unposted_reversals,
        default_amount=defaults.amount,
        default_description=defaults.description, currency=defaults.currency,
        payer_name=defaults.payer_name, payer_email=defaults.payer_email,
        existing_link=link_out(defaults.existing) if defaults.existing else None,
        link_sent=defaults.existing is not None,
    )
