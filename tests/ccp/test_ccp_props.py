"""CCP messages: hypothesis round trips, arbitrary bytes, envelope checks, sans-I/O imports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ilp.ccp import (
    CCP_CONTROL_DESTINATION,
    CCP_UPDATE_DESTINATION,
    Mode,
    Route,
    RouteControlRequest,
    RouteProp,
    RouteUpdateRequest,
)
from ilp.errors import DecodeError, EncodeError
from ilp.packet import Prepare, decode_packet
from ilp.peer import PEER_CONDITION, PEER_EXPIRY, PeerRequestError
from tests.strategies import addresses, b32, timestamps

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
TABLE = bytes(range(16))
u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
ascii_text = st.text(alphabet=st.characters(max_codepoint=127), max_size=30)

props = st.builds(
    RouteProp,
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(min_value=0, max_value=0xFFFF),
    st.binary(max_size=40),
)
routes = st.builds(
    Route,
    ascii_text,
    st.lists(ascii_text, max_size=4).map(tuple),
    b32,
    st.lists(props, max_size=3).map(tuple),
)
controls = st.builds(
    RouteControlRequest,
    st.sampled_from(Mode),
    st.binary(min_size=16, max_size=16),
    u32,
    st.lists(st.text(max_size=10), max_size=4).map(tuple),
)
updates = st.builds(
    RouteUpdateRequest,
    st.binary(min_size=16, max_size=16),
    u32,
    u32,
    u32,
    u32,
    addresses,
    st.lists(routes, max_size=3).map(tuple),
    st.lists(ascii_text, max_size=4).map(tuple),
)


@given(controls)
def test_control_round_trip(message: RouteControlRequest) -> None:
    assert RouteControlRequest.decode(message.encode()) == message


@given(updates)
def test_update_round_trip(message: RouteUpdateRequest) -> None:
    assert RouteUpdateRequest.decode(message.encode()) == message


@given(controls, timestamps)
def test_control_prepare_round_trip(message: RouteControlRequest, expiry: datetime) -> None:
    prepare = decode_packet(message.to_prepare(expiry).encode())
    assert isinstance(prepare, Prepare)
    assert prepare.amount == 0
    assert prepare.destination == CCP_CONTROL_DESTINATION
    assert prepare.execution_condition == PEER_CONDITION
    assert RouteControlRequest.from_prepare(prepare, expiry) == message


@given(updates)
def test_update_prepare_round_trip(message: RouteUpdateRequest) -> None:
    prepare = decode_packet(message.to_prepare(NOW + PEER_EXPIRY).encode())
    assert isinstance(prepare, Prepare)
    assert prepare.destination == CCP_UPDATE_DESTINATION
    assert RouteUpdateRequest.from_prepare(prepare, NOW) == message


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(raw: bytes) -> None:
    for cls in (RouteControlRequest, RouteUpdateRequest):
        try:
            message = cls.decode(raw)
        except DecodeError:
            continue
        assert cls.decode(message.encode()) == message


@given(updates, st.data())
def test_truncated_updates_raise_decode_error(
    message: RouteUpdateRequest, data: st.DataObject
) -> None:
    raw = message.encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(DecodeError):
        RouteUpdateRequest.decode(raw[:cut])


@pytest.mark.parametrize("mode", [2, 3, 0x80, 0xFF])
def test_unknown_mode_is_a_decode_error(mode: int) -> None:
    raw = bytes([mode]) + TABLE + bytes(4) + b"\x01\x00"
    with pytest.raises(DecodeError, match=f"unknown route control mode {mode}") as info:
        RouteControlRequest.decode(raw)
    assert info.value.field == "ccp.mode"
    assert info.value.offset == 0


def test_decode_errors_name_the_field() -> None:
    good = RouteUpdateRequest(TABLE, 1, 0, 1, 30000, "test.alice").encode()
    with pytest.raises(DecodeError) as info:
        RouteUpdateRequest.decode(good[:-1])
    assert info.value.field == "ccp.withdrawn_routes"
    bad_speaker = good[:32] + b"\x04nope" + good[46:]
    with pytest.raises(DecodeError, match="invalid ILP address") as info:
        RouteUpdateRequest.decode(bad_speaker)
    assert info.value.field == "ccp.speaker"
    assert info.value.offset == 32
    # A zero-length count is not a varuint (the classic `00` instead of `01 00` bug).
    with pytest.raises(DecodeError, match="length 0") as info:
        RouteUpdateRequest.decode(good[:-2] + b"\x00")
    assert info.value.field == "ccp.withdrawn_routes"


def test_huge_counts_fail_fast() -> None:
    raw = bytes([1]) + TABLE + bytes(4) + bytes.fromhex("08ffffffffffffffff") + b"\x01a"
    with pytest.raises(DecodeError, match="truncated"):
        RouteControlRequest.decode(raw)


def test_prop_flags_are_written_as_given() -> None:
    # ilp-protocol-ccp would force the transitive bit here (0x40); we keep the flags as given.
    prop = RouteProp(False, False, True, False, 7, b"\x01")
    assert prop.meta == 0x20
    route = Route("test.x", ("test.a",), bytes(32), (prop,))
    update = RouteUpdateRequest(TABLE, 1, 0, 1, 0, "test.a", (route,))
    assert RouteUpdateRequest.decode(update.encode()).new_routes[0].props == (prop,)
    # The four low bits of the meta byte are ignored when reading.
    raw = update.encode()
    at = raw.index(b"\x20\x00\x07")
    assert RouteUpdateRequest.decode(raw[:at] + b"\x2f" + raw[at + 1 :]) == update


def test_trailing_bytes_are_ignored() -> None:
    control = RouteControlRequest(Mode.SYNC, TABLE, 3, ("x",))
    assert RouteControlRequest.decode(control.encode() + b"junk") == control


def test_lists_become_tuples() -> None:
    control = RouteControlRequest(1, TABLE, 3, ["a"])  # type: ignore[arg-type]
    assert control.mode is Mode.SYNC
    assert control.features == ("a",)
    route = Route("test.x", ["test.a"], bytes(32), [])  # type: ignore[arg-type]
    assert route.path == ("test.a",)
    assert route.props == ()


@pytest.mark.parametrize(
    "build",
    [
        lambda: RouteControlRequest(5, TABLE, 0),  # type: ignore[arg-type]
        lambda: RouteControlRequest(Mode.IDLE, bytes(15), 0),
        lambda: RouteControlRequest(Mode.IDLE, TABLE, -1),
        lambda: RouteControlRequest(Mode.IDLE, TABLE, 1 << 32),
        lambda: RouteUpdateRequest(TABLE, 0, 0, 0, 1 << 32, "test.a"),
        lambda: RouteUpdateRequest(TABLE, 0, 0, 0, 0, "not an address"),
        lambda: Route("test.x", (), bytes(31)),
        lambda: RouteProp(False, True, False, False, 1 << 16, b""),
        lambda: RouteProp(False, True, False, True, 1, "text"),  # type: ignore[arg-type]
    ],
)
def test_invalid_values_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(EncodeError):
        build()


def test_non_ascii_prefixes_cannot_be_encoded() -> None:
    route = Route("tëst.x", (), bytes(32))
    with pytest.raises(EncodeError, match="not ASCII"):
        RouteUpdateRequest(TABLE, 0, 0, 0, 0, "test.a", (route,)).encode()
    with pytest.raises(EncodeError, match="not ASCII"):
        RouteUpdateRequest(TABLE, 0, 0, 0, 0, "test.a", (), ("tëst",)).encode()


def test_envelope_checks() -> None:
    control = RouteControlRequest(Mode.SYNC, TABLE, 0)
    good = control.to_prepare(NOW)
    assert RouteControlRequest.from_prepare(good, NOW) == control  # expiring now is still live
    expired = control.to_prepare(NOW - timedelta(milliseconds=1))
    with pytest.raises(PeerRequestError, match="expired") as info:
        RouteControlRequest.from_prepare(expired, NOW)
    assert info.value.code == "R00"
    wrong_condition = Prepare(0, NOW, bytes(32), CCP_CONTROL_DESTINATION, control.encode())
    with pytest.raises(PeerRequestError, match="condition") as info:
        RouteControlRequest.from_prepare(wrong_condition, NOW)
    assert info.value.code == "F01"
    # A control request sent to the update address is not an update.
    with pytest.raises(PeerRequestError, match="destination") as info:
        RouteUpdateRequest.from_prepare(good, NOW)
    assert info.value.code == "F01"
    # Right envelope, malformed data: a plain DecodeError.
    bad_data = Prepare(0, NOW, PEER_CONDITION, CCP_CONTROL_DESTINATION, b"\x05")
    with pytest.raises(DecodeError) as caught:
        RouteControlRequest.from_prepare(bad_data, NOW)
    assert not isinstance(caught.value, PeerRequestError)


@pytest.mark.parametrize("module", ["ilp.peer", "ilp.ccp", "ilp.spsp"])
def test_packages_import_no_io_library(module: str) -> None:
    # tests/test_sans_io.py covers ilp.ildcp, ilp.ccp.packet and ilp.spsp.pointer; this covers
    # the package re-exports and ilp.peer.
    code = (
        f"import sys, {module}; "
        "print(','.join(m for m in ('trio', 'httpx', 'trio_websocket') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
