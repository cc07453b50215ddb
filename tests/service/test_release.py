"""The release as a firm's IT admin gets it: sdist and wheel built, the wheel installed into a fresh venv outside the
repository, and the agent run from there; the same wheel on the lowest declared dependency versions.

Each venv is made in a temporary folder and filled by pip from the package index through pip's own cache, so a
warm machine builds, installs and runs everything here in a couple of minutes. Nothing in these venvs can import
the repository: the commands run with the temporary home as the working directory and without PYTHONPATH.
"""

from __future__ import annotations

import configparser
import io
import json
import os
import plistlib
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tarfile
import time
import tomllib
import venv
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import agent

pytestmark = pytest.mark.release

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SOURCE_ROOTS = ("agent", "connectors", "mappings", "postings", "installer")
SKIP = shutil.ignore_patterns(".git", ".venv", ".demo", "__pycache__", "*.pyc", "build", "dist", "*.egg-info",
                              ".pytest_cache", ".ruff_cache", "test-artifacts", "bench")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would point Python or the agent back at the repository."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("LEDGERLINK_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300,
        stdin: str | None = None) -> str:
    """Run one command to completion; its output is the assertion message when it fails."""
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                            timeout=timeout, check=False, input=stdin)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def make_venv(path: Path) -> Path:
    """A fresh venv with pip; returns its python."""
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / ("Scripts" if os.name == "nt" else "bin") / "python"


