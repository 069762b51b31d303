"""ILDCP, the Interledger dynamic configuration protocol (RFC 31).

A child asks its parent for the ILP address and asset it should use::

    request   Prepare  amount 0, destination "peer.config", the peer condition, no data
    response  Fulfill  32 zero bytes, data = ascii client_address | u8 asset_scale | utf8 asset_code
    error     Reject   (the JS server always answers F00 with the error text)

The codec part (:class:`IldcpResponse`, :func:`make_request`, :func:`check_request`,
:func:`decode_response`) is sans-I/O and never reads the clock. :func:`fetch_config` and
:func:`make_ildcp_handler` are plain async functions on the link seam (:mod:`ilp.link`); they need
no trio, and read the clock only when no ``now`` is given.

Bytes after ``asset_code`` in a response are ignored (RFC 30 extensibility; ilp-protocol-ildcp
ignores them too). Unlike ilp-protocol-ildcp, the returned address is checked against RFC 15.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from .address import MAX_ADDRESS_LENGTH, is_valid_address, validate_address
from .errors import DecodeError, EncodeError, IlpError
from .link import IlpLink, PrepareHandler
from .oer import Buffer, Reader, Writer
from .packet import MAX_MESSAGE_SIZE, ErrorCode, Fulfill, Prepare, Reject
from .peer import (
    PEER_CONDITION,
    PEER_EXPIRY,
    PEER_FULFILLMENT,
    PeerRequestError,
    check_peer_request,
)

__all__ = [
    "ILDCP_DESTINATION",
    "IldcpError",
    "IldcpResponse",
    "check_request",
    "decode_response",
    "fetch_config",
    "make_ildcp_handler",
    "make_request",
]

ILDCP_DESTINATION: Final = "peer.config"

_log = logging.getLogger("ilp.ildcp")


class IldcpError(IlpError):
    """ILDCP failed: the parent rejected the request, or answered something that is not ILDCP.

    ``code`` is the ILP error code: the one of the parent's Reject, ``F00`` otherwise. A
    ``config_for`` callback of :func:`make_ildcp_handler` raises it to refuse a child; the handler
    then rejects with ``code`` and the message. ``reject`` is the parent's Reject, when there was
    one (its ``triggered_by`` tells a connector's refusal from a link's own Reject, such as T01
    when the parent could not be reached).
    """

    def __init__(self, message: str, *, code: str = "F00", reject: Reject | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.reject = reject


@dataclass(frozen=True, slots=True)
class IldcpResponse:
    """What the parent tells its child: its ILP address and the asset of their link."""

    client_address: str
    asset_scale: int
    asset_code: str

    def __post_init__(self) -> None:
        validate_address(self.client_address)
        if not 0 <= self.asset_scale <= 255:
            raise EncodeError(f"asset scale {self.asset_scale} is not in 0..255")

    def encode(self) -> bytes:
        """The Fulfill data: ``ascii client_address | u8 asset_scale | utf8 asset_code``."""
        w = Writer()
        w.write_ascii(self.client_address)
        w.write_u8(self.asset_scale)
        w.write_utf8(self.asset_code)
        return w.getvalue()

    @classmethod
    def decode(cls, data: Buffer) -> IldcpResponse:
        """Decode the Fulfill data; raises only :class:`~ilp.errors.DecodeError`."""
        r = Reader(data)
        pos = r.pos
        address = r.read_ascii("ildcp.client_address", MAX_ADDRESS_LENGTH)
        if not is_valid_address(address):
            raise DecodeError(
                f"invalid ILP address {address[:80]!r}", field="ildcp.client_address", offset=pos
            )
        scale = r.read_u8("ildcp.asset_scale")
        code = r.read_utf8("ildcp.asset_code")
        return cls(address, scale, code)

    def to_fulfill(self) -> Fulfill:
        """The Fulfill answering an ILDCP request with this configuration."""
        return Fulfill(PEER_FULFILLMENT, self.encode())


def make_request(expires_at: datetime) -> Prepare:
    """The ILDCP request Prepare (amount 0, ``peer.config``, peer condition, no data)."""
    return Prepare(0, expires_at, PEER_CONDITION, ILDCP_DESTINATION)


def check_request(prepare: Prepare, now: datetime) -> None:
    """Raise :class:`~ilp.peer.PeerRequestError` unless ``prepare`` is a live ILDCP request.

    Wrong destination or condition → ``code`` F01; expired before ``now`` → R00. The amount and
    data are not checked (RFC 31 keeps both for future use).
    """
    check_peer_request(prepare, ILDCP_DESTINATION, now)


def decode_response(reply: Fulfill | Reject) -> IldcpResponse:
    """The configuration in the parent's reply, or :class:`IldcpError` saying what went wrong."""
    if isinstance(reply, Reject):
        by = f" ({reply.triggered_by})" if reply.triggered_by else ""
        text = f": {reply.message}" if reply.message else ""
        raise IldcpError(
            f"the parent{by} rejected the ILDCP request with {reply.code} "
            f"{reply.code.description}{text}. Check that this account is a child of the "
            "connector and that its credentials are right.",
            code=reply.code,
            reject=reply,
        )
    if reply.fulfillment != PEER_FULFILLMENT:
        raise IldcpError(
            "the parent fulfilled the ILDCP request with a fulfillment other than 32 zero "
            "bytes: it does not speak ILDCP."
        )
    try:
        return IldcpResponse.decode(reply.data)
    except DecodeError as exc:
        raise IldcpError(f"the parent's ILDCP response is malformed: {exc}") from exc


