"""Issue 19: a credential stored or deleted with ``ledgerlink secrets`` is a configuration change, one audit entry
with the OS user and the secret's name, never its value; a refused one (the env backend) one failed entry."""

from __future__ import annotations

import getpass
import io
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.home.demo import init_home
from agent.home.secrets import Secrets
from agent.runtime import Runtime
from agent.state import audit

VALUE = "sk-live-value-never-audited"


def entries(home: Path) -> list[audit.Entry]:
    rt = Runtime.for_home(home)
    try:
        assert audit.check(rt.store, rt.audit_seal, rt.checkpoint_file).intact
        with rt.store.read() as conn:
            return [e for e in audit.entries(conn) if e.object_kind == "secret"]
    finally:
        rt.close()


def test_secrets_set_and_delete_each_write_one_entry_without_the_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    init_home(home)
    monkeypatch.setattr("sys.stdin", io.StringIO(VALUE + "\n"))
    assert main(["--home", str(home), "secrets", "set", "stripe-key", "--stdin"]) == 0
    assert main(["--home", str(home), "secrets", "delete", "stripe-key"]) == 0
    me = f"cli:{getpass.getuser()}"
    found = entries(home)
    assert [(e.actor, e.action, e.object, e.outcome) for e in found] == [
        (me, "secret.set", "secret:stripe-key", "ok"), (me, "secret.delete", "secret:stripe-key", "ok")]
    assert found[0].after["stored_in"] and VALUE not in f"{found[0].before}{found[0].after}"

    config = home / "ledgerlink.toml"
    # a container's admin moving to environment secrets brings the audit keys along, or the sealed trail fails
    monkeypatch.setenv("LEDGERLINK_SECRET_AUDIT_KEYS", Secrets(home, "file").get("audit-keys"))
    config.write_text('secrets_backend = "env"\n' + config.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO(VALUE + "\n"))
    capsys.readouterr()
    assert main(["--home", str(home), "secrets", "set", "stripe-key", "--stdin"]) == 2
    assert "LEDGERLINK_SECRET_" in capsys.readouterr().err
    [refused] = entries(home)[2:]
    assert (refused.action, refused.outcome) == ("secret.set", "failed")
    assert "LEDGERLINK_SECRET_" in (refused.error or "")
