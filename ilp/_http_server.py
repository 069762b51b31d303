"""An HTTP/1.1 server for ASGI applications on trio: it serves SPSP, ILP over HTTP and the node's
API (:func:`~ilp.spsp.server.serve_spsp` and :func:`~ilp.http.serve_ilp_http` are this server).

Why our own: hypercorn, which served them before, spent about 430–600 µs of CPU per request, ten
times what an ILP Prepare costs the rest of a connector. This one parses a request with
:mod:`ilp._http1` (sans-I/O), calls the application with the request body in one message when it
came in one read, and writes the answer's head and body in one send.

What it does: keep-alive and pipelined requests, bodies by ``Content-Length`` or ``chunked``,
``Expect: 100-continue``, ``HEAD``, HTTP/1.0 clients, answers framed by the application's
``Content-Length``, by the length of a one-message body, or ``chunked``. Every connection is a
task of the server's nursery; cancelling the server closes them all.

Limits: a request head of at most 16 KiB and 100 header lines (431), a body of at most
:data:`MAX_BODY` (413), :data:`IDLE_TIMEOUT` seconds between requests on a connection, and
:data:`IO_TIMEOUT` seconds for each read of a request and each write of an answer (the
connection is closed then, within a second). A request the parser refuses gets its 4xx/5xx and the connection is
closed; an application that fails before answering gets a 500 (its error logged), one that fails
in the middle of an answer a closed connection.

What it does not do: TLS, HTTP/2, WebSocket upgrades, the ASGI lifespan protocol (our
applications need no startup), response trailers. Our applications remain plain ASGI: any ASGI
server (hypercorn, uvicorn) runs them too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, Final

import trio

from ._asgi import Message, Receive, Scope, Send
from ._http1 import (
    CHUNKED,
    MAX_HEAD_SIZE,
    ChunkedDecoder,
    RequestError,
    RequestHead,
    error_response,
    parse_request_head,
    response_head,
)

__all__ = ["IDLE_TIMEOUT", "IO_TIMEOUT", "MAX_BODY", "Asgi", "serve_asgi", "serve_connection"]

Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY: Final = 1024 * 1024
"""The largest request body taken (413 above it)."""
IDLE_TIMEOUT: Final = 75.0
"""Seconds a keep-alive connection may wait for its next request."""
IO_TIMEOUT: Final = 30.0
"""Seconds for each read of a started request, and each write of an answer."""

_READ_SIZE: Final = 65536
_TICK: Final = 1.0
_LINGER: Final = 1.0
_NO_BODY_STATUS: Final = frozenset({204, 304})
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT: Final[Message] = {"type": "http.disconnect"}

_log = logging.getLogger("ilp.http.server")


class _Dates:
    """The ``Date`` header value, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode("ascii")
        return self._value


_DATES: Final = _Dates()


class _EndOfStreamError(Exception):
    pass


