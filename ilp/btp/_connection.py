"""The trio side of one authenticated BTP WebSocket, shared by the client and the server.

:class:`BtpConnection` owns a reader, a writer and a keepalive task in its own nursery, feeds the
sans-I/O :class:`~ilp.btp.session.BtpSession`, matches replies to waiting senders by request id,
and runs incoming Prepares through the handler with a bounded number in flight. All writes go
through one writer task fed by a bounded channel, so a cancelled sender never leaves half a frame
on the socket.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    WebSocketRequest,
    wrap_client_stream,
    wrap_server_stream,
)

from ..errors import ConnectError
from ..link import PrepareHandler, Reply
from ..packet import Fulfill, Prepare, Reject
from .session import (
    BtpSession,
    Dropped,
    PrepareReceived,
    ReplyReceived,
    local_reject,
)

_log = logging.getLogger("ilp.btp")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The wall clock, in UTC (the only place the BTP shells read it)."""
    return datetime.now(UTC)


def deadline_of(expires_at: datetime, now: datetime) -> float:
    """The trio deadline matching an ILP expiry, given the wall-clock time ``now``."""
    return trio.current_time() + (expires_at - now).total_seconds()


def describe_close(exc: ConnectionClosed) -> str:
    """Why a WebSocket closed, in words."""
    reason = exc.reason
    if reason is None:
        return "the connection closed"
    text = f": {reason.reason}" if reason.reason else ""
    return f"the WebSocket closed with code {reason.code} ({reason.name}){text}"


def describe_os_error(exc: BaseException) -> str:
    """A short reason for a failed TCP connection (``connection refused``, ...)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        err = todo.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        if isinstance(err, socket.gaierror):
            return "host not found"
        if isinstance(err, TimeoutError | trio.TooSlowError):
            return "timed out"
        if isinstance(err, BaseExceptionGroup):
            todo.extend(err.exceptions)
        if err.__cause__ is not None:
            todo.append(err.__cause__)
    return str(exc) or type(exc).__name__


# ----------------------------------------------------------------------------------------------
# WebSockets whose TCP stream we own
#
# trio-websocket's own helpers leave the TCP socket open when the peer drops it abruptly
# (``aclose`` returns early once the connection is marked closed) and wait for a handshake until
# their timeout when the peer closes during it. So we open (or accept) the stream ourselves, hand
# it to ``wrap_client_stream``/``wrap_server_stream``, watch their reader task to notice a handshake
# that can no longer finish, and always close the stream on the way out.


class _ReaderWatch:
    """Stands in for a nursery when trio-websocket starts its reader task: learns when it ends."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.done = trio.Event()
        self.rejected: ConnectionRejected | None = None

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        async def run() -> None:
            try:
                await fn(*args)
            except ConnectionRejected as exc:
                self.rejected = exc
            finally:
                self.done.set()

        self._nursery.start_soon(run)

    async def race(self, fn: Callable[[trio.Nursery], Awaitable[Any]]) -> Any:
        """``fn(self)`` unless the reader ends first (then None)."""
        result = None
        async with trio.open_nursery() as race:

            async def watch() -> None:
                await self.done.wait()
                race.cancel_scope.cancel()

            race.start_soon(watch)
            result = await fn(cast(trio.Nursery, self))
            race.cancel_scope.cancel()
        return result


async def _close_gracefully(ws: WebSocketConnection, timeout: float) -> None:
    # Not shielded: when we are cancelled from outside, the reader task that would complete the
    # closing handshake is cancelled too, so there is nothing to wait for.
    with trio.move_on_after(timeout):
        await ws.aclose()


