"""``ledgerlink doctor``: the one command an IT admin runs when something is wrong.

Each line is ok, warn or fail with what to do about it: settings and mapping valid, firm database reachable with
its row counts, every provider account reachable with its credentials, the mail relay, the state store (who holds
its lock, migrations, disk space), who may sign in (and any shared token of an earlier release still in use), the
service, and the last error of each job. A check that cannot run says so
and the others still run.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.api.auth import SHARED_TOKENS, shared_label
from agent.cli.output import Commands, emit
from agent.core import system
from agent.core.errors import LedgerlinkError
from agent.core.scrub import scrub
from agent.engine.sending import DeliveryFailed, check_relay
from agent.runtime import Runtime
from agent.state import audit, users
from agent.state.accounts import kind_changes
from agent.state.anchor import latest
from agent.state.lock import AlreadyRunning, active_agent

Verdict = Literal["ok", "warn", "fail"]
LOW_DISK = 500 * 1024 * 1024  # below this free on the state store's disk, say so before a write fails


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    what: str
    detail: str
    fix: str = ""


Check = Callable[[Runtime], Iterator[Finding]]


def _firm(rt: Runtime) -> Iterator[Finding]:
    rt.connector.check()
    counts = ", ".join(f"{e} {i.count:,}" for e, i in rt.connector.discover().items())
    yield Finding("ok", "firm database", f"reachable: {counts}")
    refused = [r for r in rt.connector.dry_run() if r.verdict == "refused"]
    for r in refused:
        yield Finding("fail", f"mapping {r.what}", r.message or "refused", "fix the mapping so the firm database "
                      "accepts it")


def _providers(rt: Runtime) -> Iterator[Finding]:
    for name, account in rt.settings.accounts.items():
        try:
            rt.provider(name).events(None, limit=1)
        except LedgerlinkError as exc:
            yield Finding("fail", f"account {name}", f"{account.provider}: {exc}",
                          f"check the account's credentials ('ledgerlink secrets set {account.credentials or '...'}'"
                          " without the secret: prefix) and that the provider is reachable")
            continue
        yield Finding("ok", f"account {name}", f"{account.provider} answers; credentials accepted")


def _mail(rt: Runtime) -> Iterator[Finding]:
    if not rt.settings.smtp.from_address:
        yield Finding("warn", "email", "not set up: links cannot be emailed and no reminders go out",
                      "set [smtp] host, port, security, user, password_secret and from_address in ledgerlink.toml")
        return
    try:
        check_relay(rt.settings.smtp, rt.secrets)
    except DeliveryFailed as exc:
        yield Finding("fail", "email", str(exc), "check [smtp] in ledgerlink.toml and the relay's password secret")
        return
    yield Finding("ok", "email", f"relay {rt.settings.smtp.host}:{rt.settings.smtp.port} accepts our login")


def _store(rt: Runtime) -> Iterator[Finding]:
    store = rt.store
    current, head = store.revision(), store.head()
    where = store.engine.url.render_as_string(hide_password=True)
    yield (Finding("ok", "state store", f"{where} at migration {current}") if current == head else
           Finding("fail", "state store", f"at migration {current}, this agent needs {head}",
                   "start the agent once (it upgrades the store) or install the matching release"))
    holder = active_agent(store)
    if holder is not None:
        yield Finding("ok", "store lock", f"held by {holder['holder']} (fencing token {holder['token']})")
    else:
        lock = store.instance_lock()
        try:
            lock.acquire()
        except AlreadyRunning as exc:
            yield Finding("ok", "store lock", f"the agent is running ({exc.holder or 'its host and pid unknown'})")
        else:
            lock.release()
            yield Finding("warn", "store lock", "no agent is running on this state store",
                          "start it: 'ledgerlink service start' (or 'ledgerlink run')")
    database = store.engine.url.database
    folder = Path(database).parent if store.engine.url.get_backend_name() == "sqlite" and database else rt.settings.home
    free = shutil.disk_usage(folder).free
    yield (Finding("ok", "disk", f"{free / 2**30:.1f} GiB free for {folder}") if free > LOW_DISK else
           Finding("warn", "disk", f"only {free / 2**20:.0f} MiB free for {folder}", "free some space"))


def _staff(rt: Runtime) -> Iterator[Finding]:
    people = [u for u in users.listed(rt.store) if u.disabled_at is None]
    admins = sum(u.role == "admin" for u in people)
    yield (Finding("ok", "staff", f"{len(people)} may sign in, {admins} of them admin") if admins else
           Finding("warn", "staff", "no admin may sign in yet",
                   "'ledgerlink api login-link' (makes the admin 'admin' on a new home) or 'ledgerlink users add "
                   "NAME --role admin'"))
    shared = {shared_label(secret) for secret in SHARED_TOKENS}
    for token in users.tokens(rt.store):
        if token["label"] in shared and token["revoked_at"] is None:
            yield Finding("warn", "api tokens", f"token {token['id']} of {token['user_name']!r} is the "
                          f"{token['label']}, which every client of that release shared",
                          f"give each client its own ('ledgerlink api token --user NAME'), then 'ledgerlink api "
                          f"token --revoke {token['id']}'")


def _audit(rt: Runtime) -> Iterator[Finding]:
    keys = rt.audit_seal.keys if rt.store else None  # opening the store makes the keys on a new or upgraded home
    if keys is None:
        yield Finding("warn", "audit trail", "not sealed: the secrets backend holds no audit keys, so whoever can "
                      "write the state store could rewrite the trail unnoticed",
                      "use secrets_backend 'auto' or 'file' (the keys are made at the next start)")
        return
    before = f" (entries 1 to {keys.keyed_from - 1} sealed by the first checkpoint)" if keys.keyed_from > 1 else ""
    yield Finding("ok", "audit trail", f"keyed from entry {keys.keyed_from}{before}, sealed with key {keys.current}")
    found = latest(rt.checkpoint_file, keys) if rt.checkpoint_file.exists() else None
    if found is None or found.forged or found.checkpoint is None:
        yield Finding("fail", "audit checkpoints", found.forged if found and found.forged else
                      f"{rt.checkpoint_file} is missing or holds no checkpoint", "run 'ledgerlink audit verify'")
        return
    newest, cp = audit.newest_seq(rt.store), found.checkpoint
    waiting = f"; entries {cp.seq + 1} to {newest} are not checkpointed yet" if newest > cp.seq else ""
    yield Finding("ok", "audit checkpoints", f"latest: entry {cp.seq} at {cp.at:%Y-%m-%d %H:%M} UTC in "
                  f"{rt.checkpoint_file}{waiting}; copy it somewhere the state store's holders cannot write")
    for copy in rt.firm_checkpoints():
        if copy.forged:
            yield Finding("fail", "audit copy", copy.forged, "run 'ledgerlink audit verify'")
        elif copy.checkpoint is None:
            yield Finding("warn", "audit copy", f"{copy.source} holds no checkpoint yet",
                          "'ledgerlink audit checkpoint' writes one now; the service writes one each minute")
        else:
            behind = f" (the home's file is at entry {cp.seq})" if copy.checkpoint.seq < cp.seq else ""
            yield Finding("ok", "audit copy", f"latest: entry {copy.checkpoint.seq} at "
                          f"{copy.checkpoint.at:%Y-%m-%d %H:%M} UTC in {copy.source}{behind}")


def _service(rt: Runtime) -> Iterator[Finding]:
    if system.current().service_manager() != "systemd" or shutil.which("systemctl") is None:
        yield Finding("warn", "service", "not checked on this system (no systemctl)",
                      "see installer/README.md for this system's service manager")
        return
    state = subprocess.run(["systemctl", "is-active", "ledgerlink.service"], capture_output=True, text=True)
    answer = state.stdout.strip()
    if not answer:  # systemctl itself could not ask (a container without systemd)
        yield Finding("warn", "service", f"systemd cannot be asked here: {state.stderr.strip().splitlines()[0]}",
                      "run the agent under this machine's own supervisor, or 'ledgerlink run'")
        return
    yield (Finding("ok", "service", "ledgerlink.service is active") if answer == "active" else
           Finding("warn", "service", f"ledgerlink.service is {answer or 'not installed'}",
                   "'ledgerlink service install' then 'ledgerlink service start'"))


def _jobs(rt: Runtime) -> Iterator[Finding]:
    for name, part in sorted(rt.store.component_status().items()):
        failing = part["last_error_at"] and (part["last_ok_at"] is None or part["last_error_at"] > part["last_ok_at"])
        if failing:
            yield Finding("warn", f"job {name}", f"last error at {part['last_error_at']:%Y-%m-%d %H:%M} UTC: "
                          f"{part['last_error']}", "see the log; the job retries on its own")


def _client_money(rt: Runtime) -> Iterator[Finding]:
    with rt.store.read() as conn:
        changes = kind_changes(conn, rt.account_kinds())
    for change in changes:
        yield Finding("fail", f"account kind {change.account}", change.message,
                      f"set accounts.{change.account}.kind = {change.was!r} in ledgerlink.toml")
    breaches = rt.payouts.breaches()
    for b in breaches:
        yield Finding("fail", f"client money {b.account}", b.message,
                      f"transfer {b.currency} {b.amount} from {b.fees_account} to {b.account}; set the trust "
                      "account to be paid out gross at the provider")
    if not breaches and rt.settings.trust_accounts:
        yield Finding("ok", "client money", "no provider fee taken from a trust account")


CHECKS: tuple[tuple[str, Check], ...] = (("firm database", _firm), ("providers", _providers), ("email", _mail),
                                         ("state store", _store), ("audit trail", _audit), ("staff", _staff),
                                         ("service", _service),
                                         ("jobs", _jobs), ("client money", _client_money))


def diagnose(rt: Runtime) -> list[Finding]:
    """Every check, each on its own: one that raises is itself a finding."""
    findings = [Finding("ok", "settings", f"{rt.settings.config_path} and {rt.settings.mapping_path} are valid")]
    for what, check in CHECKS:
        try:
            findings += list(check(rt))
        except LedgerlinkError as exc:
            findings.append(Finding("fail", what, scrub(str(exc)), "see the message; 'ledgerlink check' says more"))
    return findings


def cmd_doctor(args: argparse.Namespace, rt: Runtime) -> int:
    findings = diagnose(rt)

    def text() -> str:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("")
        table.add_column("check", no_wrap=True)
        table.add_column("finding", ratio=3, overflow="fold")
        table.add_column("what to do", ratio=2, overflow="fold")
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for f in findings:
            table.add_row(f"[{colour[f.verdict]}]{f.verdict}[/]", escape(f.what), escape(scrub(f.detail)),
                          escape(f.fix))
        out = io.StringIO()
        Console(file=out, width=max(140, shutil.get_terminal_size().columns), no_color=True).print(table)
        return out.getvalue().rstrip()

    emit(args, [asdict(f) for f in findings], text)
    return 1 if any(f.verdict == "fail" for f in findings) else 0


def register(commands: Commands) -> None:
    commands.add("doctor", cmd_doctor, "check everything an agent needs, each line ok/warn/fail with the fix",
                 json=True)
