"""The bulk-upload format (Send for Payment guide): CSV or TXT (tab or pipe), UTF-8 with or without a BOM.

One row per invoice with the guide's required fields: invoice number, invoice date, due date, recipient name,
recipient email, amount and custom message (the message may be empty). Every bad row and field is reported with
the reason, and a file with any problem sends nothing. The CLI, the inbox folder and the console all read files
through ``read_bulk``; rows are numbered as a spreadsheet shows them (the header is row 1).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from agent.core.addresses import check_email
from agent.core.errors import DataError, RuleError
from agent.core.model import parse_amount
from agent.engine.links import LinkRequest

TEMPLATE_HEADER = ["Invoice Number", "Invoice Date", "Due Date", "Recipient Name", "Recipient Email", "Amount",
                   "Custom Message"]
FIELDS = ["invoice_number", "invoice_date", "due_date", "recipient_name", "recipient_email", "amount", "message"]
LABEL = dict(zip(FIELDS, TEMPLATE_HEADER, strict=True))
REQUIRED = ("invoice_number", "recipient_name", "recipient_email", "invoice_date", "due_date", "amount")
# header with everything but letters removed, lower case -> field; a few aliases firms' exports use
ALIASES = {
    "invoicenumber": "invoice_number", "invoiceno": "invoice_number", "invoice": "invoice_number",
    "invoicedate": "invoice_date", "date": "invoice_date",
    "duedate": "due_date", "due": "due_date",
    "recipientname": "recipient_name", "name": "recipient_name", "payer": "recipient_name",
    "recipientemail": "recipient_email", "email": "recipient_email", "emailaddress": "recipient_email",
    "amount": "amount", "amountdue": "amount", "total": "amount",
    "custommessage": "message", "message": "message",
}
Progress = Callable[[int, int], None]  # (rows done, rows in the file)


@dataclass(frozen=True)
class BulkRow:
    row: int  # as the user sees it in a spreadsheet: the header is row 1
    invoice_number: str
    invoice_date: dt.date
    due_date: dt.date
    recipient_name: str
    recipient_email: str
    amount: Decimal
    message: str

    @property
    def invoice(self) -> str:  # the name agent/intake.py reads
        return self.invoice_number

    def to_request(self, account: str | None) -> LinkRequest:
        return LinkRequest(amount=self.amount, name=self.recipient_name, email=self.recipient_email,
                           invoice=self.invoice_number, due_date=self.due_date, message=self.message or None,
                           account=account)


@dataclass(frozen=True)
class BulkProblem:
    row: int
    field: str  # the column's label, as in the template
    value: str
    reason: str

    @property
    def message(self) -> str:  # the name agent/intake.py reads
        return self.reason


@dataclass
class BulkFile:
    rows: list[BulkRow] = field(default_factory=list)
    problems: list[BulkProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.rows)


@dataclass
class Records:
    """The file's cells by field, before checking: what ``bulk review`` edits."""

    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    problems: list[BulkProblem] = field(default_factory=list)


def parse_date(text: str) -> dt.date:
    """ISO or the UK's day-first forms; 03/04/2026 is 3 April."""
    text = text.strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d/%m/%y", "%d.%m.%Y", "%d-%m-%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError("bad date: use YYYY-MM-DD or DD/MM/YYYY")


def _delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    return max((",", "\t", "|", ";"), key=first.count)


def read_records(path: Path) -> Records:
    """Decode, sniff the separator and map the header; problems here are about the whole file."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Records(problems=[BulkProblem(1, "(file)", "", f"not UTF-8 text (byte {exc.start}); save it as "
                                             "CSV UTF-8")])
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(text))
    header = next(reader, None)
    if header is None:
        return Records(problems=[BulkProblem(1, "(file)", "", "the file is empty; start from `ledgerlink bulk "
                                             "template`")])
    columns: dict[str, int] = {}
    for i, name in enumerate(header):
        key = ALIASES.get(re.sub(r"[^a-z]", "", name.lower()))
        if key:
            columns.setdefault(key, i)
    missing = [LABEL[f] for f in FIELDS if f not in columns]
    if missing:
        return Records(problems=[BulkProblem(1, "(header)", ",".join(header),
                                             f"missing column(s): {', '.join(missing)}")])
    records = Records()
    for number, cells in enumerate(reader, start=2):
        if any(c.strip() for c in cells):
            records.rows.append((number, {f: cells[i].strip() if i < len(cells) else "" for f, i in columns.items()}))
    return records


Problem = tuple[str, str, str]  # field, value, reason


def _cell_problems(cells: dict[str, str], currency: str
                   ) -> tuple[list[Problem], dict[str, dt.date], Decimal | None]:
    """One row's own problems (missing, bad email, bad dates, bad amount), its dates and its amount."""
    problems: list[Problem] = [(name, "", "missing") for name in REQUIRED if not cells[name]]
    email = cells["recipient_email"]
    if email:
        try:
            check_email(email)
        except RuleError:
            problems.append(("recipient_email", email, "bad email address"))
    dates: dict[str, dt.date] = {}
    for name in ("invoice_date", "due_date"):
        if cells[name]:
            try:
                dates[name] = parse_date(cells[name])
            except ValueError as exc:
                problems.append((name, cells[name], str(exc)))
    if len(dates) == 2 and dates["due_date"] < dates["invoice_date"]:
        problems.append(("due_date", cells["due_date"], "due date is before the invoice date"))
    amount, reason = _amount(cells["amount"], currency)
    if reason:
        problems.append(("amount", cells["amount"], reason))
    return problems, dates, amount


