"""Whatever the peer sends on an open BTP session, the session never raises (property tests).

The session's contract (``ilp.btp.session``): once authenticated, bad frames are dropped or
answered, never raised. These tests feed it arbitrary frames, well-formed BTP packets with
arbitrary contents, and mutated valid frames, on both sides, between Prepares of our own, and
check the bookkeeping: every frame it answers is valid BTP, each of our Prepares is resolved at
most once and only while it is awaited, and every Prepare it delivers can be answered.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ilp.btp.packet import ContentType, Error, Message, ProtocolData, Response, Transfer, decode_btp
from ilp.btp.session import BtpSession, Dropped, PrepareReceived, ReplyReceived
from ilp.packet import ErrorCode, Fulfill, Prepare, Reject

from .test_session import FULFILLMENT, NOW, open_pair

OUR_IDS = (100, 101, 102, 103)
"""The request ids ``open_pair``'s client gives its Prepares, in order (its server: 7, 8, 9)."""

_OUR_PREPARE = Prepare(
    10, NOW + timedelta(seconds=30), hashlib.sha256(FULFILLMENT).digest(), "test.bob", b""
)
_ids = st.sampled_from([*OUR_IDS, 0, 1, 7, 8, 9]) | st.integers(0, 2**32 - 1)
_ilp_packets = st.one_of(
    st.builds(
        Prepare,
        st.integers(0, 2**64 - 1),
        st.sampled_from([NOW - timedelta(seconds=5), NOW + timedelta(seconds=30)]),
        st.sampled_from([hashlib.sha256(FULFILLMENT).digest(), bytes(32)]),
        st.sampled_from(["test.bob", "test.alice", "peer.config", "g.x"]),
        st.binary(max_size=40),
    ),
    st.builds(Fulfill, st.sampled_from([FULFILLMENT, bytes(32)]), st.binary(max_size=40)),
    st.builds(
        Reject,
        st.sampled_from([ErrorCode("F99"), ErrorCode("T00"), ErrorCode("R00")]),
        st.sampled_from(["", "test.bob"]),
        st.text(max_size=20),
        st.binary(max_size=20),
    ),
).map(lambda packet: packet.encode())
_entry_data = _ilp_packets | st.binary(max_size=60)
_entries = st.lists(
    st.builds(
        ProtocolData,
        st.sampled_from(["ilp"] * 4 + ["auth", "auth_token", "custom", ""]),
        st.sampled_from(list(ContentType)),
        _entry_data,
    ),
    max_size=3,
).map(tuple)
_packets = st.one_of(
    st.builds(Message, _ids, _entries),
    st.builds(Response, _ids, _entries),
    st.builds(Transfer, _ids, st.integers(0, 2**64 - 1), _entries),
    st.builds(
        Error,
        _ids,
        st.sampled_from(["T00", "F00", "F08", "ZZZ"]),
        st.sampled_from(["UnreachableError", ""]),
        st.just(datetime(2024, 1, 1, tzinfo=UTC)),
        st.binary(max_size=20),
        _entries,
    ),
).map(lambda packet: packet.encode())


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid frame cut short, or with one byte changed."""
    frame = bytearray(draw(_packets))
    if draw(st.booleans()) and len(frame) > 1:
        return bytes(frame[: draw(st.integers(0, len(frame) - 1))])
    at = draw(st.integers(0, len(frame) - 1))
    frame[at] = draw(st.integers(0, 255))
    return bytes(frame)


_frames = st.one_of(_packets, _mutated(), st.binary(max_size=80))
# A step: a frame from the peer, or one more Prepare of ours (up to the ids open_pair has).
_steps = st.lists(st.one_of(_frames, st.just(None)), max_size=30)


def _drive(session: BtpSession, steps: list[bytes | None], ids_left: int) -> None:
    awaited: set[int] = set()
    resolved: set[int] = set()
    for step in steps:
        if step is None:
            if ids_left:
                ids_left -= 1
                request_id, frame = session.send_prepare(_OUR_PREPARE)
                awaited.add(request_id)
                assert decode_btp(frame).request_id == request_id
            continue
        event, reply = session.receive_frame(step, NOW)  # never raises
        if reply is not None:
            decode_btp(reply)  # what it answers itself is valid BTP
        if isinstance(event, ReplyReceived):
            assert event.request_id in awaited, event
            assert event.request_id not in resolved, event  # once only
            awaited.discard(event.request_id)
            resolved.add(event.request_id)
            if isinstance(event.reply, Fulfill):
                assert event.reply.fulfillment == FULFILLMENT  # a wrong one became a Reject
        elif isinstance(event, PrepareReceived):
            decode_btp(session.send_reply(event.request_id, Fulfill(FULFILLMENT)))
        else:
            assert event is None or isinstance(event, Dropped), event
        assert session.is_open
        assert session.in_flight == frozenset(awaited)
        assert not session.awaiting_reply  # every Prepare delivered was answered


@settings(max_examples=300, deadline=None, database=None)
@given(steps=_steps)
def test_a_client_session_survives_any_frames(steps: list[bytes | None]) -> None:
    client, _ = open_pair()
    _drive(client, steps, len(OUR_IDS))


@settings(max_examples=300, deadline=None, database=None)
@given(steps=_steps)
def test_a_server_session_survives_any_frames(steps: list[bytes | None]) -> None:
    # The server sends Prepares too (a node forwarding to a child).
    _, server = open_pair()
    _drive(server, steps, 3)
