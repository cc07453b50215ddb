"""``ledgerlink api token [--admin]`` and ``ledgerlink api openapi``: what an admin needs to wire up a client."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.api.app import ADMIN_TOKEN, TOKEN, create_app, ensure_token
from agent.api.console import sign_in_url
from agent.cli.output import Commands
from agent.runtime import Runtime
from agent.state.signin import new_code


def cmd_token(args: argparse.Namespace, rt: Runtime) -> int:
    """Print the bearer token, making it first if the agent has never started (so a client can be set up now)."""
    print(ensure_token(rt.secrets, ADMIN_TOKEN if args.admin else TOKEN))
    return 0


def cmd_login_link(args: argparse.Namespace, rt: Runtime) -> int:
    """A one-time console sign-in link for the running agent (its API address from the settings)."""
    base = f"http://{rt.settings.api_host}:{rt.settings.api_port}"
    print(sign_in_url(base, new_code(rt.store, "admin" if args.admin else "user")))
    return 0


def cmd_openapi(args: argparse.Namespace, rt: Runtime) -> int:
    text = json.dumps(create_app(rt).openapi(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def register(commands: Commands) -> None:
    commands.add("token", cmd_token, "print the API bearer token (made on first use)", group="api").add_argument(
        "--admin", action="store_true", help="the admin token, for endpoints that change settings"
    )
    commands.add("openapi", cmd_openapi, "write the OpenAPI document", group="api").add_argument(
        "-o", "--output", help="file to write (default: standard output)"
    )
    commands.add("login-link", cmd_login_link, "a one-time console sign-in link (works once, for 10 minutes)",
                 group="api").add_argument("--admin", action="store_true", help="sign in with admin rights")
