"""API endpoints the console needs beyond the resource routers: merchant accounts for the pickers, Manage
Postings' details, reallocate and remove, Sent Pages (links and payment plans) and its exports, and bulk upload
review and creation.

Like the other routers they add no business rule: each calls the link engine, the outbox, the exporter, the bulk
reader or the sender. Paths avoid the API's own ``/links/{id}`` and ``/postings/{id}`` so neither swallows the other.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import tempfile
from decimal import Decimal
from pathlib import Path, PureWindowsPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from agent.api.auth import ActorDep, RuntimeDep, UserDep, require_admin
from agent.api.errors import plain
from agent.api.idempotency import IdempotentRoute
from agent.api.routers.links import known_account
from agent.api.schemas import (
    AccountOut,
    BulkIn,
    ChannelOut,
    ConsoleInfoOut,
    DeliveryOut,
    LinkRow,
    ManagedPostingOut,
    PostingId,
    PostingOut,
    ReallocateIn,
    RemoveIn,
    SendOut,
    link_out,
    schema_of,
)
from agent.core.errors import LedgerlinkError, RuleError
from agent.core.model import account_kind_word
from agent.core.scrub import scrub
from agent.engine.bulk import read_bulk, template_text
from agent.engine.export import LINK_COLUMNS, PlanSummary, link_rows, plan_summaries
from agent.engine.links import LinkRequest
from agent.engine.sending import BulkSend
from agent.state.mirror import statement_key
from agent.state.reads import outstanding_deliveries
from agent.state.statuses import PlanState
from postings.queries import posting_row, posting_rows

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
UPLOAD_NAME = re.compile(r"[^/\\:*?\"<>|\x00-\x1f]{1,200}\.(?:csv|txt)", re.IGNORECASE)
router = APIRouter(tags=["console"], route_class=IdempotentRoute)
PlanRow = schema_of("PlanRow", PlanSummary)  # a console shape, made from the engine's record like PlanOut
PlanStatuses = Annotated[list[PlanState] | None,
                         Query(description="awaiting_mandate, active, ended or cancelled; repeat for several")]


@router.get("/console-info", response_model=ConsoleInfoOut)
def console_info(rt: RuntimeDep, user: UserDep) -> ConsoleInfoOut:
    """Read-only: lets the console say "email is not set up" before a Send is pressed, and format in the
    firm's locale and time zone rather than the browser's."""
    email, sms = (ChannelOut(ready=not gaps, missing=gaps) for gaps in (rt.sender.missing("email"),
                                                                          rt.sender.missing("sms")))
    return ConsoleInfoOut(user=user.name, role="admin" if user.role == "admin" else "clerk",
                          firm_name=rt.settings.service_name, locale=rt.settings.firm_locale,
                          time_zone=rt.settings.firm_timezone, email=email, sms=sms)


@router.get("/link-delivery", response_model=list[DeliveryOut])
def link_delivery(rt: RuntimeDep, matter: Annotated[list[str], Query(description="Matter numbers or keys")]
                  ) -> list[DeliveryOut]:
    """Each given matter's outstanding link with its sends, so a debt row says created / emailed / failed."""
    with rt.store.read() as conn:
        found = outstanding_deliveries(conn, matter)
    return [DeliveryOut(matter_number=d.matter_number, link_id=d.link_id, created_at=d.created_at,
                        sends=[SendOut.model_validate(s) for s in d.sends]) for d in found]


@router.get("/accounts", response_model=list[AccountOut])
def accounts(rt: RuntimeDep) -> list[AccountOut]:
    """The merchant accounts a link can be paid into (names and currencies only, no credentials)."""
    return [AccountOut(name=a.name, provider=a.provider, currency=a.currency, expiry_days=a.expiry_days,
                       default=a.name == rt.settings.default_account, kind=a.kind,
                       kind_word=account_kind_word(a.kind, rt.settings.firm_locale))
            for a in rt.settings.accounts.values()]


@router.get("/manage-postings", response_model=list[ManagedPostingOut])
def manage_postings(rt: RuntimeDep, status: Annotated[list[str] | None, Query()] = None) -> list[ManagedPostingOut]:
    with rt.store.read() as conn:
        rows = posting_rows(conn, status, newest_first=True)
    return [ManagedPostingOut.model_validate({**r, "paid_at": r["confirmed_at"] or r["status_at"]}) for r in rows]


@router.post("/postings/{posting_id}/reallocate", response_model=list[int], dependencies=[Depends(require_admin)])
def reallocate(rt: RuntimeDep, actor: ActorDep, posting_id: PostingId, body: ReallocateIn) -> list[int]:
    """Split an incomplete posting over statements (by number or key); returns the new postings' ids."""
    with rt.store.read() as conn:
        keys: dict[str, Decimal] = {}
        for ref, amount in body.statements.items():
            key = statement_key(conn, ref)
            if key is None:
                raise RuleError(f"no statement {ref!r}")
            keys[key] = keys.get(key, Decimal(0)) + amount
    return rt.outbox.reallocate(actor, posting_id, keys)


@router.post("/postings/{posting_id}/remove", response_model=PostingOut, dependencies=[Depends(require_admin)])
def remove(rt: RuntimeDep, actor: ActorDep, posting_id: PostingId, body: RemoveIn) -> PostingOut:
    rt.outbox.remove(actor, posting_id, body.reason)
    with rt.store.read() as conn:
        return PostingOut.model_validate(posting_row(conn, posting_id))


