"""``/matters``: search the mirror, and what the Send for Payment popup shows for one matter."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from agent.api.auth import RuntimeDep
from agent.api.errors import found
from agent.api.schemas import DebtOut, DebtsOut, MatterDetailOut, MatterOut, StatementOut, link_out
from agent.core.errors import RuleError
from agent.engine.links import sent_markers
from agent.state.mirror import client_name, get_matter, open_balance
from agent.state.owed import DebtOrder, debts
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


@router.get("/debts", response_model=DebtsOut)
def debts_owed(rt: RuntimeDep,
               account: Annotated[str | None, Query(description="Only debts in this account's currency")] = None,
               status: Annotated[Literal["open", "closed"] | None, Query(description="The matter's status")] = None,
               link: Annotated[Literal["none", "outstanding"] | None, Query(
                   description="none: no payment link asked for yet; outstanding: a link is waiting")] = None,
               order: Annotated[DebtOrder, Query(description="oldest debt first, or largest first")] = "oldest",
               limit: Annotated[int, Query(ge=1, le=200)] = 50,
               offset: Annotated[int, Query(ge=0, le=2**31)] = 0) -> DebtsOut:
    """What is owed, matter by matter: the list the Debts screen opens on."""
    currency = None
    if account is not None:
        if account not in rt.settings.accounts:
            raise RuleError(f"there is no merchant account {account!r}; accounts: "
                            f"{', '.join(sorted(rt.settings.accounts))}")
        currency = rt.settings.accounts[account].currency
    with rt.store.read() as conn:
        total, page = debts(conn, currency=currency, matter_status=status, link=link, order=order, limit=limit,
                            offset=offset)
        matters = {d.matter_key: get_matter(conn, d.matter_key) for d in page}
        names = {k: client_name(conn, m.client_key) for k, m in matters.items()}
        sent = sent_markers(conn, list(matters))
    return DebtsOut(total=total, debts=[
        DebtOut(matter=MatterOut(**matters[d.matter_key].model_dump(mode="json"), client_name=names[d.matter_key],
                                 link_sent=d.matter_key in sent),
                currency=d.currency, oldest_issue_date=d.oldest, statements=d.statements,
                open_balance=d.owed.figures.open_balance, left_to_collect=d.owed.figures.amount)
        for d in page])


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
