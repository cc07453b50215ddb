"""``/plans``: payment plans through the plan engine (a debt paid in Direct Debit instalments).

A plan that cannot be kept (a payer in credit, no active office mandate without ``set_up_mandate``, more than is
owed, a second plan for the matter) is a 422 saying why; a preview changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter

from agent.api.auth import ActorDep, RuntimeDep
from agent.api.errors import found
from agent.api.idempotency import IdempotentRoute
from agent.api.schemas import CancelIn, PlanIn, PlanOut
from agent.engine.plans import PlanView
from agent.runtime import Runtime

router = APIRouter(tags=["payment plans"], route_class=IdempotentRoute)


def _out(rt: Runtime, view: PlanView) -> Any:
    """The plan, with the emails sent to its payer about it (a preview has none)."""
    reminders = [dataclasses.asdict(r) for r in rt.plan_reminders.history(view.id)] if view.id else []
    return PlanOut(**dataclasses.asdict(view), reminders=reminders)


@router.get("/plans", response_model=list[PlanOut])  # type: ignore[valid-type]
def list_plans(rt: RuntimeDep, matter: str | None = None) -> list[Any]:
    """Newest first, each with its instalments."""
    return [_out(rt, p) for p in rt.plans.list(matter)]


@router.post("/plans/preview", response_model=PlanOut)
def preview_plan(rt: RuntimeDep, body: PlanIn) -> Any:
    """The instalments a plan would make, to the penny, changing nothing."""
    return _out(rt, rt.plans.preview(body.request()))


@router.post("/plans", response_model=PlanOut, status_code=201)
def create_plan(rt: RuntimeDep, actor: ActorDep, body: PlanIn) -> Any:
    """Make the plan (audited); instalments due within five days are submitted at once. With ``set_up_mandate``
    and no active mandate it is ``awaiting_mandate``, and ``setup_url`` is the page to send the payer."""
    return _out(rt, rt.plans.create(actor, body.request()))


@router.get("/plans/{plan_id}", response_model=PlanOut)
def get_plan(rt: RuntimeDep, plan_id: str) -> Any:
    with found(f"plan {plan_id!r}"):
        return _out(rt, rt.plans.get(plan_id))


@router.post("/plans/{plan_id}/cancel", response_model=PlanOut)
def cancel_plan(rt: RuntimeDep, actor: ActorDep, plan_id: str, body: CancelIn | None = None) -> Any:
    """Cancel what is still to come; a collection already with the bank is kept and named in the audit entry."""
    with found(f"plan {plan_id!r}"):
        rt.plans.get(plan_id)
    return _out(rt, rt.plans.cancel(actor, plan_id, (body or CancelIn()).reason))