def _clip(message: str) -> str:
    """``message`` cut to fit a Reject (8191 bytes of UTF-8)."""
    raw = message.encode("utf-8")
    if len(raw) <= MAX_MESSAGE_SIZE:
        return message
    return raw[:MAX_MESSAGE_SIZE].decode("utf-8", "ignore")


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def fetch_config(
    link: IlpLink,
    *,
    now: Callable[[], datetime] | None = None,
    timeout: float = PEER_EXPIRY.total_seconds(),
) -> IldcpResponse:
    """Ask the parent at the other end of ``link`` for our address and asset.

    The request expires ``timeout`` seconds after ``now()`` (default: the system clock); the link
    turns an unanswered request into a Reject, which raises :class:`IldcpError` like any other
    Reject or a malformed reply. To bound the wait, use a deadline around the call
    (``with trio.fail_after(...)``).
    """
    clock = _utcnow if now is None else now
    prepare = make_request(clock() + timedelta(seconds=timeout))
    return decode_response(await link.send(prepare))


ConfigFor = Callable[[Prepare], IldcpResponse | Awaitable[IldcpResponse]]
"""Returns the configuration of the child that sent the request (sync or async)."""


def make_ildcp_handler(
    config_for: ConfigFor,
    address: str,
    *,
    now: Callable[[], datetime] | None = None,
) -> PrepareHandler:
    """A :data:`~ilp.link.PrepareHandler` answering ILDCP requests; ``address`` is the parent's.

    Valid requests are fulfilled with ``config_for(prepare)``. Requests with another destination
    or condition are rejected F01, expired ones R00. If ``config_for`` raises
    :class:`IldcpError` the request is rejected with its code (F00 by default) and message, as
    ilp-protocol-ildcp does; any other exception is logged and answered F00 ``unexpected error.``,
    so no internal detail reaches the child.
    """
    validate_address(address)
    clock = _utcnow if now is None else now

    async def handle(prepare: Prepare) -> Fulfill | Reject:
        try:
            check_request(prepare, clock())
        except PeerRequestError as exc:
            return Reject(exc.code, address, f"not a valid ILDCP request: {exc}")
        try:
            config = config_for(prepare)
            if not isinstance(config, IldcpResponse):
                config = await config
        except IldcpError as exc:
            return Reject(exc.code, address, _clip(str(exc)))
        except Exception:
            _log.exception("ILDCP config_for raised; answering F00")
            return Reject(ErrorCode("F00"), address, "unexpected error.")
        return config.to_fulfill()

    return handle
