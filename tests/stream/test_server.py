"""The STREAM receiver: credentials, routing of Prepares, queues, and bounded memory."""

from __future__ import annotations

import base64
import gc
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.testing

from ilp.btp import open_btp_client
from ilp.errors import EncodeError
from ilp.link import Reply, ReplyCallback
from ilp.packet import ErrorCode, Fulfill, PacketType, Prepare, Reject
from ilp.stream.connection import Connection, DataStream
from ilp.stream.core import ConnectionCore
from ilp.stream.crypto import StreamCrypto
from ilp.stream.packet import ConnectionClose, StreamClose, StreamMoney, StreamPacket
from ilp.stream.packet import ErrorCode as StreamErrorCode
from ilp.stream.pay import PaymentStatus, pay
from ilp.stream.server import StreamServer

from ..btp.test_client_server import LIMIT
from ..btp.test_client_server import Server as BtpServer
from .nowait import call, mount

SECRET = b"\x22" * 32
ADDRESS = "test.bob"

pytestmark = pytest.mark.usefixtures("receiver_path")


def make_server(**kw: object) -> StreamServer:
    return StreamServer(SECRET, ADDRESS, "USD", 2, **kw)  # type: ignore[arg-type]


def expiry() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=30)


class Client:
    """A sans-I/O client core talking straight to a server's handler (no link, no tasks)."""

    def __init__(self, destination: str, secret: bytes) -> None:
        self.destination = destination
        self.crypto = StreamCrypto(secret)
        self.core = ConnectionCore(
            self.crypto,
            is_server=False,
            now=trio.current_time(),
            local_address="test.alice",
            remote_address=destination,
            asset_code="XRP",
            asset_scale=9,
        )

    async def flush(self, server: StreamServer) -> list[Fulfill | Reject]:
        replies: list[Fulfill | Reject] = []
        while (packet := self.core.next_packet(trio.current_time())) is not None:
            assert len(replies) < 10, f"the client keeps sending: {replies}"
            prepare = Prepare(
                packet.amount, expiry(), packet.condition, self.destination, packet.data
            )
            reply = await call(server, prepare)
            self.core.handle_reply(packet.sequence, reply, trio.current_time())
            replies.append(reply)
        return replies


def raw_prepare(destination: str, secret: bytes, frames: tuple = (), amount: int = 0) -> Prepare:  # type: ignore[type-arg]
    crypto = StreamCrypto(secret)
    data = crypto.encrypt_packet(StreamPacket(1, PacketType.PREPARE, 0, frames))
    return Prepare(amount, expiry(), crypto.condition(data), destination, data)


# --------------------------------------------------------------------------------------------
# Credentials


def test_credentials_are_fresh_and_addressed_under_the_server() -> None:
    server = make_server()
    a_dest, a_secret = server.generate_credentials()
    b_dest, b_secret = server.generate_credentials(tag="x" * 200)
    assert a_dest.startswith(ADDRESS + ".") and b_dest.startswith(ADDRESS + ".")
    assert a_dest != b_dest and a_secret != b_secret and len(a_secret) == 32
    token = a_dest.rsplit(".", 1)[1]
    assert "=" not in token
    assert base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert server.live_connections == 0  # nothing stored
    with pytest.raises(EncodeError):
        server.generate_credentials(tag="x" * 300)
    with pytest.raises(EncodeError):
        server.generate_credentials(receipt_nonce=b"n" * 16)


async def test_prepares_outside_our_address_or_undecryptable_are_refused() -> None:
    server = make_server()
    destination, secret = server.generate_credentials()
    elsewhere = await call(server, raw_prepare("test.carol.x", secret))
    assert isinstance(elsewhere, Reject) and elsewhere.code == "F02"
    forged = await call(server, raw_prepare(ADDRESS + ".bm90YXRva2Vu", secret))
    assert isinstance(forged, Reject) and (forged.code, forged.message) == ("F06", "")
    wrong_key = await call(server, raw_prepare(destination, b"\x00" * 32))
    assert isinstance(wrong_key, Reject) and (wrong_key.code, wrong_key.message) == ("F06", "")
    assert server.live_connections == 0
    ok = await call(server, raw_prepare(destination + ".extra.segments", secret))
    assert isinstance(ok, Fulfill)
    assert server.live_connections == 1


async def test_tag_and_receipts_come_back_from_the_token() -> None:
    server = make_server()
    incoming = server.connections()
    destination, secret = server.generate_credentials(
        tag="order-5", receipt_nonce=b"\x01" * 16, receipt_secret=b"\x02" * 32
    )
    client = Client(destination, secret)
    client.core.add_money(client.core.open_stream(), 10)
    await client.flush(server)
    conn = await incoming.__anext__()
    assert conn.tag == "order-5"
    assert conn.core.receipt_nonce == b"\x01" * 16
    assert client.core.stream(1).receipt is not None


