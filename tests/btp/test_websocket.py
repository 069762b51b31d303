"""Our WebSocket layer (RFC 6455) against wsproto as an independent peer, and raw frames.

Memory streams exercise the path every non-TCP stream takes (TLS included); loopback sockets the
direct, non-blocking writes and reads of plain TCP.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import wsproto
import wsproto.events as ev
from hypothesis import given
from hypothesis import strategies as st

from ilp.btp._websocket import (
    OUTBOX_LIMIT,
    CloseReason,
    HandshakeError,
    WebSocket,
    WebSocketClosedError,
    _xor,
    accept_token,
    accept_websocket,
    connect_websocket,
)

LIMIT = 10  # seconds: the bound of every test


class Peer:
    """A wsproto endpoint on a trio stream: the reference our frames are checked against."""

    def __init__(self, stream: trio.abc.Stream, kind: wsproto.ConnectionType) -> None:
        self.stream = stream
        self.conn = wsproto.WSConnection(kind)
        self.events: list[ev.Event] = []

    async def send(self, event: ev.Event) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def _next(self) -> ev.Event:
        while not self.events:
            self.events.extend(self.conn.events())
            if self.events:
                break
            data = await self.stream.receive_some(65536)
            self.conn.receive_data(bytes(data) or None)
        return self.events.pop(0)

    async def next_event(self) -> ev.Event:
        """The next event; the parts of a message (as wsproto reads them) joined in one."""
        event = await self._next()
        if isinstance(event, ev.BytesMessage):
            data = event.data
            while not event.message_finished:
                event = await self._next()
                assert isinstance(event, ev.BytesMessage)
                data += event.data
            return ev.BytesMessage(data)
        return event

    async def eof(self) -> bool:
        """True if the stream ends (after whatever is still in flight)."""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            if not data:
                return True


@asynccontextmanager
async def our_server(
    *, max_message_size: int | None = None, socket: bool = False
) -> AsyncIterator[tuple[WebSocket, Peer]]:
    """Our server WebSocket (running) and a wsproto client that went through the handshake."""
    async with trio.open_nursery() as nursery:
        if socket:
            listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
            port = listener.socket.getsockname()[1]
            client_stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
            server_stream: trio.abc.Stream = await listener.accept()
            await listener.aclose()
        else:
            client_stream, server_stream = trio.testing.memory_stream_pair()
        peer = Peer(client_stream, wsproto.ConnectionType.CLIENT)
        await peer.send(ev.Request(host="example", target="/path?q=1"))
        ws = await accept_websocket(server_stream)
        assert ws is not None
        if max_message_size is not None:
            ws._max_size = max_message_size
        assert isinstance(await peer.next_event(), ev.AcceptConnection)
        ws.start(nursery)
        try:
            yield ws, peer
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await ws.close_stream()
                await client_stream.aclose()


@asynccontextmanager
async def our_client() -> AsyncIterator[tuple[WebSocket, Peer]]:
    """Our client WebSocket (running) and a wsproto server that accepted it."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = Peer(server_stream, wsproto.ConnectionType.SERVER)
    async with trio.open_nursery() as nursery:

        async def accept() -> None:
            request = await peer.next_event()
            assert isinstance(request, ev.Request)
            assert (request.host, request.target) == ("example:81", "/btp")
            await peer.send(ev.AcceptConnection())

        nursery.start_soon(accept)
        ws = await connect_websocket(client_stream, "example:81", "/btp")
        ws.start(nursery)
        yield ws, peer
        nursery.cancel_scope.cancel()


