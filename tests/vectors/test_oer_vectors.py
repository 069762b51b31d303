"""Every vector of ../shared/vectors/oer.json through ilp.oer and ilp.address."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from ilp import oer
from ilp.address import is_valid_address
from ilp.errors import DecodeError
from tests.conftest import vector_params

FIXED_SIZES = {"UInt8": 1, "UInt16": 2, "UInt32": 4, "UInt64": 8}


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def expect(v: dict[str, Any]) -> str:
    return str(v.get("expect", "valid"))


@pytest.mark.parametrize("v", vector_params("oer"))
def test_oer_vector(v: dict[str, Any]) -> None:
    raw = bytes.fromhex(v["hex"])
    dec = v["decoded"]
    kind = dec["type"]
    how = expect(v)

    if how == "invalid":
        decoders: dict[str, Callable[[bytes], object]] = {
            "VarUInt": oer.decode_var_uint,
            "LengthDeterminant": oer.decode_length,
            "InterledgerTimestamp(fixed 17)": oer.decode_ilp_timestamp,
        }
        with pytest.raises(DecodeError):
            decoders[kind](raw)
        return

    if kind in FIXED_SIZES:
        size = FIXED_SIZES[kind]
        assert oer.decode_uint(raw, size) == int(dec["value"])
        assert oer.encode_uint(int(dec["value"]), size) == raw
    elif kind == "UInt256":
        assert oer.Reader(raw).read_bytes(32, "uint256") == bytes.fromhex(dec["value_hex"])
    elif kind == "LengthDeterminant":
        assert oer.decode_length(raw) == int(dec["value"])
        assert oer.encode_length(int(dec["value"])) == raw
    elif kind == "VarUInt":
        value = int(dec["value"])
        if how == "valid-exceeds-uint64":
            # Legal OER, but over u64: the u64 decoder refuses it, the unbounded one reads it,
            # and the STREAM max-money reader saturates it.
            with pytest.raises(DecodeError):
                oer.decode_var_uint(raw)
            assert oer.decode_var_uint(raw, max_bytes=None) == value
            assert oer.Reader(raw).read_var_uint_saturating("x") == oer.MAX_UINT64
        else:
            assert how == "valid"
            assert oer.decode_var_uint(raw) == value
        assert oer.encode_var_uint(value) == raw
    elif kind == "VarOctetString":
        assert oer.decode_var_octets(raw) == bytes.fromhex(dec["value_hex"])
        assert oer.encode_var_octets(bytes.fromhex(dec["value_hex"])) == raw
    elif kind == "InterledgerTimestamp(fixed 17)":
        dt = oer.decode_ilp_timestamp(raw)
        assert iso(dt) == dec["iso8601"]
        assert oer.encode_ilp_timestamp(dt) == raw
    elif kind == "GeneralizedTime(var-octet-string)":
        text = oer.decode_var_octets(raw)
        dt = oer.decode_generalized_time(text)
        if how == "invalid-per-rfc":
            # We decode leniently like interledger-rs (docs/decisions.md): 23:00:00.200.
            assert iso(dt) == "2017-12-24T23:00:00.200Z"
            assert oer.encode_generalized_time(dt, fixed_millis=False) != text
        else:
            assert iso(dt) == dec["iso8601"]
            assert oer.encode_var_octets(oer.encode_generalized_time(dt, fixed_millis=False)) == raw
    elif kind == "Address(var-octet-string, IA5)":
        r = oer.Reader(raw)
        assert r.read_ascii("address") == dec["text"]
        r.expect_end("address")
        assert is_valid_address(dec["text"])
        w = oer.Writer()
        w.write_ascii(dec["text"])
        assert w.getvalue() == raw
    else:  # pragma: no cover - a new vector type must be mapped here
        pytest.fail(f"unmapped vector type {kind}")
