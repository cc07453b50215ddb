"""``ledgerlink audit list|export|verify``: the CLI acts as the OS user, lists and filters the trail, exports it
through the shared exporter, and verify exits 0 "n entries, chain intact" or 1 naming the first bad entry."""

from __future__ import annotations

import csv
import getpass
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from agent.cli.main import main
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state.schema import audit_log

MATTER = "M-2026-0010"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    init_home(home)
    rt = Runtime.for_home(home)
    Syncer(rt.store, rt.connector).sync()
    rt.close()
    return home


def run(home: Path, *args: str) -> int:
    return main(["--home", str(home), *args])


def test_list_export_and_verify(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "links", "create", "--matter", MATTER) == 0
    capsys.readouterr()
    assert run(home, "audit", "verify") == 0
    assert capsys.readouterr().out.strip() == "1 entries, chain intact"
    assert run(home, "audit", "list", "--user", getpass.getuser()) == 0
    listed = capsys.readouterr().out
    assert f"cli:{getpass.getuser()}" in listed and "link.create" in listed and "link:lnk_" in listed
    assert run(home, "audit", "list", "--user", "nobody-here") == 0
    assert capsys.readouterr().out.strip() == "no audit entries match"
    assert run(home, "audit", "list", "--since", "2999-01-01") == 0
    assert "no audit entries match" in capsys.readouterr().out
    out = tmp_path / "trail.csv"
    assert run(home, "audit", "export", "-o", str(out), "--object", MATTER) == 0  # a matter's id: no entry
    assert run(home, "audit", "export", "-o", str(out)) == 0
    with out.open(encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    assert rows[0][:5] == ["Entry", "When", "Who", "Action", "Object"] and rows[1][3] == "link.create"
    assert "wrote 1 audit entry" in capsys.readouterr().out


def test_verify_names_the_first_edited_or_deleted_entry(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "links", "create", "--matter", MATTER) == 0
    assert run(home, "links", "quick", "--name", "Ada", "--email", "ada@example.com", "--amount", "10.00") == 0
    rt = Runtime.for_home(home)
    with rt.store.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(actor="user:mallory"))
    capsys.readouterr()
    assert run(home, "audit", "verify") == 1
    assert capsys.readouterr().out.strip() == (
        "audit trail broken at entry 2: entry 2 was changed after it was written (its hash does not match)")
    with rt.store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 1))
    rt.close()
    assert run(home, "audit", "verify") == 1
    assert capsys.readouterr().out.strip() == "audit trail broken at entry 2: entry 1 was deleted (entry 2 comes next)"
