"""WebSocket (RFC 6455) on a trio stream we own: what BTP runs on.

The opening handshake is HTTP/1.1 through h11 (:func:`connect_websocket`,
:func:`accept_websocket`). After it, framing is done here, because the cost per message is what
BTP round trips are made of: one reader task parses frames and hands each complete message to a
callback, synchronously (or to :meth:`WebSocket.receive` until a callback is set), and answers
pings itself; one writer task sends every frame waiting in one write. A sender may write its own
frame at once when nothing waits and nobody is writing (``direct=True``): on a plain TCP socket
that is one non-blocking write whose unwritten rest goes to the writer, so a cancelled sender
never leaves half a frame behind. Over TLS every frame goes through the writer.

RFC 6455 as both ends need it: a client masks every frame and a server none; no extension is
negotiated, so reserved bits are refused; a frame masked the wrong way, an unknown opcode, a
fragmented or oversized control frame, a continuation out of place or a bad close frame fail the
connection with 1002, text that is not UTF-8 with 1007 and a message over ``max_message_size``
with 1009. Pings are answered with pongs; the closing handshake runs both ways (the server
closes TCP first, the client waits for it). Text messages are delivered as ``str``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Final

import h11
import trio

__all__ = [
    "MAX_MESSAGE_SIZE",
    "CloseReason",
    "HandshakeError",
    "MessageHandler",
    "WebSocket",
    "WebSocketClosedError",
    "accept_websocket",
    "connect_websocket",
]

MAX_MESSAGE_SIZE: Final = 2**20
"""Largest message accepted (as trio-websocket's default); a bigger one closes with 1009."""
RECEIVE_SIZE: Final = 65536
OUTBOX_LIMIT: Final = 256 * 1024
"""Bytes waiting for the writer past which senders (and the reader) wait."""
INBOX_LIMIT: Final = 16
"""Messages held for :meth:`WebSocket.receive` past which the reader stops reading."""

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY = 0, 1, 2
_OP_CLOSE, _OP_PING, _OP_PONG = 8, 9, 10
_U16: Final = struct.Struct(">H")
_U64: Final = struct.Struct(">Q")
_HEAD16: Final = struct.Struct(">BBH")
_HEAD64: Final = struct.Struct(">BBQ")
# The two header bytes of a final binary frame of 0..125 bytes sent by a server.
_SERVER_BINARY_HEADS: Final = tuple(bytes((0x82, n)) for n in range(126))

#: Close codes by name, as wsproto (and so trio-websocket) names them.
CLOSE_NAMES: Final = {
    1000: "NORMAL_CLOSURE",
    1001: "GOING_AWAY",
    1002: "PROTOCOL_ERROR",
    1003: "UNSUPPORTED_DATA",
    1005: "NO_STATUS_RCVD",
    1006: "ABNORMAL_CLOSURE",
    1007: "INVALID_FRAME_PAYLOAD_DATA",
    1008: "POLICY_VIOLATION",
    1009: "MESSAGE_TOO_BIG",
    1010: "MANDATORY_EXT",
    1011: "INTERNAL_ERROR",
    1012: "SERVICE_RESTART",
    1013: "TRY_AGAIN_LATER",
    1015: "TLS_HANDSHAKE_FAILED",
}
_LOCAL_ONLY_CODES: Final = frozenset((1005, 1006, 1015))

MessageHandler = Callable[[bytes | str], None]


@dataclass(frozen=True, slots=True)
class CloseReason:
    """Why a WebSocket closed: the close code and the peer's (or our) reason text."""

    code: int
    reason: str | None = None

    @property
    def name(self) -> str:
        """The code's name (``NORMAL_CLOSURE``, ...), or the range it falls in."""
        name = CLOSE_NAMES.get(self.code)
        if name is not None:
            return name
        if 1000 <= self.code <= 2999:
            return "RFC_RESERVED"
        if 3000 <= self.code <= 3999:
            return "IANA_RESERVED"
        if 4000 <= self.code <= 4999:
            return "PRIVATE_RESERVED"
        return "INVALID_CODE"


_ABNORMAL: Final = CloseReason(1006)


class WebSocketClosedError(Exception):
    """The WebSocket is closed (or closing): no more messages go either way."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason)
        self.reason = reason


class HandshakeError(Exception):
    """The opening handshake failed: ``status_code`` is set when the server refused it,
    ``closed`` when the connection closed before it ended."""

    def __init__(
        self, message: str, *, status_code: int | None = None, closed: bool = False
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.closed = closed


class _ViolationError(Exception):
    """The peer broke RFC 6455: fail the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Signal:
    """Wakes the one task that waits on it; a wake-up with nobody waiting is kept for later."""

    __slots__ = ("_flag", "_task")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._flag = False

    def set(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)
        else:
            self._flag = True

    async def wait(self) -> None:
        """Return at once if set since the last wait (no checkpoint then), else park."""
        if self._flag:
            self._flag = False
            return
        if self._task is not None:
            raise trio.BusyResourceError("another task is already waiting here")
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


# ----------------------------------------------------------------------------------------------
# Opening handshake


def accept_token(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID, usedforsecurity=False).digest())


