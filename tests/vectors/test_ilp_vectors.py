"""Every vector of ../shared/vectors/ilp_packets.json through the public API."""

from __future__ import annotations

from typing import Any

import pytest

from ilp import AmountTooLargeData, ErrorCode, Fulfill, Prepare, Reject, decode_packet
from tests.conftest import vector_params
from tests.vectors.test_oer_vectors import iso


@pytest.mark.parametrize("v", vector_params("ilp_packets"))
def test_ilp_vector(v: dict[str, Any]) -> None:
    raw = bytes.fromhex(v["hex"])
    dec = v["decoded"]
    assert v.get("expect", "valid") == "valid"
    kind = dec["type"]
    if kind == "F08 reject data":
        f08 = AmountTooLargeData.decode(raw)
        assert f08.received_amount == int(dec["receivedAmount"])
        assert f08.maximum_amount == int(dec["maximumAmount"])
        assert f08.encode() == raw
        assert Reject(ErrorCode("F08"), "test.x", "", raw).amount_too_large() == f08
        return
    packet = decode_packet(raw)
    if kind == "ilp_prepare":
        assert isinstance(packet, Prepare)
        assert packet.amount == int(dec["amount"])
        assert packet.execution_condition.hex() == dec["executionCondition_hex"]
        assert iso(packet.expires_at) == dec["expiresAt"]
        assert packet.destination == dec["destination"]
        assert packet.data.hex() == dec["data_hex"]
    elif kind == "ilp_fulfill":
        assert isinstance(packet, Fulfill)
        assert packet.fulfillment.hex() == dec["fulfillment_hex"]
        assert packet.data.hex() == dec["data_hex"]
    elif kind == "ilp_reject":
        assert isinstance(packet, Reject)
        assert packet.code == dec["code"]
        assert packet.triggered_by == dec["triggeredBy"]
        assert packet.message == dec["message"]
        assert packet.data.hex() == dec["data_hex"]
    else:  # pragma: no cover
        pytest.fail(f"unmapped vector type {kind}")
    assert packet.encode() == raw