# --------------------------------------------------------------------------------------------
# Queues and hooks


async def test_backlog_full_refuses_new_connections_with_t00() -> None:
    server = make_server(backlog=2)
    incoming = server.connections()
    for _ in range(2):
        assert isinstance(await call(server, raw_prepare(*server.generate_credentials())), Fulfill)
    busy = await call(server, raw_prepare(*server.generate_credentials()))
    assert isinstance(busy, Reject) and busy.code == "T00"
    await incoming.__anext__()
    assert isinstance(await call(server, raw_prepare(*server.generate_credentials())), Fulfill)


async def test_hook_only_server_takes_money_without_a_queue() -> None:
    decisions: list[int] = []

    async def limit(conn: Connection, stream: DataStream, amount: int) -> bool:
        decisions.append(amount)
        return amount <= 100

    server = make_server(backlog=0, should_fulfill=limit)
    with pytest.raises(RuntimeError, match="backlog=0"):
        server.connections()
    for amount in (50, 500):
        destination, secret = server.generate_credentials()
        reply = await call(server, raw_prepare(destination, secret, (StreamMoney(1, 1),), amount))
        assert isinstance(reply, Fulfill if amount <= 100 else Reject)
    assert decisions == [50, 500]


async def test_late_packets_of_a_closed_connection_get_connection_close() -> None:
    server = make_server()
    destination, secret = server.generate_credentials()
    client = Client(destination, secret)
    await client.flush(server)
    client.core.close()
    await client.flush(server)
    assert server.live_connections == 0
    late = await call(server, raw_prepare(destination, secret, (StreamMoney(1, 1),), 5))
    assert isinstance(late, Reject) and late.code == "F99"
    reply = StreamCrypto(secret).decrypt_packet(late.data)
    assert reply.sequence == 1 and reply.prepare_amount == 5
    assert reply.frames == (ConnectionClose(StreamErrorCode.NO_ERROR, "the connection is closed"),)
    assert server.live_connections == 0


async def test_without_a_link_closes_ride_on_replies() -> None:
    server = make_server()  # no link: it can only answer
    incoming = server.connections()
    destination, secret = server.generate_credentials()
    client = Client(destination, secret)
    client.core.write(client.core.open_stream(), b"hi")
    await client.flush(server)
    conn = await incoming.__anext__()
    stream = await conn.streams().__anext__()
    assert await stream.receive_some() == b"hi"
    with trio.fail_after(1):
        await stream.aclose()  # cannot send: returns at once
    state = client.core.stream(1)
    assert not state.remote_closed
    client.core.write(client.core.open_stream(), b"on stream 3")
    (reply,) = await client.flush(server)
    assert isinstance(reply, Fulfill)
    assert (
        StreamClose(1, StreamErrorCode.NO_ERROR, "")
        in client.crypto.decrypt_packet(reply.data).frames
    )
    assert state.remote_closed and state.remote_error is None  # a graceful end, not an error


# --------------------------------------------------------------------------------------------
# Memory


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _open_and_close(server: StreamServer, count: int) -> None:
    for _ in range(count):
        destination, secret = server.generate_credentials()
        client = Client(destination, secret)
        client.core.add_money(client.core.open_stream(), 7)
        await client.flush(server)
        client.core.close()
        await client.flush(server)


async def test_ten_thousand_closed_connections_leave_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with make_server(closed_memory=256, backlog=0) as server:
        tracemalloc.start()
        try:
            # Warm up: caches, the closed-token memory (full at 256), interned strings.
            await _open_and_close(server, 500)
            await trio.sleep(61)  # the idle heap forgets the closed connections
            before = _traced()
            await _open_and_close(server, 10_000)
            assert server.live_connections == 0
            await trio.sleep(61)
            after = _traced()
        finally:
            tracemalloc.stop()
    assert server.connections_opened == 10_500
    # 10,000 connections held even 1 kB each would be 10 MB; allow 256 kB of noise.
    assert after - before < 256 * 1024, f"memory grew by {after - before} bytes"


async def test_ten_thousand_idle_connections_are_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Memory blocks held by the interpreter (cheaper to watch than tracemalloc).
    async with make_server(idle_timeout=30.0, backlog=0, closed_memory=0) as server:
        gc.collect()
        before = sys.getallocatedblocks()
        for _ in range(10_000):
            destination, secret = server.generate_credentials()
            client = Client(destination, secret)
            client.core.add_money(client.core.open_stream(), 3)
            await client.flush(server)
        del client
        gc.collect()
        during = sys.getallocatedblocks()
        assert server.live_connections == 10_000
        await trio.sleep(31)
        assert server.live_connections == 0
        gc.collect()
        after = sys.getallocatedblocks()
    assert during - before > 10_000 * 10  # they really were in memory...
    assert after - before < 2_000, f"{after - before} more memory blocks"  # ...and left


