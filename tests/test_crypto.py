"""The generic hash helpers of :mod:`ilp.crypto`."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from ilp.crypto import HmacSha256, condition_of, hmac_sha256, sha256


@given(key=st.binary(max_size=200), messages=st.lists(st.binary(max_size=300), max_size=4))
def test_keyed_hmac_matches_the_standard_library(key: bytes, messages: list[bytes]) -> None:
    # Keys shorter than, equal to and longer than the 64-byte block; the same object reused.
    mac = HmacSha256(key)
    for message in messages:
        expected = hmac.new(key, message, hashlib.sha256).digest()
        assert mac.digest(message) == expected
        assert hmac_sha256(key, message) == expected


def test_keyed_hmac_rfc_4231_case_2() -> None:
    # RFC 4231, test case 2: key "Jefe".
    mac = HmacSha256(b"Jefe")
    assert mac.digest(b"what do ya want for nothing?").hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_keyed_hmac_keeps_no_key_in_its_repr() -> None:
    key = bytes(range(32))
    assert key.hex() not in repr(HmacSha256(key))
    assert repr(HmacSha256(key)) == "HmacSha256(<key hidden>)"


def test_condition_is_the_sha256_of_the_fulfillment() -> None:
    assert condition_of(b"\x00" * 32) == sha256(b"\x00" * 32) == hashlib.sha256(bytes(32)).digest()
