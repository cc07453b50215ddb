"""``ledgerlink init | check | mapping | secrets | run``: setting up an agent home and running the agent."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from agent.cli.output import Commands, cli_actor, emit
from agent.engine.configuration import delete_secret, set_secret
from agent.engine.payments import parked_events
from agent.home.demo import init_home
from agent.home.settings import load_settings
from agent.runtime import Runtime
from agent.service.loop import run_service
from agent.state.lock import active_agent
from agent.state.mirror import quarantined_rows
from mappings.format import json_schema, load_mapping


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
    mapping = load_mapping(args.file, load_settings(args.home).trust_accounts)
    print(
        f"{args.file}: ok ({', '.join(mapping.entities)}; postings: "
        f"{mapping.postings.kind if mapping.postings else 'none'})"
    )
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
    commands.add("init", cmd_init, "write a config, the demo mapping and the demo firm database").add_argument(
        "--force", action="store_true", help="rewrite the config and mapping even if they exist"
    )
    commands.add("check", cmd_check, "validate config and mapping, connect, print per-entity counts", json=True)
    commands.add(
        "check", cmd_mapping_check, "validate a mapping file, listing every problem", group="mapping", runtime=False
    ).add_argument("file", help="the mapping file (YAML)")
    commands.add(
        "schema", cmd_mapping_schema, "print the mapping JSON Schema", group="mapping", runtime=False
    ).add_argument("-o", "--output", help="file to write (default: standard output)")
    p = commands.add("set", cmd_secrets_set, "store a secret (prompted, or one line on stdin)", group="secrets")
    p.add_argument("name", help="the secret's name, as a file refers to it (secret:NAME)")
    p.add_argument("--stdin", action="store_true", help="read the value from standard input")
    commands.add("delete", cmd_secrets_delete, "delete a secret", group="secrets").add_argument(
        "name", help="the secret's name"
    )
    p = commands.add("run", cmd_run, "run the agent (sync, links, payments, postings, pay page)")
    p.add_argument("--demo", action="store_true", help="set up the demo firm first if the home is empty")
    p.add_argument("--once", action="store_true", help="one pass of every job, then exit")
