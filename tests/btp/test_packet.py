"""BTP packet codec: round trips, strictness, hostile input."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ilp.btp.packet import (
    BtpPacket,
    BtpType,
    ContentType,
    Error,
    Message,
    ProtocolData,
    Response,
    Transfer,
    decode_btp,
    encode_ilp_frame,
    peek_ilp,
)
from ilp.errors import DecodeError, EncodeError
from ilp.oer import encode_length, encode_var_uint
from tests.strategies import timestamps, u64

u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
ascii_text = st.text(alphabet=st.characters(max_codepoint=127), max_size=20)
entries = st.builds(
    ProtocolData,
    ascii_text,
    st.integers(min_value=0, max_value=255),
    st.binary(max_size=200) | st.binary(min_size=128, max_size=70000),
)
protocol_data = st.lists(entries, max_size=5).map(tuple)
codes = st.text(alphabet=st.characters(max_codepoint=127), min_size=3, max_size=3)
packets: st.SearchStrategy[BtpPacket] = st.one_of(
    st.builds(Response, u32, protocol_data),
    st.builds(Message, u32, protocol_data),
    st.builds(Transfer, u32, u64, protocol_data),
    st.builds(Error, u32, codes, ascii_text, timestamps, st.binary(max_size=8192), protocol_data),
)


@given(packets)
def test_round_trip(packet: BtpPacket) -> None:
    assert decode_btp(packet.encode()) == packet


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_btp(data)


@given(packets, st.data())
def test_mutated_packets_raise_only_decode_error(packet: BtpPacket, data: st.DataObject) -> None:
    raw = bytearray(packet.encode())
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    with contextlib.suppress(DecodeError):
        decode_btp(bytes(raw[:cut]))


def _envelope(kind: int, contents: bytes, request_id: int = 7) -> bytes:
    return bytes([kind]) + request_id.to_bytes(4, "big") + encode_length(len(contents)) + contents


@pytest.mark.parametrize("kind", [0, 3, 4, 5, 8, 255])
def test_unknown_types_are_rejected(kind: int) -> None:
    with pytest.raises(DecodeError, match=f"unknown BTP packet type {kind}") as info:
        decode_btp(_envelope(kind, b"\x01\x00"))
    assert info.value.field == "type"
    assert info.value.offset == 0
    if kind in (3, 4, 5):
        assert "retired" in str(info.value)


def test_trailing_bytes_inside_contents_are_rejected() -> None:
    with pytest.raises(DecodeError, match="trailing") as info:
        decode_btp(_envelope(6, b"\x01\x00\xff"))
    assert info.value.field == "contents"
    assert info.value.offset == 8


def test_trailing_bytes_after_envelope_are_rejected() -> None:
    with pytest.raises(DecodeError, match="trailing") as info:
        decode_btp(_envelope(6, b"\x01\x00") + b"\x00")
    assert info.value.field == "packet"


def test_empty_protocol_data_is_01_00() -> None:
    assert Response(1).encode() == bytes.fromhex("01 00000001 02 0100")
    assert decode_btp(bytes.fromhex("01 00000001 02 0100")) == Response(1)


def test_zero_length_count_is_rejected() -> None:
    with pytest.raises(DecodeError, match="length 0"):
        decode_btp(_envelope(1, b"\x00"))


def test_huge_declared_count_does_not_allocate() -> None:
    contents = encode_var_uint(2**63)
    with pytest.raises(DecodeError, match="declares") as info:
        decode_btp(_envelope(1, contents))
    assert info.value.field == "protocol_data"


def test_missing_contents_is_truncated() -> None:
    with pytest.raises(DecodeError, match="truncated") as info:
        decode_btp(b"\x06\x00\x00\x00\x01\x05\x01")
    assert info.value.field == "contents"


def test_error_fields() -> None:
    when = datetime(2017, 8, 28, 18, 32, 0, 123000, tzinfo=UTC)
    error = Error(9, "F00", "NotAcceptedError", when, b"invalid auth_token")
    raw = error.encode()
    assert b"20170828183200.123Z" in raw
    decoded = decode_btp(raw)
    assert decoded == error
    assert isinstance(decoded, Error)
    assert decoded.text == "invalid auth_token"


def test_error_time_is_decoded_leniently() -> None:
    contents = b"F00" + b"\x01x" + b"\x0f20170828183200Z" + b"\x00" + b"\x01\x00"
    packet = decode_btp(_envelope(2, contents))
    assert isinstance(packet, Error)
    assert packet.triggered_at == datetime(2017, 8, 28, 18, 32, tzinfo=UTC)
    bad = b"F00" + b"\x01x" + b"\x0f2017082818320xZ" + b"\x00" + b"\x01\x00"
    with pytest.raises(DecodeError) as info:
        decode_btp(_envelope(2, bad))
    assert info.value.field == "error.triggered_at"
    assert info.value.offset == 6 + 3 + 2  # envelope header, code, name


def test_error_data_limit() -> None:
    when = datetime(2020, 1, 1, tzinfo=UTC)
    Error(1, "T00", "UnreachableError", when, bytes(8192)).encode()
    with pytest.raises(EncodeError, match="8192"):
        Error(1, "T00", "UnreachableError", when, bytes(8193))
    contents = b"T00" + b"\x00" + b"\x1320200101000000.000Z" + encode_length(8193)
    contents += bytes(8193) + b"\x01\x00"
    with pytest.raises(DecodeError, match="limit of 8192") as info:
        decode_btp(_envelope(2, contents))
    assert info.value.field == "error.data"


def test_unknown_content_type_is_kept() -> None:
    entry = ProtocolData("x", 9, b"a")
    packet = decode_btp(Message(1, (entry,)).encode())
    assert packet.protocol_data[0].content_type == 9
    assert not isinstance(packet.protocol_data[0].content_type, ContentType)
    known = ProtocolData("y", 1, b"")
    assert known.content_type is ContentType.TEXT_PLAIN_UTF8


def test_get_and_primary() -> None:
    packet = Message(
        1,
        (
            ProtocolData("auth", 0, b""),
            ProtocolData.text("auth_token", "t"),
            ProtocolData("auth_token", 1, b"second"),
        ),
    )
    assert packet.primary == ProtocolData("auth", 0, b"")
    assert packet.get("auth_token") == ProtocolData("auth_token", 1, b"t")
    assert packet.get("ilp") is None
    assert Message(1).primary is None


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Message(-1), "32-bit"),
        (lambda: Message(2**32), "32-bit"),
        (lambda: Transfer(1, -1), "64-bit"),
        (lambda: Transfer(1, 2**64), "64-bit"),
        (lambda: ProtocolData("é", 0, b""), "ASCII"),
        (lambda: ProtocolData("x", 256, b""), "byte"),
        (lambda: Error(1, "F0", "x", datetime(2020, 1, 1, tzinfo=UTC)), "3 ASCII"),
        (lambda: Error(1, "F00", "é", datetime(2020, 1, 1, tzinfo=UTC)), "ASCII"),
        (lambda: Error(1, "F00", "x", datetime(2020, 1, 1)), "timezone"),
        (lambda: Message(1, ("ilp",)), "ProtocolData"),  # type: ignore[arg-type]
    ],
)
def test_encode_errors(build: object, match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        build()  # type: ignore[operator]


# -- the fast path for a Message or Response carrying one ILP packet --------------------------

ilp_packets: st.SearchStrategy[Message | Response] = st.builds(
    lambda cls, request_id, content_type, data: cls(
        request_id, (ProtocolData("ilp", content_type, data),)
    ),
    st.sampled_from([Message, Response]),
    u32,
    st.integers(min_value=0, max_value=255),
    st.binary(max_size=300),
)


def _full_decode(raw: bytes) -> BtpPacket:
    """decode_btp without the fast path (it only looks at ``bytes``)."""
    return decode_btp(memoryview(raw))


def _check_ilp_frame(packet: Message | Response) -> None:
    raw = packet.encode()
    entry = packet.protocol_data[0]
    kind = BtpType.MESSAGE if isinstance(packet, Message) else BtpType.RESPONSE
    peeked = peek_ilp(raw)
    n = len(entry.data)
    if 7 + len(encode_length(n)) + n < 65536:  # lengths of up to 2 bytes; longer: full decoder
        assert peeked == (kind, packet.request_id, entry.data)
    else:
        assert peeked is None
    decoded = decode_btp(raw)
    assert decoded == packet == _full_decode(raw)
    assert type(decoded.protocol_data[0].content_type) is type(entry.content_type)
    if entry.content_type == ContentType.OCTET_STREAM:
        assert encode_ilp_frame(kind, packet.request_id, entry.data) == raw


@given(ilp_packets)
def test_ilp_frames_take_the_fast_path(packet: Message | Response) -> None:
    _check_ilp_frame(packet)


@pytest.mark.parametrize("size", [127, 128, 255, 256, 64000, 65535, 65536, 70000])
@pytest.mark.parametrize("cls", [Message, Response])
def test_ilp_frames_of_every_length_form(size: int, cls: type[Message | Response]) -> None:
    _check_ilp_frame(cls(9, (ProtocolData("ilp", 0, bytes(range(256)) * (size // 256)),)))
    _check_ilp_frame(cls(9, (ProtocolData("ilp", 7, b"\x01" * size),)))


@given(packets | ilp_packets, st.data())
def test_the_fast_path_agrees_with_the_full_decoder(packet: BtpPacket, data: st.DataObject) -> None:
    raw = bytearray(packet.encode())
    if data.draw(st.booleans()):
        index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[index] = data.draw(st.integers(min_value=0, max_value=255))
        del raw[data.draw(st.integers(min_value=0, max_value=len(raw))) :]
    frame = bytes(raw)
    peeked = peek_ilp(frame)
    try:
        full = _full_decode(frame)
    except DecodeError:
        assert peeked is None
        with pytest.raises(DecodeError):
            decode_btp(frame)
        return
    assert decode_btp(frame) == full
    single_ilp = (
        isinstance(full, Message | Response)
        and len(full.protocol_data) == 1
        and full.protocol_data[0].name == "ilp"
    )
    if peeked is not None:
        assert single_ilp
        assert peeked == (frame[0], full.request_id, full.protocol_data[0].data)
    elif len(frame) < 65000:
        assert not single_ilp


@pytest.mark.parametrize(
    "raw",
    [
        # Non-canonical lengths: the fast path leaves them to the decoder, which refuses them.
        bytes.fromhex("06 00000001 81 0a 0101 03 696c70 00 02 0c00"),
        bytes.fromhex("06 00000001 0b 0101 03 696c70 00 81 02 0c00"),
        # Two entries, a count written long, trailing bytes.
        bytes.fromhex("06 00000001 0a 0102 03 696c70 00 01 0c"),
        bytes.fromhex("06 00000001 0b 0201 01 03 696c70 00 01 0c"),
        bytes.fromhex("06 00000001 0a 0101 03 696c70 00 01 0c 00"),
    ],
)
def test_fast_path_declines_unusual_frames(raw: bytes) -> None:
    assert peek_ilp(raw) is None
    with pytest.raises(DecodeError):
        decode_btp(raw)


def test_encode_ilp_frame_checks_the_request_id() -> None:
    with pytest.raises(EncodeError, match="unsigned 32-bit"):
        encode_ilp_frame(BtpType.MESSAGE, 2**32, b"")
