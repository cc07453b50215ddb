"""The ``ledgerlink`` command. Exit codes: 0 ok, 2 configuration error, 1 anything else. ``--json`` on listings."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import CONFIG_NAME, default_home
from agent.errors import ConfigurationError, LedgerlinkError
from agent.logs import setup_logging
from agent.mapping import json_schema, load_mapping
from agent.runtime import Runtime
from agent.secrets import scrub

Handler = Callable[[argparse.Namespace, Runtime], int]
log = logging.getLogger("ledgerlink.cli")

DEFAULT_CONFIG = """\
# Ledgerlink agent settings. Environment variables LEDGERLINK_<NAME> override these (nested: __).
mapping = "mapping.yaml"
firm_timezone = "Europe/London"
service_name = "Demo Legal LLP"
# secrets_backend = "auto"   # auto | file (headless servers) | env (containers)

[accounts.operating]
provider = "sandbox"
currency = "GBP"
expiry_days = 7
disclaimer = "Demo Legal LLP is authorised and regulated by the Solicitors Regulation Authority (demo)."

[accounts.trust]
provider = "sandbox"
currency = "GBP"
expiry_days = 14
"""


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    """Print JSON when --json was given, else the human text."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=_json_default))
    else:
        print(text())


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # money stays exact in JSON: a string, never a float
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


# ------------------------------------------------------------------------------------------------ commands


def init_home(home: Path, *, force: bool = False) -> list[Path]:
    """Write config, demo mapping and demo firm database into ``home``; existing files are kept unless force."""
    from agent.demo import create_demo_firm

    home.mkdir(parents=True, exist_ok=True)
    written = []
    config = home / CONFIG_NAME
    if force or not config.exists():
        config.write_text(DEFAULT_CONFIG, encoding="utf-8")
        written.append(config)
    mapping = home / "mapping.yaml"
    if force or not mapping.exists():
        with resources.as_file(resources.files("mappings") / "demo.yaml") as src:
            shutil.copyfile(src, mapping)
        written.append(mapping)
    firm = home / "demo-firm.db"
    if not firm.exists():
        create_demo_firm(firm)
        written.append(firm)
    return written


def cmd_init(args: argparse.Namespace, rt: Runtime) -> int:
    written = init_home(rt.settings.home, force=args.force)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"{rt.settings.home} is already set up (use --force to rewrite config and mapping)")
    return 0


def cmd_check(args: argparse.Namespace, rt: Runtime) -> int:
    report: dict[str, Any] = {"home": str(rt.settings.home), "config": str(rt.settings.config_path)}
    report["mapping"] = str(rt.settings.mapping_path)
    report["secrets_backend"] = rt.secrets.describe()
    report["state_store"] = rt.store.engine.url.render_as_string(hide_password=True)
    report["state_revision"] = rt.store.revision()
    rt.connector.check()
    entities = rt.connector.discover()
    report["entities"] = {
        e: {"count": i.count, "newest_watermark": i.max_watermark, "null_watermarks": i.null_watermarks}
        for e, i in entities.items()
    }
    problems = [f"{e}: {i.null_watermarks} rows have a NULL watermark and are read only by a full sync"
                for e, i in entities.items() if i.null_watermarks]
    report["warnings"] = problems

    def text() -> str:
        lines = [f"{k}: {v}" for k, v in report.items() if k not in ("entities", "warnings")]
        lines.append("entities:")
        for e, i in report["entities"].items():
            lines.append(f"  {e:<11} {i['count']:>9} rows   newest watermark {i['newest_watermark']}")
        lines += [f"warning: {p}" for p in problems]
        lines.append("ok")
        return "\n".join(lines)

    emit(args, report, text)
    return 0


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
    from agent.sync import Syncer

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
    from agent.debts import search_matters

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
    from agent.debts import get_matter, open_balance, open_statements

    with rt.store.read() as conn:
        matter = get_matter(conn, args.matter)
        statements = open_statements(conn, matter.key)
    totals = open_balance(statements)
    data = {"matter": matter.model_dump(mode="json"), "statements": [s.model_dump() for s in statements],
            "open_balance": totals}

    def text() -> str:
        lines = [f"{matter.number}  {matter.name}"]
        lines += [f"  {s.number:<12} issued {s.issue_date}  due {s.due_date}  amount {s.amount:>12}  "
                  f"balance {s.balance:>12} {s.currency}" for s in statements]
        lines += [f"  open balance {cur} {amt}" for cur, amt in totals.items()] or ["  nothing owing"]
        return "\n".join(lines)

    emit(args, data, text)
    return 0


