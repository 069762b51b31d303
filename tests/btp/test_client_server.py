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

from ilp.btp import (
    BtpClient,
    BtpRequest,
    BtpServerLink,
    ContentType,
    Error,
    Message,
    ProtocolData,
    Response,
    connect_btp,
    decode_btp,
    open_btp_client,
    parse_btp_url,
    serve_btp,
)
from ilp.btp._connection import RandomPool, client_websocket
from ilp.btp._websocket import CloseReason, WebSocket, WebSocketClosedError
from ilp.btp.client import redact
from ilp.errors import AuthError, ConnectError
from ilp.link import IlpLink, PrepareHandler, Reply
from ilp.packet import ErrorCode, Fulfill, Prepare, Reject
from tests.tls import self_signed_contexts

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


def _websocket(port: int) -> AbstractAsyncContextManager[WebSocket]:
    return client_websocket(
        f"ws://127.0.0.1:{port}/",
        label="test",
        ssl_context=None,
        connect_timeout=5,
        disconnect_timeout=1,
    )


async def _raw_auth(
    port: int, frame: bytes, close: list[CloseReason] | None = None
) -> list[bytes | str]:
    """Open a WebSocket by hand, send ``frame``, collect what comes back until the close
    (whose reason goes into ``close``)."""
    got: list[bytes | str] = []
    async with _websocket(port) as ws:
        await ws.send(frame)
        try:
            while True:
                got.append(await ws.receive())
        except WebSocketClosedError as exc:
            if close is not None:
                close.append(exc.reason)
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
    close: list[CloseReason] = []
    with trio.fail_after(LIMIT):
        async with server.running() as port:
            got = await _raw_auth(port, auth, close)
    error = decode_btp(got[0]) if isinstance(got[0], bytes) else None
    assert isinstance(error, Error)
    assert (error.request_id, error.code, error.text) == (9, "F00", "invalid auth_token")
    assert len(got) == 1
    assert close == [CloseReason(1008, "BTP authentication refused")]


async def test_server_drops_a_client_that_never_authenticates() -> None:
    server = Server(auth_timeout=0.3)
    with trio.fail_after(LIMIT):
        async with server.running() as port, _websocket(port) as ws:
            with pytest.raises(WebSocketClosedError):
                await ws.receive()
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


async def test_text_messages_and_pings_are_not_btp() -> None:
    """Text messages are skipped (before and after authentication), pings answered; the BTP
    session goes on."""
    server = Server()
    with trio.fail_after(LIMIT):
        async with server.running() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            events: list[wsproto.events.Event] = []

            async def next_event() -> wsproto.events.Event:
                while not events:
                    events.extend(ws.events())
                    if not events:
                        ws.receive_data(await stream.receive_some())
                return events.pop(0)

            async def send(event: wsproto.events.Event) -> None:
                await stream.send_all(ws.send(event))

            await send(wsproto.events.Request(host="127.0.0.1", target="/"))
            assert isinstance(await next_event(), wsproto.events.AcceptConnection)
            await send(wsproto.events.Ping(b"hello?"))  # as ilp-plugin-btp does before auth
            await send(wsproto.events.TextMessage("not BTP"))
            auth = Message(
                1, (ProtocolData("auth", 0, b""), ProtocolData.text("auth_token", TOKEN))
            ).encode()
            await send(wsproto.events.BytesMessage(auth))
            assert await next_event() == wsproto.events.Pong(b"hello?")
            answer = await next_event()
            assert isinstance(answer, wsproto.events.BytesMessage)
            assert decode_btp(answer.data) == Response(1)
            await send(wsproto.events.TextMessage("still not BTP"))
            ilp = ProtocolData("ilp", 0, prepare(data=b"after text").encode())
            await send(wsproto.events.BytesMessage(Message(2, (ilp,)).encode()))
            answer = await next_event()
            assert isinstance(answer, wsproto.events.BytesMessage)
            reply = decode_btp(answer.data)
            assert isinstance(reply, Response) and reply.request_id == 2
            entry = reply.get("ilp")
            assert entry is not None
            assert Fulfill.decode(entry.data) == Fulfill(FULFILLMENT, b"after text")
            await send(wsproto.events.CloseConnection(1000))
            assert isinstance(await next_event(), wsproto.events.CloseConnection)
            await stream.aclose()


async def test_reject_code_type() -> None:
    async def handler(p: Prepare) -> Reply:
        return Reject(ErrorCode("F99"), "test.server", "app", b"data")

    server = Server(handler)
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url()) as link:
            reply = await link.send(prepare())
    assert reply == Reject(ErrorCode("F99"), "test.server", "app", b"data")


# -- expiries, handler workers, TLS -------------------------------------------------------------


