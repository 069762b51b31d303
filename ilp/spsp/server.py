"""The SPSP server (RFC 9): an ASGI application handing out STREAM credentials, and a runner.

::

    stream_server = StreamServer(server_secret, address, "XRP", 9, link=link)
    app = SpspApp(stream_server)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_spsp, app, "127.0.0.1", 0)
        ...  # GET http://127.0.0.1:<port>/.well-known/pay -> fresh credentials

:class:`SpspApp` answers every ``GET`` with fresh credentials from
``generate_credentials`` (nothing is stored: :class:`~ilp.stream.server.StreamServer` makes
stateless tokens), as ``application/spsp4+json`` with ``Cache-Control: no-cache`` and the CORS
headers of SPEC §11.2. A request carrying ``Receipt-Nonce`` (base64, 16 bytes) and
``Receipt-Secret`` (base64, 32 bytes) gets credentials whose connection sends STREAM receipts
(RFC 39) and ``"receipts_enabled": true``. With an account resolver, a path it does not know gets
404 ``{"id": "InvalidReceiverError", ...}``; what it returns becomes the connection's tag.

:func:`serve_spsp` runs any ASGI app on our HTTP/1.1 server (:mod:`ilp._http_server`), for
``nursery.start``: it reports the port it listens on (useful with port 0) and stops when
cancelled.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import trio

from .._asgi import Receive, Scope, Send, header, serve_lifespan
from .._http_server import serve_asgi
from .pointer import SPSP_CONTENT_TYPE

__all__ = ["AccountResolver", "CredentialSource", "SpspApp", "serve_spsp"]

_log = logging.getLogger("ilp.spsp.server")


AccountResolver = Callable[[str], "str | Awaitable[str | None] | None"]
"""Given the request path, the tag for the connection's credentials, or None: no such receiver."""

_CORS: Final = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-headers", b"web-monetization-id"),
)
_ALLOW: Final = b"GET, OPTIONS"


class CredentialSource(Protocol):
    """What :class:`SpspApp` needs: :meth:`StreamServer.generate_credentials`."""

    def generate_credentials(
        self,
        *,
        tag: str | None = None,
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> tuple[str, bytes]: ...


class _BadRequestError(Exception):
    pass


def _base64header(scope: Scope, name: str, size: int) -> bytes | None:
    raw = header(scope, name.lower().encode("ascii"))
    if raw is None:
        return None
    text = raw.strip().replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
    try:
        value = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _BadRequestError(f"the {name} header is not base64") from None
    if len(value) != size:
        raise _BadRequestError(f"the {name} header must be {size} bytes, got {len(value)}")
    return value


class SpspApp:
    """An ASGI application answering SPSP queries with credentials from ``credentials``.

    ``credentials`` is usually a :class:`~ilp.stream.server.StreamServer`. ``resolve_account``
    (sync or async) maps the request path to the connection's tag, or to None for a 404; without
    it every path answers, with no tag. ``cache_control`` is sent as ``Cache-Control``.
    """

    def __init__(
        self,
        credentials: CredentialSource,
        *,
        resolve_account: AccountResolver | None = None,
        cache_control: str = "no-cache",
    ) -> None:
        self._credentials = credentials
        self._resolve = resolve_account
        self._cache_control = cache_control.encode("latin-1")
        self.queries = 0
        """Credentials handed out so far."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (HTTP and lifespan scopes)."""
        kind = scope.get("type")
        if kind == "lifespan":
            await serve_lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, send)
        else:
            raise ValueError(f"SpspApp does not serve {kind!r} connections")

    async def _http(self, scope: Scope, send: Send) -> None:
        method = scope.get("method", "GET")
        if method == "OPTIONS":
            await self._respond(send, 204, None, [(b"access-control-allow-methods", _ALLOW)])
            return
        if method != "GET":
            await self._error(send, 405, "MethodNotAllowedError", "use GET", [(b"allow", _ALLOW)])
            return
        path = str(scope.get("path", "/"))
        try:
            nonce = _base64header(scope, "Receipt-Nonce", 16)
            secret = _base64header(scope, "Receipt-Secret", 32)
            if (nonce is None) != (secret is None):
                raise _BadRequestError("send both Receipt-Nonce and Receipt-Secret, or neither")
        except _BadRequestError as exc:
            await self._error(send, 400, "InvalidRequestError", str(exc))
            return
        tag: str | None = None
        if self._resolve is not None:
            found = self._resolve(path)
            tag = await found if inspect.isawaitable(found) else found
            if tag is None:
                await self._error(send, 404, "InvalidReceiverError", f"no receiver at {path[:100]}")
                return
        destination, shared_secret = self._credentials.generate_credentials(
            tag=tag, receipt_nonce=nonce, receipt_secret=secret
        )
        self.queries += 1
        body = {
            "destination_account": destination,
            "shared_secret": base64.b64encode(shared_secret).decode("ascii"),
            "receipts_enabled": nonce is not None,
        }
        await self._respond(send, 200, body)

    async def _error(
        self,
        send: Send,
        status: int,
        error_id: str,
        message: str,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await self._respond(send, status, {"id": error_id, "message": message}, extra)

    async def _respond(
        self,
        send: Send,
        status: int,
        body: dict[str, object] | None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [*_CORS, (b"cache-control", self._cache_control), *(extra or [])]
        data = b""
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            kind = SPSP_CONTENT_TYPE if status == 200 else "application/json"
            headers.append((b"content-type", kind.encode("ascii")))
        headers.append((b"content-length", str(len(data)).encode("ascii")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


async def serve_spsp(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` over HTTP/1.1 on ``host``:``port`` (:mod:`ilp._http_server`).

    For ``port = await nursery.start(serve_spsp, app, host, 0)``: reports the port it listens on
    once it accepts connections, then serves until cancelled. A port that cannot be bound raises
    :class:`OSError` from ``nursery.start``. Failures of the application are logged to the
    ``ilp.spsp.server`` logger.
    """
    await serve_asgi(app, host, port, log=_log, task_status=task_status)