async def test_concurrent_prepares_each_ask_the_hook() -> None:
    seen: list[int] = []

    async def slow(conn: Connection, stream: DataStream, amount: int) -> bool:
        seen.append(amount)
        await trio.sleep(0)
        return True

    server = make_server(should_fulfill=slow, backlog=0)
    destination, secret = server.generate_credentials()
    prepare = raw_prepare(destination, secret, (StreamMoney(1, 1),), 40)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(mount(server), prepare)
    assert seen == [40, 40, 40]
    (conn,) = server._connections.values()
    assert conn.total_received == 120
    assert conn.core.stream(1).incoming_held == 0


# --------------------------------------------------------------------------------------------
# handle_nowait: the way BTP connections call the server


async def test_handle_nowait_answers_at_once_as_the_awaited_handler_does() -> None:
    server = make_server()
    incoming = server.connections()
    destination, secret = server.generate_credentials()
    replies: list[Fulfill | Reject] = []
    assert server.handle_nowait(raw_prepare("test.carol.x", secret), replies.append)
    assert server.handle_nowait(raw_prepare(destination, b"\x00" * 32), replies.append)
    assert server.live_connections == 0  # nothing decrypted: forgotten again
    assert server.handle_nowait(raw_prepare(destination, secret), replies.append)
    elsewhere, wrong_key, first = replies
    assert isinstance(elsewhere, Reject) and elsewhere.code == "F02"
    assert isinstance(wrong_key, Reject) and wrong_key.code == "F06"
    assert isinstance(first, Fulfill)
    conn = await incoming.__anext__()  # announced, as by the awaited handler
    money = raw_prepare(destination, secret, (StreamMoney(1, 1),), 70)
    assert server.handle_nowait(money, replies.append)
    assert isinstance(replies[-1], Fulfill) and len(replies) == 4
    assert conn.total_received == 70 and conn.core.stream(1).incoming_held == 0
    reply = StreamCrypto(secret).decrypt_packet(replies[-1].data)
    assert reply.ilp_packet_type == PacketType.FULFILL and reply.prepare_amount == 70


async def test_handle_nowait_declines_with_a_should_fulfill_hook() -> None:
    async def always(conn: Connection, stream: DataStream, amount: int) -> bool:
        return True

    server = make_server(should_fulfill=always)
    destination, secret = server.generate_credentials()
    replies: list[Fulfill | Reject] = []
    for prepare in (
        raw_prepare(destination, secret, (StreamMoney(1, 1),), 5),
        raw_prepare("test.carol.x", secret),
    ):
        assert not server.handle_nowait(prepare, replies.append)
    assert replies == [] and server.live_connections == 0 and server.connections_opened == 0
    assert isinstance(
        await server(raw_prepare(destination, secret, (StreamMoney(1, 1),), 5)), Fulfill
    )


class _CountingServer(StreamServer):
    """A StreamServer that counts the Prepares it answered each way."""

    taken = 0
    awaited = 0

    def handle_nowait(self, prepare: Prepare, respond: ReplyCallback) -> bool:
        taken = super().handle_nowait(prepare, respond)
        self.taken += taken
        return taken

    async def __call__(self, prepare: Prepare) -> Reply:
        self.awaited += 1
        return await super().__call__(prepare)


@pytest.mark.parametrize("hook", [False, True])
async def test_a_btp_client_hands_prepares_to_handle_nowait(hook: bool) -> None:
    async def always(conn: Connection, stream: DataStream, amount: int) -> bool:
        return True

    async def nothing(prepare: Prepare) -> Reply:
        return Reject(ErrorCode("F02"), "test.server", "")

    receiver = _CountingServer(
        SECRET, "test.server.bob", "XRP", 9, backlog=0, should_fulfill=always if hook else None
    )
    btp = BtpServer(nothing)
    with trio.fail_after(LIMIT):
        async with btp.running(), receiver, open_btp_client(btp.url(), handler=receiver):
            sender = await btp.accepted.receive()
            destination, secret = receiver.generate_credentials()
            result = await pay(sender, destination, secret, source_amount=1000)
    assert result.status is PaymentStatus.COMPLETE and result.amount_delivered == 1000
    packets = result.packets_fulfilled
    assert packets >= 1
    if hook:
        assert receiver.taken == 0 and receiver.awaited >= packets
    else:
        assert receiver.taken >= packets and receiver.awaited == 0
