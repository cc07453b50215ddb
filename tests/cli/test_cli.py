"""The CLI on the demo firm: init, check, sync (incremental, sweep), search, statements, exit codes, --json."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from agent.cli.main import main


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    return home


def run(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--home", str(home), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_check_counts_and_watermarks(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(home, capsys, "check", "--json")
    report = json.loads(out)
    assert code == 0
    firm = sqlite3.connect(home / "demo-firm.db")
    expected = firm.execute("SELECT count(*) FROM bills").fetchone()[0]
    assert report["entities"]["statements"]["count"] == expected
    assert report["entities"]["statements"]["newest_watermark"]
    assert report["state_revision"]


def test_sync_is_incremental_and_notices_deletes(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(home, capsys, "sync", "--json")
    first = json.loads(out)
    assert code == 0 and first["rows"]["statements"] > 0
    firm = sqlite3.connect(home / "demo-firm.db")
    with firm:
        firm.execute("UPDATE bills SET balance_pence = 1234 WHERE bill_no = 'INV-1001'")
        firm.execute("DELETE FROM bills WHERE bill_no = 'INV-1003'")
    code, out, _ = run(home, capsys, "sync", "--sweep", "--json")
    second = json.loads(out)
    # Only the changed row (plus any inside the lookback window) is read again; the deleted one is swept.
    assert 1 <= second["rows"]["statements"] < first["rows"]["statements"]
    assert second["deleted"]["statements"] == 1
    code, out, _ = run(home, capsys, "statements", "--matter", "M-2026-0010", "--json")
    data = json.loads(out)
    balances = {s["number"]: s["balance"] for s in data["statements"]}
    assert balances["INV-1001"] == "12.34"  # exact decimal string in JSON, never a float


def test_search_and_statements(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(home, capsys, "sync")
    code, out, _ = run(home, capsys, "matters", "search", "okafor", "--json")
    found = json.loads(out)
    assert code == 0 and {m["number"] for m in found} == {"M-2026-0010", "M-2026-0011"}
    assert all(m["client_name"].endswith("Okafor") for m in found)
    code, out, _ = run(home, capsys, "matters", "search", "M-2026-0040")
    assert code == 0 and out.startswith("M-2026-0040")
    code, out, _ = run(home, capsys, "statements", "--matter", "M-2026-0010")
    assert code == 0 and "INV-1001" in out and "open balance GBP" in out


def test_search_by_invoice_number_and_with_a_typo(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(home, capsys, "sync")
    code, out, _ = run(home, capsys, "matters", "search", "INV-1001", "--json")
    assert code == 0 and [m["number"] for m in json.loads(out)] == ["M-2026-0010"]
    code, out, _ = run(home, capsys, "matters", "search", "okafr", "--json")  # a letter left out
    assert code == 0 and {m["number"] for m in json.loads(out)} == {"M-2026-0010", "M-2026-0011"}
    code, out, _ = run(home, capsys, "matters", "search", "zzqqxx")
    assert code == 0 and out.strip() == "no matter matches 'zzqqxx'"


def test_exit_codes(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(home, capsys, "sync")
    code, _, err = run(home, capsys, "statements", "--matter", "NOPE-1")
    assert code == 2 and "unknown matter 'NOPE-1'" in err
    for wrong in (["links", "create", "--matter", "NOPE-1"], ["links", "show", "lnk_nope"]):
        code, _, err = run(home, capsys, *wrong)  # a person's typo: exit 2 with what they named, no traceback
        assert code == 2 and ("unknown matter 'NOPE-1'" in err or "unknown link 'lnk_nope'" in err), err
    (home / "mapping.yaml").write_text("version: 1\nsource: {url: 'sqlite:///x.db'}\nentities: {}\n")
    code, _, err = run(home, capsys, "check")
    assert code == 2 and "entities must include matters, statements" in err


def test_mapping_check_lists_every_problem_with_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\n"
        "source:\n"
        "  url: postgresql://billing:hunter2@db/firm\n"
        "entities:\n"
        "  matters:\n"
        "    table: matters\n"
        "    key: id\n"
        "    columns: {number: matter_no, colour: tint}\n"
        "  statements:\n"
        "    table: bills\n"
        "    key: id\n"
        "    columns: {number: no, matter_key: matter}\n"
        "postings:\n"
        "  kind: sql\n"
        "  exists: SELECT 1 FROM receipts WHERE ref = :ref\n"
        "  statements: [\"INSERT INTO receipts VALUES (:reference, :amount)\"]\n"
    )
    assert main(["mapping", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: source.url: the password is written in the mapping file" in err
    assert f"{bad}:8: entities.matters.columns.colour: matters has no field 'colour'" in err
    assert f"{bad}:12: entities.statements.columns: required field 'amount' is not mapped" in err
    assert f"{bad}:15: postings.exists: unknown parameter :ref; valid: :reference" in err
    assert f"{bad}:15: postings.exists: the existence check must bind :reference" in err
    assert "hunter2" not in err


def test_mapping_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    demo = Path(__file__).parents[2] / "mappings" / "demo.yaml"
    assert main(["mapping", "check", str(demo)]) == 0
    assert "ok (clients, payers, matters, statements; postings: sql)" in capsys.readouterr().out


def test_every_option_has_help() -> None:
    """Issue 15 item 12: ``--help`` on any command explains every option and argument."""
    import argparse

    from agent.cli.main import build_parser

    def silent(parser: argparse.ArgumentParser, path: list[str]) -> list[str]:
        found = []
        for action in parser._actions:  # argparse keeps them here; reading them is the only way to walk it
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += silent(sub, [*path, name])
            elif not action.help and not isinstance(action, argparse._HelpAction):
                found.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
        return found

    assert silent(build_parser(), ["ledgerlink"]) == []


def test_check_rehearses_postings_and_refuses_a_missing_column(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(home, capsys, "check", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and {r["verdict"] for r in report["rehearsal"]} == {"ok"}
    assert "postings.statements.0" in [r["what"] for r in report["rehearsal"]]
    mapping = home / "mapping.yaml"
    mapping.write_text(mapping.read_text().replace("received_at, method)", "received_at, methd)"))
    code, out, _ = run(home, capsys, "check")
    assert code == 2
    assert "refused: postings.statements.0: rehearsing INSERT INTO receipts" in out and "methd" in out
    firm = sqlite3.connect(home / "demo-firm.db")
    assert firm.execute("SELECT count(*) FROM receipts").fetchone() == (0,)  # nothing was written


def test_one_bad_bill_is_quarantined_shown_by_check_and_the_rest_synced(home: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    firm = sqlite3.connect(home / "demo-firm.db")
    with firm:
        firm.execute("UPDATE bills SET balance_pence = 1234.5 WHERE bill_no = 'INV-1001'")
    total = firm.execute("SELECT count(*) FROM bills").fetchone()[0]
    code, out, _ = run(home, capsys, "sync")
    assert code == 0 and f"statements {total - 1}, " in out and "statements 1 quarantined" in out
    code, out, _ = run(home, capsys, "check")
    assert code == 0
    assert "warning: quarantined statements" in out and "(INV-1001) balance: 1234.5 is not whole minor units" in out
    with firm:
        firm.execute("UPDATE bills SET balance_pence = 1234 WHERE bill_no = 'INV-1001'")
    code, out, _ = run(home, capsys, "sync")
    assert code == 0 and "quarantined" not in out
    code, out, _ = run(home, capsys, "check")
    assert "quarantined" not in out


def test_an_interactive_command_prints_only_its_answer_and_logs_to_the_file(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 15 item 11: no INFO line among (or after) the result; the home's log file has it; -v shows it."""
    from agent.home.demo import init_home

    home = tmp_path / "home"
    init_home(home)
    assert main(["--home", str(home), "sync"]) == 0
    capfd.readouterr()
    assert main(["--home", str(home), "links", "create", "--matter", "M-2026-0010", "--json"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["status"] == "outstanding" and " INFO " not in out + err
    logged = (home / "logs" / "ledgerlink.log").read_text(encoding="utf-8")
    assert " INFO ledgerlink." in logged
    assert main(["--home", str(home), "-v", "links", "create", "--matter", "M-2026-0011"]) == 0
    assert " INFO ledgerlink.links: link lnk_" in capfd.readouterr().err  # -v shows them


def test_check_rehearses_the_client_money_sections_too(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(home, capsys, "check", "--json")
    rehearsed = {r["what"]: r["verdict"] for r in json.loads(out)["rehearsal"]}
    assert code == 0 and {rehearsed[f"postings.{s}.statements.0"] for s in
                          ("trust", "fees", "deposits", "transfers")} == {"ok"}
    mapping = home / "mapping.yaml"
    mapping.write_text(mapping.read_text().replace("VALUES (:reference, :account, :payout_id, :amount_minor, :paid_on,",
                                                   "VALUES (:reference, :account, :payout_id, :amount_minr, :paid_on,"))
    code, _, err = run(home, capsys, "check")
    assert code == 2 and "postings.fees.statements.0: unknown parameter :amount_minr" in err
    mapping.write_text(mapping.read_text().replace(":amount_minr", ":amount_minor")
                       .replace("amount_pence, incurred_on, description)", "amount_pence, incurred_onn, description)"))
    code, out, _ = run(home, capsys, "check")
    assert code == 2 and "refused: postings.fees.statements.0: rehearsing INSERT INTO office_expenses" in out
    assert "incurred_onn" in out
