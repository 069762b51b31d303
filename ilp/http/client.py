"""The ILP-over-HTTP client (RFC 35, synchronous mode): an :class:`~ilp.link.IlpLink`.

::

    async with open_http_link("https://peer.example/ilp", token="...") as link:
        reply = await link.send(prepare)        # a Fulfill or a Reject, never an exception

Each Prepare is the body of one ``POST`` (``Content-Type`` and ``Accept``:
``application/octet-stream``, ``Authorization: Bearer <token>``, and ``ILP-Peer-Name`` when a
name is given); the peer answers ``200`` with the Fulfill or Reject as the body. This is the mode
deployed connectors speak (ilp-plugin-http, interledger-rs, Rafiki). The asynchronous mode of
the newest RFC text (``202`` now, the reply later on a callback URL) is not implemented.

The requests go over pooled HTTP/1.1 keep-alive connections of a small client of our own
(``ilp.http._http11``), not httpx: on the packet path httpx cost about ten times the CPU.

What cannot be delivered becomes a Reject made here, with the link's ``address`` as
``triggered_by`` (see :func:`reject_for_status` for HTTP errors):

* the peer cannot be reached, or the connection fails: ``T01``;
* no answer before the Prepare expires: ``R00`` (the request is abandoned);
* an answer that is not a Fulfill or a Reject, or is larger than :data:`MAX_REPLY_SIZE`: ``T01``;
* a Fulfill whose fulfillment does not hash to the condition: ``F05``.

:meth:`HttpLink.request` is ``send`` for callers that must tell these apart (the CLI, to say
why the connector gave us no address): what ``send`` turns into ``T01``, ``T00``, ``T05`` or
``F02`` raises there (:class:`~ilp.errors.ConnectError`, :class:`HttpAuthError`,
:class:`HttpStatusError`, :class:`~ilp.errors.TransportError`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import trio

from .._transport import transport_reason
from ..btp.session import local_reject
from ..errors import AuthError, ConnectError, DecodeError, TransportError
from ..link import Reply
from ..packet import Fulfill, Prepare, Reject, decode_packet, is_fulfillment_valid
from ._http11 import ConnectError as _NoConnectionError
from ._http11 import Http11Pool, HttpProtocolError

__all__ = [
    "CONTENT_TYPE",
    "MAX_REPLY_SIZE",
    "HttpAuthError",
    "HttpLink",
    "HttpStatusError",
    "check_http_url",
    "is_http_url",
    "open_http_link",
    "reject_for_status",
    "split_http_url",
]

_log = logging.getLogger("ilp.http.client")

CONTENT_TYPE: Final = "application/octet-stream"
"""The media type of ILP packets over HTTP (RFC 35)."""

MAX_REPLY_SIZE: Final = 64 * 1024
"""The largest answer body read; an ILP packet is at most about 32 KiB."""


def is_http_url(url: str) -> bool:
    """True for an ILP-over-HTTP URL (``http://`` or ``https://``), False for anything else (a
    BTP URL, say); whether it is a valid one is :func:`check_http_url`'s question."""
    return url[:8].lower().startswith(("http://", "https://"))


