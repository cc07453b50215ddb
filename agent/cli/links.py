"""``ledgerlink links ...`` and ``ledgerlink payments poll|reconcile``: the CLI face of the link engine."""

from __future__ import annotations

import argparse
import datetime as dt
from decimal import Decimal
from typing import Any

from agent.cli.output import Commands, cli_actor, emit, table
from agent.core.model import parse_amount
from agent.engine.links import Link, LinkRequest
from agent.engine.payments import EventPoller, parked_events
from agent.runtime import Runtime
from agent.service.loop import reconcile_payments
from connectors.providers.contract import LinkStatus

BADGES = {
    "outstanding": "[OUTSTANDING]",
    "payment_received": "[PAYMENT RECEIVED]",
    "cancelled": "[CANCELLED]",
    "expired": "[EXPIRED]",
    "failed": "[FAILED]",
    "creating": "[CREATING]",
}


def _amount(text: str) -> Decimal:
    return parse_amount(text, None, field="amount")


def _statement_amount(text: str) -> tuple[str, Decimal]:
    ref, sep, amount = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: use STATEMENT=AMOUNT, e.g. INV-1001=250.00")
    return ref.strip(), parse_amount(amount, None, field=f"amount for {ref}")


def describe(link: Link) -> str:
    lines = [
        f"{BADGES.get(link.status, link.status)} {link.id}{'  (existing link)' if link.existing else ''}",
        f"  url          {link.url or '(not yet created)'}",
        f"  amount       {link.currency} {link.amount}",
        f"  description  {link.description}",
        f"  payer        {link.payer_name or ''} <{link.payer_email or ''}>",
        f"  account      {link.account}",
        f"  expires      {link.expires_at:%Y-%m-%d %H:%M} UTC",
    ]
    if link.status_reason:
        lines.append(f"  note         {link.status_reason}")
    if link.flagged:
        lines.append(f"  flagged      {link.flagged}")
    lines += [f"  warning      {w}" for w in link.warnings]
    return "\n".join(lines)


def _data(link: Link) -> dict[str, Any]:
    return {k: getattr(link, k) for k in link.__dataclass_fields__}


def cmd_create(args: argparse.Namespace, rt: Runtime) -> int:
    request = LinkRequest(
        matter=args.matter,
        statements=dict(args.statement or []),
        amount=args.amount,
        description=args.description,
        account=args.account,
    )
    link = rt.links.create(cli_actor(), request)
    emit(args, _data(link), lambda: describe(link))
    return 0


def cmd_quick(args: argparse.Namespace, rt: Runtime) -> int:
    request = LinkRequest(
        amount=args.amount,
        name=args.name,
        email=args.email,
        invoice=args.invoice,
        due_date=args.due,
        description=args.description,
        account=args.account,
    )
    link = rt.links.create(cli_actor(), request)
    emit(args, _data(link), lambda: describe(link))
    return 0


def cmd_defaults(args: argparse.Namespace, rt: Runtime) -> int:
    d = rt.links.defaults(args.matter)
    data = {k: getattr(d, k) for k in d.__dataclass_fields__ if k not in ("statements", "existing")}
    data["existing_link"] = d.existing.id if d.existing else None

    def text() -> str:
        return "\n".join(
            [
                f"open balance         {d.currency} {d.open_balance}",
                f"pending collections  {d.currency} {d.pending_collections}",
                f"unposted payments    {d.currency} {d.unposted_payments}",
                f"unposted refunds     {d.currency} {d.unposted_reversals}",
                f"default amount       {d.currency} {d.amount}",
                f"description          {d.description}",
                f"payer                {d.payer_name or '(none)'} <{d.payer_email or 'NO EMAIL'}>",
                f"existing link        {d.existing.id + ' ' + (d.existing.url or '') if d.existing else 'none'}",
            ]
        )

    emit(args, data, text)
    return 0


def cmd_show(args: argparse.Namespace, rt: Runtime) -> int:
    link = rt.links.get(args.id)
    emit(args, _data(link), lambda: describe(link))
    return 0


def cmd_list(args: argparse.Namespace, rt: Runtime) -> int:
    found = rt.links.find(args.status, args.matter)

    def text() -> str:
        if not found:
            return "no links"
        return table(("status", "link", "amount", "payer", "invoice", "description", "expires (UTC)"),
                     ((BADGES.get(x.status, x.status), x.id, f"{x.amount} {x.currency}", x.payer_email,
                       x.invoice_number, x.description, f"{x.expires_at:%Y-%m-%d %H:%M}") for x in found),
                     right={"amount"})

    emit(args, [_data(x) for x in found], text)
    return 0


def cmd_cancel(args: argparse.Namespace, rt: Runtime) -> int:
    link = rt.links.cancel(cli_actor(), args.id)
    emit(args, _data(link), lambda: describe(link))
    return 0


def cmd_recreate(args: argparse.Namespace, rt: Runtime) -> int:
    changes = LinkRequest(statements=dict(args.statement or []), amount=args.amount, description=args.description)
    link = rt.links.recreate(cli_actor(), args.id, changes)
    emit(args, _data(link), lambda: describe(link))
    return 0


