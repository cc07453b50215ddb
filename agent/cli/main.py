"""The ``ledgerlink`` command. Exit codes: 0 ok, 2 a mistake a person can fix (configuration, a bad argument,
a file that cannot be read), 1 anything else. ``--json`` on listings; ``--debug`` shows the traceback of any error.

Each command group lives in its own module and adds its commands to the table in agent.cli.output; this module
only builds the parser from them, in a fixed order, and runs the chosen handler with a Runtime.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from agent import __version__
from agent.cli import (
    api,
    audit,
    bulk,
    directdebit,
    doctor,
    home,
    links,
    mirror,
    money,
    plans,
    postings,
    sending,
    service,
    users,
)
from agent.cli.output import Commands, Handler
from agent.core.errors import ConfigurationError, LedgerlinkError
from agent.core.scrub import scrub
from agent.home.logs import setup_logging
from agent.home.settings import CONFIG_NAME, default_home, is_home
from agent.runtime import Runtime

log = logging.getLogger("ledgerlink.cli")
MODULES = (home, mirror, links, sending, postings, money, bulk, directdebit, plans, api, users, service, audit,
           doctor)


# Whatever starts the agent (a shell with umask 022, a service manager), the state database, logs, sandbox
# database and reports it writes are readable by its own user only.
UMASK = 0o077


class _Parser(argparse.ArgumentParser):
    """argparse, with our own errors from an argument type (``--amount 10,50``) reported as argparse's own, and
    every argument error as one line: what is wrong, where the help is, exit 2; never a traceback."""

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        try:
            value = super()._get_value(action, arg_string)
        except LedgerlinkError as exc:
            raise argparse.ArgumentError(action, scrub(str(exc))) from None
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            # an id or a count past what any database column holds: say so here, not as an overflow later
            raise argparse.ArgumentError(action, f"{arg_string} is too large")
        return value

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ledgerlink", description="Ledgerlink payment-link sync agent")
    parser.add_argument("--version", action="version", version=f"ledgerlink {__version__}")
    parser.add_argument("--home", type=Path, help=f"agent folder (default $LEDGERLINK_HOME or {default_home()})")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print log messages")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    commands = Commands(parser)
    for module in MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    previous = os.umask(UMASK)
    try:
        return _main(argv)
    finally:
        os.umask(previous)  # main() also runs inside other programs (tests, scripts): leave theirs as it was


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose)
    rt: Runtime | None = None
    try:
        handler: Handler = args.handler
        if not args.needs_runtime:
            return handler(args, None)
        home = (args.home or default_home()).resolve()
        if not (is_home(home) or getattr(args, "makes_home", False) or getattr(args, "demo", False)):
            raise ConfigurationError(
                f"{home} is not an agent home (it has no {CONFIG_NAME}); give the agent's folder with --home or "
                "LEDGERLINK_HOME, or make a home there with 'ledgerlink init' (the demo) or 'ledgerlink init --firm "
                "URL'")
        rt = Runtime.for_home(args.home)
        # log lines go to the home's log file; the console shows them only with -v (``run`` shows them itself)
        setup_logging(settings=rt.settings, console_level=logging.NOTSET if args.verbose else logging.WARNING)
        return handler(args, rt)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code, message = _explain(exc)
        if args.debug:
            traceback.print_exc()
        elif code == 1 and not isinstance(exc, LedgerlinkError):
            log.debug("unexpected error", exc_info=True)
            message += " (run again with --debug to see where)"
        print(scrub(message), file=sys.stderr)
        return code
    finally:
        if rt is not None:
            rt.close()


def _explain(exc: Exception) -> tuple[int, str]:
    """Exit code and one message for an error: 2 with the fix when a person made a mistake, 1 otherwise."""
    if isinstance(exc, LedgerlinkError):  # each class says its exit code (agent.core.errors)
        return exc.exit_code, f"{exc.label}: {exc}"
    if isinstance(exc, tomllib.TOMLDecodeError):
        return 2, f"configuration error: a settings file is not valid TOML: {exc}; fix it and save it again"
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        name = exc.filename or "a file"
        return 2, f"error: cannot use {name}: {exc.strerror}; check the path and that this user may read it"
    if isinstance(exc, UnicodeDecodeError):
        return 2, f"error: a file is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
    return 1, f"internal error: {type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