class _Exchange:
    """One request and its answer: the ``receive`` and ``send`` of the ASGI call."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_continue",
        "_declared",
        "_delivered",
        "_done_event",
        "_framing",
        "_head",
        "_left",
        "_sent",
        "_start",
        "body_done",
        "broken",
        "failed",
        "head_written",
        "keep_alive",
        "response_done",
    )

    def __init__(self, conn: _Connection, head: RequestHead) -> None:
        self._conn = conn
        self._head = head
        self._chunks = ChunkedDecoder(conn.max_body) if head.length == CHUNKED else None
        self._left = max(head.length, 0)
        self._continue = head.expect_continue
        self._start: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._declared: int | None = None
        self._sent = 0
        self._framing = ""
        self._done_event: trio.Event | None = None
        self._delivered = False
        self.body_done = head.length == 0
        self.keep_alive = head.keep_alive
        self.head_written = False
        self.response_done = False
        self.failed: RequestError | None = None
        self.broken = False

    # -- receive ---------------------------------------------------------------------------------

    async def receive(self) -> Message:
        if self.failed is not None or self.broken:
            return _DISCONNECT
        if self.body_done and self._delivered:
            if not self.response_done:
                self._done_event = self._done_event or trio.Event()
                await self._done_event.wait()
            return _DISCONNECT
        try:
            if self._continue:
                self._continue = False
                if not self.head_written:
                    await self._conn.write(_CONTINUE)
            body = await self._read_body()
        except RequestError as exc:
            self.failed = exc
            return _DISCONNECT
        except (_EndOfStreamError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True
            return _DISCONNECT
        self._delivered = self.body_done
        return {"type": "http.request", "body": body, "more_body": not self.body_done}

    async def _read_body(self) -> bytes:
        if self.body_done:
            return b""
        buffer = self._conn.buffer
        if self._chunks is not None:
            while True:
                data = self._chunks.decode(buffer)
                if self._chunks.done:
                    self.body_done = True
                    return data
                if data:
                    return data
                await self._conn.fill()
        if not buffer:
            await self._conn.fill()
        take = min(self._left, len(buffer))
        data = bytes(buffer[:take])
        del buffer[:take]
        self._left -= take
        self.body_done = not self._left
        return data

    # -- send ------------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self._start is not None:
                raise RuntimeError("the ASGI application started its answer twice")
            headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
            self._start = (int(message["status"]), headers)
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if self._start is None:
            raise RuntimeError("http.response.body before http.response.start")
        if self.response_done:
            raise RuntimeError("the answer is complete already")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        if not more:
            self._finish()
        if self.failed is not None or self.broken:
            return  # the request failed or the client left: nothing is sent
        out = b"" if self.head_written else self._response_head(len(body), more)
        self.head_written = True
        framing = self._framing
        if body and framing != "none" and self._head.method != "HEAD":
            if framing == "chunked":
                out += b"%x\r\n%b\r\n" % (len(body), body)
            else:
                self._sent += len(body)
                if self._declared is not None and self._sent > self._declared:
                    raise RuntimeError("the ASGI application sent more than its Content-Length")
                out += body
        if not more:
            if framing == "chunked":
                out += b"0\r\n\r\n"
            elif (
                self._declared is not None
                and self._sent < self._declared
                and self._head.method != "HEAD"
            ):
                self.keep_alive = False  # a short answer: the client sees the close
        if out:
            try:
                await self._conn.write(out)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.broken = True

    def _finish(self) -> None:
        self.response_done = True
        if self._done_event is not None:
            self._done_event.set()

    def _response_head(self, first: int, more: bool) -> bytes:
        assert self._start is not None
        status, app_headers = self._start
        headers: list[tuple[bytes, bytes]] = []
        close = not self.keep_alive or not self.body_done
        date = False
        for name, value in app_headers:
            if name == b"content-length":
                text = value.strip()
                if not text.isdigit() or len(text) > 19:
                    raise ValueError("the ASGI application's Content-Length is not a number")
                self._declared = int(text)
                continue
            elif name == b"transfer-encoding":
                continue  # the framing is ours to choose
            elif name == b"connection":
                if b"close" in value.lower():
                    close = True
                continue
            elif name == b"date":
                date = True
            headers.append((name, value))
        if status in _NO_BODY_STATUS or status < 200:
            self._declared = None
            self._framing = "none"
        elif self._declared is not None:
            self._framing = "length"
            headers.append((b"content-length", b"%d" % self._declared))
        elif not more and (first or self._head.method != "HEAD"):
            self._declared = first
            self._framing = "length"
            headers.append((b"content-length", b"%d" % first))
        elif not more:
            self._framing = "none"  # HEAD, and the application did not say how long a GET is
        elif self._head.http_version == "1.1":
            self._framing = "chunked"
            headers.append((b"transfer-encoding", b"chunked"))
        else:
            self._framing = "close"
            close = True
        if close:
            self.keep_alive = False
            headers.append((b"connection", b"close"))
        elif self._head.http_version == "1.0":
            headers.append((b"connection", b"keep-alive"))
        if not date:
            headers.append((b"date", _DATES.now()))
        return response_head(status, headers)


class _Connection:
    """One client connection: requests read in turn, each answered before the next is read."""

    __slots__ = (
        "_app",
        "_client",
        "_log",
        "_server",
        "_stream",
        "buffer",
        "deadline",
        "max_body",
        "scope",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        app: Asgi,
        server: tuple[str, int] | None,
        client: tuple[str, int] | None,
        log: logging.Logger,
        max_body: int,
    ) -> None:
        self._stream = stream
        self._app = app
        self._server = server
        self._client = client
        self._log = log
        self.max_body = max_body
        self.buffer = bytearray()
        self.scope = trio.CancelScope()
        self.deadline = math.inf
        """When the reaper closes the connection: set for each read and write of ours."""

    async def fill(self) -> None:
        """Read more of the request into :attr:`buffer` (raises at the end of the stream)."""
        self.deadline = trio.current_time() + IO_TIMEOUT
        data = await self._stream.receive_some(_READ_SIZE)
        self.deadline = math.inf
        if not data:
            raise _EndOfStreamError
        self.buffer += data

    async def write(self, data: bytes) -> None:
        self.deadline = trio.current_time() + IO_TIMEOUT
        await self._stream.send_all(data)
        self.deadline = math.inf

    async def run(self) -> None:
        linger = False
        with (
            self.scope,
            contextlib.suppress(
                _EndOfStreamError, trio.BrokenResourceError, trio.ClosedResourceError
            ),
        ):
            linger = await self._serve()
        if linger:
            await self._linger()
        await trio.aclose_forcefully(self._stream)

    async def _linger(self) -> None:
        """Close our side and read what the client still sends for a moment, so that the
        answer is not lost to a reset of the connection by unread request bytes."""
        with trio.move_on_after(_LINGER):
            try:
                if isinstance(self._stream, trio.abc.HalfCloseableStream):
                    await self._stream.send_eof()
                read = 0
                while read < MAX_BODY and (data := await self._stream.receive_some(_READ_SIZE)):
                    read += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def _serve(self) -> bool:
        """Answer requests until the connection ends; True if it should linger before closing."""
        while True:
            try:
                head = await self._read_head()
            except RequestError as exc:
                await self.write(error_response(exc.status, str(exc), _DATES.now()))
                return True
            if head is None:
                return False
            exchange = _Exchange(self, head)
            await self._call(head, exchange)
            if exchange.broken:
                return False
            if exchange.failed is not None:
                if not exchange.head_written:
                    failed = exchange.failed
                    await self.write(error_response(failed.status, str(failed), _DATES.now()))
                return True
            if not exchange.response_done:
                if not exchange.head_written:
                    self._log.error(
                        "the HTTP application returned without answering %s %s",
                        head.method,
                        head.path[:200],
                    )
                    await self._internal_error()
                return True
            if not exchange.keep_alive or not exchange.body_done:
                return not exchange.body_done or bool(self.buffer)

    async def _internal_error(self) -> None:
        await self.write(error_response(500, "internal server error", _DATES.now()))

    async def _read_head(self) -> RequestHead | None:
        buffer = self.buffer
        if buffer:
            self.deadline = trio.current_time() + IO_TIMEOUT
        else:
            self.deadline = trio.current_time() + IDLE_TIMEOUT
        while True:
            while buffer[:2] == b"\r\n":
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) > MAX_HEAD_SIZE:
                raise RequestError(431, f"a request head is at most {MAX_HEAD_SIZE} bytes here")
            started = bool(buffer)
            data = await self._stream.receive_some(_READ_SIZE)
            if not data:
                return None
            if not started:
                self.deadline = trio.current_time() + IO_TIMEOUT
            buffer += data
        self.deadline = math.inf
        if end > MAX_HEAD_SIZE:
            raise RequestError(431, f"a request head is at most {MAX_HEAD_SIZE} bytes here")
        head = parse_request_head(bytes(buffer[:end]), self.max_body)
        del buffer[: end + 4]
        return head

    async def _call(self, head: RequestHead, exchange: _Exchange) -> None:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": head.http_version,
            "server": self._server,
            "client": self._client,
            "scheme": "http",
            "method": head.method,
            "root_path": "",
            "path": head.path,
            "raw_path": head.raw_path,
            "query_string": head.query,
            "headers": head.headers,
        }
        try:
            await self._app(scope, exchange.receive, exchange.send)
        except Exception:
            self._log.exception(
                "the HTTP application failed on %s %s", head.method, head.path[:200]
            )
            if exchange.head_written or exchange.broken:
                exchange.broken = True  # in the middle of an answer: only a close tells
                return
            await self._internal_error()
            exchange.failed = None
            exchange.head_written = exchange.response_done = True
            exchange.keep_alive = False


def _address(sock: trio.socket.SocketType, peer: bool) -> tuple[str, int] | None:
    try:
        name = sock.getpeername() if peer else sock.getsockname()
    except OSError:
        return None
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return None


class _Reaper:
    """Closes the connections whose :attr:`_Connection.deadline` has passed, checking once every
    :data:`_TICK` seconds. A timeout is then late by up to a tick; in exchange, the reads and
    writes of a request only store a number instead of moving a cancel scope's deadline (which
    cost about a tenth of the server's time per request)."""

    def __init__(self) -> None:
        self.connections: set[_Connection] = set()

    async def run(self) -> None:
        while True:
            await trio.sleep(_TICK)
            now = trio.current_time()
            for conn in self.connections:
                if conn.deadline <= now:
                    conn.scope.cancel()

    async def serve(self, conn: _Connection) -> None:
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)


