"""``ledgerlink users add|list|disable|reset``: the named staff who sign in to the console, and their roles.

Passwords are read at a prompt (twice) or, for scripts, as one line on standard input (``--password-stdin``);
never as an argument, where the shell history and the process list would keep it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from agent.api.auth import settle_users
from agent.cli.output import Commands, cli_actor, emit, table
from agent.core.errors import RuleError
from agent.runtime import Runtime
from agent.state import users
from agent.state.throttle import name_key, waiting

Handler = Callable[[argparse.Namespace, Runtime], int]


def read_password(args: argparse.Namespace) -> str:
    """The new password: one line of standard input with --password-stdin, else typed twice at a prompt."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"New password for {args.name}: ")
    if getpass.getpass("The same again: ") != first:
        raise RuleError("the two passwords differ; nothing was changed")
    return first


def mistakes(handler: Handler) -> Handler:
    """A refused change (unknown name, short password, last admin) is the user's to fix: one line, exit 2."""
    def run(args: argparse.Namespace, rt: Runtime) -> int:
        try:
            return handler(args, rt)
        except RuleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    run.__doc__ = handler.__doc__
    return run


@mistakes
def cmd_add(args: argparse.Namespace, rt: Runtime) -> int:
    settle_users(rt)
    user = users.add(rt.store, cli_actor(), args.name, args.role, None if args.no_password else read_password(args))
    print(f"added {user.role} {user.name!r}" + ("" if user.has_password else
          f"; no password: 'ledgerlink api login-link --user {user.name}' signs them in"))
    return 0


def cmd_list(args: argparse.Namespace, rt: Runtime) -> int:
    settle_users(rt)
    listed = users.listed(rt.store)
    locks = {u.name: waiting(rt.store, [name_key(u.name)]) for u in listed}
    rows = [{"name": u.name, "role": u.role, "password": u.has_password, "disabled_at": u.disabled_at,
             "locked": locks[u.name][1], "created_at": u.created_at} for u in listed]
    emit(args, rows, lambda: table(
        ["Name", "Role", "Password", "State", "Created"],
        [(r["name"], r["role"], "set" if r["password"] else "none (link only)",
          "disabled" if r["disabled_at"] else "locked out" if r["locked"] else "active",
          f"{r['created_at']:%Y-%m-%d %H:%M}") for r in rows]))
    return 0


@mistakes
def cmd_disable(args: argparse.Namespace, rt: Runtime) -> int:
    revoked = users.disable(rt.store, cli_actor(), args.name)
    print(f"disabled {args.name!r}: signed out everywhere, {revoked} API token(s) revoked for good")
    return 0


@mistakes
def cmd_reset(args: argparse.Namespace, rt: Runtime) -> int:
    user, lost = users.reset(rt.store, cli_actor(), args.name, None if args.unlock_only else read_password(args))
    print(f"{user.name!r} is active and unlocked" + ("" if args.unlock_only else ", with the new password")
          + (f"; {lost} API token(s) revoked when they were disabled stay revoked: 'ledgerlink api token --user "
             f"{user.name}' makes a new one" if lost else ""))
    return 0


def register(commands: Commands) -> None:
    add = commands.add("add", cmd_add, "add a person who signs in to the console", group="users")
    add.add_argument("name", help="user name: letters, digits, '.', '_', '-', '@'")
    add.add_argument("--role", choices=users.ROLES, required=True,
                     help="clerk: links, bulk, postings to read; admin: everything")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--no-password", action="store_true", help="sign in only through 'ledgerlink api login-link'")
    commands.add("list", cmd_list, "the staff, their roles and whether they may sign in", group="users", json=True)
    commands.add("disable", cmd_disable, "stop a person signing in; ends their sessions and tokens",
                 group="users").add_argument("name", help="the user name, as 'ledgerlink users list' shows it")
    reset = commands.add("reset", cmd_reset, "set a new password, lift a lock-out and enable again", group="users")
    reset.add_argument("name", help="the user name, as 'ledgerlink users list' shows it")
    reset.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    reset.add_argument("--unlock-only", action="store_true", help="keep the password; only lift the lock-out")
