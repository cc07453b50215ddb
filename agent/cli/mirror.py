"""``ledgerlink sync | matters search | statements``: the firm's data as the mirror holds it."""

from __future__ import annotations

import argparse
import sys

from agent.cli.output import Commands, emit
from agent.engine.sync import Syncer
from agent.runtime import Runtime
from agent.state.mirror import get_matter, open_balance
from agent.state.owed import matter_owed, statements_owed
from agent.state.search import search_matters


class _Bar:
    """A one-line progress display on a terminal; a summary line only when output is not a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.counts: dict[str, int] = {}

    def __call__(self, entity: str, n: int) -> None:
        self.counts[entity] = self.counts.get(entity, 0) + n
        if self.tty:
            shown = "  ".join(f"{e} {c:,}" for e, c in self.counts.items())
            sys.stderr.write(f"\rsyncing  {shown}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.counts:
            sys.stderr.write("\n")


def cmd_sync(args: argparse.Namespace, rt: Runtime) -> int:
    syncer = Syncer(rt.store, rt.connector, rt.settings.sync_batch_size)
    if args.full:
        syncer.reset()
    bar = _Bar()
    result = syncer.sync(progress=bar)
    bar.done()
    if args.full or args.sweep:
        result.deleted = {e: syncer.sweep_deletes(e) for e in syncer.entities()}
    rt.store.record_ok("sync")
    emit(args, {"rows": result.rows, "deleted": result.deleted, "seconds": result.seconds}, result.summary)
    return 0


def cmd_matters_search(args: argparse.Namespace, rt: Runtime) -> int:
    with rt.store.read() as conn:
        rows = search_matters(conn, args.text)
    data = [{**r.matter.model_dump(mode="json"), "client_name": r.client_name} for r in rows]

    def text() -> str:
        if not rows:
            return f"no matter matches {args.text!r}"
        return "\n".join(
            f"{r.matter.number:<14} {r.matter.status:<7} {r.matter.name[:40]:<40} {r.client_name or ''}" for r in rows
        )

    emit(args, data, text)
    return 0


def cmd_statements(args: argparse.Namespace, rt: Runtime) -> int:
    with rt.store.read() as conn:
        matter = get_matter(conn, args.matter)
        owing = matter_owed(conn, matter.key)
        per_statement = statements_owed(conn, owing.statements)
    totals = open_balance(owing.statements)
    data = {
        "matter": matter.model_dump(mode="json"),
        "statements": [{**o.statement.model_dump(), "owed": o.figures.amount} for o in per_statement],
        "open_balance": totals,
        "owed": owing.figures.amount,
    }

    def text() -> str:
        lines = [f"{matter.number}  {matter.name}"]
        lines += [
            f"  {o.statement.number:<12} issued {o.statement.issue_date}  due {o.statement.due_date}  "
            f"amount {o.statement.amount:>12}  balance {o.statement.balance:>12}  owed {o.figures.amount:>12} "
            f"{o.statement.currency}"
            for o in per_statement
        ]
        lines += [f"  open balance {cur} {amt}" for cur, amt in totals.items()] or ["  nothing owing"]
        if owing.statements and owing.figures.amount != owing.figures.open_balance:
            lines.append(f"  owed now {owing.figures.amount} (after pending collections and money not yet posted)")
        return "\n".join(lines)

    emit(args, data, text)
    return 0


def register(commands: Commands) -> None:
    p = commands.add("sync", cmd_sync, "one incremental sync of the firm database", json=True)
    p.add_argument("--full", action="store_true", help="forget checkpoints and read everything, then sweep deletes")
    p.add_argument("--sweep", action="store_true", help="also notice rows deleted in the firm database")
    commands.add(
        "search", cmd_matters_search, "search by number, name, client or invoice number", group="matters", json=True
    ).add_argument("text", help="part of a matter number, matter name, client name or invoice number")
    commands.add("statements", cmd_statements, "open statements of a matter", json=True).add_argument(
        "--matter", required=True, help="matter number or key"
    )
