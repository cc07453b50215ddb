"""``ledgerlink bulk template | check | review | send | links``: the Bulk Upload screen on the command line."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from agent.cli.output import Commands, cli_actor, emit
from agent.core.errors import RuleError
from agent.engine.bulk import FIELDS, BulkFile, Records, check_records, read_records, write_records, write_template
from agent.engine.export import neutralise
from agent.runtime import Runtime
from agent.state.reads import open_link_invoices


def outstanding_invoices(rt: Runtime) -> set[str]:
    with rt.store.read() as conn:
        return open_link_invoices(conn)


class _Bar:
    """A progress line on a terminal; silent when stderr is a file or pipe."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            filled = 30 * done // max(total, 1)
            sys.stderr.write(f"\r{self.what} [{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,}")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _checked(rt: Runtime, records: Records, account: str | None) -> BulkFile:
    return check_records(
        records,
        outstanding_invoices=outstanding_invoices(rt),
        currency=rt.settings.account(account).currency,
        progress=_Bar("checking"),
    )


def _report(args: argparse.Namespace, name: str, bulk: BulkFile) -> None:
    data = {"ok": bulk.ok, "rows": len(bulk.rows), "problems": [p.__dict__ for p in bulk.problems]}

    def text() -> str:
        if bulk.ok:
            return f"{name}: {len(bulk.rows)} row(s), no problems"
        lines = [f"{name}: {len(bulk.problems)} problem(s); nothing will be sent until they are fixed"]
        lines += [
            f"  row {p.row}, {p.field}: {p.reason}" + (f" ({p.value!r})" if p.value else "") for p in bulk.problems
        ]
        return "\n".join(lines)

    emit(args, data, text)


def _rows_table(bulk: BulkFile) -> str:
    head = f"{'row':>5}  {'invoice':<14} {'date':<10} {'due':<10} {'amount':>12}  {'recipient':<40} message"
    lines = [head] + [
        f"{r.row:>5}  {r.invoice_number:<14} {r.invoice_date} {r.due_date} {r.amount:>12}  "
        f"{f'{r.recipient_name} <{r.recipient_email}>':<40} {r.message[:30]}"
        for r in bulk.rows
    ]
    return "\n".join(lines)


def cmd_template(args: argparse.Namespace, rt: Runtime) -> int:
    write_template(Path(args.output))
    print(f"wrote {args.output}")
    return 0


def cmd_check(args: argparse.Namespace, rt: Runtime) -> int:
    bulk = _checked(rt, read_records(args.file), args.account)
    _report(args, str(args.file), bulk)
    return 0 if bulk.ok else 1


def _added(text: str) -> dict[str, str]:
    cells = next(csv.reader(io.StringIO(text)), [])
    if not 6 <= len(cells) <= 7:
        raise RuleError(f"--add {text!r}: give invoice,date,due,name,email,amount[,message]")
    return dict(zip(FIELDS, [c.strip() for c in cells] + [""] * (7 - len(cells)), strict=True))


def cmd_review(args: argparse.Namespace, rt: Runtime) -> int:
    """Add/Delete before sending: drop rows by their row number, add rows, write the edited file, show it."""
    records = read_records(args.file)
    if records.problems:
        _report(args, str(args.file), check_records(records))
        return 1
    drop = set(args.drop or [])
    unknown = drop - {n for n, _ in records.rows}
    if unknown:
        raise RuleError(f"no row {', '.join(map(str, sorted(unknown)))} in {args.file}")
    kept = [cells for n, cells in records.rows if n not in drop] + [_added(t) for t in args.add or []]
    write_records(Path(args.output), kept)
    bulk = _checked(rt, read_records(Path(args.output)), args.account)
    print(f"wrote {args.output}: {len(kept)} row(s) ({len(drop)} dropped, {len(args.add or [])} added)")
    if bulk.rows:
        print(_rows_table(bulk))
    if not bulk.ok:
        _report(args, str(args.output), bulk)
    return 0 if bulk.ok else 1


def cmd_send(args: argparse.Namespace, rt: Runtime) -> int:
    """Send All: every row's link is created and emailed, only when the whole file is good."""
    rt.sender.require_email()
    bulk = _checked(rt, read_records(args.file), args.account)
    _report(args, str(args.file), bulk)
    if not bulk.ok:
        return 1
    requests = ((f"row {r.row}, {r.invoice_number}", r.to_request(args.account)) for r in bulk.rows)
    results = rt.sender.send_all(cli_actor(), requests, source=Path(args.file).name)
    for result in results:
        print(f"  {result.label}: {'sent' if result.sent else f'NOT SENT: {result.error}'}")
    failed = sum(not r.sent for r in results)
    print(f"{len(results) - failed} link(s) sent, {failed} not sent")
    return 1 if failed else 0


def cmd_links(args: argparse.Namespace, rt: Runtime) -> int:
    """Generate Links for Download: every link is created (or found again) only when the whole file is good."""
    bulk = _checked(rt, read_records(args.file), args.account)
    _report(argparse.Namespace(json=False), str(args.file), bulk)
    if not bulk.ok:
        return 1
    with Path(args.output).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["Invoice Number", "Recipient Name", "Recipient Email", "Amount", "Link", "Status"])
        for row in bulk.rows:
            link = rt.links.create(cli_actor(), row.to_request(args.account))
            writer.writerow([neutralise(str(v)) for v in (row.invoice_number, row.recipient_name, row.recipient_email)]
                            + [row.amount, link.url, link.status])
    print(f"wrote {len(bulk.rows)} link(s) to {args.output}", file=sys.stderr)
    return 0


def register(commands: Commands) -> None:
    commands.add("template", cmd_template, "write the upload template", group="bulk").add_argument(
        "-o", "--output", default="bulk-upload-template.csv", help="where to write the template"
    )
    p = commands.add(
        "check", cmd_check, "list every problem in a file; exit 1 if there is any", group="bulk", json=True
    )
    p.add_argument("file", type=Path, help="the bulk file (CSV, or TXT with tabs or semicolons)")
    p.add_argument("--account", help="merchant account (its currency decides the decimals allowed)")
    p = commands.add(
        "review", cmd_review, "show the parsed rows, drop or add rows, write the edited file", group="bulk"
    )
    p.add_argument("file", type=Path, help="the bulk file (CSV, or TXT with tabs or semicolons)")
    p.add_argument(
        "--drop",
        type=int,
        action="extend",
        nargs="+",
        metavar="ROW",
        help="row number(s) to delete (the header is row 1)",
    )
    p.add_argument(
        "--add",
        action="extend",
        nargs="+",
        metavar="CSV",
        help='a row to add: "invoice,date,due,name,email,amount,message"',
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="where to write the edited file")
    p.add_argument("--account", help="merchant account (its currency decides the decimals allowed)")
    p = commands.add("send", cmd_send, "create every link and email it (nothing if any row is bad)", group="bulk")
    p.add_argument("file", type=Path, help="the bulk file (CSV, or TXT with tabs or semicolons)")
    p.add_argument("--account", required=True, help="the merchant account the links are paid into")
    p = commands.add("links", cmd_links, "create the links for download (nothing is sent)", group="bulk")
    p.add_argument("file", type=Path, help="the bulk file (CSV, or TXT with tabs or semicolons)")
    p.add_argument("-o", "--output", required=True, help="the CSV of links to write")
    p.add_argument("--account", help="merchant account (default: the default account)")
