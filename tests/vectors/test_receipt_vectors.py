"""Every vector of ../shared/vectors/receipts.json through the public API."""

from __future__ import annotations

from typing import Any

import pytest

from ilp.crypto import hmac_sha256
from ilp.errors import DecodeError
from ilp.stream import InvalidReceiptError, Receipt, StreamPacket, StreamReceipt, verify_receipt
from tests.conftest import load_vectors, vector_params


@pytest.mark.parametrize("v", vector_params("receipts"))
def test_receipt_vector(v: dict[str, Any]) -> None:
    raw = bytes.fromhex(v["hex"])
    expect = v.get("expect", "valid")
    if expect == "invalid":
        with pytest.raises(DecodeError) as info:
            Receipt.decode(raw)
        assert not isinstance(info.value, InvalidReceiptError)
        with pytest.raises(DecodeError) as info:
            verify_receipt(raw, bytes(32))
        assert not isinstance(info.value, InvalidReceiptError)
        return
    assert expect == "valid"
    dec, inputs, out = v["decoded"], v["inputs"], v["expected"]
    secret = bytes.fromhex(inputs["receipt_secret"])
    receipt = Receipt.decode(raw)
    assert raw[0] == dec["version"]
    assert receipt.nonce.hex() == dec["nonce_hex"] == inputs["receipt_nonce"]
    assert receipt.stream_id == dec["streamId"] == inputs["stream_id"]
    assert receipt.total_received == int(dec["totalReceived"]) == int(inputs["total_received"])
    assert raw[26:].hex() == dec["hmac_hex"] == out["hmac"]
    assert raw[:26].hex() == out["hmac_message_hex"]
    assert hmac_sha256(secret, raw[:26]).hex() == out["hmac"]
    assert len(raw) == out["length"]
    built = Receipt(
        bytes.fromhex(inputs["receipt_nonce"]), inputs["stream_id"], int(inputs["total_received"])
    ).build(secret)
    assert built == raw
    assert verify_receipt(raw, secret) == receipt
    with pytest.raises(InvalidReceiptError) as info:
        verify_receipt(raw, bytes([1]) + secret[1:])
    assert info.value.field == "receipt.hmac"


def test_receipt_in_stream_receipt_frame_vector() -> None:
    """The RFC 29 StreamReceipt fixture carries the same receipt; it verifies under the secret."""
    (frame_vector,) = [
        v
        for v in load_vectors("stream_packets")
        if v["name"] == "rfc29-fixture:frame:stream_receipt"
    ]
    (receipt_vector,) = [v for v in load_vectors("receipts") if v.get("expect") is None]
    (frame,) = StreamPacket.decode(bytes.fromhex(frame_vector["hex"])).frames
    assert isinstance(frame, StreamReceipt)
    secret = bytes.fromhex(receipt_vector["inputs"]["receipt_secret"])
    receipt = verify_receipt(frame.receipt, secret)
    assert receipt.stream_id == frame.stream_id == 1
    assert receipt.total_received == 500
