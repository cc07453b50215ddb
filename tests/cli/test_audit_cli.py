"""``ledgerlink audit list|export|verify``: the CLI acts as the OS user, lists and filters the trail, exports it
through the shared exporter, and verify exits 0 "n entries, chain intact" or 1 naming the first bad entry."""

from __future__ import annotations

import csv
import getpass
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from agent.cli.main import main
from agent.core.model import Actor
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state import StateStore, audit
from agent.state.anchor import CHECKPOINTS
from agent.state.schema import audit_head, audit_log

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


def three_quick_links(home: Path) -> None:
    """Three audit entries, each checkpointed as its command ends."""
    for amount in ("10.00", "11.00", "12.00"):
        assert run(home, "links", "quick", "--name", "Ada", "--email", "ada@example.com", "--amount", amount) == 0


def keep_only_the_first_entry(home: Path) -> None:
    """The insider's cut: the newest entries deleted and the head moved back to entry 1, all in the state store."""
    rt = Runtime.for_home(home)
    with rt.store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq >= 2))
        first = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 1)).scalar_one()
        conn.execute(update(audit_head).values(seq=1, hash=first))
    rt.store.close()


def test_list_export_and_verify(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "links", "create", "--matter", MATTER) == 0
    capsys.readouterr()
    assert run(home, "audit", "verify") == 0
    said = capsys.readouterr().out.splitlines()
    assert said[:2] == ["1 entries, chain intact", "sealed from entry 1"]
    assert said[2].startswith("matches entry 1, the checkpoint of ") and said[2].endswith("audit-checkpoints.jsonl")
    # the demo mapping's audit section: the same checkpoint, copied into the firm's own database
    assert said[3].startswith("matches entry 1, the checkpoint of ") and said[3].endswith(
        "in the firm database's table ledgerlink_audit") and len(said) == 4
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


