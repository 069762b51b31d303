"""The trio side of one authenticated BTP WebSocket, shared by the client and the server.

:class:`BtpConnection` feeds the sans-I/O :class:`~ilp.btp.session.BtpSession` with each message
the WebSocket's reader hands it (synchronously, in that task), wakes the sender waiting for a
reply by its request id, and runs incoming Prepares through the handler in a pool of worker
tasks, a bounded number at once. Frames go out through the :class:`~ilp.btp._websocket.WebSocket`,
which never leaves half a frame on the socket when a sender is cancelled.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit

import trio

from ..errors import ConnectError
from ..link import PrepareHandler, Reply, ReplyCallback
from ..packet import Fulfill, Prepare, Reject
from ._websocket import (
    CloseReason,
    HandshakeError,
    WebSocket,
    WebSocketClosedError,
    accept_websocket,
    connect_websocket,
)
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


class RandomPool:
    """``random_bytes(n)`` served from ``source`` a few KiB at a time (one system call for
    many request ids instead of one each)."""

    __slots__ = ("_buffer", "_pos", "_source")

    def __init__(self, source: Callable[[int], bytes] = os.urandom) -> None:
        self._source = source
        self._buffer = b""
        self._pos = 0

    def __call__(self, n: int) -> bytes:
        pos = self._pos
        if pos + n > len(self._buffer):
            self._buffer = self._source(max(4096, n))
            pos = 0
        self._pos = pos + n
        return self._buffer[pos : pos + n]


def describe_reason(reason: CloseReason | None) -> str:
    """Why a WebSocket closed, in words."""
    if reason is None:
        return "the connection closed"
    text = f": {reason.reason}" if reason.reason else ""
    return f"the WebSocket closed with code {reason.code} ({reason.name}){text}"


def describe_close(exc: WebSocketClosedError) -> str:
    """Why a WebSocket closed, in words."""
    return describe_reason(exc.reason)


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
# WebSockets whose TCP stream we own: the stream is always closed on the way out, and a close
# handshake (bounded by ``disconnect_timeout``) comes first when the WebSocket opened.


async def _close_gracefully(ws: WebSocket, timeout: float) -> None:
    # Not shielded: when we are cancelled from outside, the close frame still goes out if the
    # socket takes it at once, and the stream is closed either way.
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
) -> AsyncIterator[WebSocket]:
    """Connect to ``ws_url``; :class:`~ilp.errors.ConnectError` (naming ``label``) if it fails."""
    parts = urlsplit(ws_url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"

    def failed(why: str) -> ConnectError:
        return ConnectError(f"cannot reach the connector at {label} ({why})", why)

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
        ws: WebSocket | None = None
        with trio.move_on_after(connect_timeout):
            try:
                ws = await connect_websocket(stream, host_header, resource)
            except HandshakeError as exc:
                if exc.status_code is not None:
                    problem = f"the WebSocket upgrade was refused with HTTP {exc.status_code}"
                elif exc.closed:
                    problem = "the connection closed during the WebSocket handshake"
                else:
                    problem = f"invalid WebSocket handshake: {exc}"
        if ws is not None:
            async with trio.open_nursery() as nursery:
                ws.start(nursery)
                try:
                    yield ws
                finally:
                    await _close_gracefully(ws, disconnect_timeout)
                    nursery.cancel_scope.cancel()
        elif not problem:
            problem = f"no WebSocket handshake within {connect_timeout:g} s"
    finally:
        await trio.aclose_forcefully(stream)
    if problem:
        # Raised here, outside the nursery, so that it is not wrapped in an ExceptionGroup.
        raise failed(problem)


@asynccontextmanager
async def server_websocket(
    stream: trio.abc.Stream, *, handshake_timeout: float, disconnect_timeout: float
) -> AsyncIterator[WebSocket | None]:
    """Accept the WebSocket handshake on ``stream``; None if none came in time."""
    try:
        ws: WebSocket | None = None
        with trio.move_on_after(handshake_timeout):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                ws = await accept_websocket(stream)
        if ws is None:
            yield None
            return
        async with trio.open_nursery() as nursery:
            ws.start(nursery)
            try:
                yield ws
            finally:
                await _close_gracefully(ws, disconnect_timeout)
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


class _Waiter:
    """A sender parked until the reply to its Prepare, its expiry or the end of the connection."""

    __slots__ = ("done", "expires_at", "reply", "request_id", "task")

    def __init__(self, task: trio.lowlevel.Task, request_id: int, expires_at: datetime) -> None:
        self.task = task
        self.request_id = request_id
        self.expires_at = expires_at
        self.reply: Reply | None = None
        self.done = False

    def resolve(self, reply: Reply) -> None:
        self.done = True
        self.reply = reply
        trio.lowlevel.reschedule(self.task)


class _CallbackWaiter(_Waiter):
    """A Prepare sent by :meth:`BtpConnection.request_nowait`: its reply goes to a callback,
    run in the task that resolves it (the reader, the timer, or the connection's end)."""

    __slots__ = ("callback",)

    def __init__(self, callback: ReplyCallback, request_id: int, expires_at: datetime) -> None:
        self.callback = callback
        self.request_id = request_id
        self.expires_at = expires_at
        self.reply = None
        self.done = False

    def resolve(self, reply: Reply) -> None:
        self.done = True
        self.reply = reply
        try:
            self.callback(reply)
        except Exception:
            # The callback runs in one of the connection's own tasks: it must not take them down.
            _log.exception("BTP: a reply callback raised")


class _Answer:
    """The ``respond`` callable given to a handler's ``handle_nowait``: sends the reply to the
    peer's Prepare ``request_id`` once (later calls are ignored)."""

    __slots__ = ("conn", "done", "request_id")

    def __init__(self, conn: BtpConnection, request_id: int) -> None:
        self.conn = conn
        self.request_id = request_id
        self.done = False

    def __call__(self, reply: Reply) -> None:
        if self.done:
            return
        self.done = True
        conn = self.conn
        if type(reply) is not Fulfill and type(reply) is not Reject:
            _log.error("BTP %s: handle_nowait answered %r", conn.label, type(reply))
            reply = _internal_error(conn.session.address)
        conn._answered(self.request_id, reply)


_QUEUED, _RUNNING, _DONE, _EXPIRED = range(4)
_MAX_IDLE_WORKERS = 64


class _Job:
    """An incoming Prepare for the workers, and the cancel scope of the worker running it."""

    __slots__ = ("prepare", "request_id", "scope", "state")

    def __init__(self, request_id: int, prepare: Prepare) -> None:
        self.request_id = request_id
        self.prepare = prepare
        self.state = _QUEUED
        self.scope: trio.CancelScope | None = None

    @property
    def done(self) -> bool:
        return self.state == _DONE


def _ignore(message: bytes | str) -> None:
    """Messages that arrive after the BTP connection ended."""


class BtpConnection:
    """One open BTP session over one WebSocket; :meth:`run` serves it until the socket closes.

    ``label`` names the peer in messages (a redacted URL or a remote address). ``handler``
    answers the peer's Prepares (None: every one is rejected F02); at most ``max_handling`` run
    at once — past it, a Prepare is rejected T03 at once rather than stalling the reader.

    Expiries (of our Prepares waiting for replies, of the peer's being handled) are kept in one
    heap watched by one timer task, rather than a cancel scope each: entering and leaving a
    scope with a deadline costs several times the rest of a round trip's bookkeeping.
    """

    def __init__(
        self,
        ws: WebSocket,
        session: BtpSession,
        *,
        label: str,
        handler: PrepareHandler | None,
        max_handling: int,
        ping_interval: float | None,
        ping_timeout: float,
        clock: Clock = utcnow,
    ) -> None:
        self.ws = ws
        self.session = session
        self.label = label
        self.handler = handler
        self._max_handling = max_handling
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._clock = clock
        session.clock = clock  # for the triggered_at of BTP Errors it sends
        self._waiters: dict[int, _Waiter] = {}
        self._jobs: deque[_Job] = deque()
        self._idle: list[trio.lowlevel.Task] = []  # workers waiting for a job
        self._handling = 0  # Prepares taken and not answered yet
        self._waking = 0  # workers woken or started that have not looked at the queue yet
        # A handler's handle_nowait is running in the reader: its answer goes to the writer,
        # which sends all the answers to the Prepares of one read in one write.
        self._inline = False
        self._nursery: trio.Nursery | None = None
        # Expiries: (trio deadline, sequence number, waiter or job); finished ones leave lazily.
        self._expiries: list[tuple[float, int, _Waiter | _Job]] = []
        self._sequence = 0
        self._timer_at = math.inf
        self._timer_scope: trio.CancelScope | None = None
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
                    self._nursery = nursery
                    try:
                        nursery.start_soon(self._timer)
                        if self._ping_interval:
                            nursery.start_soon(self._keepalive, self._ping_interval)
                        self.ws.set_handler(self._on_message)
                        task_status.started()
                        await self.ws.wait_closed()
                        self.close_reason = describe_reason(self.ws.close_reason)
                    finally:
                        self._nursery = None
                    nursery.cancel_scope.cancel()
        finally:
            self._lost()

    def abort(self, reason: str) -> None:
        """Stop serving (the caller then closes the WebSocket)."""
        if not self.closed.is_set():
            self.close_reason = reason
        self._cancel_scope.cancel()

    def _lost(self) -> None:
        self.ws.set_handler(_ignore)
        self.session.connection_lost()
        waiters, self._waiters = self._waiters, {}
        self._expiries = []
        message = (
            f"the BTP connection to {self.label} dropped before a reply came: {self.close_reason}"
        )
        for waiter in waiters.values():
            waiter.resolve(local_reject("T01", message, self.session.address))
        self.closed.set()

    # -- expiries -----------------------------------------------------------------------------

    def _expire_at(self, deadline: float, item: _Waiter | _Job) -> None:
        expiries = self._expiries
        heapq.heappush(expiries, (deadline, self._sequence, item))
        self._sequence += 1
        if deadline < self._timer_at:
            self._timer_at = deadline
            if self._timer_scope is not None:
                self._timer_scope.deadline = deadline
        if len(expiries) > 64 + 4 * (len(self._waiters) + self._handling):
            # Finished items behind one that waits long: drop them all at once.
            self._expiries = [entry for entry in expiries if not entry[2].done]
            heapq.heapify(self._expiries)

    def _prune(self) -> None:
        """Drop finished items from the front of the heap (so the timer need not wake)."""
        expiries = self._expiries
        while expiries and expiries[0][2].done:
            heapq.heappop(expiries)

    async def _timer(self) -> None:
        while True:
            with trio.CancelScope(deadline=self._timer_at) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            now = trio.current_time()
            expiries = self._expiries
            while expiries and expiries[0][0] <= now:
                item = heapq.heappop(expiries)[2]
                if isinstance(item, _Waiter):
                    if not item.done and self._waiters.get(item.request_id) is item:
                        del self._waiters[item.request_id]
                        self.session.abandon(item.request_id)
                        item.resolve(expired_reject(item.expires_at, self.session.address))
                elif item.state == _QUEUED:
                    item.state = _EXPIRED
                elif item.state == _RUNNING:
                    item.state = _EXPIRED
                    assert item.scope is not None
                    item.scope.cancel()
            self._timer_at = expiries[0][0] if expiries else math.inf

    # -- sending ------------------------------------------------------------------------------

    async def request(self, prepare: Prepare, deadline: float) -> Reply:
        """Send ``prepare`` and wait for its reply until ``deadline`` (trio time; then R00).

        Cancel-safe.
        """
        if self.closed.is_set() or not self.session.is_open:
            return self._unreachable()
        if deadline <= trio.current_time():
            return expired_reject(prepare.expires_at, self.session.address)
        ws = self.ws
        if ws.congested:
            # The peer reads slower than we write: wait for room, until the expiry at most.
            with trio.move_on_at(deadline):
                try:
                    await ws.wait_for_room()
                except WebSocketClosedError:
                    return self._unreachable()
            if ws.congested:
                return expired_reject(prepare.expires_at, self.session.address)
            if self.closed.is_set() or not self.session.is_open:
                return self._unreachable()
        request_id = self._transmit(prepare)
        if request_id is None:
            return self._unreachable()
        waiter = _Waiter(trio.lowlevel.current_task(), request_id, prepare.expires_at)
        waiters = self._waiters
        waiters[request_id] = waiter
        self._expire_at(deadline, waiter)
        session = self.session

        def abort(_: object) -> trio.lowlevel.Abort:
            waiter.done = True
            if waiters.get(request_id) is waiter:
                del waiters[request_id]
            session.abandon(request_id)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        assert waiter.reply is not None
        return waiter.reply

    def request_nowait(self, prepare: Prepare, deadline: float, on_reply: ReplyCallback) -> bool:
        """Send ``prepare`` without waiting: ``on_reply`` gets its reply exactly once, from the
        task that has it (the reader; the timer with an R00 at ``deadline``; the connection's end
        with a T01), or at once when the connection is closed or the deadline has passed.

        Returns False, having sent nothing, when the peer reads too slowly to take the frame
        now (then :meth:`request` waits for room). ``on_reply`` must not block; what it raises
        is logged.
        """
        if self.closed.is_set() or not self.session.is_open:
            on_reply(self._unreachable())
            return True
        if deadline <= trio.current_time():
            on_reply(expired_reject(prepare.expires_at, self.session.address))
            return True
        if self.ws.congested:
            return False
        request_id = self._transmit(prepare)
        if request_id is None:
            on_reply(self._unreachable())
            return True
        waiter = _CallbackWaiter(on_reply, request_id, prepare.expires_at)
        self._waiters[request_id] = waiter
        self._expire_at(deadline, waiter)
        return True

    def _transmit(self, prepare: Prepare) -> int | None:
        """Write ``prepare`` to the peer: its request id, or None if the WebSocket is closed."""
        session = self.session
        request_id, frame = session.send_prepare(prepare)
        try:
            # Alone in flight: write at once; otherwise let the writer batch the frames.
            self.ws.send_nowait(frame, direct=not self._waiters)
        except WebSocketClosedError:
            session.abandon(request_id)
            return None
        return request_id

    def _unreachable(self) -> Reject:
        return local_reject(
            "T01",
            f"the BTP connection to {self.label} is closed: {self.close_reason}",
            self.session.address,
        )

    def _send(self, frame: bytes, *, direct: bool) -> None:
        # If the WebSocket is closing, nothing can be sent any more.
        with contextlib.suppress(WebSocketClosedError):
            self.ws.send_nowait(frame, direct=direct)

    # -- receiving ------------------------------------------------------------------------------

    def _on_message(self, frame: bytes | str) -> None:
        """Each message from the peer, in the WebSocket's reader task."""
        if type(frame) is str:
            _log.debug("BTP %s: ignored a text frame", self.label)
            return
        assert isinstance(frame, bytes)
        received = self.session.receive_frame(frame)
        if received.reply is not None:
            self._send(received.reply, direct=not self._handling)
        event = received.event
        if type(event) is ReplyReceived:
            waiter = self._waiters.pop(event.request_id, None)
            if waiter is not None:
                waiter.resolve(event.reply)
                self._prune()
        elif type(event) is PrepareReceived:
            self._dispatch(event)
        elif isinstance(event, Dropped):
            _log.debug("BTP %s: dropped a frame: %s", self.label, event.reason)
        elif event is not None:
            _log.debug("BTP %s: ignored %r", self.label, event)

    def _dispatch(self, event: PrepareReceived) -> None:
        nursery = self._nursery
        if nursery is None:
            return  # the connection is going down: so is this Prepare
        if self._handling >= self._max_handling:
            reply = local_reject(
                "T03",
                f"too many Prepares in flight (limit {self._max_handling})",
                self.session.address,
            )
            self._send(self.session.send_reply(event.request_id, reply), direct=False)
            return
        self._handling += 1
        handle_nowait = getattr(self.handler, "handle_nowait", None)
        if handle_nowait is not None:
            answer = _Answer(self, event.request_id)
            self._inline = True
            try:
                taken = handle_nowait(event.prepare, answer)
            except Exception:
                _log.exception("BTP %s: the Prepare handler raised", self.label)
                answer(_internal_error(self.session.address))
                return
            finally:
                self._inline = False
            if taken or answer.done:
                return
        job = _Job(event.request_id, event.prepare)
        self._jobs.append(job)
        self._expire_at(deadline_of(event.prepare.expires_at, self._clock()), job)
        if not self._waking:
            self._wake_worker(nursery)

    def _wake_worker(self, nursery: trio.Nursery) -> None:
        self._waking += 1
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop())
        else:
            nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        """Answers queued Prepares, then waits for more (until the connection ends).

        A worker that takes a Prepare while more wait wakes one other worker first (unless one
        is already on its way), so a handler that blocks holds up no other Prepare, and
        handlers that return at once are run one after the other without a task switch each.

        Its cancel scope serves many Prepares: the timer cancels it when the one running
        expires, and the next Prepare gets a new one.
        """
        jobs = self._jobs
        self._waking -= 1
        while True:
            job: _Job | None = None
            with trio.CancelScope() as scope:
                while not scope.cancel_called:
                    if not jobs:
                        if len(self._idle) >= _MAX_IDLE_WORKERS:
                            return
                        await self._idle_wait()
                        self._waking -= 1
                        continue
                    job = jobs.popleft()
                    if jobs and not self._waking and self._nursery is not None:
                        self._wake_worker(self._nursery)
                    if job.state == _QUEUED:
                        job.state = _RUNNING
                        job.scope = scope
                        reply = await self._answer(job.prepare)
                    else:
                        reply = self._expired_in_handler()
                    self._finish(job, reply)
                    job = None
            if job is not None:
                self._finish(job, self._expired_in_handler())

    async def _idle_wait(self) -> None:
        task = trio.lowlevel.current_task()
        idle = self._idle
        idle.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _finish(self, job: _Job, reply: Reply) -> None:
        job.state = _DONE
        self._prune()
        self._answered(job.request_id, reply)

    def _answered(self, request_id: int, reply: Reply) -> None:
        """Send the reply to the peer's Prepare ``request_id`` (if the session is still open)."""
        self._handling -= 1
        if self.session.is_open:
            direct = not (self._handling or self._inline)
            self._send(self.session.send_reply(request_id, reply), direct=direct)

    def _expired_in_handler(self) -> Reject:
        return local_reject(
            "R00", "the Prepare expired before it was answered", self.session.address
        )

    async def _answer(self, prepare: Prepare) -> Reply:
        address = self.session.address
        handler = self.handler
        if handler is None:
            return local_reject("F02", "this BTP endpoint takes no incoming Prepares", address)
        try:
            reply = await handler(prepare)
        except Exception:
            _log.exception("BTP %s: the Prepare handler raised", self.label)
            return _internal_error(address)
        if not isinstance(reply, Fulfill | Reject):
            _log.error("BTP %s: the Prepare handler returned %r", self.label, type(reply))
            return _internal_error(address)
        return reply

    async def _keepalive(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(self._ping_timeout) as scope:
                try:
                    await self.ws.ping()
                except WebSocketClosedError:
                    return
            if scope.cancelled_caught:
                self.abort(f"no answer to a WebSocket ping within {self._ping_timeout:g} s")
                return


async def send_until_expiry(conn: BtpConnection, prepare: Prepare, clock: Clock) -> Reply:
    """``conn.request`` bounded by the Prepare's expiry: an unanswered Prepare becomes R00."""
    return await conn.request(prepare, deadline_of(prepare.expires_at, clock()))


def _internal_error(address: str) -> Reject:
    return local_reject("T00", "internal error while handling the Prepare", address)


def expired_reject(expires_at: datetime, address: str) -> Reject:
    """The R00 Reject of a Prepare (expiring at ``expires_at``) that got no reply in time."""
    return local_reject(
        "R00", f"no reply before the Prepare expired at {expires_at.isoformat()}", address
    )