def _headers(event: h11.Request | h11.InformationalResponse) -> dict[bytes, bytes]:
    """Header values by lower-case name; repeated headers joined with commas."""
    headers: dict[bytes, bytes] = {}
    for name, value in event.headers:
        headers[name] = headers[name] + b", " + value if name in headers else value
    return headers


def _tokens(value: bytes | None) -> set[bytes]:
    return {token.strip().lower() for token in (value or b"").split(b",")}


async def connect_websocket(
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> WebSocket:
    """Run the client's opening handshake on ``stream``; :class:`HandshakeError` if it fails.

    ``host`` is the ``Host`` header, ``resource`` the path (and query) asked for.
    """
    key = base64.b64encode(random_bytes(16))
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=resource,
        headers=[
            (b"Host", host.encode("ascii") if host.isascii() else host.encode("idna")),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", key),
            (b"Sec-WebSocket-Version", b"13"),
        ],
    )
    closed = False
    try:
        await stream.send_all((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if closed:
                    raise HandshakeError("the connection closed", closed=True) from None
                raise HandshakeError(f"invalid HTTP response ({exc})") from None
            if event is h11.NEED_DATA:
                data = bytes(await stream.receive_some(RECEIVE_SIZE))
                closed = not data
                conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                break
            if isinstance(event, h11.Response):
                raise HandshakeError(
                    f"the upgrade was refused with HTTP {event.status_code}",
                    status_code=event.status_code,
                )
            if isinstance(event, h11.ConnectionClosed):
                raise HandshakeError("the connection closed", closed=True)
            # Other informational responses (100 Continue, ...) say nothing about the upgrade.
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise HandshakeError("the connection closed", closed=True) from None
    headers = _headers(event)
    if b"upgrade" not in _tokens(headers.get(b"connection")):
        raise HandshakeError("the 101 response lacks 'Connection: Upgrade'")
    if (headers.get(b"upgrade") or b"").lower() != b"websocket":
        raise HandshakeError("the 101 response lacks 'Upgrade: websocket'")
    if headers.get(b"sec-websocket-accept") != accept_token(key):
        raise HandshakeError("the 101 response has a wrong Sec-WebSocket-Accept")
    for name in (b"sec-websocket-extensions", b"sec-websocket-protocol"):
        if name in headers:
            raise HandshakeError(f"the server chose a {name.decode()} we did not offer")
    return WebSocket(
        stream,
        client=True,
        path=resource,
        leftover=conn.trailing_data[0],
        random_bytes=random_bytes,
    )


def _refusal(status: int, reason: str, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


async def accept_websocket(stream: trio.abc.Stream) -> WebSocket | None:
    """Run the server's opening handshake on ``stream``.

    None if the client went away first or did not ask for a WebSocket (it is answered 400, or
    426 for a version other than 13).
    """
    conn = h11.Connection(h11.SERVER)
    request: h11.Request | None = None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            await stream.send_all(_refusal(400, "Bad Request"))
            return None
        if event is h11.NEED_DATA:
            data = bytes(await stream.receive_some(RECEIVE_SIZE))
            if not data:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed) or event is h11.PAUSED:
            break
        # Body data of the request: read on.
    if request is None:
        return None
    if isinstance(event, h11.EndOfMessage):
        # After a request asking to switch protocols, h11 pauses.
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            event = h11.NEED_DATA
    headers = _headers(request)
    key = headers.get(b"sec-websocket-key")
    version = headers.get(b"sec-websocket-version")
    if version != b"13":
        status, reason = (426, "Upgrade Required") if version else (400, "Bad Request")
        await stream.send_all(_refusal(status, reason, "Sec-WebSocket-Version: 13\r\n"))
        return None
    if (
        request.method != b"GET"
        or key is None
        or b"host" not in headers
        or b"upgrade" not in _tokens(headers.get(b"connection"))
        or (headers.get(b"upgrade") or b"").lower() != b"websocket"
        or event is not h11.PAUSED
    ):
        await stream.send_all(_refusal(400, "Bad Request"))
        return None
    response = h11.InformationalResponse(
        status_code=101,
        headers=[
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", accept_token(key)),
        ],
        reason="Switching Protocols",
    )
    await stream.send_all(conn.send(response) or b"")
    return WebSocket(
        stream,
        client=False,
        path=request.target.decode("ascii", "replace"),
        leftover=conn.trailing_data[0],
    )


# ----------------------------------------------------------------------------------------------
# Framing


def _xor(data: bytes, key: bytes) -> bytes:
    """``data`` masked (or unmasked) with the 4-byte ``key``."""
    n = len(data)
    if not n:
        return b""
    mask = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(mask, "little")).to_bytes(n, "little")


def _close_payload(code: int | None, reason: str | None) -> bytes:
    if code is None:
        return b""
    text = (reason or "").encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return _U16.pack(code) + text


def _stream_fd(stream: trio.abc.Stream) -> int:
    """The socket of a plain TCP stream, written and read directly; -1 for any other stream."""
    if os.name == "posix" and type(stream) is trio.SocketStream:
        return stream.socket.fileno()
    return -1


def stream_remote(stream: trio.abc.Stream) -> str:
    """``address:port`` of the peer, as far as the stream tells."""
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(inner, trio.SocketStream):
        try:
            peer = inner.socket.getpeername()
        except OSError:
            return "(disconnected)"
        if isinstance(peer, tuple):
            try:
                return f"{ip_address(peer[0])}:{peer[1]}"
            except ValueError:
                return f"{peer[0]}:{peer[1]}"
        return str(peer)
    return type(inner).__name__


class WebSocket:
    """An open WebSocket. Made by :func:`connect_websocket` or :func:`accept_websocket`; its
    reader and writer run once :meth:`start` put them in a nursery.

    ``path`` is the resource asked for; ``remote`` the peer's address. ``close_reason`` is set
    once the WebSocket is closing or closed.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        client: bool,
        path: str,
        leftover: bytes = b"",
        max_message_size: int = MAX_MESSAGE_SIZE,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.client = client
        self.path = path
        self.remote = stream_remote(stream)
        self.close_reason: CloseReason | None = None
        self._stream = stream
        self._fd = _stream_fd(stream)
        self._max_size = max_message_size
        self._random = random_bytes
        self._keys = b""
        self._key_pos = 0
        # Receiving: bytes not parsed yet, and how many a partial frame needs before parsing on.
        self._rest = leftover
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._need = 0
        self._fragment_op = 0  # opcode of a fragmented message in progress
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._handler: MessageHandler | None = None
        self._inbox: deque[bytes | str] = deque()
        self._inbox_signal = _Signal()
        self._reader_signal = _Signal()
        self._reading = True
        # Sending: frames waiting for the writer.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._writing = False
        self._write_failed = False
        self._writer_signal = _Signal()
        self._written = trio.lowlevel.ParkingLot()
        # Closing.
        self._close_sent = False
        self._close_received = False
        self._close_when_written = False
        self._ended = False  # no more messages either way
        self._stream_closed = False
        self._ended_event = trio.Event()
        self._reader_done = trio.Event()
        self._pings: dict[bytes, trio.Event] = {}
        self._ping_count = 0

    # -- running --------------------------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        """Run the reader and the writer in ``nursery`` (cancel it after :meth:`aclose`)."""
        nursery.start_soon(self._read_loop)
        nursery.start_soon(self._write_loop)

    @property
    def closed(self) -> bool:
        """True once no more messages can go either way."""
        return self._ended

    async def wait_closed(self) -> None:
        """Return once no more messages can go either way (``close_reason`` says why)."""
        await self._ended_event.wait()

    # -- receiving ------------------------------------------------------------------------------

    def set_handler(self, handler: MessageHandler | None) -> None:
        """Hand every message to ``handler`` from now on, first those already received.

        ``handler`` runs in the reader task and must not block; None goes back to
        :meth:`receive`.
        """
        self._handler = handler
        if handler is not None:
            inbox = self._inbox
            while inbox and self._handler is handler:
                handler(inbox.popleft())
            self._reader_signal.set()

    async def receive(self) -> bytes | str:
        """The next message (when no handler is set); :class:`WebSocketClosedError` after the last."""
        await trio.lowlevel.checkpoint()
        while True:
            if self._inbox:
                message = self._inbox.popleft()
                self._reader_signal.set()
                return message
            if self._ended:
                raise WebSocketClosedError(self._reason())
            await self._inbox_signal.wait()

    async def _receive_some(self) -> bytes:
        fd = self._fd
        if fd < 0:
            data = await self._stream.receive_some(RECEIVE_SIZE)
            return data if type(data) is bytes else bytes(data)
        while True:
            # Waiting first costs nothing when no data is there yet (the usual case), and when
            # some is, trio's own receive_some would also yield once.
            await trio.lowlevel.wait_readable(fd)
            if self._stream_closed:
                raise trio.ClosedResourceError
            try:
                return os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return b""

    async def _read_loop(self) -> None:
        try:
            if self._rest:
                data, self._rest = self._rest, b""
                self._feed(data)
            while self._reading:
                data = await self._receive_some()
                if not data:
                    self._lost()
                    return
                self._feed(data)
                while self._reading and (
                    self._pending_size > OUTBOX_LIMIT
                    or (self._handler is None and len(self._inbox) >= INBOX_LIMIT)
                ):
                    await self._reader_signal.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._lost()
        finally:
            self._reading = False
            self._reader_done.set()

    def _feed(self, data: bytes) -> None:
        if self._close_received:
            return  # after the peer's close frame, nothing counts
        if self._need:
            self._parts.append(data)
            self._parts_size += len(data)
            if self._parts_size < self._need:
                return
            data = b"".join(self._parts)
            self._parts = []
            self._need = 0
        elif self._rest:
            data = self._rest + data
            self._rest = b""
        try:
            pos, need = self._parse(data)
        except _ViolationError as failure:
            self._fail(failure.code, failure.reason)
            return
        if pos < len(data) and self._reading:
            rest = data[pos:]
            if need:
                self._parts = [rest]
                self._parts_size = len(rest)
                self._need = need
            else:
                self._rest = rest

    def _parse(self, buf: bytes) -> tuple[int, int]:
        """Handle every whole frame in ``buf``; the offset of the rest and the size of the
        frame it starts (0 if its header is incomplete)."""
        pos = 0
        end = len(buf)
        client = self.client
        while end - pos >= 2 and self._reading and not self._close_received:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length >= 126:
                if length == 126:
                    if end - start < 2:
                        return pos, 0
                    length = _U16.unpack_from(buf, start)[0]
                    start += 2
                    if length < 126:
                        raise _ViolationError(1002, "frame length not minimally encoded")
                else:
                    if end - start < 8:
                        return pos, 0
                    length = _U64.unpack_from(buf, start)[0]
                    start += 8
                    if length < 65536 or length >> 63:
                        raise _ViolationError(1002, "invalid 64-bit frame length")
            if b1 & 0x80:
                if client:
                    raise _ViolationError(1002, "the server masked a frame")
                if end - start < 4:
                    return pos, 0
                key = buf[start : start + 4]
                start += 4
            elif not client:
                raise _ViolationError(1002, "the client sent an unmasked frame")
            else:
                key = b""
            if b0 & 0x70:
                raise _ViolationError(1002, "reserved bits set (no extension was negotiated)")
            op = b0 & 0x0F
            if op >= _OP_CLOSE:
                if length > 125:
                    raise _ViolationError(1002, "control frame payload over 125 bytes")
                if not b0 & 0x80:
                    raise _ViolationError(1002, "fragmented control frame")
            elif length + self._fragments_size > self._max_size:
                raise _ViolationError(
                    1009, f"Exceeded maximum message size: {self._max_size} bytes"
                )
            stop = start + length
            if stop > end:
                return pos, stop - pos
            payload = buf[start:stop]
            if key:
                payload = _xor(payload, key)
            pos = stop
            if op in (_OP_BINARY, _OP_TEXT):
                if self._fragment_op:
                    raise _ViolationError(1002, "a new message started inside a fragmented one")
                if b0 & 0x80:
                    self._message(op, payload)
                else:
                    self._fragment_op = op
                    self._fragments = [payload]
                    self._fragments_size = length
            elif op == _OP_CONTINUATION:
                if not self._fragment_op:
                    raise _ViolationError(1002, "a continuation frame outside a fragmented message")
                self._fragments.append(payload)
                self._fragments_size += length
                if b0 & 0x80:
                    op, self._fragment_op = self._fragment_op, 0
                    payload = b"".join(self._fragments)
                    self._fragments = []
                    self._fragments_size = 0
                    self._message(op, payload)
            elif op == _OP_PING:
                if not self._close_sent:
                    self._write(self._frame(_OP_PONG, payload), True)
            elif op == _OP_PONG:
                self._pong(payload)
            elif op == _OP_CLOSE:
                self._closing(payload)
            else:
                raise _ViolationError(1002, f"unknown opcode {op}")
        return pos, 0

    def _message(self, op: int, payload: bytes) -> None:
        if self._close_sent:
            return  # we are closing: messages still in flight are dropped
        message: bytes | str = payload
        if op == _OP_TEXT:
            try:
                message = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise _ViolationError(1007, "a text message is not valid UTF-8") from None
        handler = self._handler
        if handler is not None:
            handler(message)
        else:
            self._inbox.append(message)
            self._inbox_signal.set()

    def _pong(self, payload: bytes) -> None:
        pings = self._pings
        if payload not in pings:
            return
        # A pong answers its ping and every earlier one (the peer may skip some).
        while pings:
            key = next(iter(pings))
            pings.pop(key).set()
            if key == payload:
                break

    def _closing(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise _ViolationError(1002, "close frame with a 1-byte payload")
        code, reason = 1005, None
        if payload:
            code = _U16.unpack_from(payload)[0]
            if (
                not 1000 <= code <= 4999
                or code in _LOCAL_ONLY_CODES
                or (code <= 2999 and code not in CLOSE_NAMES)
            ):
                raise _ViolationError(1002, f"close frame with invalid code {code}")
            try:
                reason = payload[2:].decode("utf-8") or None
            except UnicodeDecodeError:
                raise _ViolationError(1007, "close reason is not valid UTF-8") from None
        self._close_received = True
        if self.close_reason is None:
            self.close_reason = CloseReason(code, reason)
        if not self._close_sent:
            self._send_close(None if code == 1005 else code, None)
        self._end()
        if not self.client:
            # The server closes TCP first (RFC 6455 §7.1.1), once its close frame is out.
            self._reading = False
            self._close_when_written = True
            self._writer_signal.set()

    def _fail(self, code: int, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = CloseReason(code, reason)
        if not self._close_sent:
            self._send_close(code, reason)
        self._end()
        self._reading = False

    # -- sending --------------------------------------------------------------------------------

    def _frame(self, op: int, payload: bytes) -> bytes:
        n = len(payload)
        if self.client:
            pos = self._key_pos
            if pos >= len(self._keys):
                self._keys = self._random(4096)
                pos = 0
            self._key_pos = pos + 4
            key = self._keys[pos : pos + 4]
            if n < 126:
                head = bytes((0x80 | op, 0x80 | n))
            elif n < 65536:
                head = _HEAD16.pack(0x80 | op, 0xFE, n)
            else:
                head = _HEAD64.pack(0x80 | op, 0xFF, n)
            return head + key + _xor(payload, key)
        if n < 126:
            head = _SERVER_BINARY_HEADS[n] if op == _OP_BINARY else bytes((0x80 | op, n))
        elif n < 65536:
            head = _HEAD16.pack(0x80 | op, 126, n)
        else:
            head = _HEAD64.pack(0x80 | op, 127, n)
        return head + payload

    @property
    def congested(self) -> bool:
        """True while so much waits to be written that :meth:`send` would wait."""
        return self._pending_size > OUTBOX_LIMIT

    async def wait_for_room(self) -> None:
        """Until :meth:`send` would not wait; :class:`WebSocketClosedError` if it closes."""
        await self._wait_written(OUTBOX_LIMIT)

    async def send(self, data: bytes, *, direct: bool = False) -> None:
        """Send ``data`` as one binary message; waits only while too much waits to be written.

        ``direct`` lets this task write the frame itself when nothing else waits (a hint: use
        it when no other sender is likely to follow at once, so frames are not batched).
        :class:`WebSocketClosedError` once the WebSocket is closing.
        """
        if self._pending_size > OUTBOX_LIMIT:
            await self._wait_written(OUTBOX_LIMIT)
        self.send_nowait(data, direct=direct)

    def send_nowait(self, data: bytes, *, direct: bool = False) -> None:
        """:meth:`send` without waiting for room (for replies, bounded by their requests)."""
        if self._close_sent or self._ended:
            raise WebSocketClosedError(self._reason())
        self._write(self._frame(_OP_BINARY, data), direct)

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong; :class:`WebSocketClosedError` if it closes first."""
        if self._close_sent or self._ended:
            raise WebSocketClosedError(self._reason())
        if payload is None:
            self._ping_count += 1
            payload = _U64.pack(self._ping_count)
        if payload in self._pings:
            raise ValueError(f"a ping with payload {payload!r} is already waiting")
        event = self._pings[payload] = trio.Event()
        try:
            self._write(self._frame(_OP_PING, payload), True)
            await event.wait()
        finally:
            # Still there: woken by the end of the connection (or cancelled), not by a pong.
            unanswered = self._pings.pop(payload, None) is not None
        if unanswered:
            raise WebSocketClosedError(self._reason())

    def _write(self, frame: bytes, direct: bool) -> None:
        if self._stream_closed or self._write_failed:
            return
        if direct and not self._pending and not self._writing and self._fd >= 0:
            try:
                n = os.write(self._fd, frame)
            except BlockingIOError:
                n = 0
            except OSError:
                self._write_failed = True
                self._lost()
                return
            if n == len(frame):
                return
            frame = frame[n:]
        self._pending.append(frame)
        self._pending_size += len(frame)
        self._writer_signal.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                while not self._pending:
                    if self._close_when_written:
                        await self.close_stream()
                        return
                    await self._writer_signal.wait()
                pending = self._pending
                data = pending[0] if len(pending) == 1 else b"".join(pending)
                self._pending = []
                self._pending_size = 0
                self._writing = True
                try:
                    await self._send_all(data)
                finally:
                    self._writing = False
                self._written.unpark_all()
                self._reader_signal.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._write_failed = True
            self._pending = []
            self._pending_size = 0
            self._lost()

    async def _send_all(self, data: bytes) -> None:
        fd = self._fd
        if fd < 0:
            await self._stream.send_all(data)
            return
        view = memoryview(data)
        while view:
            if self._stream_closed:
                raise trio.ClosedResourceError
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                continue
            view = view[n:]

    async def _wait_written(self, limit: int) -> None:
        """Until at most ``limit`` bytes wait (0: and nothing is being written)."""
        while not (self._stream_closed or self._write_failed) and (
            self._pending_size > limit or (limit == 0 and (self._pending or self._writing))
        ):
            if self._ended and limit:
                raise WebSocketClosedError(self._reason())
            await self._written.park()

    # -- closing --------------------------------------------------------------------------------

    def _reason(self) -> CloseReason:
        return self.close_reason or _ABNORMAL

    def _send_close(self, code: int | None, reason: str | None) -> None:
        self._close_sent = True
        self._write(self._frame(_OP_CLOSE, _close_payload(code, reason)), True)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._ended_event.set()
        self._inbox_signal.set()
        self._reader_signal.set()
        for event in self._pings.values():
            event.set()

    def _lost(self) -> None:
        """The stream broke or hit EOF: whatever was not closed closes abnormally."""
        if self.close_reason is None:
            self.close_reason = _ABNORMAL
        self._reading = False
        self._end()
        self._reader_signal.set()
        self._written.unpark_all()

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close: send a close frame (``code``, ``reason``) unless one went out, wait for the
        peer's (a client waits for the server to close TCP), then close the stream.

        Bound it with a timeout; the stream is closed either way.
        """
        try:
            if not self._close_sent and not self._stream_closed:
                if self.close_reason is None:
                    self.close_reason = CloseReason(code, reason)
                self._send_close(code, reason)
                self._end()
            await self._wait_written(0)
            await self._reader_done.wait()
        finally:
            await self.close_stream()

    async def close_stream(self) -> None:
        """Close the stream now (no closing handshake)."""
        if not self._stream_closed:
            self._stream_closed = True
            self._lost()
            await trio.aclose_forcefully(self._stream)
