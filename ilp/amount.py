"""Amounts in an asset: base units (ints on the wire) and asset units (decimal text). Sans-I/O.

An account's asset has a code and a scale: with ``XRP`` and scale 9, one base unit is 10^-9 XRP,
so ``1000`` base units are ``0.000001 XRP``. :class:`Amount` formats both ways, and
:func:`to_base_units` turns asset units written as decimal text into base units, exactly::

    >>> str(Amount(1000, "XRP", 9))
    '1000 (0.000001 XRP)'
    >>> to_base_units("12.50", 2)
    1250

No floats anywhere: amounts are ints of any size, decimal text is converted digit by digit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["Amount", "AmountError", "format_units", "to_base_units"]

_DECIMAL: Final = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


class AmountError(ValueError):
    """Decimal text that is not an exact amount at the asset's scale."""


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 255:
        raise ValueError(f"an asset scale is an int in 0..255, got {scale!r}")


def format_units(value: int, scale: int) -> str:
    """``value`` base units as a decimal number of asset units: ``format_units(1250, 2) == "12.5"``.

    Trailing zeros after the point are dropped; there is no exponent, however large the value.
    """
    _check_scale(scale)
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(scale + 1, "0")
    whole, fraction = digits[: len(digits) - scale], digits[len(digits) - scale :]
    fraction = fraction.rstrip("0")
    return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"


def to_base_units(text: str, scale: int) -> int:
    """Decimal text in asset units (``"0.5"``, ``"12.50"``, ``"3"``) as base units at ``scale``.

    Raises :class:`AmountError` for anything that is not plain decimal digits with an optional
    fraction, and for more significant decimals than the scale allows (``"0.001"`` at scale 2):
    nothing is rounded.
    """
    _check_scale(scale)
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise AmountError(f"{text[:40]!r} is not a decimal number")
    whole, fraction = match.group(1), (match.group(2) or "").rstrip("0")
    if len(fraction) > scale:
        raise AmountError(
            f"{text[:40]} has {len(fraction)} decimals, more than the asset's scale of {scale}"
            f" allows (the smallest amount is {format_units(1, scale)})"
        )
    try:
        return int(whole + fraction.ljust(scale, "0"))
    except ValueError:  # beyond sys.get_int_max_str_digits()
        raise AmountError(f"{text[:40]}... has too many digits") from None


@dataclass(frozen=True, slots=True)
class Amount:
    """``value`` base units of an asset. ``str()`` shows both forms: ``1000 (0.000001 XRP)``.

    Without an asset (``asset_code`` ``None``) only the base units are shown.
    """

    value: int
    asset_code: str | None = None
    asset_scale: int = 0

    @property
    def units(self) -> str | None:
        """The amount in asset units with the code (``"0.000001 XRP"``); None without an asset."""
        if self.asset_code is None:
            return None
        return f"{format_units(self.value, self.asset_scale)} {self.asset_code}"

    def __str__(self) -> str:
        units = self.units
        return str(self.value) if units is None else f"{self.value} ({units})"
