"""The AMOUNT argument of `ilp pay` / `ilp quote`: base units, or asset units with the code.

* ``1000`` — an integer: base units of the asset (any size; never a float).
* ``0.5XRP``, ``12.50USD``, ``3 EUR`` — a decimal number of asset units followed by the asset
  code; converted to base units with the asset's scale once it is known (the sender's asset from
  ILDCP, or the receiver's for ``--deliver``). The code must be that asset's (case does not
  matter) and the number may not have more decimals than the scale.
* ``0.5`` — a decimal without a code is refused: it is ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import click

from ilp.amount import AmountError, format_units, to_base_units
from ilp.stream.pay import AssetDetails

from .exit_codes import ExitCode
from .output import CliError

_BASE: Final = re.compile(r"[0-9]+")
_UNITS: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z][A-Za-z0-9]*)")
_DECIMAL: Final = re.compile(r"[0-9]*\.[0-9]*")


@dataclass(frozen=True, slots=True)
class AmountArg:
    """A parsed AMOUNT: ``base_units``, or ``units`` (decimal text) with an asset ``code``."""

    text: str
    base_units: int | None = None
    units: str | None = None
    code: str | None = None

    def to_base(self, asset: AssetDetails, whose: str) -> int:
        """Base units of ``asset`` (the asset of ``whose`` account, for messages).

        Raises :class:`CliError` (usage) when the code is not the asset's or there are more
        decimals than its scale.
        """
        if self.base_units is not None:
            return self.base_units
        assert self.units is not None and self.code is not None
        if self.code.casefold() != asset.code.casefold():
            raise CliError(
                f"the amount {self.text} is in {self.code}, but {whose} asset is {asset.code}"
                f" (scale {asset.scale}): give it in {asset.code}, or as an integer of base units.",
                ExitCode.USAGE,
            )
        try:
            value = to_base_units(self.units, asset.scale)
        except AmountError:
            raise CliError(
                f"the amount {self.text} has more decimals than {asset.code} allows: its scale is"
                f" {asset.scale}, the smallest amount is {format_units(1, asset.scale)}"
                f" {asset.code}.",
                ExitCode.USAGE,
            ) from None
        if value <= 0:
            raise CliError(f"the amount {self.text} must be more than 0.", ExitCode.USAGE)
        return value


def parse_amount(text: str) -> AmountArg:
    """Parse AMOUNT; raises :class:`ValueError` with a message for people."""
    compact = text.strip()
    if _BASE.fullmatch(compact):
        value = int(compact)
        if value <= 0:
            raise ValueError("the amount must be more than 0")
        return AmountArg(compact, base_units=value)
    match = _UNITS.fullmatch(compact)
    if match is not None:
        units, code = match.groups()
        if not units.strip("0."):
            raise ValueError("the amount must be more than 0")
        return AmountArg(compact, units=units, code=code)
    if _DECIMAL.fullmatch(compact) and any(c.isdigit() for c in compact):
        raise ValueError(
            f"{compact} has a decimal point but no asset code: write it with the code, as in"
            f" {compact}XRP, or give an integer number of base units"
        )
    raise ValueError(
        f"{compact[:40]!r} is not an amount: give base units (1000) or asset units with the"
        " code (0.5XRP, 12.50USD)"
    )


class AmountType(click.ParamType[AmountArg, object]):
    """The click type of AMOUNT and ``--max-source``: bad syntax is a usage error (exit 2)."""

    name = "amount"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> AmountArg:
        if isinstance(value, AmountArg):
            return value
        try:
            return parse_amount(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


AMOUNT = AmountType()
