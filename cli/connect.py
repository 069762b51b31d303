"""Connecting a command to its uplink: BTP, then ILDCP, with failures mapped to exit codes.

Used by every command that needs a connector (`query-address`, `pay`, `quote`), so that they
all say the same thing and exit with the same code when the connector is down (5), refuses our
token (8), gives us no address (4) or the URL is malformed (2).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ilp.btp.client import BtpClient, open_btp_client, url_text
from ilp.errors import AuthError, ConnectError, IlpError
from ilp.ildcp import IldcpError, IldcpResponse, fetch_config

from .exit_codes import ExitCode
from .output import CliError
from .uplink import Uplink


def unreachable_message(uplink: Uplink, exc: ConnectError) -> str:
    """`cannot reach the connector at ws://...: ... Start one, or set --uplink / ILP_UPLINK.`"""
    where = url_text(uplink.url).replace("btp+", "", 1)
    return (
        f"cannot reach the connector at {where} ({_short_reason(str(exc))}). "
        "Start one, or set --uplink / ILP_UPLINK."
    )


def _short_reason(reason: str) -> str:
    lowered = reason.lower()
    if "refused" in lowered:
        return "connection refused"
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    # The client's own message already names the URL; keep what comes after it.
    return reason.rsplit(": ", 1)[-1] if ": " in reason else reason


def connect_error(uplink: Uplink, exc: Exception) -> CliError | None:
    """The CLI error for a failure to connect to ``uplink`` or to get its ILDCP answer.

    None for exceptions that are not about the uplink (they propagate unchanged).
    """
    if isinstance(exc, AuthError):
        return CliError(f"{exc} (--uplink / ILP_UPLINK).", ExitCode.AUTH_REFUSED)
    if isinstance(exc, ConnectError):
        return CliError(unreachable_message(uplink, exc), ExitCode.UNREACHABLE)
    if isinstance(exc, IldcpError):
        return CliError(f"the connector did not give us an address: {exc}.", ExitCode.FAILED)
    if isinstance(exc, ValueError):  # an invalid uplink URL
        return CliError(f"invalid uplink URL: {exc}", ExitCode.USAGE)
    if isinstance(exc, IlpError):
        return CliError(f"{exc}.", ExitCode.UNREACHABLE)
    return None


def _only_cancellations(cause: BaseException | None) -> bool:
    if not isinstance(cause, BaseExceptionGroup):
        return False
    _, rest = cause.split(trio.Cancelled)
    return rest is None


@asynccontextmanager
async def open_uplink(
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
        if exc is inner:
            raise
        if _only_cancellations(exc.__cause__):
            # open_btp_client reports a cancellation that reached its nested nurseries as a
            # TransportError; it is the caller's cancellation, so let the caller's scope see it.
            await trio.lowlevel.checkpoint_if_cancelled()
        mapped = connect_error(uplink, exc)
        if mapped is None:
            raise
        raise mapped from None
