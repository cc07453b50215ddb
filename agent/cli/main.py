"""The ``ledgerlink`` command. Exit codes: 0 ok, 2 configuration error, 1 anything else. ``--json`` on listings.

Each command group lives in its own module and adds its commands to the table in agent.cli.output; this module
only builds the parser from them, in a fixed order, and runs the chosen handler with a Runtime.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.cli import api, bulk, directdebit, home, links, mirror, postings, sending, service
from agent.cli.output import Commands, Handler
from agent.core.errors import ConfigurationError, LedgerlinkError
from agent.core.scrub import scrub
from agent.home.logs import setup_logging
from agent.home.settings import default_home
from agent.runtime import Runtime

log = logging.getLogger("ledgerlink.cli")
MODULES = (home, mirror, links, sending, postings, bulk, directdebit, api, service)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledgerlink", description="Ledgerlink payment-link sync agent")
    parser.add_argument("--version", action="version", version=f"ledgerlink {__version__}")
    parser.add_argument("--home", type=Path, help=f"agent folder (default $LEDGERLINK_HOME or {default_home()})")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print log messages")
    commands = Commands(parser)
    for module in MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose)
    rt: Runtime | None = None
    try:
        handler: Handler = args.handler
        if not args.needs_runtime:
            return handler(args, None)
        rt = Runtime.for_home(args.home)
        return handler(args, rt)
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
