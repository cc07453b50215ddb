"""Page conversion column by column (issue 17): exact Decimal money for 2-, 3- and 0-decimal currencies from integer
minor units and from Decimal, the same records as row by row, and a bad value set aside with its row and field
instead of being rounded or stopping the page."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.database.contract import RowConverter, RowError, convert_rows
from mappings.format import parse_mapping

MAPPING = """\
version: 1
name: Conversion test
source: {{connector: sqlalchemy, url: "sqlite:///unused.db"}}
currency: GBP
timezone: UTC
entities:
  matters:
    table: matters
    key: id
    columns: {{number: matter_no}}
  statements:
    table: bills
    key: id
    watermark: {{column: updated_at}}
    money: {money}
    columns: {{number: bill_no, matter_key: matter_id, issue_date: issued, amount: amount, balance: balance,
               currency: ccy, status: state}}
    status_values: {{open: [OPEN], paid: [PAID]}}
"""


def converter(money: str) -> RowConverter:
    mapping = parse_mapping(MAPPING.format(money=money), Path("test.yaml"))
    return RowConverter("statements", mapping.entities["statements"], mapping)


def raw(key: int, amount: object, balance: object, ccy: str = "GBP",
        issued: object = "2026-03-01") -> tuple[object, ...]:
    return (key, "2026-03-01 10:00:00", f"INV-{key}", 7, issued, amount, balance, ccy, "OPEN")


@pytest.mark.parametrize(("ccy", "units", "exact"), [
    ("GBP", 123456, "1234.56"), ("GBP", 0, "0.00"), ("GBP", -5, "-0.05"),
    ("KWD", 1234567, "1234.567"), ("KWD", 1, "0.001"),
    ("JPY", 1234567, "1234567"), ("JPY", 0, "0"),
])
def test_minor_units_become_exact_decimal_in_every_exponent(ccy: str, units: int, exact: str) -> None:
    conv = converter("minor_units")
    page = [raw(i, units, units, ccy) for i in range(1, 4)]
    rows, rejected = convert_rows(conv, page)
    amount = rows[0][conv.fields.index("amount")]
    assert not rejected and type(amount) is Decimal and amount == Decimal(exact) and format(amount, "f") == exact
    assert rows == [conv.convert(r) for r in page]  # column by column gives what row by row gives


@pytest.mark.parametrize(("ccy", "value", "exact"), [
    ("GBP", Decimal("1234.56"), "1234.56"), ("GBP", Decimal("7.5"), "7.50"),
    ("BHD", Decimal("0.125"), "0.125"), ("JPY", Decimal("1500"), "1500"), ("JPY", Decimal("1500.00"), "1500"),
])
def test_decimal_money_keeps_its_value_at_the_currency_exponent(ccy: str, value: Decimal, exact: str) -> None:
    conv = converter("decimal")
    rows, rejected = convert_rows(conv, [raw(1, value, value, ccy), raw(2, value, Decimal(0), ccy)])
    assert not rejected
    assert format(rows[0][conv.fields.index("amount")], "f") == exact
    assert rows[0] == conv.convert(raw(1, value, value, ccy))


def test_a_record_is_a_tuple_in_the_mirror_column_order() -> None:
    conv = converter("minor_units")
    (record,), _ = convert_rows(conv, [raw(42, 1999, 0)])
    assert conv.fields == ("key", "number", "matter_key", "issue_date", "due_date", "amount", "balance", "currency",
                           "status", "deleted")
    assert record == ("42", "INV-42", "7", dt.date(2026, 3, 1), None, Decimal("19.99"), Decimal("0.00"), "GBP", "open",
                      False)


@pytest.mark.parametrize(("money", "amount", "field", "reason"), [
    ("decimal", Decimal("10.005"), "amount", "more than 2 decimal places"),  # never rounded to 10.00 or 10.01
    ("minor_units", 1234.5, "amount", "not whole minor units"),
    ("decimal", Decimal("1E+16"), "amount", "too large"),
    ("minor_units", None, "amount", "is NULL"),
])
def test_a_bad_amount_is_set_aside_with_its_row_and_the_rest_of_the_page_kept(money: str, amount: object, field: str,
                                                                               reason: str) -> None:
    conv = converter(money)
    good = Decimal("1.00") if money == "decimal" else 100
    rows, rejected = convert_rows(conv, [raw(1, good, good), raw(2, amount, good), raw(3, good, good)])
    assert [r[0] for r in rows] == ["1", "3"]
    (bad,) = rejected
    assert isinstance(bad, RowError) and bad.key == "2" and bad.number == "INV-2" and bad.field == field
    assert reason in bad.reason and bad.raw_key == 2


def test_mixed_currencies_and_odd_dates_take_the_value_by_value_path_with_the_same_result() -> None:
    conv = converter("minor_units")
    page = [raw(1, 1000, 1000, "GBP"), raw(2, 1000, 1000, "JPY", dt.date(2026, 1, 2)),
            raw(3, 1000, 0, "KWD", None), raw(4, 1000, 0, "GBP", "2026-01-03 00:00:00")]
    rows, rejected = convert_rows(conv, page)
    amounts = [format(r[conv.fields.index("amount")], "f") for r in rows]
    dates = [r[conv.fields.index("issue_date")] for r in rows]
    assert not rejected and amounts == ["10.00", "1000", "1.000", "10.00"]
    assert dates == [dt.date(2026, 3, 1), dt.date(2026, 1, 2), None, dt.date(2026, 1, 3)]
