"""Our BTP client and server over real loopback sockets (port 0)."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import wsproto
import wsproto.events
from trio_websocket import ConnectionClosed, WebSocketConnection

from ilp.btp import (
    BtpRequest,
    BtpServerLink,
    ContentType,
    Error,
    Message,
    ProtocolData,
    connect_btp,
    decode_btp,
    open_btp_client,
    serve_btp,
)
from ilp.btp._connection import client_websocket
from ilp.errors import AuthError, ConnectError
from ilp.link import IlpLink, PrepareHandler, Reply
from ilp.packet import ErrorCode, Fulfill, Prepare, Reject

FULFILLMENT = b"\x42" * 32
CONDITION = hashlib.sha256(FULFILLMENT).digest()
TOKEN = "s3cret-token"
LIMIT = 15  # seconds: the bound of every test


def prepare(
    seconds: float = 10.0, data: bytes = b"", destination: str = "test.server.x"
) -> Prepare:
    return Prepare(10, datetime.now(UTC) + timedelta(seconds=seconds), CONDITION, destination, data)


async def echo(p: Prepare) -> Reply:
    return Fulfill(FULFILLMENT, p.data)


class Server:
    """Our BTP server with a token check, recording each accepted client's link."""

    def __init__(self, handler: PrepareHandler | None = echo, **options: Any) -> None:
        self.handler = handler
        self.token = TOKEN
        self.options = options
        self.requests: list[BtpRequest] = []
        self._send, self.accepted = trio.open_memory_channel[BtpServerLink](16)
        self.port = 0

    async def on_client(self, request: BtpRequest) -> None:
        self.requests.append(request)
        if request.token != self.token:
            await request.refuse("invalid auth_token")
            return
        link = await request.accept(self.handler, address="test.server")
        await self._send.send(link)
        await link.wait_closed()

    @asynccontextmanager
    async def running(self, port: int = 0) -> AsyncIterator[int]:
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(
                lambda task_status: serve_btp(
                    self.on_client, port=port, task_status=task_status, **self.options
                )
            )
            yield self.port
            nursery.cancel_scope.cancel()

    def url(self, token: str = TOKEN, user: str = "alice") -> str:
        return f"btp+ws://{user}:{token}@127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_prepare_fulfilled_both_ways() -> None:
    async def client_handler(p: Prepare) -> Reply:
        return Fulfill(FULFILLMENT, b"from client " + p.data)

    server = Server()
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url(), handler=client_handler) as link:
            assert isinstance(link, IlpLink)
            assert link.connected
            assert link.url == f"ws://127.0.0.1:{server.port}"
            assert await link.send(prepare(data=b"ping")) == Fulfill(FULFILLMENT, b"ping")
            server_link = await server.accepted.receive()
            assert server_link.username == "alice"
            assert server.requests[0].path == "/"
            assert TOKEN not in repr(server.requests[0])
            reply = await server_link.send(prepare(data=b"x", destination="test.alice"))
            assert reply == Fulfill(FULFILLMENT, b"from client x")


async def test_many_concurrent_prepares_without_head_of_line_blocking() -> None:
    count = 100
    arrived = 0
    all_arrived = trio.Event()

    async def handler(p: Prepare) -> Reply:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            all_arrived.set()
        # Nobody is answered before every Prepare is in: they must all be in flight at once.
        await all_arrived.wait()
        return Fulfill(FULFILLMENT, p.data)

    server = Server(handler, max_concurrent_prepares=count)
    replies: dict[int, Reply] = {}

    async def send_one(link: IlpLink, i: int) -> None:
        replies[i] = await link.send(prepare(data=str(i).encode()))

    with trio.fail_after(LIMIT):
        async with (
            server.running(),
            open_btp_client(server.url()) as link,
            trio.open_nursery() as nursery,
        ):
            for i in range(count):
                nursery.start_soon(send_one, link, i)
    assert replies == {i: Fulfill(FULFILLMENT, str(i).encode()) for i in range(count)}


