"""Rates: parsing, formatting, exchange between assets and scales, exact flooring."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ilp.node.rates import NoRateError, convert, exchange_rate, format_rate, parse_rate


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.1", Fraction(11, 10)),
        (" 1.1 ", Fraction(11, 10)),
        ("11/10", Fraction(11, 10)),
        ("0.002", Fraction(2, 1000)),
        ("1e-3", Fraction(1, 1000)),
        (".5", Fraction(1, 2)),
        (2, Fraction(2)),
        (1.1, Fraction(11, 10)),  # the decimal 1.1, not the binary float nearest to it
        (0.1, Fraction(1, 10)),
        (10**30, Fraction(10**30)),
    ],
)
def test_parse_rate_accepts(value: object, expected: Fraction) -> None:
    result = parse_rate(value)
    assert type(result) is Fraction
    assert result == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "  ",
        "abc",
        "1.1.1",
        "1/0",
        "0x10",
        "1_000",
        "nan",
        "inf",
        "Infinity",
        "1 / 10",
        "1" * 101,
        True,
        False,
        None,
        [1],
        math.nan,
        math.inf,
        -math.inf,
        b"1.1",
    ],
)
def test_parse_rate_rejects_junk(value: object) -> None:
    with pytest.raises(ValueError, match=r"decimal number|boolean"):
        parse_rate(value)


@pytest.mark.parametrize("value", ["-1", "-0.5", -1, -0.5, "-11/10"])
def test_parse_rate_rejects_negative(value: object) -> None:
    with pytest.raises(ValueError, match="more than 0"):
        parse_rate(value)
    with pytest.raises(ValueError, match="at least 0"):
        parse_rate(value, allow_zero=True)


def test_zero_only_when_allowed() -> None:
    with pytest.raises(ValueError, match="spread must be more than 0"):
        parse_rate("0", what="spread")
    assert parse_rate("0", allow_zero=True) == 0
    assert parse_rate(0.0, allow_zero=True) == 0


def test_huge_exponents_are_refused_at_once() -> None:
    # Fraction("1e999999999") would compute 10**999999999 (minutes of CPU, gigabytes).
    with pytest.raises(ValueError, match="decimal number"):
        parse_rate("1e999999999")
    with pytest.raises(ValueError, match="decimal number"):
        parse_rate("1e-999999999")
    assert parse_rate("1e300") == 10**300


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (Fraction(11, 10), "1.1"),
        (Fraction(2), "2"),
        (Fraction(1, 8), "0.125"),
        (Fraction(1, 1000), "0.001"),
        (Fraction(1, 3), "1/3"),
        (Fraction(250), "250"),
        (Fraction(-1, 8), "-0.125"),
        (Fraction(0), "0"),
    ],
)
def test_format_rate(rate: Fraction, text: str) -> None:
    assert format_rate(rate) == text


@given(st.fractions(min_value=0, max_value=10**12, max_denominator=10**12).filter(lambda f: f > 0))
def test_format_parse_round_trip(rate: Fraction) -> None:
    assert parse_rate(format_rate(rate)) == rate


@given(st.integers(1, 10**15), st.integers(0, 40), st.integers(0, 40))
def test_format_parse_round_trip_decimals(numerator: int, twos: int, fives: int) -> None:
    rate = Fraction(numerator, 2**twos * 5**fives)
    text = format_rate(rate)
    assert "/" not in text
    assert parse_rate(text) == rate


# -- exchange ------------------------------------------------------------------------------

RATES = {"USD": Fraction(1), "EUR": Fraction(11, 10), "XRP": Fraction(1, 2)}


def test_same_asset_different_scales_needs_no_rate() -> None:
    assert exchange_rate(("XRP", 9), ("XRP", 6), {}) == Fraction(1, 1000)
    assert exchange_rate(("XRP", 6), ("XRP", 9), {}) == 1000
    assert exchange_rate(("ABC", 2), ("ABC", 2), {}) == 1


def test_cross_asset_with_spread() -> None:
    # 1 EUR (scale 2: 100 base units) buys 1.1 USD (scale 2: 110), less 1 %.
    rate = exchange_rate(("EUR", 2), ("USD", 2), RATES, Fraction(1, 100))
    assert rate == Fraction(11, 10) * Fraction(99, 100)
    # XRP/9 -> USD/2: one drop-nano is 0.5e-9 USD = 0.5e-7 cents.
    rate = exchange_rate(("XRP", 9), ("USD", 2), RATES, Fraction(2, 1000))
    assert rate == Fraction(1, 2) * Fraction(1, 10**7) * Fraction(998, 1000)
    assert convert(10**9, rate) == 49  # 1 XRP = 50 cents, less 0.2 %: 49.9 cents, floored


def test_spread_applies_between_identical_assets() -> None:
    assert exchange_rate(("USD", 2), ("USD", 2), {}, Fraction(1, 4)) == Fraction(3, 4)


def test_no_rate() -> None:
    with pytest.raises(NoRateError, match="GBP"):
        exchange_rate(("GBP", 2), ("USD", 2), RATES)
    with pytest.raises(NoRateError, match="GBP"):
        exchange_rate(("USD", 2), ("GBP", 2), RATES)
    assert issubclass(NoRateError, LookupError)


@pytest.mark.parametrize(
    ("amount", "rate", "expected"),
    [
        (10, Fraction(1, 3), 3),
        (9, Fraction(1, 3), 3),
        (2, Fraction(1, 3), 0),
        (0, Fraction(7, 3), 0),
        (2**64 - 1, Fraction(1), 2**64 - 1),
        (2**64 - 1, Fraction(2**64 - 2, 2**64 - 1), 2**64 - 2),
    ],
)
def test_convert_floors_exactly(amount: int, rate: Fraction, expected: int) -> None:
    assert convert(amount, rate) == expected


@given(
    st.integers(0, 2**64 - 1),
    st.integers(1, 10**20),
    st.integers(1, 10**20),
)
def test_convert_is_integer_floor(amount: int, numerator: int, denominator: int) -> None:
    result = convert(amount, Fraction(numerator, denominator))
    # floor(a*n/d) is the q with q*d <= a*n < (q+1)*d: checked in integers, no floats anywhere.
    assert result * denominator <= amount * numerator < (result + 1) * denominator
