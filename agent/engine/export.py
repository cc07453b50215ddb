"""Export to Excel (or CSV): Sent Pages (links and payment plans), Manage Postings and payouts, with chosen and
ordered columns.

A workbook is for analysis, so its cells are typed: dates are real dates, timestamps real date-times in the
firm's time zone (Excel has no zones), and money is a number with the currency's number format - written from
the Decimal, never through a float in our code. CSV gets ISO dates and exact decimal text.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from sqlalchemy import Connection, func, select

from agent.core.errors import RuleError
from agent.core.model import exponent
from agent.state import StateStore, audit
from agent.state.schema import (
    collections,
    firm_matters,
    firm_payers,
    firm_statements,
    links,
    payout_items,
    payouts,
    plan_instalments,
    plan_statements,
    plans,
    sends,
)
from agent.state.statuses import COLLECTION_LIVE, COLLECTION_PAID, CollectionState, InstalmentState, PlanState
from postings.queries import posting_rows

Kind = Literal["text", "money", "date", "datetime", "number"]  # number: a count, e.g. an instalment's seq
SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}
DATE_FORMAT = "dd/mm/yyyy"  # UK firms read day first
DATETIME_FORMAT = "dd/mm/yyyy hh:mm"


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    header: str
    kind: Kind = "text"


def _cols(*specs: tuple[str, str] | tuple[str, str, Kind]) -> dict[str, ColumnSpec]:
    return {s[0]: ColumnSpec(*s) for s in specs}


LINK_COLUMNS = _cols(
    ("created_at", "Created", "datetime"), ("status", "Status"), ("invoice_number", "Invoice Number"),
    ("payer_name", "Recipient Name"), ("payer_email", "Recipient Email"), ("amount", "Amount", "money"),
    ("currency", "Currency"), ("description", "Description"), ("due_date", "Due Date", "date"),
    ("expires_at", "Expires", "datetime"), ("last_sent_at", "Last Sent", "datetime"), ("url", "Link"),
    ("id", "Link ID"), ("account", "Account"), ("matter_number", "Matter"), ("closed_at", "Closed", "datetime"),
    ("status_reason", "Note"), ("provider_ref", "Provider Reference"),
)
LINK_DEFAULT = ["created_at", "status", "invoice_number", "payer_name", "payer_email", "amount", "currency",
                "description", "due_date", "expires_at", "last_sent_at", "url", "id"]

# A link's status as Sent Pages shows it (the console's badges), so the workbook does not read "payment_received".
LINK_STATUS_WORDS = {
    "creating": "Being created", "outstanding": "Outstanding", "payment_received": "Payment received",
    "cancelled": "Cancelled", "expired": "Expired", "failed": "Failed",
}


def _status_words(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "status": LINK_STATUS_WORDS.get(r["status"], r["status"])} for r in rows]


# Payment plans, one row per instalment with its plan's columns repeated: a bookkeeper reconciles instalments
# (against the provider's payouts by Payment Reference), and a filter on Plan ID gives back one plan.
PLAN_COLUMNS = _cols(
    ("plan_id", "Plan ID"), ("plan_created_at", "Plan Created", "datetime"), ("plan_status", "Plan Status"),
    ("matter_number", "Matter"), ("payer_name", "Payer"), ("account", "Account"), ("statements", "Statements"),
    ("plan_total", "Plan Total", "money"), ("currency", "Currency"), ("frequency", "Frequency"),
    ("seq", "Instalment", "number"), ("count", "Of", "number"), ("due_on", "Due Date", "date"),
    ("amount", "Amount", "money"), ("state", "State"), ("charge_date", "Charge Date", "date"),
    ("collection_id", "Collection ID"), ("provider_ref", "Payment Reference"), ("note", "Note"),
    ("plan_note", "Plan Note"),
)
PLAN_DEFAULT = ["plan_id", "matter_number", "payer_name", "plan_status", "seq", "count", "due_on", "amount",
                "currency", "state", "collection_id", "provider_ref", "note"]

# Words as a person reads them (the console's plan view says the same), not "pending_submission".
PLAN_STATUS_WORDS = {PlanState.AWAITING_MANDATE: "Awaiting mandate", PlanState.ACTIVE: "Active",
                     PlanState.ENDED: "Ended", PlanState.CANCELLED: "Cancelled"}
INSTALMENT_STATE_WORDS = {
    InstalmentState.SCHEDULED: "Scheduled", InstalmentState.CANCELLED: "Cancelled",
    CollectionState.CREATING: "Being submitted", CollectionState.PENDING_CUSTOMER_APPROVAL: "Waiting for the payer",
    CollectionState.PENDING_SUBMISSION: "With the provider", CollectionState.SUBMITTED: "With the bank",
    CollectionState.CONFIRMED: "Paid", CollectionState.PAID_OUT: "Paid out", CollectionState.FAILED: "Failed",
    CollectionState.CHARGED_BACK: "Charged back", CollectionState.REFUSED: "Refused by the provider",
    CollectionState.CUSTOMER_APPROVAL_DENIED: "Refused by the payer",
}
TO_COME = frozenset({InstalmentState.SCHEDULED.value, *(s.value for s in COLLECTION_LIVE)})  # will still collect


def instalment_rows(conn: Connection, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every instalment of every plan (newest plan first, each plan's in order) with its plan's columns; its state
    is its collection's money status once submitted, else scheduled or cancelled - as the plan view shows it."""
    query = (select(plans.c.id.label("plan_id"), plans.c.created_at.label("plan_created_at"),
                    plans.c.status.label("plan_status"), plans.c.account, plans.c.currency,
                    plans.c.total.label("plan_total"), plans.c.frequency, plans.c.note.label("plan_note"),
                    firm_matters.c.number.label("matter_number"), firm_payers.c.name.label("payer_name"),
                    plan_instalments.c.seq, plan_instalments.c.due_on, plan_instalments.c.amount,
                    plan_instalments.c.state.label("instalment_state"), collections.c.status.label("money"),
                    collections.c.charge_date, plan_instalments.c.collection_id, collections.c.provider_ref,
                    plan_instalments.c.note)
             .join(plan_instalments, plan_instalments.c.plan_id == plans.c.id)
             .outerjoin(collections, collections.c.id == plan_instalments.c.collection_id)
             .outerjoin(firm_matters, firm_matters.c.key == plans.c.matter_key)
             .outerjoin(firm_payers, firm_payers.c.key == plans.c.payer_key)
             .order_by(plans.c.created_at.desc(), plans.c.id, plan_instalments.c.seq))
    statements_query = (select(plan_statements.c.plan_id, firm_statements.c.number)
                        .join(firm_statements, firm_statements.c.key == plan_statements.c.statement_key)
                        .order_by(firm_statements.c.issue_date, firm_statements.c.number))
    if statuses:
        query = query.where(plans.c.status.in_(statuses))
        statements_query = statements_query.join(plans, plans.c.id == plan_statements.c.plan_id).where(
            plans.c.status.in_(statuses))
    numbers: dict[str, list[str]] = {}
    for plan_id, number in conn.execute(statements_query):
        numbers.setdefault(plan_id, []).append(number)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["plan_id"]] = counts.get(row["plan_id"], 0) + 1
    for row in rows:
        money, own = row.pop("money"), row.pop("instalment_state")
        row["state"] = money or own
        row["count"] = counts[row["plan_id"]]
        row["statements"] = ", ".join(numbers.get(row["plan_id"], []))
    return rows