def test_an_entry_rewritten_with_every_hash_recomputed_fails_verify(home: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's attack through the command line: a 2000.00 entry edited to 20.00 under another actor, every
    hash after it recomputed with the public entry_hash and the head moved: verify names that entry."""
    assert run(home, "links", "quick", "--name", "Ada", "--email", "ada@example.com", "--amount", "2000.00") == 0
    assert run(home, "links", "create", "--matter", MATTER) == 0
    rt = Runtime.for_home(home)
    with rt.store.begin() as conn:
        rows = [dict(r) for r in conn.execute(select(audit_log).order_by(audit_log.c.seq)).mappings()]
        assert "2000.00" in rows[0]["after"]
        rows[0].update(after=rows[0]["after"].replace("2000.00", "20.00"), actor="user:mallory")
        prev = audit.GENESIS
        for row in rows:
            row["prev_hash"], row["hash"] = prev, audit.entry_hash({**row, "prev_hash": prev})
            prev = row["hash"]
            conn.execute(update(audit_log).where(audit_log.c.seq == row["seq"]).values(
                after=row["after"], actor=row["actor"], prev_hash=row["prev_hash"], hash=row["hash"]))
        conn.execute(update(audit_head).values(hash=prev))
    rt.store.close()
    capsys.readouterr()
    assert run(home, "audit", "verify") == 1
    assert capsys.readouterr().out.strip() == (
        "audit trail broken at entry 1: entry 1 was changed after it was written: its seal does not match (its "
        "hashes were recomputed without the audit key)")


def test_entries_deleted_from_the_end_are_named_against_a_copy_kept_elsewhere(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    three_quick_links(home)
    shipped = tmp_path / "shipped.jsonl"
    shutil.copy(home / CHECKPOINTS, shipped)
    keep_only_the_first_entry(home)
    (home / CHECKPOINTS).write_text((home / CHECKPOINTS).read_text().splitlines()[0] + "\n")  # the home copy too
    capsys.readouterr()
    assert run(home, "audit", "verify", "--checkpoint", str(shipped)) == 1
    said = capsys.readouterr().out.strip()
    assert said.startswith("audit trail broken at entry 2: entries 2 to 3 are missing: the checkpoint of ")
    assert said.endswith(f"in {shipped} says the trail reached entry 3")
    assert run(home, "audit", "verify", "--checkpoint", str(tmp_path / "nowhere.jsonl")) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_an_upgraded_trail_is_keyed_from_its_next_entry_and_doctor_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    init_home(home)
    older = StateStore(f"sqlite:///{home / 'state.db'}")  # an older agent: no keys, entries unsealed
    for n in range(3):
        with older.begin() as conn:
            audit.record(conn, Actor("cli", "bob"), "link.cancel", "link", f"lnk_{n}")
    older.close()
    assert run(home, "doctor", "--json") in (0, 1)
    found = {f["what"]: f for f in json.loads(capsys.readouterr().out)}
    assert found["audit trail"]["detail"] == (
        "keyed from entry 4 (entries 1 to 3 sealed by the first checkpoint), sealed with key k1")
    assert found["audit checkpoints"]["verdict"] == "ok"
    assert found["audit checkpoints"]["detail"].startswith("latest: entry 3 at ")
    assert found["audit copy"]["verdict"] == "ok"  # the sealing checkpoint went to the firm database too
    assert found["audit copy"]["detail"].startswith("latest: entry 3 at ")
    assert found["audit copy"]["detail"].endswith(" UTC in the firm database's table ledgerlink_audit")
    assert run(home, "audit", "verify") == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "3 entries, chain intact", "sealed from entry 4; entries 1 to 3 by the first checkpoint"]
    monkeypatch.setattr("sys.stdin", io.StringIO("attacker's keys\n"))
    assert run(home, "secrets", "set", "audit-keys", "--stdin") == 2
    assert "managed by the agent" in capsys.readouterr().err


def test_entries_deleted_with_every_copy_in_the_home_rewritten_are_named_by_the_firm_databases_copy(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An insider who holds the state store and the agent's home (not the firm database): deletes the newest
    entries, moves the head back and cuts the checkpoint file to match. The demo mapping's audit section put a
    copy of each checkpoint in the firm's own ledgerlink_audit table, which still says how far the trail went."""
    three_quick_links(home)
    firm = sqlite3.connect(home / "demo-firm.db")
    rows = firm.execute("SELECT seq, COUNT(*) FROM ledgerlink_audit GROUP BY seq ORDER BY seq").fetchall()
    assert rows == [(0, 1), (1, 1), (2, 1), (3, 1)]  # one row per checkpoint (0: the sealing one), none twice
    keep_only_the_first_entry(home)
    lines = (home / CHECKPOINTS).read_text().splitlines()
    (home / CHECKPOINTS).write_text("\n".join(lines[:2]) + "\n")  # the sealing checkpoint and entry 1's
    capsys.readouterr()
    assert run(home, "audit", "verify") == 1
    said = capsys.readouterr().out.strip()
    assert said.startswith("audit trail broken at entry 2: entries 2 to 3 are missing: the checkpoint of ")
    assert said.endswith("in the firm database's table ledgerlink_audit says the trail reached entry 3")
    firm.close()


def test_a_row_put_into_the_firm_databases_audit_table_by_someone_else_fails_verify(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "links", "quick", "--name", "Ada", "--email", "ada@example.com", "--amount", "10.00") == 0
    with sqlite3.connect(home / "demo-firm.db") as firm:
        firm.execute("INSERT INTO ledgerlink_audit VALUES (9, ?, '2026-12-07T10:00:00Z', ?, ?)",
                     ("ab" * 32, "cd" * 32, "ef" * 64))
    firm.close()
    capsys.readouterr()
    assert run(home, "audit", "verify") == 1
    assert capsys.readouterr().out.strip() == (
        "audit trail broken: the row of entry 9 in ledgerlink_audit is a checkpoint this agent's audit "
        "key did not sign: it was written or altered by someone else")


def test_a_firm_database_that_cannot_take_the_copy_costs_the_command_nothing_and_gets_it_next_time(
        home: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    with sqlite3.connect(home / "demo-firm.db") as firm:
        firm.execute("ALTER TABLE ledgerlink_audit RENAME TO audit_elsewhere")
    firm.close()
    assert run(home, "links", "quick", "--name", "Ada", "--email", "ada@example.com", "--amount", "10.00") == 0
    assert "not copied to the firm database" in caplog.text and "ledgerlink_audit" in caplog.text
    assert len((home / CHECKPOINTS).read_text().splitlines()) == 2  # the home's copy was written all the same
    capsys.readouterr()
    assert run(home, "check") == 2  # the rehearsal names the missing table before a checkpoint needs it
    assert "audit" in capsys.readouterr().out
    with sqlite3.connect(home / "demo-firm.db") as firm:
        firm.execute("ALTER TABLE audit_elsewhere RENAME TO ledgerlink_audit")
    firm.close()
    rt = Runtime.for_home(home)
    rt.checkpoints.write()  # the head has not moved since: nothing new for the home's file or the firm's table
    assert [row[0] for row in rt.connector.newest_checkpoints()] == [0]  # the sealing one, written before
    rt.checkpoints.write(force=True)
    assert [row[0] for row in rt.connector.newest_checkpoints()] == [1]
    rt.close()
