"""Amounts in base units and asset units (ilp.amount): exact both ways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ilp.amount import Amount, AmountError, format_units, to_base_units


@pytest.mark.parametrize(
    ("value", "scale", "text"),
    [
        (1000, 9, "0.000001"),
        (1_000_000_000, 9, "1"),
        (1250, 2, "12.5"),
        (5, 0, "5"),
        (0, 3, "0"),
        (-150, 2, "-1.5"),
        (10**40 + 1, 9, "10000000000000000000000000000000.000000001"),
    ],
)
def test_format_units(value: int, scale: int, text: str) -> None:
    assert format_units(value, scale) == text


def test_amount_shows_both_forms() -> None:
    assert str(Amount(1000, "XRP", 9)) == "1000 (0.000001 XRP)"
    assert Amount(1250, "USD", 2).units == "12.5 USD"
    assert str(Amount(1000)) == "1000"
    assert Amount(1000).units is None


@pytest.mark.parametrize(
    ("text", "scale", "value"),
    [("0.5", 9, 500_000_000), ("12.50", 2, 1250), ("3", 0, 3), ("0.10", 1, 1), ("007", 2, 700)],
)
def test_to_base_units(text: str, scale: int, value: int) -> None:
    assert to_base_units(text, scale) == value


@pytest.mark.parametrize(
    ("text", "scale", "message"),
    [
        ("0.001", 2, "3 decimals, more than the asset's scale of 2 allows"),
        ("0.5", 0, "1 decimals, more than the asset's scale of 0"),
        ("1e3", 2, "not a decimal number"),
        (".5", 2, "not a decimal number"),
        ("-1", 2, "not a decimal number"),
        ("1.", 2, "not a decimal number"),
    ],
)
def test_to_base_units_refuses(text: str, scale: int, message: str) -> None:
    with pytest.raises(AmountError, match=message):
        to_base_units(text, scale)


def test_scale_is_checked() -> None:
    with pytest.raises(ValueError, match=r"0\.\.255"):
        format_units(1, 256)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        to_base_units("1", -1)


@given(st.integers(min_value=0, max_value=10**60), st.integers(min_value=0, max_value=40))
def test_round_trip(value: int, scale: int) -> None:
    assert to_base_units(format_units(value, scale), scale) == value
