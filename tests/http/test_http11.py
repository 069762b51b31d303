"""Our ILP-over-HTTP link's own HTTP/1.1 client against raw TCP servers that answer exactly the
bytes a test gives: the answer forms servers use (chunked, to the end of the connection,
interim 1xx), connections the server closes, and answers that are not HTTP at all. Whatever
comes back, ``send`` returns a Fulfill or a Reject and never raises."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ilp.http import HttpLink, open_http_link
from ilp.packet import Fulfill, Prepare, Reject
from tests.tls import self_signed_contexts

FULFILLMENT = b"\x42" * 32
CONDITION = hashlib.sha256(FULFILLMENT).digest()
FULFILL = Fulfill(FULFILLMENT, b"hi").encode()
LIMIT = 15  # seconds: the bound of every test

Answer = Callable[[int], Sequence[bytes]]
"""The bytes to write for the n-th request of a connection (an empty list closes it)."""


def prepare(seconds: float = 5.0) -> Prepare:
    return Prepare(10, datetime.now(UTC) + timedelta(seconds=seconds), CONDITION, "test.peer.x")


def ok(body: bytes = FULFILL) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def _read_request(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bool:
    """Read one request (head and Content-Length body) off ``stream``; False at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return False
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end]).lower()
    length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
    while len(buffer) < end + length:
        buffer += await stream.receive_some(65536)
    del buffer[: end + length]
    return True


@asynccontextmanager
async def raw_server(answer: Answer, *, close_after: int | None = None) -> AsyncIterator[str]:
    """A server writing ``answer(n)`` for the n-th request of each connection; it closes a
    connection after ``close_after`` requests. Yields its URL; counts connections in
    ``raw_server.connections``."""
    connections: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        connections.append(1)
        buffer = bytearray()
        n = 0
        try:
            while await _read_request(stream, buffer):
                parts = answer(n)
                n += 1
                if not parts:
                    return
                for part in parts:
                    await stream.send_all(part)
                    await trio.sleep(0)
                if close_after is not None and n >= close_after:
                    return
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        raw_server.connections = connections  # type: ignore[attr-defined]
        try:
            yield f"http://127.0.0.1:{listener.socket.getsockname()[1]}/ilp"
        finally:
            nursery.cancel_scope.cancel()


async def send_twice(answer: Answer, **kw: int) -> tuple[Fulfill | Reject, Fulfill | Reject, int]:
    """Two Prepares in a row over one link; the replies and how many connections it took."""
    with trio.fail_after(LIMIT):
        async with raw_server(answer, **kw) as url, open_http_link(url, address="test.me") as link:
            first = await link.send(prepare())
            second = await link.send(prepare())
            return first, second, len(raw_server.connections)  # type: ignore[attr-defined]


async def test_keep_alive_reuses_one_connection() -> None:
    first, second, connections = await send_twice(lambda n: [ok()])
    assert first == second == Fulfill(FULFILLMENT, b"hi")
    assert connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x;ext=1\r\n%s\r\n" % (5, FULFILL[:5])
            + b"%X\r\n%s\r\n" % (len(FULFILL) - 5, FULFILL[5:])
            + b"0\r\nX-Trailer: yes\r\n\r\n",
            id="chunked-with-trailer",
        ),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(), id="interim-100"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nX-Many: a\r\nx-many: b\r\n\r\n%s"
            % (len(FULFILL), FULFILL),
            id="header-case-and-repeats",
        ),
    ],
)
async def test_answer_forms_keep_the_connection(answer: bytes) -> None:
    # Split into single bytes: the reader must not depend on how the answer arrives.
    first, second, connections = await send_twice(lambda n: [bytes([b]) for b in answer])
    assert first == second == Fulfill(FULFILLMENT, b"hi")
    assert connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + FULFILL, id="close"),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\n" + FULFILL, id="http-1.0-to-the-end"),
    ],
)
async def test_answers_to_the_end_of_the_connection(answer: bytes) -> None:
    first, second, connections = await send_twice(
        lambda n: [answer] if n == 0 else [], close_after=1
    )
    assert first == second == Fulfill(FULFILLMENT, b"hi")
    assert connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    with trio.fail_after(LIMIT):
        async with (
            raw_server(lambda n: [ok()], close_after=1) as url,
            open_http_link(url) as link,
        ):
            assert await link.send(prepare()) == Fulfill(FULFILLMENT, b"hi")
            await trio.sleep(0.05)  # the server's FIN arrives
            assert await link.send(prepare()) == Fulfill(FULFILLMENT, b"hi")
            assert len(raw_server.connections) == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        pytest.param([b"SSH-2.0-OpenSSH\r\n\r\n"], "not HTTP/1.1", id="not-http"),
        pytest.param([], "closed the connection without answering", id="no-answer"),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], "middle", id="cut-body"
        ),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"],
            "two different",
            id="two-lengths",
        ),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            "chunk size",
            id="bad-chunk",
        ),
        pytest.param([b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20_000], "head", id="huge-head"),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"], "more than", id="huge-body"
        ),
    ],
)
async def test_unreadable_answers_are_t01(answer: list[bytes], words: str) -> None:
    with trio.fail_after(LIMIT):
        async with (
            raw_server(lambda n: answer, close_after=1) as url,
            open_http_link(url, address="test.me") as link,
        ):
            reply = await link.send(prepare())
    assert isinstance(reply, Reject)
    assert (reply.code, reply.triggered_by) == ("T01", "test.me")
    assert words in reply.message


