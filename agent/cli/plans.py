"""``ledgerlink plans ...``: the CLI face of agent.engine.plans (a debt paid in Direct Debit instalments), and
``plans export`` through the shared exporter (agent.engine.export), beside ``links export``."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from agent.cli.output import Commands, cli_actor, emit
from agent.cli.sending import column_names
from agent.core.model import to_decimal
from agent.engine.plan_reminders import PlanReminder
from agent.engine.plans import FREQUENCIES, PlanRequest, PlanView
from agent.runtime import Runtime
from agent.state.statuses import PlanState


def _data(view: PlanView) -> dict[str, Any]:
    return dataclasses.asdict(view)


def describe(p: PlanView, reminders: list[PlanReminder] | None = None) -> str:
    head = f"[{p.status.upper()}] {p.id or 'preview'}  matter {p.matter_number}  payer {p.payer_name or '-'}"
    lines = [
        head,
        f"  total        {p.currency} {p.total}, {p.frequency}, {len(p.instalments)} instalments",
        f"  statements   {', '.join(p.statements)}   account {p.account}",
        f"  still owed   {p.currency} {p.owed}" + ("" if p.id else " (what the plan may collect at most)"),
    ]
    if p.needs_mandate:
        lines.append(f"  mandate      awaiting the payer: send them {p.setup_url}" if p.setup_url else
                     "  mandate      none active: making the plan asks the payer to set one up, showing these dates")
    if p.note:
        lines.append(f"  note         {p.note}")
    for i in p.instalments:
        tail = f"  {i.collection_id}" if i.collection_id else ""
        note = f"  ({i.note})" if i.note else ""
        lines.append(f"  {i.seq:>3}. {i.due_on}  {p.currency} {i.amount:>10}  {i.state}{tail}{note}")
    if reminders is not None:
        lines.append("  emails to the payer" if reminders else "  emails to the payer: none yet")
        lines += [f"  {r.seq:>3}. {r.step:<7} {r.status:<8}{_reminded(r)}" for r in reminders]
    return "\n".join(lines)


def _reminded(r: PlanReminder) -> str:
    """When and to whom an email went (a failed one with the relay's answer); nothing for a skipped step."""
    if r.sent_at is None:
        return ""
    return f" {r.sent_at:%Y-%m-%d %H:%M} UTC  to {r.recipient}" + ("" if r.result == "ok" else f"  {r.result}")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write it as YYYY-MM-DD") from None


def _request(args: argparse.Namespace) -> PlanRequest:
    return PlanRequest(args.matter, count=args.instalments, amount=args.amount, total=args.total,
                       frequency=args.frequency, first=args.first, statements=tuple(args.statement or ()),
                       set_up_mandate=args.set_up_mandate)


def cmd_preview(args: argparse.Namespace, rt: Runtime) -> int:
    view = rt.plans.preview(_request(args))
    emit(args, _data(view), lambda: describe(view))
    return 0


def cmd_create(args: argparse.Namespace, rt: Runtime) -> int:
    view = rt.plans.create(cli_actor(), _request(args))
    emit(args, _data(view), lambda: describe(view))
    return 0


def cmd_list(args: argparse.Namespace, rt: Runtime) -> int:
    found = rt.plans.list(args.matter)

    def text() -> str:
        if not found:
            return "no payment plans"
        return "\n".join(
            f"{p.id}  {p.status:<16} matter {p.matter_number:<14} {p.currency} {p.total:>10}  {p.frequency:<11} "
            f"{p.paid}/{len(p.instalments)} paid"
            for p in found)

    emit(args, [_data(p) for p in found], text)
    return 0


def cmd_show(args: argparse.Namespace, rt: Runtime) -> int:
    view = rt.plans.get(args.id)
    sent = rt.plan_reminders.history(args.id)
    emit(args, {**_data(view), "reminders": [dataclasses.asdict(r) for r in sent]}, lambda: describe(view, sent))
    return 0


def cmd_cancel(args: argparse.Namespace, rt: Runtime) -> int:
    view = rt.plans.cancel(cli_actor(), args.id, args.reason)
    emit(args, _data(view), lambda: describe(view))
    return 0


def cmd_run(args: argparse.Namespace, rt: Runtime) -> int:
    made = rt.plans.submit_due()
    emit(args, {"submitted": made}, lambda: f"{made} instalment(s) submitted as Direct Debit collections")
    return 0


def cmd_export(args: argparse.Namespace, rt: Runtime) -> int:
    count = rt.exporter.plans(args.output, statuses=args.status, columns=args.columns)
    print(f"wrote {count} instalment(s) to {args.output}")
    return 0


def _terms(p: argparse.ArgumentParser) -> None:
    p.add_argument("--matter", required=True, help="matter number or key")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--instalments", type=int, metavar="N", help="how many instalments (2 to 60)")
    size.add_argument("--amount", type=lambda text: to_decimal(text, field="amount"), metavar="EACH",
                   help="each instalment's amount, e.g. 100.00 (the last takes what is left)")
    p.add_argument("--total", type=lambda text: to_decimal(text, field="total"),
                   help="the plan's total (default: what the statements owe)")
    p.add_argument("--frequency", choices=FREQUENCIES, default="monthly", help="how often (default: monthly)")
    p.add_argument("--first", type=_date, metavar="YYYY-MM-DD", help="the first instalment's date "
                   "(default: five days from today)")
    p.add_argument("--statement", action="append", metavar="NUMBER",
                   help="only this statement (repeat for more; default: the matter's open statements)")
    p.add_argument("--set-up-mandate", action="store_true",
                   help="if the payer has no active Direct Debit mandate, ask them for one with the plan: the plan "
                   "waits for it, and the link to send them (a page showing the instalments) is printed")


def register(commands: Commands) -> None:
    _terms(commands.add("preview", cmd_preview, "the instalments a plan would make, changing nothing",
                        group="plans", json=True))
    _terms(commands.add("create", cmd_create, "pay a matter's debt in Direct Debit instalments",
                        group="plans", json=True))
    commands.add("list", cmd_list, "payment plans, newest first", group="plans", json=True).add_argument(
        "--matter", help="matter number or key")
    commands.add("show", cmd_show, "one plan with its instalments and the emails about them", group="plans",
                 json=True).add_argument(
        "id", help="the plan's id (plan_...)")
    p = commands.add("cancel", cmd_cancel, "cancel the instalments still to come", group="plans", json=True)
    p.add_argument("id", help="the plan's id (plan_...)")
    p.add_argument("--reason", default="cancelled by staff", help="saved with the plan and in the audit trail")
    p = commands.add("export", cmd_export, "plans instalment by instalment to Excel (.xlsx) or CSV", group="plans")
    p.add_argument("--status", action="append", choices=[s.value for s in PlanState], help="repeat for several")
    p.add_argument("--columns", type=column_names, help="columns in order, e.g. plan_id,seq,due_on,amount,state")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .xlsx or .csv file to write")
    commands.add("run", cmd_run, "submit the instalments now due (the service does this on its own)",
                 group="plans", json=True)