@asynccontextmanager
async def client_websocket(
    ws_url: str,
    *,
    label: str,
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float,
    disconnect_timeout: float,
) -> AsyncIterator[WebSocketConnection]:
    """Connect to ``ws_url``; :class:`~ilp.errors.ConnectError` (naming ``label``) if it fails."""
    parts = urlsplit(ws_url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"

    def failed(why: str) -> ConnectError:
        return ConnectError(f"cannot reach the connector at {label} ({why})")

    stream: trio.abc.Stream
    try:
        with trio.fail_after(connect_timeout):
            if secure:
                stream = await trio.open_ssl_over_tcp_stream(
                    host,
                    port,
                    ssl_context=ssl_context or ssl.create_default_context(),
                    https_compatible=True,
                )
            else:
                stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as exc:
        raise failed(describe_os_error(exc)) from exc
    problem = ""
    try:
        async with trio.open_nursery() as nursery:
            watch = _ReaderWatch(nursery)
            ws: WebSocketConnection | None = None
            with trio.move_on_after(connect_timeout):
                ws = await watch.race(
                    lambda n: wrap_client_stream(n, stream, host_header, resource)
                )
            if ws is not None:
                try:
                    yield ws
                finally:
                    await _close_gracefully(ws, disconnect_timeout)
                    nursery.cancel_scope.cancel()
            else:
                nursery.cancel_scope.cancel()
                if watch.rejected is not None:
                    status = watch.rejected.status_code
                    problem = f"the WebSocket upgrade was refused with HTTP {status}"
                elif watch.done.is_set():
                    problem = "the connection closed during the WebSocket handshake"
                else:
                    problem = f"no WebSocket handshake within {connect_timeout:g} s"
    finally:
        await trio.aclose_forcefully(stream)
    if problem:
        # Raised here, outside the nursery, so that it is not wrapped in an ExceptionGroup.
        raise failed(problem)


@asynccontextmanager
async def server_websocket(
    stream: trio.abc.Stream, *, handshake_timeout: float, disconnect_timeout: float
) -> AsyncIterator[WebSocketConnection | None]:
    """Accept the WebSocket handshake on ``stream``; None if none came in time."""
    try:
        async with trio.open_nursery() as nursery:
            watch = _ReaderWatch(nursery)
            request: WebSocketRequest | None = None
            with trio.move_on_after(handshake_timeout):
                request = await watch.race(lambda n: wrap_server_stream(n, stream))
            if request is None:
                nursery.cancel_scope.cancel()
                yield None
                return
            ws = await request.accept()
            try:
                yield ws
            finally:
                await _close_gracefully(ws, disconnect_timeout)
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Reply | None = None

    def resolve(self, reply: Reply) -> None:
        if not self.event.is_set():
            self.reply = reply
            self.event.set()


class BtpConnection:
    """One open BTP session over one WebSocket; :meth:`run` serves it until the socket closes.

    ``label`` names the peer in messages (a redacted URL or a remote address). ``handler``
    answers the peer's Prepares (None: every one is rejected F02); ``limiter`` bounds how many
    run at once — past it, a Prepare is rejected T03 at once rather than stalling the reader.
    """

    def __init__(
        self,
        ws: WebSocketConnection,
        session: BtpSession,
        *,
        label: str,
        handler: PrepareHandler | None,
        limiter: trio.CapacityLimiter,
        ping_interval: float | None,
        ping_timeout: float,
        clock: Clock = utcnow,
        outbox_size: int = 64,
    ) -> None:
        self.ws = ws
        self.session = session
        self.label = label
        self.handler = handler
        self._limiter = limiter
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._clock = clock
        self._outbox, self._frames = trio.open_memory_channel[bytes](outbox_size)
        self._waiters: dict[int, _Waiter] = {}
        self.closed = trio.Event()
        self.close_reason = "the connection closed"
        self._cancel_scope = trio.CancelScope()

    # -- lifetime -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the connection until the WebSocket closes, the peer stops answering pings, or
        :meth:`abort` is called. Our Prepares still waiting then resolve to T01 Rejects."""
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    if self._ping_interval:
                        nursery.start_soon(self._keepalive, self._ping_interval)
                    task_status.started()
                    await self._reader(nursery)
                    nursery.cancel_scope.cancel()
        finally:
            self._lost()

    def abort(self, reason: str) -> None:
        """Stop serving (the caller then closes the WebSocket)."""
        if not self.closed.is_set():
            self.close_reason = reason
        self._cancel_scope.cancel()

    def _lost(self) -> None:
        self.session.connection_lost()
        waiters, self._waiters = self._waiters, {}
        message = (
            f"the BTP connection to {self.label} dropped before a reply came: {self.close_reason}"
        )
        for waiter in waiters.values():
            waiter.resolve(local_reject("T01", message, self.session.address))
        self.closed.set()

    # -- sending ------------------------------------------------------------------------------

    async def request(self, prepare: Prepare) -> Reply:
        """Send ``prepare`` and wait for its reply. Cancel-safe; the caller sets the deadline."""
        if self.closed.is_set() or not self.session.is_open:
            return self._unreachable()
        request_id, frame = self.session.send_prepare(prepare)
        waiter = _Waiter()
        self._waiters[request_id] = waiter
        try:
            await self._outbox.send(frame)
            await waiter.event.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return self._unreachable()
        finally:
            if not waiter.event.is_set():
                self._waiters.pop(request_id, None)
                self.session.abandon(request_id)
        assert waiter.reply is not None
        return waiter.reply

    def _unreachable(self) -> Reject:
        return local_reject(
            "T01",
            f"the BTP connection to {self.label} is closed: {self.close_reason}",
            self.session.address,
        )

    async def _queue(self, frame: bytes) -> None:
        # If the writer is gone with the socket, nothing can be sent any more.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._outbox.send(frame)

    # -- tasks ----------------------------------------------------------------------------------

    async def _writer(self) -> None:
        async with self._frames:
            async for frame in self._frames:
                try:
                    await self.ws.send_message(frame)
                except ConnectionClosed as exc:
                    self.close_reason = describe_close(exc)
                    self._cancel_scope.cancel()
                    return

    async def _keepalive(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(self._ping_timeout) as scope:
                try:
                    await self.ws.ping()
                except ConnectionClosed:
                    return
            if scope.cancelled_caught:
                self.abort(f"no answer to a WebSocket ping within {self._ping_timeout:g} s")
                return

    async def _reader(self, nursery: trio.Nursery) -> None:
        session = self.session
        while True:
            try:
                frame = await self.ws.get_message()
            except ConnectionClosed as exc:
                self.close_reason = describe_close(exc)
                return
            if isinstance(frame, str):
                _log.debug("BTP %s: ignored a text frame", self.label)
                continue
            received = session.receive_frame(frame, self._clock())
            if received.reply is not None:
                await self._queue(received.reply)
            event = received.event
            if isinstance(event, ReplyReceived):
                waiter = self._waiters.pop(event.request_id, None)
                if waiter is not None:
                    waiter.resolve(event.reply)
            elif isinstance(event, PrepareReceived):
                await self._dispatch(nursery, event)
            elif isinstance(event, Dropped):
                _log.debug("BTP %s: dropped a frame: %s", self.label, event.reason)
            elif event is not None:
                _log.debug("BTP %s: ignored %r", self.label, event)

    async def _dispatch(self, nursery: trio.Nursery, event: PrepareReceived) -> None:
        borrower = (self, event.request_id)
        try:
            self._limiter.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            reply = local_reject(
                "T03",
                f"too many Prepares in flight (limit {self._limiter.total_tokens})",
                self.session.address,
            )
            await self._queue(self.session.send_reply(event.request_id, reply))
            return
        nursery.start_soon(self._handle, event.request_id, event.prepare, borrower)

    async def _handle(self, request_id: int, prepare: Prepare, borrower: object) -> None:
        try:
            reply = await self._answer(prepare)
        finally:
            self._limiter.release_on_behalf_of(borrower)
        if self.session.is_open:
            await self._queue(self.session.send_reply(request_id, reply))

    async def _answer(self, prepare: Prepare) -> Reply:
        address = self.session.address
        handler = self.handler
        if handler is None:
            return local_reject("F02", "this BTP endpoint takes no incoming Prepares", address)
        with trio.move_on_at(deadline_of(prepare.expires_at, self._clock())):
            try:
                reply = await handler(prepare)
            except Exception:
                _log.exception("BTP %s: the Prepare handler raised", self.label)
                return local_reject("T00", "internal error while handling the Prepare", address)
            if not isinstance(reply, Fulfill | Reject):
                _log.error("BTP %s: the Prepare handler returned %r", self.label, type(reply))
                return local_reject("T00", "internal error while handling the Prepare", address)
            return reply
        return local_reject("R00", "the Prepare expired before it was answered", address)


async def send_until_expiry(conn: BtpConnection, prepare: Prepare, clock: Clock) -> Reply:
    """``conn.request`` bounded by the Prepare's expiry: an unanswered Prepare becomes R00."""
    with trio.move_on_at(deadline_of(prepare.expires_at, clock())):
        return await conn.request(prepare)
    return expired_reject(prepare, conn.session.address)


def expired_reject(prepare: Prepare, address: str) -> Reject:
    """The R00 Reject of a Prepare that got no reply before it expired."""
    return local_reject(
        "R00",
        f"no reply before the Prepare expired at {prepare.expires_at.isoformat()}",
        address,
    )
