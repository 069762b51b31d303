"""ILP addresses (RFC 15).

An address is a plain ``str``: ``scheme ( "." segment )+``, the scheme one of ``g``, ``private``,
``example``, ``peer``, ``self``, ``test``, ``test1``-``test3``, ``local``, each segment one or more of
``[A-Za-z0-9_~-]``, at most 1023 bytes in all. Addresses are case-sensitive.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import EncodeError

__all__ = [
    "MAX_ADDRESS_LENGTH",
    "SCHEMES",
    "is_valid_address",
    "is_valid_segment",
    "scheme_of",
    "validate_address",
]

MAX_ADDRESS_LENGTH: Final = 1023
SCHEMES: Final = (
    "g",
    "private",
    "example",
    "peer",
    "self",
    "test",
    "test1",
    "test2",
    "test3",
    "local",
)

_ADDRESS = re.compile(r"(?:g|private|example|peer|self|test[1-3]?|local)(?:\.[a-zA-Z0-9_~-]+)+")
_SEGMENT = re.compile(r"[a-zA-Z0-9_~-]+")
_match_address = _ADDRESS.fullmatch


def is_valid_address(address: str) -> bool:
    """True if ``address`` follows the RFC 15 grammar and length limit."""
    return len(address) <= MAX_ADDRESS_LENGTH and _match_address(address) is not None


def is_valid_segment(segment: str) -> bool:
    """True if ``segment`` can stand between two dots of an address."""
    return _SEGMENT.fullmatch(segment) is not None


def validate_address(address: str) -> str:
    """Return ``address`` if valid, else raise :class:`~ilp.errors.EncodeError` saying why."""
    if is_valid_address(address):
        return address
    if len(address) > MAX_ADDRESS_LENGTH:
        raise EncodeError(f"ILP address is {len(address)} bytes, over the limit of 1023")
    raise EncodeError(
        f"invalid ILP address {address[:80]!r}: expected scheme.segment[.segment...] with a scheme "
        f"of {', '.join(SCHEMES)} and segments of letters, digits, '_', '~', '-'"
    )


def scheme_of(address: str) -> str:
    """The allocation scheme of a valid address (``"g"``, ``"test"``, ...)."""
    return address.split(".", 1)[0]
