"""Small, generic hash helpers: SHA-256, HMAC-SHA256, ILP conditions. Sans-I/O, no randomness.

Protocol-specific keys and envelopes live with their protocol (STREAM's in :mod:`ilp.stream.crypto`).
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["condition_of", "constant_time_equal", "hmac_sha256", "sha256"]

_sha256 = hashlib.sha256
_hmac_digest = hmac.digest


def sha256(data: bytes) -> bytes:
    """The SHA-256 digest of ``data`` (32 bytes)."""
    return _sha256(data).digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data`` under ``key`` (32 bytes)."""
    return _hmac_digest(key, data, "sha256")


def condition_of(fulfillment: bytes) -> bytes:
    """The ILP execution condition that ``fulfillment`` fulfills: ``sha256(fulfillment)``."""
    return _sha256(fulfillment).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two MACs or digests without leaking where they differ."""
    return hmac.compare_digest(a, b)
