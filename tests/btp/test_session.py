"""The sans-I/O BTP session core, driven in memory with explicit time and request ids."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ilp.btp.packet import (
    ContentType,
    Error,
    Message,
    ProtocolData,
    Response,
    Transfer,
    decode_btp,
)
from ilp.btp.session import (
    Authenticated,
    AuthRefused,
    AuthRequested,
    BtpSession,
    Dropped,
    LocalProtocolError,
    PrepareReceived,
    RemoteProtocolError,
    ReplyReceived,
    SessionState,
)
from ilp.packet import ErrorCode, Fulfill, Prepare, Reject

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
FULFILLMENT = b"\x11" * 32
CONDITION = hashlib.sha256(FULFILLMENT).digest()


def ids(*values: int) -> Callable[[int], bytes]:
    """A random-bytes source handing out the given 32-bit request ids in order."""
    it: Iterator[int] = iter(values)

    def source(n: int) -> bytes:
        assert n == 4
        return next(it).to_bytes(4, "big")

    return source


def prepare(destination: str = "test.bob", amount: int = 10) -> Prepare:
    return Prepare(amount, NOW + timedelta(seconds=30), CONDITION, destination, b"hi")


def ilp(packet: Prepare | Fulfill | Reject) -> tuple[ProtocolData, ...]:
    return (ProtocolData("ilp", ContentType.OCTET_STREAM, packet.encode()),)


def open_pair() -> tuple[BtpSession, BtpSession]:
    """A client and a server session that went through authentication."""
    client = BtpSession.client(ids(1, 100, 101, 102, 103), address="test.alice")
    server = BtpSession.server(ids(7, 8, 9), address="test.server")
    auth = client.start_auth("alice", "secret")
    event, reply = server.receive_frame(auth, NOW)
    assert isinstance(event, AuthRequested)
    assert reply is None
    event, reply = client.receive_frame(server.accept_auth(), NOW)
    assert event == Authenticated()
    assert client.is_open and server.is_open
    return client, server


# -- authentication ----------------------------------------------------------------------------


def test_auth_message_layout() -> None:
    client = BtpSession.client(ids(0x01020304))
    frame = client.start_auth("alice", "s3cret")
    packet = decode_btp(frame)
    assert packet == Message(
        0x01020304,
        (
            ProtocolData("auth", ContentType.OCTET_STREAM, b""),
            ProtocolData("auth_username", ContentType.TEXT_PLAIN_UTF8, b"alice"),
            ProtocolData("auth_token", ContentType.TEXT_PLAIN_UTF8, b"s3cret"),
        ),
    )
    assert client.state is SessionState.AUTHENTICATING


def test_server_accepts() -> None:
    server = BtpSession.server(ids())
    auth = Message(
        42,
        (ProtocolData("auth", 0, b""), ProtocolData.text("auth_token", "tok")),
    ).encode()
    event, reply = server.receive_frame(auth, NOW)
    assert event == AuthRequested(42, "", "tok")
    assert reply is None
    assert "tok" not in repr(event)
    assert server.state is SessionState.AUTH_PENDING
    with pytest.raises(LocalProtocolError, match="accept or refuse"):
        server.receive_frame(auth, NOW)
    assert decode_btp(server.accept_auth()) == Response(42)
    assert server.is_open


def test_server_refuses_and_client_sees_it() -> None:
    client = BtpSession.client(ids(5))
    server = BtpSession.server(ids())
    server.receive_frame(client.start_auth("bob", "wrong"), NOW)
    frame = server.refuse_auth("invalid auth_token", NOW)
    error = decode_btp(frame)
    assert error == Error(5, "F00", "NotAcceptedError", NOW, b"invalid auth_token")
    assert server.state is SessionState.CLOSED
    event, reply = client.receive_frame(frame, NOW)
    assert isinstance(event, AuthRefused)
    assert reply is None
    assert event.error.text == "invalid auth_token"
    assert client.state is SessionState.CLOSED
    with pytest.raises(LocalProtocolError):
        client.send_prepare(prepare())


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (Response(3).encode(), "must be the auth Message"),
        (Transfer(3, 5).encode(), "must be the auth Message"),
        (Message(3, (ProtocolData.text("auth_token", "t"),)).encode(), "must be 'auth'"),
        (Message(3).encode(), "must be 'auth'"),
        (Message(3, (ProtocolData("auth", 0, b""),)).encode(), "no auth_token"),
        (
            Message(
                3, (ProtocolData("auth", 0, b""), ProtocolData("auth_token", 1, b"\xff"))
            ).encode(),
            "UTF-8",
        ),
    ],
)
def test_server_rejects_bad_auth(frame: bytes, match: str) -> None:
    server = BtpSession.server(ids())
    with pytest.raises(RemoteProtocolError, match=match) as info:
        server.receive_frame(frame, NOW)
    assert info.value.reply is not None
    error = decode_btp(info.value.reply)
    assert isinstance(error, Error)
    assert (error.request_id, error.code, error.name) == (3, "F00", "NotAcceptedError")
    assert server.state is SessionState.CLOSED


def test_server_rejects_garbage_first_frame() -> None:
    server = BtpSession.server(ids())
    with pytest.raises(RemoteProtocolError, match="not a BTP packet") as info:
        server.receive_frame(b"\x03garbage", NOW)
    assert info.value.reply is not None
    assert isinstance(decode_btp(info.value.reply), Error)


def test_client_drops_other_packets_before_the_auth_answer() -> None:
    client = BtpSession.client(ids(5))
    client.start_auth("", "t")
    event, reply = client.receive_frame(Response(6).encode(), NOW)
    assert isinstance(event, Dropped)
    assert reply is None
    assert client.state is SessionState.AUTHENTICATING


def test_misuse_is_a_local_error() -> None:
    client = BtpSession.client(ids(1))
    with pytest.raises(LocalProtocolError, match="start_auth"):
        client.receive_frame(Response(1).encode(), NOW)
    with pytest.raises(LocalProtocolError, match="cannot send a Prepare"):
        client.send_prepare(prepare())
    with pytest.raises(LocalProtocolError, match="no auth request"):
        client.accept_auth()
    client.start_auth("", "")
    with pytest.raises(LocalProtocolError, match="idle client"):
        client.start_auth("", "")
    server = BtpSession.server(ids())
    with pytest.raises(LocalProtocolError, match="idle client"):
        server.start_auth("", "")


# -- carrying ILP ------------------------------------------------------------------------------


def test_prepare_and_fulfill_round_trip() -> None:
    client, server = open_pair()
    request_id, frame = client.send_prepare(prepare())
    assert request_id == 100
    assert decode_btp(frame) == Message(100, ilp(prepare()))
    assert client.in_flight == {100}
    event, reply = server.receive_frame(frame, NOW)
    assert event == PrepareReceived(100, prepare())
    assert reply is None
    assert server.awaiting_reply == {100}
    response = server.send_reply(100, Fulfill(FULFILLMENT, b"ok"))
    assert decode_btp(response) == Response(100, ilp(Fulfill(FULFILLMENT, b"ok")))
    assert server.awaiting_reply == set()
    event, reply = client.receive_frame(response, NOW)
    assert event == ReplyReceived(100, Fulfill(FULFILLMENT, b"ok"))
    assert client.in_flight == set()
    # The same Response again is unknown now: dropped, never answered.
    event, reply = client.receive_frame(response, NOW)
    assert isinstance(event, Dropped)
    assert reply is None


def test_reject_reply() -> None:
    client, server = open_pair()
    request_id, frame = client.send_prepare(prepare())
    server.receive_frame(frame, NOW)
    reject = Reject(ErrorCode("F02"), "test.server", "unreachable")
    event, _ = client.receive_frame(server.send_reply(request_id, reject), NOW)
    assert event == ReplyReceived(request_id, reject)


def test_request_ids_in_flight_are_never_reused() -> None:
    client = BtpSession.client(ids(1, 50, 50, 50, 51, 51, 50, 52))
    client.start_auth("", "")
    client.receive_frame(Response(1).encode(), NOW)
    assert client.send_prepare(prepare())[0] == 50
    assert client.send_prepare(prepare())[0] == 51
    assert client.send_prepare(prepare())[0] == 52
    client.abandon(50)
    assert client.in_flight == {51, 52}


def test_request_id_source_that_keeps_colliding() -> None:
    client, _ = open_pair()
    client._random = ids(*([100] * 70))
    client.send_prepare(prepare())
    with pytest.raises(LocalProtocolError, match="already in flight"):
        client.send_prepare(prepare())


def test_wrong_fulfillment_becomes_f05() -> None:
    client, server = open_pair()
    request_id, frame = client.send_prepare(prepare())
    server.receive_frame(frame, NOW)
    event, _ = client.receive_frame(server.send_reply(request_id, Fulfill(bytes(32))), NOW)
    assert isinstance(event, ReplyReceived)
    assert isinstance(event.reply, Reject)
    assert event.reply.code == "F05"
    assert event.reply.triggered_by == "test.alice"


def test_btp_error_for_a_prepare_becomes_a_local_reject() -> None:
    client, _ = open_pair()
    request_id, _ = client.send_prepare(prepare())
    frame = Error(request_id, "F00", "NotAcceptedError", NOW, b"no handler").encode()
    event, reply = client.receive_frame(frame, NOW)
    assert reply is None
    assert isinstance(event, ReplyReceived)
    assert isinstance(event.reply, Reject)
    assert event.reply.code == "F00"
    assert "F00 NotAcceptedError: no handler" in event.reply.message
    request_id, _ = client.send_prepare(prepare())
    frame = Error(request_id, "T00", "UnreachableError", NOW).encode()
    event, _ = client.receive_frame(frame, NOW)
    assert isinstance(event, ReplyReceived)
    assert isinstance(event.reply, Reject)
    assert event.reply.code == "T00"


def test_unknown_error_and_garbage_are_dropped() -> None:
    client, _ = open_pair()
    event, reply = client.receive_frame(Error(999, "T00", "x", NOW).encode(), NOW)
    assert isinstance(event, Dropped)
    assert reply is None
    event, reply = client.receive_frame(b"\x01\x02", NOW)
    assert isinstance(event, Dropped)
    assert "unparseable" in event.reason
    assert reply is None


@pytest.mark.parametrize(
    ("protocol_data", "match"),
    [
        ((), "without an ILP reply"),
        ((ProtocolData("ilp", 0, b"\x0d\x01"),), "malformed"),
        (ilp(prepare()), "answered our Prepare with a Prepare"),
    ],
)
def test_unusable_responses_become_t00(protocol_data: tuple[ProtocolData, ...], match: str) -> None:
    client, _ = open_pair()
    request_id, _ = client.send_prepare(prepare())
    event, reply = client.receive_frame(Response(request_id, protocol_data).encode(), NOW)
    assert reply is None
    assert isinstance(event, ReplyReceived)
    assert isinstance(event.reply, Reject)
    assert event.reply.code == "T00"
    assert match in event.reply.message
    assert client.in_flight == set()


def test_prepare_in_a_response_is_accepted() -> None:
    """interledger-rs appears to send Prepares in Responses: dispatch on the ILP type."""
    _, server = open_pair()
    event, reply = server.receive_frame(Response(77, ilp(prepare())).encode(), NOW)
    assert event == PrepareReceived(77, prepare())
    assert reply is None
    answer = decode_btp(server.send_reply(77, Reject(ErrorCode("F99"), "", "no")))
    assert isinstance(answer, Response)


def test_reply_in_a_message_is_accepted() -> None:
    client, _ = open_pair()
    request_id, _ = client.send_prepare(prepare())
    fulfill = Fulfill(FULFILLMENT)
    event, reply = client.receive_frame(Message(request_id, ilp(fulfill)).encode(), NOW)
    assert event == ReplyReceived(request_id, fulfill)
    assert reply is None


def test_unsolicited_reply_in_a_message_gets_a_btp_error() -> None:
    client, _ = open_pair()
    event, reply = client.receive_frame(Message(5, ilp(Fulfill(FULFILLMENT))).encode(), NOW)
    assert event is None
    assert reply is not None
    error = decode_btp(reply)
    assert isinstance(error, Error)
    assert (error.request_id, error.code) == (5, "F01")


def test_garbled_prepare_gets_an_ilp_f01_reject() -> None:
    _, server = open_pair()
    frame = Message(8, (ProtocolData("ilp", 0, b"\x0c\x03abc"),)).encode()
    event, reply = server.receive_frame(frame, NOW)
    assert event is None
    assert reply is not None
    response = decode_btp(reply)
    assert isinstance(response, Response)
    entry = response.get("ilp")
    assert entry is not None
    reject = Reject.decode(entry.data)
    assert reject.code == "F01"
    assert reject.triggered_by == "test.server"


def test_message_without_ilp_is_acknowledged() -> None:
    _, server = open_pair()
    frame = Message(8, (ProtocolData.text("info", "hello"),)).encode()
    event, reply = server.receive_frame(frame, NOW)
    assert event is None
    assert reply is not None
    assert decode_btp(reply) == Response(8)


def test_transfer_is_refused() -> None:
    _, server = open_pair()
    event, reply = server.receive_frame(Transfer(8, 100).encode(), NOW)
    assert event is None
    assert reply is not None
    error = decode_btp(reply)
    assert isinstance(error, Error)
    assert (error.request_id, error.code, error.triggered_at) == (8, "F00", NOW)


def test_duplicate_incoming_request_id() -> None:
    _, server = open_pair()
    frame = Message(8, ilp(prepare())).encode()
    assert isinstance(server.receive_frame(frame, NOW).event, PrepareReceived)
    event, reply = server.receive_frame(frame, NOW)
    assert event is None
    assert reply is not None
    error = decode_btp(reply)
    assert isinstance(error, Error)
    assert error.code == "F05"


def test_reply_misuse() -> None:
    _, server = open_pair()
    with pytest.raises(LocalProtocolError, match="no Prepare with request id 3"):
        server.send_reply(3, Reject(ErrorCode("F00")))
    server.receive_frame(Message(3, ilp(prepare())).encode(), NOW)
    with pytest.raises(LocalProtocolError, match="Fulfill or a Reject"):
        server.send_reply(3, prepare())  # type: ignore[arg-type]


def test_late_reply_after_abandon_is_dropped() -> None:
    client, server = open_pair()
    request_id, frame = client.send_prepare(prepare())
    server.receive_frame(frame, NOW)
    client.abandon(request_id)
    event, reply = client.receive_frame(
        server.send_reply(request_id, Reject(ErrorCode("F99"))), NOW
    )
    assert isinstance(event, Dropped)
    assert reply is None


def test_connection_lost() -> None:
    client, server = open_pair()
    first, _ = client.send_prepare(prepare())
    second, _ = client.send_prepare(prepare())
    assert client.connection_lost() == {first, second}
    assert client.state is SessionState.CLOSED
    assert client.in_flight == set()
    event, reply = client.receive_frame(Response(first).encode(), NOW)
    assert isinstance(event, Dropped)
    assert reply is None
    with pytest.raises(LocalProtocolError):
        client.send_prepare(prepare())
    server.receive_frame(Message(3, ilp(prepare())).encode(), NOW)
    assert server.awaiting_reply == {3}
    server.connection_lost()
    assert server.awaiting_reply == set()
    with pytest.raises(LocalProtocolError, match="closed"):
        server.send_reply(3, Reject(ErrorCode("F00")))
