"""``ledgerlink init | check | mapping | secrets | run``: setting up an agent home and running the agent."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from agent.cli.output import Commands, cli_actor, emit
from agent.core.errors import ConfigurationError
from agent.engine.assistant import Suggestion, firm_source, suggest
from agent.engine.configuration import delete_secret, set_secret
from agent.engine.payments import parked_events
from agent.home.demo import init_home
from agent.home.firm import init_firm_home
from agent.home.secrets import Secrets
from agent.home.settings import load_settings
from agent.runtime import Runtime, check_plugins, connector_options
from agent.service.loop import run_service
from agent.state.lock import active_agent
from agent.state.mirror import quarantined_rows
from mappings.format import json_schema, load_mapping

ODBC_STRING = re.compile(r"^\s*(DSN|DRIVER|FILEDSN)\s*=", re.I)


def _proposal(args: argparse.Namespace, secrets: Secrets, name: str) -> Suggestion:
    """What the assistant proposes for the database ``args.url`` names, the SQLAlchemy URL or ODBC string."""
    odbc = args.url if ODBC_STRING.match(args.url) else None
    source = firm_source(url=None if odbc else args.url, odbc=odbc, password_secret=args.password_secret)
    password = secrets.get(args.password_secret) if args.password_secret else None
    return suggest(source, password, name=name, currency=args.currency, draft_only=args.draft)


def _tell(found: Suggestion, where: str, out: TextIO) -> None:
    if found.recognised is not None:
        m = found.recognised
        print(f"recognised {m.name!r}: the {m.tables} tables and {m.columns} columns its shipped mapping "
              f"({m.path.name}) reads are all in this database; wrote it to {where}", file=out)
        return
    print(f"wrote a draft mapping to {where}: {found.guesses} proposals marked '# guess:' to confirm", file=out)
    for note in found.notes:
        print(f"  note: {note}", file=out)
    print(f"next: 'ledgerlink mapping check {where}' lists each guess by line; the agent runs on the mapping "
          "once none is left", file=out)


def cmd_mapping_suggest(args: argparse.Namespace, rt: Runtime | None) -> int:
    settings = load_settings(args.home)
    found = _proposal(args, Secrets(settings.home, settings.secrets_backend), args.name or "Firm")
    if args.output is None:
        sys.stdout.write(found.text)
        _tell(found, "standard output", sys.stderr)
        return 0
    out = Path(args.output)
    if out.exists() and not args.force:
        raise ConfigurationError(f"{out} exists; choose another file with -o or add --force to replace it")
    out.write_text(found.text, encoding="utf-8")
    _tell(found, str(out), sys.stdout)
    return 0


def cmd_init(args: argparse.Namespace, rt: Runtime) -> int:
    if args.firm is not None:
        args.url = args.firm
        name = args.name or rt.settings.service_name
        found = _proposal(args, rt.secrets, name)
        for path in init_firm_home(rt.settings.home, found.text, name=name, currency=args.currency,
                                   force=args.force):
            print(f"wrote {path}")
        _tell(found, str(rt.settings.home / "mapping.yaml"), sys.stdout)
        return 0
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
    lease = active_agent(rt.store)  # PostgreSQL store: which agent of an active/standby pair is active
    if lease is not None:
        report["active_agent"] = f"{lease['holder']} (token {lease['token']}" + (
            f", lease until {lease['expires_at']:%H:%M:%S})" if lease["live"] else ", lease expired)")
    rt.connector.check()
    entities = rt.connector.discover()
    report["entities"] = {
        e: {"count": i.count, "newest_watermark": i.max_watermark, "null_watermarks": i.null_watermarks}
        for e, i in entities.items()
    }
    problems = [
        f"{e}: {i.null_watermarks} rows have a NULL watermark and are read only by a full sync"
        for e, i in entities.items()
        if i.null_watermarks
    ]
    # Every mapped read and postings statement tried against the firm database, nothing changed.
    rehearsals = rt.connector.dry_run()
    report["rehearsal"] = [{"what": r.what, "verdict": r.verdict, "message": r.message} for r in rehearsals]
    refused = [r for r in rehearsals if r.verdict == "refused"]
    problems += [f"{r.what} not checked: {r.message}" for r in rehearsals if r.verdict == "unchecked"]
    with rt.store.read() as conn:
        report["quarantined"] = quarantined_rows(conn)
    problems += [f"quarantined {q['entity']} {q['key']}" + (f" ({q['number']})" if q["number"] else "")
                 + f" {q['field'] or ''}: {q['reason']}" for q in report["quarantined"]]
    problems += _provider_problems(rt)
    report["warnings"] = problems
    report["ok"] = not refused
    skip = ("entities", "warnings", "rehearsal", "quarantined", "ok")

    def text() -> str:
        lines = [f"{k}: {v}" for k, v in report.items() if k not in skip]
        lines.append("entities:")
        for e, i in report["entities"].items():
            lines.append(f"  {e:<11} {i['count']:>9} rows   newest watermark {i['newest_watermark']}")
        lines += [f"warning: {p}" for p in problems]
        lines += [f"refused: {r.what}: {r.message}" for r in refused]
        lines.append("ok" if not refused else f"{len(refused)} mapped statement(s) refused by the firm database")
        return "\n".join(lines)

    emit(args, report, text)
    return 2 if refused else 0


def _provider_problems(rt: Runtime) -> list[str]:
    """Accounts whose provider failed at the last try (the service polls each on its own), and parked events."""
    problems = [
        f"{name}: {part['last_error']}"
        for name, part in rt.store.component_status().items()
        if name.startswith(("payments:", "reconcile:")) and part["last_error_at"]
        and (part["last_ok_at"] is None or part["last_error_at"] > part["last_ok_at"])
    ]
    parked = parked_events(rt.store)
    if parked:
        problems.append(f"{len(parked)} provider events could not be read (ledgerlink payments parked)")
    return problems


def cmd_mapping_check(args: argparse.Namespace, rt: Runtime | None) -> int:
    # The home's settings say which accounts hold client money: their payments need postings.trust.
    settings = load_settings(args.home)
    mapping = load_mapping(args.file, settings.trust_accounts)
    check_plugins(settings, mapping)
    print(
        f"{args.file}: ok ({', '.join(mapping.entities)}; postings: "
        f"{mapping.postings.kind if mapping.postings else 'none'})"
    )
    return 0


def cmd_mapping_schema(args: argparse.Namespace, rt: Runtime | None) -> int:
    text = json.dumps(json_schema(connector_options()), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_secrets_set(args: argparse.Namespace, rt: Runtime) -> int:
    value = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass(f"value for {args.name}: ")
    set_secret(rt.store, rt.secrets, cli_actor(), args.name, value)
    print(f"stored secret {args.name!r} in {rt.secrets.describe()}")
    return 0


def cmd_secrets_delete(args: argparse.Namespace, rt: Runtime) -> int:
    delete_secret(rt.store, rt.secrets, cli_actor(), args.name)
    print(f"deleted secret {args.name!r}")
    return 0


def cmd_run(args: argparse.Namespace, rt: Runtime) -> int:
    if args.demo:
        written = init_home(rt.settings.home)
        for path in written:
            print(f"demo: wrote {path}")
        if written:  # the settings were read before the demo's own ledgerlink.toml existed; nothing is built yet
            rt.settings = load_settings(rt.settings.home)
    return run_service(rt, once=args.once)


def register(commands: Commands) -> None:
    p = commands.add("init", cmd_init, "write a config, the demo mapping and the demo firm database; with --firm, "
                     "a firm's own home: one office account on the sandbox and the mapping the assistant proposes")
    p.set_defaults(makes_home=True)
    p.add_argument("--force", action="store_true", help="rewrite the config and mapping even if they exist")
    p.add_argument("--firm", metavar="URL", help="the firm database (SQLAlchemy URL without a password, or an ODBC "
                   "connection string such as DSN=name;UID=user): set up a production home for it, no demo")
    _assistant_arguments(p, url=False)
    commands.add("check", cmd_check, "validate config and mapping, connect, print per-entity counts", json=True)
    commands.add(
        "check", cmd_mapping_check, "validate a mapping file, listing every problem", group="mapping", runtime=False
    ).add_argument("file", help="the mapping file (YAML)")
    commands.add(
        "schema", cmd_mapping_schema, "print the mapping JSON Schema", group="mapping", runtime=False
    ).add_argument("-o", "--output", help="file to write (default: standard output)")
    p = commands.add("suggest", cmd_mapping_suggest, "read a firm database's catalog and propose a mapping: the "
                     "shipped one that fits it, else a draft with every guess marked", group="mapping", runtime=False)
    _assistant_arguments(p, url=True)
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p = commands.add("set", cmd_secrets_set, "store a secret (prompted, or one line on stdin)", group="secrets")
    p.add_argument("name", help="the secret's name, as a file refers to it (secret:NAME)")
    p.add_argument("--stdin", action="store_true", help="read the value from standard input")
    commands.add("delete", cmd_secrets_delete, "delete a secret", group="secrets").add_argument(
        "name", help="the secret's name"
    )
    p = commands.add("run", cmd_run, "run the agent (sync, links, payments, postings, pay page)")
    p.add_argument("--demo", action="store_true", help="set up the demo firm first if the home is empty")
    p.add_argument("--once", action="store_true", help="one pass of every job, then exit")


def _currency(text: str) -> str:
    if not re.fullmatch(r"[A-Z]{3}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO currency code such as GBP")
    return text


def _assistant_arguments(p: argparse.ArgumentParser, *, url: bool) -> None:
    if url:
        p.add_argument("--url", required=True, help="the firm database: a SQLAlchemy URL without a password, or an "
                       "ODBC connection string such as DSN=name;UID=user")
    p.add_argument("--password-secret", metavar="NAME", help="the secret holding the database password "
                   "('ledgerlink secrets set NAME' first)")
    p.add_argument("--draft", action="store_true", help="write a draft even when a shipped mapping fits")
    p.add_argument("--name", help="the firm's name, as the mapping and payers see it")
    p.add_argument("--currency", type=_currency, default="GBP", help="the statements' currency (default GBP)")
