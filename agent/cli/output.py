"""What every command module shares: the command table it adds its commands to, and how results are printed.

Command groups (``links``, ``payments``, ``postings`` ...) are declared once here, so a module adds its commands
to a group by name, whatever order the modules are registered in.
"""

from __future__ import annotations

import argparse
import getpass
import io
import json
import shutil
from collections.abc import Callable, Collection, Iterable, Sequence
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.core.model import Actor

GROUPS = {
    "matters": "matters in the mirror",
    "mapping": "mapping files",
    "secrets": "secrets in the keyring",
    "links": "payment links",
    "payments": "payments learnt from providers, and their refunds",
    "payouts": "payouts to the firm's bank: fees, deposits and client money",
    "postings": "Manage Postings: payments written back into the matter system",
    "bulk": "bulk upload (CSV or TXT)",
    "accounts": "merchant accounts and their Send for Payment settings",
    "reminders": "smart reminders",
    "mandates": "Direct Debit mandates",
    "collections": "Direct Debit collections",
    "plans": "payment plans: a debt paid in Direct Debit instalments",
    "api": "the local HTTP API",
    "users": "staff who sign in to the console, and their roles",
    "service": "install and control the agent as a system service",
    "audit": "the audit trail: who changed money or configuration, and when",
}

Handler = Callable[[argparse.Namespace, Any], int]


def cli_actor() -> Actor:
    """Who acts through a command, for the audit trail: the operating-system user running it."""
    return Actor("cli", getpass.getuser())


class Commands:
    """The ``ledgerlink`` subcommands: top-level commands and the groups of ``GROUPS``."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._top = parser.add_subparsers(dest="command", required=True)
        self._groups: dict[str, Any] = {}

    def add(
        self,
        name: str,
        handler: Handler,
        help: str,
        *,
        group: str | None = None,
        json: bool = False,
        runtime: bool = True,
    ) -> argparse.ArgumentParser:
        """Add a command; ``runtime=False`` for one that must work before any agent home exists."""
        parent = self._top if group is None else self._group(group)
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler, needs_runtime=runtime)
        if json:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    def _group(self, name: str) -> Any:
        if name not in self._groups:
            p = self._top.add_parser(name, help=GROUPS[name], description=GROUPS[name])
            self._groups[name] = p.add_subparsers(dest="sub", required=True)
        return self._groups[name]


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, right: Collection[str] = ()) -> str:
    """A listing a person reads, through Rich: a header, aligned columns, money right-aligned, "-" for nothing."""
    grid = Table(box=None, pad_edge=False, show_header=True, header_style="bold", show_edge=False)
    for name in columns:
        grid.add_column(name, justify="right" if name in right else "left", overflow="fold")
    for row in rows:
        grid.add_row(*(escape("-" if cell is None or cell == "" else str(cell)) for cell in row))
    out = io.StringIO()
    Console(file=out, width=max(120, shutil.get_terminal_size().columns), no_color=True,
            highlight=False).print(grid)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip().splitlines())


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    """Print JSON when --json was given, else the human text."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=json_default))
    else:
        print(text())


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # money stays exact in JSON: a string, never a float
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)
