"""The bulk-upload format (Send for Payment guide): CSV or TXT (tab or pipe), UTF-8 with or without a BOM.

One row per invoice with the guide's required fields: invoice number, invoice date, due date, recipient name,
recipient email, amount and custom message (the message may be empty). Every bad row and field is reported with
the reason, and a file with any problem sends nothing. The CLI, the inbox folder and the console all read files
through ``read_bulk``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from agent.errors import DataError
from agent.links import LinkRequest
from agent.model import check_decimals, to_decimal

TEMPLATE_HEADER = ["Invoice Number", "Invoice Date", "Due Date", "Recipient Name", "Recipient Email", "Amount",
                   "Custom Message"]
# header (normalised) -> field; a few aliases firms' exports use
ALIASES = {
    "invoicenumber": "invoice", "invoiceno": "invoice", "invoice": "invoice",
    "invoicedate": "invoice_date", "date": "invoice_date",
    "duedate": "due_date", "due": "due_date",
    "recipientname": "name", "name": "name", "payer": "name",
    "recipientemail": "email", "email": "email", "emailaddress": "email",
    "amount": "amount", "amountdue": "amount", "total": "amount",
    "custommessage": "message", "message": "message",
}
REQUIRED = ["invoice", "invoice_date", "due_date", "name", "email", "amount", "message"]
LABEL = dict(zip(REQUIRED, ["Invoice Number", "Invoice Date", "Due Date", "Recipient Name", "Recipient Email",
                            "Amount", "Custom Message"], strict=True))
EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[A-Za-z]{2,}$")


@dataclass(frozen=True)
class BulkRow:
    row: int  # as the user sees it in a spreadsheet: the header is row 1
    invoice: str
    invoice_date: dt.date
    due_date: dt.date
    name: str
    email: str
    amount: Decimal
    message: str

    def to_request(self, account: str | None) -> LinkRequest:
        return LinkRequest(amount=self.amount, name=self.name, email=self.email, invoice=self.invoice,
                           due_date=self.due_date, description=self.message or None, account=account)


@dataclass(frozen=True)
class BulkProblem:
    row: int
    field: str
    value: str
    message: str


@dataclass
class BulkFile:
    rows: list[BulkRow] = field(default_factory=list)
    problems: list[BulkProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.rows)


def _date(text: str) -> dt.date:
    text = text.strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d/%m/%y", "%d.%m.%Y"):  # ISO, and UK day-first forms
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError("bad date: use YYYY-MM-DD or DD/MM/YYYY")


def _dialect(sample: str) -> str:
    first = sample.splitlines()[0] if sample else ""
    return max((",", "\t", "|", ";"), key=first.count)


def read_bulk(path: Path, *, outstanding_invoices: frozenset[str] | set[str] = frozenset(),
              currency: str = "GBP") -> BulkFile:
    """Parse and check a whole file; every problem is collected, none stops the reading."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return BulkFile(problems=[BulkProblem(1, "(file)", "", f"not UTF-8 text (byte {exc.start}); save it as "
                                              "CSV UTF-8")])
    result = BulkFile()
    reader = csv.reader(io.StringIO(text), delimiter=_dialect(text))
    header = next(reader, None)
    if header is None:
        result.problems.append(BulkProblem(1, "(file)", "", "the file is empty; start from `ledgerlink bulk template`"))
        return result
    columns = {}
    for i, name in enumerate(header):
        key = ALIASES.get(re.sub(r"[^a-z]", "", name.lower()))
        if key:
            columns.setdefault(key, i)
    missing = [LABEL[f] for f in REQUIRED if f not in columns]
    if missing:
        result.problems.append(BulkProblem(1, "(header)", ",".join(header),
                                           f"missing column(s): {', '.join(missing)}"))
        return result
    seen: dict[str, int] = {}
    for number, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        before = len(result.problems)

        def cell(name: str, cells: list[str] = cells) -> str:
            index = columns[name]
            return cells[index].strip() if index < len(cells) else ""

        def bad(name: str, value: str, message: str, number: int = number) -> None:
            result.problems.append(BulkProblem(number, LABEL[name], value, message))

        values: dict[str, object] = {}
        for name in ("invoice", "name", "email"):
            values[name] = cell(name)
            if not values[name]:
                bad(name, "", "missing")
        values["message"] = cell("message")
        email = str(values["email"])
        if email and not EMAIL.match(email):
            bad("email", email, "bad email address")
        for name in ("invoice_date", "due_date"):
            raw = cell(name)
            if not raw:
                bad(name, "", "missing")
                continue
            try:
                values[name] = _date(raw)
            except ValueError as exc:
                bad(name, raw, str(exc))
        raw = cell("amount")
        try:
            amount = check_decimals(to_decimal(raw.replace("£", ""), field="amount"), currency) if raw else None
            if amount is None:
                bad("amount", "", "missing")
            elif amount <= 0:
                bad("amount", raw, "amount must be more than zero")
            values["amount"] = amount
        except DataError as exc:
            bad("amount", raw, f"bad amount: {exc}")
        invoice = str(values["invoice"])
        if invoice in seen:
            bad("invoice", invoice, f"duplicate invoice number (also on row {seen[invoice]})")
        elif invoice in outstanding_invoices:
            bad("invoice", invoice, "already on an outstanding link")
        seen.setdefault(invoice, number)
        if len(result.problems) == before:
            result.rows.append(BulkRow(row=number, **values))  # type: ignore[arg-type]
    if not result.rows and not result.problems:
        result.problems.append(BulkProblem(2, "(file)", "", "no rows below the header"))
    return result


def write_template(path: Path) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerow(TEMPLATE_HEADER)
