"""OER primitives beyond the vectors."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ilp import oer
from ilp.errors import DecodeError, EncodeError
from tests.strategies import timestamps


@given(st.integers(min_value=0, max_value=2**1100))
def test_var_uint_is_a_length_then_the_minimal_big_endian_bytes(n: int) -> None:
    size = max(1, (n.bit_length() + 7) // 8)
    assert oer.encode_var_uint(n) == oer.encode_length(size) + n.to_bytes(size, "big")


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_var_uint_round_trip(n: int) -> None:
    raw = oer.encode_var_uint(n)
    assert oer.decode_var_uint(raw) == n
    assert len(raw) == 1 + max(1, (n.bit_length() + 7) // 8)


@given(st.integers(min_value=0, max_value=2**40))
def test_length_round_trip(n: int) -> None:
    assert oer.decode_length(oer.encode_length(n)) == n


@given(st.binary(max_size=400))
def test_var_octets_round_trip(data: bytes) -> None:
    assert oer.decode_var_octets(oer.encode_var_octets(data)) == data


@given(timestamps)
def test_timestamps_round_trip(dt: datetime) -> None:
    assert oer.decode_ilp_timestamp(oer.encode_ilp_timestamp(dt)) == dt
    for fixed in (True, False):
        assert (
            oer.decode_generalized_time(oer.encode_generalized_time(dt, fixed_millis=fixed)) == dt
        )


@given(st.binary(max_size=30))
def test_arbitrary_bytes(raw: bytes) -> None:
    for decode in (
        oer.decode_var_uint,
        oer.decode_length,
        oer.decode_var_octets,
        oer.decode_ilp_timestamp,
        oer.decode_generalized_time,
    ):
        with contextlib.suppress(DecodeError):
            decode(raw)


def test_non_canonical_var_uint() -> None:
    with pytest.raises(DecodeError, match="leading zero"):
        oer.decode_var_uint(b"\x02\x00\x01")


def test_truncation_names_offset() -> None:
    r = oer.Reader(b"\x00\x05ab")
    r.read_u8("first")
    with pytest.raises(DecodeError) as info:
        r.read_var_octets("second")
    assert info.value.field == "second"
    assert info.value.offset == 2
    assert "needs 5 bytes, 2 left" in str(info.value)


def test_var_octets_limit() -> None:
    with pytest.raises(DecodeError, match="over the limit of 2"):
        oer.Reader(b"\x03abc").read_var_octets("f", max_size=2)


def test_generalized_time_forms() -> None:
    dt = datetime(2017, 8, 28, 18, 32, 0, tzinfo=UTC)
    assert oer.encode_generalized_time(dt) == b"20170828183200.000Z"
    assert oer.encode_generalized_time(dt, fixed_millis=False) == b"20170828183200Z"
    # A leap second (allowed by RFC 30) becomes the next second.
    leap = oer.decode_generalized_time(b"20161231235960.5Z")
    assert leap == datetime(2017, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    for bad in (
        b"20171224161432.Z",
        b"20171224161432.1234Z",
        b"20171224161432",
        b"2017122416143x.1Z",
    ):
        with pytest.raises(DecodeError):
            oer.decode_generalized_time(bad)


def test_encode_refusals() -> None:
    with pytest.raises(EncodeError):
        oer.encode_var_uint(-1)
    with pytest.raises(EncodeError):
        oer.encode_uint(256, 1)
    with pytest.raises(EncodeError):
        oer.encode_ilp_timestamp(datetime(2020, 1, 1))
    w = oer.Writer()
    with pytest.raises(EncodeError):
        w.write_var_uint(2**64)
    with pytest.raises(EncodeError):
        w.write_ascii("é")
