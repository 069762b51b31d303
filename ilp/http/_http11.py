"""A small HTTP/1.1 client for ILP over HTTP: one ``POST`` of a packet, its answer read back,
over pooled keep-alive connections on trio streams (TCP, or TLS with :class:`trio.SSLStream`).

Why not httpx here: an ILP packet is a few hundred bytes, and httpx (with httpcore and h11)
spent about 580 µs of CPU on each of them; the packet path of a connector cannot afford that.
This client does only what that path needs: a request head built once per link (only
``Content-Length`` changes), one write per request, and a reader for the answers servers send
(``Content-Length``, ``chunked``, or a body up to the end of the connection; interim ``1xx``
answers skipped). No redirects, no proxies, no cookies, no HTTP/2. httpx stays the library for
everything else (SPSP queries).

An idle pooled connection with anything to read (the server closed it, or sent bytes nobody
asked for) is dropped before use, so a Prepare is not written into a connection the server has
already given up. A request is never retried: a Prepare the server may have taken must not be
sent twice.
"""

from __future__ import annotations

import select
import ssl
from dataclasses import dataclass
from typing import Final

import trio

from .._http1 import ChunkedDecoder, RequestError

__all__ = ["MAX_HEAD_SIZE", "ConnectError", "Http11Pool", "HttpProtocolError", "Response"]

MAX_HEAD_SIZE: Final = 16 * 1024
"""The largest response head (status line and headers) read."""

_READ_SIZE: Final = 65536


class HttpProtocolError(Exception):
    """The answer is not HTTP/1.x that this client can read."""


class ConnectError(Exception):
    """No connection could be opened (the cause says why)."""


class _EndOfStreamError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Response:
    """A final answer: its status, and its body unless that was larger than the limit."""

    status: int
    body: bytes
    too_large: bool = False


