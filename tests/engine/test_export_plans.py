"""Payment plans in the exports and on Sent Pages (issue 27, item 5): a row per instalment with its plan's columns,
read back from the .xlsx (typed cells) and the .csv (exact decimal text); the per-plan summary Sent Pages lists; the
``plans export`` command and the console's endpoints, refusing a wrong argument without a traceback or a 500."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from directdebit_support import (
    DUE,
    MATTER,
    TODAY,
    add_bill,
    home_fixture,  # noqa: F401  (pytest fixture "home")
    poll,
    rt_fixture,  # noqa: F401  (pytest fixture "rt")
    sync,
)
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from tests_support import STAFF, bearer

from agent.api.app import create_app
from agent.cli.main import main
from agent.core.errors import RuleError
from agent.engine.export import PLAN_COLUMNS, PLAN_DEFAULT, money_format, plan_summaries
from agent.engine.plans import LEAD_DAYS, PlanRequest, instalments
from agent.runtime import Runtime
from agent.state import audit
from connectors.providers import sandbox

FIRST = TODAY + dt.timedelta(days=LEAD_DAYS)  # the default first date: submitted as the plan is made


@dataclass(frozen=True)
class Made:
    cancelled: str  # 100.00 in 3 (33.33, 33.33, 33.34), the first submitted, then cancelled "paid by card"
    active: str  # 100.00 in 2 (50.00 each), the first paid
    paid_ref: str  # the provider's reference of the paid instalment


@pytest.fixture
def made(rt: Runtime, home: Path) -> Made:
    add_bill(home, "INV-X1", 10000, DUE)
    sync(rt)
    cancelled = rt.plans.create(STAFF, PlanRequest(MATTER, count=3)).id or ""
    rt.plans.cancel(STAFF, cancelled, "paid by card")
    active = rt.plans.create(STAFF, PlanRequest(MATTER, count=2)).id or ""
    collection = rt.plans.get(active).instalments[0].collection_id or ""
    ref = rt.directdebit.get_collection(collection).provider_ref or ""
    for status in ("submitted", "confirmed"):
        sandbox.set_collection(home, ref, status)
    poll(rt)
    return Made(cancelled, active, ref)


def monthly(n: int) -> dt.date:
    """The n-th (0: the first) instalment's date of a monthly plan made today."""
    return instalments(Decimal("3.00"), "GBP", count=3, first=FIRST)[n][0]