async def test_handler_exception_answers_t00_and_the_connection_lives_on() -> None:
    calls = 0

    async def handler(p: Prepare) -> Reply:
        nonlocal calls
        calls += 1
        if p.data == b"boom":
            raise RuntimeError("handler bug")
        return Fulfill(FULFILLMENT)

    server = Server(handler)
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url()) as link:
            reply = await link.send(prepare(data=b"boom"))
            assert isinstance(reply, Reject)
            assert reply.code == "T00"
            assert reply.triggered_by == "test.server"
            assert "handler bug" not in reply.message
            assert await link.send(prepare()) == Fulfill(FULFILLMENT)
            assert link.connections == 1
    assert calls == 2


async def test_unanswered_prepare_expires_r00() -> None:
    started = trio.Event()

    async def handler(p: Prepare) -> Reply:
        if p.data == b"hang":
            started.set()
            await trio.sleep_forever()
        return Fulfill(FULFILLMENT, p.data)

    server = Server(handler)
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url(), address="test.alice") as link:
            reply = await link.send(prepare(seconds=0.5, data=b"hang"))
            assert started.is_set()
            assert isinstance(reply, Reject)
            assert reply.code == "R00"
            # Our deadline or the server's, whichever fired first: both are at the expiry.
            assert reply.triggered_by in ("test.alice", "test.server")
            # The connection is still fine afterwards.
            assert await link.send(prepare(data=b"next")) == Fulfill(FULFILLMENT, b"next")
            assert link.connections == 1


async def test_client_without_handler_rejects_f02() -> None:
    server = Server()
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url()):
            server_link = await server.accepted.receive()
            reply = await server_link.send(prepare(destination="test.alice"))
            assert isinstance(reply, Reject)
            assert reply.code == "F02"


