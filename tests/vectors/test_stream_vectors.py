"""Every vector of ../shared/vectors/stream_packets.json through the public API."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ilp.errors import DecodeError
from ilp.packet import PacketType
from ilp.stream import (
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionDataBlocked,
    ConnectionMaxData,
    ConnectionMaxStreamId,
    ConnectionNewAddress,
    ConnectionStreamIdBlocked,
    ErrorCode,
    Frame,
    StreamClose,
    StreamCrypto,
    StreamData,
    StreamDataBlocked,
    StreamMaxData,
    StreamMaxMoney,
    StreamMoney,
    StreamMoneyBlocked,
    StreamPacket,
    StreamReceipt,
    decode_frame,
    encode_frame,
)
from ilp.stream.crypto import decrypt_envelope
from tests.conftest import load_vectors, vector_params

CONTENTS_ONLY = " (frame contents only)"


class Fields:
    """The ``decoded`` dict of a vector; every key must be read exactly once."""

    def __init__(self, decoded: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
        self._left = {k: v for k, v in decoded.items() if k not in ignore}

    def take(self, key: str) -> Any:
        return self._left.pop(key)

    def int(self, key: str) -> int:
        value = self._left.pop(key)
        assert isinstance(value, str | int)
        return int(value)

    def hex(self, key: str) -> bytes:
        return bytes.fromhex(self._left.pop(key))

    def done(self) -> None:
        assert not self._left, f"vector fields not checked: {sorted(self._left)}"


def expected_frame(spec: dict[str, Any]) -> Frame:
    """The frame a vector describes, each JSON field mapped to its dataclass field by hand."""
    f = Fields(spec, ignore=("note",))
    name = f.take("name").removesuffix(CONTENTS_ONLY)
    frame: Frame
    if name == "ConnectionClose":
        frame = ConnectionClose(f.int("errorCode"), f.take("errorMessage"))
    elif name == "ConnectionNewAddress":
        frame = ConnectionNewAddress(f.take("sourceAccount"))
    elif name == "ConnectionAssetDetails":
        frame = ConnectionAssetDetails(f.take("sourceAssetCode"), f.int("sourceAssetScale"))
    elif name == "ConnectionMaxData":
        frame = ConnectionMaxData(f.int("maxOffset"))
    elif name == "ConnectionDataBlocked":
        frame = ConnectionDataBlocked(f.int("maxOffset"))
    elif name == "ConnectionMaxStreamId":
        frame = ConnectionMaxStreamId(f.int("maxStreamId"))
    elif name == "ConnectionStreamIdBlocked":
        frame = ConnectionStreamIdBlocked(f.int("maxStreamId"))
    elif name == "StreamClose":
        frame = StreamClose(f.int("streamId"), f.int("errorCode"), f.take("errorMessage"))
    elif name == "StreamMoney":
        frame = StreamMoney(f.int("streamId"), f.int("shares"))
    elif name == "StreamMaxMoney":
        frame = StreamMaxMoney(f.int("streamId"), f.int("receiveMax"), f.int("totalReceived"))
    elif name == "StreamMoneyBlocked":
        frame = StreamMoneyBlocked(f.int("streamId"), f.int("sendMax"), f.int("totalSent"))
    elif name == "StreamData":
        frame = StreamData(f.int("streamId"), f.int("offset"), f.hex("data_hex"))
    elif name == "StreamMaxData":
        frame = StreamMaxData(f.int("streamId"), f.int("maxOffset"))
    elif name == "StreamDataBlocked":
        frame = StreamDataBlocked(f.int("streamId"), f.int("maxOffset"))
    elif name == "StreamReceipt":
        frame = StreamReceipt(f.int("streamId"), f.hex("receipt_hex"))
    else:  # pragma: no cover
        pytest.fail(f"unmapped frame {name}")
    assert f.int("type") == frame.frame_type
    f.done()
    return frame


def expected_packet(decoded: dict[str, Any]) -> StreamPacket:
    f = Fields(decoded)
    packet = StreamPacket(
        sequence=f.int("sequence"),
        ilp_packet_type=PacketType(f.int("packetType")),
        prepare_amount=f.int("amount"),
        frames=tuple(expected_frame(spec) for spec in f.take("frames")),
    )
    f.done()
    return packet


def is_contents_only(v: dict[str, Any]) -> bool:
    return str(v["decoded"].get("name", "")).endswith(CONTENTS_ONLY)


def test_vector_file_is_complete() -> None:
    vectors = load_vectors("stream_packets")
    assert len(vectors) >= 56
    assert sum(v["name"].startswith("rfc29-fixture:") for v in vectors) == 53


@pytest.mark.parametrize(
    "v", vector_params("stream_packets", where=lambda v: not is_contents_only(v))
)
def test_stream_packet_vector(v: dict[str, Any]) -> None:
    raw = bytes.fromhex(v["hex"])
    expect = v.get("expect", "valid")
    if expect == "invalid":
        with pytest.raises(DecodeError):
            StreamPacket.decode(raw)
        # ilp-protocol-stream reads it as ciphertext too: it does not open under a zero key.
        with pytest.raises(DecodeError):
            decrypt_envelope(AESGCM(bytes(32)), raw)
        with pytest.raises(DecodeError):
            StreamCrypto(bytes(32)).decrypt_packet(raw)
        return
    assert expect in ("valid", "decode-only")
    expected = expected_packet(v["decoded"])
    decoded = StreamPacket.decode(raw)
    assert decoded == expected
    assert type(decoded.ilp_packet_type) is PacketType
    for got, want in zip(decoded.frames, expected.frames, strict=True):
        assert type(got) is type(want)
    if expect == "valid":
        assert expected.encode() == raw
        assert decoded.encode() == raw
    else:
        # Saturated fields re-encode in their 8-byte form: shorter, and stable from then on.
        again = decoded.encode()
        assert len(again) < len(raw)
        assert StreamPacket.decode(again) == expected


@pytest.mark.parametrize("v", vector_params("stream_packets", where=is_contents_only))
def test_frame_contents_vector(v: dict[str, Any]) -> None:
    assert v["expect"] == "decode-only"
    raw = bytes.fromhex(v["hex"])
    expected = expected_frame(v["decoded"])
    decoded = decode_frame(v["decoded"]["type"], raw)
    assert decoded == expected
    # Re-encoding gives the 8-byte form of the saturated field.
    assert decode_frame(expected.frame_type, expected.encode_contents()) == expected
    assert encode_frame(expected)[0] == expected.frame_type


def test_error_codes_known_and_unknown() -> None:
    """A known error code decodes as ErrorCode; an unknown one (255) is kept as a plain int."""
    by_name = {v["name"]: bytes.fromhex(v["hex"]) for v in load_vectors("stream_packets")}
    close = StreamPacket.decode(by_name["rfc29-fixture:frame:connection_close"]).frames[0]
    assert isinstance(close, ConnectionClose)
    assert close.error_code is ErrorCode.NO_ERROR
    stream_close = StreamPacket.decode(by_name["rfc29-fixture:frame:stream_close"]).frames[0]
    assert isinstance(stream_close, StreamClose)
    assert type(stream_close.error_code) is int
    assert stream_close.error_code == 255
