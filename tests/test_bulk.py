"""Bulk upload: every rule of the format, a bad file sends nothing, 10,000 rows checked in seconds."""

from __future__ import annotations

import csv
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from agent.bulk import TEMPLATE_HEADER, read_bulk
from agent.cli import init_home, main

HEADER = ",".join(TEMPLATE_HEADER)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def test_csv_with_bom_and_uk_dates(tmp_path: Path) -> None:
    f = write(tmp_path / "ok.csv", HEADER + "\nQ-1,01/11/2026,2026-12-01,Siobhán Ó Súilleabháin,s@example.com,"
              "\"1,250.50\",Thanks\n", encoding="utf-8-sig")
    bulk = read_bulk(f)
    assert bulk.ok and bulk.rows[0].amount == Decimal("1250.50") and bulk.rows[0].name.startswith("Siobhán")
    assert bulk.rows[0].invoice_date.isoformat() == "2026-11-01"


@pytest.mark.parametrize("sep", ["\t", "|"])
def test_txt_tab_or_pipe(tmp_path: Path, sep: str) -> None:
    f = write(tmp_path / "ok.txt", sep.join(TEMPLATE_HEADER) + "\n" + sep.join(
        ["Q-2", "2026-11-01", "2026-12-01", "Ada", "ada@example.com", "10.00", ""]) + "\n")
    assert read_bulk(f).ok


def test_every_bad_row_and_field_is_reported(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.csv", HEADER + "\n"
              "Q-1,2026-11-01,2026-12-01,Ada,ada@example.com,10.00,\n"       # row 2 fine
              ",2026-11-01,2026-12-01,Bob,bob@example.com,10.00,\n"          # row 3 missing invoice
              "Q-3,31/02/2026,2026-12-01,Cy,cy@example.com,10.00,\n"         # row 4 bad date
              "Q-4,2026-11-01,2026-12-01,Di,di-at-example,10.00,\n"          # row 5 bad email
              "Q-5,2026-11-01,2026-12-01,Ed,ed@example.com,-1,\n"            # row 6 amount <= 0
              "Q-6,2026-11-01,2026-12-01,Fi,fi@example.com,1.005,\n"         # row 7 too many decimals
              "Q-1,2026-11-01,2026-12-01,Gus,gus@example.com,5,\n"           # row 8 duplicate invoice
              "Q-9,2026-11-01,2026-12-01,Hal,hal@example.com,abc,\n"         # row 9 not a number
              "Q-OUT,2026-11-01,,Ida,ida@example.com,5,\n")                  # row 10 missing due, outstanding
    bulk = read_bulk(f, outstanding_invoices={"Q-OUT"})
    got = {(p.row, p.field, p.message.split(":")[0]) for p in bulk.problems}
    assert got == {
        (3, "Invoice Number", "missing"), (4, "Invoice Date", "bad date"), (5, "Recipient Email", "bad email address"),
        (6, "Amount", "amount must be more than zero"), (7, "Amount", "bad amount"),
        (8, "Invoice Number", "duplicate invoice number (also on row 2)"), (9, "Amount", "bad amount"),
        (10, "Due Date", "missing"), (10, "Invoice Number", "already on an outstanding link"),
    }
    assert not bulk.ok


def test_missing_columns(tmp_path: Path) -> None:
    bulk = read_bulk(write(tmp_path / "h.csv", "Invoice Number,Amount\nQ-1,5\n"))
    assert bulk.problems[0].row == 1 and "Recipient Email" in bulk.problems[0].message


def test_ten_thousand_rows_in_seconds(tmp_path: Path) -> None:
    f = tmp_path / "big.csv"
    with f.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(TEMPLATE_HEADER)
        for i in range(10_000):
            w.writerow([f"Q-{i}", "2026-11-01", "01/12/2026", f"Payer {i}", f"p{i}@example.com", f"{i + 1}.25", "x"])
    start = time.perf_counter()
    bulk = read_bulk(f)
    assert bulk.ok and len(bulk.rows) == 10_000
    assert time.perf_counter() - start < 5


def test_cli_bad_file_sends_nothing_good_file_makes_links(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    init_home(home)
    assert main(["--home", str(home), "bulk", "template", "-o", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().strip() == HEADER
    bad = write(tmp_path / "bad.csv", HEADER + "\nQ-1,2026-11-01,2026-12-01,Ada,ada@example.com,10.00,\n"
                "Q-2,2026-11-01,2026-12-01,Bob,nope,10.00,\n")
    assert main(["--home", str(home), "bulk", "links", str(bad), "-o", str(tmp_path / "out.csv")]) == 1
    assert "row 3, Recipient Email: bad email address" in capsys.readouterr().out
    assert not (home / "sandbox.db").exists() or sqlite3.connect(home / "sandbox.db").execute(
        "SELECT COUNT(*) FROM links").fetchone()[0] == 0
    good = write(tmp_path / "good.csv", HEADER + "\nQ-1,2026-11-01,2026-12-01,Ada,ada@example.com,10.00,Fees\n")
    assert main(["--home", str(home), "bulk", "links", str(good), "-o", str(tmp_path / "out.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert rows[0]["Link"].startswith("http://127.0.0.1") and rows[0]["Status"] == "outstanding"
    assert main(["--home", str(home), "bulk", "check", str(good)]) == 1  # Q-1 is now on an outstanding link
