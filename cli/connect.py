"""Connecting a command to its uplink: BTP or ILP over HTTP, then ILDCP, with failures mapped to
exit codes.

Used by every command that needs a connector (`query-address`, `pay`, `quote`, `receive`), so
that they all say the same thing and exit with the same code when the connector is down (5),
refuses our token (8), gives us no address (4) or the URL is malformed (2).

Every command takes either kind of uplink (:func:`open_uplink`). Over ILP over HTTP nothing
comes back on our own requests: `receive` serves an endpoint the connector POSTs to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import trio

from ilp._transport import causes
from ilp.btp.client import BtpClient, open_btp_client, url_text
from ilp.errors import AuthError, ConnectError, IlpError, TransportError
from ilp.http.client import (
    HttpLink,
    HttpStatusError,
    is_http_url,
    open_http_link,
    split_http_url,
)
from ilp.ildcp import (
    IldcpError,
    IldcpResponse,
    decode_response,
    fetch_config,
    make_request,
)
from ilp.link import IlpLink
from ilp.peer import PEER_EXPIRY

from .exit_codes import ExitCode
from .output import CliError, sentence
from .uplink import Uplink


def uplink_text(url: str) -> str:
    """The uplink URL for messages, credentials removed (BTP or ILP over HTTP)."""
    if is_http_url(url):
        try:
            return split_http_url(url)[0]
        except ValueError:
            return "an invalid URL"
    return url_text(url)


def unreachable_message(uplink: Uplink, reason: str) -> str:
    """`cannot reach the connector at ws://...: ... Start one, or set --uplink / ILP_UPLINK.`"""
    where = uplink_text(uplink.url).replace("btp+", "", 1)
    return (
        f"cannot reach the connector at {where} ({_short_reason(reason)}). "
        "Start one, or set --uplink / ILP_UPLINK."
    )


def _short_reason(reason: str) -> str:
    lowered = reason.lower()
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    return reason


def connect_error(uplink: Uplink, exc: Exception) -> CliError | None:
    """The CLI error for a failure to connect to ``uplink`` or to get its ILDCP answer.

    None for exceptions that are not about the uplink (they propagate unchanged).
    """
    if isinstance(exc, AuthError):
        return CliError(f"{exc} (--uplink / ILP_UPLINK).", ExitCode.AUTH_REFUSED)
    if isinstance(exc, ConnectError):
        return CliError(unreachable_message(uplink, exc.reason), ExitCode.UNREACHABLE)
    if isinstance(exc, IldcpError):
        return CliError(
            f"the connector did not give us an address: {sentence(exc)}", ExitCode.FAILED
        )
    if isinstance(exc, ValueError):  # an invalid uplink URL
        return CliError(f"invalid uplink URL: {exc}", ExitCode.USAGE)
    if isinstance(exc, IlpError):
        return CliError(sentence(exc), ExitCode.UNREACHABLE)
    return None


def _wraps(exc: BaseException, inner: BaseException) -> bool:
    """Whether ``exc`` is ``inner`` or carries it (or, for a group, one of its errors) among its
    causes and group members."""
    mine = {id(cause) for cause in causes(inner)}
    return any(id(cause) in mine for cause in causes(exc))


def _only_cancellations(cause: BaseException | None) -> bool:
    if not isinstance(cause, BaseExceptionGroup):
        return False
    _, rest = cause.split(trio.Cancelled)
    return rest is None


def http_ildcp_error(uplink: Uplink, exc: IldcpError | TransportError) -> CliError:
    """The CLI error for an ILDCP request over ILP over HTTP that failed (an exception of
    :meth:`HttpLink.request <ilp.http.HttpLink.request>`, or :class:`IldcpError`).

    What only HTTP has is mapped here: our token refused (8), another HTTP status (5), no answer
    in time (6: the link's own R00). The rest as over BTP (:func:`connect_error`): unreachable or
    unreadable (5), a Reject from the connector itself, no address for us (4).
    """
    where = uplink_text(uplink.url)
    if isinstance(exc, AuthError):
        return CliError(
            f"the connector at {where} refused our token (--uplink / ILP_UPLINK).",
            ExitCode.AUTH_REFUSED,
        )
    if isinstance(exc, HttpStatusError):
        return CliError(
            f"the connector at {where} did not take our ILDCP request (HTTP {exc.status}). "
            "Check the URL in --uplink / ILP_UPLINK.",
            ExitCode.UNREACHABLE,
        )
    reject = exc.reject if isinstance(exc, IldcpError) else None
    if reject is not None and reject.code == "R00" and not reject.triggered_by:
        return CliError(f"the connector at {where} did not answer in time.", ExitCode.TIMEOUT)
    mapped = connect_error(uplink, exc)
    assert mapped is not None  # connect_error maps every IlpError
    return mapped


@asynccontextmanager
async def open_uplink(
    uplink: Uplink, *, connect_timeout: float = 10.0
) -> AsyncIterator[tuple[IlpLink, IldcpResponse]]:
    """Connect to ``uplink`` and ask ILDCP who we are; yield the link and the answer.

    A ``http://`` or ``https://`` uplink is ILP over HTTP (``https://NAME:TOKEN@host/path``:
    the token goes out as a bearer token, the name as ``ILP-Peer-Name``), anything else BTP
    (:func:`open_btp_uplink`). Failures raise :class:`CliError` with the right exit code;
    exceptions raised by the block pass unchanged.
    """
    if not is_http_url(uplink.url):
        async with open_btp_uplink(uplink, connect_timeout=connect_timeout) as (link, config):
            yield link, config
        return
    async with open_http_uplink(uplink) as (http_link, config):
        yield http_link, config


@asynccontextmanager
async def open_http_uplink(uplink: Uplink) -> AsyncIterator[tuple[HttpLink, IldcpResponse]]:
    """Ask the connector at an ILP-over-HTTP ``uplink`` who we are; yield the link and the
    answer. There is nothing to connect: the ILDCP request is the first POST."""
    try:
        url, name, token = split_http_url(uplink.url)
    except ValueError as exc:
        raise CliError(f"invalid uplink URL: {exc}", ExitCode.USAGE) from None
    async with open_http_link(url, token=token, peer_name=name) as link:
        # link.request, not fetch_config's link.send: a failure raises with its cause.
        request = make_request(datetime.now(UTC) + PEER_EXPIRY)
        try:
            config = decode_response(await link.request(request))
        except (IldcpError, TransportError) as exc:
            raise http_ildcp_error(uplink, exc) from None
        link.address = config.client_address
        yield link, config


@asynccontextmanager
async def open_btp_uplink(
    uplink: Uplink, *, connect_timeout: float = 10.0
) -> AsyncIterator[tuple[BtpClient, IldcpResponse]]:
    """Connect to ``uplink`` over BTP and ask ILDCP who we are; yield the link and the answer.

    Failures of connecting, of ILDCP and of the link itself (also when the block is left) raise
    :class:`CliError` with the right exit code. Exceptions raised by the block pass unchanged.
    Bound the whole with a cancel scope; each connection attempt gives up after
    ``connect_timeout`` seconds.
    """
    inner: BaseException | None = None
    try:
        async with open_btp_client(
            uplink.url, reconnect_backoff=(0.1, 1.0), connect_timeout=connect_timeout
        ) as link:
            config = await fetch_config(link)
            link.address = config.client_address
            try:
                yield link, config
            except BaseException as exc:
                inner = exc
                raise
    except Exception as exc:
        if inner is not None and _wraps(exc, inner):
            # The block's own exception, wrapped by the client's nursery on its way out.
            raise inner from None
        if _only_cancellations(exc.__cause__):
            # open_btp_client reports a cancellation that reached its nested nurseries as a
            # TransportError; it is the caller's cancellation, so let the caller's scope see it.
            await trio.lowlevel.checkpoint_if_cancelled()
        mapped = connect_error(uplink, exc)
        if mapped is None:
            raise
        raise mapped from None
