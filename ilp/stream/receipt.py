"""STREAM receipts, version 1 (RFC 39). Sans-I/O.

A receipt is 58 bytes::

    u8 version (1) | bytes[16] nonce | u8 stream_id | u64 total_received | bytes[32] hmac

where ``hmac = HMAC-SHA256(receipt_secret, first 26 bytes)``. The stream id is one byte, unlike
every other STREAM stream id, so streams above 255 cannot be receipted.

:func:`verify_receipt` raises :class:`InvalidReceiptError`, a :class:`~ilp.errors.DecodeError`, when
the HMAC does not match: to a verifier a forged receipt is just bad input, and callers that feed it
arbitrary bytes need to catch only one exception type.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..crypto import constant_time_equal, hmac_sha256
from ..errors import DecodeError, EncodeError
from ..oer import MAX_UINT64, Buffer

__all__ = [
    "RECEIPT_LENGTH",
    "RECEIPT_VERSION",
    "InvalidReceiptError",
    "Receipt",
    "verify_receipt",
]

RECEIPT_VERSION: Final = 1
RECEIPT_LENGTH: Final = 58
_BODY_LENGTH: Final = 26

# version, nonce, stream id, total received: the part the HMAC covers.
_BODY = struct.Struct(">B16sBQ")


class InvalidReceiptError(DecodeError):
    """A well-formed receipt whose HMAC does not match the receipt secret."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """A STREAM receipt: ``total_received`` on ``stream_id`` of the connection ``nonce`` names."""

    nonce: bytes
    stream_id: int
    total_received: int

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, bytes) or len(self.nonce) != 16:
            raise EncodeError("a receipt nonce must be 16 bytes")
        if not 0 <= self.stream_id <= 0xFF:
            raise EncodeError(
                f"receipt stream id {self.stream_id} does not fit in one byte (0-255)"
            )
        if not 0 <= self.total_received <= MAX_UINT64:
            raise EncodeError(
                f"receipt total_received {self.total_received} is not an unsigned 64-bit integer"
            )

    def build(self, secret: bytes) -> bytes:
        """The 58-byte receipt, signed with the 32-byte receipt ``secret``."""
        body = _BODY.pack(RECEIPT_VERSION, self.nonce, self.stream_id, self.total_received)
        return body + hmac_sha256(secret, body)

    @classmethod
    def decode(cls, data: Buffer) -> Receipt:
        """Read a receipt without checking its HMAC (see :func:`verify_receipt`)."""
        if len(data) != RECEIPT_LENGTH:
            raise DecodeError(
                f"a receipt is {RECEIPT_LENGTH} bytes, got {len(data)}", field="receipt", offset=0
            )
        version, nonce, stream_id, total = _BODY.unpack_from(data)
        if version != RECEIPT_VERSION:
            raise DecodeError(
                f"unsupported receipt version {version} (expected 1)",
                field="receipt.version",
                offset=0,
            )
        return cls(nonce, stream_id, total)


def verify_receipt(data: Buffer, secret: bytes) -> Receipt:
    """Decode a receipt and check its HMAC against ``secret``.

    Raises :class:`~ilp.errors.DecodeError` for a malformed receipt and :class:`InvalidReceiptError`
    (a ``DecodeError``) when the HMAC does not match. Checking that the amount grew since the last
    receipt for the same nonce and stream is the caller's job.
    """
    receipt = Receipt.decode(data)
    raw = bytes(data)
    if not constant_time_equal(hmac_sha256(secret, raw[:_BODY_LENGTH]), raw[_BODY_LENGTH:]):
        raise InvalidReceiptError(
            "receipt HMAC does not match the receipt secret", field="receipt.hmac", offset=26
        )
    return receipt
