"""The generated service files: systemd (verified by systemd-analyze), launchd plist, WinSW XML; idempotent."""

from __future__ import annotations

import configparser
import plistlib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from tests_support import require

from agent.cli import main
from agent.installer import plan_install, render

EXE = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ledgerlink")


def unit(home: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(render("systemd", home=home, user="ledgerlink", executable=EXE))
    return parser


def test_systemd_unit_has_restart_limits_and_hardening(tmp_path: Path) -> None:
    u = unit(tmp_path)
    assert u["Unit"]["StartLimitIntervalSec"] and u["Unit"]["StartLimitBurst"]  # in [Unit], where systemd reads them
    service = u["Service"]
    assert service["User"] == "ledgerlink" and service["Restart"] == "on-failure"
    assert service["ExecStart"] == f"{EXE} run" and service["Environment"] == f"LEDGERLINK_HOME={tmp_path}"
    assert (service["ProtectSystem"], service["NoNewPrivileges"], service["ProtectHome"]) == ("strict", "true", "true")
    assert service["ReadWritePaths"] == str(tmp_path)  # only the state and log folder


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    require(None if shutil.which("systemd-analyze") else "systemd-analyze is not installed")
    path = tmp_path / "ledgerlink.service"
    path.write_text(render("systemd", home=tmp_path, user="root", executable=EXE))
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    problems = [line for line in done.stderr.splitlines() if "ledgerlink.service" in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_launchd_plist_keeps_alive(tmp_path: Path) -> None:
    plist = plistlib.loads(render("launchd", home=tmp_path, user="ledgerlink", executable=EXE).encode())
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    assert plist["ProgramArguments"] == [EXE, "run"]
    assert plist["EnvironmentVariables"]["LEDGERLINK_HOME"] == str(tmp_path)


def test_winsw_xml(tmp_path: Path) -> None:
    root = ET.fromstring(render("windows", home=tmp_path, user=r".\ledgerlink", executable=r"C:\ll\ledgerlink.exe"))
    assert root.findtext("executable") == r"C:\ll\ledgerlink.exe" and root.findtext("arguments") == "run"
    assert [e.get("action") for e in root.findall("onfailure")] == ["restart", "restart"]
    assert root.find("serviceaccount/username").text == r".\ledgerlink"  # keyring under the service's own account


def test_install_is_idempotent_and_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "units"
    base = ["--home", str(tmp_path / "home"), "service", "install", "--platform", "systemd", "--target-dir",
            str(target), "--executable", EXE]
    assert main([*base, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would write" in out and "would run: systemctl enable ledgerlink.service" in out
    assert not target.exists()
    assert main([*base, "--files-only"]) == 0
    first = (target / "ledgerlink.service").read_text()
    assert main([*base, "--files-only"]) == 0
    assert "already installed, unchanged" in capsys.readouterr().out
    assert (target / "ledgerlink.service").read_text() == first


def test_plan_creates_the_dedicated_user(tmp_path: Path) -> None:
    plan = plan_install("systemd", home=tmp_path, user="ledgerlink", executable=EXE, target_dir=tmp_path)
    assert any("useradd --system" in " ".join(c) for c in plan.commands)
