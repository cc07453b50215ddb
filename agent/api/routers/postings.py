"""``/postings``: Manage Postings' list, detail and retries through the postings outbox."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from agent.api.auth import ActorDep, RuntimeDep
from agent.api.schemas import PostingDetailOut, PostingId, PostingOut, RetriedOut
from agent.runtime import Runtime
from postings.queries import posting_detail, posting_row, posting_rows

from .common import MISSING

router = APIRouter(tags=["postings"])


@router.get("/postings", response_model=list[PostingOut])
def list_postings(rt: RuntimeDep, status: Annotated[list[str] | None, Query(description="Repeat for several")] = None
                  ) -> list[PostingOut]:
    with rt.store.read() as conn:
        return [PostingOut.model_validate(r) for r in posting_rows(conn, status)]


def known_posting(rt: Runtime, posting_id: int) -> dict[str, Any]:
    with rt.store.read() as conn:
        row = posting_row(conn, posting_id)
    if row is None:
        raise HTTPException(404, f"unknown posting {posting_id}")
    return row


@router.get("/postings/{posting_id}", response_model=PostingDetailOut, responses=MISSING)
def get_posting(rt: RuntimeDep, posting_id: PostingId) -> PostingDetailOut:
    with rt.store.read() as conn:
        detail = posting_detail(conn, posting_id)
    if detail is None:
        raise HTTPException(404, f"unknown posting {posting_id}")
    return PostingDetailOut.model_validate(detail)


@router.post("/postings/retry-failed", response_model=RetriedOut)
def retry_failed(rt: RuntimeDep, actor: ActorDep) -> RetriedOut:
    """Every failed posting back to pending with fresh attempts, once the cause has been fixed."""
    return RetriedOut(retried=rt.outbox.retry_failed(actor))


@router.post("/postings/{posting_id}/retry", response_model=PostingOut, responses=MISSING)
def retry_posting(rt: RuntimeDep, actor: ActorDep, posting_id: PostingId) -> PostingOut:
    known_posting(rt, posting_id)
    rt.outbox.retry(actor, posting_id)
    return PostingOut.model_validate(known_posting(rt, posting_id))
