"""What differs between Windows, macOS and Linux, behind one small interface chosen from ``sys.platform``.

Every OS-specific choice the agent makes (where an interactive home lives, how a lock file is held, which signals
stop it, how its files are kept private, which service manager installs it, what its console script is called)
is one method here with one code path per OS, so the Windows and macOS paths are unit-tested on any machine by
building a ``System`` for that platform.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

Kind = Literal["windows", "macos", "linux"]
WINDOWS_LOCK_OFFSET = 1 << 20  # Windows cannot read a locked byte: lock one far past the pid written at the start


@dataclass(frozen=True)
class System:
    platform: str  # a sys.platform value: win32, darwin, linux, ...

    @property
    def kind(self) -> Kind:
        if self.platform == "win32":
            return "windows"
        return "macos" if self.platform == "darwin" else "linux"

    def default_home(self, environ: Mapping[str, str], user_home: Path) -> Path:
        """An interactive user's agent folder (a service's is set by its installer); LEDGERLINK_HOME wins."""
        if environ.get("LEDGERLINK_HOME"):
            return Path(environ["LEDGERLINK_HOME"])
        if self.kind == "windows":
            return Path(environ.get("LOCALAPPDATA") or user_home / "AppData" / "Local") / "Ledgerlink"
        if self.kind == "macos":
            return user_home / "Library" / "Application Support" / "Ledgerlink"
        return user_home / ".ledgerlink"

    def stop_signals(self) -> tuple[signal.Signals, ...]:
        """What a service manager or a person sends to stop the agent: SIGTERM and Ctrl-C on POSIX; Ctrl-C and
        Ctrl-Break on Windows, where SIGTERM cannot be sent to another process."""
        if self.kind == "windows":
            return (signal.SIGINT, *([signal.Signals(signal.SIGBREAK)] if hasattr(signal, "SIGBREAK") else []))
        return signal.SIGTERM, signal.SIGINT

    def make_private(self, path: Path) -> None:
        """Readable by the agent's own user only: 0700/0600 on POSIX. On Windows a file takes the ACL of the
        service's home folder (installer/README.md), and chmod could only set the read-only flag."""
        if self.kind != "windows":
            os.chmod(path, 0o700 if path.is_dir() else 0o600)

    def try_lock(self, handle: IO[str]) -> None:
        """Hold ``handle``'s lock without waiting (OSError when another process has it); the OS drops it when the
        process dies, however it dies."""
        if self.kind == "windows":
            import msvcrt  # Windows only

            handle.seek(WINDOWS_LOCK_OFFSET)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]  # Windows stubs only
        else:
            import fcntl  # POSIX only

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def unlock(self, handle: IO[str]) -> None:
        if self.kind == "windows":
            import msvcrt  # Windows only

            handle.seek(WINDOWS_LOCK_OFFSET)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]  # Windows stubs only
        else:
            import fcntl  # POSIX only

            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def service_manager(self) -> Literal["windows", "launchd", "systemd"]:
        if self.kind == "windows":
            return "windows"
        return "launchd" if self.kind == "macos" else "systemd"

    def script_name(self) -> str:
        """The console script's file name in the installation's scripts folder."""
        return "ledgerlink.exe" if self.kind == "windows" else "ledgerlink"


def current() -> System:
    return System(sys.platform)
