"""Our HTTP/1.1 server for ASGI applications (``ilp._http_server``) and its sans-I/O parser
(``ilp._http1``): requests parsed strictly, chunked bodies fed a byte at a time, and whole
connections driven over in-memory streams (with trio's autojump clock for the timeouts) and over
TCP with httpx (h11: an independent reader of our answers)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp._http1 import (
    CHUNKED,
    MAX_HEAD_SIZE,
    MAX_HEADERS,
    ChunkedDecoder,
    RequestError,
    parse_request_head,
    response_head,
)
from ilp._http_server import IDLE_TIMEOUT, IO_TIMEOUT, serve_asgi, serve_connection

Asgi = Callable[[Any, Any, Any], Awaitable[None]]
MAX = 1000

# -- the request head ---------------------------------------------------------------------------


def test_a_request_head_parses() -> None:
    head = parse_request_head(
        b"POST /accounts/al%20ice/ilp?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length:  12 \r\n"
        b"X-Thing: a\r\nx-thing: b",
        MAX,
    )
    assert head.method == "POST"
    assert head.raw_path == b"/accounts/al%20ice/ilp"
    assert head.path == "/accounts/al ice/ilp"
    assert head.query == b"x=1"
    assert head.http_version == "1.1"
    assert head.headers == [
        (b"host", b"h"),
        (b"content-length", b"12"),
        (b"x-thing", b"a"),
        (b"x-thing", b"b"),
    ]
    assert head.length == 12
    assert head.keep_alive
    assert not head.expect_continue


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: h", True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close", False),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nConnection: close", False),
        (b"GET / HTTP/1.0", False),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive", True),
    ],
)
def test_keep_alive_follows_the_version_and_connection_header(
    head: bytes, keep_alive: bool
) -> None:
    assert parse_request_head(head, MAX).keep_alive is keep_alive


def test_absolute_form_and_chunked_and_expect() -> None:
    head = parse_request_head(
        b"PUT http://example.com/a/b?q HTTP/1.1\r\nHost: example.com\r\n"
        b"Transfer-Encoding: chunked\r\nExpect: 100-Continue",
        MAX,
    )
    assert (head.raw_path, head.query, head.length) == (b"/a/b", b"q", CHUNKED)
    assert head.expect_continue


@pytest.mark.parametrize(
    ("head", "status", "words"),
    [
        (b"GET /", 400, "request line"),
        (b"GET  / HTTP/1.1\r\nHost: h", 400, "request line"),
        (b"G(T / HTTP/1.1\r\nHost: h", 400, "request line"),
        (b"GET / HTTP/2.0\r\nHost: h", 505, "HTTP/1.1"),
        (b"GET / HTTX/1.1\r\nHost: h", 400, "request line"),
        (b"GET / HTTP/1.1", 400, "Host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400, "Host"),
        (b"GET relative HTTP/1.1\r\nHost: h", 400, "target"),
        (b"GET ftp://x/ HTTP/1.1\r\nHost: h", 400, "target"),
        (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h", 400, "target"),
        (b"GET * HTTP/1.1\r\nHost: h", 400, "target"),
        (b"GET / HTTP/1.1\r\nHost : h", 400, "Name: value"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n folded", 400, "Name: value"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nNo colon", 400, "Name: value"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nb", 400, "CR, LF"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb", 400, "CR, LF"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2", 400, "different"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2", 400, "different"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1", 400, "not a number"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10", 400, "not a number"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001", 413, "at most 1000"),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked",
            400,
            "not both",
        ),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip", 400, "chunked"),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked", 501, "chunked"),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked", 400, "HTTP/1.1"),
        (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: magic", 417, "100-continue"),
        (b"GET / HTTP/1.1\r\nHost: h" + b"\r\nX: y" * MAX_HEADERS, 431, "header lines"),
    ],
)
def test_bad_request_heads_get_their_status(head: bytes, status: int, words: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_request_head(head, MAX)
    assert caught.value.status == status
    assert words in str(caught.value)


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_any_bytes_as_a_head_raise_only_request_error(data: bytes) -> None:
    try:
        head = parse_request_head(data, MAX)
    except RequestError as exc:
        assert 400 <= exc.status < 600
    else:
        assert head.method
        assert head.length == CHUNKED or 0 <= head.length <= MAX


# -- chunked bodies -----------------------------------------------------------------------------


def chunked(parts: list[bytes], trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts if p)
    return out + b"0\r\n" + trailer + b"\r\n"


def decode_byte_at_a_time(data: bytes, max_body: int = MAX) -> tuple[bytes, bool, bytes]:
    """Feed ``data`` one byte at a time: the body, whether it ended, and the bytes left."""
    decoder = ChunkedDecoder(max_body)
    buffer = bytearray()
    body = bytearray()
    for i in range(len(data)):
        buffer.append(data[i])
        body += decoder.decode(buffer)
        if decoder.done:
            return bytes(body), True, bytes(buffer) + data[i + 1 :]
    return bytes(body), False, bytes(buffer)


@given(st.lists(st.binary(max_size=40), max_size=8), st.binary(max_size=20))
@settings(max_examples=200)
def test_chunked_bodies_decode_a_byte_at_a_time(parts: list[bytes], after: bytes) -> None:
    data = chunked(parts, b"X-Sum: 1\r\n") + after
    body, done, left = decode_byte_at_a_time(data)
    assert (body, done, left) == (b"".join(parts), True, after)


def test_a_whole_chunked_body_decodes_in_one_call() -> None:
    decoder = ChunkedDecoder(MAX)
    buffer = bytearray(chunked([b"hello ", b"world"]) + b"GET")
    body = decoder.decode(buffer)
    assert (body, decoder.done, bytes(buffer)) == (b"hello world", True, b"GET")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"zz\r\n", 400),
        (b"\r\n", 400),
        (b"5\r\nhelloX\r\n", 400),
        (b"1" * 2000, 400),
        (b"3e9\r\n", 413),
        (b"200\r\n" + b"a" * 0x200 + b"\r\n200\r\n", 413),
        (b"0\r\n" + b"X: y\r\n" * 3000, 431),
    ],
)
def test_bad_chunked_bodies(data: bytes, status: int) -> None:
    with pytest.raises(RequestError) as caught:
        decode_byte_at_a_time(data)
    assert caught.value.status == status


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_any_bytes_as_a_chunked_body_raise_only_request_error(data: bytes) -> None:
    try:
        decode_byte_at_a_time(data)
    except RequestError as exc:
        assert exc.status in (400, 413, 431)


def test_a_response_head_refuses_what_would_split_it() -> None:
    assert response_head(200, [(b"a", b"b")]) == b"HTTP/1.1 200 OK\r\na: b\r\n\r\n"
    with pytest.raises(ValueError, match="cannot be sent"):
        response_head(200, [(b"x", b"1\r\nSet-Cookie: evil")])
    with pytest.raises(ValueError, match="cannot be sent"):
        response_head(200, [(b"bad name", b"1")])
    with pytest.raises(ValueError, match="three digits"):
        response_head(42, [])


# -- whole connections in memory ----------------------------------------------------------------


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the method, path and the whole request body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = f"{scope['method']} {scope['path']} ".encode() + body
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


class Client:
    """The client end of an in-memory connection to :func:`serve_connection`."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def read_answer(self, head: bool = False) -> tuple[int, dict[bytes, bytes], bytes]:
        """One answer: status, headers, body (by Content-Length, chunked, or to the end; none
        with ``head``, the answer to a HEAD request)."""
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        end = self.buffer.index(b"\r\n\r\n")
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        del self.buffer[: end + 4]
        status = int(lines[0].split(b" ")[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            assert name.lower() not in headers, f"{name!r} sent twice"
            headers[name.lower()] = value.strip()
        if head or status < 200 or status in (204, 304):
            return status, headers, b""
        if b"content-length" in headers:
            size = int(headers[b"content-length"])
            while len(self.buffer) < size:
                await self._fill()
            body = bytes(self.buffer[:size])
            del self.buffer[:size]
        elif headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            decoder = ChunkedDecoder(10**6)
            while True:
                body += decoder.decode(self.buffer)
                if decoder.done:
                    break
                await self._fill()
        else:
            while await self._fill(eof_ok=True):
                pass
            body = bytes(self.buffer)
            self.buffer.clear()
        return status, headers, body

    async def _fill(self, eof_ok: bool = False) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            assert eof_ok, "the server closed the connection"
            return False
        self.buffer += data
        return True

    async def closed(self) -> bool:
        """True if the server closed the connection with nothing more to read."""
        return not self.buffer and not await self.stream.receive_some(65536)


async def connected(nursery: trio.Nursery, app: Asgi = echo, max_body: int = 1_000_000) -> Client:
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(lambda: serve_connection(server, app, max_body=max_body))
    return Client(client)


GET = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


def post(body: bytes, extra: bytes = b"") -> bytes:
    return b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


async def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    async with trio.open_nursery() as nursery:
        client = await connected(nursery)
        await client.send(GET)
        status, headers, body = await client.read_answer()
        assert (status, body) == (200, b"GET /x ")
        assert headers[b"content-length"] == b"7"
        assert headers[b"date"].endswith(b"GMT")
        assert b"connection" not in headers
        # Three requests in one write, the last split in the middle of its body.
        data = post(b"one") + b"\r\n" + post(b"two") + post(b"three")
        await client.send(data[:-2])
        await client.send(data[-2:])
        answers = [await client.read_answer() for _ in range(3)]
        assert [a[2] for a in answers] == [b"POST /p one", b"POST /p two", b"POST /p three"]
        await client.send(GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        status, headers, _ = await client.read_answer()
        assert headers[b"connection"] == b"close"
        assert await client.closed()
        await client.stream.aclose()


async def test_a_chunked_request_and_a_streamed_answer() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        messages = []
        while True:
            message = await receive()
            messages.append(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 201, "headers": []})
        for part in messages:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with trio.open_nursery() as nursery:
        client = await connected(nursery, app)
        head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        await client.send(head + chunked([b"abc", b"defg"]))
        status, headers, body = await client.read_answer()
        assert (status, headers[b"transfer-encoding"], body) == (201, b"chunked", b"abcdefg")
        # HTTP/1.0 has no chunked answers: the body runs to the end of the connection.
        await client.send(b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        status, headers, body = await client.read_answer()
        assert (status, headers[b"connection"], body) == (201, b"close", b"hi")
        assert b"transfer-encoding" not in headers
        await client.stream.aclose()


async def test_head_gets_the_length_but_no_body_and_http10_keep_alive() -> None:
    async with trio.open_nursery() as nursery:
        client = await connected(nursery)
        await client.send(b"HEAD /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        await client.send(GET)
        status, headers, body = await client.read_answer(head=True)
        assert (status, headers[b"content-length"], body) == (200, b"8", b"")
        assert headers[b"connection"] == b"keep-alive"
        assert (await client.read_answer())[2] == b"GET /x "
        await client.stream.aclose()


async def test_expect_100_continue_is_answered_when_the_body_is_read() -> None:
    async with trio.open_nursery() as nursery:
        client = await connected(nursery)
        await client.send(post(b"", b"Expect: 100-continue\r\nX: y\r\n").replace(b": 0", b": 4"))
        status, _, _ = await client.read_answer()
        assert status == 100
        await client.send(b"body")
        assert (await client.read_answer())[:3:2] == (200, b"POST /p body")
        await client.stream.aclose()


async def test_a_request_the_parser_refuses_gets_its_status_and_a_close() -> None:
    async with trio.open_nursery() as nursery:
        client = await connected(nursery)
        await client.send(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n")
        status, headers, body = await client.read_answer()
        assert (status, headers[b"connection"]) == (400, b"close")
        assert b"Content-Length" in body
        assert await client.closed()
        await client.stream.aclose()


@pytest.mark.parametrize(
    "request_bytes",
    [
        post(b"x" * 101),
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked([b"y" * 101]),
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_over_the_limit_gets_413(request_bytes: bytes) -> None:
    async with trio.open_nursery() as nursery:
        client = await connected(nursery, max_body=100)
        await client.send(request_bytes)
        status, headers, body = await client.read_answer()
        assert (status, headers[b"connection"]) == (413, b"close")
        assert b"at most 100 bytes" in body
        await client.stream.aclose()


async def test_a_head_over_the_limit_gets_431() -> None:
    async with trio.open_nursery() as nursery:
        client = await connected(nursery)
        await client.send(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_SIZE)
        status, _, _ = await client.read_answer()
        assert status == 431
        await client.stream.aclose()


async def test_an_answer_without_reading_the_body_closes_the_connection() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    async with trio.open_nursery() as nursery:
        client = await connected(nursery, app)
        await client.send(post(b"z" * 10)[:-5])
        status, headers, body = await client.read_answer()
        assert (status, headers[b"connection"], body) == (401, b"close", b"no")
        await client.stream.aclose()


async def test_application_failures(caplog: pytest.LogCaptureFixture) -> None:
    async def fails_at_once(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("boom")

    async def fails_in_the_middle(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise KeyError("boom")

    async def never_answers(scope: Any, receive: Any, send: Any) -> None:
        pass

    caplog.set_level(logging.ERROR, "ilp.http.server")
    async with trio.open_nursery() as nursery:
        client = await connected(nursery, fails_at_once)
        await client.send(GET)
        status, headers, body = await client.read_answer()
        assert (status, headers[b"connection"]) == (500, b"close")
        assert b"boom" not in body
        assert await client.closed()

        client = await connected(nursery, fails_in_the_middle)
        await client.send(GET + GET)
        # The chunked body never ends: the connection closes, the second request is not read.
        everything = bytearray()
        while data := await client.stream.receive_some(100):
            everything += data
        assert everything.startswith(b"HTTP/1.1 200 OK\r\n")
        assert everything.endswith(b"\r\n\r\n4\r\npart\r\n")
        assert everything.count(b"HTTP/1.1") == 1

        client = await connected(nursery, never_answers)
        await client.send(GET)
        assert (await client.read_answer())[0] == 500
        await client.stream.aclose()
    failures = [r for r in caplog.records if r.name == "ilp.http.server"]
    assert len(failures) == 3
    assert "GET /x" in failures[0].getMessage()
    assert failures[0].exc_info is not None


async def test_a_client_that_leaves_mid_body_is_a_disconnect() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ignored"})

    async with trio.open_nursery() as nursery:
        client = await connected(nursery, app)
        await client.send(post(b"0123456789")[:-4])
        await client.stream.send_eof()  # type: ignore[attr-defined]
        assert await client.closed()
        await client.stream.aclose()
    assert seen[0] == {"type": "http.request", "body": b"012345", "more_body": True}
    assert seen[1] == {"type": "http.disconnect"}


async def test_receive_after_the_body_waits_for_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

        async def watch() -> None:
            assert await receive() == {"type": "http.disconnect"}
            order.append("disconnect")

        async with trio.open_nursery() as inner:
            inner.start_soon(watch)
            await trio.sleep(1)
            order.append("answer")
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async with trio.open_nursery() as nursery:
        client = await connected(nursery, app)
        await client.send(post(b"x"))
        status, headers, _ = await client.read_answer()
        assert status == 204
        assert b"content-length" not in headers
        await client.stream.aclose()
    assert order == ["answer", "disconnect"]


async def test_timeouts_close_idle_and_slow_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        idle = await connected(nursery)
        await idle.send(GET)
        await idle.read_answer()
        start = trio.current_time()
        assert await idle.closed()
        assert IDLE_TIMEOUT <= trio.current_time() - start <= IDLE_TIMEOUT + 1

        slow = await connected(nursery)
        start = trio.current_time()
        await slow.send(b"GET / HTTP/1.1\r\n")
        assert await slow.closed()
        assert IO_TIMEOUT <= trio.current_time() - start <= IO_TIMEOUT + 1

        stalled = await connected(nursery)
        start = trio.current_time()
        await stalled.send(post(b"0123456789")[:-3])
        assert await stalled.closed()
        assert IO_TIMEOUT <= trio.current_time() - start <= IO_TIMEOUT + 1


# -- over TCP, read by h11 (httpx) ---------------------------------------------------------------


async def parts(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_over_tcp_with_httpx() -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(dict(scope))
        await echo(scope, receive, send)

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_asgi, app, "127.0.0.1", 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                answers = [await http.post(f"/n/{i}?a=b", content=b"%d" % i) for i in range(20)]
                streamed = await http.post("/s", content=parts(b"ab", b"cd"))
                head = await http.head("/h")
            nursery.cancel_scope.cancel()
    assert [a.text for a in answers] == [f"POST /n/{i} {i}" for i in range(20)]
    assert streamed.text == "POST /s abcd"
    assert head.headers["content-length"] == "8" and head.content == b""
    ports = {s["client"][1] for s in scopes}
    assert len(ports) == 1, "keep-alive: one connection for all the requests"
    assert scopes[0]["server"] == ("127.0.0.1", port)
    assert scopes[0]["query_string"] == b"a=b"
    assert scopes[0]["asgi"]["version"] == "3.0"


async def test_a_busy_port_is_an_os_error() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_asgi, echo, "127.0.0.1", 0)
        with pytest.raises(OSError):
            await nursery.start(serve_asgi, echo, "127.0.0.1", port)
        nursery.cancel_scope.cancel()
