"""The ILP-over-HTTP server (RFC 35, synchronous mode): an ASGI application, and a runner.

::

    app = IlpHttpApp(handler, token="their-bearer-token")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_ilp_http, app, "127.0.0.1", 0)
        ...  # POST http://127.0.0.1:<port>/ with a Prepare -> 200 and the Fulfill or Reject

Every ``POST`` carrying an ILP Prepare is answered ``200`` with the handler's Fulfill or Reject
as an ``application/octet-stream`` body; RFC 35 wants ``200`` for every well-formed request,
even one that is rejected. A handler that raises becomes a ``T00`` Reject, and one that has not
answered when the Prepare expires an ``R00``: the peer gets a packet either way. HTTP errors are
only for requests that are not a Prepare from a known peer:

* ``401`` (with ``WWW-Authenticate: Bearer``): no token, or the wrong one;
* ``404``: the resolver knows no peer at that path;
* ``405`` (with ``Allow: POST``): another method;
* ``400`` with a reason: a ``Content-Type`` that is not ``application/octet-stream`` (or
  ``application/ilp+octet-stream``, which ilp-plugin-http sends), a body that is not an ILP
  Prepare;
* ``413``: a body larger than :data:`MAX_REQUEST_SIZE`.

One peer: ``IlpHttpApp(handler, token=...)`` answers on every path. Several:
``IlpHttpApp(resolve=...)``, where ``resolve(request)`` returns the handler of the peer that
sent :class:`IlpHttpRequest` (its path, token and ``ILP-Peer-Name``), or None for a 401. A node
serves its accounts this way, at ``/accounts/{name}/ilp``.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import trio

from .._asgi import Receive, Scope, Send, header, serve_lifespan
from .._http_server import serve_asgi
from ..btp.session import local_reject
from ..errors import DecodeError
from ..link import PrepareHandler, Reply
from ..packet import Prepare, decode_packet
from .client import CONTENT_TYPE

__all__ = ["MAX_REQUEST_SIZE", "IlpHttpApp", "IlpHttpRequest", "Resolver", "serve_ilp_http"]

_log = logging.getLogger("ilp.http.server")


MAX_REQUEST_SIZE: Final = 64 * 1024
"""The largest request body read (413 above it); an ILP packet is at most about 32 KiB."""

_ACCEPTED_TYPES: Final = frozenset({CONTENT_TYPE, "application/ilp+octet-stream"})


@dataclass(frozen=True, slots=True)
class IlpHttpRequest:
    """What a resolver sees of a request: the path, the bearer token (None without one) and the
    ``ILP-Peer-Name`` header. The token is a secret: it is left out of ``repr``."""

    path: str
    token: str | None = field(repr=False)
    peer_name: str | None


Resolver = Callable[[IlpHttpRequest], "PrepareHandler | Awaitable[PrepareHandler | None] | None"]
"""Given a request, the handler for the peer that sent it, or None (401)."""


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


def _bearer(scope: Scope) -> str | None:
    raw = header(scope, b"authorization")
    if raw is None:
        return None
    scheme, _, credentials = raw.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        # ilp-plugin-http also accepts a bare token; so do we.
        credentials = raw.strip() if not credentials else b""
    try:
        return credentials.strip().decode("utf-8") or None
    except UnicodeDecodeError:
        return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class IlpHttpApp:
    """An ASGI application answering ILP Prepares POSTed to it (see the module description).

    Give either ``handler`` (one peer; ``token`` is the bearer token it must send, and None
    accepts any request: only for tests or a trusted network) or ``resolve``. ``address`` is
    the ``triggered_by`` of the Rejects made here.
    """

    def __init__(
        self,
        handler: PrepareHandler | None = None,
        *,
        token: str | None = None,
        resolve: Resolver | None = None,
        address: str = "",
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if (handler is None) == (resolve is None):
            raise ValueError("give a handler or a resolver, not both")
        if resolve is not None and token is not None:
            raise ValueError("with a resolver, the resolver checks the token")
        self._handler = handler
        self._token = token.encode("utf-8") if token is not None else None
        self._resolve = resolve
        self.address = address
        self._clock = clock
        self.requests = 0
        """Prepares answered so far."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (HTTP and lifespan scopes)."""
        kind = scope.get("type")
        if kind == "lifespan":
            await serve_lifespan(receive, send)
        elif kind == "http":
            await self.handle_http(scope, receive, send)
        else:
            raise ValueError(f"IlpHttpApp does not serve {kind!r} connections")

    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request (for an application that mounts this one on some paths)."""
        try:
            reply = await self._answer(scope, receive)
        except _HttpError as exc:
            data = f"{exc}\n".encode()
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(data)).encode("ascii")),
                (b"connection", b"close"),
                *exc.headers,
            ]
            await send({"type": "http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "http.response.body", "body": data})
            return
        data = reply.encode()
        headers = [
            (b"content-type", CONTENT_TYPE.encode("ascii")),
            (b"content-length", str(len(data)).encode("ascii")),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _answer(self, scope: Scope, receive: Receive) -> Reply:
        if str(scope.get("method", "")).upper() != "POST":
            raise _HttpError(405, "POST an ILP Prepare here", ((b"allow", b"POST"),))
        handler = await self._authorize(scope)
        kind = header(scope, b"content-type")
        media = kind.partition(b";")[0].strip().lower().decode("latin-1") if kind else None
        if media is not None and media not in _ACCEPTED_TYPES:
            raise _HttpError(400, f"the Content-Type must be {CONTENT_TYPE}, not {media[:60]!r}")
        body = await _read(receive)
        try:
            prepare = decode_packet(body)
        except DecodeError as exc:
            raise _HttpError(400, f"the body is not an ILP packet: {exc}") from None
        if not isinstance(prepare, Prepare):
            raise _HttpError(400, f"the body is an ILP {type(prepare).__name__}, not a Prepare")
        self.requests += 1
        return await self._call(handler, prepare)

    async def _authorize(self, scope: Scope) -> PrepareHandler:
        token = _bearer(scope)
        if self._handler is not None:
            if self._token is None or (
                token is not None and hmac.compare_digest(token.encode("utf-8"), self._token)
            ):
                return self._handler
        else:
            assert self._resolve is not None
            name = header(scope, b"ilp-peer-name")
            request = IlpHttpRequest(
                str(scope.get("path", "/")),
                token,
                name.decode("utf-8", "replace") if name is not None else None,
            )
            found = self._resolve(request)
            handler = await found if inspect.isawaitable(found) else found
            if handler is not None:
                return handler
        raise _HttpError(
            401,
            "send the peer's token as 'Authorization: Bearer <token>'",
            ((b"www-authenticate", b'Bearer realm="ilp"'),),
        )

    async def _call(self, handler: PrepareHandler, prepare: Prepare) -> Reply:
        seconds = (prepare.expires_at - self._clock()).total_seconds()
        with trio.move_on_after(max(seconds, 0.0)):
            try:
                return await handler(prepare)
            except Exception:
                _log.exception("the handler failed on a Prepare to %s", prepare.destination)
                return local_reject("T00", "internal error", self.address)
        return local_reject(
            "R00",
            f"no reply before the Prepare expired at {prepare.expires_at.isoformat()}",
            self.address,
        )


async def _read(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _HttpError(400, "the client went away")
        body += message.get("body", b"")
        if len(body) > MAX_REQUEST_SIZE:
            raise _HttpError(413, f"an ILP packet is at most {MAX_REQUEST_SIZE} bytes here")
        if not message.get("more_body", False):
            return bytes(body)


async def serve_ilp_http(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` (an :class:`IlpHttpApp`) on ``host``:``port`` with our HTTP/1.1 server
    (:mod:`ilp._http_server`), for ``port = await nursery.start(serve_ilp_http, app, host, 0)``;
    runs until cancelled. Failures of the application are logged to ``ilp.http.server``."""
    await serve_asgi(app, host, port, log=_log, task_status=task_status)
