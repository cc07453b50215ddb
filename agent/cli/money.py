"""``ledgerlink payouts ...`` and ``ledgerlink payments refund``: the bookkeeper's side of client money."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from agent.cli.output import Commands, cli_actor, emit, table
from agent.core.errors import RuleError
from agent.core.model import account_kind_word, parse_amount
from agent.engine.payouts import PayoutView
from agent.runtime import Runtime


def _amount(text: str) -> Decimal:
    return parse_amount(text, None, field="--amount")


def _since(text: str) -> dt.datetime:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
    except ValueError:
        raise RuleError(f"--since {text!r}: give a day as YYYY-MM-DD") from None


def _kind(rt: Runtime, kind: str) -> str:
    return account_kind_word(kind, rt.settings.firm_locale)


def _data(view: Any) -> dict[str, Any]:
    data: dict[str, Any] = dataclasses.asdict(view)
    if isinstance(view, PayoutView):
        data["adds_up"] = view.adds_up
    return data


def cmd_sync(args: argparse.Namespace, rt: Runtime) -> int:
    result = rt.payouts.sync(args.since)
    emit(args, dataclasses.asdict(result), lambda: "\n".join([
        f"{result.new} new payout(s), {result.updated} updated, {result.postings} posting(s) queued",
        *(b.message for b in result.breaches)]))
    return 0


def cmd_pay_out_now(args: argparse.Namespace, rt: Runtime) -> int:
    """Sandbox only; without a sandbox account it is refused naming the providers (a RuleError: exit 2)."""
    result = rt.payouts.pay_out_now(cli_actor())

    def text() -> str:
        if not result.new:
            return ("nothing to pay out: the sandbox has no settled payment since its last payout "
                    "(pay a link on the sandbox pay page first)")
        return "\n".join([f"{result.new} payout(s) made and read, {result.postings} posting(s) queued; "
                          "'ledgerlink payouts list' shows them", *(b.message for b in result.breaches)])

    emit(args, dataclasses.asdict(result), text)
    return 0


def cmd_list(args: argparse.Namespace, rt: Runtime) -> int:
    found = rt.payouts.listing(args.account)

    def text() -> str:
        if not found:
            return rt.payouts.why_none()
        return table(("payout", "account", "created (UTC)", "bank amount", "fees", "adds up", "client money"),
                     ((p.payout_ref, f"{p.account} ({_kind(rt, p.account_kind)})", f"{p.created_at:%Y-%m-%d %H:%M}",
                       f"{p.amount} {p.currency}", p.fees, "yes" if p.adds_up else f"NO (items {p.items_total})",
                       _shortfall(p)) for p in found), right={"bank amount", "fees"})

    emit(args, [_data(p) for p in found], text)
    return 0


def _shortfall(p: PayoutView) -> str:
    if p.shortfall is None:
        return ""
    return f"{p.shortfall} short{' (cleared)' if p.breach_cleared_at else ': BREACH'}"


def cmd_show(args: argparse.Namespace, rt: Runtime) -> int:
    p = rt.payouts.show(args.payout)

    def text() -> str:
        head = [f"payout {p.payout_ref} ({p.id})  {p.status}  {p.account} ({_kind(rt, p.account_kind)})",
                f"  bank amount   {p.amount} {p.currency}   reference {p.bank_reference or '-'}   arrives "
                f"{p.arrival_date or '-'}",
                f"  items total   {p.items_total} {p.currency}: "
                + ("adds up to the bank amount to the penny" if p.adds_up else
                   f"DOES NOT add up: {p.amount - p.items_total} {p.currency} unexplained"),
                f"  fees          {p.fees} {p.currency}"]
        if p.shortfall is not None:
            head.append(f"  client money  {p.shortfall} {p.currency} of fees taken from this trust account"
                        + (f" (cleared {p.breach_cleared_at:%Y-%m-%d})" if p.breach_cleared_at else ": BREACH"))
        lines = table(("item", "amount", "payment", "provider ref", "refund"),
                      ((i.kind, i.amount, i.payment_ref, i.ref, i.refund) for i in p.items), right={"amount"})
        return "\n".join([*head, lines])

    emit(args, _data(p), text)
    return 0


def cmd_export(args: argparse.Namespace, rt: Runtime) -> int:
    count = rt.exporter.payouts(args.file, columns=args.columns.split(",") if args.columns else None)
    print(f"{count} payout item(s) written to {args.file}")
    return 0


def cmd_clear(args: argparse.Namespace, rt: Runtime) -> int:
    rt.payouts.clear(cli_actor(), args.payout, args.note)
    print(f"breach on payout {args.payout} cleared: {args.note}")
    return 0


def cmd_refund(args: argparse.Namespace, rt: Runtime) -> int:
    """A refund the provider or the rules refuse is the user's to fix: one line and exit 2."""
    try:
        r = rt.refunds.refund(args.payment, args.amount, args.reason, cli_actor())
    except RuleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    emit(args, dataclasses.asdict(r), lambda: f"refund {r.id} of {r.amount} {r.currency} on payment "
         f"{r.payment_ref}: {r.status} at the provider ({r.provider_ref}); its reversal is queued for the books")
    return 0


def cmd_refunds(args: argparse.Namespace, rt: Runtime) -> int:
    found = rt.refunds.listing(args.payment)
    emit(args, [dataclasses.asdict(r) for r in found], lambda: table(
        ("refund", "payment", "amount", "status", "by", "reason"),
        ((r.id, r.payment_ref, f"{r.amount} {r.currency}", r.status, r.actor, r.reason) for r in found),
        right={"amount"}) if found else "no refunds")
    return 0


def register(commands: Commands) -> None:
    commands.add("sync", cmd_sync, "read new payouts now: post fees and deposits, check client money",
                 group="payouts", json=True).add_argument("--since", type=_since, help="from this day, YYYY-MM-DD")
    commands.add("pay-out-now", cmd_pay_out_now, "sandbox only: pay out today's payments now and read them",
                 group="payouts", json=True)
    commands.add("list", cmd_list, "payouts, newest first, and whether each adds up", group="payouts",
                 json=True).add_argument("--account", help="only this merchant account")
    commands.add("show", cmd_show, "one payout's breakdown, item by item", group="payouts",
                 json=True).add_argument("payout", help="our payout id or the provider's")
    p = commands.add("export", cmd_export, "payouts item by item to .xlsx or .csv", group="payouts")
    p.add_argument("file", type=Path, help="a .xlsx or .csv file")
    p.add_argument("--columns", help="comma-separated columns, in order")
    p = commands.add("clear", cmd_clear, "record that a client-money shortfall was transferred back",
                     group="payouts")
    p.add_argument("payout", help="the payout with the breach")
    p.add_argument("--note", required=True, help="how it was made good, e.g. the transfer's bank reference")
    p = commands.add("refund", cmd_refund, "refund a payment at the provider and reverse it in the books",
                     group="payments", json=True)
    p.add_argument("payment", help="the payment's provider ref (as 'payments list' shows it)")
    p.add_argument("--amount", type=_amount, help="how much (default: all that is left to refund)")
    p.add_argument("--reason", required=True, help="why, for the record")
    commands.add("refunds", cmd_refunds, "refunds and who asked for them", group="payments",
                 json=True).add_argument("--payment", help="only this payment's")
