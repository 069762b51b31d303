"""A BTP server on trio: accepts many clients, each authenticated by your code.

::

    async def on_client(request: BtpRequest) -> None:
        if request.token != SECRET:
            await request.refuse("unknown account or wrong token")
            return
        link = await request.accept(handler=my_prepare_handler)
        accounts[request.username] = link     # an IlpLink towards this client
        try:
            await link.wait_closed()
        finally:
            del accounts[request.username]

    port = await nursery.start(serve_btp, on_client)     # host 127.0.0.1, port 0 by default

``on_client`` runs once per client that sent a well-formed auth Message, for as long as it wants
the session: when it returns, the connection closes. It decides with :meth:`BtpRequest.accept`
(BTP Response; returns a :class:`BtpServerLink`, the link towards that client, and sets the
:data:`~ilp.link.PrepareHandler` for the client's Prepares) or :meth:`BtpRequest.refuse` (BTP
Error F00 NotAcceptedError, then close). Returning without deciding refuses. A client that sends
anything else first, or nothing within ``auth_timeout``, is answered F00 and disconnected without
calling ``on_client``. An exception from ``on_client`` propagates (as trio's ``serve_tcp`` does).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import NoReturn

import trio

from ..errors import IlpError
from ..link import PrepareHandler, Reply, ReplyCallback
from ..packet import Prepare
from ._connection import (
    BtpConnection,
    Clock,
    RandomPool,
    deadline_of,
    send_until_expiry,
    server_websocket,
    utcnow,
)
from ._websocket import WebSocket, WebSocketClosedError
from .session import AuthRequested, BtpSession, RemoteProtocolError

__all__ = ["BtpRequest", "BtpServerLink", "OnClient", "serve_btp"]

_log = logging.getLogger("ilp.btp.server")


class BtpServerLink:
    """The :class:`~ilp.link.IlpLink` towards one authenticated client.

    ``send`` never raises for ILP failures: after the client went away it returns T01 Rejects,
    and an unanswered Prepare turns into R00 at its expiry.
    """

    bounds_expiry = True
    """``send`` answers R00 by the expiry itself (see :class:`~ilp.link.IlpLink`)."""

    def __init__(self, conn: BtpConnection, request: BtpRequest, clock: Clock) -> None:
        self._conn = conn
        self.request = request
        self._clock = clock

    @property
    def username(self) -> str:
        return self.request.username

    @property
    def closed(self) -> bool:
        """True once the client's WebSocket is gone."""
        return self._conn.closed.is_set()

    @property
    def address(self) -> str:
        """Our ILP address, used as ``triggered_by`` of Rejects made here."""
        return self._conn.session.address

    @address.setter
    def address(self, value: str) -> None:
        self._conn.session.address = value

    async def send(self, prepare: Prepare) -> Reply:
        """Send ``prepare`` to the client; its Fulfill/Reject, or a locally made Reject."""
        return await send_until_expiry(self._conn, prepare, self._clock)

    def send_nowait(self, prepare: Prepare, on_reply: ReplyCallback) -> bool:
        """Send ``prepare`` without waiting; ``on_reply`` gets what :meth:`send` would return
        (see :class:`~ilp.link.IlpLink`). False, with nothing sent, if the client reads too
        slowly to take it now."""
        conn = self._conn
        return conn.request_nowait(
            prepare, deadline_of(prepare.expires_at, self._clock()), on_reply
        )

    async def wait_closed(self) -> None:
        """Return when the client's WebSocket is gone."""
        await self._conn.closed.wait()

    async def aclose(self) -> None:
        """Disconnect the client (the session handler keeps running until it returns)."""
        self._conn.abort("closed by the server")
        with trio.move_on_after(2) as scope:
            scope.shield = True
            await self._conn.ws.aclose()


class BtpRequest:
    """A client asking to authenticate: its credentials, and the decision to make.

    ``token`` is never part of ``repr`` or any message.
    """

    def __init__(
        self,
        ws: WebSocket,
        session: BtpSession,
        event: AuthRequested,
        nursery: trio.Nursery,
        options: _Options,
    ) -> None:
        self.username = event.username
        self.token = event.token
        self.path = ws.path or "/"
        self.remote = ws.remote
        self._ws = ws
        self._session = session
        self._nursery = nursery
        self._options = options
        self._decided = False
        self.link: BtpServerLink | None = None

    def __repr__(self) -> str:
        return f"BtpRequest(username={self.username!r}, remote={self.remote!r}, path={self.path!r})"

    async def accept(
        self, handler: PrepareHandler | None = None, *, address: str = ""
    ) -> BtpServerLink:
        """Accept the client: answer the auth request and start serving the connection.

        ``handler`` answers the client's Prepares (None rejects them F02); ``address`` is our
        ILP address for locally made Rejects (may be empty). Returns the link towards the client.
        """
        self._decide()
        options = self._options
        self._session.address = address
        conn = BtpConnection(
            self._ws,
            self._session,
            label=f"client {self.username or '(no username)'} at {self.remote}",
            handler=handler,
            max_handling=options.max_concurrent_prepares,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            clock=options.clock,
        )
        frame = self._session.accept_auth()
        # If the socket is already closed, the reader sees it at once and closes the link.
        with contextlib.suppress(WebSocketClosedError):
            await self._ws.send(frame)
        await self._nursery.start(conn.run)
        self.link = BtpServerLink(conn, self, options.clock)
        return self.link

    async def refuse(self, message: str = "invalid credentials") -> None:
        """Refuse the client: BTP Error F00 NotAcceptedError with ``message``, then close."""
        self._decide()
        frame = self._session.refuse_auth(message, self._options.clock())
        with trio.move_on_after(self._options.disconnect_timeout):
            try:
                await self._ws.send(frame)
                await self._ws.aclose(code=1008, reason="BTP authentication refused")
            except WebSocketClosedError:
                pass

    @property
    def decided(self) -> bool:
        return self._decided

    def _decide(self) -> None:
        if self._decided:
            raise IlpError("this BTP auth request was already accepted or refused")
        self._decided = True


