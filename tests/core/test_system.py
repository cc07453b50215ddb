"""The per-OS choices behind agent.core.system (issue 16 item 5): each OS's path is tested here on any machine,
by building the System of that platform; Windows' locking with a stand-in for msvcrt, which Linux lacks."""

from __future__ import annotations

import io
import signal
import sys
import types
from pathlib import Path

import pytest

from agent.core.system import WINDOWS_LOCK_OFFSET, System
from agent.home.settings import default_home
from agent.service.installer import current_platform, installed_script

WINDOWS, MACOS, LINUX = System("win32"), System("darwin"), System("linux")


def test_each_os_has_its_own_home() -> None:
    user = Path("/u/ada")
    assert WINDOWS.default_home({"LOCALAPPDATA": "/c/Users/ada/AppData/Local"}, user) == Path(
        "/c/Users/ada/AppData/Local/Ledgerlink")
    assert WINDOWS.default_home({}, user) == user / "AppData" / "Local" / "Ledgerlink"
    assert MACOS.default_home({}, user) == user / "Library" / "Application Support" / "Ledgerlink"
    assert LINUX.default_home({}, user) == user / ".ledgerlink"
    assert LINUX.default_home({"LEDGERLINK_HOME": "/srv/agent"}, user) == Path("/srv/agent")


def test_settings_take_the_home_of_the_os_they_run_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LEDGERLINK_HOME")
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path))
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_home() == (tmp_path / "Library" / "Application Support" / "Ledgerlink").resolve()
    monkeypatch.setattr(sys, "platform", "linux")
    assert default_home() == (tmp_path / ".ledgerlink").resolve()


def test_stop_signals_are_the_ones_each_os_can_send() -> None:
    assert LINUX.stop_signals() == MACOS.stop_signals() == (signal.SIGTERM, signal.SIGINT)
    assert signal.SIGTERM not in WINDOWS.stop_signals() and signal.SIGINT in WINDOWS.stop_signals()


def test_files_are_made_private_on_posix_and_left_to_the_folder_acl_on_windows(tmp_path: Path) -> None:
    secret = tmp_path / "keyring.cfg"
    secret.write_text("x")
    secret.chmod(0o644)
    WINDOWS.make_private(secret)
    assert secret.stat().st_mode & 0o777 == 0o644  # chmod on Windows only toggles read-only: not used
    LINUX.make_private(secret)
    MACOS.make_private(tmp_path)
    assert secret.stat().st_mode & 0o777 == 0o600 and tmp_path.stat().st_mode & 0o777 == 0o700


def test_windows_locks_one_byte_far_past_the_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    fake = types.SimpleNamespace(LK_NBLCK=2, LK_UNLCK=0, locking=lambda fd, mode, n: calls.append((mode, n)))
    monkeypatch.setitem(sys.modules, "msvcrt", fake)

    class Handle(io.StringIO):
        def fileno(self) -> int:
            return 7

    handle = Handle("12345")
    WINDOWS.try_lock(handle)
    assert handle.tell() == WINDOWS_LOCK_OFFSET and calls == [(2, 1)]
    WINDOWS.unlock(handle)
    assert calls == [(2, 1), (0, 1)]


def test_posix_locks_are_exclusive_between_processes(tmp_path: Path) -> None:
    first, second = (tmp_path / "lock").open("a+"), (tmp_path / "lock").open("a+")
    LINUX.try_lock(first)
    with pytest.raises(OSError):
        LINUX.try_lock(second)  # flock: a second open file description is refused, as another process is
    LINUX.unlock(first)
    LINUX.try_lock(second)
    first.close()
    second.close()


@pytest.mark.parametrize(("platform", "manager", "script"), [
    ("win32", "windows", "ledgerlink.exe"), ("darwin", "launchd", "ledgerlink"), ("linux", "systemd", "ledgerlink")])
def test_the_installer_follows_the_os(monkeypatch: pytest.MonkeyPatch, platform: str, manager: str,
                                      script: str) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert current_platform() == manager and installed_script().name == script