async def test_a_server_that_never_answers_is_r00_at_the_expiry() -> None:
    with trio.fail_after(LIMIT):
        async with (
            raw_server(lambda n: [b"HTTP/1.1 200 OK\r\n"]) as url,
            open_http_link(url) as link,
        ):
            reply = await link.send(prepare(seconds=0.3))
            assert isinstance(reply, Reject) and reply.code == "R00"
            # The abandoned connection is not reused.
            assert isinstance(await link.send(prepare(seconds=0.3)), Reject)
            assert len(raw_server.connections) == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("token", ["a\r\nX-Evil: 1", "tö"])
def test_tokens_that_cannot_be_a_header_are_refused(token: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        HttpLink("http://127.0.0.1/ilp", token=token)


def test_the_request_head() -> None:
    link = HttpLink("http://[::1]:8080/a b/ilp?x=1", token="t0k", peer_name="alice")
    assert link._head == (
        b"POST /a%20b/ilp?x=1 HTTP/1.1\r\nHost: [::1]:8080\r\n"
        b"Content-Type: application/octet-stream\r\nAccept: application/octet-stream\r\n"
        b"Authorization: Bearer t0k\r\nILP-Peer-Name: alice\r\nContent-Length: "
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda status, headers, body: b"HTTP/1.1 %d X\r\n%s\r\n%s" % (status, headers, body),
            st.integers(100, 599),
            st.binary(max_size=100),
            st.binary(max_size=100),
        ),
    )
)
def test_any_answer_is_a_reply_never_an_exception(answer: bytes) -> None:
    async def main() -> None:
        with trio.fail_after(LIMIT):
            async with (
                raw_server(lambda n: [answer], close_after=1) as url,
                open_http_link(url, address="test.me") as link,
            ):
                reply = await link.send(prepare(seconds=0.5))
        assert isinstance(reply, Fulfill | Reject)

    trio.run(main)


# -- TLS ------------------------------------------------------------------------------------------


@asynccontextmanager
async def tls_server() -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    """An HTTPS server answering every request with the Fulfill; yields its URL and a client
    context that trusts its certificate."""
    server_context, client_context = self_signed_contexts()

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        buffer = bytearray()
        try:
            while await _read_request(stream, buffer):
                await stream.send_all(ok())
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            partial(trio.serve_ssl_over_tcp, handle, 0, server_context, host="127.0.0.1")
        )
        port = listener.transport_listener.socket.getsockname()[1]
        try:
            yield f"https://127.0.0.1:{port}/ilp", client_context
        finally:
            nursery.cancel_scope.cancel()


async def test_https() -> None:
    with trio.fail_after(LIMIT):
        async with tls_server() as (url, trusting):
            async with open_http_link(url, verify=trusting) as link:
                assert await link.send(prepare()) == Fulfill(FULFILLMENT, b"hi")
                assert await link.send(prepare()) == Fulfill(FULFILLMENT, b"hi")
            async with open_http_link(url, verify=False) as link:
                assert await link.send(prepare()) == Fulfill(FULFILLMENT, b"hi")
            # The system's authorities do not know the certificate.
            async with open_http_link(url, address="test.me") as link:
                reply = await link.send(prepare())
    assert isinstance(reply, Reject) and reply.code == "T01"
    assert "cannot reach" in reply.message and "certificate" in reply.message