@asynccontextmanager
async def skewed_client(url: str, skew: float) -> AsyncIterator[BtpClient]:
    """A client whose clock is ``skew`` seconds ahead of the server's (behind if negative)."""

    def clock() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=skew)

    client = BtpClient(parse_btp_url(url), address="test.alice", clock=clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(client._run)
        try:
            yield client
        finally:
            await client.aclose()


async def test_a_handler_past_the_expiry_is_cancelled_and_answered_r00() -> None:
    cancelled = 0

    async def handler(p: Prepare) -> Reply:
        nonlocal cancelled
        if p.data.startswith(b"hang"):
            try:
                await trio.sleep_forever()
            finally:
                cancelled += 1
        return Fulfill(FULFILLMENT, p.data)

    server = Server(handler)
    replies: dict[bytes, Reply] = {}
    with trio.fail_after(LIMIT):
        # The client's clock is 10 s behind: only the server's expiry can fire.
        async with server.running(), skewed_client(server.url(), -10) as link:

            async def send(data: bytes, seconds: float) -> None:
                replies[data] = await link.send(prepare(seconds=seconds, data=data))

            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(send, b"hang%d" % i, 0.2 + 0.05 * i)
                    nursery.start_soon(send, b"quick%d" % i, 10)
            # The workers whose Prepare expired serve the next ones.
            for i in range(10):
                assert await link.send(prepare(data=b"%d" % i)) == Fulfill(FULFILLMENT, b"%d" % i)
            assert link.connections == 1
    assert cancelled == 5
    for i in range(5):
        assert replies[b"quick%d" % i] == Fulfill(FULFILLMENT, b"quick%d" % i)
        reply = replies[b"hang%d" % i]
        assert isinstance(reply, Reject)
        assert (reply.code, reply.triggered_by) == ("R00", "test.server")
        assert reply.message == "the Prepare expired before it was answered"


async def test_our_expiry_is_r00_and_a_late_reply_is_dropped() -> None:
    release = trio.Event()

    async def handler(p: Prepare) -> Reply:
        if p.data == b"slow":
            await release.wait()
        return Fulfill(FULFILLMENT, p.data)

    server = Server(handler)
    with trio.fail_after(LIMIT):
        # The client's clock is 10 s ahead: its expiry comes long before the server's.
        async with server.running(), skewed_client(server.url(), 10) as link:
            late = prepare(seconds=10.3, data=b"slow")
            reply = await link.send(late)
            assert isinstance(reply, Reject)
            assert (reply.code, reply.triggered_by) == ("R00", "test.alice")
            assert reply.message == (
                f"no reply before the Prepare expired at {late.expires_at.isoformat()}"
            )
            release.set()  # the server's Fulfill now comes, and nobody waits for it
            for i in range(3):
                data = b"next%d" % i
                assert await link.send(prepare(seconds=20, data=data)) == Fulfill(FULFILLMENT, data)
            # Already expired when sent: R00 at once, nothing goes out.
            expired = await link.send(prepare(seconds=5))
            assert isinstance(expired, Reject) and expired.code == "R00"


async def test_replies_resolve_the_right_senders_among_expiring_ones() -> None:
    async def handler(p: Prepare) -> Reply:
        i = int(p.data)
        await trio.sleep(5 if i % 4 == 0 else i % 3 * 0.02)
        return Fulfill(FULFILLMENT, p.data)

    server = Server(handler)
    replies: dict[int, Reply] = {}

    async def send(link: IlpLink, i: int) -> None:
        # Every fourth Prepare expires before its reply can come.
        seconds = 0.1 if i % 4 == 0 else 10
        replies[i] = await link.send(prepare(seconds=seconds, data=b"%d" % i))

    with trio.fail_after(LIMIT):
        async with (
            server.running(),
            open_btp_client(server.url()) as link,
            trio.open_nursery() as nursery,
        ):
            for i in range(60):
                nursery.start_soon(send, link, i)
    for i, reply in replies.items():
        if i % 4 == 0:
            assert isinstance(reply, Reject) and reply.code == "R00", (i, reply)
        else:
            assert reply == Fulfill(FULFILLMENT, b"%d" % i)
    assert len(replies) == 60


async def test_wss_with_an_ssl_context() -> None:
    server_context, client_context = self_signed_contexts()
    server = Server(ssl_context=server_context)
    url = server.url
    with trio.fail_after(LIMIT):
        async with server.running():
            wss = url().replace("btp+ws://", "btp+wss://")
            async with open_btp_client(wss, ssl_context=client_context) as link:
                assert link.url.startswith("wss://")
                big = b"b" * 30000  # several TLS records
                assert await link.send(prepare(data=big)) == Fulfill(FULFILLMENT, big)
                server_link = await server.accepted.receive()
                reply = await server_link.send(prepare(destination="test.alice"))
                assert isinstance(reply, Reject) and reply.code == "F02"
            # Without trusting the certificate, the connection fails.
            with pytest.raises(ConnectError, match="cannot reach the connector"):
                async with open_btp_client(wss):
                    pytest.fail("must not connect")  # pragma: no cover


async def test_a_peer_that_stops_reading_holds_sends_only_until_their_expiry() -> None:
    """A connector that authenticates us and then reads nothing: our frames pile up until
    senders must wait for room; each still returns R00 at its expiry."""
    accepted = trio.Event()

    async def silent_connector(stream: trio.SocketStream) -> None:
        peer = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while True:
            peer.receive_data(await stream.receive_some())
            for event in peer.events():
                if isinstance(event, wsproto.events.Request):
                    await stream.send_all(peer.send(wsproto.events.AcceptConnection()))
                elif isinstance(event, wsproto.events.BytesMessage):
                    auth = decode_btp(event.data)
                    await stream.send_all(
                        peer.send(wsproto.events.BytesMessage(Response(auth.request_id).encode()))
                    )
                    accepted.set()
                    await trio.sleep_forever()  # and never reads again

    replies: list[Reply] = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, silent_connector, 0)
            port = listeners[0].socket.getsockname()[1]
            async with open_btp_client(f"btp+ws://a:b@127.0.0.1:{port}") as link:
                await accepted.wait()
                congested = trio.Event()

                async def send() -> None:
                    replies.append(await link.send(prepare(seconds=2, data=b"d" * 32000)))

                async def watch() -> None:
                    while not link._conn.ws.congested:  # type: ignore[union-attr]
                        await trio.sleep(0.01)
                    congested.set()

                async with trio.open_nursery() as senders:
                    senders.start_soon(watch)
                    while not congested.is_set():
                        senders.start_soon(send)
                        await trio.sleep(0)
                    for _ in range(20):  # these wait for room
                        senders.start_soon(send)
            nursery.cancel_scope.cancel()
    assert len(replies) > 20
    for reply in replies:
        assert isinstance(reply, Reject) and reply.code == "R00", reply


