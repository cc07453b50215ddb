"""``ledgerlink service install | uninstall | start | stop | status``: run the agent as an OS service.

The templates live in the top-level ``installer/`` folder. systemd runs the agent as a dedicated user with
hardening; launchd uses a plist with KeepAlive. On Windows the agent runs under WinSW: a small, well-known
wrapper that restarts on failure and rolls logs, and runs the same ``ledgerlink run`` console script. A pywin32
service class would need a compiled dependency and code of our own for restarts and logs.
Installing twice is harmless: an identical file is left alone and reported as already installed.
"""

from __future__ import annotations

import argparse
import os
import platform as pyplatform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigurationError

TEMPLATES = Path(__file__).resolve().parents[1] / "installer"
UNIT_DIR = Path("/etc/systemd/system")
LAUNCHD_DIR = Path("/Library/LaunchDaemons")
NAMES = {"systemd": "ledgerlink.service", "launchd": "com.ledgerlink.agent.plist", "windows": "ledgerlink-service.xml"}
TEMPLATE_FILES = {"systemd": "systemd/ledgerlink.service.in", "launchd": "launchd/com.ledgerlink.agent.plist.in",
                  "windows": "windows/ledgerlink-service.xml.in"}


@dataclass
class Plan:
    """What an install writes and runs; printed as it is by --dry-run."""

    platform: str
    files: dict[Path, str] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)


def default_platform() -> str:
    system = pyplatform.system()
    return {"Darwin": "launchd", "Windows": "windows"}.get(system, "systemd")


def default_executable() -> str:
    found = shutil.which("ledgerlink") or str(Path(sys.executable).with_name("ledgerlink"))
    return str(Path(found).resolve())


def render(platform: str, *, home: Path, user: str, executable: str) -> str:
    template = (TEMPLATES / TEMPLATE_FILES[platform]).read_text(encoding="utf-8")
    return template.format(home=home, user=user, executable=executable)


def plan_install(platform: str, *, home: Path, user: str, executable: str, target_dir: Path | None = None,
                 manage: bool = True) -> Plan:
    plan = Plan(platform)
    text = render(platform, home=home, user=user, executable=executable)
    if platform == "systemd":
        plan.files[(target_dir or UNIT_DIR) / NAMES[platform]] = text
        if manage:
            plan.commands += [
                ["sh", "-c", f"id -u {user} >/dev/null 2>&1 || useradd --system --home-dir {home} "
                             f"--shell /usr/sbin/nologin {user}"],
                ["install", "-d", "-m", "0700", "-o", user, "-g", user, str(home)],
                ["systemctl", "daemon-reload"],
                ["systemctl", "enable", NAMES[platform]],
            ]
    elif platform == "launchd":
        plan.files[(target_dir or LAUNCHD_DIR) / NAMES[platform]] = text
        if manage:
            plan.commands.append(["launchctl", "bootstrap", "system", str((target_dir or LAUNCHD_DIR)
                                                                            / NAMES[platform])])
    else:
        folder = target_dir or home
        plan.files[folder / NAMES[platform]] = text
        if manage:
            plan.commands.append([str(folder / "ledgerlink-service.exe"), "install"])
    return plan


def apply(plan: Plan, *, dry_run: bool) -> list[str]:
    """Write the files (unchanged ones are left alone) and run the commands; with dry_run only describe them."""
    said = []
    for path, text in plan.files.items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            said.append(f"{path}: already installed, unchanged")
        elif dry_run:
            said.append(f"would write {path}:\n{text}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            said.append(f"wrote {path}")
    for command in plan.commands:
        if dry_run:
            said.append("would run: " + " ".join(command))
        else:
            subprocess.run(command, check=True)
            said.append("ran: " + " ".join(command))
    return said


CONTROL = {
    "systemd": {"start": ["systemctl", "start"], "stop": ["systemctl", "stop"], "status": ["systemctl", "status"],
                "uninstall": ["systemctl", "disable", "--now"]},
    "launchd": {"start": ["launchctl", "kickstart", "system/com.ledgerlink.agent"],
                "stop": ["launchctl", "kill", "TERM", "system/com.ledgerlink.agent"],
                "status": ["launchctl", "print", "system/com.ledgerlink.agent"],
                "uninstall": ["launchctl", "bootout", "system/com.ledgerlink.agent"]},
    "windows": {"start": ["sc", "start", "ledgerlink"], "stop": ["sc", "stop", "ledgerlink"],
                "status": ["sc", "query", "ledgerlink"], "uninstall": ["sc", "delete", "ledgerlink"]},
}


def control_command(platform: str, action: str) -> list[str]:
    command = list(CONTROL[platform][action])
    if platform == "systemd":
        command.append(NAMES[platform])
    return command


def cmd_service(args: argparse.Namespace, rt: Any) -> int:
    platform = args.platform or default_platform()
    home = (args.home_dir or rt.settings.home).resolve()
    target = Path(args.target_dir) if args.target_dir else None
    if args.action == "install":
        plan = plan_install(platform, home=home, user=args.user, executable=args.executable or default_executable(),
                            target_dir=target, manage=not args.files_only)
        for line in apply(plan, dry_run=args.dry_run):
            print(line)
        return 0
    command = control_command(platform, args.action)
    if args.dry_run:
        print("would run: " + " ".join(command))
    else:
        try:
            subprocess.run(command, check=args.action != "status")
        except FileNotFoundError:
            raise ConfigurationError(f"{command[0]} is not available: is this a {platform} machine?") from None
    if args.action == "uninstall":
        path = (target or {"systemd": UNIT_DIR, "launchd": LAUNCHD_DIR}.get(platform, home)) / NAMES[platform]
        if args.dry_run:
            print(f"would remove {path}")
        elif path.exists():
            path.unlink()
            print(f"removed {path}")
    return 0


def register(sub: Any, add: Any) -> None:
    p = add("service", cmd_service, "install or control the agent as an OS service")
    p.add_argument("action", choices=["install", "uninstall", "start", "stop", "status"])
    p.add_argument("--platform", choices=sorted(NAMES), help="default: this machine's")
    p.add_argument("--user", default="ledgerlink", help="the dedicated service account")
    p.add_argument("--home-dir", type=Path, help="agent home for the service (default: --home)")
    p.add_argument("--executable", help="the ledgerlink console script (default: the one running now)")
    p.add_argument("--target-dir", help="where the service file goes (default: the platform's folder)")
    p.add_argument("--files-only", action="store_true", help="write the file, create no user, enable nothing")
    p.add_argument("--dry-run", action="store_true", help="print what would be written and run, change nothing")
