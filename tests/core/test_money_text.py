"""Money in text (issue 14, item 1): a point for decimals, commas only between thousands, no exponents, and no more
digits than the state store keeps; at every entry point (API, request table, bulk file) a refusal, never a crash."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests_support import bearer, demo_runtime

from agent.api import app as api
from agent.core.errors import DataError
from agent.core.model import AMOUNT_TEXT_LENGTH, MAX_INTEGER_DIGITS, to_decimal
from agent.engine.bulk import TEMPLATE_HEADER, read_bulk
from agent.engine.intake import process_request_table
from agent.runtime import Runtime
from agent.state.types import DecimalText

MATTER = "M-2026-0010"


@pytest.mark.parametrize(("text", "amount"), [
    ("250.00", "250.00"), (" 1,050.00 ", "1050.00"), ("1,234,567.89", "1234567.89"), ("1,000", "1000"),
    ("-70.00", "-70.00"), ("+5", "5"), (".50", "0.50"), ("0", "0"),
])
def test_plain_and_thousands_separated_amounts_are_read_exactly(text: str, amount: str) -> None:
    assert to_decimal(text) == Decimal(amount)


@pytest.mark.parametrize(("text", "message"), [
    ("10,50", "decimal comma"), ("1.050,00", "decimal comma"), ("-3,5", "decimal comma"),
    ("12,34,567", "comma out of place"), ("1,0000.00", "comma out of place"), (",100", "comma out of place"),
    ("1e3", "exponent"), ("1e400", "exponent"), ("2.5E-3", "exponent"),
    ("9" * 29, "too large"), ("1" + "0" * MAX_INTEGER_DIGITS, "too large"),
    ("0." + "0" * 40 + "1", "too many digits"),
    ("NaN", "not a number"), ("Infinity", "not a number"), ("1_000", "not a number"), ("١٢", "not a number"),
    ("1 000", "not a number"), ("£10", "not a number"), ("", "no amount"),
])
def test_ambiguous_or_oversized_text_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        to_decimal(text)


def test_the_size_limit_is_the_state_store_column() -> None:
    assert DecimalText.impl.length == AMOUNT_TEXT_LENGTH
    with pytest.raises(DataError, match="too large"):
        to_decimal(1e300)
    with pytest.raises(DataError, match="too many digits"):
        to_decimal(Decimal("1E-999999999"))  # refused without first writing out a billion zeros


# ------------------------------------------------------------------------------------------- properties

AMOUNTS = st.decimals(min_value=Decimal("-999999999999999.99"), max_value=Decimal("999999999999999.99"),
                      places=2, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(AMOUNTS)
def test_property_an_amount_survives_being_written_out_with_or_without_thousands(amount: Decimal) -> None:
    assert to_decimal(str(amount)) == amount
    assert to_decimal(f"{amount:f}") == amount
    assert to_decimal(f"{amount:,}") == amount


@settings(max_examples=300, deadline=None)
@given(AMOUNTS.filter(lambda a: a != a.to_integral_value()))
def test_property_a_decimal_comma_is_always_refused_never_read_as_thousands(amount: Decimal) -> None:
    text = f"{amount:f}".rstrip("0").replace(".", ",")
    with pytest.raises(DataError, match="decimal comma"):
        to_decimal(text)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=60), st.text(alphabet="0123456789,.-+eE_ ", max_size=60),
                 st.floats(), st.integers(), st.decimals()))
def test_property_any_value_is_an_amount_that_fits_or_a_data_error(value: object) -> None:
    try:
        result = to_decimal(value)
    except DataError:
        return
    assert result.is_finite() and len(format(result, "f")) <= AMOUNT_TEXT_LENGTH
    if isinstance(value, str):
        assert result == Decimal(value.strip().replace(",", ""))  # only thousands separators were dropped


# ------------------------------------------------------------------------------------------- entry points


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with demo_runtime(tmp_path / "home") as runtime:
        yield runtime


def test_api_answers_a_decimal_comma_or_exponent_with_a_422(rt: Runtime) -> None:
    server = api.serve_api(rt, "127.0.0.1", 0)
    headers = {"Authorization": f"Bearer {bearer(rt.store)}"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            for amount, message in [("10,50", "decimal comma"), ("1e400", "exponent"), ("9" * 29, "too large")]:
                answer = client.post("/links", json={"matter": MATTER, "amount": amount})
                assert answer.status_code == 422, (amount, answer.text)
                assert message in answer.json()["error"]
            assert rt.links.find() == []
    finally:
        server.stop()


def test_semicolon_bulk_file_with_decimal_commas_is_refused_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "eu.csv"
    path.write_text(";".join(TEMPLATE_HEADER) + "\n"
                    "Q-1;2026-11-01;2026-12-01;Ada;ada@example.com;10,50;\n"
                    "Q-2;2026-11-01;2026-12-01;Bob;bob@example.com;1050.00;\n", encoding="utf-8")
    bulk = read_bulk(path)
    assert not bulk.ok
    assert [(p.row, p.field) for p in bulk.problems] == [(2, "Amount")]
    assert "decimal comma" in bulk.problems[0].message


def test_request_table_refuses_bad_amounts_in_their_rows_and_goes_on(rt: Runtime) -> None:
    with sqlite3.connect(rt.settings.home / "demo-firm.db") as db:
        for amount in ("1e400", "10,50", "250.00"):
            db.execute("INSERT INTO pay_requests (matter_no, amount) VALUES (?, ?)", (MATTER, amount))
    assert process_request_table(rt.connector, rt.mapping.requests, rt.links) == 1
    with sqlite3.connect(rt.settings.home / "demo-firm.db") as db:
        rows = db.execute("SELECT status, error FROM pay_requests ORDER BY id").fetchall()
    assert rows[0][0] == "FAILED" and "exponent" in rows[0][1]
    assert rows[1][0] == "FAILED" and "decimal comma" in rows[1][1]
    assert rows[2] == ("LINKED", None)
    assert [link.amount for link in rt.links.find()] == [Decimal("250.00")]


CELL = st.text(max_size=30) | st.sampled_from(["10,50", "1,050.00", " 1 000 ", "1e3", "£12.00", "0.001", "-5", "Q-1"])
GOOD_ROW = st.tuples(st.from_regex(r"Q-[0-9]{1,4}", fullmatch=True), st.just("2026-11-01"), st.just("2026-12-01"),
                     st.just("Ada"), st.just("ada@example.com"), AMOUNTS.filter(lambda a: a > 0).map(str), st.just(""))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.lists(CELL, max_size=8), GOOD_ROW.map(list)), min_size=1, max_size=6),
       st.sampled_from([",", ";", "\t", "|"]))
def test_property_every_bulk_row_is_read_exactly_or_reported_never_a_crash(rows: list[list[str]], sep: str) -> None:
    text = io.StringIO()
    writer = csv.writer(text, delimiter=sep)
    writer.writerow(TEMPLATE_HEADER)
    writer.writerows(rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.csv"
        path.write_text(text.getvalue(), encoding="utf-8")
        bulk = read_bulk(path)
    if any(p.field == "(file)" for p in bulk.problems):
        return  # a file-level refusal (e.g. a separator the sniffer could not tell) covers every row
    reported = {p.row for p in bulk.problems}
    for number, row in enumerate(rows, start=2):
        read = [r for r in bulk.rows if r.row == number]
        if not any(cell.strip() for cell in row):
            continue  # a blank line is no row
        assert read or number in reported, (number, row, bulk)
        if read:  # a row taken is taken with the exact amount written, never a comma dropped
            assert read[0].amount == Decimal(re.sub(r"^[£$€]|\s", "", row[5].strip()).replace(",", ""))