def _plan_words(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "plan_status": PLAN_STATUS_WORDS.get(r["plan_status"], r["plan_status"]),
             "state": INSTALMENT_STATE_WORDS.get(r["state"], r["state"])} for r in rows]


@dataclass(frozen=True)
class PlanSummary:
    """A plan as Sent Pages lists it beside the links: what was asked of the payer and how far it has got."""

    id: str
    created_at: dt.datetime
    status: str  # active, ended or cancelled
    matter_number: str | None
    payer_name: str | None
    account: str
    currency: str
    total: Decimal
    frequency: str
    instalments: int
    paid: int  # instalments paid (confirmed or paid out)
    to_collect: Decimal  # scheduled instalments and those still with the provider or bank
    next_due_on: dt.date | None  # the first instalment still to collect
    next_amount: Decimal | None
    note: str | None = None


def plan_summaries(conn: Connection, statuses: Sequence[str] | None = None) -> list[PlanSummary]:
    """Plans newest first, summed from their instalments (instalment_rows), so the screen and the export agree."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in instalment_rows(conn, statuses):
        grouped.setdefault(row["plan_id"], []).append(row)
    found = []
    for plan_id, rows in grouped.items():
        first = rows[0]
        to_come = [r for r in rows if r["state"] in TO_COME]
        zero = Decimal(0).scaleb(-exponent(first["currency"]))  # "0.00", as the plan's other amounts
        found.append(PlanSummary(
            plan_id, first["plan_created_at"], first["plan_status"], first["matter_number"], first["payer_name"],
            first["account"], first["currency"], first["plan_total"], first["frequency"], len(rows),
            sum(1 for r in rows if r["state"] in COLLECTION_PAID), sum((r["amount"] for r in to_come), zero),
            to_come[0]["due_on"] if to_come else None, to_come[0]["amount"] if to_come else None,
            first["plan_note"]))
    return found


POSTING_COLUMNS = _cols(
    ("id", "Posting ID"), ("created_at", "Created", "datetime"), ("state", "State"), ("kind", "Kind"),
    ("reference", "Reference"), ("amount", "Amount", "money"), ("currency", "Currency"),
    ("statement_key", "Statement"), ("matter_key", "Matter"), ("payment_ref", "Payment Reference"),
    ("method", "Method"), ("payment_status", "Payment Status"), ("link_id", "Link ID"),
    ("invoice_number", "Invoice Number"), ("payer_name", "Payer"), ("posted_at", "Posted", "datetime"),
    ("note", "Note"), ("last_error", "Last Error"),
)
POSTING_DEFAULT = ["id", "created_at", "state", "reference", "amount", "currency", "statement_key", "matter_key",
                   "payment_ref", "method", "payer_name", "posted_at", "note"]


PAYOUT_COLUMNS = _cols(
    ("payout_ref", "Payout"), ("account", "Account"), ("account_kind", "Account Kind"),
    ("created_at", "Created", "datetime"), ("arrival_date", "Arrival", "date"), ("status", "Status"),
    ("bank_reference", "Bank Reference"), ("payout_amount", "Bank Amount", "money"), ("currency", "Currency"),
    ("adds_up", "Adds Up"), ("line", "Line"), ("kind", "Item"), ("amount", "Item Amount", "money"),
    ("payment_ref", "Payment Reference"), ("ref", "Item Reference"), ("raw_type", "Provider Type"),
    ("shortfall", "Client Money Shortfall", "money"),
)
PAYOUT_DEFAULT = ["payout_ref", "account", "created_at", "bank_reference", "payout_amount", "currency", "adds_up",
                  "kind", "amount", "payment_ref"]


def payout_rows(conn: Connection) -> list[dict[str, Any]]:
    """Every payout item with its payout, newest payout first: a payout's breakdown on consecutive rows."""
    query = (select(payouts.c.payout_ref, payouts.c.account, payouts.c.account_kind, payouts.c.created_at,
                    payouts.c.arrival_date, payouts.c.status, payouts.c.bank_reference, payouts.c.currency,
                    payouts.c.amount.label("payout_amount"), payouts.c.items_total, payouts.c.shortfall,
                    payout_items.c.line, payout_items.c.kind, payout_items.c.amount, payout_items.c.payment_ref,
                    payout_items.c.ref, payout_items.c.raw_type)
             .join(payout_items, payout_items.c.payout_id == payouts.c.id)
             .order_by(payouts.c.created_at.desc(), payouts.c.id, payout_items.c.line))
    return [{**r, "adds_up": "yes" if r["items_total"] == r["payout_amount"] else "NO"}
            for r in conn.execute(query).mappings()]


