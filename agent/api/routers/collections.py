"""``/collections``: Direct Debit collections through the Direct Debit engine."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter

from agent.api.auth import ActorDep, RuntimeDep
from agent.api.errors import plain

router = APIRouter(tags=["direct debit"])


@router.get("/collections", response_model=list[dict[str, Any]])
def list_collections(rt: RuntimeDep, matter: str | None = None, pending: bool = False) -> list[dict[str, Any]]:
    """Direct Debit collections, newest first; ``pending``: at the provider and not yet paid."""
    return [plain(dataclasses.asdict(c)) for c in rt.directdebit.list_collections(matter, pending)]


@router.get("/collections/{collection_id}", response_model=dict[str, Any])
def get_collection(rt: RuntimeDep, collection_id: str) -> dict[str, Any]:
    result: dict[str, Any] = plain(dataclasses.asdict(rt.directdebit.get_collection(collection_id)))
    return result


@router.post("/collections/{collection_id}/cancel", response_model=dict[str, Any])
def cancel_collection(rt: RuntimeDep, actor: ActorDep, collection_id: str) -> dict[str, Any]:
    """Cancel while the provider still allows it; refused (422) once it has gone to the bank."""
    result: dict[str, Any] = plain(dataclasses.asdict(rt.directdebit.cancel_collection(actor, collection_id)))
    return result