def check_http_url(url: str) -> str:
    """``url`` if it is an ``http://`` or ``https://`` URL with a host and no user info, else
    ValueError. Tokens go in ``token``, never in the URL, where logs would show them."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("an ILP-over-HTTP URL starts with http:// or https://")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if "@" in parts.netloc:
        raise ValueError("put the token in the token setting, not in the URL")
    if parts.fragment:
        raise ValueError("the URL must not have a fragment")
    return url


def split_http_url(url: str) -> tuple[str, str | None, str | None]:
    """``(url, peer_name, token)`` from a URL that may carry ``NAME:TOKEN@`` as user info, the way
    BTP URLs carry their credentials (a node's account ``url``). The URL comes back without
    them; ValueError if it is not a valid http(s) URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("not a valid URL") from None
    name = token = None
    if "@" in parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        name, token = unquote(user) or None, unquote(password) or None
        url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return check_http_url(url), name, token


class HttpStatusError(TransportError):
    """The peer answered a Prepare with HTTP ``status``, not 200 (:meth:`HttpLink.request`)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class HttpAuthError(HttpStatusError, AuthError):
    """The peer refused our token: HTTP 401 or 403 (:meth:`HttpLink.request`)."""


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def reject_for_status(status: int, url: str, triggered_by: str = "") -> Reject:
    """The Reject for a peer that answered a Prepare with HTTP ``status`` (not 200).

    ``5xx`` is ``T00`` (RFC 35); ``429`` is ``T05`` (rate limited); ``401`` and ``403`` (our token
    refused), other ``4xx``, redirects and other ``2xx`` are ``F02``: the packet cannot go this
    way until the peering is fixed, and retrying would not help (interledger-rs also answers
    ``F02`` to a ``4xx``).
    """
    where = _shown(url)
    if status >= 500:
        return local_reject(
            "T00", f"the ILP-over-HTTP peer at {where} failed (HTTP {status})", triggered_by
        )
    if status == 429:
        return local_reject(
            "T05", f"the ILP-over-HTTP peer at {where} is rate limiting us (HTTP 429)", triggered_by
        )
    if status in (401, 403):
        why = f"refused our token (HTTP {status})"
    elif 200 <= status < 300:
        why = f"answered HTTP {status} without a packet (it may speak only the asynchronous mode)"
    else:
        why = f"refused the Prepare (HTTP {status})"
    return local_reject("F02", f"the ILP-over-HTTP peer at {where} {why}", triggered_by)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _header_value(value: str, what: str) -> str:
    """``value`` if it can go into a header line as it is (no CR or LF), else ValueError."""
    if not (value.isascii() and value.isprintable()):
        raise ValueError(f"the {what} must be printable ASCII")
    return value


class HttpLink:
    """An :class:`~ilp.link.IlpLink` that POSTs each Prepare to ``url`` (synchronous RFC 35).

    Many Prepares may be in flight at once, over up to ``max_connections`` pooled HTTP/1.1
    connections. ``send`` returns by the Prepare's expiry (``bounds_expiry``). ``address`` is
    our ILP address, the ``triggered_by`` of the Rejects made here (it may be set later, once
    known). Close it with :meth:`aclose`, or use :func:`open_http_link`; :meth:`run` keeps it
    open for the life of a task (a node starts one per HTTP account).
    """

    bounds_expiry = True

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        peer_name: str | None = None,
        address: str = "",
        max_connections: int = 100,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.url = check_http_url(url)
        self.address = address
        self._clock = clock
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        assert parts.hostname is not None  # check_http_url
        target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            target += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
        head = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}"]
        head += [f"Content-Type: {CONTENT_TYPE}", f"Accept: {CONTENT_TYPE}"]
        if token:
            head.append(f"Authorization: Bearer {_header_value(token, 'token')}")
        if peer_name:
            head.append(f"ILP-Peer-Name: {_header_value(peer_name, 'peer name')}")
        self._head = ("\r\n".join(head) + "\r\nContent-Length: ").encode("ascii")
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if isinstance(verify, ssl.SSLContext):
                context = verify
            else:
                context = ssl.create_default_context()
                context.set_alpn_protocols(["http/1.1"])
                if not verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
        self._pool = Http11Pool(
            parts.hostname,
            parts.port or (443 if scheme == "https" else 80),
            ssl_context=context,
            max_connections=max_connections,
        )
        self._closed = trio.Event()

    def __repr__(self) -> str:
        return f"HttpLink({_shown(self.url)!r})"

    @property
    def connected(self) -> bool:
        """True until closed: HTTP has no connection to keep up."""
        return not self._closed.is_set()

    async def wait_connected(self) -> None:
        """Return at once while the link is open (there is no connection to wait for);
        :class:`~ilp.errors.TransportError` once it is closed."""
        if self._closed.is_set():
            raise TransportError("the ILP-over-HTTP link is closed")

    async def send(self, prepare: Prepare) -> Reply:
        """POST ``prepare`` and return the peer's Fulfill or Reject; never raises for ILP
        failures (see the module's description of the Rejects made here)."""
        try:
            return await self.request(prepare)
        except HttpStatusError as exc:
            reject = reject_for_status(exc.status, self.url, self.address)
            if isinstance(exc, HttpAuthError):
                _log.warning("%s", reject.message)
            return reject
        except TransportError as exc:
            return local_reject("T01", str(exc), self.address)

    async def request(self, prepare: Prepare) -> Reply:
        """:meth:`send`, except that a Prepare the peer did not answer with a packet raises
        instead of becoming a Reject made here, so that a caller can tell why:

        * :class:`~ilp.errors.ConnectError`: the peer cannot be reached;
        * :class:`HttpAuthError` (an :class:`~ilp.errors.AuthError` and an
          :class:`HttpStatusError`): it refused our token (HTTP 401 or 403);
        * :class:`HttpStatusError`: it answered another status than 200 (``status``);
        * :class:`~ilp.errors.TransportError`: the link is closed, the connection failed, or
          the answer is not HTTP/1.1 we can read, not an ILP packet, or too large.

        No answer before the Prepare expires is still ``R00``, and a wrong fulfillment ``F05``,
        as from :meth:`send`: those are answers to the Prepare, not failures of the link.
        """
        if self._closed.is_set():
            raise TransportError("the ILP-over-HTTP link is closed")
        seconds = (prepare.expires_at - self._clock()).total_seconds()
        body = prepare.encode()
        with trio.move_on_after(max(seconds, 0.0)):
            request = b"%s%d\r\n\r\n%s" % (self._head, len(body), body)
            try:
                response = await self._pool.post(request, MAX_REPLY_SIZE)
            except _NoConnectionError as exc:
                reason = transport_reason(exc)
                raise ConnectError(
                    f"cannot reach the ILP-over-HTTP peer at {_shown(self.url)} ({reason})",
                    reason,
                ) from exc
            except HttpProtocolError as exc:
                raise TransportError(
                    f"the ILP-over-HTTP peer at {_shown(self.url)} answered something that is "
                    f"not HTTP/1.1 we can read ({exc})"
                ) from exc
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise TransportError(
                    f"the connection to the ILP-over-HTTP peer at {_shown(self.url)} failed "
                    f"({transport_reason(exc)})"
                ) from exc
            status = response.status
            if status != 200:
                message = reject_for_status(status, self.url).message
                if status in (401, 403):
                    raise HttpAuthError(message, status)
                raise HttpStatusError(message, status)
            if response.too_large:
                raise TransportError(
                    f"the ILP-over-HTTP peer at {_shown(self.url)} answered with more than "
                    f"{MAX_REPLY_SIZE} bytes"
                )
            return self._reply(prepare, response.body)
        return local_reject(
            "R00",
            f"no reply before the Prepare expired at {prepare.expires_at.isoformat()}",
            self.address,
        )

    async def aclose(self) -> None:
        """Close the pooled connections; later sends resolve to T01."""
        self._closed.set()
        self._pool.close()
        await trio.lowlevel.checkpoint()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the link open until cancelled or closed, then close it."""
        task_status.started()
        try:
            await self._closed.wait()
        finally:
            await self.aclose()

    # -- internals --------------------------------------------------------------------------

    def _reply(self, prepare: Prepare, data: bytes) -> Reply:
        try:
            reply = decode_packet(data)
        except DecodeError as exc:
            raise TransportError(
                f"the ILP-over-HTTP peer at {_shown(self.url)} answered with a body that is not "
                f"an ILP packet ({exc})"
            ) from None
        if isinstance(reply, Fulfill):
            if not is_fulfillment_valid(reply.fulfillment, prepare.execution_condition):
                return local_reject(
                    "F05", "the peer's fulfillment does not match the condition", self.address
                )
            return reply
        if isinstance(reply, Reject):
            return reply
        raise TransportError(
            f"the ILP-over-HTTP peer at {_shown(self.url)} answered a Prepare with a Prepare"
        )


@asynccontextmanager
async def open_http_link(
    url: str,
    *,
    token: str | None = None,
    peer_name: str | None = None,
    address: str = "",
    max_connections: int = 100,
    verify: ssl.SSLContext | bool = True,
) -> AsyncIterator[HttpLink]:
    """Yield an :class:`HttpLink` to ``url``; leaving the block closes its connections.

    Nothing is sent on entry (HTTP has no handshake): a wrong URL or token shows in the first
    reply, as ``T01`` or ``F02``. ``verify`` is the TLS setting of an ``https://`` URL: True
    (the system's certificate authorities, the default), an :class:`ssl.SSLContext` of your
    own, or False (no certificate check: for tests only).
    """
    link = HttpLink(
        url,
        token=token,
        peer_name=peer_name,
        address=address,
        max_connections=max_connections,
        verify=verify,
    )
    try:
        yield link
    finally:
        await link.aclose()