def test_the_workbook_has_a_typed_row_per_instalment_with_its_plans_columns(rt: Runtime, made: Made,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "plans.xlsx"
    assert rt.exporter.plans(out, columns=list(PLAN_COLUMNS)) == 5
    ws = load_workbook(out).active
    assert ws.title == "Payment plans"
    header = [c.value for c in ws[1]]
    assert header == [c.header for c in PLAN_COLUMNS.values()]
    rows = [dict(zip(header, r, strict=True)) for r in ws.iter_rows(min_row=2)]
    values = [[c.value for c in r.values()] for r in rows]
    # newest plan first, each plan's instalments in order; the plan's columns repeated on each
    assert [(v[0], v[10], v[11]) for v in values] == [(made.active, 1, 2), (made.active, 2, 2),
                                                      (made.cancelled, 1, 3), (made.cancelled, 2, 3),
                                                      (made.cancelled, 3, 3)]
    paid, scheduled, *gone = rows
    assert [c.value for c in paid.values()][2:10] == ["Active", MATTER, "Ada Direct", "operating", "INV-X1", 100,
                                                       "GBP", "monthly"]
    assert paid["Amount"].value == 50 and paid["Amount"].data_type == "n"
    assert paid["Amount"].number_format == paid["Plan Total"].number_format == money_format("GBP") == '"£"#,##0.00'
    assert paid["Instalment"].data_type == "n" and paid["Of"].data_type == "n"  # counts, not text
    assert paid["Due Date"].value == dt.datetime.combine(FIRST, dt.time()) and paid["Due Date"].number_format == \
        "dd/mm/yyyy"
    assert paid["Charge Date"].value == paid["Due Date"].value and paid["Charge Date"].is_date
    assert isinstance(paid["Plan Created"].value, dt.datetime) and paid["Plan Created"].number_format == \
        "dd/mm/yyyy hh:mm"
    assert (paid["State"].value, paid["Payment Reference"].value) == ("Paid", made.paid_ref)
    assert paid["Collection ID"].value.startswith("col_") and paid["Note"].value is None
    assert (scheduled["State"].value, scheduled["Collection ID"].value, scheduled["Charge Date"].value) == (
        "Scheduled", None, None)
    assert scheduled["Due Date"].value.date() == monthly(1)
    assert [(g["Plan Status"].value, g["State"].value, g["Amount"].value, g["Plan Note"].value) for g in gone] == [
        ("Cancelled", "Cancelled", 33.33, "paid by card"), ("Cancelled", "Cancelled", 33.33, "paid by card"),
        ("Cancelled", "Cancelled", 33.34, "paid by card")]
    assert [g["Note"].value for g in gone] == [None, "paid by card", "paid by card"]  # the first was with the bank


def test_the_csv_has_exact_decimals_and_iso_dates_and_the_default_columns(rt: Runtime, made: Made,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "plans.csv"
    assert rt.exporter.plans(out, statuses=["cancelled"]) == 3
    rows = list(csv.reader(out.open(encoding="utf-8-sig", newline="")))
    assert rows[0] == [PLAN_COLUMNS[c].header for c in PLAN_DEFAULT] == [
        "Plan ID", "Matter", "Payer", "Plan Status", "Instalment", "Of", "Due Date", "Amount", "Currency", "State",
        "Collection ID", "Payment Reference", "Note"]
    assert [r[4:10] for r in rows[1:]] == [
        ["1", "3", FIRST.isoformat(), "33.33", "GBP", "Cancelled"],
        ["2", "3", monthly(1).isoformat(), "33.33", "GBP", "Cancelled"],
        ["3", "3", monthly(2).isoformat(), "33.34", "GBP", "Cancelled"]]
    out = tmp_path / "chosen.csv"
    assert rt.exporter.plans(out, statuses=["active"], columns=["amount", "seq", "plan_total"]) == 2
    assert list(csv.reader(out.open(encoding="utf-8-sig", newline=""))) == [
        ["Amount", "Instalment", "Plan Total"], ["50.00", "1", "100.00"], ["50.00", "2", "100.00"]]


def test_a_wrong_column_or_file_is_refused_saying_what_to_do(rt: Runtime, made: Made, tmp_path: Path) -> None:
    with pytest.raises(RuleError, match=r"unknown column\(s\) nope; choose from: plan_id, plan_created_at"):
        rt.exporter.plans(tmp_path / "x.xlsx", columns=["seq", "nope"])
    with pytest.raises(RuleError, match=r"plans\.pdf: export to a \.xlsx or \.csv file"):
        rt.exporter.plans(tmp_path / "plans.pdf")
    (tmp_path / "afile").write_text("", encoding="utf-8")
    with pytest.raises(RuleError, match="is a file, not a folder"):
        rt.exporter.plans(tmp_path / "afile" / "plans.csv")
    assert not list(tmp_path.glob("x.xlsx"))


def test_sent_pages_summary_counts_paid_what_is_left_and_the_next_instalment(rt: Runtime, made: Made) -> None:
    with rt.store.read() as conn:
        active, cancelled = plan_summaries(conn)
        assert [p.id for p in plan_summaries(conn, ["active"])] == [made.active]
        assert plan_summaries(conn, ["ended"]) == []
    assert (active.id, active.status, active.matter_number, active.payer_name) == (made.active, "active", MATTER,
                                                                                  "Ada Direct")
    assert (active.total, active.instalments, active.paid, active.to_collect) == (Decimal("100.00"), 2, 1,
                                                                                 Decimal("50.00"))
    assert (active.next_due_on, active.next_amount) == (monthly(1), Decimal("50.00"))
    assert (cancelled.id, cancelled.status, cancelled.paid, cancelled.instalments) == (made.cancelled, "cancelled",
                                                                                       0, 3)
    assert (str(cancelled.to_collect), cancelled.next_due_on, cancelled.note) == ("0.00", None, "paid by card")


def test_an_instalment_with_the_bank_is_still_to_collect(rt: Runtime, home: Path) -> None:
    add_bill(home, "INV-X2", 9000, DUE)
    sync(rt)
    plan = rt.plans.create(STAFF, PlanRequest(MATTER, count=3))
    with rt.store.read() as conn:
        [summary] = plan_summaries(conn)
    assert rt.plans.get(plan.id or "").instalments[0].state == "pending_submission"
    assert (summary.paid, summary.to_collect, summary.next_due_on, summary.next_amount) == (
        0, Decimal("90.00"), FIRST, Decimal("30.00"))


def test_plans_export_on_the_command_line(home: Path, made: Made, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--home", str(home), "plans", "export"]
    out = tmp_path / "out" / "plans.xlsx"  # a missing folder is made
    assert main([*base, "--status", "active", "--status", "ended", "--columns", "plan_id, seq,amount",
                 "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 2 instalment(s) to {out}"
    assert [[c.value for c in r] for r in load_workbook(out).active.iter_rows()] == [
        ["Plan ID", "Instalment", "Amount"], [made.active, 1, 50], [made.active, 2, 50]]

    (tmp_path / "afile").write_text("", encoding="utf-8")
    (tmp_path / "folder.xlsx").mkdir()
    for wrong, says in ((["-o", str(tmp_path / "plans.pdf")], "export to a .xlsx or .csv file"),
                        (["--columns", "seq,nope", "-o", str(out)], "unknown column(s) nope; choose from: plan_id"),
                        (["-o", str(tmp_path / "afile" / "p.csv")], "is a file, not a folder"),
                        (["-o", str(tmp_path / "folder.xlsx")], "Is a directory")):
        assert main([*base, *wrong]) == 2, wrong
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and "internal error" not in err, err
    for wrong, says in ((["--status", "done", "-o", str(out)], "invalid choice: 'done'"),
                        ([], "the following arguments are required: -o/--output")):
        with pytest.raises(SystemExit) as exited:
            main([*base, *wrong])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err


def test_an_export_reads_and_records_nothing(rt: Runtime, made: Made, tmp_path: Path) -> None:
    """As the links', postings' and payouts' exports: the audit trail records changes, and an export changes none."""
    with rt.store.read() as conn:
        before = [e.seq for e in audit.entries(conn)]
    rt.exporter.plans(tmp_path / "plans.xlsx")
    with rt.store.read() as conn:
        assert [e.seq for e in audit.entries(conn)] == before


def test_the_console_endpoints_list_and_export_plans_and_refuse_bad_requests(rt: Runtime, made: Made) -> None:
    client = TestClient(create_app(rt), base_url="http://127.0.0.1")
    auth = {"Authorization": f"Bearer {bearer(rt.store)}"}  # a clerk
    assert client.get("/sent-pages/plans").status_code == 401
    listed = client.get("/sent-pages/plans", headers=auth)
    assert listed.status_code == 200
    assert [(p["id"], p["status"], p["paid"], p["instalments"], p["to_collect"], p["next_amount"])
            for p in listed.json()] == [(made.active, "active", 1, 2, "50.00", "50.00"),
                                        (made.cancelled, "cancelled", 0, 3, "0.00", None)]  # money as strings
    assert listed.json()[0]["next_due_on"] == monthly(1).isoformat()
    only = client.get("/sent-pages/plans", params={"status": "cancelled"}, headers=auth).json()
    assert [p["id"] for p in only] == [made.cancelled]

    answer = client.get("/sent-pages/plans/export", params={"status": "active", "columns": ["seq", "amount"]},
                        headers=auth)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    assert re.fullmatch(r'attachment; filename="payment-plans-active-\d{4}-\d{2}-\d{2}\.xlsx"',
                        answer.headers["content-disposition"])
    ws = load_workbook(io.BytesIO(answer.content)).active
    assert [[c.value for c in r] for r in ws.iter_rows()] == [["Instalment", "Amount"], [1, 50], [2, 50]]
    assert ws.cell(2, 2).number_format == money_format("GBP")
    whole = client.get("/sent-pages/plans/export", headers=auth)
    assert whole.status_code == 200 and load_workbook(io.BytesIO(whole.content)).active.max_row == 6

    for path, params in (("/sent-pages/plans", {"status": "done"}),
                         ("/sent-pages/plans/export", {"status": "expired"}),
                         ("/sent-pages/plans/export", {"columns": "nope"}),
                         ("/sent-pages/plans/export", {"columns": ""})):
        refused = client.get(path, params=params, headers=auth)
        assert refused.status_code == 422, (path, params, refused.text)
        assert refused.json()["error"], refused.text
    assert "choose from: plan_id" in client.get("/sent-pages/plans/export", params={"columns": "nope"},
                                                headers=auth).json()["error"]