def pip_install(python: Path, *args: str | Path) -> None:
    run([python, "-m", "pip", "install", "-q", *args], cwd=python.parent, timeout=600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Artefacts:
    wheel: Path
    sdist: Path
    tools: Path  # the python of the venv holding build and twine


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Artefacts:
    """``python -m build`` on a copy of the tree, so the build leaves no egg-info or build/ in the checkout."""
    base = tmp_path_factory.mktemp("release")
    tools = make_venv(base / "tools")
    pip_install(tools, "build>=1.2", "twine>=5")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    run([tools, "-m", "build", "--sdist", "--wheel", "--outdir", base / "dist", source], cwd=base, timeout=600)
    wheel, = (base / "dist").glob("*.whl")
    sdist, = (base / "dist").glob("*.tar.gz")
    return Artefacts(wheel, sdist, tools)


@dataclass(frozen=True)
class Installed:
    bin: Path
    home: Path

    def ledgerlink(self, *args: str, timeout: float = 120, stdin: str | None = None) -> str:
        return run([self.bin / "ledgerlink", *args], cwd=self.home, env=clean_env(LEDGERLINK_HOME=str(self.home)),
                   timeout=timeout, stdin=stdin)

    def python(self, code: str) -> str:
        """Python in the installed venv, e.g. the sandbox's payer side, which has no command of its own."""
        return run([self.bin / "python", "-c", code], cwd=self.home, env=clean_env(LEDGERLINK_HOME=str(self.home)))


@pytest.fixture(scope="module")
def installed(artefacts: Artefacts, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel (not -e, not the checkout) installed into a fresh venv, with an empty agent home beside it."""
    base = tmp_path_factory.mktemp("admin")
    python = make_venv(base / "venv")
    started = time.monotonic()
    pip_install(python, artefacts.wheel)
    print(f"installed {artefacts.wheel.name} ({artefacts.wheel.stat().st_size / 1024:.0f} KiB) into a fresh venv "
          f"in {time.monotonic() - started:.1f}s")
    home = base / "home"
    home.mkdir()
    return Installed(python.parent, home)


def source_folders() -> dict[str, Path]:
    """Every package pyproject declares, by name, with the folder its files come from."""
    mapped = PYPROJECT["tool"]["setuptools"].get("package-dir", {})
    folders = {}
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        parent = max((m for m in mapped if package == m or package.startswith(m + ".")), key=len, default=None)
        if parent is None:
            folders[package] = ROOT / package.replace(".", "/")
        else:
            folders[package] = ROOT / mapped[parent] / package.removeprefix(parent).lstrip(".").replace(".", "/")
    return folders


def test_every_folder_of_the_tree_is_a_declared_package() -> None:
    declared = {folder.resolve() for folder in source_folders().values()}
    for top in SOURCE_ROOTS:
        for folder in [ROOT / top, *(ROOT / top).rglob("*")]:
            if folder.is_dir() and folder.name != "__pycache__" and any(p.is_file() for p in folder.iterdir()):
                assert folder.resolve() in declared, f"{folder} is not in pyproject's [tool.setuptools] packages"
    assert not (ROOT / "installer" / "__init__.py").exists()  # the templates are data, not a top-level package


def test_the_wheel_holds_every_module_console_asset_template_and_migration(artefacts: Artefacts) -> None:
    with zipfile.ZipFile(artefacts.wheel) as wheel:
        names = set(wheel.namelist())
        top_level = wheel.read(f"ledgerlink-{agent.__version__}.dist-info/top_level.txt").decode().split()
    expected = {f"{package.replace('.', '/')}/{file.name}"
                for package, folder in source_folders().items()
                for file in folder.iterdir() if file.is_file() and file.suffix != ".pyc"}
    assert expected - names == set()
    assert sorted(top_level) == ["agent", "connectors", "mappings", "postings"]
    assert not any(name.startswith("installer/") for name in names)
    static = ROOT / "agent" / "api" / "console" / "static"
    assert len(list(static.glob("*.js"))) >= 9
    for asset in static.iterdir():
        assert f"agent/api/console/static/{asset.name}" in names
    for template in (ROOT / "installer").rglob("*.in"):
        assert f"agent/service/templates/{template.relative_to(ROOT / 'installer').as_posix()}" in names
    for migration in (ROOT / "agent" / "state" / "migrations" / "versions").glob("0*.py"):
        assert f"agent/state/migrations/versions/{migration.name}" in names


def test_twine_check_passes_on_the_sdist_and_the_wheel(artefacts: Artefacts) -> None:
    out = run([artefacts.tools, "-m", "twine", "check", "--strict", artefacts.sdist, artefacts.wheel],
              cwd=artefacts.wheel.parent)
    assert out.count("PASSED") == 2, out


def test_the_installed_agent_imports_nothing_from_the_repository(installed: Installed) -> None:
    out = run([installed.bin / "python", "-c", "import agent, connectors, mappings, postings; "
               "print(agent.__file__, connectors.__file__, mappings.__file__, postings.__file__)"], cwd=installed.home)
    for path in out.split():
        assert Path(path).is_relative_to(installed.bin.parent), path
    assert installed.ledgerlink("--version").strip() == f"ledgerlink {agent.__version__}"


def dry_run_files(out: str) -> dict[str, str]:
    """The files a ``service install --dry-run`` would write, by path (printed indented under 'would write P:')."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("would write ") and line.endswith(":"):
            current = files.setdefault(line.removeprefix("would write ").removesuffix(":"), [])
        elif current is not None and (line.startswith("    ") or not line):
            current.append(line[4:])
        else:
            current = None
    return {path: "\n".join(lines) + "\n" for path, lines in files.items()}


def test_service_install_dry_run_writes_complete_files_on_every_platform(installed: Installed) -> None:
    def dry_run(platform: str) -> str:
        text, = dry_run_files(installed.ledgerlink("service", "install", "--dry-run", "--platform", platform)).values()
        return text

    unit = dry_run("systemd")
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.read_string(unit)
    assert parsed["Service"]["ExecStart"] == f"{installed.bin / 'ledgerlink'} run"
    assert {"Unit", "Service", "Install"} <= set(parsed.sections())

    plist_text = dry_run("launchd")
    plist = plistlib.loads(plist_text.encode())
    assert plist["Label"] == "com.ledgerlink.agent" and plist["ProgramArguments"][-1] == "run"

    xml = dry_run("windows")
    service = ET.fromstring(xml)
    assert service.findtext("id") == "ledgerlink" and service.findtext("arguments") == "run"
    for text in (unit, plist_text, xml):
        assert "${" not in text and len(text.splitlines()) > 10


class Assets(HTMLParser):
    """The scripts, style sheets and icons a console page references."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        url = found.get("src") if tag == "script" else found.get("href") if tag == "link" else None
        if url and not url.startswith("data:"):  # an inline data: URL (the empty icon) is not fetched
            self.urls.append(url)


JS_IMPORT = re.compile(r"""(?:import|from)\s*\(?\s*["'](\./[^"']+\.js)["']""")
CONTENT_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",),
                 ".html": ("text/html",)}


@pytest.fixture
def running(installed: Installed) -> Iterator[tuple[subprocess.Popen[bytes], str, float]]:
    """``ledgerlink run`` from the installed wheel on free ports; yields it, the API's URL and its cold start."""
    installed.ledgerlink("init")
    api_port, pay_port = free_port(), free_port()
    config = installed.home / "ledgerlink.toml"  # as an admin would: the ports in the config every command reads
    text = config.read_text(encoding="utf-8").replace(  # the pay page on its port, and the links pointing there
        "[accounts.operating]\n", f'[accounts.operating]\napi_base = "http://127.0.0.1:{pay_port}"\n')
    config.write_text(f"api_port = {api_port}\nsandbox_port = {pay_port}\n{text}", encoding="utf-8")
    env = clean_env(LEDGERLINK_HOME=str(installed.home), LEDGERLINK_INTERVALS__PAYMENTS="0.2",
                    LEDGERLINK_INTERVALS__POSTINGS="0.2")
    url = f"http://127.0.0.1:{api_port}"
    started = time.monotonic()
    with open(installed.home / "console.log", "wb") as console:
        proc = subprocess.Popen([installed.bin / "ledgerlink", "run"], cwd=installed.home, env=env,
                                stdout=console, stderr=console)
    try:
        while True:
            assert proc.poll() is None, (installed.home / "console.log").read_text()
            assert time.monotonic() - started < 60, "the API never answered"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield proc, url, time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_installed_agent_runs_serves_its_console_and_posts_a_sandbox_payment(
        installed: Installed, running: tuple[subprocess.Popen[bytes], str, float]) -> None:
    proc, url, cold_start = running
    print(f"cold start of ledgerlink run from the installed wheel: {cold_start:.2f}s")
    assert "ok" in installed.ledgerlink("check")
    assert "synced" in installed.ledgerlink("sync")
    token = installed.ledgerlink("api", "token", "--user", "admin").strip()  # the admin the first run made
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert client.get("/status").json()["version"] == agent.__version__

    fetched: set[str] = set()
    for page in ("/console/", "/console/login"):
        response = client.get(page)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        parser = Assets()
        parser.feed(response.text)
        queue = [httpx.URL(url + page).join(u).path for u in parser.urls]
        while queue:
            path = queue.pop()
            if path in fetched:
                continue
            fetched.add(path)
            asset = client.get(path)
            assert asset.status_code == 200, path
            assert asset.headers["content-type"].startswith(CONTENT_TYPES[Path(path).suffix]), (path, asset.headers)
            if path.endswith(".js"):
                queue += [httpx.URL(url + path).join(u).path for u in JS_IMPORT.findall(asset.text)]
    served = {Path(p).name for p in fetched}
    static = ROOT / "agent" / "api" / "console" / "static"
    assert {p.name for p in static.iterdir() if p.suffix in (".js", ".css")} <= served

    matter = json.loads(installed.ledgerlink("matters", "search", "--json", ""))[0]["number"]
    link = json.loads(installed.ledgerlink("links", "create", "--matter", matter, "--json"))
    paid = httpx.post(link["url"], data={"method": "bank"}, timeout=10)
    assert paid.status_code == 200, paid.text
    deadline = time.monotonic() + 30
    while True:
        postings = json.loads(installed.ledgerlink("postings", "list", "--json"))
        if postings and all(p["state"] == "posted" for p in postings):
            break
        assert time.monotonic() < deadline, postings
        time.sleep(0.3)
    assert sum(Decimal(p["amount"]) for p in postings) == Decimal(link["amount"])  # one posting per statement paid
    assert len({p["payment_id"] for p in postings}) == 1
    assert json.loads(installed.ledgerlink("links", "show", link["id"], "--json"))["status"] == "payment_received"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    log = installed.home / "logs" / "ledgerlink.log"
    starts = log.read_text(encoding="utf-8").count("ledgerlink running from")
    installed.ledgerlink("run", "--once")  # the one-shot pass a scheduler would run, after the service stopped
    assert log.read_text(encoding="utf-8").count("ledgerlink running from") == starts + 1


def lowest_constraints() -> list[str]:
    """Every dependency pinned at its declared lower bound: what ``--resolution lowest-direct`` would pick."""
    pins = []
    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        bound, = (spec.version for spec in requirement.specifier if spec.operator == ">=")
        pins.append(f"{requirement.name}=={bound}")
    return pins


LOWEST_SUITE = ["tests/connectors/test_provider_sandbox.py", "tests/connectors/test_provider_stripe.py",
                "tests/connectors/test_provider_gocardless.py", "tests/core/test_model.py",
                "tests/home/test_settings.py", "tests/state/test_state_store.py", "tests/api/test_api.py",
                # Older fastapi/pydantic name the same schema LinkOut-Input and LinkOut-Output in the OpenAPI
                # document: the API works the same, only the document's component names differ from the pinned ones.
                "--deselect", "tests/api/test_api.py::test_openapi_lists_every_path_and_money_as_strings"]


def test_every_dependency_declares_a_lower_bound() -> None:
    assert len(lowest_constraints()) == len(PYPROJECT["project"]["dependencies"])


def test_the_provider_kits_and_a_fast_part_of_the_suite_pass_on_the_lowest_versions(
        artefacts: Artefacts, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("lowest")
    constraints = base / "lowest.txt"
    constraints.write_text("\n".join(lowest_constraints()) + "\n", encoding="utf-8")
    python = make_venv(base / "venv")
    test_extra = [r for r in PYPROJECT["project"]["optional-dependencies"]["test"]
                  if Requirement(r).name in ("pytest", "pytest-timeout")]
    pip_install(python, "-c", constraints, artefacts.wheel, *test_extra)
    frozen = dict(line.split("==") for line in run([python, "-m", "pip", "freeze"], cwd=base).split() if "==" in line)
    versions = {canonicalize_name(name): Version(version) for name, version in frozen.items()}
    for pin in lowest_constraints():
        name, version = pin.split("==")
        assert versions[canonicalize_name(name)] == Version(version), (pin, frozen)
    # The suite runs from the checkout (its tests and conftest), on the installed dependencies and entry points.
    out = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *LOWEST_SUITE], cwd=ROOT,
              env=clean_env(CI=os.environ.get("CI", "")), timeout=600)
    assert " passed" in out and " failed" not in out, out
    print(out.splitlines()[-1])



PREVIOUS_RELEASE = "6749008"  # 0.1.0, the last release that landed (the layout before agent/core, agent/home, ...)


def state_rows(home: Path) -> dict[str, list[tuple[object, ...]]]:
    """What an upgrade must keep: every link, payment and posting with its state, and the mirror's size."""
    with closing(sqlite3.connect(home / "state.db")) as db:
        return {
            "links": db.execute("SELECT id, status, amount FROM links ORDER BY id").fetchall(),
            "payments": db.execute("SELECT id, link_id, status, amount FROM payments ORDER BY id").fetchall(),
            "postings": db.execute("SELECT id, payment_id, state, amount FROM postings ORDER BY id").fetchall(),
            "mirror": db.execute("SELECT (SELECT count(*) FROM firm_matters), "
                                 "(SELECT count(*) FROM firm_statements)").fetchall(),
        }


def test_upgrading_from_the_previous_release_keeps_state_settings_and_secrets(
        artefacts: Artefacts, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("upgrade")
    source = base / "previous"
    source.mkdir()
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], check=False)
    assert known.returncode == 0, f"the upgrade test builds the previous release from commit {PREVIOUS_RELEASE}: " \
                                  "clone with its history (no --depth)"
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(source, filter="data")
    run([artefacts.tools, "-m", "build", "--wheel", "--outdir", base / "dist", source], cwd=base, timeout=600)
    previous, = (base / "dist").glob("ledgerlink-*.whl")
    python = make_venv(base / "venv")
    pip_install(python, previous)
    home = base / "home"
    home.mkdir()
    agent_ = Installed(python.parent, home)
    agent_.ledgerlink("init")
    agent_.ledgerlink("sync")
    token = agent_.ledgerlink("api", "token").strip()
    matters = [m["number"] for m in json.loads(agent_.ledgerlink("matters", "search", "--json", ""))]

    def links() -> Iterator[dict[str, str]]:
        """A new link for each matter in turn, skipping the demo's matters whose payer has no email address."""
        for matter in matters:
            result = subprocess.run([python.parent / "ledgerlink", "links", "create", "--matter", matter, "--json"],
                                    cwd=home, env=clean_env(LEDGERLINK_HOME=str(home)), capture_output=True,
                                    text=True, timeout=120, check=False)
            if result.returncode == 0:
                yield json.loads(result.stdout)
            else:
                assert "has no email address" in result.stderr, result.stderr

    sandbox = "from connectors.providers import sandbox; import datetime as dt, pathlib; home = pathlib.Path('.'); "
    new_links = links()
    next(new_links)  # expires at the provider, below
    agent_.python(sandbox + "sandbox.expire_due(home, dt.datetime.now(dt.UTC) + dt.timedelta(days=90))")
    paid, pending, failed, cancelled, _outstanding = (next(new_links) for _ in range(5))
    agent_.python(sandbox + f"sandbox.pay(home, {paid['provider_ref']!r}); "
                  f"sandbox.pay(home, {pending['provider_ref']!r}, confirm=False); "
                  f"sandbox.fail_payment(home, sandbox.pay(home, {failed['provider_ref']!r}))")
    agent_.ledgerlink("links", "cancel", cancelled["id"])
    agent_.ledgerlink("run", "--once")
    agent_.ledgerlink("run", "--once")  # settled: a second pass finds nothing new
    before = state_rows(home)
    assert {row[1] for row in before["links"]} == {"outstanding", "payment_received", "cancelled", "expired"}
    assert {row[2] for row in before["payments"]} == {"confirmed", "pending", "failed"}
    assert {row[2] for row in before["postings"]} == {"posted", "removed"}  # removed: the failed payment's
    settings = {p.name: p.read_bytes() for p in (home / "ledgerlink.toml", home / "mapping.yaml")}

    pip_install(python, artefacts.wheel)
    assert agent_.ledgerlink("--version").strip() == f"ledgerlink {agent.__version__}"
    agent_.ledgerlink("run", "--once")
    after = state_rows(home)
    assert after == before  # nothing lost, nothing doubled, nothing moved
    # the secret store survived the upgrade, and the shared token became the personal token of the clerk "staff"
    assert "shared api-token" in agent_.ledgerlink("api", "token", "--list")
    assert agent_.python("from agent.runtime import Runtime; from agent.state.users import holder; "
                         f"print(holder(Runtime.for_home().store, {token!r}).name)").strip() == "staff"
    assert {p.name: p.read_bytes() for p in (home / "ledgerlink.toml", home / "mapping.yaml")} == settings
    with closing(sqlite3.connect(home / "state.db")) as db:
        revision, = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision == agent_.python("from agent.state.store import StateStore; print(StateStore.head())").strip()
    assert "synced" in agent_.ledgerlink("sync")
