"""STREAM connections and streams on trio: a thin shell over :class:`~ilp.stream.core.ConnectionCore`.

A :class:`Connection` is one end of a STREAM connection (made by
:func:`~ilp.stream.client.open_stream_connection` or handed out by
:class:`~ilp.stream.server.StreamServer`). Its streams are :class:`DataStream` objects, which are
:class:`trio.abc.HalfCloseableStream`\\ s carrying bytes *and* money::

    stream = conn.open_stream()
    await stream.send_all(b"hello")
    await stream.send_money(1000)
    reply = await stream.receive_some()
    await stream.aclose()

Nothing runs behind the caller's back: packets go out from tasks in a nursery the caller owns (the
client's ``async with``, or the server's). Sends are caller-driven: ``send_all`` returns once the
bytes are buffered (at most ``send_buffer`` per stream), ``send_money`` once the money is fulfilled.

Stream semantics (RFC 29 allows half-open streams; see docs/decisions.md):

* ``send_eof()`` sends ``StreamClose(NO_ERROR)`` after the buffered data: the peer reads EOF, and
  may still send to us until it closes too. ilp-protocol-stream peers take the close as a full
  close: after ``send_eof`` they stop sending, without a close of their own, so do not wait for
  their EOF after yours.
* ``aclose()`` closes both ways: unread data is dropped, later data from the peer is refused (it
  sees ``BrokenResourceError``); it waits until our close is delivered.
* a peer's ``StreamClose`` with an error, or a closed connection, makes the stream broken.
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import trio

from ..errors import IlpError, StreamError
from ..link import IlpLink, Reply
from ..packet import ErrorCode as IlpErrorCode
from ..packet import Prepare, Reject
from .core import (
    CloseReason,
    ConnectionCore,
    IncomingMoney,
    OutgoingPacket,
    ReplyKind,
    ReplyResult,
    StreamState,
)
from .packet import ErrorCode

__all__ = ["Connection", "DataStream", "ShouldFulfill"]

_log = logging.getLogger("ilp.stream")

ShouldFulfill = Callable[["Connection", "DataStream", int], Awaitable[bool]]
"""``await should_fulfill(connection, stream, amount)``: True to accept ``amount`` (receiver units)
on ``stream``, False to refuse the Prepare (F99). Called once per stream with money in a Prepare;
an exception refuses too (and is logged)."""

_DEFAULT_RECEIVE_SIZE = 65536
_RETRY_START = 0.1
_RETRY_MAX = 10.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Connection:
    """One end of a STREAM connection (client or server side). See the module documentation.

    Not made directly: use :func:`~ilp.stream.client.open_stream_connection`, or take one from
    :meth:`~ilp.stream.server.StreamServer.connections`.

    ``handle_prepare`` is the :data:`~ilp.link.PrepareHandler` for Prepares the peer sends to
    this connection; a server mounts it for you, a client mounts it on its link (or uses
    :class:`~ilp.stream.client.ConnectionRouter`).
    """

    def __init__(
        self,
        core: ConnectionCore,
        *,
        link: IlpLink | None,
        nursery: trio.Nursery | None,
        packet_timeout: float = 30.0,
        close_timeout: float = 5.0,
        max_in_flight: int = 1,
        should_fulfill: ShouldFulfill | None = None,
        tag: str | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._core = core
        self._link = link
        self._nursery = nursery
        self._packet_timeout = packet_timeout
        self._close_timeout = close_timeout
        self._max_in_flight = max_in_flight
        self._should_fulfill = should_fulfill
        self._clock = clock
        self.tag = tag
        """The tag given to :meth:`~ilp.stream.server.StreamServer.generate_credentials`."""
        self._changed = trio.Event()
        self._sending = False
        self._in_flight = 0
        self._backoff_until = 0.0
        self._retry_delay = _RETRY_START
        self._streams: dict[int, DataStream] = {}
        self._closed_event = trio.Event()
        self._on_closed: Callable[[Connection], None] | None = None
        self._announced = False  # handed to the application (server side)

    def __repr__(self) -> str:
        role = "server" if self._core.is_server else "client"
        state = "closed" if self._core.closed else "open"
        return f"<Connection {role} {state} to {self._core.remote_address or '?'}>"

    # -- properties ------------------------------------------------------------------------

    @property
    def core(self) -> ConnectionCore:
        """The sans-I/O state machine under this connection (read it; drive it through here)."""
        return self._core

    @property
    def is_server(self) -> bool:
        return self._core.is_server

    @property
    def source_address(self) -> str | None:
        """Our ILP address on this connection."""
        return self._core.local_address

    @property
    def destination(self) -> str | None:
        """The peer's ILP address (a server learns it from the client's first packet)."""
        return self._core.remote_address

    @property
    def asset_code(self) -> str | None:
        return self._core.asset_code

    @property
    def asset_scale(self) -> int | None:
        return self._core.asset_scale

    @property
    def remote_asset(self) -> tuple[str, int] | None:
        """The peer's ``(asset_code, asset_scale)``, once it said."""
        return self._core.remote_asset

    @property
    def total_sent(self) -> int:
        """Money we sent and got fulfilled, in our units."""
        return self._core.total_sent

    @property
    def total_delivered(self) -> int:
        """What the receiver reported for our fulfilled money, in its units."""
        return self._core.total_delivered

    @property
    def total_received(self) -> int:
        """Money we received (fulfilled), in our units."""
        return self._core.total_received

    @property
    def minimum_exchange_rate(self) -> Fraction | None:
        """Receiver units per sender unit every money packet must get at least (None: no minimum)."""
        return self._core.minimum_exchange_rate

    @minimum_exchange_rate.setter
    def minimum_exchange_rate(self, rate: Fraction | None) -> None:
        if rate is not None and rate < 0:
            raise ValueError("an exchange rate cannot be negative")
        self._core.minimum_exchange_rate = rate

    @property
    def max_packet_amount(self) -> int | None:
        """Largest source amount of one Prepare (lowered by F08 replies)."""
        return self._core.max_packet_amount

    @max_packet_amount.setter
    def max_packet_amount(self, amount: int | None) -> None:
        if amount is not None and amount < 1:
            raise ValueError("max_packet_amount must be at least 1")
        self._core.max_packet_amount = amount

    @property
    def closed(self) -> bool:
        return self._core.closed

    @property
    def close_reason(self) -> CloseReason | None:
        return self._core.close_reason

    # -- streams ---------------------------------------------------------------------------

    def open_stream(self) -> DataStream:
        """Open a new stream; the peer learns of it with the next packet.

        Raises :class:`~ilp.errors.StreamError` if the connection is closed or the peer's stream
        limit is reached.
        """
        stream_id = self._core.open_stream()
        stream = self._stream_obj(stream_id)
        self._notify()
        return stream

    def streams(self) -> _StreamIterator:
        """Streams the peer opens, as an async iterator (``async for stream in conn.streams()``).

        Ends when the connection closes.
        """
        return _StreamIterator(self)

    # -- money without streams (for payment engines) ---------------------------------------

    async def probe(self, amount: int) -> ReplyResult:
        """Send an unfulfillable Prepare of ``amount`` and return what came back.

        The receiver rejects it and says what arrived (:attr:`ReplyResult.delivered`); a
        connector on the way may answer F08 (the path's maximum packet amount) or another error.
        """
        if self._link is None:
            raise StreamError("this connection has no link to send on")
        packet = self._core.make_probe(amount, os.urandom(32), trio.current_time())
        return await self._send_packet(packet)

    # -- incoming --------------------------------------------------------------------------

    async def handle_prepare(self, prepare: Prepare) -> Reply:
        """Answer a Prepare the peer sent to this connection (a PrepareHandler)."""
        if self._should_fulfill is None:
            return self._handle_prepare_now(prepare)  # nothing to await
        core = self._core
        result = core.handle_prepare(prepare, trio.current_time())
        if isinstance(result, IncomingMoney):
            reply: Reply = await self._settle(result)
        else:
            reply = result
        self._notify()
        return reply

    def _handle_prepare_now(self, prepare: Prepare) -> Reply:
        """:meth:`handle_prepare` for a connection without a ``should_fulfill`` hook, which
        answers without awaiting anything: money is fulfilled at once."""
        core = self._core
        now = trio.current_time()
        result = core.handle_prepare(prepare, now)
        if isinstance(result, IncomingMoney):
            result = core.fulfill(result, now)
        self._notify()
        return result

    async def _settle(self, incoming: IncomingMoney) -> Reply:
        core = self._core
        accept = True
        hook = self._should_fulfill
        if hook is not None:
            try:
                for stream_id, amount in incoming.amounts.items():
                    if not await hook(self, self._stream_obj(stream_id), amount):
                        accept = False
                        break
            except trio.Cancelled:
                core.decline(incoming, trio.current_time())
                raise
            except Exception:
                _log.exception("should_fulfill raised: refusing the money")
                accept = False
        now = trio.current_time()
        return core.fulfill(incoming, now) if accept else core.decline(incoming, now)

    # -- closing ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection gracefully: deliver what is buffered (bounded by
        ``close_timeout``), close every stream, then send ``ConnectionClose``.

        Cancelled, it closes at once. Unread incoming data is dropped.
        """
        core = self._core
        try:
            await trio.lowlevel.checkpoint()
            if not core.closed:
                for stream_id in list(core.streams):
                    core.cancel_money(stream_id)
                    core.close_stream(stream_id)
                self._notify()
                with trio.move_on_after(self._close_timeout):
                    await self._wait_for(
                        lambda: core.closed or core.flushed() or not self._can_send()
                    )
                if not core.closed:
                    core.close(ErrorCode.NO_ERROR, "")
                self._notify()
            with trio.move_on_after(self._close_timeout):
                await self._wait_for(lambda: not self._can_send() or not self._busy())
        except BaseException:
            if not core.closed:
                core.close(ErrorCode.NO_ERROR, "closed abruptly")
            raise
        finally:
            self._after_close()

    async def _abort(self, message: str) -> None:
        """Close with APPLICATION_ERROR and try, briefly, to tell the peer (even if cancelled)."""
        core = self._core
        if not core.closed:
            core.close(ErrorCode.APPLICATION_ERROR, message)
        self._notify()
        with trio.move_on_after(min(self._close_timeout, 2.0)) as scope:
            scope.shield = True
            await self._wait_for(lambda: not self._can_send() or not self._busy())
        self._after_close()

    async def wait_closed(self) -> CloseReason:
        """Wait until the connection is closed (by either side) and return why."""
        await self._wait_for(lambda: self._core.closed)
        reason = self._core.close_reason
        assert reason is not None
        return reason

    # -- internals -------------------------------------------------------------------------

    def _stream_obj(self, stream_id: int) -> DataStream:
        stream = self._streams.get(stream_id)
        if stream is None:
            if len(self._streams) > 2 * len(self._core.streams) + 16:
                live = self._core.streams
                self._streams = {k: v for k, v in self._streams.items() if k in live}
            stream = DataStream(self, stream_id, self._core.stream(stream_id))
            self._streams[stream_id] = stream
        return stream

    def _notify(self) -> None:
        """Wake every waiter; start the sender if there may be something to send."""
        self._changed.set()
        self._changed = trio.Event()
        if self._core.closed:
            self._after_close()
        self._kick()

    async def _wait_for(self, condition: Callable[[], bool]) -> None:
        while True:
            changed = self._changed
            if condition():
                return
            await changed.wait()

    def _can_send(self) -> bool:
        return (
            self._link is not None
            and self._nursery is not None
            and self._core.remote_address is not None
        )

    def _busy(self) -> bool:
        return self._in_flight > 0 or self._core.wants_to_send()

    def _kick(self) -> None:
        if self._sending or not self._can_send() or not self._core.wants_to_send():
            return
        assert self._nursery is not None
        self._sending = True
        try:
            self._nursery.start_soon(self._send_loop)
        except RuntimeError:  # the nursery is closing
            self._sending = False
            self._nursery = None

    async def _send_loop(self) -> None:
        try:
            while self._nursery is not None:
                changed = self._changed
                now = trio.current_time()
                if now < self._backoff_until:
                    await trio.sleep_until(self._backoff_until)
                    continue
                while self._in_flight < self._max_in_flight:
                    packet = self._core.next_packet(now)
                    if packet is None:
                        break
                    self._in_flight += 1
                    self._nursery.start_soon(self._send_one, packet)
                if self._in_flight == 0:
                    return
                await changed.wait()
        finally:
            self._sending = False

    async def _send_one(self, packet: OutgoingPacket) -> None:
        try:
            await self._send_packet(packet)
        finally:
            self._in_flight -= 1
            self._notify()

    async def _send_packet(self, packet: OutgoingPacket) -> ReplyResult:
        core = self._core
        link = self._link
        destination = core.remote_address
        assert link is not None and destination is not None
        prepare = Prepare(
            packet.amount,
            self._clock() + timedelta(seconds=self._packet_timeout),
            packet.condition,
            destination,
            packet.data,
        )
        reply: Reply | None = None
        try:
            # The link answers by the expiry; the extra second only guards against one that hangs.
            with trio.move_on_after(self._packet_timeout + 1.0):
                reply = await link.send(prepare)
        except IlpError as exc:
            reply = Reject(IlpErrorCode("T01"), core.local_address or "", f"the link failed: {exc}")
        except BaseException:
            # Cancelled (or worse) while the Prepare was out: count it as not delivered.
            core.handle_reply(packet.sequence, self._expired(), trio.current_time())
            self._notify()
            raise
        if reply is None:
            reply = self._expired()
        result = core.handle_reply(packet.sequence, reply, trio.current_time())
        if result.kind is ReplyKind.TEMPORARY:
            self._backoff_until = trio.current_time() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        elif result.kind is ReplyKind.FULFILLED:
            self._retry_delay = _RETRY_START
        self._notify()
        return result

    def _expired(self) -> Reject:
        return Reject(
            IlpErrorCode("R00"), self._core.local_address or "", "no reply before the expiry"
        )

    def _after_close(self) -> None:
        if not self._core.closed or self._closed_event.is_set():
            return
        self._closed_event.set()
        callback = self._on_closed
        self._on_closed = None
        if callback is not None:
            callback(self)

    async def _watch_idle(self) -> None:
        """Close the connection when nothing arrives for ``idle_timeout`` (client side)."""
        core = self._core
        while not core.closed:
            deadline = core.idle_deadline
            if deadline is None:
                await self._closed_event.wait()
                return
            await trio.sleep_until(deadline)
            if core.expire_idle(trio.current_time()):
                self._notify()
                return


class _StreamIterator:
    """``async for stream in conn.streams()``."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __aiter__(self) -> _StreamIterator:
        return self

    async def __anext__(self) -> DataStream:
        conn = self._conn
        await trio.lowlevel.checkpoint()
        while True:
            changed = conn._changed
            stream_id = conn._core.accept_stream()
            if stream_id is not None:
                conn._notify()  # accepting may give the peer a stream slot back
                return conn._stream_obj(stream_id)
            if conn._core.closed:
                raise StopAsyncIteration
            await changed.wait()


