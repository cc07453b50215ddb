"""``ledgerlink api token|login-link|openapi``: what an admin needs to wire up a client or sign someone in."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.api.app import create_app
from agent.api.auth import settle_users
from agent.api.console import sign_in_url
from agent.cli.output import Commands, cli_actor, emit, table
from agent.cli.users import mistakes
from agent.core.errors import RuleError
from agent.runtime import Runtime
from agent.state import users
from agent.state.signin import new_code


@mistakes
def cmd_token(args: argparse.Namespace, rt: Runtime) -> int:
    """A personal API token for --user (shown once, kept only as a hash), --revoke one, or --list them."""
    settle_users(rt)
    if args.revoke is not None:
        print(f"revoked API token {args.revoke} of {users.revoke_token(rt.store, cli_actor(), args.revoke)!r}")
    elif args.list:
        found = users.tokens(rt.store)
        emit(args, found, lambda: table(["Id", "User", "Label", "Created", "Revoked"], [
            (t["id"], t["user_name"], t["label"], f"{t['created_at']:%Y-%m-%d %H:%M}",
             f"{t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else "") for t in found]))
    elif args.user is None:
        raise RuleError("name the person the token is for: 'ledgerlink api token --user NAME' "
                        "('ledgerlink users list' shows them)")
    else:
        ident, token = users.new_token(rt.store, cli_actor(), args.user, args.label)
        print(token)
        print(f"API token {ident} of {args.user!r}: keep it now, it is not shown again "
              f"('ledgerlink api token --revoke {ident}' ends it)", file=sys.stderr)
    return 0


@mistakes
def cmd_login_link(args: argparse.Namespace, rt: Runtime) -> int:
    """A one-time console sign-in link for the running agent (its API address from the settings)."""
    settle_users(rt)
    base = f"http://{rt.settings.api_host}:{rt.settings.api_port}"
    print(sign_in_url(base, new_code(rt.store, users.link_user(rt.store, args.user))))
    return 0


def cmd_openapi(args: argparse.Namespace, rt: Runtime) -> int:
    text = json.dumps(create_app(rt).openapi(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def register(commands: Commands) -> None:
    token = commands.add("token", cmd_token, "make, list or revoke personal API tokens", group="api", json=True)
    token.add_argument("--user", help="the person the new token acts as (its role is theirs)")
    token.add_argument("--label", default="api token", help="what the token is for, e.g. 'matter software'")
    token.add_argument("--revoke", type=int, metavar="ID", help="revoke the token with this id")
    token.add_argument("--list", action="store_true", help="list the tokens (never their values)")
    commands.add("openapi", cmd_openapi, "write the OpenAPI document", group="api").add_argument(
        "-o", "--output", help="file to write (default: standard output)"
    )
    commands.add("login-link", cmd_login_link, "a one-time console sign-in link (works once, for 10 minutes)",
                 group="api").add_argument("--user", help="whom it signs in (needed when there are several admins)")
