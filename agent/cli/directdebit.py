"""``ledgerlink mandates ...`` and ``ledgerlink collections ...``: the CLI face of agent.engine.directdebit."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from agent.cli.output import Commands, cli_actor, emit
from agent.core.model import to_decimal
from agent.engine import directdebit as dd
from agent.runtime import Runtime
from agent.state.statuses import COLLECTION_PENDING


def _data(view: Any) -> dict[str, Any]:
    return dataclasses.asdict(view)


def describe(c: dd.CollectionView) -> str:
    lines = [
        f"[{c.status.upper()}] {c.id}  ({c.kind}{'' if c.current else ', no longer current'})",
        f"  amount       {c.currency} {c.amount}",
        f"  charge date  {c.charge_date or 'earliest possible'}",
        f"  statement    {c.statement_key}   matter {c.matter_key}   payer {c.payer_key}",
        f"  account      {c.account}   provider ref {c.provider_ref or '(none yet)'}",
    ]
    if c.note:
        lines.append(f"  note         {c.note}")
    return "\n".join(lines)


def cmd_mandates_list(args: argparse.Namespace, rt: Runtime) -> int:
    found = rt.directdebit.list_mandates(args.payer)

    def text() -> str:
        if not found:
            return "no mandates"
        return "\n".join(
            f"{m.id}  payer {m.payer_key:<10} {m.status:<26} {m.account:<10} {m.provider_ref or '-':<16} {m.url or ''}"
            for m in found
        )

    emit(args, [_data(m) for m in found], text)
    return 0


def cmd_mandates_setup(args: argparse.Namespace, rt: Runtime) -> int:
    m = rt.directdebit.setup_mandate(cli_actor(), args.payer, args.account)
    note = " (existing mandate)" if m.existing else ""
    emit(
        args,
        _data(m),
        lambda: f"{m.id} {m.status}{note}\nsend the payer this link to set up the Direct Debit:\n{m.url}",
    )
    return 0


def cmd_mandates_cancel(args: argparse.Namespace, rt: Runtime) -> int:
    m = rt.directdebit.cancel_mandate(cli_actor(), args.id, args.reason)
    emit(args, _data(m), lambda: f"{m.id} {m.status}: the provider cancels its collections not yet at the bank")
    return 0


def cmd_mandates_refresh(args: argparse.Namespace, rt: Runtime) -> int:
    changed = rt.directdebit.refresh_mandates()
    emit(args, {"changed": changed}, lambda: f"{changed} mandate(s) changed at the provider")
    return 0


def cmd_list(args: argparse.Namespace, rt: Runtime) -> int:
    found = rt.directdebit.list_collections(args.matter, pending=args.pending)

    def text() -> str:
        if not found:
            return "no collections"
        lines = [
            f"{c.id}  {c.kind:<6} {c.status:<26} {c.currency} {c.amount:>10}  on {c.charge_date or '-'}  "
            f"statement {c.statement_key}  matter {c.matter_key}"
            for c in found
        ]
        pending = sum(c.amount for c in found if c.status in COLLECTION_PENDING)
        return "\n".join([*lines, f"pending (submitted, not yet paid): {pending}"])

    emit(args, [_data(c) for c in found], text)
    return 0


def cmd_show(args: argparse.Namespace, rt: Runtime) -> int:
    c = rt.directdebit.get_collection(args.id)
    emit(args, _data(c), lambda: describe(c))
    return 0


def cmd_cancel(args: argparse.Namespace, rt: Runtime) -> int:
    c = rt.directdebit.cancel_collection(cli_actor(), args.id)
    emit(args, _data(c), lambda: describe(c))
    return 0


def cmd_schedule(args: argparse.Namespace, rt: Runtime) -> int:
    result = rt.directdebit.schedule_collections()
    emit(
        args,
        dataclasses.asdict(result),
        lambda: (
            f"{len(result.created)} created, {len(result.recomputed)} recomputed, "
            f"{len(result.kept)} kept (already at the bank)"
        ),
    )
    return 0


def cmd_manual(args: argparse.Namespace, rt: Runtime) -> int:
    c = rt.directdebit.request_manual(cli_actor(), args.statement, args.amount)
    emit(args, _data(c), lambda: describe(c))
    return 0


def register(commands: Commands) -> None:
    commands.add(
        "list", cmd_mandates_list, "mandates and their provider status", group="mandates", json=True
    ).add_argument("--payer", help="only this payer's")
    p = commands.add(
        "setup",
        cmd_mandates_setup,
        "send a payer the provider's mandate setup flow; prints its link",
        group="mandates",
        json=True,
    )
    p.add_argument("--payer", required=True, help="payer key")
    p.add_argument("--account", help="merchant account name")
    p = commands.add(
        "cancel",
        cmd_mandates_cancel,
        "end a mandate at the provider, or its setup if the payer has not finished it",
        group="mandates",
        json=True,
    )
    p.add_argument("id", help="the mandate's id (mdt_...)")
    p.add_argument("--reason", default="cancelled by staff", help="for the audit trail")
    commands.add(
        "refresh", cmd_mandates_refresh, "ask the provider for mandates not yet settled", group="mandates", json=True
    )
    p = commands.add("list", cmd_list, "collections, newest first", group="collections", json=True)
    p.add_argument("--matter", help="matter number or key")
    p.add_argument("--pending", action="store_true", help="only those submitted and not yet paid")
    commands.add("show", cmd_show, "one collection", group="collections", json=True).add_argument(
        "id", help="the collection's id (col_...)"
    )
    commands.add(
        "cancel", cmd_cancel, "cancel a collection while the provider allows it", group="collections", json=True
    ).add_argument("id", help="the collection's id (col_...)")
    commands.add(
        "schedule", cmd_schedule, "schedule and re-compute automatic collections now", group="collections", json=True
    )
    p = commands.add(
        "manual",
        cmd_manual,
        "the payer's own amount before the due date (replaces the automatic one)",
        group="collections",
        json=True,
    )
    p.add_argument("--statement", required=True, help="statement number or key")
    p.add_argument(
        "--amount",
        required=True,
        type=lambda text: to_decimal(text, field="amount"),
        help="the payer's amount, e.g. 60.00: at most what is payable",
    )
