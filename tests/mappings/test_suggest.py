"""The mapping assistant: ``mapping suggest`` recognises a shipped mapping by the tables and columns it reads, or
drafts one with every proposal marked ``# guess:``; the agent runs on no mapping while a guess is left; and
``init --firm`` makes a production home from which the first payment is posted once the guesses are confirmed."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from money_support import SandboxMoney, paid, post_all

from agent.cli.main import main
from agent.core.errors import ConfigurationError
from agent.engine.sync import Syncer
from agent.home.demo import create_demo_firm
from agent.home.settings import load_settings
from agent.runtime import Runtime
from connectors.database.introspect import read_catalog
from mappings.format import MappingErrors, load_mapping, parse_mapping
from mappings.suggest import GUESS, draft, recognise

MATTER = "M-2026-0010"


@pytest.fixture
def practice(tmp_path: Path) -> Path:
    """A firm database shaped like the demo firm's, somewhere other than an agent home."""
    return create_demo_firm(tmp_path / "practice" / "firm.db")


def confirmed(text: str) -> str:
    """The draft as an admin leaves it once every guess is checked: the '# guess' comments deleted."""
    return re.sub(r"[ \t]*# guess:.*$", "", text, flags=re.M)


def test_the_demo_schema_is_recognised_and_a_draft_proposes_it_line_by_line(practice: Path) -> None:
    catalog = read_catalog(url=f"sqlite:///{practice}")
    assert [m.path.name for m in recognise(catalog)] == ["demo.yaml"]
    bills = catalog.table("bills")
    assert bills is not None and bills.refers_to("matters") == "matter_id" and bills.primary_key == ("id",)
    state = bills.column("state")
    assert state is not None and state.samples == ("OPEN",)  # a few distinct values, for status_values

    d = draft(catalog, ["source:", f"  url: sqlite:///{practice}"], name="Okafor & Co")
    text = d.text()
    proposals = [line for line in text.splitlines() if GUESS in line]
    assert d.guesses == len(proposals) > 30  # every proposal carries its reason
    assert "    table: bills" in text and "      amount: total_pence" in text and "money: minor_units" in text
    assert "      matter_key: matter_id" in text and "status_values: {open: [A], closed: [C]}" in text
    assert "INSERT INTO receipts (reference, bill_id, amount_pence, received_at, method) VALUES (:reference, " \
           ":statement_key, :amount_minor, :paid_at_local, :method)" in text
    with pytest.raises(MappingErrors) as refused:  # unconfirmed: refused, each guess named by its line
        parse_mapping(text, Path("draft.yaml"))
    lines = [line for line, where, _ in refused.value.problems if where == "(draft)"]
    assert lines == [n for n, line in enumerate(text.splitlines(), start=1) if GUESS in line]
    assert "draft.yaml:" in str(refused.value) and "delete the '# guess' comment" in str(refused.value)
    mapping = parse_mapping(confirmed(text), Path("draft.yaml"))
    assert set(mapping.entities) == {"clients", "payers", "matters", "statements"}
    assert mapping.entities["statements"].money == "minor_units"


def test_a_database_with_no_matters_or_bills_gets_no_draft(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE widgets (id INTEGER PRIMARY KEY, colour TEXT)")
    with pytest.raises(ConfigurationError, match="no table in the database is named like matters or statements"):
        draft(read_catalog(url=f"sqlite:///{path}"), ["source:"], name="x")


def test_suggest_command(practice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    out = tmp_path / "suggested.yaml"
    assert main(["--home", str(home), "mapping", "suggest", "--url", f"sqlite:///{practice}", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "recognised 'Demo firm'" in said and "demo.yaml" in said
    assert load_mapping(out).source.url == f"sqlite:///{practice}"  # the shipped mapping, pointed at this database
    assert main(["--home", str(home), "mapping", "suggest", "--url", f"sqlite:///{practice}", "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err  # nothing is overwritten unasked
    assert main(["--home", str(home), "mapping", "suggest", "--url", f"sqlite:///{practice}", "--draft"]) == 0
    printed = capsys.readouterr()
    assert GUESS in printed.out and "proposals marked '# guess:'" in printed.err
    for wrong, message in ((f"sqlite:///{tmp_path / 'none.db'}", "there is no SQLite database"),
                           ("postgresql://admin:hunter2@127.0.0.1/x", "the password is written"),
                           ("nosuchdb://x", "--url")):
        assert main(["--home", str(home), "mapping", "suggest", "--url", wrong]) == 2, wrong
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and "hunter2" not in err
    with pytest.raises(SystemExit) as bad_argument:
        main(["--home", str(home), "mapping", "suggest", "--url", f"sqlite:///{practice}", "--currency", "pounds"])
    assert bad_argument.value.code == 2
    assert "not an ISO currency code" in capsys.readouterr().err


def test_init_firm_to_the_first_posted_payment(practice: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init", "--firm", f"sqlite:///{practice}", "--draft", "--name",
                 "Okafor & Co"]) == 0
    assert "proposals marked '# guess:'" in capsys.readouterr().out
    settings = load_settings(home)
    assert list(settings.accounts) == ["operating"] and settings.trust_accounts == []  # no demo accounts
    assert settings.service_name == "Okafor & Co" and not (home / "demo-firm.db").exists()
    assert main(["--home", str(home), "check"]) == 2  # a draft: the agent does not run on it
    assert "unconfirmed guess" in capsys.readouterr().err
    assert main(["--home", str(home), "init", "--firm", f"sqlite:///{practice}"]) == 2  # the firm's work is kept
    assert "already set up" in capsys.readouterr().err

    mapping = home / "mapping.yaml"
    mapping.write_text(confirmed(mapping.read_text()))
    assert main(["--home", str(home), "mapping", "check", str(mapping)]) == 0
    assert main(["--home", str(home), "check"]) == 0  # connects and rehearses the posting statements
    rt = Runtime.for_home(home)
    try:
        Syncer(rt.store, rt.connector).sync()
        paid(rt, SandboxMoney(home), MATTER, "25.00", "operating", "bank")
        post_all(rt)
    finally:
        rt.close()
    with sqlite3.connect(practice) as conn:
        receipts = conn.execute("SELECT amount_pence, method FROM receipts").fetchall()
    assert receipts == [(2500, "bank")]  # the firm's own receipts table, by the drafted INSERT
