"""The STREAM receiver: :class:`StreamServer`, a PrepareHandler that accepts STREAM connections.

::

    server = StreamServer(server_secret, "test.alice", "XRP", 9, link=link)
    link.handler = server                     # or any router/connector in front of it
    async with server:                        # runs idle reaping and the connections' senders
        destination, secret = server.generate_credentials(tag="order-17")
        async for conn in server.connections():
            nursery.start_soon(serve, conn)   # conn.streams(), stream.money(), receive_some...

Credentials are stateless (SPEC §9.3): the address ends with a token that encrypts the tag and
receipt parameters under a key derived from ``server_secret``; the shared secret is an HMAC of
the token. A Prepare whose token or data does not decrypt is rejected F06.

Memory stays bounded: closed connections are dropped at once, idle ones after ``idle_timeout``.
A connection that closes before the application took it stays in the queue (at most
``backlog``), so its data and money are still seen. Tokens of recently closed connections (at most ``closed_memory``) are remembered so that late
packets get a ``ConnectionClose`` instead of opening the connection again.

The server sends Prepares back to clients (data, stream closes) over ``link`` when given; without
it, it only receives, and its closes ride on its replies. Sending and idle reaping run in the
server's nursery: ``async with server`` or ``await nursery.start(server.run)``.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import logging
import os
from collections import OrderedDict, deque
from contextlib import AsyncExitStack
from types import TracebackType

import trio

from ..address import validate_address
from ..errors import DecodeError, EncodeError
from ..link import IlpLink, Reply, ReplyCallback
from ..oer import MAX_UINT64
from ..packet import ErrorCode as IlpErrorCode
from ..packet import PacketType, Prepare, Reject
from .connection import Connection, ShouldFulfill
from .core import (
    DEFAULT_CONNECTION_WINDOW,
    DEFAULT_MAX_REMOTE_STREAMS,
    DEFAULT_STREAM_WINDOW,
    ConnectionCore,
    ConnectionTokens,
    TokenParameters,
)
from .crypto import StreamCrypto
from .packet import ConnectionClose, ErrorCode, StreamPacket

__all__ = ["StreamServer"]

_log = logging.getLogger("ilp.stream.server")

_F02 = IlpErrorCode("F02")
_F06 = IlpErrorCode("F06")
_F99 = IlpErrorCode("F99")
_T00 = IlpErrorCode("T00")


class StreamServer:
    """Accepts STREAM connections for ``address`` (our ILP address, in ``asset_code``/``asset_scale``).

    Call it with a Prepare (it is a :data:`~ilp.link.PrepareHandler`). ``should_fulfill`` is
    asked before money is fulfilled (see :data:`~ilp.stream.connection.ShouldFulfill`).
    ``backlog`` bounds the connections waiting in :meth:`connections`: when it is full, new
    connections are refused with T00 (the sender retries). ``backlog=0`` queues nothing, for an
    application that never takes connections (accounting through ``should_fulfill`` only).
    """

    def __init__(
        self,
        server_secret: bytes,
        address: str,
        asset_code: str,
        asset_scale: int,
        *,
        link: IlpLink | None = None,
        should_fulfill: ShouldFulfill | None = None,
        idle_timeout: float | None = 60.0,
        backlog: int = 64,
        closed_memory: int = 1024,
        max_remote_streams: int = DEFAULT_MAX_REMOTE_STREAMS,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        connection_window: int = DEFAULT_CONNECTION_WINDOW,
        receive_max: int = MAX_UINT64,
        packet_timeout: float = 30.0,
        close_timeout: float = 5.0,
        max_in_flight: int = 1,
    ) -> None:
        validate_address(address)
        if not 0 <= asset_scale <= 255:
            raise ValueError("asset_scale must be in 0..255")
        if backlog < 0:
            raise ValueError("backlog cannot be negative")
        self._tokens = ConnectionTokens(server_secret)
        self.address = address
        self._prefix = address + "."
        self.asset_code = asset_code
        self.asset_scale = asset_scale
        self.link = link
        """Where the server's own Prepares go (None: receive only)."""
        self._should_fulfill = should_fulfill
        self._idle_timeout = idle_timeout
        self._backlog = backlog
        self._closed_memory = closed_memory
        self._max_remote_streams = max_remote_streams
        self._stream_window = stream_window
        self._connection_window = connection_window
        self._receive_max = receive_max
        self._packet_timeout = packet_timeout
        self._close_timeout = close_timeout
        self._max_in_flight = max_in_flight

        self._connections: dict[str, Connection] = {}
        self._recently_closed: OrderedDict[str, None] = OrderedDict()
        self._announcing = backlog > 0
        self._queue: deque[Connection] = deque()
        self._queue_changed = trio.Event()
        self._idle: list[tuple[float, str]] = []
        self._idle_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._run_scope: trio.CancelScope | None = None
        self._exit_stack: AsyncExitStack | None = None
        self.connections_opened = 0
        """Connections accepted since the server was made."""

    def __repr__(self) -> str:
        return f"<StreamServer {self.address} connections={len(self._connections)}>"

    @property
    def live_connections(self) -> int:
        """Connections in memory now."""
        return len(self._connections)

    # -- credentials -----------------------------------------------------------------------

    def generate_credentials(
        self,
        *,
        tag: str | None = None,
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> tuple[str, bytes]:
        """A fresh ``(destination_address, shared_secret)`` for one connection; nothing is stored.

        ``tag`` comes back as :attr:`Connection.tag`; with ``receipt_nonce`` (16 bytes) and
        ``receipt_secret`` (32 bytes) every Fulfill carries STREAM receipts (RFC 39).
        """
        params = TokenParameters(tag, receipt_nonce, receipt_secret)
        token = self._tokens.make(params, os.urandom(12))
        segment = base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")
        destination = f"{self._prefix}{segment}"
        try:
            validate_address(destination)
        except EncodeError as exc:
            raise EncodeError(f"the tag makes the address too long: {exc}") from None
        return destination, self._tokens.shared_secret(token)

    # -- incoming --------------------------------------------------------------------------

    async def __call__(self, prepare: Prepare) -> Reply:
        """Answer a Prepare for one of our connections."""
        if self._should_fulfill is None:
            return self._answer_now(prepare)  # nothing to await: see handle_nowait
        found = self._find(prepare)
        if isinstance(found, Reject):
            return found
        conn, segment = found
        reply = await conn.handle_prepare(prepare)
        if segment is not None:
            self._after_first_packet(segment, conn)
        return reply

    def handle_nowait(self, prepare: Prepare, respond: ReplyCallback) -> bool:
        """Answer a Prepare without a task of its own (see :data:`~ilp.link.PrepareHandler`).

        A server without a ``should_fulfill`` hook never needs to wait: it calls ``respond``
        at once with the reply :meth:`__call__` would give, and returns True. With a hook it
        returns False, having done nothing, and the Prepare goes to :meth:`__call__`.
        """
        if self._should_fulfill is not None:
            return False
        respond(self._answer_now(prepare))
        return True

    def _answer_now(self, prepare: Prepare) -> Reply:
        found = self._find(prepare)
        if isinstance(found, Reject):
            return found
        conn, segment = found
        reply = conn._handle_prepare_now(prepare)
        if segment is not None:
            self._after_first_packet(segment, conn)
        return reply

    def _find(self, prepare: Prepare) -> tuple[Connection, str | None] | Reject:
        """The connection a Prepare is for, with its token segment if it was made just now
        (None if it existed); or the Reject that answers the Prepare."""
        destination = prepare.destination
        if not destination.startswith(self._prefix):
            return Reject(_F02, self.address, "")
        segment = destination[len(self._prefix) :].partition(".")[0]
        conn = self._connections.get(segment)
        if conn is not None:
            return conn, None
        made = self._accept(segment, prepare)
        if isinstance(made, Reject):
            return made
        return made, segment

    def _after_first_packet(self, segment: str, conn: Connection) -> None:
        """After a new connection's first Prepare: forget it if nothing decrypted, else hand it
        to the application."""
        if conn.core.packets_received == 0 and not conn.closed:
            # Nothing decrypted: not a connection after all.
            self._forget(segment, conn)
        elif self._announcing and conn.core.packets_received and not conn._announced:
            conn._announced = True
            self._queue.append(conn)
            self._wake_queue()

    def _accept(self, segment: str, prepare: Prepare) -> Connection | Reject:
        try:
            token = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
            params = self._tokens.open(token)
        except (binascii.Error, ValueError, DecodeError):
            return Reject(_F06, self.address, "")
        secret = self._tokens.shared_secret(token)
        if segment in self._recently_closed:
            return self._closed_reply(secret, prepare)
        if self._announcing and len(self._queue) >= self._backlog:
            return Reject(_T00, self.address, "the receiver is busy: try again later")
        core = ConnectionCore(
            StreamCrypto(secret),
            is_server=True,
            now=trio.current_time(),
            local_address=self.address,
            asset_code=self.asset_code,
            asset_scale=self.asset_scale,
            idle_timeout=self._idle_timeout,
            max_remote_streams=self._max_remote_streams,
            stream_window=self._stream_window,
            connection_window=self._connection_window,
            receive_max=self._receive_max,
            receipt_nonce=params.receipt_nonce,
            receipt_secret=params.receipt_secret,
        )
        core.announce_streams = self._announcing
        conn = Connection(
            core,
            link=self.link,
            nursery=self._nursery,
            packet_timeout=self._packet_timeout,
            close_timeout=self._close_timeout,
            max_in_flight=self._max_in_flight,
            should_fulfill=self._should_fulfill,
            tag=params.tag,
        )
        conn._on_closed = lambda c: self._forget(segment, c, remember=True)
        self._connections[segment] = conn
        self.connections_opened += 1
        if self._idle_timeout is not None:
            heapq.heappush(self._idle, (trio.current_time() + self._idle_timeout, segment))
            self._idle_changed.set()
        return conn

    def _closed_reply(self, secret: bytes, prepare: Prepare) -> Reject:
        """Answer a late packet of a closed connection: F99 with ``ConnectionClose``."""
        crypto = StreamCrypto(secret)
        try:
            packet = crypto.decrypt_packet(prepare.data)
        except DecodeError:
            return Reject(_F06, self.address, "")
        if packet.ilp_packet_type != PacketType.PREPARE:
            return Reject(_F06, self.address, "")
        reply = StreamPacket(
            packet.sequence,
            PacketType.REJECT,
            prepare.amount,
            (ConnectionClose(ErrorCode.NO_ERROR, "the connection is closed"),),
        )
        return Reject(_F99, self.address, "", crypto.encrypt_packet(reply))

    def _forget(self, segment: str, conn: Connection, *, remember: bool = False) -> None:
        if self._connections.get(segment) is conn:
            del self._connections[segment]
        if remember and self._closed_memory > 0:
            self._recently_closed[segment] = None
            while len(self._recently_closed) > self._closed_memory:
                self._recently_closed.popitem(last=False)

    # -- the application side --------------------------------------------------------------

    def connections(self) -> _ConnectionIterator:
        """New connections, as an async iterator (``async for conn in server.connections()``).

        Connections wait in a queue of at most ``backlog`` until taken.
        """
        if not self._announcing:
            raise RuntimeError("a server made with backlog=0 does not hand out connections")
        return _ConnectionIterator(self)

    def _wake_queue(self) -> None:
        self._queue_changed.set()
        self._queue_changed = trio.Event()

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the server's background work (idle reaping, the connections' senders) until
        cancelled. Use with ``await nursery.start(server.run)``."""
        if self._nursery is not None:
            raise RuntimeError("the server is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                with trio.CancelScope() as scope:
                    self._run_scope = scope
                    for conn in self._connections.values():
                        conn._nursery = nursery
                    nursery.start_soon(self._reap_idle)
                    task_status.started()
                    await trio.sleep_forever()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._run_scope = None
            for conn in self._connections.values():
                conn._nursery = None
            self._wake_queue()

    async def __aenter__(self) -> StreamServer:
        stack = AsyncExitStack()
        nursery = await stack.enter_async_context(trio.open_nursery())
        try:
            await nursery.start(self.run)
        except BaseException:
            await stack.aclose()
            raise
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack = self._exit_stack
        self._exit_stack = None
        if self._run_scope is not None:
            self._run_scope.cancel()
        if stack is not None:
            await stack.aclose()

    async def _reap_idle(self) -> None:
        heap = self._idle
        while True:
            if not heap:
                self._idle_changed = trio.Event()
                await self._idle_changed.wait()
                continue
            deadline, segment = heap[0]
            now = trio.current_time()
            if deadline > now:
                await trio.sleep_until(deadline)
                continue
            heapq.heappop(heap)
            conn = self._connections.get(segment)
            if conn is None:
                continue
            later = conn.core.idle_deadline
            if later is not None and later > now:
                heapq.heappush(heap, (later, segment))
                continue
            conn.core.expire_idle(now)
            conn._notify()


class _ConnectionIterator:
    """``async for conn in server.connections()``."""

    def __init__(self, server: StreamServer) -> None:
        self._server = server

    def __aiter__(self) -> _ConnectionIterator:
        return self

    async def __anext__(self) -> Connection:
        server = self._server
        await trio.lowlevel.checkpoint()
        while True:
            changed = server._queue_changed
            if server._queue:
                return server._queue.popleft()
            await changed.wait()