class _MoneyIterator:
    """``async for amount in stream.money()``."""

    def __init__(self, stream: DataStream) -> None:
        self._stream = stream
        self._seen = 0

    def __aiter__(self) -> _MoneyIterator:
        return self

    async def __anext__(self) -> int:
        stream = self._stream
        conn = stream._conn
        state = stream._state
        await trio.lowlevel.checkpoint()
        while True:
            changed = conn._changed
            total = state.total_received
            if total > self._seen:
                amount = total - self._seen
                self._seen = total
                return amount
            if (state.remote_closed or state.read_closed) and state.incoming_held == 0:
                raise StopAsyncIteration
            await changed.wait()


class DataStream(trio.abc.HalfCloseableStream):
    """A stream of a STREAM connection: bytes both ways (a trio HalfCloseableStream) and money.

    Bytes: :meth:`send_all`, :meth:`receive_some`, :meth:`send_eof`, :meth:`aclose` as for any
    trio stream. Money: :meth:`send_money` to pay on this stream, :meth:`money` to watch what
    arrives, :meth:`set_receive_max` to allow more in.
    """

    def __init__(self, conn: Connection, stream_id: int, state: StreamState) -> None:
        self._conn = conn
        self.id = stream_id
        """The stream id (odd: opened by the client, even: by the server)."""
        self._state = state
        self._send_busy = False
        self._receive_busy = False
        self._closed = False
        self._eof_sent = False

    def __repr__(self) -> str:
        return f"<DataStream {self.id}>"

    # -- money -----------------------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        return self._conn

    @property
    def total_sent(self) -> int:
        """Money sent on this stream and fulfilled, in our units."""
        return self._state.total_sent

    @property
    def total_delivered(self) -> int:
        """What the receiver reported for this stream's money, in its units."""
        return self._state.total_delivered

    @property
    def total_received(self) -> int:
        """Money received on this stream, in our units."""
        return self._state.total_received

    @property
    def receive_max(self) -> int:
        """How much this stream accepts in all (2^64-1 by default)."""
        return self._state.receive_max

    @property
    def receipt(self) -> bytes | None:
        """The last STREAM receipt (RFC 39) the receiver sent for this stream, if any."""
        return self._state.receipt

    def set_receive_max(self, receive_max: int) -> None:
        """Set how much money this stream accepts in all (it cannot shrink once the peer was
        told, or below what arrived)."""
        self._conn._core.set_receive_max(self.id, receive_max)
        self._conn._notify()

    async def send_money(self, amount: int) -> None:
        """Send ``amount`` (our units) on this stream; return once it is all fulfilled.

        Packets carry the connection's ``minimum_exchange_rate`` (none if unset) and respect the
        receiver's limits and the path's maximum packet amount. Raises
        :class:`~ilp.errors.StreamError` if the money cannot be delivered (the message says how
        much was); cancelled, the rest of this stream's money is not sent (packets in flight
        still settle).
        """
        conn = self._conn
        core = conn._core
        state = self._state
        await trio.lowlevel.checkpoint()
        if amount < 0:
            raise ValueError("an amount cannot be negative")
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("this stream was closed for sending")
        if self.id not in core.streams:
            raise StreamError(state.broken_reason or f"stream {self.id} is closed")
        target = core.add_money(self.id, amount)
        conn._notify()
        try:
            await conn._wait_for(
                lambda: state.total_sent >= target or state.money_error is not None
            )
        except trio.Cancelled:
            core.cancel_money(self.id)
            conn._notify()
            raise
        if state.total_sent < target:
            raise StreamError(
                f"{state.money_error}; {state.total_sent} of {target} sent on stream {self.id}, "
                f"{state.total_delivered} delivered"
            )

    def money(self) -> _MoneyIterator:
        """Amounts received on this stream since it opened, as an async iterator (what arrived
        before the first step, and between two steps, comes added up). Ends when no more money
        can come."""
        return _MoneyIterator(self)

    # -- bytes -----------------------------------------------------------------------------

    def _check_send(self) -> None:
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("this stream was closed for sending")
        state = self._state
        if state.broken_reason is not None:
            raise trio.BrokenResourceError(state.broken_reason)
        if not state.can_send:
            reason = self._conn._core.close_reason
            raise trio.BrokenResourceError(
                f"the STREAM connection is {reason.describe()}"
                if reason is not None
                else f"stream {self.id} cannot send"
            )

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` for sending; waits while the send buffer is full."""
        if self._send_busy:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._send_busy = True
        try:
            await trio.lowlevel.checkpoint()
            conn = self._conn
            view = memoryview(data).cast("B")
            while True:
                changed = conn._changed
                self._check_send()
                if not view:
                    return
                taken = conn._core.write(self.id, view)
                if taken:
                    view = view[taken:]
                    conn._notify()
                    continue
                await changed.wait()
        finally:
            self._send_busy = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until there is room in the send buffer."""
        if self._send_busy:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._send_busy = True
        try:
            await trio.lowlevel.checkpoint()
            conn = self._conn
            while True:
                changed = conn._changed
                self._check_send()
                if conn._core.send_space(self.id) > 0:
                    return
                await changed.wait()
        finally:
            self._send_busy = False

    async def send_eof(self) -> None:
        """Close our direction: after the buffered data, the peer reads EOF. Reading goes on."""
        if self._send_busy:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("this stream is closed")
        if not self._eof_sent:
            self._eof_sent = True
            self._conn._core.shutdown_stream(self.id)
            self._conn._notify()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Bytes from the peer (at most ``max_bytes``); b"" once it closed its direction."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        if self._receive_busy:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receive_busy = True
        try:
            await trio.lowlevel.checkpoint()
            conn = self._conn
            core = conn._core
            state = self._state
            while True:
                changed = conn._changed
                if self._closed:
                    raise trio.ClosedResourceError("this stream is closed")
                if state.recv_buf and self.id in core.streams:
                    data = core.read(self.id, max_bytes or _DEFAULT_RECEIVE_SIZE)
                    conn._notify()
                    return data
                if state.remote_error is not None:
                    raise trio.BrokenResourceError(
                        f"stream {self.id}: {state.remote_error.describe()}"
                    )
                if state.remote_closed or self.id not in core.streams:
                    return b""
                await changed.wait()
        finally:
            self._receive_busy = False

    async def aclose(self) -> None:
        """Close the stream both ways: buffered data is still delivered, then ``StreamClose``.

        Waits for that (at most the connection's ``close_timeout``, then closes at once, as when
        cancelled). Unread incoming data is dropped.
        """
        conn = self._conn
        core = conn._core
        state = self._state
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            core.close_stream(self.id)
            conn._notify()
            await trio.lowlevel.checkpoint()
            if conn._can_send():
                with trio.move_on_after(conn._close_timeout):
                    await conn._wait_for(lambda: state.send_closed or core.closed)
                if not (state.send_closed or core.closed):
                    core.abort_stream(self.id, "the stream could not be closed in time")
                    conn._notify()
        except BaseException:
            core.abort_stream(self.id)
            conn._notify()
            raise
