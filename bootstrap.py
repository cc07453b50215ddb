#!/usr/bin/env python3
"""Set up a private virtual environment and run the agent or the test suite.

The README's two commands are ``python3 bootstrap.py run`` and ``python3 bootstrap.py test``. Only the standard
library is used here, because this runs on a machine that has nothing but Python 3.11+.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".ledgerlink-installed"


def ensure_env(test_tools: bool) -> None:
    """Create .venv and (re)install the project whenever pyproject.toml changed; the test tools (mypy, ruff,
    playwright, ...) only for ``test``: a service host running the agent needs none of them."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs under whatever python3 the machine has
        sys.exit(f"Ledgerlink needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if not (BIN / "python").exists() and not (BIN / "python.exe").exists():
        print(f"Creating virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    installed = STAMP.read_text().split() if STAMP.exists() else []
    if installed[:1] == [digest] and (not test_tools or "test" in installed):
        return
    python = str(BIN / "python")
    print("Installing Ledgerlink and its dependencies into .venv (the first time takes a minute or two) ...",
          flush=True)
    print("  1/2 updating pip", flush=True)
    subprocess.check_call([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    what = "with its test tools" if test_tools else "(the agent only; 'test' adds the test tools)"
    print(f"  2/2 installing Ledgerlink {what}; pip reports each package as it goes", flush=True)
    # pip's own progress (one "Collecting ..." line a package) says what is happening during the long part
    target = f"{ROOT}[test,bulk,bulk-mysql]" if test_tools else str(ROOT)  # the tests cover the bulk path too
    subprocess.check_call([python, "-m", "pip", "install", "--progress-bar", "off", "-e", target],
                          stdout=_Progress())
    STAMP.write_text(f"{digest} test" if test_tools else digest)
    print("Installed.", flush=True)


class _Progress:
    """A file-like sink for pip's output that prints only its "Collecting"/"Installing" lines, so the first install
    is not 40 seconds of silence nor a wall of text."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        import threading

        threading.Thread(target=self._pump, daemon=True).start()

    def fileno(self) -> int:
        return self._write

    def _pump(self) -> None:
        with os.fdopen(self._read, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith(("Collecting", "Installing collected", "Successfully installed")):
                    print("    " + line.strip()[:110], flush=True)


USAGE = """usage: python3 bootstrap.py run [ledgerlink run options]
       python3 bootstrap.py test [pytest options]

  run   set up .venv, create the demo firm in .demo/ (SQLite) and run the agent with the sandbox provider;
        the console's sign-in link is printed at start. Ctrl-C stops it; delete .demo/ to start the demo afresh.
  test  set up .venv and run the whole test suite (PostgreSQL, MariaDB and the ODBC drivers: see README.md),
        in two pytest-xdist workers unless the options say otherwise (-n 0: one process).

Only Python 3.11+ is needed; the first run installs Ledgerlink and its dependencies into .venv/."""


def main(argv: list[str]) -> int:
    if argv and argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0
    if not argv or argv[0] not in {"run", "test", "env"}:
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_env(test_tools=command != "run")
    if command == "env":
        return 0
    if command == "run":
        home = os.environ.setdefault("LEDGERLINK_HOME", str(ROOT / ".demo"))
        print(f"Ledgerlink demo home: {home} (Ctrl-C stops the agent)", flush=True)
        command_line = [str(BIN / "ledgerlink"), "run", "--demo", *rest]
        if os.name == "posix":  # hand the process over: a signal to this pid now reaches the agent itself
            os.execv(command_line[0], command_line)
        return subprocess.call(command_line)
    return subprocess.call([str(BIN / "python"), "-m", "pytest", *parallel(rest), *rest], cwd=ROOT)


def parallel(options: list[str]) -> list[str]:
    """Two pytest-xdist workers, a test file each at a time (its module fixtures made once), unless the options
    choose otherwise: much of the suite waits on servers, browsers and child processes, so two share the cores."""
    chosen = any(o == "-n" or o.startswith(("-n", "--numprocesses", "--dist")) for o in options)
    return [] if chosen or "no:xdist" in options else ["-n", "2", "--dist", "loadfile"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
