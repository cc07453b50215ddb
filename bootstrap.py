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


def ensure_env() -> None:
    """Create .venv and (re)install the project whenever pyproject.toml changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs under whatever python3 the machine has
        sys.exit(f"Ledgerlink needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if not (BIN / "python").exists() and not (BIN / "python.exe").exists():
        print(f"Creating virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    python = str(BIN / "python")
    print("Installing Ledgerlink and its dependencies ...", flush=True)
    subprocess.check_call([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    subprocess.check_call([python, "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"])
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "env"}:
        print("usage: python3 bootstrap.py run [ledgerlink run options] | test [pytest options]", file=sys.stderr)
        return 2
    ensure_env()
    command, rest = argv[0], argv[1:]
    if command == "env":
        return 0
    if command == "run":
        home = os.environ.setdefault("LEDGERLINK_HOME", str(ROOT / ".demo"))
        print(f"Ledgerlink demo home: {home}", flush=True)
        return subprocess.call([str(BIN / "ledgerlink"), "run", "--demo", *rest])
    return subprocess.call([str(BIN / "python"), "-m", "pytest", *rest], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
