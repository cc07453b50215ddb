"""Bulk upload: every rule of the format, a bad file lists every problem and sends nothing, the review step,
Send All through a real SMTP server, links for download, and 10,000 rows checked in seconds."""

from __future__ import annotations

import csv
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest
from delivery_support import configure, smtp_server

from agent.cli.main import main
from agent.engine.bulk import TEMPLATE_HEADER, read_bulk

HEADER = ",".join(TEMPLATE_HEADER)
GOOD = "Q-1,2026-11-01,2026-12-01,Ada,ada@example.com,10.00,Fees\n"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def provider_links(home: Path) -> int:
    db = home / "sandbox.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        count: int = conn.execute("SELECT COUNT(*) FROM links").fetchone()[0]
        return count


def test_csv_with_bom_uk_dates_and_thousands(tmp_path: Path) -> None:
    f = write(tmp_path / "ok.csv", HEADER + "\nQ-1,01/11/2026,2026-12-01,Siobhán Ó Súilleabháin,s@example.com,"
              "\"£1,250.50\",Thanks\n", encoding="utf-8-sig")
    bulk = read_bulk(f)
    assert bulk.ok
    row = bulk.rows[0]
    assert (row.row, row.invoice_number, row.amount, row.recipient_name) == (2, "Q-1", Decimal("1250.50"),
                                                                             "Siobhán Ó Súilleabháin")
    assert (row.invoice_date.isoformat(), row.due_date.isoformat(), row.message) == ("2026-11-01", "2026-12-01",
                                                                                     "Thanks")
    request = row.to_request("trust")
    assert (request.amount, request.email, request.invoice, request.account) == (Decimal("1250.50"),
                                                                                 "s@example.com", "Q-1", "trust")


@pytest.mark.parametrize("sep", ["\t", "|"])
def test_txt_tab_or_pipe(tmp_path: Path, sep: str) -> None:
    f = write(tmp_path / "ok.txt", sep.join(TEMPLATE_HEADER) + "\n" + sep.join(
        ["Q-2", "2026-11-01", "2026-12-01", "Ada", "ada@example.com", "10.00", ""]) + "\n")
    bulk = read_bulk(f)
    assert bulk.ok and bulk.rows[0].amount == Decimal("10.00")


def test_headers_case_insensitive_with_aliases_in_any_order(tmp_path: Path) -> None:
    f = write(tmp_path / "alias.csv", "EMAIL,amount due,invoice no,Name,DATE,Due,Message\n"
              "a@example.com,5,Q-9,Ada,2026-11-01,2026-11-30,\n")
    row = read_bulk(f).rows[0]
    assert (row.invoice_number, row.recipient_email, row.amount) == ("Q-9", "a@example.com", Decimal(5))


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
              "Q-OUT,2026-11-01,,Ida,ida@example.com,5,\n"                   # row 10 missing due, outstanding
              "Q-11,2026-12-01,2026-11-01,,jo@example.com,0,\n")             # row 11 due<date, no name, zero
    bulk = read_bulk(f, outstanding_invoices={"Q-OUT"})
    got = {(p.row, p.field, p.reason) for p in bulk.problems}
    assert got == {
        (3, "Invoice Number", "missing"),
        (4, "Invoice Date", "bad date: use YYYY-MM-DD or DD/MM/YYYY"),
        (5, "Recipient Email", "bad email address"),
        (6, "Amount", "bad amount: '-1' must be more than zero"),
        (7, "Amount", "bad amount: 1.005 has more than 2 decimal places, which GBP allows"),
        (8, "Invoice Number", "duplicate invoice number (also on row 2)"),
        (9, "Amount", "bad amount: 'abc' is not a number"),
        (10, "Due Date", "missing"), (10, "Invoice Number", "already on an outstanding link"),
        (11, "Recipient Name", "missing"), (11, "Due Date", "due date is before the invoice date"),
        (11, "Amount", "bad amount: '0' must be more than zero"),
    }
    assert [r.row for r in bulk.rows] == [2] and not bulk.ok
    assert {p.value for p in bulk.problems if p.row in (5, 9)} == {"di-at-example", "abc"}


def test_currency_decides_the_decimals(tmp_path: Path) -> None:
    f = write(tmp_path / "yen.csv", HEADER + "\nQ-1,2026-11-01,2026-12-01,Ada,ada@example.com,10.50,\n")
    assert read_bulk(f).ok
    assert [p.reason for p in read_bulk(f, currency="JPY").problems] == [
        "bad amount: 10.50 has more than 0 decimal places, which JPY allows"]


def test_file_level_problems(tmp_path: Path) -> None:
    header_only = write(tmp_path / "h.csv", "Invoice Number,Invoice Date,Due Date,Amount,Custom Message\nQ-1\n")
    assert read_bulk(header_only).problems[0].reason == "missing column(s): Recipient Name, Recipient Email"
    assert read_bulk(write(tmp_path / "empty.csv", "")).problems[0].reason.startswith("the file is empty")
    assert read_bulk(write(tmp_path / "head.csv", HEADER + "\n")).problems[0].reason == "no rows below the header"
    latin = tmp_path / "latin.csv"
    latin.write_bytes((HEADER + "\nQ-1,2026-11-01,2026-12-01,Sinéad,s@example.com,1,\n").encode("latin-1"))
    assert read_bulk(latin).problems[0].reason.startswith("not UTF-8 text")