def check_records(records: Records, *, outstanding_invoices: frozenset[str] | set[str] = frozenset(),
                  currency: str = "GBP", progress: Progress | None = None) -> BulkFile:
    """Check every row; every problem is collected, none stops the checking."""
    result = BulkFile(problems=list(records.problems))
    seen: dict[str, int] = {}
    total = len(records.rows)
    for done, (number, cells) in enumerate(records.rows, start=1):
        problems, dates, amount = _cell_problems(cells, currency)
        invoice = cells["invoice_number"]
        if invoice and invoice in seen:
            problems.append(("invoice_number", invoice, f"duplicate invoice number (also on row {seen[invoice]})"))
        elif invoice in outstanding_invoices:
            problems.append(("invoice_number", invoice, "already on an outstanding link"))
        if invoice == EXAMPLE["invoice_number"]:
            problems.append(("invoice_number", invoice, "the template's example row: delete it or replace it with "
                             "a real invoice"))
        seen.setdefault(invoice, number)
        result.problems += [BulkProblem(number, LABEL[name], value, reason) for name, value, reason in problems]
        if not problems and amount is not None:
            result.rows.append(BulkRow(row=number, invoice_number=invoice, invoice_date=dates["invoice_date"],
                                       due_date=dates["due_date"], recipient_name=cells["recipient_name"],
                                       recipient_email=cells["recipient_email"], amount=amount,
                                       message=cells["message"]))
        if progress and (done % 1000 == 0 or done == total):
            progress(done, total)
    if not records.rows and not result.problems:
        result.problems.append(BulkProblem(2, "(file)", "", "no rows below the header"))
    return result


def _amount(raw: str, currency: str) -> tuple[Decimal | None, str | None]:
    """The amount, or why it is bad, by the one rule for typed amounts (agent.core.model.parse_amount)."""
    if not raw:
        return None, None
    try:
        return parse_amount(raw, currency), None
    except DataError as exc:
        return None, f"bad amount: {str(exc).removeprefix('amount: ')}"


def read_bulk(path: Path, *, outstanding_invoices: frozenset[str] | set[str] = frozenset(), currency: str = "GBP",
              progress: Progress | None = None) -> BulkFile:
    """Parse and check a whole file. Thousands separators are fine; more decimals than ``currency`` has are not."""
    return check_records(read_records(path), outstanding_invoices=outstanding_invoices, currency=currency,
                         progress=progress)


def write_records(path: Path, rows: Iterable[dict[str, str]]) -> None:
    """A CSV in the template's column order (what ``bulk review`` writes after its edits)."""
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(TEMPLATE_HEADER)
        writer.writerows([row.get(f, "") for f in FIELDS] for row in rows)


# One filled-in row, so the template shows every column's format; refused if uploaded as it is.
EXAMPLE = {"invoice_number": "EXAMPLE-1", "invoice_date": "2026-12-01", "due_date": "31/12/2026",
           "recipient_name": "Ada Example", "recipient_email": "ada@example.com", "amount": "1,250.00",
           "message": "Dates as YYYY-MM-DD or DD/MM/YYYY. This message goes in the email above the link. "
                      "Replace this example row with your own."}


def template_text() -> str:
    """The bulk template as CSV text: the headings the reader reads back and the example row."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(TEMPLATE_HEADER)
    writer.writerow([EXAMPLE[f] for f in FIELDS])
    return out.getvalue()


def write_template(path: Path) -> None:
    Path(path).write_text(template_text(), encoding="utf-8", newline="")
