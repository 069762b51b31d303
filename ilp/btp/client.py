"""A BTP client on trio: an :class:`~ilp.link.IlpLink` to a connector over a WebSocket.

::

    async with open_btp_client("btp+ws://alice:secret@127.0.0.1:7768") as link:
        reply = await link.send(prepare)

The client authenticates, then carries many Prepares at once, matched by request id. Each
``send`` is bounded by the Prepare's expiry: no reply in time gives a locally made R00 Reject.
Incoming Prepares go to ``handler`` (a :data:`~ilp.link.PrepareHandler`), at most
``max_concurrent_prepares`` at once; a handler that raises answers T00 and the connection lives on.

When the socket drops, Prepares waiting on it resolve to T01 Rejects, and the client reconnects
with capped exponential backoff; new sends wait for the reconnection as long as their expiry
allows (then T01). WebSocket pings detect a peer that stopped answering. If the connector refuses
the credentials the client stops: :class:`~ilp.errors.AuthError`, never a reconnect loop.

``open_btp_client`` owns its tasks in its own nursery; ``connect_btp(nursery, url)`` runs them in
the caller's nursery instead (close with :meth:`BtpClient.aclose`). A node dialing its peers uses
``BtpClient(url, persistent=True)`` with ``await nursery.start(client.run)``: it reports at once
and keeps dialing, also after a refusal (retried at the longest backoff).
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ..errors import AuthError, ConnectError, TransportError
from ..link import PrepareHandler, Reply, ReplyCallback
from ..packet import Prepare, Reject
from ._connection import (
    BtpConnection,
    Clock,
    RandomPool,
    client_websocket,
    deadline_of,
    describe_close,
    expired_reject,
    utcnow,
)
from ._websocket import WebSocket, WebSocketClosedError
from .session import Authenticated, AuthRefused, BtpSession, local_reject
from .url import BtpUrl, parse_btp_url

__all__ = ["BtpClient", "connect_btp", "open_btp_client"]

_log = logging.getLogger("ilp.btp.client")


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` as a word of its own replaced by ``***``
    (a connector may echo the token it refused). Not inside other words: a token ``t`` must
    not turn "wrong token" into "wrong ***oken"."""
    if not secret:
        return text
    return re.sub(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", "***", text)


@dataclass(frozen=True, slots=True)
class _Ended:
    """How one connection attempt ended."""

    ready: bool  # it authenticated (so it counts as a connection, not a failed attempt)
    error: TransportError


class _Dispatch:
    """The connection's handler: the client's :attr:`BtpClient.handler` as it is now (it may be
    set after connecting), with its ``handle_nowait`` where it has one."""

    __slots__ = ("client",)

    def __init__(self, client: BtpClient) -> None:
        self.client = client

    async def __call__(self, prepare: Prepare) -> Reply:
        client = self.client
        handler = client.handler
        if handler is None:
            return client._reject("F02", "this BTP client takes no incoming Prepares")
        return await handler(prepare)

    def handle_nowait(self, prepare: Prepare, respond: ReplyCallback) -> bool:
        handle_nowait = getattr(self.client.handler, "handle_nowait", None)
        return handle_nowait is not None and bool(handle_nowait(prepare, respond))


class BtpClient:
    """An :class:`~ilp.link.IlpLink` over BTP. Made by :func:`open_btp_client` or
    :func:`connect_btp`; see the module documentation for its behaviour.

    ``address`` is our ILP address if known (e.g. after ILDCP); it only goes into the
    ``triggered_by`` of Rejects made locally, and may stay empty.
    """

    bounds_expiry = True
    """``send`` answers R00 by the expiry itself (see :class:`~ilp.link.IlpLink`)."""

    def __init__(
        self,
        url: BtpUrl,
        *,
        handler: PrepareHandler | None = None,
        address: str = "",
        max_concurrent_prepares: int = 100,
        connect_timeout: float = 10.0,
        disconnect_timeout: float = 2.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 10.0,
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
        ssl_context: ssl.SSLContext | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        clock: Clock = utcnow,
        persistent: bool = False,
    ) -> None:
        self._url = url
        self._persistent = persistent
        self.handler = handler
        self._address = address
        self._max_concurrent = max_concurrent_prepares
        self._connect_timeout = connect_timeout
        self._disconnect_timeout = disconnect_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._backoff = reconnect_backoff
        self._ssl_context = ssl_context
        self._random = RandomPool() if random_bytes is os.urandom else random_bytes
        self._clock = clock
        self._conn: BtpConnection | None = None
        self._changed = trio.Event()
        self._cancel_scope = trio.CancelScope()
        self._done = trio.Event()
        self._stopped: str | None = None  # why the client no longer connects, once it stopped
        self._last_error = "not connected yet"
        self.connections = 0
        """How many times the client has authenticated (1 after the first connect)."""
        self.fatal_error: TransportError | None = None
        """The error that stopped the client (a refused token on reconnection), if any."""

    # -- public -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The WebSocket URL of the connector, without credentials."""
        return self._url.redacted()

    @property
    def address(self) -> str:
        return self._address

    @address.setter
    def address(self, value: str) -> None:
        self._address = value
        if self._conn is not None:
            self._conn.session.address = value

    @property
    def connected(self) -> bool:
        """True while an authenticated WebSocket is up."""
        return self._conn is not None and not self._conn.closed.is_set()

    async def wait_connected(self) -> None:
        """Return once an authenticated WebSocket is up (at once if it is)."""
        while not self.connected:
            if self._stopped is not None:
                raise self.fatal_error or TransportError(self._stopped)
            await self._changed.wait()

    async def send(self, prepare: Prepare) -> Reply:
        """Send ``prepare`` and return the Fulfill or Reject; never raises for ILP failures.

        Waits for a reconnection if the socket is down, as long as the expiry allows.
        """
        deadline = deadline_of(prepare.expires_at, self._clock())
        conn = self._conn
        if conn is not None and not conn.closed.is_set():
            return await conn.request(prepare, deadline)
        sent = False
        with trio.move_on_at(deadline):
            while True:
                conn = self._conn
                if conn is not None and not conn.closed.is_set():
                    sent = True
                    return await conn.request(prepare, deadline)
                if self._stopped is not None:
                    return self._reject("T01", self._stopped)
                await self._changed.wait()
        if sent:
            return expired_reject(prepare.expires_at, self._address)
        return self._reject(
            "T01",
            f"not connected to the connector at {self.url} before the Prepare expired "
            f"({self._last_error})",
        )

    def send_nowait(self, prepare: Prepare, on_reply: ReplyCallback) -> bool:
        """Send ``prepare`` without waiting; ``on_reply`` gets what :meth:`send` would return
        (see :class:`~ilp.link.IlpLink`). False, with nothing sent, while the socket is down
        (:meth:`send` waits for a reconnection) or the connector reads too slowly to take it."""
        conn = self._conn
        if conn is None or conn.closed.is_set():
            return False
        return conn.request_nowait(
            prepare, deadline_of(prepare.expires_at, self._clock()), on_reply
        )

    async def aclose(self) -> None:
        """Close the WebSocket and stop the client's tasks; pending sends resolve to T01.

        The WebSocket gets a closing handshake (bounded by ``disconnect_timeout``).
        """
        if self._stopped is None:
            self._stop("the BTP client was closed")
        conn = self._conn
        if conn is not None:
            conn.abort("the BTP client was closed")  # the run task then closes the WebSocket
        else:
            self._cancel_scope.cancel()
        with trio.move_on_after(self._disconnect_timeout + 1):
            await self._done.wait()
        self._cancel_scope.cancel()

    # -- internals --------------------------------------------------------------------------

    def _reject(self, code: str, message: str) -> Reject:
        return local_reject(code, message, self._address)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _stop(self, reason: str) -> None:
        self._stopped = reason
        self._notify()

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect; report ``started`` after the first authentication.

        Before that, a failure raises (ConnectError/AuthError out of ``nursery.start``).
        Later, a refused token raises AuthError; other failures are retried with backoff.
        """
        first, delay = True, self._backoff[0]
        if self._persistent:
            task_status.started()
            first = False
        try:
            with self._cancel_scope:
                while True:
                    ended = await self._connect_once(task_status.started if first else None)
                    if self._stopped is not None:
                        return
                    if ended.ready:
                        first, delay = False, self._backoff[0]
                    elif self._persistent:
                        # A node keeps dialing its peers: a refusal may be fixed on their side.
                        self._last_error = str(ended.error)
                        if isinstance(ended.error, AuthError):
                            delay = self._backoff[1]
                            _log.warning("BTP %s: %s", self.url, ended.error)
                        else:
                            delay = min(delay * 2, self._backoff[1])
                    elif first or isinstance(ended.error, AuthError):
                        self.fatal_error = ended.error
                        self._stop(str(ended.error))
                        raise ended.error
                    else:
                        delay = min(delay * 2, self._backoff[1])
                    self._last_error = str(ended.error)
                    _log.info("BTP %s: %s; reconnecting in %g s", self.url, ended.error, delay)
                    await trio.sleep(delay)
        finally:
            self._done.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run a ``persistent`` client until :meth:`aclose` or cancellation, for
        ``await nursery.start(client.run)``: reports ``started`` at once, then dials and
        redials for ever (a refused token is logged and retried at the longest backoff).
        :attr:`connected` says whether it is up; :meth:`send` waits for it within the expiry.
        """
        if not self._persistent:
            raise RuntimeError("run() is for persistent clients; use connect_btp otherwise")
        await self._run(task_status=task_status)

    async def _connect_once(self, on_ready: Callable[[], None] | None) -> _Ended:
        ended: _Ended | None = None
        try:
            async with client_websocket(
                self._url.ws_url,
                label=self.url,
                ssl_context=self._ssl_context,
                connect_timeout=self._connect_timeout,
                disconnect_timeout=self._disconnect_timeout,
            ) as ws:
                ended = await self._serve(ws, on_ready)
        except ConnectError as exc:
            ended = _Ended(False, exc)
        return ended

    async def _serve(self, ws: WebSocket, on_ready: Callable[[], None] | None) -> _Ended:
        url = self._url
        session = BtpSession.client(self._random, address=self._address)
        try:
            with trio.fail_after(self._connect_timeout):
                await ws.send(session.start_auth(url.username, url.token))
                while True:
                    frame = await ws.receive()
                    if isinstance(frame, str):
                        continue
                    event = session.receive_frame(frame, self._clock()).event
                    if isinstance(event, Authenticated):
                        break
                    if isinstance(event, AuthRefused):
                        return _Ended(False, self._auth_error(event))
        except trio.TooSlowError:
            return _Ended(
                False,
                ConnectError(
                    f"the connector at {self.url} did not answer the BTP auth request within "
                    f"{self._connect_timeout:g} s",
                    f"no answer to the BTP auth request within {self._connect_timeout:g} s",
                ),
            )
        except WebSocketClosedError as exc:
            return _Ended(
                False,
                ConnectError(
                    f"the connector at {self.url} closed the connection during BTP "
                    f"authentication ({describe_close(exc)})",
                    f"it closed the connection during BTP authentication ({describe_close(exc)})",
                ),
            )
        conn = BtpConnection(
            ws,
            session,
            label=self.url,
            handler=_Dispatch(self),
            max_handling=self._max_concurrent,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
            clock=self._clock,
        )
        self._conn = conn
        self.connections += 1
        self._notify()
        if on_ready is not None:
            on_ready()
        try:
            await conn.run()
        finally:
            self._conn = None
            self._notify()
        return _Ended(
            True,
            ConnectError(
                f"lost the connection to {self.url}: {conn.close_reason}",
                f"lost the connection: {conn.close_reason}",
            ),
        )

    def _auth_error(self, event: AuthRefused) -> AuthError:
        text = redact(event.error.text, self._url.token)
        detail = f": {text}" if text else ""
        return AuthError(
            f"the connector at {self.url} refused our credentials "
            f"(BTP error {event.error.code} {event.error.name}{detail}); check the username "
            "and token in the BTP URL"
        )


async def connect_btp(
    nursery: trio.Nursery,
    url: str | BtpUrl,
    *,
    handler: PrepareHandler | None = None,
    address: str = "",
    max_concurrent_prepares: int = 100,
    connect_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float = 10.0,
    reconnect_backoff: tuple[float, float] = (0.1, 5.0),
    ssl_context: ssl.SSLContext | None = None,
) -> BtpClient:
    """Connect and authenticate, running the client's tasks in ``nursery``.

    Returns once authenticated. Raises :class:`~ilp.errors.ConnectError` if the connector
    cannot be reached and :class:`~ilp.errors.AuthError` if it refuses the credentials. Later,
    a refused token on reconnection raises AuthError inside ``nursery``. Stop the client with
    :meth:`BtpClient.aclose`.
    """
    parsed = url if isinstance(url, BtpUrl) else parse_btp_url(url)
    client = BtpClient(
        parsed,
        handler=handler,
        address=address,
        max_concurrent_prepares=max_concurrent_prepares,
        connect_timeout=connect_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        reconnect_backoff=reconnect_backoff,
        ssl_context=ssl_context,
    )
    await nursery.start(client._run)
    return client


@asynccontextmanager
async def open_btp_client(
    url: str | BtpUrl,
    *,
    handler: PrepareHandler | None = None,
    address: str = "",
    max_concurrent_prepares: int = 100,
    connect_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float = 10.0,
    reconnect_backoff: tuple[float, float] = (0.1, 5.0),
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[BtpClient]:
    """Connect, authenticate and yield a :class:`BtpClient`; leaving the block closes it.

    Raises :class:`~ilp.errors.ConnectError` or :class:`~ilp.errors.AuthError` on entry, and
    AuthError on exit if a reconnection was refused. Exceptions of the block pass unchanged.
    """
    body_error: BaseException | None = None
    client: BtpClient | None = None
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                client = await connect_btp(
                    nursery,
                    url,
                    handler=handler,
                    address=address,
                    max_concurrent_prepares=max_concurrent_prepares,
                    connect_timeout=connect_timeout,
                    ping_interval=ping_interval,
                    ping_timeout=ping_timeout,
                    reconnect_backoff=reconnect_backoff,
                    ssl_context=ssl_context,
                )
                try:
                    yield client
                finally:
                    await client.aclose()
            except BaseException as exc:
                body_error = exc
                raise
    except BaseExceptionGroup as group:
        # split, not subgroup(predicate): the predicate would be tried on the group itself first
        # and keep the whole group, turning a plain cancellation into a TransportError.
        _, rest = group.split(trio.Cancelled)
        if rest is None:
            raise  # only cancellations: they belong to an enclosing cancel scope
        if body_error is not None and all(exc is body_error for exc in rest.exceptions):
            # The block's own exception, or ConnectError/AuthError from connecting: unwrapped.
            # It is raised outside this handler so the group does not become its context.
            failure = body_error
        else:
            fatal = client.fatal_error if client is not None else None
            if isinstance(fatal, AuthError):
                raise AuthError(str(fatal)) from group
            raise TransportError(f"the BTP client for {url_text(url)} failed") from group
    if failure is not None:
        raise failure


def url_text(url: str | BtpUrl) -> str:
    """A URL for messages, credentials removed."""
    if isinstance(url, BtpUrl):
        return url.redacted()
    try:
        return parse_btp_url(url).redacted()
    except ValueError:
        return "an invalid BTP URL"
