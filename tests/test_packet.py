"""ILP packets beyond the vectors: round trips, hostile input, encoder refusals."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ilp import DecodeError, EncodeError, ErrorCode, ErrorKind, Fulfill, Prepare, Reject
from ilp.packet import _decode_packet_checked, decode_packet, is_fulfillment_valid
from tests.strategies import addresses, b32, payloads, timestamps, u64

prepares = st.builds(Prepare, u64, timestamps, b32, addresses, payloads)
fulfills = st.builds(Fulfill, b32, payloads)
codes = st.text(alphabet="FTRX0123456789", min_size=3, max_size=3)
rejects = st.builds(
    Reject,
    codes.map(ErrorCode),
    st.just("") | addresses,
    st.text(max_size=200),
    payloads,
)
packets = prepares | fulfills | rejects

EXPIRY = datetime(2017, 12, 23, 1, 21, 40, 549000, tzinfo=UTC)
PREPARE = Prepare(107, EXPIRY, b"\x11" * 32, "example.alice", b"hello")


@given(packets)
def test_round_trip(packet: Prepare | Fulfill | Reject) -> None:
    raw = packet.encode()
    assert decode_packet(raw) == packet
    assert decode_packet(memoryview(raw)) == packet
    assert decode_packet(bytearray(raw)) == packet
    assert type(packet).decode(raw) == packet


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_packet(raw)


@given(prepares | fulfills, st.data())
def test_fast_and_checked_paths_agree_on_mutations(
    packet: Prepare | Fulfill, data: st.DataObject
) -> None:
    raw = bytearray(packet.encode())
    # Length bytes are where the fast paths decide most: near the front, often a length marker.
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, min(len(raw), 40) - 1) | st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.sampled_from([0x7F, 0x80, 0x81, 0x82, 0x83]) | st.integers(0, 255))
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw) - 1)) :]
    elif data.draw(st.booleans()):
        raw += data.draw(st.binary(min_size=1, max_size=3))
    outcomes: list[object] = []
    for decode in (decode_packet, _decode_packet_checked):
        try:
            outcomes.append(decode(bytes(raw)))
        except DecodeError as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]


def test_errors_name_field_and_offset() -> None:
    raw = bytearray(PREPARE.encode())
    raw[2 + 8 + 4] = ord("1")
    raw[2 + 8 + 5] = ord("3")  # month 13
    with pytest.raises(DecodeError) as info:
        decode_packet(bytes(raw))
    assert info.value.field == "prepare.expires_at"
    assert info.value.offset == 10
    assert "month out of range" in str(info.value)
    assert "prepare.expires_at at byte 10" in str(info.value)


def test_bad_destination_is_a_decode_error() -> None:
    raw = PREPARE.encode().replace(b"example.alice", b"exampl!.alice")
    with pytest.raises(DecodeError, match=r"prepare.destination at byte 59: invalid ILP address"):
        decode_packet(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "type at byte 0: truncated"),
        (b"\x63\x00", "unknown ILP packet type 99"),
        (b"\x0d\x80", "indefinite length"),
        (b"\x0d\x81\x05", "not canonically encoded"),
    ],
)
def test_malformed_envelopes(raw: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_packet(raw)


def test_trailing_bytes_after_envelope_rejected_inside_accepted() -> None:
    raw = PREPARE.encode()
    with pytest.raises(DecodeError, match="trailing"):
        decode_packet(raw + b"\x00")
    # Extra bytes inside the envelope, after the last field, are ignored (RFC 27 extensibility).
    body = raw[2:] + b"\xff\xff"
    assert decode_packet(b"\x0c" + bytes([len(body)]) + body) == PREPARE


def test_empty_triggered_by_is_accepted() -> None:
    reject = Reject(ErrorCode("F99"), "", "", b"\x01")
    assert decode_packet(reject.encode()) == reject


def test_reject_with_invalid_utf8_message() -> None:
    raw = Reject(ErrorCode("F00"), "test.a", "ab").encode().replace(b"ab", b"\xff\xfe")
    with pytest.raises(DecodeError, match=r"reject\.message"):
        decode_packet(raw)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Prepare(-1, EXPIRY, b"\x00" * 32, "test.a"),
        lambda: Prepare(2**64, EXPIRY, b"\x00" * 32, "test.a"),
        lambda: Prepare(1, EXPIRY, b"\x00" * 31, "test.a"),
        lambda: Prepare(1, EXPIRY, b"\x00" * 32, "test"),
        lambda: Prepare(1, EXPIRY, b"\x00" * 32, "test.a", b"\x00" * 32768),
        lambda: Prepare(1, datetime(2020, 1, 1), b"\x00" * 32, "test.a"),  # naive
        lambda: Fulfill(b"\x00" * 33),
        lambda: Reject(ErrorCode("F00"), "not an address"),
        lambda: Reject(ErrorCode("F00"), "test.a", "x" * 8192),
        lambda: ErrorCode("F0"),
    ],
)
def test_encoders_refuse_impossible_values(make: object) -> None:
    with pytest.raises(EncodeError):
        make()  # type: ignore[operator]


def test_error_codes_know_their_class() -> None:
    assert ErrorCode.F02_UNREACHABLE == "F02"
    assert ErrorCode("F02").kind is ErrorKind.FINAL
    assert ErrorCode("T04").is_temporary
    assert ErrorCode("R00").is_relative
    assert ErrorCode("X42").is_final  # unknown first letter counts as final
    assert ErrorCode("F08").description == "Amount Too Large"
    assert ErrorCode("Q99").description == "Unknown Error"
    assert isinstance(Reject(ErrorCode("T04")).code, ErrorCode)


def test_fulfillment_check() -> None:
    zero = b"\x00" * 32
    condition = bytes.fromhex("66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925")
    assert is_fulfillment_valid(zero, condition)
    assert not is_fulfillment_valid(b"\x01" * 32, condition)


def test_non_utc_expiry_is_normalised() -> None:
    from datetime import timedelta, timezone

    local = EXPIRY.astimezone(timezone(timedelta(hours=2)))
    assert (
        Prepare(1, local, b"\x00" * 32, "test.a").encode()
        == Prepare(1, EXPIRY, b"\x00" * 32, "test.a").encode()
    )


def test_expiry_is_held_as_sent() -> None:
    from datetime import timedelta, timezone

    precise = datetime(2030, 1, 1, 12, 0, 0, 123999, tzinfo=timezone(timedelta(hours=-5)))
    prepare = Prepare(1, precise, b"\x00" * 32, "test.a")
    assert prepare.expires_at == datetime(2030, 1, 1, 17, 0, 0, 123000, tzinfo=UTC)
    assert prepare.expires_at.tzinfo is UTC
    assert decode_packet(prepare.encode()) == prepare


def test_forward_changes_amount_and_expiry_only() -> None:
    later = datetime(2030, 1, 1, 12, 0, 0, 5000, tzinfo=UTC)
    forwarded = PREPARE.forward(99, later)
    assert (forwarded.amount, forwarded.expires_at) == (99, later)
    assert forwarded.execution_condition == PREPARE.execution_condition
    assert forwarded.destination == PREPARE.destination
    assert forwarded.data == PREPARE.data
    assert forwarded == Prepare(99, later, PREPARE.execution_condition, "example.alice", b"hello")
    assert decode_packet(forwarded.encode()) == forwarded
    assert (PREPARE.amount, PREPARE.expires_at) == (107, EXPIRY)  # the original is untouched
    for amount in (0, 2**64 - 1):
        assert PREPARE.forward(amount, later).amount == amount


@pytest.mark.parametrize("amount", [-1, 2**64])
def test_forward_refuses_amounts_out_of_range(amount: int) -> None:
    with pytest.raises(EncodeError, match="unsigned 64-bit"):
        PREPARE.forward(amount, EXPIRY)


def test_forward_normalises_the_expiry() -> None:
    from datetime import timedelta, timezone

    local = datetime(2030, 1, 1, 14, 0, 0, 123999, tzinfo=timezone(timedelta(hours=2)))
    forwarded = PREPARE.forward(1, local)
    assert forwarded.expires_at == datetime(2030, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert forwarded.expires_at.tzinfo is UTC
    assert forwarded == Prepare(1, local, PREPARE.execution_condition, "example.alice", b"hello")
    assert decode_packet(forwarded.encode()) == forwarded
    precise = PREPARE.forward(1, datetime(2030, 1, 1, 0, 0, 0, 999, tzinfo=UTC))
    assert precise.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(EncodeError, match="timezone-aware"):
        PREPARE.forward(1, datetime(2030, 1, 1))


@given(prepares, u64, timestamps)
def test_forward_equals_a_new_prepare(prepare: Prepare, amount: int, expiry: datetime) -> None:
    forwarded = prepare.forward(amount, expiry)
    rebuilt = Prepare(
        amount, expiry, prepare.execution_condition, prepare.destination, prepare.data
    )
    assert forwarded == rebuilt
    assert forwarded.encode() == rebuilt.encode()
