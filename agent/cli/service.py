"""``ledgerlink service install|uninstall|start|stop|status``: the CLI face of agent.service.installer."""

from __future__ import annotations

import argparse

from agent.cli.output import Commands
from agent.core.errors import ConfigurationError
from agent.service.installer import (
    ACTIONS,
    DEFAULT_USER,
    PLANNERS,
    PLATFORMS,
    current_platform,
    execute,
    show,
    target_from,
)


def cmd_service(args: argparse.Namespace, rt: object) -> int:
    target = target_from(args)
    plan = PLANNERS[target.platform](target, args.action)
    if args.dry_run:
        print(show(plan))
        return 0
    if target.platform != current_platform():
        raise ConfigurationError(f"this is not a {target.platform} machine: only --dry-run is possible")
    return execute(plan)


def register(commands: Commands) -> None:
    helps = {
        "install": "install the service (dedicated user, hardened unit); running it twice is harmless",
        "uninstall": "remove the service definition (the home and its data stay)",
        "start": "start the service",
        "stop": "stop the service",
        "status": "show the service's status",
    }
    for action in ACTIONS:
        # an administrator runs these before any agent home exists: no Runtime to build
        p = commands.add(action, cmd_service, helps[action], group="service", runtime=False)
        p.set_defaults(action=action)
        p.add_argument("--dry-run", action="store_true", help="print exactly what would be written and run")
        p.add_argument("--platform", choices=PLATFORMS, help="default: this machine's service manager")
        p.add_argument("--home", dest="service_home", help="the service's agent folder (default per platform)")
        p.add_argument("--user", default=DEFAULT_USER, help="the account the service runs as (default ledgerlink)")
        p.add_argument("--executable", help="the ledgerlink program (default: this installation's console script)")
        p.add_argument("--unit-dir", help="where the unit, plist or WinSW XML goes (default per platform)")
        p.add_argument(
            "--no-systemctl",
            action="store_true",
            help="write files and set up user and home only; run no systemctl, launchctl or WinSW",
        )