OnClient = Callable[[BtpRequest], Awaitable[None]]
"""Runs once per client that asked to authenticate: accept or refuse, then serve."""


class _Options:
    __slots__ = (
        "auth_timeout",
        "clock",
        "disconnect_timeout",
        "max_concurrent_prepares",
        "ping_interval",
        "ping_timeout",
        "random",
    )

    def __init__(
        self,
        *,
        auth_timeout: float,
        disconnect_timeout: float,
        max_concurrent_prepares: int,
        ping_interval: float | None,
        ping_timeout: float,
        clock: Clock,
    ) -> None:
        self.auth_timeout = auth_timeout
        self.disconnect_timeout = disconnect_timeout
        self.max_concurrent_prepares = max_concurrent_prepares
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.clock = clock
        self.random = RandomPool()


async def serve_btp(
    on_client: OnClient,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    auth_timeout: float = 10.0,
    disconnect_timeout: float = 2.0,
    max_concurrent_prepares: int = 100,
    ping_interval: float | None = 20.0,
    ping_timeout: float = 10.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve BTP on ``host:port`` until cancelled; ``task_status.started(actual_port)``.

    Use as ``port = await nursery.start(serve_btp, on_client)``. ``max_concurrent_prepares``
    bounds each client's Prepares handled at once (past it they are rejected T03).
    """
    options = _Options(
        auth_timeout=auth_timeout,
        disconnect_timeout=disconnect_timeout,
        max_concurrent_prepares=max_concurrent_prepares,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        clock=utcnow,
    )
    listeners: list[trio.SocketListener] | list[trio.SSLListener[trio.SocketStream]]
    if ssl_context is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        sock = listeners[0].socket
    else:
        listeners = await trio.open_ssl_over_tcp_listeners(
            port, ssl_context, host=host, https_compatible=True
        )
        transport = listeners[0].transport_listener
        assert isinstance(transport, trio.SocketListener)
        sock = transport.socket
    actual_port: int = sock.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(
            trio.serve_listeners, partial(_serve_stream, on_client, options), listeners
        )
        task_status.started(actual_port)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _serve_stream(on_client: OnClient, options: _Options, stream: trio.abc.Stream) -> None:
    async with server_websocket(
        stream,
        handshake_timeout=options.auth_timeout,
        disconnect_timeout=options.disconnect_timeout,
    ) as ws:
        if ws is not None:
            await _serve_client(on_client, options, ws)


async def _serve_client(on_client: OnClient, options: _Options, ws: WebSocket) -> None:
    session = BtpSession.server(options.random)
    event = None
    with trio.move_on_after(options.auth_timeout):
        while event is None:
            try:
                frame = await ws.receive()
            except WebSocketClosedError:
                return
            if isinstance(frame, str):
                continue  # as interledger-rs: skip non-binary frames before the auth packet
            try:
                event = session.receive_frame(frame, options.clock()).event
            except RemoteProtocolError as exc:
                _log.info("BTP client at %s: %s", ws.remote, exc)
                await _close_with(ws, exc.reply, options)
                return
    if not isinstance(event, AuthRequested):
        _log.info("BTP client at %s: no auth within %g s", ws.remote, options.auth_timeout)
        await _close_with(ws, None, options)
        return
    async with trio.open_nursery() as nursery:
        request = BtpRequest(ws, session, event, nursery, options)
        await on_client(request)
        if not request.decided:
            await request.refuse("the server did not accept the connection")
        nursery.cancel_scope.cancel()


async def _close_with(ws: WebSocket, frame: bytes | None, options: _Options) -> None:
    with trio.move_on_after(options.disconnect_timeout):
        try:
            if frame is not None:
                await ws.send(frame)
            await ws.aclose(code=1008, reason="BTP authentication failed")
        except WebSocketClosedError:
            pass
