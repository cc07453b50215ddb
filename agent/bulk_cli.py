"""``ledgerlink bulk template | check | links``: the bulk upload on the command line."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from agent.bulk import read_bulk, write_template
from agent.cli import emit
from agent.runtime import Runtime
from agent.state.schema import links


def outstanding_invoices(rt: Runtime) -> set[str]:
    with rt.store.read() as conn:
        return set(conn.execute(select(links.c.invoice_number).where(
            links.c.status == "outstanding", links.c.invoice_number.is_not(None))).scalars())


def _check(args: argparse.Namespace, rt: Runtime) -> Any:
    bulk = read_bulk(args.file, outstanding_invoices=outstanding_invoices(rt))
    data = {"ok": bulk.ok, "rows": len(bulk.rows), "problems": [p.__dict__ for p in bulk.problems]}

    def text() -> str:
        if bulk.ok:
            return f"{args.file}: {len(bulk.rows)} row(s), no problems"
        lines = [f"{args.file}: {len(bulk.problems)} problem(s); nothing will be sent until they are fixed"]
        lines += [f"  row {p.row}, {p.field}: {p.message}" + (f" ({p.value!r})" if p.value else "")
                  for p in bulk.problems]
        return "\n".join(lines)

    emit(args, data, text)
    return bulk


def cmd_template(args: argparse.Namespace, rt: Runtime) -> int:
    write_template(Path(args.output))
    print(f"wrote {args.output}")
    return 0


def cmd_check(args: argparse.Namespace, rt: Runtime) -> int:
    return 0 if _check(args, rt).ok else 1


def cmd_links(args: argparse.Namespace, rt: Runtime) -> int:
    """Generate Links for Download: every link is created (or found again) only when the whole file is good."""
    bulk = _check(argparse.Namespace(file=args.file, json=False), rt)
    if not bulk.ok:
        return 1
    with Path(args.output).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["Invoice Number", "Recipient Name", "Recipient Email", "Amount", "Link", "Status"])
        for row in bulk.rows:
            link = rt.links.create(row.to_request(args.account))
            writer.writerow([row.invoice, row.name, row.email, row.amount, link.url, link.status])
    print(f"wrote {len(bulk.rows)} link(s) to {args.output}", file=sys.stderr)
    return 0


def register(sub: Any, add: Any) -> None:
    group = add("bulk", None, "bulk upload (CSV or TXT)").add_subparsers(dest="sub", required=True)
    add("template", cmd_template, "write the upload template", group).add_argument(
        "-o", "--output", default="bulk-upload-template.csv")
    add("check", cmd_check, "list every problem in a file; exit 1 if there is any", group, True).add_argument(
        "file", type=Path)
    p = add("links", cmd_links, "create the links for download (nothing is sent)", group)
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--account")