def test_ten_thousand_rows_in_seconds(tmp_path: Path) -> None:
    f = tmp_path / "big.csv"
    with f.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(TEMPLATE_HEADER)
        for i in range(10_000):
            w.writerow([f"Q-{i}", "2026-11-01", "01/12/2026", f"Payer {i}", f"p{i}@example.com", f"{i + 1}.25", "x"])
    seen: list[int] = []
    start = time.perf_counter()
    bulk = read_bulk(f, outstanding_invoices={f"OLD-{i}" for i in range(5000)}, progress=lambda d, t: seen.append(d))
    assert time.perf_counter() - start < 5
    assert bulk.ok and len(bulk.rows) == 10_000 and seen[-1] == 10_000 and len(seen) == 10


def test_cli_bad_file_lists_every_problem_and_sends_nothing(home: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path / "bad.csv", HEADER + "\n" + GOOD + "Q-2,2026-11-01,2026-12-01,Bob,nope,10.00,\n"
                "Q-3,2026-11-01,2026-12-01,Cy,cy@example.com,,\n")
    assert main(["--home", str(home), "bulk", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "row 3, Recipient Email: bad email address ('nope')" in out
    assert "row 4, Amount: missing" in out
    assert main(["--home", str(home), "bulk", "links", str(bad), "-o", str(tmp_path / "out.csv")]) == 1
    with smtp_server() as (box, port):
        configure(home, port)
        assert main(["--home", str(home), "bulk", "send", str(bad), "--account", "operating"]) == 1
        assert box.messages == []
    assert provider_links(home) == 0 and not (tmp_path / "out.csv").exists()
    capsys.readouterr()
    assert main(["--home", str(home), "bulk", "check", "--json", str(bad)]) == 1
    assert '"reason": "bad email address"' in capsys.readouterr().out


def test_template_and_links_for_download(home: Path, tmp_path: Path) -> None:
    assert main(["--home", str(home), "bulk", "template", "-o", str(tmp_path / "t.csv")]) == 0
    header, example = (tmp_path / "t.csv").read_text().strip().splitlines()
    assert header == HEADER and example.startswith("EXAMPLE-1,2026-12-01,31/12/2026,")  # shows every format
    template = read_bulk(tmp_path / "t.csv")  # read as it is: only the example row's own refusal
    assert [(p.row, p.field, p.reason) for p in template.problems] == [
        (2, "Invoice Number", "the template's example row: delete it or replace it with a real invoice")]
    good = write(tmp_path / "good.csv", HEADER + "\n" + GOOD)
    assert main(["--home", str(home), "bulk", "links", str(good), "-o", str(tmp_path / "out.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert rows[0]["Link"].startswith("http://127.0.0.1") and rows[0]["Status"] == "outstanding"
    assert provider_links(home) == 1
    assert main(["--home", str(home), "bulk", "check", str(good)]) == 1  # Q-1 is now on an outstanding link


def test_review_drops_and_adds_rows(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path / "src.txt", "\t".join(TEMPLATE_HEADER) + "\n"
                + "Q-1\t2026-11-01\t2026-12-01\tAda\tada@example.com\t10.00\tFees\n"
                + "Q-2\t2026-11-01\t2026-12-01\tBob\tnope\t10.00\t\n")
    out = tmp_path / "edited.csv"
    assert main(["--home", str(home), "bulk", "review", str(src), "--drop", "3",
                 "--add", "Q-3,02/11/2026,2026-12-02,Cy Twombly,cy@example.com,\"1,000.00\",Thanks",
                 "-o", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "2 row(s) (1 dropped, 1 added)" in shown and "Cy Twombly <cy@example.com>" in shown
    bulk = read_bulk(out)
    assert bulk.ok and [(r.invoice_number, r.amount) for r in bulk.rows] == [("Q-1", Decimal("10.00")),
                                                                              ("Q-3", Decimal("1000.00"))]
    assert main(["--home", str(home), "bulk", "review", str(src), "-o", str(out)]) == 1  # the bad row is kept
    assert "row 3, Recipient Email: bad email address" in capsys.readouterr().out
    assert provider_links(home) == 0  # reviewing never creates links


def test_send_all_creates_and_emails_every_link(home: Path, tmp_path: Path) -> None:
    good = write(tmp_path / "good.csv", HEADER + "\n" + GOOD + "Q-2,2026-11-01,2026-12-01,Bob,bob@example.com,"
                 "20.00,\n")
    with smtp_server() as (box, port):
        configure(home, port)
        assert main(["--home", str(home), "bulk", "send", str(good), "--account", "trust"]) == 0
    assert sorted(m["To"] for m in box.messages) == ["Ada <ada@example.com>", "Bob <bob@example.com>"]
    # The Custom Message is the firm's words in the email above the link; the description stays the payment's.
    ada = next(m for m in box.messages if m["To"] == "Ada <ada@example.com>")
    body = ada.get_body()  # the mailbox parses with policy.default: an EmailMessage
    assert body is not None
    text = body.get_content()
    custom = GOOD.split(",")[-1].strip()
    assert custom and custom in text
    with sqlite3.connect(home / "state.db") as conn:
        assert conn.execute("SELECT message, description FROM links WHERE invoice_number = 'Q-1'").fetchone()[0] \
            == custom
        assert custom not in conn.execute("SELECT description FROM links WHERE invoice_number = 'Q-1'").fetchone()[0]
    assert provider_links(home) == 2
    with sqlite3.connect(home / "state.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM sends WHERE ok AND channel = 'email'").fetchone()[0] == 2
        assert {r[0] for r in conn.execute("SELECT account FROM links")} == {"trust"}
