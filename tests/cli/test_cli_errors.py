"""A person's mistake at the command line (issue 15 item 9, issue 14 items 10 and 17): one line saying what is wrong
and how to fix it, exit 2, no traceback unless --debug; the agent's files are its user's only; a port in use is a
configuration error naming the setting; sandbox links follow sandbox_port."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import STAFF

from agent.cli.main import main
from agent.engine.links import LinkRequest
from agent.engine.sync import Syncer
from agent.runtime import Runtime

MATTER = "M-2026-0010"


def ledgerlink(home: Path, *args: str, env: dict[str, str] | None = None, umask: int | None = None
               ) -> subprocess.CompletedProcess[str]:
    """The real command in its own process, so exit codes, stderr and the umask are what a user gets."""
    return subprocess.run([sys.executable, "-m", "agent.cli.main", "--home", str(home), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})},
                          preexec_fn=None if umask is None else lambda: os.umask(umask))


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_a_bad_argument_value_names_the_option_and_the_reason(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--home", str(home), "links", "create", "--matter", MATTER, "--amount", "10,50"])
    assert exited.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert "argument --amount" in line and "decimal comma" in line and "--help" in line


def test_a_number_past_any_column_is_an_argument_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--home", str(home), "postings", "show", "99999999999999999999"])
    assert exited.value.code == 2
    assert "argument id: 99999999999999999999 is too large" in one_line(capsys.readouterr().err)


def test_a_missing_file_is_one_line_and_exit_2(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "upload.csv"
    assert main(["--home", str(home), "bulk", "check", str(missing)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(missing) in line and "No such file" in line and "check the path" in line


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
        home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def boom(_home: Path | None = None) -> Runtime:
        raise RuntimeError("the unforeseen")

    monkeypatch.setattr(Runtime, "for_home", boom)
    assert main(["--home", str(home), "check"]) == 1
    line = one_line(capsys.readouterr().err)
    assert "internal error: RuntimeError: the unforeseen" in line and "--debug" in line
    assert main(["--debug", "--home", str(home), "check"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and 'raise RuntimeError("the unforeseen")' in err


def test_a_broken_settings_file_is_exit_2_with_file_and_line(home: Path) -> None:
    config = home / "ledgerlink.toml"
    config.write_text(config.read_text() + "\n[accounts.trust\n")
    done = ledgerlink(home, "accounts", "set", "trust", "--expiry-days", "5")
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "ledgerlink.toml" in line and "not valid TOML" in line


# ------------------------------------------------------------------------------------------- umask


def test_files_the_agent_writes_are_its_users_only_whatever_the_umask(home: Path) -> None:
    done = ledgerlink(home, "run", "--once", umask=0o022)
    assert done.returncode == 0, done.stderr
    written = [p for p in home.rglob("*") if p.name not in ("ledgerlink.toml", "mapping.yaml", "demo-firm.db")]
    assert {p.name for p in written} >= {"state.db", "logs", "ledgerlink.log"}
    loose = {str(p.relative_to(home)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written
             if stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert loose == {}


def test_main_leaves_the_callers_umask_as_it_was(home: Path) -> None:
    before = os.umask(0o022)
    try:
        assert main(["--home", str(home), "mapping", "check", str(home / "mapping.yaml")]) == 0
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)


# ------------------------------------------------------------------------------------------- ports


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("setting", ["sandbox_port", "api_port"])
def test_a_port_in_use_is_a_configuration_error_naming_the_setting(home: Path, busy_port: int, setting: str) -> None:
    ports = {"LEDGERLINK_SANDBOX_PORT": "0", "LEDGERLINK_API_PORT": "0",
             f"LEDGERLINK_{setting.upper()}": str(busy_port)}
    done = ledgerlink(home, "run", env=ports)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "configuration error: " in done.stderr and setting in done.stderr and str(busy_port) in done.stderr


def test_sandbox_link_urls_follow_sandbox_port(home: Path) -> None:
    config = home / "ledgerlink.toml"
    config.write_text("sandbox_port = 9876\n" + config.read_text())
    rt = Runtime.for_home(home)
    try:
        Syncer(rt.store, rt.connector).sync()
        link = rt.links.create(STAFF, LinkRequest(matter=MATTER))
        assert link.url is not None and link.url.startswith("http://127.0.0.1:9876/pay/")
        assert rt.settings.account("operating").api_base == "http://127.0.0.1:9876"
    finally:
        rt.close()


def test_a_folder_that_is_not_an_agent_home_is_named_and_left_as_it_was(tmp_path: Path) -> None:
    """Issue 26 item 7: forgetting LEDGERLINK_HOME must not make an empty home and answer "no matter matches"."""
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    for args in (("matters", "search", "okafor"), ("links", "list"), ("run", "--once"), ("users", "list")):
        done = ledgerlink(elsewhere, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert f"{elsewhere} is not an agent home" in done.stderr and "ledgerlink init" in done.stderr
        assert "Traceback" not in done.stderr
    assert list(elsewhere.iterdir()) == []  # no state.db, no logs
    made = ledgerlink(tmp_path / "new-home", "init")  # init makes homes
    assert made.returncode == 0 and (tmp_path / "new-home" / "ledgerlink.toml").is_file()
