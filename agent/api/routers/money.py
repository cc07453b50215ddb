"""``/payouts`` and ``/payments/{ref}/refund``: payouts with their breakdown, client-money breaches, refunds.

A refund moves money out of the firm, so it takes the admin token (so does the sandbox's pay out now); a
refund over what is left is a 422 with the amount that is left, never a 500.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from agent.api.auth import ActorDep, RuntimeDep, require_admin
from agent.api.idempotency import IdempotentRoute, request_key
from agent.api.schemas import BreachOut, PayoutOut, PayoutRunOut, RefundableOut, RefundIn, RefundOut
from agent.engine.payouts import PayoutView

router = APIRouter(tags=["payouts"], route_class=IdempotentRoute)


def _payout(p: PayoutView) -> Any:
    return PayoutOut(**dataclasses.asdict(p), adds_up=p.adds_up)


@router.get("/payouts", response_model=list[PayoutOut])  # type: ignore[valid-type]
def list_payouts(rt: RuntimeDep, account: Annotated[str | None, Query()] = None) -> list[Any]:
    """Newest first, each with whether its items add up to the bank amount."""
    return [_payout(p) for p in rt.payouts.listing(account)]


@router.get("/payouts/breaches", response_model=list[BreachOut])  # type: ignore[valid-type]
def breaches(rt: RuntimeDep) -> list[Any]:
    """Fees taken from client money and not yet cleared, each with the transfer that makes it good."""
    return [BreachOut(**dataclasses.asdict(b), message=b.message) for b in rt.payouts.breaches()]


@router.post("/payouts/pay-out-now", response_model=PayoutRunOut, dependencies=[Depends(require_admin)])
def pay_out_now(rt: RuntimeDep, actor: ActorDep) -> Any:
    """Sandbox only (admin): the sandbox pays out its settled payments now and the payouts are read, so the
    payouts, their fee postings and the client-money check show at once; without a sandbox account a 422 names
    the providers, which pay out on their own schedule."""
    result = rt.payouts.pay_out_now(actor)
    return PayoutRunOut(new=result.new, updated=result.updated, postings=result.postings,
                        breaches=[BreachOut(**dataclasses.asdict(b), message=b.message) for b in result.breaches])


@router.get("/payouts/{payout}", response_model=PayoutOut)
def get_payout(rt: RuntimeDep, payout: str) -> Any:
    """One payout (our id or the provider's) item by item; a refund item names our refund and who asked."""
    return _payout(rt.payouts.show(payout))


@router.get("/refunds", response_model=list[RefundOut])  # type: ignore[valid-type]
def list_refunds(rt: RuntimeDep, payment: Annotated[str | None, Query()] = None) -> list[Any]:
    return [RefundOut(**dataclasses.asdict(r)) for r in rt.refunds.listing(payment)]


@router.get("/payments/{payment}/refund", response_model=RefundableOut)
def refundable(rt: RuntimeDep, payment: str) -> Any:
    """What a refund of the payment may still give back (the console pre-fills its Refund with it)."""
    return RefundableOut(**dataclasses.asdict(rt.refunds.refundable(payment)))


@router.post("/payments/{payment}/refund", response_model=RefundOut, dependencies=[Depends(require_admin)])
def refund(rt: RuntimeDep, actor: ActorDep, payment: str, body: RefundIn, request: Request) -> Any:
    """Refund a confirmed payment (admin only): the provider's refund, then its reversal posted once. Send an
    ``Idempotency-Key``: asked again with it after a lost answer, the first refund is answered, not a second."""
    refund = rt.refunds.refund(payment, body.amount, body.reason, actor, request_key(request))
    return RefundOut(**dataclasses.asdict(refund))
