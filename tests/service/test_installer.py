"""``ledgerlink service``: the generated systemd unit, launchd plist and WinSW XML, checked as their tools read them."""

from __future__ import annotations

import configparser
import getpass
import plistlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.service.installer import installed_script

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
ME = getpass.getuser()


def service(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["service", *args])
    return code, capsys.readouterr().out


def dry_run_file(out: str, name: str) -> str:
    """The text of one file as --dry-run prints it (indented four spaces under 'would write PATH:')."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("would write ") and line.endswith(name + ":"))
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("    ") and line:
            break
        body.append(line[4:])
    return "\n".join(body) + "\n"


@pytest.fixture
def unit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A unit installed for real into a temporary unit folder, for the current user and a temporary home."""
    code, out = service(capsys, "install", "--home", str(tmp_path / "home"), "--user", ME,
                        "--unit-dir", str(tmp_path / "units"), "--no-systemctl")
    assert code == 0, out
    assert f"wrote {tmp_path / 'units' / 'ledgerlink.service'}" in out
    return tmp_path / "units" / "ledgerlink.service"


def parse_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def test_systemd_unit_has_the_user_restart_limits_and_hardening(unit: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    parsed = parse_unit(unit)
    assert parsed["Unit"]["StartLimitIntervalSec"] == "300"
    assert parsed["Unit"]["StartLimitBurst"] == "5"
    svc = parsed["Service"]
    assert "StartLimitBurst" not in svc  # systemd ignores the start limits in [Service]
    assert svc["User"] == ME
    assert svc["Restart"] == "on-failure"
    assert svc["ExecStart"] == f"{installed_script()} run"
    assert Path(svc["ExecStart"].split()[0]).is_absolute() and Path(svc["ExecStart"].split()[0]).exists()
    assert svc["Environment"] == f"LEDGERLINK_HOME={home}"
    assert svc["ProtectSystem"] == "strict"
    assert svc["ProtectHome"] in ("true", "read-only")
    assert svc["PrivateTmp"] == "true"
    assert svc["NoNewPrivileges"] == "true"
    assert svc["ReadWritePaths"] == str(home)  # only the home: state.db, logs/, secrets/, inbox/
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    assert home.is_dir() and (home.stat().st_mode & 0o777) == 0o750


def test_a_home_under_slash_home_is_kept_visible_read_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = service(capsys, "install", "--dry-run", "--platform", "systemd", "--home", "/home/firm/ledger link",
                        "--user", ME)
    assert code == 0
    text = dry_run_file(out, "ledgerlink.service")
    assert "ProtectHome=read-only\n" in text  # true would hide the home that ReadWritePaths opens
    assert 'ReadWritePaths="/home/firm/ledger link"\n' in text  # a path with a space stays one word
    assert 'Environment="LEDGERLINK_HOME=/home/firm/ledger link"\n' in text


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed on this machine")
def test_systemd_analyze_verify_accepts_the_unit(unit: Path) -> None:
    result = subprocess.run([str(SYSTEMD_ANALYZE), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ledgerlink.service" not in result.stderr, result.stderr  # no warning about our unit at all


def test_installing_twice_is_harmless_and_a_change_is_rewritten(unit: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    first = unit.read_text()
    args = ["install", "--home", str(tmp_path / "home"), "--user", ME, "--unit-dir", str(unit.parent),
            "--no-systemctl"]
    code, out = service(capsys, *args)
    assert code == 0
    assert f"already installed: {unit}" in out
    assert unit.read_text() == first
    assert sorted(p.name for p in unit.parent.iterdir()) == ["ledgerlink.service"]  # no temporary left behind

    unit.write_text(first.replace("Restart=on-failure", "Restart=no"))
    code, out = service(capsys, *args)
    assert code == 0
    assert f"rewrote {unit}" in out
    assert unit.read_text() == first

    code, out = service(capsys, "uninstall", "--unit-dir", str(unit.parent), "--home", str(tmp_path / "home"),
                        "--user", ME, "--no-systemctl")
    assert code == 0
    assert not unit.exists()
    assert (tmp_path / "home").is_dir()  # the state and secrets stay


def test_dry_run_writes_nothing_and_prints_every_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = service(capsys, "install", "--dry-run", "--platform", "systemd", "--home", str(tmp_path / "home"),
                        "--unit-dir", str(tmp_path / "units"), "--user", "ledgerlink-nobody-here")
    assert code == 0
    assert list(tmp_path.iterdir()) == []
    lines = out.splitlines()
    assert lines[0] == ("would run: useradd --system --user-group --home-dir "
                        f"{tmp_path / 'home'} --shell /usr/sbin/nologin --comment \"Ledgerlink agent\" "
                        "ledgerlink-nobody-here")
    assert f"would write {tmp_path / 'units' / 'ledgerlink.service'}:" in lines
    assert lines.index("would run: systemctl daemon-reload") < lines.index("would run: systemctl enable "
                                                                             "ledgerlink.service")
    assert "User=ledgerlink-nobody-here\n" in dry_run_file(out, "ledgerlink.service")


def test_dry_run_of_the_service_controls(capsys: pytest.CaptureFixture[str]) -> None:
    for action, expected in [("start", "systemctl start ledgerlink.service"),
                             ("stop", "systemctl stop ledgerlink.service"),
                             ("status", "systemctl status --no-pager ledgerlink.service")]:
        code, out = service(capsys, action, "--dry-run", "--platform", "systemd")
        assert (code, out) == (0, f"would run: {expected}\n")
    code, out = service(capsys, "uninstall", "--dry-run", "--platform", "systemd")
    assert out.splitlines()[:3] == ["would run: systemctl disable --now ledgerlink.service",
                                    "would remove /etc/systemd/system/ledgerlink.service",
                                    "would run: systemctl daemon-reload"]


def test_launchd_plist_keeps_the_agent_alive(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = service(capsys, "install", "--dry-run", "--platform", "launchd", "--home", "/Library/Ledger & Co")
    assert code == 0
    assert "would write /Library/LaunchDaemons/com.ledgerlink.agent.plist:" in out
    plist = plistlib.loads(dry_run_file(out, "com.ledgerlink.agent.plist").encode())
    assert plist["Label"] == "com.ledgerlink.agent"
    assert plist["KeepAlive"] is True
    assert plist["RunAtLoad"] is True
    assert plist["UserName"] == "ledgerlink"
    assert plist["ProgramArguments"][-1] == "run"
    assert plist["ProgramArguments"][0].endswith("/ledgerlink")
    assert plist["EnvironmentVariables"] == {"LEDGERLINK_HOME": "/Library/Ledger & Co"}  # escaped, read back intact
    assert plist["StandardOutPath"] == "/Library/Ledger & Co/logs/launchd.out.log"
    assert plist["StandardErrorPath"] == "/Library/Ledger & Co/logs/launchd.err.log"


def test_winsw_xml_runs_the_console_script_and_restarts_on_failure(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = service(capsys, "install", "--dry-run", "--platform", "windows")
    assert code == 0
    root = ET.fromstring(dry_run_file(out, "ledgerlink-service.xml"))
    assert root.tag == "service"
    assert root.findtext("id") == "ledgerlink"
    assert root.findtext("executable") == r"C:\Program Files\Ledgerlink\Scripts\ledgerlink.exe"
    assert root.findtext("arguments") == "run"
    env = root.find("env")
    assert env is not None and env.attrib == {"name": "LEDGERLINK_HOME", "value": r"C:\ProgramData\Ledgerlink"}
    assert [e.get("action") for e in root.findall("onfailure")] == ["restart"] * 3
    log = root.find("log")
    assert log is not None and log.get("mode", "").startswith("roll")
    account = root.find("serviceaccount")
    assert account is not None and account.findtext("username") == r".\ledgerlink"
    assert account.find("password") is None  # prompted at install, never stored in the file
    assert r"would run: C:\ProgramData\Ledgerlink\service\ledgerlink-service.exe install" in out


@pytest.mark.skipif(sys.platform == "win32", reason="checks the refusal on a non-Windows machine")
def test_a_foreign_platform_is_only_ever_a_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["service", "install", "--platform", "windows", "--unit-dir", str(tmp_path)])
    assert code == 2
    assert "only --dry-run is possible" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("platform", "manager", "script"), [("linux", "systemd", "ledgerlink"),
                                                              ("darwin", "launchd", "ledgerlink"),
                                                              ("win32", "windows", "ledgerlink.exe")])
def test_each_os_gets_its_own_service_manager_and_console_script(monkeypatch: pytest.MonkeyPatch, platform: str,
                                                                 manager: str, script: str) -> None:
    from agent.service import installer

    monkeypatch.setattr(sys, "platform", platform)
    assert installer.current_platform() == manager
    assert installer.installed_script().name == script


def test_templates_are_package_data_not_a_top_level_package() -> None:
    """Read through importlib.resources: installed, they are agent.service.templates; in a checkout, installer/."""
    from importlib.util import find_spec

    from agent.service.installer import templates

    names = {p.name for p in templates().iterdir()}
    assert {"systemd", "launchd", "windows"} <= names
    spec = find_spec("installer")
    assert spec is None or spec.origin is None  # at most the implicit namespace of a folder, never installer/__init__