def cmd_poll(args: argparse.Namespace, rt: Runtime) -> int:
    totals = {}
    for name in rt.settings.accounts:
        result = EventPoller(rt.store, rt.provider(name), name).poll()
        totals[name] = {"events": result.events, "new": result.new}
    emit(args, totals, lambda: "\n".join(f"{a}: {t['events']} events read, {t['new']} new" for a, t in totals.items()))
    return 0


def cmd_reconcile(args: argparse.Namespace, rt: Runtime) -> int:
    """List each provider's payments and links of the period and heal what the event feed lost."""
    since = dt.datetime.combine(args.since, dt.time(), tzinfo=rt.settings.zone)
    results = reconcile_payments(rt, since)
    totals = {name: {"checked": r.checked, "applied": r.applied, "unknown_at_provider": r.unknown_at_provider,
                     "parked_retried": r.retried} for name, r in results.items()}
    emit(args, totals, lambda: "\n".join(
        f"{a}: {r.checked} checked, {r.applied} missed states applied"
        + (f", not at the provider: {', '.join(r.unknown_at_provider)}" if r.unknown_at_provider else "")
        for a, r in results.items()))
    return 1 if len(results) < len(rt.settings.accounts) else 0


def cmd_parked(args: argparse.Namespace, rt: Runtime) -> int:
    """Provider events that could not be read: parked, the feed went on; ``retry-parked`` reads them again."""
    rows = [p.__dict__ for p in parked_events(rt.store)]
    emit(args, rows, lambda: "\n".join(
        f"{p['account']:<16} {p['event_id']:<24} {p['raw_status']:<32} {p['occurred_at']:%Y-%m-%d %H:%M}  {p['error']}"
        for p in rows) or "no parked events")
    return 0


def cmd_retry_parked(args: argparse.Namespace, rt: Runtime) -> int:
    done = {name: EventPoller(rt.store, rt.provider(name), name).retry_parked() for name in rt.settings.accounts}
    emit(args, done, lambda: "\n".join(f"{a}: {len(ids)} parked events read" for a, ids in done.items()))
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


LINK_ID = "the link's id (lnk_...), as 'links list' shows it"


def _amounts(p: argparse.ArgumentParser, amount_help: str) -> None:
    p.add_argument(
        "--statement",
        type=_statement_amount,
        action="append",
        metavar="STATEMENT=AMOUNT",
        help="an amount for one statement (number or key), e.g. INV-1001=250.00; repeat for several",
    )
    p.add_argument("--amount", type=_amount, help=amount_help)
    p.add_argument("--description", help="what the payer sees on the pay page (default: the firm's name and date)")


def register(commands: Commands) -> None:
    p = commands.add("create", cmd_create, "create (or find) the link for a matter", group="links", json=True)
    p.add_argument("--matter", required=True, help="matter number or key")
    _amounts(p, "the amount to ask for (default: the balance after pending money), e.g. 250.00")
    p.add_argument("--account", help="merchant account name (default: the default account)")
    p = commands.add("quick", cmd_quick, "a quick link: no matter needed", group="links", json=True)
    p.add_argument("--amount", type=_amount, required=True, help="the amount to ask for, e.g. 120.00")
    p.add_argument("--name", required=True, help="the payer's name, as the pay page shows it")
    p.add_argument("--email", help="the payer's email address (leave out to copy the link and send it yourself)")
    p.add_argument("--invoice", help="the firm's invoice number, shown to the payer and used to find the link")
    p.add_argument("--due", type=_date, help="the invoice's due date, YYYY-MM-DD")
    p.add_argument("--description", help="what the payer sees on the pay page")
    p.add_argument("--account", help="merchant account name (default: the default account)")
    commands.add(
        "defaults", cmd_defaults, "what a new link for a matter would be", group="links", json=True
    ).add_argument("--matter", required=True, help="matter number or key")
    commands.add("show", cmd_show, "a link: URL to copy, status badge, expiry", group="links", json=True).add_argument(
        "id", help=LINK_ID
    )
    p = commands.add("list", cmd_list, "links, newest first", group="links", json=True)
    p.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in LinkStatus],
        help="only links in this state; repeat for several",
    )
    p.add_argument("--matter", help="only this matter's links (number or key)")
    commands.add(
        "cancel", cmd_cancel, "cancel an outstanding link (at the provider first)", group="links", json=True
    ).add_argument("id", help=LINK_ID)
    p = commands.add(
        "recreate",
        cmd_recreate,
        "Cancel & Create New: the same amount and description unless changed here",
        group="links",
        json=True,
    )
    p.add_argument("id", help=LINK_ID)
    _amounts(p, "a new amount (default: the old link's, if still owed)")
    commands.add("poll", cmd_poll, "read new provider events now", group="payments", json=True)
    commands.add("parked", cmd_parked, "provider events that could not be read", group="payments", json=True)
    commands.add("retry-parked", cmd_retry_parked, "read the parked events again", group="payments", json=True)
    commands.add(
        "reconcile", cmd_reconcile, "compare the providers' payments with ours and heal any gap", group="payments",
        json=True
    ).add_argument("--since", type=_date, required=True, help="from this day, YYYY-MM-DD")
