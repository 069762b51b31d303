"""Every vector of ../shared/vectors/btp.json through the public API."""

from __future__ import annotations

from typing import Any

import pytest

from ilp.btp.packet import BtpType, ContentType, Error, Message, Response, Transfer, decode_btp
from ilp.errors import DecodeError
from ilp.oer import encode_generalized_time
from tests.conftest import vector_params

_CLASSES = {1: Response, 2: Error, 6: Message, 7: Transfer}


@pytest.mark.parametrize("v", vector_params("btp"))
def test_btp_vector(v: dict[str, Any]) -> None:
    raw = bytes.fromhex(v["hex"])
    dec = v["decoded"]
    assert v.get("expect", "valid") == "valid"
    packet = decode_btp(raw)
    assert type(packet) is _CLASSES[dec["type"]]
    assert BtpType(dec["type"]).name.lower() == dec["typeName"].lower()
    assert packet.request_id == dec["requestId"]
    entries = [(p.name, int(p.content_type), p.data.hex()) for p in packet.protocol_data]
    expected = [(p["protocolName"], p["contentType"], p["data_hex"]) for p in dec["protocolData"]]
    assert entries == expected
    for entry in packet.protocol_data:
        assert isinstance(entry.content_type, ContentType)
    if isinstance(packet, Error):
        assert packet.code == dec["code"]
        assert packet.name == dec["name"]
        assert encode_generalized_time(packet.triggered_at).decode() == dec["triggeredAt"]
        assert packet.data == dec["data"].encode("utf-8")
    if isinstance(packet, Transfer):
        assert packet.amount == int(dec["amount"])
    assert packet.encode() == raw
    # Trailing bytes after the envelope or inside the contents are rejected (interledger-rs).
    with pytest.raises(DecodeError, match="trailing"):
        decode_btp(raw + b"\x00")
