"""Send for Payment on the command line: ``links send|sends|export``, ``postings export``, ``accounts list|set``
and ``reminders run``, added by name to the groups declared in agent.cli.output."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.cli.output import Commands, cli_actor, emit
from agent.core.errors import RuleError
from agent.core.model import account_kind_word
from agent.engine.configuration import change_account
from agent.runtime import Runtime
from agent.state.statuses import POSTING_STATES
from connectors.providers.contract import LinkStatus


def column_names(text: str) -> list[str]:
    """``--columns a,b,c`` as names in order; the exporter checks each against its columns."""
    return [c.strip() for c in text.split(",") if c.strip()]


def cmd_send(args: argparse.Namespace, rt: Runtime) -> int:
    record = rt.sender.send(cli_actor(), args.id, "sms" if args.sms else "email", to=args.to)
    emit(
        args,
        record.__dict__,
        lambda: (
            f"sent link {record.link_id} by {record.channel} to {record.recipient} ({record.provider_message_id})"
            if record.ok
            else f"NOT sent link {record.link_id} by {record.channel} to {record.recipient}: {record.result}"
        ),
    )
    return 0 if record.ok else 1


def cmd_sends(args: argparse.Namespace, rt: Runtime) -> int:
    records = rt.sender.history(args.id)
    emit(
        args,
        [r.__dict__ for r in records],
        lambda: (
            "\n".join(
                f"{r.sent_at:%Y-%m-%d %H:%M} UTC  {r.channel:<5} {r.purpose:<16} {r.recipient:<30} {r.result}"
                for r in records
            )
            or f"link {args.id} was never sent"
        ),
    )
    return 0


def cmd_links_export(args: argparse.Namespace, rt: Runtime) -> int:
    count = rt.exporter.links(args.output, statuses=args.status, columns=args.columns)
    print(f"wrote {count} link(s) to {args.output}")
    return 0


def cmd_postings_export(args: argparse.Namespace, rt: Runtime) -> int:
    count = rt.exporter.postings(args.output, states=args.status, columns=args.columns)
    print(f"wrote {count} posting(s) to {args.output}")
    return 0


def _account_data(rt: Runtime) -> list[dict[str, Any]]:
    keep = (
        "name",
        "provider",
        "currency",
        "expiry_days",
        "reminder_days",
        "remind_before_expiry_days",
        "default_message",
        "disclaimer",
    )
    return [
        {k: getattr(a, k) for k in keep} | {"default": a.name == rt.settings.default_account, "kind": a.kind,
                                            "kind_word": account_kind_word(a.kind, rt.settings.firm_locale)}
        for a in rt.settings.accounts.values()
    ]


def cmd_accounts_list(args: argparse.Namespace, rt: Runtime) -> int:
    data = _account_data(rt)

    def text() -> str:
        lines = []
        for a in data:
            before = (
                f", {a['remind_before_expiry_days']} day(s) before expiry" if a["remind_before_expiry_days"] else ""
            )
            lines += [
                f"{a['name']}{' (default)' if a['default'] else ''}: {a['kind_word']} account, {a['provider']}, "
                f"{a['currency']}, "
                f"links expire after {a['expiry_days']} day(s)",
                f"  reminders        {', '.join(map(str, a['reminder_days'])) or 'none'} day(s) after sending{before}",
                f"  default message  {a['default_message']}",
                f"  disclaimer       {a['disclaimer'] or '(none)'}",
            ]
        return "\n".join(lines)

    emit(args, data, text)
    return 0


def _days(text: str) -> list[int]:
    try:
        days = sorted({int(d) for d in column_names(text)})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give days as numbers, e.g. 3,7,14") from None
    if any(d <= 0 for d in days):
        raise argparse.ArgumentTypeError("reminder days must be more than zero")
    return days


def cmd_accounts_set(args: argparse.Namespace, rt: Runtime) -> int:
    rt.settings.account(args.name)  # unknown names are refused with the configured list
    changes = {
        k: v
        for k, v in {
            "default_message": args.default_message,
            "disclaimer": args.disclaimer,
            "reminder_days": args.reminders,
            "remind_before_expiry_days": args.remind_before_expiry,
            "expiry_days": args.expiry_days,
        }.items()
        if v is not None
    }
    if not changes:
        raise RuleError(
            "nothing to change: give --default-message, --disclaimer, --reminders, "
            "--remind-before-expiry or --expiry-days"
        )
    account, kept = change_account(rt.store, rt.settings.config_path, cli_actor(), args.name, changes)
    print(
        f"account {account.name}: {', '.join(sorted(changes))} written to {rt.settings.config_path}"
        + ("" if kept else " (the file was rewritten whole; its comments were not kept)")
    )
    return 0


def cmd_reminders_run(args: argparse.Namespace, rt: Runtime) -> int:
    sent = rt.reminders.run(cli_actor())
    emit(args, {"sent": sent}, lambda: f"{sent} reminder(s) sent")
    return 0


def register(commands: Commands) -> None:
    p = commands.add(
        "send", cmd_send, "send an outstanding link to the payer by email or SMS (recorded)", group="links", json=True
    )
    p.add_argument("id", help="the link's id (lnk_...)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--email", action="store_true", help="by email, to the payer's address")
    how.add_argument("--sms", action="store_true", help="by text, to the payer's phone in the matter system")
    p.add_argument("--to", help="another email address or phone number")
    commands.add(
        "sends", cmd_sends, "every send of a link: when, to whom, channel, result", group="links", json=True
    ).add_argument("id", help="the link's id (lnk_...)")
    p = commands.add("export", cmd_links_export, "Sent Pages to Excel (.xlsx) or CSV", group="links")
    p.add_argument("--status", action="append", choices=[s.value for s in LinkStatus], help="repeat for several")
    p.add_argument("--columns", type=column_names, help="columns in order, e.g. invoice_number,amount,status")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .xlsx or .csv file to write")

    p = commands.add("export", cmd_postings_export, "postings to Excel (.xlsx) or CSV", group="postings")
    p.add_argument("--status", action="append", choices=POSTING_STATES, help="repeat for several")
    p.add_argument("--columns", type=column_names, help="columns in order, e.g. reference,amount,state")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .xlsx or .csv file to write")

    commands.add(
        "list",
        cmd_accounts_list,
        "accounts with message, disclaimer, reminders and expiry",
        group="accounts",
        json=True,
    )
    p = commands.add(
        "set", cmd_accounts_set, "change an account's settings in ledgerlink.toml (admin)", group="accounts"
    )
    p.add_argument("name", help="the account's name, as 'accounts list' shows it")
    p.add_argument(
        "--default-message",
        help="email text; {amount} {description} {name} {invoice} {url} {service} {expires} are filled in",
    )
    p.add_argument("--disclaimer", help="footer of every email (and the pay page)")
    p.add_argument("--reminders", type=_days, help="days after sending, e.g. 3,7,14 ('' for none)")
    p.add_argument("--remind-before-expiry", type=int, metavar="DAYS", help="one reminder DAYS before expiry; 0: off")
    p.add_argument("--expiry-days", type=int, help="days before a new link expires")

    commands.add(
        "run",
        cmd_reminders_run,
        "send the reminders due now (the service does this on its own)",
        group="reminders",
        json=True,
    )
