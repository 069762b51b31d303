"""STREAM packets, frames, crypto and receipts: round trips, leniency rules, hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ilp.errors import DecodeError, EncodeError
from ilp.oer import MAX_UINT64, encode_length, encode_var_uint
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
    FrameType,
    InvalidReceiptError,
    Receipt,
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
    verify_receipt,
)
from tests.strategies import addresses, u64

error_codes = st.integers(min_value=0, max_value=255)
texts = st.text(max_size=40) | st.text(min_size=130, max_size=200)
blobs = st.binary(max_size=200)

FRAME_STRATEGIES: dict[FrameType, st.SearchStrategy[Frame]] = {
    FrameType.CONNECTION_CLOSE: st.builds(ConnectionClose, error_codes, texts),
    FrameType.CONNECTION_NEW_ADDRESS: st.builds(ConnectionNewAddress, addresses | st.just("")),
    FrameType.CONNECTION_MAX_DATA: st.builds(ConnectionMaxData, u64),
    FrameType.CONNECTION_DATA_BLOCKED: st.builds(ConnectionDataBlocked, u64),
    FrameType.CONNECTION_MAX_STREAM_ID: st.builds(ConnectionMaxStreamId, u64),
    FrameType.CONNECTION_STREAM_ID_BLOCKED: st.builds(ConnectionStreamIdBlocked, u64),
    FrameType.CONNECTION_ASSET_DETAILS: st.builds(
        ConnectionAssetDetails, texts, st.integers(min_value=0, max_value=255)
    ),
    FrameType.STREAM_CLOSE: st.builds(StreamClose, u64, error_codes, texts),
    FrameType.STREAM_MONEY: st.builds(StreamMoney, u64, u64),
    FrameType.STREAM_MAX_MONEY: st.builds(StreamMaxMoney, u64, u64, u64),
    FrameType.STREAM_MONEY_BLOCKED: st.builds(StreamMoneyBlocked, u64, u64, u64),
    FrameType.STREAM_DATA: st.builds(StreamData, u64, u64, blobs),
    FrameType.STREAM_MAX_DATA: st.builds(StreamMaxData, u64, u64),
    FrameType.STREAM_DATA_BLOCKED: st.builds(StreamDataBlocked, u64, u64),
    FrameType.STREAM_RECEIPT: st.builds(StreamReceipt, u64, blobs),
}
frames = st.one_of(*FRAME_STRATEGIES.values())
packet_types = st.sampled_from(list(PacketType))
packets = st.builds(StreamPacket, u64, packet_types, u64, st.lists(frames, max_size=6).map(tuple))
unknown_types = st.integers(min_value=0, max_value=255).filter(
    lambda t: t not in FrameType._value2member_map_
)
HEADER = b"\x01\x0c\x01\x00\x01\x00"  # version 1, Prepare, sequence 0, amount 0


def raw_packet(*raw_frames: bytes, count: int | None = None, junk: bytes = b"") -> bytes:
    n = len(raw_frames) if count is None else count
    return HEADER + encode_var_uint(n) + b"".join(raw_frames) + junk


def raw_frame(frame_type: int, contents: bytes) -> bytes:
    return bytes((frame_type,)) + encode_length(len(contents)) + contents


# --------------------------------------------------------------------------------------------
# Round trips


def test_every_frame_type_has_a_strategy() -> None:
    assert set(FRAME_STRATEGIES) == set(FrameType)


@pytest.mark.parametrize("frame_type", list(FrameType))
@given(data=st.data())
def test_frame_round_trip(frame_type: FrameType, data: st.DataObject) -> None:
    frame = data.draw(FRAME_STRATEGIES[frame_type])
    assert frame.frame_type == frame_type
    contents = frame.encode_contents()
    assert decode_frame(frame_type, contents) == frame
    assert encode_frame(frame) == raw_frame(frame_type, contents)
    packet = StreamPacket(7, PacketType.FULFILL, 9, (frame,))
    assert StreamPacket.decode(packet.encode()) == packet


@given(packets)
def test_packet_round_trip(packet: StreamPacket) -> None:
    raw = packet.encode()
    decoded = StreamPacket.decode(raw)
    assert decoded == packet
    assert decoded.encode() == raw


@given(packets, st.binary(max_size=40))
def test_junk_after_the_last_frame_is_ignored(packet: StreamPacket, junk: bytes) -> None:
    assert StreamPacket.decode(packet.encode() + junk) == packet


@given(packets)
def test_every_strict_prefix_is_a_decode_error(packet: StreamPacket) -> None:
    raw = packet.encode()
    for end in range(len(raw)):
        with pytest.raises(DecodeError):
            StreamPacket.decode(raw[:end])


@given(st.lists(frames, max_size=4), st.lists(st.tuples(unknown_types, blobs), max_size=4))
def test_unknown_frames_are_skipped(known: list[Frame], unknown: list[tuple[int, bytes]]) -> None:
    raws = [encode_frame(f) for f in known] + [raw_frame(t, c) for t, c in unknown]
    raws.reverse()  # unknown frames first, then the known ones in reverse order
    decoded = StreamPacket.decode(raw_packet(*raws))
    assert decoded.frames == tuple(reversed(known))


@given(frames, st.binary(min_size=1, max_size=20))
def test_excess_frame_contents_are_ignored(frame: Frame, extra: bytes) -> None:
    contents = frame.encode_contents() + extra
    assert decode_frame(frame.frame_type, contents) == frame
    decoded = StreamPacket.decode(raw_packet(raw_frame(frame.frame_type, contents)))
    assert decoded.frames == (frame,)


# --------------------------------------------------------------------------------------------
# Specific decoding rules


def test_unknown_frame_type_decodes_to_none() -> None:
    assert decode_frame(0x99, b"\x01\x02") is None


def test_version_and_packet_type_are_checked() -> None:
    with pytest.raises(DecodeError) as info:
        StreamPacket.decode(b"\x02\x0c\x01\x00\x01\x00\x01\x00")
    assert (info.value.field, info.value.offset) == ("stream.version", 0)
    with pytest.raises(DecodeError) as info:
        StreamPacket.decode(b"\x01\x0f\x01\x00\x01\x00\x01\x00")
    assert (info.value.field, info.value.offset) == ("stream.ilp_packet_type", 1)
    with pytest.raises(DecodeError):
        StreamPacket.decode(b"")


def test_integers_over_64_bits_are_rejected_except_max_money() -> None:
    nine = b"\x09\x01" + bytes(8)
    with pytest.raises(DecodeError) as info:
        StreamPacket.decode(b"\x01\x0c" + nine + b"\x01\x00\x01\x00")
    assert (info.value.field, info.value.offset) == ("stream.sequence", 2)
    with pytest.raises(DecodeError) as info:
        decode_frame(FrameType.STREAM_MONEY, b"\x01\x01" + nine)
    assert info.value.field == "StreamMoney.shares"
    with pytest.raises(DecodeError):
        decode_frame(FrameType.STREAM_MAX_MONEY, b"\x01\x01\x01\x00" + nine)  # total_received
    saturated = decode_frame(FrameType.STREAM_MAX_MONEY, b"\x01\x01" + nine + b"\x01\x05")
    assert saturated == StreamMaxMoney(1, MAX_UINT64, 5)


def test_zero_length_and_non_canonical_varuints_are_rejected() -> None:
    for bad in (b"\x00", b"\x02\x00\x01"):
        with pytest.raises(DecodeError):
            decode_frame(FrameType.CONNECTION_MAX_DATA, bad)


def test_truncated_frame_reports_field_and_offset() -> None:
    # StreamMoney whose contents end after the stream id: shares is missing.
    raw = raw_packet(raw_frame(FrameType.STREAM_MONEY, b"\x01\x01"))
    with pytest.raises(DecodeError) as info:
        StreamPacket.decode(raw)
    assert info.value.field == "StreamMoney.shares"
    assert info.value.offset == len(raw)
    # Declared contents longer than the packet.
    with pytest.raises(DecodeError) as info:
        StreamPacket.decode(raw_packet(b"\x11\x10\x01\x01"))
    assert info.value.field == "stream.frame.contents"
    # More frames declared than present.
    with pytest.raises(DecodeError):
        StreamPacket.decode(raw_packet(encode_frame(StreamMoney(1, 1)), count=2))
    with pytest.raises(DecodeError):
        StreamPacket.decode(raw_packet(count=MAX_UINT64))


def test_long_frame_contents_use_the_long_length_form() -> None:
    frame = StreamData(1, 0, bytes(300))
    raw = encode_frame(frame)
    assert raw[:4] == b"\x14\x82\x01\x33"  # 2 + 2 + 3 + 300 = 307 bytes of contents
    assert StreamPacket.decode(raw_packet(raw)).frames == (frame,)


def test_new_address_is_validated_but_may_be_empty() -> None:
    assert decode_frame(FrameType.CONNECTION_NEW_ADDRESS, b"\x00") == ConnectionNewAddress("")
    with pytest.raises(DecodeError) as info:
        decode_frame(FrameType.CONNECTION_NEW_ADDRESS, b"\x05hello")
    assert info.value.field == "ConnectionNewAddress.source_account"
    with pytest.raises(DecodeError):
        decode_frame(FrameType.CONNECTION_NEW_ADDRESS, b"\x06test.\xff")
    with pytest.raises(EncodeError):
        ConnectionNewAddress("not an address")


def test_error_codes_are_enum_members_when_known() -> None:
    close = decode_frame(FrameType.CONNECTION_CLOSE, b"\x08\x00")
    assert close == ConnectionClose(ErrorCode.PROTOCOL_VIOLATION)
    assert isinstance(close, ConnectionClose) and close.error_code is ErrorCode.PROTOCOL_VIOLATION
    unknown = decode_frame(FrameType.STREAM_CLOSE, b"\x01\x03\x42\x00")
    assert isinstance(unknown, StreamClose)
    assert type(unknown.error_code) is int and unknown.error_code == 0x42
    assert StreamClose(1, 4).error_code is ErrorCode.FLOW_CONTROL_ERROR


def test_invalid_utf8_message_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode_frame(FrameType.CONNECTION_CLOSE, b"\x01\x01\xff")
    assert info.value.field == "ConnectionClose.error_message"


@pytest.mark.parametrize(
    "make",
    [
        lambda: StreamMoney(-1, 1),
        lambda: StreamMoney(1, MAX_UINT64 + 1),
        lambda: StreamMaxMoney(1, MAX_UINT64 + 1, 0),
        lambda: StreamMoneyBlocked(1, 0, -5),
        lambda: ConnectionMaxData(MAX_UINT64 + 1),
        lambda: ConnectionClose(256),
        lambda: StreamClose(1, -1),
        lambda: ConnectionAssetDetails("XRP", 256),
        lambda: StreamPacket(MAX_UINT64 + 1, PacketType.PREPARE, 0),
        lambda: StreamPacket(0, PacketType.PREPARE, -1),
        lambda: StreamPacket(0, 15, 0),  # type: ignore[arg-type]
        lambda: Receipt(bytes(15), 1, 0),
        lambda: Receipt(bytes(16), 256, 0),
        lambda: Receipt(bytes(16), 1, MAX_UINT64 + 1),
    ],
)
def test_values_that_cannot_be_encoded_raise_encode_error(make: object) -> None:
    assert callable(make)
    with pytest.raises(EncodeError):
        make()


def test_plain_ints_are_normalized() -> None:
    packet = StreamPacket(1, 13, 0, [StreamMoney(1, 1)])  # type: ignore[arg-type]
    assert packet.ilp_packet_type is PacketType.FULFILL
    assert packet.frames == (StreamMoney(1, 1),)
    assert StreamData(1, 0, bytearray(b"ab")).data == b"ab"  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Hostile input raises DecodeError and nothing else


@given(st.binary(max_size=300))
def test_arbitrary_bytes_into_packet_decode(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        StreamPacket.decode(data)


@given(st.binary(max_size=300))
def test_arbitrary_frames_after_a_valid_header(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        StreamPacket.decode(HEADER + data)


@given(st.integers(min_value=0, max_value=255), st.binary(max_size=100))
def test_arbitrary_frame_contents(frame_type: int, contents: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_frame(frame_type, contents)


@given(packets, st.data())
def test_corrupted_packets(packet: StreamPacket, data: st.DataObject) -> None:
    raw = bytearray(packet.encode())
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[at] = data.draw(st.integers(min_value=0, max_value=255))
    with contextlib.suppress(DecodeError):
        StreamPacket.decode(bytes(raw))


@given(st.binary(max_size=100))
def test_arbitrary_bytes_into_receipt_decode(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Receipt.decode(data)
    with pytest.raises(DecodeError):
        verify_receipt(data, bytes(32))


CRYPTO = StreamCrypto(b"property test secret")


@given(st.binary(max_size=200))
def test_arbitrary_bytes_into_decrypt(data: bytes) -> None:
    with pytest.raises(DecodeError):
        CRYPTO.decrypt(data)
    with pytest.raises(DecodeError):
        CRYPTO.decrypt_packet(data)


# --------------------------------------------------------------------------------------------
# Crypto and receipts


@given(packets)
def test_encrypt_decrypt_packet_round_trip(packet: StreamPacket) -> None:
    envelope = CRYPTO.encrypt_packet(packet)
    assert len(envelope) == len(packet.encode()) + 28
    assert CRYPTO.decrypt_packet(envelope) == packet
    assert CRYPTO.decrypt_packet(memoryview(envelope)) == packet


@given(st.binary(max_size=100), st.data())
def test_any_altered_byte_breaks_decryption(plaintext: bytes, data: st.DataObject) -> None:
    envelope = bytearray(CRYPTO.encrypt(plaintext))
    at = data.draw(st.integers(min_value=0, max_value=len(envelope) - 1))
    envelope[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(DecodeError):
        CRYPTO.decrypt(bytes(envelope))


def test_encrypted_plaintext_that_is_not_a_packet_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        CRYPTO.decrypt_packet(CRYPTO.encrypt(b"\x01\x0c"))
    assert info.value.field == "stream.sequence"


def test_fulfillment_and_condition() -> None:
    envelope = CRYPTO.encrypt_packet(StreamPacket(1, PacketType.PREPARE, 10))
    fulfillment = CRYPTO.fulfillment(envelope)
    assert len(fulfillment) == 32
    assert CRYPTO.condition(envelope) != fulfillment
    assert CRYPTO.condition(envelope) == CRYPTO.condition(bytes(envelope))
    assert CRYPTO.fulfillment(envelope + b"\x00") != fulfillment


@given(
    st.binary(min_size=16, max_size=16),
    st.integers(min_value=0, max_value=255),
    u64,
    st.binary(min_size=32, max_size=32),
)
def test_receipt_round_trip(nonce: bytes, stream_id: int, total: int, secret: bytes) -> None:
    receipt = Receipt(nonce, stream_id, total)
    raw = receipt.build(secret)
    assert len(raw) == 58
    assert Receipt.decode(raw) == receipt
    assert verify_receipt(raw, secret) == receipt
    assert verify_receipt(memoryview(raw), secret) == receipt
    with pytest.raises(InvalidReceiptError):
        verify_receipt(raw, bytes(b ^ 1 for b in secret))
    forged = raw[:25] + bytes([raw[25] ^ 1]) + raw[26:]  # amount changed, HMAC kept
    with pytest.raises(InvalidReceiptError):
        verify_receipt(forged, secret)
