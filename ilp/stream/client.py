"""The STREAM client: open a connection to a receiver over any :class:`~ilp.link.IlpLink`.

::

    router = ConnectionRouter()
    async with open_btp_client(url, handler=router) as link:
        async with open_stream_connection(link, destination, shared_secret, router=router) as conn:
            stream = conn.open_stream()
            await stream.send_money(1000)
            await stream.send_all(b"hello")
            print(await stream.receive_some())

The receiver sends Prepares back to us (data, stream closes, its own probes). They arrive on the
link's incoming handler; mount a :class:`ConnectionRouter` there and pass it to each connection:
every connection then announces its own sub-address (``<our address>.<random>``) and the router
hands it the Prepares sent there. Without a router, mount ``conn.handle_prepare`` yourself (one
connection per link).

Do not leave incoming Prepares unanswered when paying an ilp-protocol-stream receiver: as soon as
a stream opens it probes the sender's exchange rate (unfulfillable Prepares that we answer F99),
and if the probes fail it destroys the connection, closing our streams mid-payment.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction

import trio

from ..address import validate_address
from ..errors import StreamError
from ..ildcp import fetch_config
from ..link import IlpLink, PrepareHandler, Reply
from ..oer import MAX_UINT64
from ..packet import ErrorCode as IlpErrorCode
from ..packet import Prepare, Reject
from .connection import Connection, ShouldFulfill
from .core import ConnectionCore
from .crypto import StreamCrypto
from .packet import ErrorCode

__all__ = ["ConnectionRouter", "open_stream_connection"]


class ConnectionRouter:
    """A :data:`~ilp.link.PrepareHandler` routing a link's incoming Prepares to STREAM connections.

    Mount it as the link's handler and pass it to :func:`open_stream_connection`; each
    connection registers the address it announces and leaves when closed. Prepares for other
    addresses go to ``fallback``, or are rejected F02.
    """

    def __init__(self, *, fallback: PrepareHandler | None = None) -> None:
        self.fallback = fallback
        self._routes: dict[str, PrepareHandler] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def register(self, address: str, handler: PrepareHandler) -> None:
        """Send Prepares for ``address`` (and below it) to ``handler``."""
        validate_address(address)
        if address in self._routes:
            raise ValueError(f"{address} is already routed")
        self._routes[address] = handler

    def unregister(self, address: str) -> None:
        """Stop routing ``address`` (no error if it was not routed)."""
        self._routes.pop(address, None)

    async def __call__(self, prepare: Prepare) -> Reply:
        routes = self._routes
        address = prepare.destination
        while True:
            handler = routes.get(address)
            if handler is not None:
                return await handler(prepare)
            head, dot, _ = address.rpartition(".")
            if not dot:
                break
            address = head
        if self.fallback is not None:
            return await self.fallback(prepare)
        return Reject(IlpErrorCode("F02"), "", "no STREAM connection at this address")


@asynccontextmanager
async def open_stream_connection(
    link: IlpLink,
    destination: str,
    shared_secret: bytes,
    *,
    source_address: str | None = None,
    asset_code: str | None = None,
    asset_scale: int | None = None,
    router: ConnectionRouter | None = None,
    minimum_exchange_rate: Fraction | None = None,
    max_packet_amount: int | None = None,
    receive_max: int = MAX_UINT64,
    should_fulfill: ShouldFulfill | None = None,
    max_in_flight: int = 1,
    packet_timeout: float = 30.0,
    idle_timeout: float | None = 60.0,
    close_timeout: float = 5.0,
) -> AsyncIterator[Connection]:
    """Open a STREAM connection to ``destination`` with ``shared_secret`` (from SPSP, say).

    Our address and asset come from ``source_address``/``asset_code``/``asset_scale``, or from
    ILDCP on ``link`` when one is missing. On entry the first packet (``ConnectionNewAddress``,
    ``ConnectionAssetDetails``) goes out and the receiver's reply is awaited: an unreachable or
    foreign receiver raises :class:`~ilp.errors.StreamError`. Leaving the block closes the
    connection gracefully (an exception in the block closes it with ``APPLICATION_ERROR``).

    ``minimum_exchange_rate`` sets the minimum destination amount of every money packet
    (``floor(amount × rate)``, receiver units per ours); without it packets ask for no minimum:
    use :func:`ilp.stream.pay` for protected payments. ``max_in_flight`` Prepares go out at once.
    """
    if len(shared_secret) != 32:
        raise ValueError("a STREAM shared secret is 32 bytes")
    validate_address(destination)
    if source_address is None or asset_code is None or asset_scale is None:
        config = await fetch_config(link)
        source_address = source_address or config.client_address
        if asset_code is None or asset_scale is None:
            asset_code, asset_scale = config.asset_code, config.asset_scale
    validate_address(source_address)
    local = source_address
    if router is not None:
        token = base64.urlsafe_b64encode(os.urandom(12)).rstrip(b"=").decode("ascii")
        local = f"{source_address}.{token}"
    core = ConnectionCore(
        StreamCrypto(shared_secret),
        is_server=False,
        now=trio.current_time(),
        local_address=local,
        remote_address=destination,
        asset_code=asset_code,
        asset_scale=asset_scale,
        idle_timeout=idle_timeout,
        receive_max=receive_max,
        minimum_exchange_rate=minimum_exchange_rate,
        max_packet_amount=max_packet_amount,
    )
    body_error: BaseException | None = None
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            conn = Connection(
                core,
                link=link,
                nursery=nursery,
                packet_timeout=packet_timeout,
                close_timeout=close_timeout,
                max_in_flight=max_in_flight,
                should_fulfill=should_fulfill,
            )
            if router is not None:
                router.register(local, conn.handle_prepare)
            try:
                await _connect(conn)
                nursery.start_soon(conn._watch_idle)
                try:
                    yield conn
                except BaseException as exc:
                    await conn._abort(f"the sender stopped: {type(exc).__name__}")
                    raise
                await conn.aclose()
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                if router is not None:
                    router.unregister(local)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _, rest = group.split(trio.Cancelled)  # (subgroup(predicate) would test the group too)
        if rest is None:
            raise  # only cancellations: they belong to an enclosing cancel scope
        if body_error is not None and all(exc is body_error for exc in rest.exceptions):
            failure = body_error  # the block's own exception, or StreamError from connecting
        else:
            raise StreamError(f"the STREAM connection to {destination} failed") from group
    if failure is not None:
        raise failure


async def _connect(conn: Connection) -> None:
    """Send the first packet and wait for the receiver's authenticated reply."""
    core = conn.core
    packet = core.next_packet(trio.current_time())
    if packet is None:  # pragma: no cover - a new client always has its address to announce
        raise StreamError("nothing to send to open the connection")
    result = await conn._send_packet(packet)
    if result.stream_reply is None:
        reply = result.reply
        detail = ""
        if isinstance(reply, Reject):
            by = f" by {reply.triggered_by}" if reply.triggered_by else ""
            text = f": {reply.message}" if reply.message else ""
            detail = f"{reply.code} {reply.code.description}{by}{text}"
        else:
            detail = "a Fulfill without a STREAM reply"
        if not core.closed:
            core.close(ErrorCode.NO_ERROR, "")
        raise StreamError(
            f"could not open a STREAM connection to {core.remote_address}: {detail}. Check the "
            "destination address and shared secret (they come from the receiver, e.g. by SPSP)."
        )
    if core.closed:
        reason = core.close_reason
        assert reason is not None
        raise StreamError(f"the receiver refused the STREAM connection: {reason.describe()}")
