"""API endpoints the console needs beyond agent/api.py: merchant accounts for the pickers, Manage Postings'
details, reallocate and remove, the Sent Pages export, and bulk upload review and creation.

Like agent/api.py they add no business rule: each calls the link engine, the outbox or the bulk reader. They use
the same bearer tokens and the app's error handlers (RuleError -> 422 and so on). Paths avoid the API's own
``/links/{id}`` and ``/postings/{id}`` so neither swallows the other.
"""

import dataclasses
import datetime as dt
import importlib
import importlib.util
import io
import secrets as pysecrets
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select

from agent.api.app import TOKEN, LinkOut, MoneyIn, PostingOut, ensure_token
from agent.core.errors import LedgerlinkError, RuleError
from agent.core.scrub import scrub
from agent.engine.links import Link, LinkRequest
from agent.home.settings import Settings
from agent.runtime import Runtime
from agent.state.schema import firm_matters, firm_statements, links, postings, sends
from postings.outbox import POSTING_DETAILS, Outbox

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Sent Pages columns: key -> heading. The console offers these in its column configurator.
LINK_COLUMNS = {
    "created_at": "Created", "status": "Status", "payer_name": "Payer", "payer_email": "Email",
    "amount": "Amount", "currency": "Currency", "description": "Description", "matter_number": "Matter",
    "invoice_number": "Invoice", "account": "Account", "expires_at": "Expires", "closed_at": "Closed",
    "status_reason": "Reason", "url": "Link", "id": "Link ID",
}


class AccountOut(BaseModel):
    name: str
    provider: str
    currency: str
    expiry_days: int
    default: bool


class ManagedPostingOut(PostingOut):
    """A posting with the words a clerk recognises: matter and statement numbers, the payment and its date."""

    matter_number: str | None
    statement_number: str | None
    payment_ref: str
    method: str
    paid_at: dt.datetime | None
    description: str | None
    link_id: str | None


class ReallocateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    statements: dict[str, MoneyIn] = Field(description="Statement number or key -> amount; must add up exactly.")


class RemoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, description="Why: the payment is handled by hand in the matter system.")


class BulkRow(BaseModel):
    name: str
    email: str
    amount: MoneyIn
    invoice: str | None = None
    invoice_date: dt.date | None = None
    due_date: dt.date | None = None
    message: str | None = None


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str | None = None
    rows: list[BulkRow]
    send: bool = Field(description="True: Send All (create and email); false: Generate Links for Download.")


class ChannelOut(BaseModel):
    """Whether the agent can send by this channel, and what an administrator must set first if not."""

    ready: bool
    missing: list[str] = Field(description="Settings still to set in ledgerlink.toml, e.g. '[smtp] from_address'.")


class ConsoleInfoOut(BaseModel):
    """What the console needs before the first screen: who is signed in, how to format, what can be sent."""

    role: Literal["admin", "user"]
    firm_name: str
    locale: str = Field(description="BCP 47 locale for money and dates (firm_locale).")
    time_zone: str = Field(description="IANA time zone for dates and times (firm_timezone).")
    email: ChannelOut
    sms: ChannelOut


class SendOut(BaseModel):
    channel: str
    recipient: str
    purpose: str = Field(description="link (sent by staff) or reminder:<step>.")
    sent_at: dt.datetime
    ok: bool
    result: str = Field(description="'ok' or why the send failed.")


class DeliveryOut(BaseModel):
    """A matter's outstanding link and every send of it, oldest first: what the debt row says happened."""

    matter_number: str
    link_id: str
    created_at: dt.datetime
    sends: list[SendOut]


class LinkRow(LinkOut):
    matter_number: str | None = None
    closed_at: dt.datetime | None = None


