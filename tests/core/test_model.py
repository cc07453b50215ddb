"""Money is Decimal with a currency, exact, and never a float."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from agent.core.errors import DataError
from agent.core.model import Money, Statement, check_decimals, from_minor, to_decimal, to_minor
from agent.state.types import DecimalText


def test_float_is_refused_as_money() -> None:
    with pytest.raises(ValidationError, match="must not be a float"):
        Money(amount=0.1, currency="GBP")
    with pytest.raises(TypeError, match="money must be Decimal"):
        DecimalText().process_bind_param(12.5, None)  # type: ignore[arg-type]  # the float is the point


def test_exact_float_repr_is_accepted_but_inexact_sum_is_not() -> None:
    assert to_decimal(12.34) == Decimal("12.34")
    with pytest.raises(DataError, match="more than 2 decimal places"):
        check_decimals(to_decimal(0.1 + 0.2), "GBP")


@pytest.mark.parametrize(("currency", "units", "amount"), [("GBP", 1234, "12.34"), ("JPY", 500, "500"),
                                                            ("KWD", 1001, "1.001"), ("GBP", -7000, "-70.00")])
def test_minor_units_round_trip(currency: str, units: int, amount: str) -> None:
    assert from_minor(units, currency) == Decimal(amount)
    assert to_minor(Decimal(amount), currency) == units


def test_money_arithmetic_needs_one_currency() -> None:
    total = Money(amount=Decimal("50"), currency="GBP") + Money(amount=Decimal("30"), currency="GBP")
    assert total == Money(amount=Decimal("80"), currency="GBP")
    with pytest.raises(DataError, match="cannot combine GBP with EUR"):
        total - Money(amount=Decimal("1"), currency="EUR")


def test_statement_open_balance() -> None:
    st = Statement(key="1", number="INV-1", matter_key="m", amount=Decimal("80.00"), balance=Decimal("-70.00"),
                   currency="GBP")
    assert str(st.open_balance) == "GBP -70.00"