@router.get("/sent-pages", response_model=list[LinkRow])
def sent_pages(rt: RuntimeDep, status: Annotated[list[str] | None, Query()] = None) -> list[LinkRow]:
    """Links for the Sent Pages screen, newest first, with the matter number."""
    with rt.store.read() as conn:
        return [LinkRow.model_validate(row) for row in link_rows(conn, status)]


@router.get("/sent-pages/export", response_class=Response,
            responses={200: {"content": {XLSX: {}}, "description": "An Excel workbook"}})
def export(rt: RuntimeDep, status: Annotated[list[str] | None, Query()] = None,
           columns: Annotated[list[str] | None, Query(description="Keys of the export's link columns, in order")]
           = None,
           ids: Annotated[list[str] | None, Query(description="Only these links (a bulk upload's)")] = None,
           ) -> Response:
    """Export to Excel through the same exporter as ``ledgerlink links export``: headings, time zone, money."""
    chosen = [c for c in (columns or []) if c in LINK_COLUMNS] or None
    data = rt.exporter.links_workbook(statuses=status, columns=chosen, ids=ids)
    stamp = dt.datetime.now(rt.settings.zone).strftime("%Y-%m-%d")
    # the file says what it holds: a filtered export is not saved over the full one of the same day
    which = "-".join(sorted({s for s in status or () if re.fullmatch(r"[a-z_]{1,24}", s)})).replace("_", "-")
    name = f"sent-pages-{which + '-' if which else ''}{'selected-' if ids is not None else ''}{stamp}.xlsx"
    return Response(data, media_type=XLSX, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/sent-pages/plans", response_model=list[PlanRow])  # type: ignore[valid-type]
def sent_plans(rt: RuntimeDep, status: PlanStatuses = None) -> list[Any]:
    """Payment plans for Sent Pages, newest first: instalments paid, what is still to collect and the next one."""
    with rt.store.read() as conn:
        return [PlanRow.model_validate(p) for p in plan_summaries(conn, status)]


@router.get("/sent-pages/plans/export", response_class=Response,
            responses={200: {"content": {XLSX: {}}, "description": "An Excel workbook, a row per instalment"}})
def export_plans(rt: RuntimeDep, status: PlanStatuses = None,
                 columns: Annotated[list[str] | None, Query(description="Keys of the plan export's columns, in "
                                                                      "order; an unknown one is a 422")] = None,
                 ) -> Response:
    """Plans instalment by instalment through the same exporter as ``ledgerlink plans export``."""
    data = rt.exporter.plans_workbook(statuses=status, columns=columns)
    stamp = dt.datetime.now(rt.settings.zone).strftime("%Y-%m-%d")
    which = "-".join(sorted({s.value for s in status or ()}))
    name = f"payment-plans-{which + '-' if which else ''}{stamp}.xlsx"
    return Response(data, media_type=XLSX, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/bulk/template", response_class=Response)
def bulk_template() -> Response:
    """The CSV to fill in, with the headings the bulk reader reads back."""
    return Response(template_text(), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="bulk-upload-template.csv"'})


@router.post("/bulk/review")
async def bulk_review(request: Request, filename: str = "upload.csv") -> dict[str, Any]:
    """Read an uploaded file (the raw body, streamed to disk) with agent.engine.bulk: its rows and problems."""
    name = PureWindowsPath(filename).name  # the last part, whether the browser sent slashes or backslashes
    if not UPLOAD_NAME.fullmatch(name):
        raise RuleError(f"filename: {filename!r} is not a .csv or .txt file name")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        with path.open("wb") as out:
            async for chunk in request.stream():  # the guard stops the stream at the upload cap
                out.write(chunk)
        read = read_bulk(path)
    return {"ok": read.ok, "rows": plain(read.rows), "problems": plain(read.problems)}


@router.post("/bulk/links")
def bulk_links(rt: RuntimeDep, actor: ActorDep, body: BulkIn, filename: str = "console upload") -> dict[str, Any]:
    """Send All (send=true) or Generate Links for Download: one quick link per reviewed row, each on its own."""
    known_account(rt, body.account)
    requests = [(str(i), LinkRequest(name=row.name, email=row.email, amount=row.amount, invoice=row.invoice or None,
                                     due_date=row.due_date, description=row.message or None, account=body.account))
                for i, row in enumerate(body.rows)]
    if body.send:
        sent = rt.sender.send_all(actor, requests, source=PureWindowsPath(filename).name)
        return {"results": [_sent(r) for r in sent]}
    results: list[dict[str, Any]] = []
    for _label, request in requests:
        try:
            results.append({"link": link_out(rt.links.create(actor, request)).model_dump(mode="json")})
        except LedgerlinkError as exc:
            results.append({"error": scrub(str(exc))})
    return {"results": results}


def _sent(result: BulkSend) -> dict[str, Any]:
    """A Send All row as the console reads it: the link and its send record, or why no link was made."""
    if result.link is None:
        return {"error": result.error}
    send = (plain(dataclasses.asdict(result.record)) if result.record is not None
            else {"ok": False, "result": result.error, "channel": "email"})  # refused before it reached the relay
    return {"link": link_out(result.link).model_dump(mode="json"), "send": send}