def _connection(
    stream: trio.abc.Stream, app: Asgi, log: logging.Logger, max_body: int
) -> _Connection:
    server = client = None
    if isinstance(stream, trio.SocketStream):
        server = _address(stream.socket, peer=False)
        client = _address(stream.socket, peer=True)
    return _Connection(stream, app, server, client, log, max_body)


async def serve_connection(
    stream: trio.abc.Stream,
    app: Asgi,
    *,
    log: logging.Logger = _log,
    max_body: int = MAX_BODY,
) -> None:
    """Serve ``app`` on one connection until it ends (for a server of one's own, and tests)."""
    reaper = _Reaper()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reaper.run)
        await reaper.serve(_connection(stream, app, log, max_body))
        nursery.cancel_scope.cancel()


async def serve_asgi(
    app: Asgi,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log: logging.Logger = _log,
    max_body: int = MAX_BODY,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` over HTTP/1.1 on ``host``:``port`` until cancelled.

    For ``port = await nursery.start(serve_asgi, app, host, 0)``: reports the port it listens
    on. A port that cannot be bound raises :class:`OSError` from ``nursery.start``. Failures of
    the application are logged to ``log``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        actual_port: int = sock.getsockname()[1]
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)

    reaper = _Reaper()

    async def handle(stream: trio.SocketStream) -> None:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await reaper.serve(_connection(stream, app, log, max_body))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reaper.run)
        task_status.started(actual_port)
        await trio.serve_listeners(handle, [listener], handler_nursery=nursery)
