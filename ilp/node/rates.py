"""Exchange between account assets: static rates and a spread, in exact arithmetic (sans-I/O).

A rate is the value of one *whole* unit of an asset in the node's reference unit (the convention
of ilp-connector's static backends): with ``USD = 1`` and ``EUR = 1.1``, one euro buys 1.1
dollars. Amounts on the wire are in base units (``asset_scale`` decimal places), so converting
``amount`` from asset A to asset B is::

    floor(amount * rate[A] / rate[B] * 10**scale_B / 10**scale_A * (1 - spread))

computed with :class:`fractions.Fraction` and rounded down once, at the end. Between two accounts
of the same asset code no rate is needed (the ratio is 1, only the scales and the spread apply).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Final

__all__ = ["NoRateError", "convert", "exchange_rate", "format_rate", "parse_rate"]


_RATE_TEXT: Final = re.compile(r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?|\d+/\d+)")
"""What a rate string may be. The exponent has at most three digits: ``Fraction("1e999999999")``
would compute ten to the billionth power, a denial of service for one short string."""


class NoRateError(LookupError):
    """There is no rate for an asset code the node was asked to convert."""


def parse_rate(value: object, *, what: str = "rate", allow_zero: bool = False) -> Fraction:
    """A rate or spread from config or JSON: ``"1.1"``, ``"11/10"``, ``2`` or ``1.1``.

    Floats are read by their shortest decimal form (``1.1`` means eleven tenths, not the binary
    float nearest to it). Raises ValueError with a reason for anything else, or for a negative
    value (and zero unless ``allow_zero``).
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number or a decimal string, not a boolean")
    try:
        if isinstance(value, int):
            result = Fraction(value)
        elif isinstance(value, float):
            result = Fraction(Decimal(repr(value)))
        elif isinstance(value, str) and len(value) <= 100 and _RATE_TEXT.fullmatch(value.strip()):
            result = Fraction(value.strip())
        else:
            raise ValueError
    except (ValueError, ZeroDivisionError, InvalidOperation, OverflowError):
        raise ValueError(
            f"{what} must be a decimal number such as 1.1 or a fraction such as 11/10"
        ) from None
    if result < 0 or (result == 0 and not allow_zero):
        raise ValueError(f"{what} must be {'at least' if allow_zero else 'more than'} 0")
    return result


def format_rate(rate: Fraction) -> str:
    """``rate`` as a decimal string when it has one (``"1.1"``), else ``"numerator/denominator"``."""
    denominator = rate.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return f"{rate.numerator}/{rate.denominator}"
    places = max(twos, fives)
    scaled = rate.numerator * 10**places // rate.denominator
    text = str(abs(scaled)).rjust(places + 1, "0")
    whole, frac = text[: len(text) - places], text[len(text) - places :]
    sign = "-" if scaled < 0 else ""
    return f"{sign}{whole}.{frac}" if places else f"{sign}{whole}"


def exchange_rate(
    source: tuple[str, int],
    destination: tuple[str, int],
    rates: Mapping[str, Fraction],
    spread: Fraction = Fraction(0),
) -> Fraction:
    """Destination base units per source base unit, spread included.

    ``source`` and ``destination`` are ``(asset_code, asset_scale)``. Raises
    :class:`NoRateError` when the codes differ and one of them has no rate.
    """
    source_code, source_scale = source
    destination_code, destination_scale = destination
    if source_code == destination_code:
        rate = Fraction(1)
    else:
        try:
            rate = rates[source_code] / rates[destination_code]
        except KeyError as exc:
            raise NoRateError(f"no exchange rate for {exc.args[0]}") from None
    rate *= Fraction(10) ** (destination_scale - source_scale)
    return rate * (1 - spread)


def convert(amount: int, rate: Fraction) -> int:
    """``floor(amount * rate)``, exactly."""
    return amount * rate.numerator // rate.denominator
