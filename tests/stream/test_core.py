"""The sans-I/O STREAM connection core, driven by hand with an explicit clock."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ilp.errors import DecodeError, StreamError
from ilp.oer import MAX_UINT64
from ilp.packet import AmountTooLargeData, ErrorCode, Fulfill, PacketType, Prepare, Reject
from ilp.stream.core import (
    MAX_PLAINTEXT,
    ConnectionCore,
    ConnectionTokens,
    IncomingMoney,
    OutgoingPacket,
    ReplyKind,
    ReplyResult,
    TokenParameters,
    split_amount,
)
from ilp.stream.crypto import StreamCrypto
from ilp.stream.packet import (
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionMaxData,
    ConnectionMaxStreamId,
    ConnectionNewAddress,
    ConnectionStreamIdBlocked,
    Frame,
    StreamClose,
    StreamData,
    StreamDataBlocked,
    StreamMaxData,
    StreamMaxMoney,
    StreamMoney,
    StreamPacket,
    StreamReceipt,
)
from ilp.stream.packet import ErrorCode as StreamErrorCode
from ilp.stream.receipt import verify_receipt

SECRET = bytes(range(32))
CRYPTO = StreamCrypto(SECRET)
EXPIRY = datetime(2030, 1, 1, tzinfo=UTC)
SERVER = "test.bob.token"
CLIENT = "test.alice"


def server_core(**kw: object) -> ConnectionCore:
    args: dict[str, object] = {"local_address": "test.bob", "asset_code": "USD", "asset_scale": 2}
    args.update(kw)
    return ConnectionCore(StreamCrypto(SECRET), is_server=True, now=0.0, **args)  # type: ignore[arg-type]


def client_core(**kw: object) -> ConnectionCore:
    args: dict[str, object] = {
        "local_address": CLIENT,
        "remote_address": SERVER,
        "asset_code": "XRP",
        "asset_scale": 9,
    }
    args.update(kw)
    return ConnectionCore(StreamCrypto(SECRET), is_server=False, now=0.0, **args)  # type: ignore[arg-type]


def prepare_for(
    frames: tuple[Frame, ...],
    *,
    amount: int = 0,
    sequence: int = 1,
    minimum: int = 0,
    fulfillable: bool = True,
    kind: PacketType = PacketType.PREPARE,
    destination: str = SERVER,
) -> Prepare:
    """A Prepare carrying a STREAM packet made by hand (as a peer would send it)."""
    data = CRYPTO.encrypt_packet(StreamPacket(sequence, kind, minimum, frames))
    condition = CRYPTO.condition(data) if fulfillable else bytes(32)
    return Prepare(amount, EXPIRY, condition, destination, data)


def answer(core: ConnectionCore, prepare: Prepare, now: float = 0.0) -> Fulfill | Reject:
    result = core.handle_prepare(prepare, now)
    if isinstance(result, IncomingMoney):
        return core.fulfill(result, now)
    return result


def reply_of(reply: Fulfill | Reject) -> StreamPacket:
    return CRYPTO.decrypt_packet(reply.data)


def to_prepare(packet: OutgoingPacket, destination: str) -> Prepare:
    return Prepare(packet.amount, EXPIRY, packet.condition, destination, packet.data)


def exchange(sender: ConnectionCore, receiver: ConnectionCore) -> list[ReplyResult]:
    """Send everything ``sender`` has to ``receiver`` (fulfilling all money); the results."""
    results: list[ReplyResult] = []
    for _ in range(1000):
        packet = sender.next_packet(0.0)
        if packet is None:
            return results
        assert sender.remote_address is not None
        reply = answer(receiver, to_prepare(packet, sender.remote_address))
        results.append(sender.handle_reply(packet.sequence, reply, 0.0))
    raise AssertionError("the sender never stopped")


def connected() -> tuple[ConnectionCore, ConnectionCore]:
    client, server = client_core(), server_core()
    exchange(client, server)
    return client, server


def frames_of(reply: Fulfill | Reject, kind: type) -> list:  # type: ignore[type-arg]
    return [f for f in reply_of(reply).frames if isinstance(f, kind)]


# --------------------------------------------------------------------------------------------
# Setup


def test_first_packet_announces_address_and_asset() -> None:
    client, server = client_core(), server_core()
    packet = client.next_packet(0.0)
    assert packet is not None and packet.amount == 0 and packet.fulfillable
    sent = CRYPTO.decrypt_packet(packet.data)
    assert sent.frames[:2] == (ConnectionNewAddress(CLIENT), ConnectionAssetDetails("XRP", 9))
    reply = answer(server, to_prepare(packet, SERVER))
    assert isinstance(reply, Fulfill)
    frames = reply_of(reply).frames
    assert ConnectionMaxStreamId(20) in frames
    assert ConnectionAssetDetails("USD", 2) in frames
    result = client.handle_reply(packet.sequence, reply, 0.0)
    assert result.kind is ReplyKind.FULFILLED
    assert server.remote_address == CLIENT and server.remote_asset == ("XRP", 9)
    assert client.remote_asset == ("USD", 2) and client.remote_knows_us
    assert client.next_packet(0.0) is None  # nothing more to say


def test_address_is_sent_again_until_a_reply_proves_it_arrived() -> None:
    client = client_core()
    packet = client.next_packet(0.0)
    assert packet is not None
    result = client.handle_reply(packet.sequence, Reject(ErrorCode("T01"), "", "down"), 0.0)
    assert result.kind is ReplyKind.TEMPORARY
    again = client.next_packet(0.0)
    assert again is not None and again.sequence == 2
    frames = CRYPTO.decrypt_packet(again.data).frames
    assert frames.count(ConnectionNewAddress(CLIENT)) == 1


def test_changed_asset_details_close_the_connection() -> None:
    _, server = connected()
    reply = answer(server, prepare_for((ConnectionAssetDetails("EUR", 2),), sequence=5))
    assert isinstance(reply, Reject) and reply.code == "F99"
    assert server.close_reason is not None
    assert (
        server.close_reason.code == StreamErrorCode.PROTOCOL_VIOLATION
        and not server.close_reason.by_remote
    )
    assert frames_of(reply, ConnectionClose)[0].error_code == StreamErrorCode.PROTOCOL_VIOLATION


# --------------------------------------------------------------------------------------------
# Receiver rules (SPEC §9.6)


def test_undecryptable_data_is_f06_with_empty_message() -> None:
    server = server_core()
    other = StreamCrypto(b"x" * 32).encrypt_packet(StreamPacket(1, PacketType.PREPARE, 0, ()))
    reply = server.handle_prepare(Prepare(0, EXPIRY, bytes(32), SERVER, other), 0.0)
    assert isinstance(reply, Reject)
    assert (reply.code, reply.message, reply.triggered_by) == ("F06", "", "test.bob")
    assert server.packets_received == 0


def test_stream_packet_for_another_ilp_type_is_f06() -> None:
    server = server_core()
    reply = server.handle_prepare(prepare_for((), kind=PacketType.FULFILL), 0.0)
    assert isinstance(reply, Reject) and reply.code == "F06"


def test_amount_below_the_minimum_is_f99_with_arrived_amount() -> None:
    _, server = connected()
    prepare = prepare_for((StreamMoney(1, 1),), amount=99, minimum=100, sequence=7)
    reply = answer(server, prepare)
    assert isinstance(reply, Reject) and reply.code == "F99" and reply.message == ""
    packet = reply_of(reply)
    assert (packet.sequence, packet.ilp_packet_type, packet.prepare_amount) == (
        7,
        PacketType.REJECT,
        99,
    )
    assert server.total_received == 0


def test_unfulfillable_probe_is_f99_telling_what_arrived() -> None:
    _, server = connected()
    reply = answer(server, prepare_for((StreamMoney(1, 1),), amount=1234, fulfillable=False))
    assert isinstance(reply, Reject) and reply.code == "F99"
    assert reply_of(reply).prepare_amount == 1234
    assert server.total_received == 0


def test_money_without_streams_is_refused() -> None:
    _, server = connected()
    reply = answer(server, prepare_for((), amount=10))
    assert isinstance(reply, Reject) and reply.code == "F99"


# --------------------------------------------------------------------------------------------
# Money


def test_split_amount_floors() -> None:
    assert split_amount(100, [(2, 5), (4, 15), (6, 30)]) == {2: 10, 4: 30, 6: 60}
    assert split_amount(10, [(1, 1), (3, 2)]) == {1: 3, 3: 6}
    assert split_amount(5, [(1, 0)]) == {1: 0}


def test_remainder_goes_to_the_lowest_stream_that_can_take_it() -> None:
    _, server = connected()
    frames = (StreamMoney(1, 1), StreamMoney(3, 1), StreamMoney(5, 1))
    reply = answer(server, prepare_for(frames, amount=11))
    assert isinstance(reply, Fulfill)
    assert [server.stream(i).total_received for i in (1, 3, 5)] == [5, 3, 3]
    # Stream 1 is at its limit: the remainder goes to stream 3.
    server.stream(1).receive_max = 5
    reply = answer(server, prepare_for(frames[1:] + frames[:1], amount=11, sequence=2))
    assert isinstance(reply, Reject)  # stream 1 cannot take its 3 either
    reply = answer(server, prepare_for(frames[1:], amount=11, sequence=3))
    assert isinstance(reply, Fulfill)
    assert [server.stream(i).total_received for i in (3, 5)] == [3 + 6, 3 + 5]
    assert server.total_received == 22


def test_receive_max_allows_one_percent_more_then_refuses() -> None:
    _, server = connected()
    answer(server, prepare_for((StreamMaxData(1, 100),)))
    server.set_receive_max(1, 100)
    reply = answer(server, prepare_for((StreamMoney(1, 1),), amount=102, sequence=2))
    assert isinstance(reply, Reject)
    assert frames_of(reply, StreamMaxMoney) == [StreamMaxMoney(1, 100, 0)]
    reply = answer(server, prepare_for((StreamMoney(1, 1),), amount=101, sequence=3))
    assert isinstance(reply, Fulfill)
    assert server.stream(1).total_received == 101
    assert StreamMaxMoney(1, 100, 101) in reply_of(reply).frames


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    receive_max=st.integers(min_value=1, max_value=MAX_UINT64 // 2),
    received_share=st.fractions(min_value=0, max_value=1),
    extra=st.integers(min_value=-3, max_value=3),
)
def test_receive_max_tolerance_is_exactly_one_percent_rounded_up(
    receive_max: int, received_share: Fraction, extra: int
) -> None:
    _, server = connected()
    answer(server, prepare_for((StreamMaxData(1, 100),)))
    server.set_receive_max(1, receive_max)
    received = int(receive_max * received_share)
    if received:
        first = answer(server, prepare_for((StreamMoney(1, 1),), amount=received, sequence=2))
        assert isinstance(first, Fulfill)
    room = receive_max - received
    tolerant = Fraction(room) * Fraction(101, 100)  # the rule, with exact fractions
    limit = -(-tolerant.numerator // tolerant.denominator)
    amount = max(1, limit + extra)
    reply = answer(server, prepare_for((StreamMoney(1, 1),), amount=amount, sequence=3))
    assert isinstance(reply, Fulfill) == (amount <= limit)


def test_receive_max_only_grows_once_advertised() -> None:
    _, server = connected()
    answer(server, prepare_for((StreamMaxData(1, 100),)))
    server.set_receive_max(1, 50)
    server.set_receive_max(1, 40)  # not told to the peer yet
    reply = answer(server, prepare_for((StreamMoney(1, 1),), amount=10, sequence=2))
    assert StreamMaxMoney(1, 40, 10) in reply_of(reply).frames  # now the peer knows 40
    server.set_receive_max(1, 60)
    with pytest.raises(ValueError, match="only grow"):
        server.set_receive_max(1, 39)
    with pytest.raises(ValueError, match="only grow"):
        server.set_receive_max(1, 9)


def test_declined_money_is_f99_and_not_counted() -> None:
    _, server = connected()
    result = server.handle_prepare(prepare_for((StreamMoney(1, 1),), amount=50), 0.0)
    assert isinstance(result, IncomingMoney) and result.amounts == {1: 50}
    assert server.stream(1).incoming_held == 50
    reply = server.decline(result, 0.0)
    assert isinstance(reply, Reject) and reply.code == "F99"
    assert server.total_received == 0 and server.stream(1).incoming_held == 0
    with pytest.raises(StreamError, match="already settled"):
        server.fulfill(result, 0.0)


def test_receipts_on_every_fulfill() -> None:
    nonce, secret = b"N" * 16, b"S" * 32
    server = server_core(receipt_nonce=nonce, receipt_secret=secret)
    totals = []
    for seq, amount in enumerate((10, 20, 30), start=1):
        reply = answer(server, prepare_for((StreamMoney(1, 1),), amount=amount, sequence=seq))
        (frame,) = frames_of(reply, StreamReceipt)
        receipt = verify_receipt(frame.receipt, secret)
        assert (receipt.nonce, receipt.stream_id) == (nonce, 1)
        totals.append(receipt.total_received)
    assert totals == [10, 30, 60]


def test_sender_credits_at_least_its_minimum_and_splits_delivered() -> None:
    client, server = connected()
    client.minimum_exchange_rate = Fraction(1, 2)
    a, b = client.open_stream(), client.open_stream()
    client.add_money(a, 100)
    client.add_money(b, 300)
    results = exchange(client, server)
    money = [r for r in results if r.amount]
    assert len(money) == 1 and money[0].delivered == 400
    assert client.total_sent == 400 and client.total_delivered == 400
    assert (client.stream(a).total_sent, client.stream(b).total_sent) == (100, 300)
    assert (client.stream(a).total_delivered, client.stream(b).total_delivered) == (100, 300)
    assert server.stream(a).total_received == 100 and server.stream(b).total_received == 300


def test_rate_below_the_minimum_fails_the_money_and_delivers_nothing() -> None:
    client, server = connected()
    client.minimum_exchange_rate = Fraction(2)  # asks 2 units per unit sent; 1 arrives
    sid = client.open_stream()
    client.add_money(sid, 1000)
    results = exchange(client, server)
    assert [r.kind for r in results if r.amount] == [ReplyKind.REJECTED]
    error = client.stream(sid).money_error
    assert error is not None and "exchange rate" in error
    assert client.total_sent == 0 and server.total_received == 0
    assert client.flushed()


def test_sender_respects_the_receivers_limit() -> None:
    client, server = connected()
    sid = client.open_stream()
    exchange(client, server)
    server.set_receive_max(sid, 250)
    server.read(sid, 1)  # nothing to read; the next reply tells the new limit
    client.minimum_exchange_rate = Fraction(1)
    client.add_money(sid, 1000)
    exchange(client, server)
    assert server.stream(sid).total_received <= 250
    assert client.stream(sid).total_sent == server.stream(sid).total_received


def test_f08_lowers_the_max_packet_amount() -> None:
    client, _ = connected()
    sid = client.open_stream()
    client.add_money(sid, 1000)
    packet = client.next_packet(0.0)
    assert packet is not None and packet.amount == 1000
    f08 = Reject(ErrorCode("F08"), "test.c", "", AmountTooLargeData(500, 100).encode())
    result = client.handle_reply(packet.sequence, f08, 0.0)
    assert result.kind is ReplyKind.AMOUNT_TOO_LARGE
    assert client.max_packet_amount == 200  # 1000 × 100 / 500
    packet = client.next_packet(0.0)
    assert packet is not None and packet.amount == 200
    # No data: halve.
    result = client.handle_reply(packet.sequence, Reject(ErrorCode("F08"), "", ""), 0.0)
    assert client.max_packet_amount == 100


def test_temporary_reject_releases_money_and_resends_data() -> None:
    client, server = connected()
    sid = client.open_stream()
    client.add_money(sid, 10)
    client.write(sid, b"abc")
    packet = client.next_packet(0.0)
    assert packet is not None
    assert client.stream(sid).held == 10
    result = client.handle_reply(packet.sequence, Reject(ErrorCode("T04"), "", ""), 0.0)
    assert result.kind is ReplyKind.TEMPORARY
    assert client.stream(sid).held == 0 and client.stream(sid).retry == [(0, b"abc")]
    exchange(client, server)
    assert server.read(sid, 10) == b"abc" and server.stream(sid).total_received == 10


def test_final_reject_closes_the_connection() -> None:
    client, _ = connected()
    sid = client.open_stream()
    client.add_money(sid, 10)
    state = client.stream(sid)
    packet = client.next_packet(0.0)
    assert packet is not None
    result = client.handle_reply(packet.sequence, Reject(ErrorCode("F02"), "test.c", "no"), 0.0)
    assert result.kind is ReplyKind.FINAL and client.closed
    assert state.money_error is not None and sid not in client.streams
    assert "F02" in (client.close_reason.message if client.close_reason else "")


def test_a_fulfillment_that_does_not_match_is_not_counted() -> None:
    client, _ = connected()
    sid = client.open_stream()
    client.add_money(sid, 10)
    packet = client.next_packet(0.0)
    assert packet is not None
    result = client.handle_reply(packet.sequence, Fulfill(bytes(32)), 0.0)
    assert result.kind is ReplyKind.FINAL and client.total_sent == 0 and client.closed


def test_reply_with_wrong_sequence_or_type_is_ignored() -> None:
    client, _ = connected()
    sid = client.open_stream()
    client.add_money(sid, 10)
    packet = client.next_packet(0.0)
    assert packet is not None
    fulfillment = StreamCrypto(SECRET).fulfillment(packet.data)
    wrong = CRYPTO.encrypt_packet(
        StreamPacket(packet.sequence + 1, PacketType.FULFILL, 999, (ConnectionClose(1, ""),))
    )
    result = client.handle_reply(packet.sequence, Fulfill(fulfillment, wrong), 0.0)
    assert result.kind is ReplyKind.FULFILLED and result.stream_reply is None
    assert not client.closed and client.total_delivered == 0  # no minimum asked, none claimed


# --------------------------------------------------------------------------------------------
# Streams


def test_wrong_parity_closes_with_protocol_violation() -> None:
    _, server = connected()
    reply = answer(server, prepare_for((StreamMoney(2, 1),), amount=1))
    assert isinstance(reply, Reject)
    assert server.close_reason is not None
    assert server.close_reason.code == StreamErrorCode.PROTOCOL_VIOLATION
    # A closed connection answers every later packet with its close.
    later = answer(server, prepare_for((StreamData(1, 0, b"x"),), sequence=2))
    assert isinstance(later, Reject) and frames_of(later, ConnectionClose)


def test_stream_id_above_the_limit_is_stream_id_error() -> None:
    _, server = connected()
    assert isinstance(answer(server, prepare_for((StreamData(19, 0, b"x"),))), Fulfill)
    reply = answer(server, prepare_for((StreamData(21, 0, b"x"),), sequence=2))
    assert isinstance(reply, Reject)
    assert (
        server.close_reason is not None
        and server.close_reason.code == StreamErrorCode.STREAM_ID_ERROR
    )


def test_closing_a_peer_stream_raises_its_limit() -> None:
    _, server = connected()
    answer(server, prepare_for((StreamData(1, 0, b"x"),)))
    assert server.accept_stream() == 1
    reply = answer(server, prepare_for((StreamClose(1, StreamErrorCode.NO_ERROR, ""),), sequence=2))
    assert ConnectionMaxStreamId(22) in reply_of(reply).frames
    assert server.read(1, 10) == b"x"
    assert server.stream(1).at_eof


def test_money_for_a_closed_stream_is_refused_with_stream_state_error() -> None:
    _, server = connected()
    answer(server, prepare_for((StreamMoney(1, 1),), amount=5))
    server.close_stream(1)
    reply = answer(server, prepare_for((StreamMoney(1, 1),), amount=5, sequence=2))
    assert isinstance(reply, Reject)
    assert frames_of(reply, StreamClose) == [
        StreamClose(1, StreamErrorCode.STREAM_STATE_ERROR, "stream is closed")
    ]
    assert server.total_received == 5 and not server.closed


def test_open_stream_stops_at_the_peers_limit() -> None:
    client, _ = connected()
    ids = [client.open_stream() for _ in range(10)]
    assert ids == list(range(1, 20, 2))
    with pytest.raises(StreamError, match="up to id 20"):
        client.open_stream()
    packet = client.next_packet(0.0)
    assert packet is not None
    assert ConnectionStreamIdBlocked(21) in CRYPTO.decrypt_packet(packet.data).frames


def test_half_close_lets_the_other_side_keep_sending() -> None:
    client, server = connected()
    sid = client.open_stream()
    client.write(sid, b"question")
    client.shutdown_stream(sid)
    exchange(client, server)
    assert server.accept_stream() == sid
    assert server.read(sid, 100) == b"question" and server.stream(sid).at_eof
    server.write(sid, b"answer")
    server.shutdown_stream(sid)
    exchange(server, client)
    assert client.read(sid, 100) == b"answer"
    assert sid not in client.streams and sid not in server.streams  # both ways closed


# --------------------------------------------------------------------------------------------
# Data and flow control


def test_out_of_order_data_is_reassembled_and_duplicates_dropped() -> None:
    _, server = connected()
    answer(server, prepare_for((StreamData(1, 5, b"world"),)))
    assert server.stream(1).readable == 0
    answer(
        server, prepare_for((StreamData(1, 0, b"hello"), StreamData(1, 5, b"world")), sequence=2)
    )
    answer(server, prepare_for((StreamData(1, 0, b"hello"),), sequence=3))
    assert server.read(1, 100) == b"helloworld"
    answer(server, prepare_for((StreamData(1, 12, b"!"), StreamData(1, 10, b"ab")), sequence=4))
    assert server.read(1, 100) == b"ab!"


def test_data_beyond_the_stream_window_is_flow_control_error() -> None:
    _, server = connected()
    window = server.stream(1).max_offset if 1 in server.streams else 65536
    reply = answer(server, prepare_for((StreamData(1, window, b"x"),)))
    assert isinstance(reply, Reject)
    assert server.close_reason is not None
    assert server.close_reason.code == StreamErrorCode.FLOW_CONTROL_ERROR


def test_data_beyond_the_connection_window_is_flow_control_error() -> None:
    server = server_core(stream_window=40000, connection_window=50000)
    answer(server, prepare_for((StreamData(1, 0, b"x" * 30000),)))
    reply = answer(server, prepare_for((StreamData(3, 0, b"y" * 25000),), sequence=2))
    assert isinstance(reply, Reject)
    assert server.close_reason is not None
    assert server.close_reason.code == StreamErrorCode.FLOW_CONTROL_ERROR


def test_reading_opens_the_window_again() -> None:
    client, server = client_core(), server_core(stream_window=20000)
    exchange(client, server)
    sid = client.open_stream()
    data = bytes(range(256)) * 200  # 51200 bytes: more than the windows
    taken = client.write(sid, data)
    assert taken == len(data)
    first = client.next_packet(0.0)
    assert first is not None
    # The client assumes a 16384-byte stream window until told more...
    sent = CRYPTO.decrypt_packet(first.data).frames
    assert sum(len(f.data) for f in sent if isinstance(f, StreamData)) == 16384
    client.handle_reply(first.sequence, answer(server, to_prepare(first, SERVER)), 0.0)
    # ...and the reply to its blocked frame tells it the real window.
    exchange(client, server)
    assert server.stream(sid).readable == 20000
    received = bytearray()
    for _ in range(20):
        received += server.read(sid, 100000)
        exchange(server, client)  # window updates
        exchange(client, server)
        if len(received) == len(data):
            break
    assert bytes(received) == data


def test_sender_reports_blocked_data() -> None:
    client, _ = connected()
    sid = client.open_stream()
    client.write(sid, b"z" * 20000)
    packet = client.next_packet(0.0)
    assert packet is not None
    frames = CRYPTO.decrypt_packet(packet.data).frames
    assert StreamDataBlocked(sid, 20000) in frames
    assert sum(len(f.data) for f in frames if isinstance(f, StreamData)) == 16384


def test_packets_fit_in_an_ilp_packet() -> None:
    client, server = client_core(), server_core(stream_window=10**6, connection_window=10**6)
    exchange(client, server)
    sid = client.open_stream()
    server_sid = sid
    exchange(client, server)
    server.set_receive_max(server_sid, MAX_UINT64)
    server.stream(sid).window = 10**6
    server.read(sid, 1)
    client.stream(sid).remote_max_offset = 10**6
    client.remote_conn_max = 10**6
    client.write(sid, b"q" * 60000)
    packet = client.next_packet(0.0)
    assert packet is not None
    assert len(packet.data) <= 32767
    assert len(CRYPTO.decrypt(packet.data)) <= MAX_PLAINTEXT


# --------------------------------------------------------------------------------------------
# Closing, limits, time


def test_connection_close_from_the_peer() -> None:
    _, server = connected()
    answer(server, prepare_for((StreamData(1, 0, b"bye"),)))
    reply = answer(
        server,
        prepare_for(
            (ConnectionClose(StreamErrorCode.NO_ERROR, ""),), sequence=2, fulfillable=False
        ),
    )
    assert isinstance(reply, Reject) and reply.code == "F99"
    assert server.close_reason is not None and server.close_reason.by_remote
    assert server.read(1, 10) == b"bye" and server.stream(1).at_eof


def test_local_close_sends_connection_close_once() -> None:
    client, server = connected()
    client.close(StreamErrorCode.APPLICATION_ERROR, "done")
    packet = client.next_packet(0.0)
    assert packet is not None
    assert CRYPTO.decrypt_packet(packet.data).frames == (
        ConnectionClose(StreamErrorCode.APPLICATION_ERROR, "done"),
    )
    assert client.next_packet(0.0) is None
    answer(server, to_prepare(packet, SERVER))
    assert server.close_reason is not None
    assert (
        server.close_reason.code == StreamErrorCode.APPLICATION_ERROR
        and server.close_reason.by_remote
    )


def test_packet_limit_closes_the_connection() -> None:
    client, server = connected()
    client.max_packets = 2
    sid = client.open_stream()
    client.write(sid, b"a")
    assert client.next_packet(0.0) is not None  # packet 2
    assert client.next_packet(0.0) is None
    assert (
        client.close_reason is not None
        and client.close_reason.code == StreamErrorCode.INTERNAL_ERROR
    )
    server.max_packets = 2
    assert isinstance(answer(server, prepare_for((), sequence=2)), Fulfill)
    reply = answer(server, prepare_for((), sequence=3))
    assert isinstance(reply, Reject)
    assert server.close_reason is not None
    assert server.close_reason.code == StreamErrorCode.PROTOCOL_VIOLATION


def test_idle_timeout() -> None:
    server = server_core(idle_timeout=60.0)
    assert server.idle_deadline == 60.0
    answer(server, prepare_for((), sequence=1), now=30.0)
    assert server.idle_deadline == 90.0
    assert not server.expire_idle(89.0)
    assert server.expire_idle(90.0)
    assert server.close_reason is not None and server.close_reason.message == "idle timeout"
    assert server_core(idle_timeout=None).idle_deadline is None


def test_probe_reports_what_arrived() -> None:
    client, server = connected()
    probe = client.make_probe(1000, b"\x07" * 32, 0.0)
    assert not probe.fulfillable and probe.condition == b"\x07" * 32
    prepare = to_prepare(probe, SERVER)
    halved = Prepare(500, prepare.expires_at, prepare.execution_condition, SERVER, prepare.data)
    result = client.handle_reply(probe.sequence, answer(server, halved), 0.0)
    assert result.kind is ReplyKind.REJECTED and result.delivered == 500
    assert client.observed_rate == Fraction(1, 2) and not client.closed


# --------------------------------------------------------------------------------------------
# Connection tokens


def test_tokens_round_trip_and_derive_the_secret() -> None:
    tokens = ConnectionTokens(b"k" * 32)
    params = TokenParameters("order-1 ✓", b"n" * 16, b"s" * 32)
    token = tokens.make(params, b"\x01" * 12)
    assert tokens.open(token) == params
    assert tokens.open(tokens.make(TokenParameters(), b"\x02" * 12)) == TokenParameters()
    base = hmac.digest(b"k" * 32, b"ilp_stream_shared_secret", "sha256")
    assert tokens.shared_secret(token) == hmac.digest(base, token, "sha256")
    assert tokens.shared_secret(token) != ConnectionTokens(b"j" * 32).shared_secret(token)
    tampered = bytearray(token)
    tampered[-1] ^= 1
    with pytest.raises(DecodeError):
        tokens.open(bytes(tampered))
    with pytest.raises(DecodeError):
        ConnectionTokens(b"j" * 32).open(token)


# --------------------------------------------------------------------------------------------
# Hypothesis: arbitrary frame sequences never crash the receiver


# Mostly ids a client may use (odd, within the limit), sometimes anything.
_ids = st.one_of(
    st.sampled_from([1, 3, 5, 7]),
    st.sampled_from([1, 3, 5, 7]),
    st.sampled_from([1, 3, 5, 7]),
    st.integers(min_value=0, max_value=30),
)
_small = st.integers(min_value=0, max_value=70000)
_big = st.one_of(_small, st.just(MAX_UINT64), st.integers(min_value=0, max_value=MAX_UINT64))
_codes = st.integers(min_value=0, max_value=255)
_rare_close = st.builds(ConnectionClose, _codes, st.text(max_size=10))

frame_strategy: st.SearchStrategy[Frame] = st.one_of(
    st.builds(StreamMoney, _ids, _big),
    st.builds(StreamData, _ids, _small, st.binary(max_size=64)),
    st.builds(StreamMaxMoney, _ids, _big, _big),
    st.builds(StreamMaxData, _ids, _big),
    st.builds(StreamClose, _ids, _codes, st.text(max_size=10)),
    st.builds(StreamDataBlocked, _ids, _small),
    st.builds(ConnectionMaxData, _big),
    st.builds(ConnectionMaxStreamId, _big),
    st.builds(ConnectionAssetDetails, st.sampled_from(["XRP", "USD"]), st.sampled_from([2, 9])),
    st.builds(ConnectionNewAddress, st.sampled_from(["", "test.alice", "test.carol"])),
    st.builds(StreamReceipt, _ids, st.binary(max_size=8)),
)
frame_strategy = st.one_of(frame_strategy, frame_strategy, frame_strategy, _rare_close)

packet_strategy = st.tuples(
    st.lists(frame_strategy, max_size=6),
    st.integers(min_value=0, max_value=10**6),  # amount
    st.one_of(st.just(0), st.integers(min_value=0, max_value=10**6)),  # minimum
    st.one_of(st.just(True), st.booleans()),  # fulfillable
)


def _justified(before: ConnectionCore, frames: list[Frame], code: int) -> bool:
    """Whether a close with ``code`` is explained by ``frames`` (the receiver's own checks)."""
    ids = [f.stream_id for f in frames if hasattr(f, "stream_id")]
    if code == StreamErrorCode.PROTOCOL_VIOLATION:
        return (
            any(i == 0 or i % 2 == 0 for i in ids)
            or any(isinstance(f, ConnectionAssetDetails) for f in frames)
            or any(isinstance(f, StreamData) for f in frames)  # overlapping pieces
        )
    if code == StreamErrorCode.STREAM_ID_ERROR:
        return any(i % 2 == 1 and i > before.max_stream_id - 4 for i in ids)
    if code == StreamErrorCode.FLOW_CONTROL_ERROR:
        return any(isinstance(f, StreamData) and f.offset + len(f.data) > 16384 for f in frames)
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet_strategy, min_size=1, max_size=12))
def test_arbitrary_frames_never_crash_the_receiver(
    packets: list[tuple[list[Frame], int, int, bool]],
) -> None:
    server = server_core(stream_window=16384, connection_window=40000)
    fulfilled = 0
    for seq, (frames, amount, minimum, fulfillable) in enumerate(packets, start=1):
        was_closed = server.closed
        max_id = server.max_stream_id
        prepare = prepare_for(
            tuple(frames), amount=amount, minimum=minimum, sequence=seq, fulfillable=fulfillable
        )
        reply = answer(server, prepare)
        assert isinstance(reply, Fulfill | Reject)
        if isinstance(reply, Fulfill):
            assert fulfillable and amount >= minimum and not was_closed
            fulfilled += amount
        else:
            assert reply.code == "F99"
            packet = reply_of(reply)
            assert (packet.sequence, packet.prepare_amount) == (seq, amount)
        reason = server.close_reason
        event(type(reply).__name__)
        if reason is not None and not was_closed:
            event("closed by the peer" if reason.by_remote else f"closed with {reason.code}")
            if reason.by_remote:
                assert any(isinstance(f, ConnectionClose) for f in frames)
            else:
                assert reason.code in (
                    StreamErrorCode.PROTOCOL_VIOLATION,
                    StreamErrorCode.STREAM_ID_ERROR,
                    StreamErrorCode.FLOW_CONTROL_ERROR,
                ), reason
                probe = server_core()
                probe.max_stream_id = max_id
                assert _justified(probe, frames, reason.code), (reason, frames)
                if isinstance(reply, Reject):
                    assert any(isinstance(f, ConnectionClose) for f in reply_of(reply).frames)
    assert server.total_received == fulfilled