def frame(
    op: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bytes | None = None
) -> bytes:
    """One raw frame; ``mask`` (4 bytes) masks it as a client must."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv << 4 | op
    flag = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((b0, flag | n))
    elif n < 65536:
        head = struct.pack(">BBH", b0, flag | 126, n)
    else:
        head = struct.pack(">BBQ", b0, flag | 127, n)
    if mask is None:
        return head + payload
    return head + mask + _xor(payload, mask)


MASK = b"\x01\x02\x03\x04"


# -- handshake ----------------------------------------------------------------------------------


async def test_messages_both_ways_with_a_wsproto_client() -> None:
    with trio.fail_after(LIMIT):
        async with our_server() as (ws, peer):
            assert ws.path == "/path?q=1"
            await peer.send(ev.BytesMessage(b"\x00binary"))
            await peer.send(ev.TextMessage("text é"))
            assert await ws.receive() == b"\x00binary"
            assert await ws.receive() == "text é"
            await ws.send(b"from the server")
            ws.send_nowait(b"x" * 70000)  # a 64-bit length
            first = await peer.next_event()
            assert isinstance(first, ev.BytesMessage) and first.data == b"from the server"
            second = await peer.next_event()
            assert isinstance(second, ev.BytesMessage) and second.data == b"x" * 70000


async def test_messages_both_ways_with_a_wsproto_server() -> None:
    # wsproto refuses unmasked frames from a client: it reading ours shows they are masked.
    with trio.fail_after(LIMIT):
        async with our_client() as (ws, peer):
            assert ws.path == "/btp"
            await ws.send(b"hello")
            await ws.send(b"y" * 300)  # a 16-bit length
            got = await peer.next_event()
            assert isinstance(got, ev.BytesMessage) and got.data == b"hello"
            got = await peer.next_event()
            assert isinstance(got, ev.BytesMessage) and got.data == b"y" * 300
            await peer.send(ev.BytesMessage(b"back"))
            assert await ws.receive() == b"back"


async def test_client_sends_the_upgrade_request_and_checks_the_answer() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            result: list[WebSocket] = []

            async def connect() -> None:
                result.append(
                    await connect_websocket(
                        client_stream, "h:1", "/", random_bytes=lambda n: b"k" * n
                    )
                )

            nursery.start_soon(connect)
            request = await server_stream.receive_some(65536)
            key = b"a2tra2tra2tra2tra2traw=="  # base64 of 16 times "k"
            assert request.startswith(b"GET / HTTP/1.1\r\n")
            assert b"\r\nsec-websocket-key: " + key + b"\r\n" in request.lower()
            assert b"\r\nsec-websocket-version: 13\r\n" in request.lower()
            assert b"\r\nupgrade: websocket\r\n" in request.lower()
            # The answer, and a first frame in the same segment: it must not get lost.
            await server_stream.send_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept_token(key)
                + b"\r\n\r\n"
                + frame(2, b"early")
            )
        ws = result[0]
        async with trio.open_nursery() as nursery:
            ws.start(nursery)
            assert await ws.receive() == b"early"
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("answer", "match", "status"),
    [
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "refused with HTTP 403", 403),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: bm9wZQ==\r\n\r\n",
            "wrong Sec-WebSocket-Accept",
            None,
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "Connection: Upgrade",
            None,
        ),
        (b"garbage\r\n\r\n", "invalid HTTP response", None),
    ],
)
async def test_client_refuses_a_bad_answer(answer: bytes, match: str, status: int | None) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await server_stream.send_all(answer)
    with trio.fail_after(LIMIT), pytest.raises(HandshakeError, match=match) as info:
        await connect_websocket(client_stream, "h", "/")
    assert info.value.status_code == status
    assert not info.value.closed


async def test_client_sees_the_connection_close_during_the_handshake() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await server_stream.aclose()
    with trio.fail_after(LIMIT), pytest.raises(HandshakeError) as info:
        await connect_websocket(client_stream, "h", "/")
    assert info.value.closed


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", b"400"),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: a2tra2tra2tra2tra2tra2s=\r\nSec-WebSocket-Version: 8\r\n\r\n",
            b"426",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: a2tra2tra2tra2tra2tra2s=\r\nSec-WebSocket-Version: 13\r\n"
            b"Content-Length: 0\r\n\r\n",
            b"400",
        ),
        (b"\x16\x03\x01 not http at all\r\n\r\n", b"400"),
    ],
)
async def test_server_refuses_a_request_that_is_not_an_upgrade(
    request_bytes: bytes, status: bytes
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(LIMIT):
        await client_stream.send_all(request_bytes)
        assert await accept_websocket(server_stream) is None
        answer = await client_stream.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 " + status)


async def test_server_gives_up_when_the_client_leaves_during_the_handshake() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(b"GET / HTTP/1.1\r\nHost:")
    await client_stream.aclose()
    with trio.fail_after(LIMIT):
        assert await accept_websocket(server_stream) is None


# -- frames ---------------------------------------------------------------------------------------


async def test_fragmented_messages_are_joined() -> None:
    with trio.fail_after(LIMIT):
        async with our_server() as (ws, peer):
            await peer.send(ev.BytesMessage(b"one ", message_finished=False))
            await peer.send(ev.Ping(b"in between"))  # control frames may come between fragments
            await peer.send(ev.BytesMessage(b"two ", message_finished=False))
            await peer.send(ev.BytesMessage(b"three", message_finished=True))
            await peer.send(ev.TextMessage("é", message_finished=False))
            await peer.send(ev.TextMessage("è", message_finished=True))
            assert await ws.receive() == b"one two three"
            assert await ws.receive() == "éè"
            pong = await peer.next_event()
            assert isinstance(pong, ev.Pong) and pong.payload == b"in between"


async def test_pings_are_answered_and_ours_get_their_pong() -> None:
    with trio.fail_after(LIMIT):
        async with our_client() as (ws, peer):
            await peer.send(ev.Ping(b"are you there"))
            pong = await peer.next_event()
            assert isinstance(pong, ev.Pong) and pong.payload == b"are you there"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.ping, b"and you")
                ping = await peer.next_event()
                assert isinstance(ping, ev.Ping) and ping.payload == b"and you"
                await peer.send(ping.response())
            # A pong answers its ping and every earlier one.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.ping, b"first")
                assert isinstance(await peer.next_event(), ev.Ping)
                nursery.start_soon(ws.ping, b"second")
                assert isinstance(await peer.next_event(), ev.Ping)
                await peer.send(ev.Pong(b"second"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.ping, b"same")
                assert isinstance(await peer.next_event(), ev.Ping)
                with pytest.raises(ValueError, match="already waiting"):
                    await ws.ping(b"same")
                await peer.send(ev.Pong(b"same"))


async def test_an_unanswered_ping_ends_with_the_connection() -> None:
    with trio.fail_after(LIMIT):
        async with our_client() as (ws, peer), trio.open_nursery() as nursery:

            async def ping() -> None:
                with pytest.raises(WebSocketClosedError):
                    await ws.ping()

            nursery.start_soon(ping)
            assert isinstance(await peer.next_event(), ev.Ping)
            await peer.stream.aclose()


async def test_text_and_binary_messages_go_to_the_handler_in_order() -> None:
    got: list[bytes | str] = []
    with trio.fail_after(LIMIT):
        async with our_server() as (ws, peer):
            await peer.send(ev.BytesMessage(b"before"))
            await trio.testing.wait_all_tasks_blocked()
            ws.set_handler(got.append)  # what came before the handler is delivered first
            await peer.send(ev.TextMessage("text"))
            await peer.send(ev.BytesMessage(b"after"))
            await peer.send(ev.CloseConnection(1000))
            await ws.wait_closed()
    assert got == [b"before", "text", b"after"]


async def test_peer_close_is_echoed_and_the_server_closes_tcp() -> None:
    with trio.fail_after(LIMIT):
        async with our_server() as (ws, peer):
            await peer.send(ev.BytesMessage(b"last"))
            await peer.send(ev.CloseConnection(4001, "bye now"))
            assert await ws.receive() == b"last"  # messages before the close still come
            with pytest.raises(WebSocketClosedError) as info:
                await ws.receive()
            assert info.value.reason == CloseReason(4001, "bye now")
            assert info.value.reason.name == "PRIVATE_RESERVED"
            echo = await peer.next_event()
            assert isinstance(echo, ev.CloseConnection) and echo.code == 4001
            assert await peer.eof()  # without anyone calling aclose
            with pytest.raises(WebSocketClosedError):
                await ws.send(b"too late")


async def test_our_close_waits_for_the_peers() -> None:
    with trio.fail_after(LIMIT):
        async with our_client() as (ws, peer), trio.open_nursery() as nursery:
            nursery.start_soon(ws.aclose, 1008, "refused")
            close = await peer.next_event()
            assert isinstance(close, ev.CloseConnection)
            assert (close.code, close.reason) == (1008, "refused")
            assert ws.close_reason == CloseReason(1008, "refused")
            await peer.send(close.response())
            # The client waits for the server to close TCP, then closes its side.
            await peer.stream.aclose()
        with pytest.raises(WebSocketClosedError):
            await ws.receive()


async def test_close_without_a_code() -> None:
    with trio.fail_after(LIMIT):
        async with our_client() as (ws, peer):
            await peer.stream.send_all(frame(8))
            with pytest.raises(WebSocketClosedError) as info:
                await ws.receive()
            assert info.value.reason == CloseReason(1005)
            assert info.value.reason.name == "NO_STATUS_RCVD"
            echo = await peer.next_event()
            assert isinstance(echo, ev.CloseConnection)


async def test_eof_is_an_abnormal_closure() -> None:
    with trio.fail_after(LIMIT):
        async with our_client() as (ws, peer):
            await peer.stream.aclose()
            with pytest.raises(WebSocketClosedError) as info:
                await ws.receive()
            assert info.value.reason == CloseReason(1006)
            assert info.value.reason.name == "ABNORMAL_CLOSURE"


@pytest.mark.parametrize(
    ("data", "code", "match"),
    [
        (frame(2, b"unmasked"), 1002, "unmasked"),
        (frame(2, b"x", rsv=4, mask=MASK), 1002, "reserved bits"),
        (frame(3, b"x", mask=MASK), 1002, "unknown opcode 3"),
        (frame(11, b"x", mask=MASK), 1002, "unknown opcode 11"),
        (frame(9, b"x", fin=False, mask=MASK), 1002, "fragmented control"),
        (frame(9, b"x" * 126, mask=MASK), 1002, "over 125"),
        (frame(0, b"x", mask=MASK), 1002, "continuation"),
        (frame(2, b"a", fin=False, mask=MASK) + frame(2, b"b", mask=MASK), 1002, "new message"),
        (frame(1, b"\xff\xfe", mask=MASK), 1007, "UTF-8"),
        (frame(8, b"\x03", mask=MASK), 1002, "1-byte"),
        (frame(8, b"\x03\xed", mask=MASK), 1002, "invalid code 1005"),
        (frame(8, b"\x03\xec", mask=MASK), 1002, "invalid code 1004"),
        (frame(8, b"\x00\x10", mask=MASK), 1002, "invalid code 16"),
        (frame(8, b"\x03\xe8\xff", mask=MASK), 1007, "UTF-8"),
        (bytes((0x82, 0xFE, 0, 5)) + MASK + b"12345", 1002, "minimally"),
        (frame(2, b"z" * 2000, mask=MASK), 1009, "maximum message size: 1000 bytes"),
        (
            frame(2, b"z" * 600, fin=False, mask=MASK) + frame(0, b"z" * 600, mask=MASK),
            1009,
            "maximum message size",
        ),
        (bytes((0x82, 0xFF)) + (2**63).to_bytes(8, "big") + MASK, 1002, "64-bit"),
        (bytes((0x82, 0xFF)) + (2**40).to_bytes(8, "big") + MASK, 1009, "maximum"),
    ],
)
async def test_server_fails_the_connection_on_a_bad_frame(
    data: bytes, code: int, match: str
) -> None:
    with trio.fail_after(LIMIT):
        async with our_server(max_message_size=1000) as (ws, peer):
            await peer.stream.send_all(data)
            with pytest.raises(WebSocketClosedError) as info:
                await ws.receive()
            assert info.value.reason.code == code
            assert match in (info.value.reason.reason or "")
            # The peer is told why, in a close frame; then the connection ends.
            raw = b""
            while len(raw) < 4 or len(raw) < 2 + raw[1]:
                more = await peer.stream.receive_some(65536)
                assert more
                raw += more
            assert raw[0] == 0x88 and not raw[1] & 0x80  # a close frame, unmasked
            assert int.from_bytes(raw[2:4], "big") == code


async def test_client_fails_the_connection_on_a_masked_frame() -> None:
    with trio.fail_after(LIMIT):
        async with our_client() as (ws, peer):
            await peer.stream.send_all(frame(2, b"masked", mask=MASK))
            with pytest.raises(WebSocketClosedError) as info:
                await ws.receive()
            assert info.value.reason.code == 1002
            close = await peer.next_event()
            assert isinstance(close, ev.CloseConnection) and close.code == 1002


async def test_messages_after_our_close_are_dropped() -> None:
    with trio.fail_after(LIMIT):
        async with our_server() as (ws, peer), trio.open_nursery() as nursery:
            nursery.start_soon(ws.aclose)
            assert isinstance(await peer.next_event(), ev.CloseConnection)
            # What the peer sent before it saw our close frame.
            await peer.stream.send_all(frame(2, b"late", mask=MASK) + frame(8, b"", mask=MASK))
            assert await peer.eof()
            assert ws._inbox == deque()
        with pytest.raises(WebSocketClosedError):
            await ws.receive()


# -- sockets ----------------------------------------------------------------------------------


async def test_big_messages_over_a_socket_arrive_whole() -> None:
    sizes = [0, 1, 125, 126, 65535, 65536, 300_000, 1_000_000]
    with trio.fail_after(LIMIT):
        async with our_server(socket=True) as (ws, peer):
            for size in sizes:
                await peer.send(ev.BytesMessage(os.urandom(size)))
            for size in sizes:
                message = await ws.receive()
                assert isinstance(message, bytes) and len(message) == size
                await ws.send(message, direct=True)
                echo = await peer.next_event()
                assert isinstance(echo, ev.BytesMessage) and echo.data == message


async def test_a_cancelled_sender_never_leaves_half_a_frame() -> None:
    """A peer that stops reading: frames pile up, senders wait and are cancelled, and once the
    peer reads again every frame that was handed over arrives whole."""
    chunk = b"c" * 50_000
    sent: list[int] = []
    with trio.fail_after(LIMIT):
        async with our_server(socket=True) as (ws, peer):
            cancelled = 0
            i = 0
            while cancelled < 3:
                with trio.move_on_after(0.2) as scope:
                    await ws.send(bytes([i % 256]) + chunk, direct=True)
                if scope.cancelled_caught:
                    cancelled += 1
                else:
                    sent.append(i)
                i += 1
            assert ws._pending_size > OUTBOX_LIMIT  # the writer is stuck behind the peer
            got = 0
            while got < len(sent):
                message = await peer.next_event()
                assert isinstance(message, ev.BytesMessage)
                assert message.data == bytes([sent[got] % 256]) + chunk
                got += 1


# -- helpers --------------------------------------------------------------------------------------


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_masking_is_its_own_inverse(data: bytes, key: bytes) -> None:
    masked = _xor(data, key)
    assert len(masked) == len(data)
    assert _xor(masked, key) == data
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(data))


def test_accept_token_of_rfc_6455() -> None:
    assert accept_token(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (1000, "NORMAL_CLOSURE"),
        (1009, "MESSAGE_TOO_BIG"),
        (1004, "RFC_RESERVED"),
        (3000, "IANA_RESERVED"),
        (4999, "PRIVATE_RESERVED"),
        (999, "INVALID_CODE"),
    ],
)
def test_close_reason_names(code: int, name: str) -> None:
    assert CloseReason(code).name == name