def cmd_mapping_check(args: argparse.Namespace, rt: Runtime | None) -> int:
    mapping = load_mapping(args.file)
    print(f"{args.file}: ok ({', '.join(mapping.entities)}; postings: "
          f"{mapping.postings.kind if mapping.postings else 'none'})")
    return 0


def cmd_mapping_schema(args: argparse.Namespace, rt: Runtime | None) -> int:
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_secrets_set(args: argparse.Namespace, rt: Runtime) -> int:
    value = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass(f"value for {args.name}: ")
    if not value:
        raise ConfigurationError("empty secret value; nothing stored")
    rt.secrets.set(args.name, value)
    print(f"stored secret {args.name!r} in {rt.secrets.describe()}")
    return 0


def cmd_secrets_delete(args: argparse.Namespace, rt: Runtime) -> int:
    rt.secrets.delete(args.name)
    print(f"deleted secret {args.name!r}")
    return 0


def cmd_run(args: argparse.Namespace, rt: Runtime) -> int:
    from agent.service import run_service

    if args.demo:
        for path in init_home(rt.settings.home):
            print(f"demo: wrote {path}")
    return run_service(rt, once=args.once)


# ------------------------------------------------------------------------------------------------ parser

NO_RUNTIME = {cmd_mapping_check, cmd_mapping_schema}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledgerlink", description="Ledgerlink payment-link sync agent")
    parser.add_argument("--version", action="version", version=f"ledgerlink {__version__}")
    parser.add_argument("--home", type=Path, help=f"agent folder (default $LEDGERLINK_HOME or {default_home()})")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[..., int], help: str, parent: Any = sub, json_flag: bool = False) -> Any:
        p = parent.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    add("init", cmd_init, "write a config, the demo mapping and the demo firm database").add_argument(
        "--force", action="store_true")
    add("check", cmd_check, "validate config and mapping, connect, print per-entity counts", json_flag=True)
    p = add("sync", cmd_sync, "one incremental sync of the firm database", json_flag=True)
    p.add_argument("--full", action="store_true", help="forget checkpoints and read everything, then sweep deletes")
    p.add_argument("--sweep", action="store_true", help="also notice rows deleted in the firm database")
    matters = add("matters", None, "matters in the mirror").add_subparsers(dest="sub", required=True)
    add("search", cmd_matters_search, "search by number, name or client", matters, True).add_argument("text")
    add("statements", cmd_statements, "open statements of a matter", json_flag=True).add_argument(
        "--matter", required=True, help="matter number or key")
    mapping = add("mapping", None, "mapping files").add_subparsers(dest="sub", required=True)
    add("check", cmd_mapping_check, "validate a mapping file, listing every problem", mapping).add_argument("file")
    add("schema", cmd_mapping_schema, "print the mapping JSON Schema", mapping).add_argument("-o", "--output")
    secrets = add("secrets", None, "secrets in the keyring").add_subparsers(dest="sub", required=True)
    p = add("set", cmd_secrets_set, "store a secret (prompted, or one line on stdin)", secrets)
    p.add_argument("name")
    p.add_argument("--stdin", action="store_true", help="read the value from standard input")
    add("delete", cmd_secrets_delete, "delete a secret", secrets).add_argument("name")
    p = add("run", cmd_run, "run the agent (sync, links, payments, postings, pay page)")
    p.add_argument("--demo", action="store_true", help="set up the demo firm first if the home is empty")
    p.add_argument("--once", action="store_true", help="one pass of every job, then exit")
    for register in _extensions():
        register(sub, add)
    return parser


def _extensions() -> list[Callable[..., None]]:
    """Command groups that live beside the code they drive (links, postings, ...)."""
    from agent import commands

    return commands.REGISTRARS


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose)
    rt: Runtime | None = None
    try:
        if args.handler in NO_RUNTIME:
            return args.handler(args, None)
        rt = Runtime.for_home(args.home)
        return args.handler(args, rt)
    except ConfigurationError as exc:
        print(f"configuration error: {scrub(str(exc))}", file=sys.stderr)
        return 2
    except LedgerlinkError as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if rt is not None:
            rt.close()


if __name__ == "__main__":
    sys.exit(main())