@settings(max_examples=200, deadline=None)
@given(st.lists(frame_strategy, max_size=8), st.booleans(), st.integers(0, 10**6))
def test_arbitrary_replies_never_crash_the_sender(
    frames: list[Frame], fulfill: bool, arrived: int
) -> None:
    client, server = connected()
    sid = client.open_stream()
    client.write(sid, b"data")
    client.add_money(sid, 50)
    packet = client.next_packet(0.0)
    assert packet is not None
    kind = PacketType.FULFILL if fulfill else PacketType.REJECT
    data = CRYPTO.encrypt_packet(StreamPacket(packet.sequence, kind, arrived, tuple(frames)))
    reply: Fulfill | Reject
    if fulfill:
        reply = Fulfill(StreamCrypto(SECRET).fulfillment(packet.data), data)
    else:
        reply = Reject(ErrorCode("F99"), "test.bob", "", data)
    result = client.handle_reply(packet.sequence, reply, 0.0)
    assert result.stream_reply is not None and result.delivered == arrived
    if fulfill:
        assert client.total_sent == 50
        assert client.total_delivered == arrived
    else:
        assert client.total_sent == 0
    # Whatever the reply said, the sender keeps going or stops cleanly.
    for _ in range(50):
        nxt = client.next_packet(0.0)
        if nxt is None:
            break
        client.handle_reply(nxt.sequence, answer(server, to_prepare(nxt, SERVER)), 0.0)
    assert client.in_flight == 0