AUDIT_COLUMNS = _cols(
    ("seq", "Entry"), ("at", "When", "datetime"), ("actor", "Who"), ("action", "Action"), ("object", "Object"),
    ("outcome", "Outcome"), ("error", "Error"), ("before", "Before"), ("after", "After"), ("hash", "Hash"),
)
AUDIT_DEFAULT = list(AUDIT_COLUMNS)


def audit_rows(entries: Iterable[audit.Entry]) -> list[dict[str, Any]]:
    """Audit entries as export rows: the object as kind:id, before and after as their canonical JSON."""
    return [{"seq": e.seq, "at": e.at, "actor": e.actor, "action": e.action, "object": e.object,
             "outcome": e.outcome, "error": e.error, "before": audit.encode(e.before), "after": audit.encode(e.after),
             "hash": e.hash} for e in entries]


def choose(available: Mapping[str, ColumnSpec], wanted: Sequence[str] | None, default: Sequence[str]
           ) -> list[ColumnSpec]:
    """The Column Configurator: the chosen columns in the chosen order; an unknown name lists the valid ones."""
    names = list(wanted) if wanted else list(default)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise RuleError(f"unknown column(s) {', '.join(unknown)}; choose from: {', '.join(available)}")
    return [available[n] for n in dict.fromkeys(names)]