class _Connection:
    __slots__ = ("buffer", "fd", "stream")

    def __init__(self, stream: trio.abc.Stream, fd: int) -> None:
        self.stream = stream
        self.fd = fd
        self.buffer = bytearray()

    def idle_and_open(self) -> bool:
        """True if nothing can be read: no EOF, no stray bytes (checked without blocking)."""
        if self.buffer:
            return False
        try:
            readable, _, _ = select.select([self.fd], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    async def _fill(self) -> None:
        data = await self.stream.receive_some(_READ_SIZE)
        if not data:
            raise _EndOfStreamError
        self.buffer += data

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def _head(self) -> tuple[bytes, int, dict[bytes, bytes]]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD_SIZE:
                raise HttpProtocolError(f"the answer's head is longer than {MAX_HEAD_SIZE} bytes")
            await self._fill()
        if end > MAX_HEAD_SIZE:
            raise HttpProtocolError(f"the answer's head is longer than {MAX_HEAD_SIZE} bytes")
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        del self.buffer[: end + 4]
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if (
            version not in (b"HTTP/1.1", b"HTTP/1.0")
            or len(code) != 3
            or not code.isdigit()
            or rest[3:4] not in (b"", b" ")
        ):
            raise HttpProtocolError("the answer does not start with an HTTP/1.x status line")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip() or b" " in name:
                raise HttpProtocolError("the answer has a malformed header line")
            name = name.lower()
            value = value.strip()
            if name in headers:
                if name == b"content-length" and headers[name] != value:
                    raise HttpProtocolError("the answer has two different Content-Lengths")
                value = headers[name] + b", " + value
            headers[name] = value
        return version, int(code), headers

    async def _chunked(self, limit: int) -> bytes:
        decoder = ChunkedDecoder(limit)
        body = bytearray()
        try:
            while True:
                body += decoder.decode(self.buffer)
                if decoder.done:
                    return bytes(body)
                await self._fill()
        except RequestError as exc:
            if exc.status == 413:
                raise _TooLargeError from None
            raise HttpProtocolError(f"the answer's chunked body: {exc}") from None

    async def _to_end(self, limit: int) -> bytes:
        try:
            while len(self.buffer) <= limit:
                await self._fill()
        except _EndOfStreamError:
            data = bytes(self.buffer)
            self.buffer.clear()
            return data
        raise _TooLargeError

    async def exchange(self, request: bytes, limit: int) -> tuple[Response, bool]:
        """Send ``request``; the final answer, and whether the connection can be used again."""
        await self.stream.send_all(request)
        while True:
            try:
                version, status, headers = await self._head()
            except _EndOfStreamError:
                raise HttpProtocolError(
                    "the server closed the connection without answering"
                ) from None
            if status >= 200:
                break
            if status == 101:
                raise HttpProtocolError("the server switched protocols")
        connection = headers.get(b"connection", b"").lower()
        tokens = {token.strip() for token in connection.split(b",")}
        reusable = (b"close" not in tokens) if version == b"HTTP/1.1" else b"keep-alive" in tokens
        coding = headers.get(b"transfer-encoding")
        length = headers.get(b"content-length")
        try:
            if status in (204, 304):
                body = b""
            elif coding is not None:
                if coding.lower().rpartition(b",")[2].strip() == b"chunked":
                    body = await self._chunked(limit)
                else:
                    body, reusable = await self._to_end(limit), False
            elif length is not None:
                if not length.isdigit() or len(length) > 19:
                    raise HttpProtocolError("the answer has a malformed Content-Length")
                size = int(length)
                if size > limit:
                    raise _TooLargeError
                body = await self._exactly(size)
            else:
                body, reusable = await self._to_end(limit), False
        except _TooLargeError:
            return Response(status, b"", too_large=True), False
        except _EndOfStreamError:
            raise HttpProtocolError(
                "the server closed the connection in the middle of its answer"
            ) from None
        return Response(status, body), reusable


class _TooLargeError(Exception):
    pass


class Http11Pool:
    """Pooled HTTP/1.1 connections to one origin; :meth:`post` sends a finished request.

    ``ssl_context`` None means plain TCP. At most ``max_connections`` are open at once; further
    requests wait for one. :meth:`aclose` closes the idle ones and those in use as they finish.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._idle: list[_Connection] = []
        self._limit = trio.Semaphore(max_connections)
        self._closed = False

    async def _connect(self) -> _Connection:
        try:
            tcp = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        fd = tcp.socket.fileno()
        if self._ssl is None:
            return _Connection(tcp, fd)
        stream = trio.SSLStream(tcp, self._ssl, server_hostname=self.host, https_compatible=True)
        try:
            await stream.do_handshake()
        except BaseException as exc:
            await trio.aclose_forcefully(tcp)
            if isinstance(exc, trio.BrokenResourceError | ssl.SSLError | OSError):
                raise ConnectError(f"TLS handshake failed: {exc.__cause__ or exc}") from exc
            raise
        return _Connection(stream, fd)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.idle_and_open():
                return conn
            self._forget(conn)
        return None

    def _forget(self, conn: _Connection) -> None:
        # An SSLStream's own close would await; the transport's socket can be closed at once.
        stream = conn.stream
        inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        if isinstance(inner, trio.SocketStream):
            inner.socket.close()

    async def post(self, request: bytes, limit: int) -> Response:
        """Send ``request`` (a whole HTTP/1.1 request) and return the final answer; the body is
        read up to ``limit`` bytes (``too_large`` beyond). Raises :class:`ConnectError`,
        :class:`HttpProtocolError`, :class:`trio.BrokenResourceError` or OSError."""
        if self._closed:
            raise trio.ClosedResourceError("the pool is closed")
        try:
            self._limit.acquire_nowait()
        except trio.WouldBlock:
            await self._limit.acquire()
        try:
            conn = self._take_idle() or await self._connect()
            done = False
            try:
                response, reusable = await conn.exchange(request, limit)
                done = True
            finally:
                if done and reusable and not self._closed:
                    self._idle.append(conn)
                else:
                    self._forget(conn)
            return response
        finally:
            self._limit.release()

    def close(self) -> None:
        """Close every idle connection now; those in use close when their request ends."""
        self._closed = True
        while self._idle:
            self._forget(self._idle.pop())
