"""The audit trail on the command line: ``ledgerlink audit list|export|verify``.

Dates given to --since/--until are days in the firm's time zone (--until's day is included); times are shown
in that zone too. ``verify`` exits 1 naming the first bad entry, so a scheduled task can alert on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from agent.cli.output import Commands, cli_actor, emit, table
from agent.core.errors import ConfigurationError
from agent.runtime import Runtime
from agent.state import audit

COLUMNS = ("entry", "when", "who", "action", "object", "outcome", "change")


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _window(args: argparse.Namespace, rt: Runtime) -> tuple[dt.datetime | None, dt.datetime | None]:
    zone = rt.settings.zone
    since = dt.datetime.combine(args.since, dt.time(), tzinfo=zone) if args.since else None
    open_ended = args.until is None or args.until == dt.date.max  # up to the last day there is: no bound
    until = None if open_ended else dt.datetime.combine(args.until + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return since, until


def _change(entry: audit.Entry) -> str:
    if entry.outcome != "ok" and entry.error:
        return entry.error
    return f"{audit.encode(entry.before) or '-'} -> {audit.encode(entry.after) or '-'}"


def cmd_list(args: argparse.Namespace, rt: Runtime) -> int:
    since, until = _window(args, rt)
    with rt.store.read() as conn:
        found = audit.entries(conn, actor=args.user, obj=args.object, since=since, until=until, limit=args.limit)
    zone = rt.settings.zone

    def text() -> str:
        if not found:
            return "no audit entries" + (" match" if args.user or args.object or since or until else "")
        return table(COLUMNS, ((e.seq, f"{e.at.astimezone(zone):%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.object,
                                e.outcome, _change(e)) for e in found), right={"entry"})

    emit(args, [e.__dict__ for e in found], text)
    return 0


def cmd_export(args: argparse.Namespace, rt: Runtime) -> int:
    since, until = _window(args, rt)
    count = rt.exporter.audit(args.output, actor=args.user, obj=args.object, since=since, until=until)
    print(f"wrote {count} audit entr{'y' if count == 1 else 'ies'} to {args.output}")
    return 0


def cmd_verify(args: argparse.Namespace, rt: Runtime) -> int:
    for path in args.checkpoint:
        if not path.is_file():
            raise ConfigurationError(f"--checkpoint {path}: no such file; give the checkpoint file you keep "
                                     f"elsewhere (a copy of {rt.checkpoint_file}) or the agent's log")
    verdict = audit.check(rt.store, rt.audit_seal, rt.checkpoint_file, args.checkpoint, rt.firm_checkpoints())
    if not verdict.intact:
        at = f" at entry {verdict.bad_seq}" if verdict.bad_seq is not None else ""
        print(f"audit trail broken{at}: {verdict.problem}")
        return 1
    print(f"{verdict.count} entries, chain intact")
    if verdict.keyed_from is None:
        print("not sealed: the secrets backend holds no audit keys, so whoever can write the state store could "
              "rewrite the trail unnoticed (use secrets_backend 'auto' or 'file')")
    else:
        before = f"; entries 1 to {verdict.keyed_from - 1} by the first checkpoint" if verdict.keyed_from > 1 else ""
        print(f"sealed from entry {verdict.keyed_from}{before}")
    for matched in verdict.checkpoints:
        print(f"matches {matched}")
    return 0


def cmd_checkpoint(args: argparse.Namespace, rt: Runtime) -> int:
    checkpoint = rt.checkpoints.write(force=True)
    if checkpoint is None:
        raise ConfigurationError("the audit trail is not sealed: the secrets backend holds no audit keys")
    print(f"checkpoint of entry {checkpoint.seq} appended to {rt.checkpoint_file}; copy that file somewhere the "
          "state store's holders cannot write")
    return 0


def cmd_rotate_key(args: argparse.Namespace, rt: Runtime) -> int:
    old, new = audit.rotate_key(rt.store, rt.audit_seal, cli_actor())
    rt.checkpoints.write(force=True)
    print(f"audit key {new} seals new entries from now on; {old} still verifies the entries it sealed")
    return 0


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", help="who acted: a name (alice) or kind:name (user:alice, job:reminders, cli:bob)")
    p.add_argument("--object", help="what was changed: kind:id (link:lnk_..., posting:12) or the id alone")
    p.add_argument("--since", type=_day, help="from this day (YYYY-MM-DD, the firm's time zone)")
    p.add_argument("--until", type=_day, help="up to and including this day (YYYY-MM-DD)")


def register(commands: Commands) -> None:
    p = commands.add("list", cmd_list, "audit entries, oldest first: who, when, what, the object, before/after",
                     group="audit", json=True)
    _filters(p)
    p.add_argument("--limit", type=int, help="only the newest N entries")
    p = commands.add("export", cmd_export, "the audit trail to Excel (.xlsx) or CSV", group="audit")
    _filters(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="the .xlsx or .csv file to write")
    p = commands.add("verify", cmd_verify, "check the chain, each entry's seal and the latest signed checkpoint: "
                     "names the first edited, deleted, moved or recomputed entry, or the missing range",
                     group="audit")
    p.add_argument("--checkpoint", type=Path, action="append", default=[], metavar="FILE",
                   help="also check against a checkpoint file kept elsewhere (or the agent's log); repeatable")
    commands.add("checkpoint", cmd_checkpoint, "sign a checkpoint of the trail's newest entry now (the service "
                 "writes one each minute the trail moved)", group="audit")
    commands.add("rotate-key", cmd_rotate_key, "seal new entries with a new audit key; the old key still verifies "
                 "what it sealed", group="audit")
