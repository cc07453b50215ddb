"""The audit trail over HTTP: the whole trail, its check and its export for admins; one link's or posting's own
history for any staff member (the link popup and the posting detail show it).

History lines are worded here, once, for every screen: "Cancelled" by "alice"; the console adds the time in the
firm's zone.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from agent.api.auth import RuntimeDep
from agent.api.schemas import PostingId
from agent.runtime import Runtime
from agent.state import audit

staff = APIRouter(tags=["audit"])
admin = APIRouter(tags=["admin"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MOMENT = ("a day (YYYY-MM-DD, the firm's time zone; --until's day included) or a moment (ISO 8601, UTC unless "
          "it says otherwise)")

WORDS = {
    "link.create": "Created", "link.recreate": "Created to replace another link", "link.cancel": "Cancelled",
    "link.email": "Emailed", "link.sms": "Texted", "bulk.send": "Sent in bulk",
    "posting.retry": "Retried", "posting.reallocate": "Reallocated", "posting.remove": "Removed",
    "collection.request": "Manual Direct Debit requested", "collection.cancel": "Collection cancelled",
    "plan.create": "Payment plan made", "plan.instalment": "Instalment submitted for collection",
    "plan.follow_debt": "Instalments lowered to what is owed", "plan.end": "Payment plan ended",
    "plan.cancel": "Payment plan cancelled", "plan.email": "Payer emailed about an instalment",
    "plan.start": "Payment plan started: the payer's Direct Debit is set up",
    "mandate.setup": "Mandate set up", "mandate.cancel": "Mandate cancelled",
    "account.change": "Account settings changed",
    "config.reload": "Configuration reloaded", "service.start": "Service started", "service.stop": "Service stopped",
    "user.add": "User added", "user.disable": "User disabled", "user.reset": "Enabled again or password reset",
    "token.create": "API token issued", "token.revoke": "API token revoked",
    "token.adopt": "Shared token of an earlier release kept as a personal one",
    "refund.request": "Refund requested", "refund.complete": "Refund answered by the provider",
    "payout.clear": "Client-money shortfall recorded as made good",
    "payout.pay_out_now": "Sandbox paid out now",
    "secret.set": "Credential stored", "secret.delete": "Credential deleted",
    "request.refused": "Request refused as invalid",
}


class AuditEntryOut(BaseModel):
    """One audit entry; ``what`` and ``who`` are the words a person reads."""

    seq: int
    at: dt.datetime
    actor: str
    who: str
    action: str
    what: str
    object: str
    outcome: str
    error: str | None
    before: Any
    after: Any
    hash: str


class VerifyOut(BaseModel):
    count: int
    intact: bool
    bad_entry: int | None
    problem: str | None
    sealed_from: int | None = Field(description="the first entry sealed with the audit key; null: not sealed")
    checkpoints: list[str] = Field(description="the signed checkpoints the trail matches")


def who(actor: str) -> str:
    """A person by their name; a job, intake file, command or the system by what it is."""
    kind, _, name = actor.partition(":")
    return name if kind == "user" else {"job": f"the {name} job", "intake": f"intake {name}",
                                        "cli": f"{name} (command line)"}.get(kind, name or actor)


def what(entry: audit.Entry) -> str:
    words = WORDS.get(entry.action, entry.action)
    if entry.outcome == "failed":
        return f"{words}: failed ({entry.error})" if entry.error else f"{words}: failed"
    if entry.action in ("link.email", "link.sms", "plan.email") and isinstance(entry.after, dict) and \
            entry.after.get("recipient"):
        return f"{words} to {entry.after['recipient']}"
    return words


def entry_out(entry: audit.Entry) -> AuditEntryOut:
    return AuditEntryOut(seq=entry.seq, at=entry.at, actor=entry.actor, who=who(entry.actor), action=entry.action,
                         what=what(entry), object=entry.object, outcome=entry.outcome, error=entry.error,
                         before=entry.before, after=entry.after, hash=entry.hash)


@admin.get("/audit", response_model=list[AuditEntryOut])
def list_audit(rt: RuntimeDep, user: str | None = None,
               object: Annotated[str | None, Query(description="kind:id, or the id alone")] = None,
               since: Annotated[str | None, Query(description=MOMENT)] = None,
               until: Annotated[str | None, Query(description=MOMENT)] = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> list[AuditEntryOut]:
    """The newest ``limit`` entries (oldest first), filtered by person, object and time."""
    start, end = window(rt, since, until)
    with rt.store.read() as conn:
        found = audit.entries(conn, actor=user, obj=object, since=start, until=end, limit=limit)
    return [entry_out(e) for e in found]


@admin.get("/audit/verify", response_model=VerifyOut)
def verify_audit(rt: RuntimeDep) -> VerifyOut:
    """The chain, the seals and the home's latest checkpoint, as ``ledgerlink audit verify``."""
    verdict = audit.check(rt.store, rt.audit_seal, rt.checkpoint_file, also=rt.firm_checkpoints())
    return VerifyOut(count=verdict.count, intact=verdict.intact, bad_entry=verdict.bad_seq, problem=verdict.problem,
                     sealed_from=verdict.keyed_from, checkpoints=list(verdict.checkpoints))


@admin.get("/audit/export", response_class=Response,
           responses={200: {"content": {XLSX: {}}, "description": "An Excel workbook"}})
def export_audit(rt: RuntimeDep, user: str | None = None, object: str | None = None,
                 since: Annotated[str | None, Query(description=MOMENT)] = None,
                 until: Annotated[str | None, Query(description=MOMENT)] = None) -> Response:
    """The (filtered) trail as .xlsx, through the same exporter as ``ledgerlink audit export``."""
    start, end = window(rt, since, until)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.xlsx"
        rt.exporter.audit(path, actor=user, obj=object, since=start, until=end)
        data = path.read_bytes()
    stamp = dt.datetime.now(rt.settings.zone).strftime("%Y-%m-%d")
    return Response(data, media_type=XLSX,
                    headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.xlsx"'})


@staff.get("/links/{link_id}/history", response_model=list[AuditEntryOut])
def link_history(rt: RuntimeDep, link_id: str) -> list[AuditEntryOut]:
    """What was done to this link and by whom, oldest first: created, emailed, cancelled..."""
    with rt.store.read() as conn:
        return [entry_out(e) for e in audit.history(conn, "link", link_id)]


@staff.get("/postings/{posting_id}/history", response_model=list[AuditEntryOut])
def posting_history(rt: RuntimeDep, posting_id: PostingId) -> list[AuditEntryOut]:
    """What people did to this posting, oldest first: retried, reallocated, removed."""
    with rt.store.read() as conn:
        return [entry_out(e) for e in audit.history(conn, "posting", str(posting_id))]


def window(rt: Runtime, since: str | None, until: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """since/until as moments: a day is the firm's day (until's day included); a bad one is a 422 naming it."""
    return _moment(rt, "since", since, 0), _moment(rt, "until", until, 1)


def _moment(rt: Runtime, name: str, text: str | None, days: int) -> dt.datetime | None:
    if not text:
        return None
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text) + dt.timedelta(days=days)
            return dt.datetime.combine(day, dt.time(), tzinfo=rt.settings.zone)
        moment = dt.datetime.fromisoformat(text)
    except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
        raise HTTPException(422, f"{name}: {text!r} is not {MOMENT}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
