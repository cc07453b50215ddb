"""``ledgerlink service install|uninstall|start|stop|status``: the agent as a systemd, launchd or WinSW service.

The files come from the templates in ``installer/`` (see installer/README.md), which the wheel ships as the
package data ``agent.service.templates``. Every action is first built as a
plan (files to write, commands to run), so ``--dry-run`` prints exactly what a real run would do, and a real run
does only that. Installing twice is harmless: an unchanged file is left alone, a changed one is rewritten.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from string import Template
from xml.sax.saxutils import escape

from agent.core import system
from agent.core.errors import ConfigurationError

TEMPLATES_PACKAGE = "agent.service.templates"
PLATFORMS = ("systemd", "launchd", "windows")
ACTIONS = ("install", "uninstall", "start", "stop", "status")
UNIT_NAME = "ledgerlink.service"
LAUNCHD_LABEL = "com.ledgerlink.agent"
WINSW_NAME = "ledgerlink-service"
DEFAULT_USER = "ledgerlink"
DEFAULTS: dict[str, dict[str, PurePath]] = {
    "systemd": {"home": PurePosixPath("/var/lib/ledgerlink"), "unit_dir": PurePosixPath("/etc/systemd/system"),
                "executable": PurePosixPath("/opt/ledgerlink/bin/ledgerlink")},
    "launchd": {"home": PurePosixPath("/Library/Application Support/Ledgerlink"),
                "unit_dir": PurePosixPath("/Library/LaunchDaemons"),
                "executable": PurePosixPath("/usr/local/ledgerlink/bin/ledgerlink")},
    "windows": {"home": PureWindowsPath(r"C:\ProgramData\Ledgerlink"),
                "unit_dir": PureWindowsPath(r"C:\ProgramData\Ledgerlink\service"),
                "executable": PureWindowsPath(r"C:\Program Files\Ledgerlink\Scripts\ledgerlink.exe")},
}
SYSTEMD_HOME_DIRS = ("/home", "/root", "/run/user")  # what ProtectHome=true hides


def current_platform() -> str:
    return system.current().service_manager()


def installed_script() -> Path:
    """The ``ledgerlink`` console script of this installation (the venv's, when run from one)."""
    return Path(sysconfig.get_path("scripts")) / system.current().script_name()


def templates() -> Traversable:
    """The folder of service templates, as installed.

    A wheel has them as package data (pyproject maps installer/ to ``agent.service.templates``). A source checkout,
    editable install included, has no such package: setuptools' editable finder cannot map a folder without an
    ``__init__.py`` into a sub-package, and installer/ must not become an importable package of its own. There the
    templates are the checkout's installer/, found beside the ``agent`` package as a resource, not via __file__.
    """
    try:
        return resources.files(TEMPLATES_PACKAGE)
    except ModuleNotFoundError:
        return resources.files("agent") / ".." / "installer"


def render(template: str, **values: str) -> str:
    """Fill ``installer/<template>``; a placeholder left unfilled is a bug, so substitute strictly."""
    source = templates()
    for part in template.split("/"):  # one step at a time: a namespace package's joinpath takes one name on 3.11
        source = source / part
    if not source.is_file():
        raise ConfigurationError(f"the service template {template} is missing from this installation "
                                 f"({source}); reinstall Ledgerlink")
    return Template(source.read_text(encoding="utf-8")).substitute(values)


def systemd_quote(value: str) -> str:
    """One systemd word: '%' is a specifier there, and spaces split words unless quoted."""
    value = value.replace("%", "%%")
    if any(c in value for c in " \t\"'\\"):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


@dataclass
class Plan:
    """What one action does, in order: ``before`` commands, files written or removed, ``after`` commands.

    Installing, the user must exist before it can own the home and the unit must exist before it is enabled;
    uninstalling, the service stops before its file goes and the manager reloads after.
    """

    before: list[list[str]] = field(default_factory=list)
    write: dict[PurePath, str] = field(default_factory=dict)
    remove: list[PurePath] = field(default_factory=list)
    after: list[list[str]] = field(default_factory=list)
    may_fail: list[list[str]] = field(default_factory=list)  # e.g. stopping a service that is not running
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    platform: str
    home: PurePath
    user: str
    executable: PurePath
    unit_dir: PurePath
    manage: bool = True  # run the service manager (systemctl, launchctl, WinSW); off for packaging and tests

    def user_exists(self) -> bool:
        import pwd

        try:
            pwd.getpwnam(self.user)
        except KeyError:
            return False
        return True

    def group(self) -> str:
        import grp
        import pwd

        try:
            return grp.getgrgid(pwd.getpwnam(self.user).pw_gid).gr_name
        except KeyError:
            return self.user  # useradd --user-group makes a group of the same name


# ------------------------------------------------------------------------------------------------ systemd


def systemd_unit(t: Target) -> str:
    hidden = any(PurePosixPath(p).is_relative_to(d) for p in (t.home, t.executable) for d in SYSTEMD_HOME_DIRS)
    return render(
        "systemd/ledgerlink.service.in",
        user=t.user, group=t.group(), home=systemd_quote(str(t.home)),
        environment=systemd_quote(f"LEDGERLINK_HOME={t.home}"),
        exec_start=f"{systemd_quote(str(t.executable))} run",
        protect_home="read-only" if hidden else "true",  # the home or the program lives under /home: keep it visible
        read_write_paths=systemd_quote(str(t.home)),  # state.db, logs/, secrets/ and inbox/ all live in the home
        start_limit_interval="300", start_limit_burst="5",
    )


def systemd_plan(t: Target, action: str) -> Plan:
    unit = t.unit_dir / UNIT_NAME
    plan = Plan()
    if action == "install":
        if not t.user_exists():
            plan.before.append(["useradd", "--system", "--user-group", "--home-dir", str(t.home),
                                  "--shell", "/usr/sbin/nologin", "--comment", "Ledgerlink agent", t.user])
        plan.before.append(["install", "-d", "-m", "0750", "-o", t.user, "-g", t.group(), str(t.home)])
        plan.write[unit] = systemd_unit(t)
        if t.manage:
            plan.after += [["systemctl", "daemon-reload"], ["systemctl", "enable", UNIT_NAME]]
        plan.notes.append(f"store secrets as the service user: sudo -u {t.user} env LEDGERLINK_HOME={t.home} "
                          f"{t.executable} secrets set NAME")
    elif action == "uninstall":
        if t.manage:
            plan.before.append(["systemctl", "disable", "--now", UNIT_NAME])
            plan.may_fail += plan.before
            plan.after.append(["systemctl", "daemon-reload"])
        plan.remove.append(unit)
        plan.notes.append(f"kept the user {t.user} and {t.home} (state, logs, secrets)")
    else:
        plan.before.append(["systemctl", action, "--no-pager", UNIT_NAME] if action == "status"
                           else ["systemctl", action, UNIT_NAME])
    return plan


# ------------------------------------------------------------------------------------------------ launchd


def launchd_plist(t: Target) -> str:
    logs = t.home / "logs"
    return render(
        "launchd/com.ledgerlink.agent.plist.in",
        label=LAUNCHD_LABEL, user=escape(t.user), executable=escape(str(t.executable)), home=escape(str(t.home)),
        stdout_path=escape(str(logs / "launchd.out.log")), stderr_path=escape(str(logs / "launchd.err.log")),
    )


def launchd_plan(t: Target, action: str) -> Plan:
    plist = t.unit_dir / f"{LAUNCHD_LABEL}.plist"
    service = f"system/{LAUNCHD_LABEL}"
    plan = Plan()
    if action == "install":
        if not t.user_exists():
            plan.notes.append(f"create the service user {t.user} first (System Settings or sysadminctl); "
                              "launchd will not start the agent without it")
        plan.before.append(["install", "-d", "-m", "0750", "-o", t.user, str(t.home), str(t.home / "logs")])
        plan.write[plist] = launchd_plist(t)
        if t.manage:
            plan.after.append(["launchctl", "enable", service])
        plan.notes.append(f"store secrets in the service user's keychain: sudo -u {t.user} -H env "
                          f"LEDGERLINK_HOME='{t.home}' '{t.executable}' secrets set NAME")
    elif action == "uninstall":
        if t.manage:
            plan.before.append(["launchctl", "bootout", service])
            plan.may_fail += plan.before
        plan.remove.append(plist)
    elif action == "start":
        plan.before.append(["launchctl", "bootstrap", "system", str(plist)])
    elif action == "stop":
        plan.before.append(["launchctl", "bootout", service])  # KeepAlive would restart a merely killed agent
    else:
        plan.before.append(["launchctl", "print", service])
    return plan


# ------------------------------------------------------------------------------------------------ Windows


def winsw_xml(t: Target) -> str:
    return render(
        "windows/ledgerlink-service.xml.in",
        service_id="ledgerlink", executable=escape(str(t.executable)), home=escape(str(t.home), {'"': "&quot;"}),
        account=escape(f".\\{t.user}" if "\\" not in t.user and "@" not in t.user else t.user),
        log_path=escape(str(t.home / "logs")),
    )


def windows_plan(t: Target, action: str) -> Plan:
    wrapper = str(t.unit_dir / f"{WINSW_NAME}.exe")
    config = t.unit_dir / f"{WINSW_NAME}.xml"
    plan = Plan()
    if action == "install":
        plan.before += [["cmd", "/c", "if", "not", "exist", str(t.home), "mkdir", str(t.home)],
                        ["icacls", str(t.home), "/grant", f"{t.user}:(OI)(CI)M"]]
        plan.write[config] = winsw_xml(t)
        if t.manage:
            plan.after.append([wrapper, "install"])  # prompts for the account's password (<prompt>console)
        plan.notes += [f"put WinSW 3 (WinSW-x64.exe) at {wrapper} first",
                       f"the account {t.user} must exist (net user {t.user} * /add)",
                       f"store secrets in its Credential Manager: runas /user:{t.user} cmd, then in that window "
                       f"set LEDGERLINK_HOME={t.home} and run \"{t.executable}\" secrets set NAME"]
    elif action == "uninstall":
        if t.manage:
            plan.before += [[wrapper, "stop"], [wrapper, "uninstall"]]
            plan.may_fail.append([wrapper, "stop"])
        plan.remove.append(config)
    else:
        plan.before.append([wrapper, action])
    return plan


PLANNERS: dict[str, Callable[[Target, str], Plan]] = {
    "systemd": systemd_plan, "launchd": launchd_plan, "windows": windows_plan}


# ------------------------------------------------------------------------------------------------ running


def show(plan: Plan) -> str:
    """The dry-run text: every step in the order a real run takes it, files in full."""
    lines = ["would run: " + subprocess.list2cmdline(cmd) for cmd in plan.before]
    for path, content in plan.write.items():
        lines += [f"would write {path}:", *("    " + line for line in content.splitlines())]
    lines += [f"would remove {path}" for path in plan.remove]
    lines += ["would run: " + subprocess.list2cmdline(cmd) for cmd in plan.after]
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


def execute(plan: Plan, out: Callable[[str], None] = print) -> int:
    """Carry out the plan; the first command that fails (and may not) stops it with its exit code."""
    code = _run(plan, plan.before, out)
    if code:
        return code
    for path, content in plan.write.items():
        target = Path(path)
        if target.exists() and target.read_text(encoding="utf-8") == content:
            out(f"already installed: {target}")
            continue
        out(f"{'rewrote' if target.exists() else 'wrote'} {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(content, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)  # the service manager never reads a half-written file
    for path in plan.remove:
        if Path(path).exists():
            Path(path).unlink()
            out(f"removed {path}")
    code = _run(plan, plan.after, out)
    for note in plan.notes:
        out(f"note: {note}")
    return code


def _run(plan: Plan, commands: list[list[str]], out: Callable[[str], None]) -> int:
    for cmd in commands:
        if shutil.which(cmd[0]) is None:
            raise ConfigurationError(f"{cmd[0]} is not installed here; use --dry-run to see what would be done")
        result = subprocess.run(cmd, check=False)
        if result.returncode and cmd not in plan.may_fail:
            out(f"failed ({result.returncode}): {subprocess.list2cmdline(cmd)}")
            return result.returncode
    return 0


def target_from(args: argparse.Namespace) -> Target:
    platform = args.platform or current_platform()
    defaults = DEFAULTS[platform]
    pure = PureWindowsPath if platform == "windows" else PurePosixPath
    native = platform == current_platform()
    if args.executable:
        executable: PurePath = pure(args.executable)
    elif native:
        executable = installed_script()
        if not Path(executable).exists():
            raise ConfigurationError(f"no ledgerlink console script at {executable}; pass --executable")
    else:
        executable = defaults["executable"]
    home = pure(args.service_home) if args.service_home else defaults["home"]
    unit_dir = pure(args.unit_dir) if args.unit_dir else defaults["unit_dir"]
    if native and platform != "windows":
        home, unit_dir = pure(os.path.abspath(home)), pure(os.path.abspath(unit_dir))
    if not home.is_absolute() or not executable.is_absolute():
        raise ConfigurationError("--home and --executable must be absolute paths")
    return Target(platform, home, args.user, executable, unit_dir, manage=not args.no_systemctl)