def build_router(rt: Runtime) -> APIRouter:
    """The console's extra endpoints over ``rt``, guarded by the same staff token as the API."""
    bearer = HTTPBearer(auto_error=False)

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                      ) -> Literal["admin", "user"]:
        from agent.api.app import ADMIN_TOKEN

        given = credentials.credentials if credentials else ""
        roles: tuple[tuple[str, Literal["admin", "user"]], ...] = ((ADMIN_TOKEN, "admin"), (TOKEN, "user"))
        for name, role in roles:
            if given and pysecrets.compare_digest(given, ensure_token(rt.secrets, name)):
                return role
        raise HTTPException(401, "missing or wrong bearer token; 'ledgerlink api token' prints it",
                            headers={"WWW-Authenticate": "Bearer"})

    router = APIRouter(dependencies=[Depends(require_token)], tags=["console"])

    @router.get("/console-info", response_model=ConsoleInfoOut)
    def console_info(role: Annotated[Literal["admin", "user"], Depends(require_token)]) -> ConsoleInfoOut:
        """Read-only: lets the console say "email is not set up" before a Send is pressed, and format in the
        firm's locale and time zone rather than the browser's."""
        email, sms = channels(rt.settings)
        return ConsoleInfoOut(role=role, firm_name=rt.settings.service_name, locale=rt.settings.firm_locale,
                              time_zone=rt.settings.firm_timezone, email=email, sms=sms)

    @router.get("/link-delivery", response_model=list[DeliveryOut])
    def link_delivery(matter: Annotated[list[str], Query(description="Matter numbers or keys")]) -> list[DeliveryOut]:
        """Each given matter's outstanding link with its sends, so a debt row says created / emailed / failed."""
        with rt.store.read() as conn:
            found = conn.execute(
                select(firm_matters.c.number, links.c.id, links.c.created_at)
                .join(links, links.c.matter_key == firm_matters.c.key)
                .where(or_(firm_matters.c.number.in_(matter), firm_matters.c.key.in_(matter)),
                       links.c.status == "outstanding")).all()
            history: dict[str, list[SendOut]] = {}
            for row in conn.execute(select(sends).where(sends.c.link_id.in_([f.id for f in found]))
                                    .order_by(sends.c.id)).mappings():
                history.setdefault(row["link_id"], []).append(SendOut.model_validate(dict(row)))
        return [DeliveryOut(matter_number=number, link_id=link_id, created_at=created,
                            sends=history.get(link_id, [])) for number, link_id, created in found]

    @router.get("/accounts", response_model=list[AccountOut])
    def accounts() -> list[AccountOut]:
        """The merchant accounts a link can be paid into (names and currencies only, no credentials)."""
        return [AccountOut(name=a.name, provider=a.provider, currency=a.currency, expiry_days=a.expiry_days,
                           default=a.name == rt.settings.default_account) for a in rt.settings.accounts.values()]

    @router.get("/manage-postings", response_model=list[ManagedPostingOut])
    def manage_postings(status: Annotated[list[str] | None, Query()] = None) -> list[ManagedPostingOut]:
        query = POSTING_DETAILS.order_by(postings.c.id.desc())
        if status:
            query = query.where(postings.c.state.in_(status))
        with rt.store.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [ManagedPostingOut.model_validate({**r, "paid_at": r["confirmed_at"] or r["status_at"]}) for r in rows]

    def outbox() -> Outbox:
        return Outbox(rt.store, rt.connector, rt.mapping)

    @router.post("/postings/{posting_id}/reallocate", response_model=list[int])
    def reallocate(posting_id: int, body: ReallocateIn) -> list[int]:
        """Split an incomplete posting over statements (by number or key); returns the new postings' ids."""
        with rt.store.read() as conn:
            keys: dict[str, Decimal] = {}
            for ref, amount in body.statements.items():
                key = conn.execute(select(firm_statements.c.key).where(
                    or_(firm_statements.c.number == ref, firm_statements.c.key == ref))).scalar()
                if key is None:
                    raise RuleError(f"no statement {ref!r}")
                keys[key] = keys.get(key, Decimal(0)) + amount
        return outbox().reallocate(posting_id, keys)

    @router.post("/postings/{posting_id}/remove", response_model=PostingOut)
    def remove(posting_id: int, body: RemoveIn) -> PostingOut:
        outbox().remove(posting_id, body.reason)
        with rt.store.read() as conn:
            return PostingOut.model_validate(dict(conn.execute(
                select(postings).where(postings.c.id == posting_id)).mappings().one()))

    def link_rows(status: list[str] | None, ids: list[str] | None = None) -> list[LinkRow]:
        found = [lk for lk in rt.links.list(status) if ids is None or lk.id in ids]
        with rt.store.read() as conn:
            numbers = dict(conn.execute(select(firm_matters.c.key, firm_matters.c.number).where(
                firm_matters.c.key.in_({lk.matter_key for lk in found if lk.matter_key})
            )).all())
            closed = dict(conn.execute(select(links.c.id, links.c.closed_at).where(
                links.c.id.in_([lk.id for lk in found]))).all())
        return [LinkRow(**_fields(lk), matter_number=numbers.get(lk.matter_key or ""), closed_at=closed.get(lk.id))
                for lk in found]

    @router.get("/sent-pages", response_model=list[LinkRow])
    def sent_pages(status: Annotated[list[str] | None, Query()] = None) -> list[LinkRow]:
        """Links for the Sent Pages screen, newest first, with the matter number."""
        return link_rows(status)

    @router.get("/sent-pages/export", response_class=Response,
                responses={200: {"content": {XLSX: {}}, "description": "An Excel workbook"}})
    def export(status: Annotated[list[str] | None, Query()] = None,
               columns: Annotated[list[str] | None, Query(description="Keys of LINK_COLUMNS, in order")] = None,
               ids: Annotated[list[str] | None, Query(description="Only these links (a bulk upload's)")] = None,
               ) -> Response:
        """Export to Excel: the chosen columns in the chosen order; money as numbers with two decimals."""
        chosen = [c for c in (columns or LINK_COLUMNS) if c in LINK_COLUMNS] or list(LINK_COLUMNS)
        data = links_workbook(link_rows(status, ids), chosen)
        stamp = dt.datetime.now(rt.settings.zone).strftime("%Y-%m-%d")
        return Response(data, media_type=XLSX,
                        headers={"Content-Disposition": f'attachment; filename="sent-pages-{stamp}.xlsx"'})

    @router.get("/bulk/template", response_class=Response)
    def bulk_template() -> Response:
        """The CSV to fill in: a header of the review's columns (BulkRow), for agent.engine.bulk to read back."""
        return Response(",".join(BulkRow.model_fields) + "\r\n", media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="bulk-upload-template.csv"'})

    @router.post("/bulk/review")
    async def bulk_review(request: Request, filename: str = "upload.csv") -> dict[str, Any]:
        """Read an uploaded file (the raw body) with agent.engine.bulk: its rows and its row-by-row problems."""
        reader = bulk()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(filename).name
            path.write_bytes(await request.body())
            read = reader.read_bulk(path)
        return {"ok": read.ok, "rows": _plain(read.rows), "problems": _plain(read.problems)}

    @router.post("/bulk/links")
    def bulk_links(body: BulkIn) -> dict[str, Any]:
        """Send All (send=true) or Generate Links for Download: one quick link per reviewed row, each on its own."""
        results: list[dict[str, Any]] = []
        for row in body.rows:
            try:
                link = rt.links.create(LinkRequest(
                    name=row.name, email=row.email, amount=row.amount, invoice=row.invoice or None,
                    due_date=row.due_date, description=row.message or None, account=body.account))
            except LedgerlinkError as exc:
                results.append({"error": scrub(str(exc))})
                continue
            result: dict[str, Any] = {"link": LinkOut(**_fields(link)).model_dump(mode="json")}
            if body.send:
                result["send"] = send_row(link.id)
            results.append(result)
        return {"results": results}

    def send_row(link_id: str) -> dict[str, Any]:
        """Email one bulk link; what happened as a send record, so the review row says emailed or why not."""
        from agent.api.app import NO_DELIVERY, send_link

        if send_link is None:
            return {"ok": False, "result": NO_DELIVERY, "channel": "email"}
        try:
            return _plain(send_link(rt, link_id, "email"))
        except LedgerlinkError as exc:  # email not set up, no address: the link stands, unsent
            return {"ok": False, "result": scrub(str(exc)), "channel": "email"}

    return router


def channels(settings: Settings) -> tuple[ChannelOut, ChannelOut]:
    """Email and SMS readiness by the same tests agent.engine.sending applies before it sends."""
    smtp, sms = settings.smtp, settings.sms
    email_missing = [] if smtp.from_address else ["[smtp] from_address"]
    sms_missing = [f"[sms] {name}" for name in ("account", "from_number", "token_secret") if not getattr(sms, name)]
    return ChannelOut(ready=not email_missing, missing=email_missing), ChannelOut(ready=not sms_missing,
                                                                                 missing=sms_missing)


def bulk() -> Any:
    """agent.engine.bulk (the bulk file reader); a 501 that says so while it is not part of this build."""
    if importlib.util.find_spec("agent.engine.bulk") is None:
        raise HTTPException(501, "bulk upload is not available in this build (agent.engine.bulk is not installed)")
    return importlib.import_module("agent.engine.bulk")


def _plain(value: Any) -> Any:
    from agent.api.app import _plain as plain

    return plain(value)


def _fields(link: Link) -> dict[str, Any]:
    return {f.name: getattr(link, f.name) for f in dataclasses.fields(link)}


def links_workbook(rows: list[LinkRow], columns: list[str]) -> bytes:
    """An .xlsx of the links; dates without time zone (Excel has none), money exact via Decimal."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Sent Pages"
    sheet.append([LINK_COLUMNS[c] for c in columns])
    for row in rows:
        values = []
        for column in columns:
            value = getattr(row, column)
            if isinstance(value, dt.datetime):
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            values.append(value)
        sheet.append(values)
    for index, column in enumerate(columns, start=1):
        letter = sheet.cell(row=1, column=index).column_letter
        sheet.column_dimensions[letter].width = 40 if column in ("url", "description") else 18
        if column == "amount":
            for cell in sheet[letter][1:]:
                cell.number_format = "#,##0.00"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