async def test_too_many_prepares_in_flight_are_rejected_t03() -> None:
    release = trio.Event()
    arrived = 0
    two_in = trio.Event()

    async def handler(p: Prepare) -> Reply:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            two_in.set()
        await release.wait()
        return Fulfill(FULFILLMENT)

    server = Server(handler, max_concurrent_prepares=2)
    replies: list[Reply] = []

    async def send_one(link: IlpLink) -> None:
        replies.append(await link.send(prepare()))

    with trio.fail_after(LIMIT):
        async with (
            server.running(),
            open_btp_client(server.url()) as link,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(send_one, link)
            nursery.start_soon(send_one, link)
            await two_in.wait()
            third = await link.send(prepare())
            assert isinstance(third, Reject)
            assert third.code == "T03"
            release.set()
    assert replies == [Fulfill(FULFILLMENT)] * 2


async def test_refused_token_raises_auth_error_without_the_token() -> None:
    server = Server()
    with trio.fail_after(LIMIT):
        async with server.running():
            with pytest.raises(AuthError) as info:
                async with open_btp_client(server.url(token="wrong-t0ken")):
                    pytest.fail("must not connect")  # pragma: no cover
    message = str(info.value)
    assert "wrong-t0ken" not in message
    assert f"ws://127.0.0.1:{server.port}" in message
    assert "F00 NotAcceptedError: invalid auth_token" in message
    assert len(server.requests) == 1  # no reconnect loop


async def test_refused_reconnection_stops_the_client_with_auth_error() -> None:
    server = Server()
    with trio.fail_after(LIMIT):
        async with server.running():
            with pytest.raises(AuthError) as info:
                async with open_btp_client(server.url(), reconnect_backoff=(0.05, 0.1)):
                    server_link = await server.accepted.receive()
                    server.token = "rotated"
                    await server_link.aclose()
                    await trio.sleep_forever()  # until the client's failure cancels the block
    assert "refused our credentials" in str(info.value)
    assert TOKEN not in str(info.value)
    assert isinstance(info.value.__cause__, BaseExceptionGroup)
    assert len(server.requests) == 2  # one refusal, no reconnect loop


async def test_unreachable_connector_raises_connect_error() -> None:
    port = free_port()
    with trio.fail_after(LIMIT), pytest.raises(ConnectError) as info:
        async with open_btp_client(f"btp+ws://a:tok3n@127.0.0.1:{port}"):
            pytest.fail("must not connect")  # pragma: no cover
    assert (
        str(info.value)
        == f"cannot reach the connector at ws://127.0.0.1:{port} (connection refused)"
    )
    assert info.value.__cause__ is not None


async def test_block_exceptions_pass_unchanged() -> None:
    server = Server()
    with trio.fail_after(LIMIT):
        async with server.running():
            with pytest.raises(KeyError, match="mine"):
                async with open_btp_client(server.url()):
                    raise KeyError("mine")


async def test_leaving_early_leaves_no_task_behind() -> None:
    started = trio.Event()

    async def handler(p: Prepare) -> Reply:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    server = Server(handler)
    me = trio.lowlevel.current_task()
    with trio.fail_after(LIMIT):
        async with server.running(), trio.open_nursery() as outer:
            before = list(me.child_nurseries)
            replies: list[Reply] = []

            async with open_btp_client(server.url()) as link:
                inner = [n for n in me.child_nurseries if n not in before]
                assert len(inner) == 1
                assert inner[0].child_tasks  # the client's tasks live in its own nursery

                async def pending() -> None:
                    replies.append(await link.send(prepare(seconds=60)))

                outer.start_soon(pending)
                await started.wait()
            # The client's nursery is closed: every task it owned has finished.
            assert list(me.child_nurseries) == before
            assert inner[0].child_tasks == frozenset()
        assert len(replies) == 1
        assert isinstance(replies[0], Reject)
        assert replies[0].code == "T01"
        assert "closed" in replies[0].message


async def test_connect_btp_in_the_callers_nursery() -> None:
    server = Server()
    with trio.fail_after(LIMIT):
        async with server.running(), trio.open_nursery() as nursery:
            client = await connect_btp(nursery, server.url())
            assert await client.send(prepare()) == Fulfill(FULFILLMENT)
            await client.aclose()
            closed = await client.send(prepare())
            assert isinstance(closed, Reject)
            assert closed.code == "T01"
        # The nursery exited by itself: aclose stopped every task of the client.


class Hang:
    """A Prepare held by the server until the connection drops: its T01 shows the client saw it."""

    def __init__(self) -> None:
        self.blocked = trio.Event()
        self.resolved = trio.Event()
        self.reply: Reply | None = None

    async def handler(self, p: Prepare) -> Reply:
        if p.data == b"hang":
            self.blocked.set()
            await trio.sleep_forever()
        return Fulfill(FULFILLMENT, p.data)

    async def send(self, link: IlpLink) -> None:
        self.reply = await link.send(prepare(seconds=60, data=b"hang"))
        self.resolved.set()


async def test_reconnects_after_the_server_restarts() -> None:
    hang = Hang()
    server = Server(hang.handler)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            async with server.running() as port:
                client = await connect_btp(nursery, server.url(), reconnect_backoff=(0.05, 0.2))
                assert await client.send(prepare(data=b"one")) == Fulfill(FULFILLMENT, b"one")
                nursery.start_soon(hang.send, client)
                await hang.blocked.wait()
            # The server is gone: the Prepare in flight resolves to T01 saying so.
            await hang.resolved.wait()
            assert isinstance(hang.reply, Reject)
            assert hang.reply.code == "T01"
            assert "dropped before a reply came" in hang.reply.message
            assert TOKEN not in hang.reply.message
            assert not client.connected
            async with server.running(port):
                # A new send waits for the reconnection.
                assert await client.send(prepare(data=b"two")) == Fulfill(FULFILLMENT, b"two")
                assert client.connected
                assert client.connections == 2
                await client.aclose()


async def test_send_waits_for_reconnection_only_until_expiry() -> None:
    hang = Hang()
    server = Server(hang.handler)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            async with server.running():
                client = await connect_btp(nursery, server.url(), reconnect_backoff=(0.05, 0.1))
                nursery.start_soon(hang.send, client)
                await hang.blocked.wait()
            await hang.resolved.wait()
            reply = await client.send(prepare(seconds=1))
            assert isinstance(reply, Reject)
            assert reply.code == "T01"
            assert "not connected" in reply.message
            # The last problem seen: normally a refused reconnection, on a very slow machine
            # possibly still the lost connection.
            assert "connection refused" in reply.message or "lost the connection" in reply.message
            await client.aclose()


def _websocket(port: int) -> AbstractAsyncContextManager[WebSocketConnection]:
    return client_websocket(
        f"ws://127.0.0.1:{port}/",
        label="test",
        ssl_context=None,
        connect_timeout=5,
        disconnect_timeout=1,
    )


async def _raw_auth(port: int, frame: bytes) -> list[bytes | str]:
    """Open a WebSocket by hand, send ``frame``, collect what comes back until the close."""
    got: list[bytes | str] = []
    async with _websocket(port) as ws:
        await ws.send_message(frame)
        try:
            while True:
                got.append(await ws.get_message())
        except ConnectionClosed:
            pass
    return got


async def test_server_answers_a_bad_first_frame_with_f00_and_closes() -> None:
    server = Server()
    with trio.fail_after(LIMIT):
        async with server.running() as port:
            got = await _raw_auth(port, Message(5, (ProtocolData("ilp", 0, b""),)).encode())
    assert len(got) == 1
    assert isinstance(got[0], bytes)
    error = decode_btp(got[0])
    assert isinstance(error, Error)
    assert (error.request_id, error.code, error.name) == (5, "F00", "NotAcceptedError")
    assert server.requests == []  # the session callback never saw it


async def test_server_refusal_is_f00_then_close() -> None:
    server = Server()
    auth = Message(
        9,
        (
            ProtocolData("auth", ContentType.OCTET_STREAM, b""),
            ProtocolData.text("auth_token", "nope"),
        ),
    ).encode()
    with trio.fail_after(LIMIT):
        async with server.running() as port:
            got = await _raw_auth(port, auth)
    error = decode_btp(got[0]) if isinstance(got[0], bytes) else None
    assert isinstance(error, Error)
    assert (error.request_id, error.code, error.text) == (9, "F00", "invalid auth_token")
    assert len(got) == 1


async def test_server_drops_a_client_that_never_authenticates() -> None:
    server = Server(auth_timeout=0.3)
    with trio.fail_after(LIMIT):
        async with server.running() as port, _websocket(port) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
    assert server.requests == []


async def test_keepalive_detects_a_silent_peer() -> None:
    """A client that authenticates and then stops reading never answers pings: dropped."""
    server = Server(ping_interval=0.1, ping_timeout=0.3)
    with trio.fail_after(LIMIT):
        async with server.running() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await stream.send_all(ws.send(wsproto.events.Request(host="127.0.0.1", target="/")))
            while not any(isinstance(e, wsproto.events.AcceptConnection) for e in ws.events()):
                ws.receive_data(await stream.receive_some())
            auth = Message(
                1, (ProtocolData("auth", 0, b""), ProtocolData.text("auth_token", TOKEN))
            ).encode()
            await stream.send_all(ws.send(wsproto.events.BytesMessage(data=auth)))
            link = await server.accepted.receive()
            # From now on, this client reads nothing and so answers no ping.
            await link.wait_closed()
            reply = await link.send(prepare())
            assert isinstance(reply, Reject)
            assert reply.code == "T01"
            assert "ping" in reply.message
            await stream.aclose()


async def test_reject_code_type() -> None:
    async def handler(p: Prepare) -> Reply:
        return Reject(ErrorCode("F99"), "test.server", "app", b"data")

    server = Server(handler)
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url()) as link:
            reply = await link.send(prepare())
    assert reply == Reject(ErrorCode("F99"), "test.server", "app", b"data")