def link_rows(conn: Connection, statuses: Sequence[str] | None = None,
              ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Links newest first with their matter number and the last time each was sent."""
    last_sent = (select(sends.c.link_id, func.max(sends.c.sent_at).label("last_sent_at"))
                 .where(sends.c.ok.is_(True)).group_by(sends.c.link_id).subquery())
    query = (select(links, last_sent.c.last_sent_at, firm_matters.c.number.label("matter_number"))
             .outerjoin(last_sent, last_sent.c.link_id == links.c.id)
             .outerjoin(firm_matters, firm_matters.c.key == links.c.matter_key)
             .order_by(links.c.created_at.desc()))
    if statuses:
        query = query.where(links.c.status.in_(statuses))
    if ids is not None:
        query = query.where(links.c.id.in_(ids))
    return [dict(r) for r in conn.execute(query).mappings()]


def money_format(currency: str) -> str:
    places = exponent(currency)
    number = "#,##0" + ("." + "0" * places if places else "")
    symbol = SYMBOLS.get(currency.upper())
    return f'"{symbol}"{number}' if symbol else f'{number} "{currency.upper()}"'


def _local(value: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    return value.astimezone(zone).replace(tzinfo=None)


def write_xlsx(path: Path | BinaryIO, rows: Iterable[Mapping[str, Any]], columns: Sequence[ColumnSpec], zone: ZoneInfo,
               title: str) -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = title
    ws.append([c.header for c in columns])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.freeze_panes = "A2"
    for r, row in enumerate(rows, start=2):
        for i, col in enumerate(columns, start=1):
            value = row.get(col.key)
            if value is not None:
                _set_cell(ws.cell(row=r, column=i), value, col.kind, row, zone)
    for i, col in enumerate(columns, start=1):
        ws.column_dimensions[get_column_letter(i)].width = max(12, len(col.header) + 2)
    if isinstance(path, Path):
        _make_folder(path)
    wb.save(path)


def _set_cell(cell: Cell, value: Any, kind: Kind, row: Mapping[str, Any], zone: ZoneInfo) -> None:
    """One typed cell: money a number in its row's currency format, dates real dates, counts numbers."""
    if kind == "money":
        cell.value = value  # a Decimal: openpyxl writes its exact digits
        cell.number_format = money_format(str(row.get("currency") or "GBP"))
    elif kind == "datetime":
        cell.value = _local(value, zone)
        cell.number_format = DATETIME_FORMAT
    elif kind == "date":
        cell.value = value
        cell.number_format = DATE_FORMAT
    elif kind == "number":
        cell.value = value
    else:
        set_text_cell(cell, value)


def _make_folder(path: Path) -> None:
    """The file's folder, made if missing; a file where a folder should be is a person's mistake (the CLI's exit
    2), not an internal error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RuleError(f"cannot write {path}: a part of {path.parent} is a file, not a folder") from None


# A cell beginning with one of these is run as a formula by Excel, LibreOffice and Google Sheets (OWASP, CSV
# Injection): a payer named =HYPERLINK(...) must reach the spreadsheet as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """Text for a CSV cell, by OWASP's rule: a leading single quote on anything that begins like a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def cell_text(value: Any) -> str:
    """``value`` as text a worksheet can hold: control characters XML 1.0 forbids (a stray one in a payer's name
    made openpyxl refuse the whole export) become U+FFFD, visibly."""
    cleaned: str = ILLEGAL_CHARACTERS_RE.sub("\ufffd", str(value))  # openpyxl ships no types: its pattern is Any
    return cleaned


def set_text_cell(cell: Cell, value: Any) -> None:
    """Store ``value`` as a string cell whatever it begins with (openpyxl alone makes '=...' a formula); formula-like
    text also gets Excel's quote prefix, so editing the cell later does not turn it into a formula either."""
    text = cell_text(value)
    cell.value = text
    cell.data_type = "s"
    if text.startswith(FORMULA_STARTS):
        cell.quotePrefix = True


def _csv_value(value: Any, col: ColumnSpec, zone: ZoneInfo) -> str:
    if value is None:
        return ""
    if col.kind == "datetime":
        return _local(value, zone).isoformat(sep=" ", timespec="minutes")
    if isinstance(value, Decimal):
        return format(value, "f")  # money: a negative amount is a number, not a formula
    return value.isoformat() if isinstance(value, dt.date) else neutralise(str(value))


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[ColumnSpec], zone: ZoneInfo) -> None:
    _make_folder(path)
    with path.open("w", newline="", encoding="utf-8-sig") as out:  # the BOM makes Excel read UTF-8 names right
        writer = csv.writer(out, quoting=csv.QUOTE_ALL)  # OWASP: every field quoted, so no cell splits in two
        writer.writerow([c.header for c in columns])
        writer.writerows([_csv_value(row.get(c.key), c, zone) for c in columns] for row in rows)


