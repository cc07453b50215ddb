"""Export to Excel and CSV: read the files back and check the header, typed cells and chosen column order."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook
from tests_support import STAFF

from agent.cli.main import main
from agent.core.errors import RuleError
from agent.engine.export import money_format
from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from connectors.providers import sandbox

MATTER = "M-2026-0010"  # INV-1001 (644.30) + INV-1002 (1443.75)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    init_home(home)
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    Syncer(rt.store, rt.connector).sync()
    rt.links.create(STAFF, LinkRequest(amount=Decimal("1250.50"), name="Ada", email="ada@example.com", invoice="Q-1",
                                due_date=dt.date(2026, 12, 1), description="Fees"))
    cancelled = rt.links.create(STAFF, LinkRequest(amount=Decimal("7.00"), name="Bo", email="bo@example.com",
                                                   invoice="Q-2"))
    rt.links.cancel(STAFF, cancelled.id)
    paid = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    assert paid.provider_ref is not None
    sandbox.pay(home, paid.provider_ref)
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
    rt.close()
    yield home


def test_links_workbook_has_typed_cells(home: Path) -> None:
    out = home / "sent.xlsx"
    assert main(["--home", str(home), "links", "export", "--status", "outstanding", "-o", str(out)]) == 0
    ws = load_workbook(out).active
    header = [c.value for c in ws[1]]
    assert header[:6] == ["Created", "Status", "Invoice Number", "Recipient Name", "Recipient Email", "Amount"]
    rows = [dict(zip(header, (c for c in r), strict=True)) for r in ws.iter_rows(min_row=2)]
    assert len(rows) == 1  # only the outstanding link
    row = rows[0]
    assert row["Amount"].value == 1250.5 and row["Amount"].data_type == "n"
    assert row["Amount"].number_format == '"£"#,##0.00'
    assert isinstance(row["Created"].value, dt.datetime) and row["Created"].is_date
    assert row["Due Date"].value.date() == dt.date(2026, 12, 1) and row["Due Date"].number_format == "dd/mm/yyyy"
    assert isinstance(row["Expires"].value, dt.datetime) and row["Expires"].value > row["Created"].value
    assert row["Invoice Number"].value == "Q-1" and row["Status"].value == "Outstanding"


def test_columns_choose_and_order(home: Path) -> None:
    out = home / "chosen.xlsx"
    assert main(["--home", str(home), "links", "export", "--columns", "amount,invoice_number,status", "-o",
                 str(out)]) == 0
    ws = load_workbook(out).active
    values = [[c.value for c in r] for r in ws.iter_rows()]
    assert values[0] == ["Amount", "Invoice Number", "Status"]
    assert sorted(values[1:], key=lambda r: r[2]) == [[7, "Q-2", "Cancelled"], [1250.5, "Q-1", "Outstanding"],
                                                      [2088.05, None, "Payment received"]]  # in words


def test_unknown_column_lists_the_valid_ones(home: Path) -> None:
    rt = Runtime.for_home(home)
    with pytest.raises(RuleError, match=r"unknown column\(s\) nope; choose from: created_at, status, invoice_number"):
        rt.exporter.links(home / "x.xlsx", columns=["nope"])
    rt.close()


def test_postings_workbook(home: Path) -> None:
    out = home / "postings.xlsx"
    assert main(["--home", str(home), "postings", "export", "--columns",
                 "reference,statement_key,amount,created_at,state", "-o", str(out)]) == 0
    ws = load_workbook(out).active
    assert [c.value for c in ws[1]] == ["Reference", "Statement", "Amount", "Created", "State"]
    rows = list(ws.iter_rows(min_row=2))
    assert sorted(r[2].value for r in rows) == [644.3, 1443.75]  # one posting per statement paid
    assert all(r[2].number_format == '"£"#,##0.00' and isinstance(r[3].value, dt.datetime) for r in rows)


def test_csv_export_keeps_exact_decimals(home: Path) -> None:
    out = home / "sent.csv"
    assert main(["--home", str(home), "links", "export", "--columns", "invoice_number,amount,due_date,created_at",
                 "-o", str(out)]) == 0
    rows = list(csv.reader(out.open(encoding="utf-8-sig")))
    assert rows[0] == ["Invoice Number", "Amount", "Due Date", "Created"]
    by_invoice = {r[0]: r for r in rows[1:]}
    assert by_invoice["Q-1"][1:3] == ["1250.50", "2026-12-01"]
    assert dt.datetime.fromisoformat(by_invoice["Q-1"][3])
    out = home / "postings.csv"
    assert main(["--home", str(home), "postings", "export", "--columns", "amount,currency", "-o", str(out)]) == 0
    assert sorted(csv.reader(out.open(encoding="utf-8-sig")))[:2] == [["1443.75", "GBP"], ["644.30", "GBP"]]


def test_money_formats_follow_the_currency() -> None:
    assert money_format("GBP") == '"£"#,##0.00'
    assert money_format("JPY") == '#,##0 "JPY"'
    assert money_format("KWD") == '#,##0.000 "KWD"'


def test_payouts_export_item_by_item_with_typed_money(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox.pay_out(home)  # the fixture's paid link: 2088.05 by bank, a 2.00 (capped) fee
    assert main(["--home", str(home), "payouts", "sync"]) == 0
    out = home / "payouts.xlsx"
    assert main(["--home", str(home), "payouts", "export", str(out)]) == 0
    assert "2 payout item(s) written" in capsys.readouterr().out
    ws = load_workbook(out).active
    header = [c.value for c in ws[1]]
    assert header == ["Payout", "Account", "Created", "Bank Reference", "Bank Amount", "Currency", "Adds Up", "Item",
                      "Item Amount", "Payment Reference"]
    rows = [[c.value for c in r] for r in ws.iter_rows(min_row=2)]
    assert [(r[4], r[6], r[7], r[8]) for r in rows] == [(2086.05, "yes", "payment", 2088.05), (2086.05, "yes", "fee",
                                                                                               -2.00)]
    assert ws.cell(2, 5).number_format == money_format("GBP") and isinstance(ws.cell(2, 3).value, dt.datetime)
    csv_out = home / "payouts.csv"
    assert main(["--home", str(home), "payouts", "export", str(csv_out), "--columns", "kind,amount"]) == 0
    with csv_out.open(encoding="utf-8-sig") as f:
        assert list(csv.reader(f)) == [["Item", "Item Amount"], ["payment", "2088.05"], ["fee", "-2.00"]]