def test_random_pool_hands_out_the_source_in_order() -> None:
    calls: list[int] = []

    def source(n: int) -> bytes:
        calls.append(n)
        return bytes(range(256)) * (n // 256)

    pool = RandomPool(source)
    taken = b"".join(pool(4) for _ in range(1025))
    assert taken[:8] == bytes(range(8))
    assert taken[4092:4100] == bytes((252, 253, 254, 255, 0, 1, 2, 3))
    assert calls == [4096, 4096]


async def test_cancel_scope_around_the_client_is_a_plain_cancellation() -> None:
    """A deadline around `open_btp_client` cancels cleanly; it is not reported as a failure."""
    from ilp.btp import open_btp_client, serve_btp

    async def on_client(request: BtpRequest) -> None:
        link = await request.accept()
        await link.wait_closed()

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_btp, on_client)
        with trio.move_on_after(0.5) as scope:
            async with open_btp_client(f"btp+ws://a:b@127.0.0.1:{port}"):
                await trio.sleep_forever()
        assert scope.cancelled_caught
        nursery.cancel_scope.cancel()


async def test_persistent_client_dials_until_accepted() -> None:
    """A node's dial-out: it starts before the server exists, and a refusal is retried too."""
    from functools import partial

    from ilp.btp.client import BtpClient
    from ilp.btp.url import parse_btp_url

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = BtpClient(
        parse_btp_url(f"btp+ws://node:token@127.0.0.1:{port}"),
        persistent=True,
        reconnect_backoff=(0.01, 0.05),
    )
    refusals = 0

    async def on_client(request: BtpRequest) -> None:
        nonlocal refusals
        if refusals < 2:
            refusals += 1
            await request.refuse("not yet")
            return
        link = await request.accept()
        await link.wait_closed()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)  # reports at once, connected or not
            assert not client.connected
            await nursery.start(partial(serve_btp, on_client, port=port))
            await client.wait_connected()
            assert refusals == 2 and client.connections == 1
            await client.aclose()
            nursery.cancel_scope.cancel()


def test_redact_hides_the_token_but_no_piece_of_other_words() -> None:
    assert redact("invalid auth_token wrong-t0ken", "wrong-t0ken") == "invalid auth_token ***"
    assert redact('token "s3cret" refused', "s3cret") == 'token "***" refused'
    assert redact("unknown account or wrong token", "t") == "unknown account or wrong token"
    assert redact("a.b+c", "b+c") == "a.***"
    assert redact("text", None) == redact("text", "") == "text"
