"""``ledgerlink api token [--admin]`` and ``ledgerlink api openapi``: what an admin needs to wire up a client."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.api.app import ADMIN_TOKEN, TOKEN, create_app, ensure_token
from agent.cli.output import Commands
from agent.runtime import Runtime


def cmd_token(args: argparse.Namespace, rt: Runtime) -> int:
    """Print the bearer token, making it first if the agent has never started (so a client can be set up now)."""
    print(ensure_token(rt.secrets, ADMIN_TOKEN if args.admin else TOKEN))
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
