"""``ledgerlink doctor`` (issue 15 item 15): every part an admin worries about gets a line, ok/warn/fail with the
fix, and a broken part is a failing line, not a traceback."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest

from agent.api.auth import settle_users
from agent.cli.main import main
from agent.home.demo import init_home
from agent.runtime import Runtime


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    init_home(home)
    assert main(["--home", str(home), "sync"]) == 0
    return home


def run(home: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, str]]]:
    code = main(["--home", str(home), "doctor", "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_healthy_demo_has_no_failing_line(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, findings = run(home, capsys)
    verdicts = {f["what"]: f["verdict"] for f in findings}
    assert code == 0 and "fail" not in verdicts.values()
    assert {"settings", "firm database", "account operating", "account trust", "email", "state store",
            "store lock", "disk", "service"} <= verdicts.keys()
    email = next(f for f in findings if f["what"] == "email")
    assert email["verdict"] == "warn" and "[smtp]" in email["fix"]  # not set up in the demo: says what to set
    assert main(["--home", str(home), "doctor"]) == 0
    assert "firm database" in capsys.readouterr().out


def test_a_running_agent_is_an_ok_line_in_an_ok_lines_words(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rt = Runtime.for_home(home)
    lock = rt.store.instance_lock()
    lock.acquire()  # as a running agent holds it
    try:
        _, findings = run(home, capsys)
    finally:
        lock.release()
        rt.close()
    [held] = [f for f in findings if f["what"] == "store lock"]
    assert held["verdict"] == "ok" and "already running" not in held["detail"]
    assert held["detail"].startswith(("the agent is running (", "held by "))


def test_a_broken_write_back_and_a_refusing_relay_fail_with_the_fix(home: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    mapping = home / "mapping.yaml"
    mapping.write_text(mapping.read_text().replace("received_at, method)", "received_at, methd)"))
    config = home / "ledgerlink.toml"
    config.write_text(config.read_text() + f'\n[smtp]\nhost = "127.0.0.1"\nport = {closed_port()}\n'
                      'security = "none"\nfrom_address = "billing@example.com"\n')
    code, findings = run(home, capsys)
    failing = {f["what"]: f for f in findings if f["verdict"] == "fail"}
    assert code == 1
    assert any("methd" in f["detail"] for f in failing.values())
    assert "email" in failing and "[smtp]" in failing["email"]["fix"]
    with sqlite3.connect(home / "demo-firm.db") as firm:
        assert firm.execute("SELECT count(*) FROM receipts").fetchone() == (0,)  # the rehearsal wrote nothing


def closed_port() -> int:
    """A local port with nobody listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_staff_who_may_sign_in_and_a_shared_token_still_in_use(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    findings = run(home, capsys)[1]
    staff = next(f for f in findings if f["what"] == "staff")
    assert staff["verdict"] == "warn" and "ledgerlink api login-link" in staff["fix"]  # nobody yet on a new home
    rt = Runtime.for_home(home)
    rt.secrets.set("api-token", "old-shared-clerk-token-0123456789")  # an upgrade from 0.2
    settle_users(rt)
    rt.close()
    findings = run(home, capsys)[1]
    assert next(f for f in findings if f["what"] == "staff")["detail"] == "2 may sign in, 1 of them admin"
    shared = next(f for f in findings if f["what"] == "api tokens")
    assert shared["verdict"] == "warn" and "'ledgerlink api token --revoke 1'" in shared["fix"]
    assert "old-shared" not in json.dumps(findings)
    assert main(["--home", str(home), "api", "token", "--revoke", "1"]) == 0
    capsys.readouterr()
    assert not [f for f in run(home, capsys)[1] if f["what"] == "api tokens"]