def _write(path: Path, rows: list[dict[str, Any]], columns: list[ColumnSpec], zone: ZoneInfo, title: str) -> int:
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        write_xlsx(path, rows, columns, zone, title)
    elif suffix == ".csv":
        write_csv(path, rows, columns, zone)
    else:
        raise RuleError(f"{path.name}: export to a .xlsx or .csv file")
    return len(rows)


def _workbook(rows: list[dict[str, Any]], columns: list[ColumnSpec], zone: ZoneInfo, title: str) -> bytes:
    out = io.BytesIO()
    write_xlsx(out, rows, columns, zone, title)
    return out.getvalue()


class Exporter:
    """Sent Pages (links, plans), Manage Postings, payouts and audit exports, for the CLI and the console alike, in
    the firm's zone. Like every read, an export is not an audit entry: the trail records changes."""

    def __init__(self, store: StateStore, zone: ZoneInfo) -> None:
        self.store = store
        self.zone = zone

    def links(self, path: Path, *, statuses: Sequence[str] | None = None,
              columns: Sequence[str] | None = None) -> int:
        """Sent Pages to ``path`` (.xlsx or .csv); returns the number of links written."""
        chosen = choose(LINK_COLUMNS, columns, LINK_DEFAULT)
        with self.store.read() as conn:
            rows = link_rows(conn, statuses)
        return _write(path, _status_words(rows), chosen, self.zone, "Sent Pages")

    def links_workbook(self, *, statuses: Sequence[str] | None = None, columns: Sequence[str] | None = None,
                       ids: Sequence[str] | None = None) -> bytes:
        """Sent Pages as .xlsx bytes, for a download."""
        chosen = choose(LINK_COLUMNS, columns, LINK_DEFAULT)
        with self.store.read() as conn:
            rows = link_rows(conn, statuses, ids)
        return _workbook(_status_words(rows), chosen, self.zone, "Sent Pages")

    def plans(self, path: Path, *, statuses: Sequence[str] | None = None,
              columns: Sequence[str] | None = None) -> int:
        """Payment plans instalment by instalment to ``path`` (.xlsx or .csv); returns the instalments written."""
        chosen = choose(PLAN_COLUMNS, columns, PLAN_DEFAULT)
        with self.store.read() as conn:
            rows = instalment_rows(conn, statuses)
        return _write(path, _plan_words(rows), chosen, self.zone, "Payment plans")

    def plans_workbook(self, *, statuses: Sequence[str] | None = None,
                       columns: Sequence[str] | None = None) -> bytes:
        """Payment plans instalment by instalment as .xlsx bytes, for the console's download."""
        chosen = choose(PLAN_COLUMNS, columns, PLAN_DEFAULT)
        with self.store.read() as conn:
            rows = instalment_rows(conn, statuses)
        return _workbook(_plan_words(rows), chosen, self.zone, "Payment plans")

    def audit(self, path: Path, *, actor: str | None = None, obj: str | None = None,
              since: dt.datetime | None = None, until: dt.datetime | None = None,
              columns: Sequence[str] | None = None) -> int:
        """The audit trail (filtered as ``audit list``) to ``path`` (.xlsx or .csv); returns the entries written."""
        chosen = choose(AUDIT_COLUMNS, columns, AUDIT_DEFAULT)
        with self.store.read() as conn:
            rows = audit_rows(audit.entries(conn, actor=actor, obj=obj, since=since, until=until))
        return _write(path, rows, chosen, self.zone, "Audit trail")

    def postings(self, path: Path, *, states: Sequence[str] | None = None,
                 columns: Sequence[str] | None = None) -> int:
        """Manage Postings to ``path`` (.xlsx or .csv); returns the number of postings written."""
        chosen = choose(POSTING_COLUMNS, columns, POSTING_DEFAULT)
        with self.store.read() as conn:
            rows = posting_rows(conn, states)
        return _write(path, rows, chosen, self.zone, "Postings")

    def payouts(self, path: Path, *, columns: Sequence[str] | None = None) -> int:
        """Payouts item by item to ``path`` (.xlsx or .csv); returns the number of rows written."""
        chosen = choose(PAYOUT_COLUMNS, columns, PAYOUT_DEFAULT)
        with self.store.read() as conn:
            rows = payout_rows(conn)
        return _write(path, rows, chosen, self.zone, "Payouts")
