"""Manage Postings on the command line: ``ledgerlink postings ...`` and ``ledgerlink payments list``.

It lives with the other command modules, above the postings package, so postings never imports an interface.
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from typing import Any

from agent.cli.output import Commands, cli_actor, emit, table
from agent.core.errors import RuleError
from agent.runtime import Runtime
from agent.state.mirror import get_matter
from agent.state.reads import payment_rows
from agent.state.statuses import POSTING_STATES
from postings.outbox import Outbox
from postings.queries import posting_detail, posting_rows


def _outbox(rt: Runtime) -> Outbox:
    return Outbox(rt.store, rt.connector, rt.mapping)


POSTING_COLUMNS = ("id", "state", "kind", "amount", "reference", "matter", "invoice", "note")


def _cells(p: dict[str, Any]) -> tuple[object, ...]:
    """A posting as the clerk reads it: the firm's own numbers; the last error only while it still matters."""
    note = p["note"] if p["state"] in ("posted", "removed") else (p["last_error"] or p["note"])
    return (p["id"], p["state"], p["kind"], f"{p['amount']} {p['currency']}", p["reference"],
            p.get("matter_number") or p["matter_key"], p.get("statement_number") or p["statement_key"], note)


def cmd_list(args: argparse.Namespace, rt: Runtime) -> int:
    with rt.store.read() as conn:
        rows = posting_rows(conn, args.status)

    def text() -> str:
        if not rows:
            return "no postings" + (f" in state {', '.join(args.status)}" if args.status else "")
        return table(POSTING_COLUMNS, map(_cells, rows), right={"id", "amount"})

    emit(args, rows, text)
    return 0


def cmd_show(args: argparse.Namespace, rt: Runtime) -> int:
    with rt.store.read() as conn:
        data = posting_detail(conn, args.id)
    if data is None:
        raise RuleError(f"no posting {args.id}: 'ledgerlink postings list' shows the postings there are")
    row, payment, allocations = data["posting"], data["payment"], data["allocations"]

    def text() -> str:
        lines = [f"posting {row['id']}  {row['reference']}  ({row['kind']})"]
        lines += [
            f"  {k:<16} {'-' if row[k] is None else row[k]}"
            for k in (
                "state",
                "amount",
                "currency",
                "statement_number",
                "matter_number",
                "attempts",
                "last_error",
                "next_attempt_at",
                "note",
                "created_at",
                "updated_at",
                "posted_at",
            )
        ]
        if payment is not None:
            lines.append(
                f"payment {payment['payment_ref']} ({payment['provider']}, {payment['method']}): "
                f"{payment['amount']} {payment['currency']} {payment['status']} at {payment['status_at']}"
            )
            lines.append("allocations of this payment:")
        else:
            lines.append(f"payout {row['payout_ref']} ({row['provider']}), bank reference {row['bank_reference']}")
            lines.append("postings of this payout:")
        lines.append(table(POSTING_COLUMNS, map(_cells, allocations), right={"id", "amount"}))
        return "\n".join(lines)

    emit(args, data, text)
    return 0


def cmd_retry(args: argparse.Namespace, rt: Runtime) -> int:
    outbox = _outbox(rt)
    if args.failed == (args.id is not None):
        raise RuleError("give a posting ID or --failed (not both)")
    if args.failed:
        print(f"{outbox.retry_failed(cli_actor())} failed posting(s) will be retried")
    else:
        outbox.retry(cli_actor(), args.id)
        print(f"posting {args.id} will be retried")
    return 0


def _amounts(pairs: list[str]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for pair in pairs:
        key, sep, amount = pair.partition("=")
        try:
            if not sep or not key:
                raise InvalidOperation
            out[key.strip()] = out.get(key.strip(), Decimal(0)) + Decimal(amount.strip())
        except InvalidOperation:
            raise RuleError(f"--statement {pair!r}: write STATEMENT=AMOUNT, e.g. INV-1001=120.00") from None
    return out


def cmd_reallocate(args: argparse.Namespace, rt: Runtime) -> int:
    ids = _outbox(rt).reallocate(cli_actor(), args.id, _amounts(args.statement))
    print(f"posting {args.id} reallocated into posting(s) {', '.join(map(str, ids))}")
    return 0


def cmd_assign(args: argparse.Namespace, rt: Runtime) -> int:
    with rt.store.read() as conn:
        matter = get_matter(conn, args.matter)
    new_id = _outbox(rt).assign(cli_actor(), args.id, matter.key)
    print(f"posting {args.id} is now posting {new_id} on the client ledger of matter {matter.number}")
    return 0


def cmd_remove(args: argparse.Namespace, rt: Runtime) -> int:
    _outbox(rt).remove(cli_actor(), args.id, args.reason)
    print(f"posting {args.id} removed: {args.reason}")
    return 0


def cmd_payments_list(args: argparse.Namespace, rt: Runtime) -> int:
    with rt.store.read() as conn:
        rows = payment_rows(conn)

    def text() -> str:
        if not rows:
            return "no payments"
        return table(("provider ref", "status", "amount", "method", "account", "link", "paid (UTC)", "status since"),
                     ((p["payment_ref"], p["status"], f"{p['amount']} {p['currency']}", p["method"], p["account"],
                       p["link_id"], f"{p['confirmed_at']:%Y-%m-%d %H:%M}" if p["confirmed_at"] else "-",
                       f"{p['status_at']:%Y-%m-%d %H:%M}") for p in rows), right={"amount"})

    emit(args, rows, text)
    return 0


def register(commands: Commands) -> None:
    commands.add("list", cmd_list, "postings, optionally in some states", group="postings", json=True).add_argument(
        "--status", action="append", choices=POSTING_STATES, help="repeat for several states"
    )
    commands.add(
        "show", cmd_show, "one posting with its payment, allocations, attempts and errors", group="postings", json=True
    ).add_argument("id", type=int, help="the posting's id, as 'postings list' shows it")
    p = commands.add("retry", cmd_retry, "retry a failed posting after fixing the cause", group="postings")
    p.add_argument("id", type=int, nargs="?", help="the posting's id, as 'postings list' shows it")
    p.add_argument("--failed", action="store_true", help="retry every failed posting")
    p = commands.add("reallocate", cmd_reallocate, "split an incomplete posting over statements", group="postings")
    p.add_argument("id", type=int, help="the posting's id, as 'postings list' shows it")
    p.add_argument(
        "--statement",
        action="append",
        required=True,
        metavar="S=AMOUNT",
        help="statement key and amount; repeat; the amounts must add up to the posting's",
    )
    p = commands.add("assign", cmd_assign, "put client money that came through no matter on a matter's client "
                     "ledger", group="postings")
    p.add_argument("id", type=int, help="the incomplete trust posting's id, as 'postings list' shows it")
    p.add_argument("--matter", required=True, help="the matter number whose client ledger receives it")
    p = commands.add(
        "remove", cmd_remove, "take a posting out: it is handled by hand in the matter system", group="postings"
    )
    p.add_argument("id", type=int, help="the posting's id, as 'postings list' shows it")
    p.add_argument("--reason", required=True, help="why, for the record: e.g. posted by hand as receipt R-77")
    commands.add("list", cmd_payments_list, "payments and their status", group="payments", json=True)
