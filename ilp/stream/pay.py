"""Pay over STREAM: :func:`pay` and :func:`quote` on any :class:`~ilp.link.IlpLink`.

A standalone, send-only STREAM client, like @interledger/pay: it speaks STREAM directly over the
link, probes the exchange rate and the path's packet limit with unfulfillable packets, then sends
money on stream 1 with several Prepares in flight, and closes the connection. The decisions live
in the sans-I/O :class:`~ilp.stream.pay_core.PaymentCore`; this module encrypts, sends, waits.

::

    async with open_btp_client(url) as link:
        result = await pay(link, destination, shared_secret, source_amount=1_000_000)
    print(result.status, result.amount_sent, result.amount_delivered)

:func:`pay` never raises because a payment failed or stopped early: the result says what was sent
and delivered, and why it ended (``result.error``). Only misuse raises
:class:`~ilp.stream.pay_core.PaymentSetupError`.

Cancellation: when the caller's cancel scope or deadline fires, no new packet leaves; packets in
flight are awaited until they are answered or expire (``packet_expiry``), and :func:`pay` *returns*
the result, with ``error.kind`` ``CANCELLED``, so that code like ::

    with trio.move_on_after(10):
        result = await pay(...)

gets it. Trio cancellation is level-triggered: the scope stays cancelled, and the caller's next
checkpoint inside it raises as usual.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import trio

from ..address import is_valid_address
from ..errors import DecodeError, StreamError
from ..link import IlpLink
from ..packet import Fulfill, Prepare, Reject
from .crypto import StreamCrypto
from .packet import StreamPacket
from .pay_core import (
    AssetDetails,
    FailureKind,
    PacketKind,
    PacketRequest,
    PaymentCore,
    PaymentFailure,
    PaymentProgress,
    PaymentResult,
    PaymentSetupError,
    PaymentStatus,
    Quote,
)

__all__ = [
    "AssetDetails",
    "FailureKind",
    "PaymentFailure",
    "PaymentProgress",
    "PaymentResult",
    "PaymentSetupError",
    "PaymentStatus",
    "Quote",
    "QuoteError",
    "pay",
    "quote",
]

_CLOSE_WAIT = 5.0
"""At most this long (seconds) for the reply to the final ConnectionClose packet."""

_REPLY_GRACE = 1.0
"""Extra seconds past a Prepare's expiry to wait for the link's own answer (R00, T01...)."""

ProgressCallback = Callable[[PaymentProgress], object]


class QuoteError(StreamError):
    """A quote could not be made; ``failure`` says why (no money moved)."""

    def __init__(self, failure: PaymentFailure) -> None:
        self.failure = failure
        super().__init__(f"could not quote the payment: {failure}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Sender:
    """Runs a :class:`PaymentCore` over a link: one task per Prepare in flight."""

    def __init__(
        self,
        link: IlpLink,
        destination: str,
        shared_secret: bytes,
        core: PaymentCore,
        packet_expiry: float,
        clock: Callable[[], datetime],
        on_progress: ProgressCallback | None,
    ) -> None:
        self._link = link
        self._destination = destination
        self._crypto = StreamCrypto(shared_secret)
        self._core = core
        self._expiry = packet_expiry
        self._expiry_delta = timedelta(seconds=packet_expiry)
        self._clock = clock
        self._on_progress = on_progress
        self._wake = trio.Event()
        self._probes: set[trio.CancelScope] = set()
        self._abandoning = False
        self.callback_error: Exception | None = None

    def _prepare(self, request: PacketRequest) -> tuple[Prepare, bytes | None]:
        crypto = self._crypto
        data = crypto.encrypt_packet(request.packet)
        if request.fulfillable:
            fulfillment: bytes | None = crypto.fulfillment(data)
            condition = crypto.condition(data)
        else:
            fulfillment = None
            condition = os.urandom(32)
        prepare = Prepare(
            request.source_amount,
            self._clock() + self._expiry_delta,
            condition,
            self._destination,
            data,
        )
        return prepare, fulfillment

    def _read_reply(self, reply: Fulfill | Reject) -> StreamPacket | None:
        data = reply.data
        if not data or (type(reply) is Reject and reply.code == "F08"):
            return None
        try:
            return self._crypto.decrypt_packet(data)
        except DecodeError:
            return None

    async def run(self) -> trio.Cancelled | None:
        """Send until the core is finished; returns the caller's cancellation if there was one."""
        cancelled: trio.Cancelled | None = None
        async with trio.open_nursery() as nursery:
            try:
                await self._loop(nursery)
            except trio.Cancelled as exc:
                cancelled = exc
                self._core.cancel(trio.current_time())
            # Probes cannot be fulfilled: stop waiting for them. Money in flight is awaited (its
            # tasks are shielded until the packet expires) before the nursery closes.
            self._abandoning = True
            for scope in self._probes:
                scope.cancel()
        return cancelled

    async def _loop(self, nursery: trio.Nursery) -> None:
        core = self._core
        while True:
            now = trio.current_time()
            request = core.next_request(now)
            while request is not None:
                nursery.start_soon(self._send, request)
                request = core.next_request(now)
            if core.finished:
                return
            wakeup = core.next_wakeup(now)
            self._wake = trio.Event()
            with trio.move_on_at(math.inf if wakeup is None else wakeup):
                await self._wake.wait()

    async def _send(self, request: PacketRequest) -> None:
        core = self._core
        prepare, fulfillment = self._prepare(request)
        reply: Fulfill | Reject | None = None
        problem = "no reply before the packet expired"
        # Shielded: once a Prepare has left, its outcome must be known to count the money, so the
        # caller's cancellation waits for it (at most until it expires). The link answers an
        # expired Prepare itself; the deadline is a safety net for links that do not.
        deadline = trio.current_time() + self._expiry + _REPLY_GRACE
        scope = trio.CancelScope(shield=True, deadline=deadline)
        if not request.fulfillable:
            self._probes.add(scope)
        try:
            with scope:
                try:
                    reply = await self._link.send(prepare)
                except Exception as exc:
                    problem = f"the link failed: {type(exc).__name__}: {exc}"
        finally:
            self._probes.discard(scope)
        now = trio.current_time()
        if reply is None:
            if self._abandoning and not request.fulfillable:
                return
            core.on_failure(request, problem, now)
        elif type(reply) is Fulfill and reply.fulfillment != fulfillment:
            core.on_failure(
                request, "the link returned a fulfillment that does not match the condition", now
            )
        else:
            core.on_reply(request, reply, self._read_reply(reply), now)
        if self._on_progress is not None and request.kind is PacketKind.MONEY:
            try:
                self._on_progress(core.progress())
            except Exception as exc:
                if self.callback_error is None:
                    self.callback_error = exc
                core.cancel(now)
        self._wake.set()

    async def close(self) -> trio.Cancelled | None:
        """Send the core's ConnectionClose, if due; wait a little for its reply."""
        request = self._core.close_request()
        if request is None:
            return None
        prepare, _ = self._prepare(request)
        try:
            with trio.move_on_after(min(self._expiry, _CLOSE_WAIT)):
                await self._link.send(prepare)
        except trio.Cancelled as exc:
            return exc
        except Exception:  # noqa: S110 -- closing is a courtesy: the payment is already over
            pass
        return None


def _setup(
    destination: str,
    shared_secret: bytes,
    packet_expiry: float,
) -> None:
    if not isinstance(destination, str) or not is_valid_address(destination):
        raise PaymentSetupError(f"invalid destination address {str(destination)[:80]!r}")
    if not isinstance(shared_secret, bytes | bytearray) or len(shared_secret) != 32:
        raise PaymentSetupError("the shared secret must be 32 bytes")
    if not packet_expiry > 0:
        raise PaymentSetupError(f"packet_expiry must be positive, got {packet_expiry!r}")


async def pay(
    link: IlpLink,
    destination: str,
    shared_secret: bytes,
    *,
    source_amount: int | None = None,
    delivery_amount: int | None = None,
    slippage: Fraction = Fraction(1, 100),
    min_exchange_rate: Fraction | None = None,
    source_asset: AssetDetails | tuple[str, int] | None = None,
    source_address: str | None = None,
    max_in_flight: int = 20,
    packet_expiry: float = 30.0,
    probe_timeout: float = 10.0,
    idle_timeout: float = 30.0,
    clock: Callable[[], datetime] | None = None,
    on_progress: ProgressCallback | None = None,
) -> PaymentResult:
    """Pay ``destination`` over STREAM and return what happened.

    Give ``source_amount`` (fixed send: send exactly this much, in source units) or
    ``delivery_amount`` (fixed delivery: deliver at least this much, in destination units), not
    both. Each money packet must deliver at least ``source x min_exchange_rate`` or the receiver
    rejects it; the minimum rate defaults to the probed rate less ``slippage``. Never more than the
    source amount (for fixed delivery: ``ceil(delivery / min_exchange_rate)``) leaves, even counting
    packets in flight.

    ``source_asset`` (code, scale) is sent to the receiver in ``ConnectionAssetDetails``.
    ``source_address`` goes into ``ConnectionNewAddress``; leave it ``None`` (an empty address,
    which tells ilp-protocol-stream receivers not to send packets back) unless the receiver
    insists on one. At most ``max_in_flight`` Prepares are in flight; each expires after
    ``packet_expiry`` seconds. Probing gives up after ``probe_timeout`` seconds, the payment after
    ``idle_timeout`` seconds without a fulfilled packet. ``clock`` gives the wall-clock time for
    packet expiries (default: now in UTC). ``on_progress`` is called after every money reply.

    Raises :class:`PaymentSetupError` for invalid arguments only; an exception raised by
    ``on_progress`` stops the payment and is re-raised once the packets in flight are settled.
    """
    _setup(destination, shared_secret, packet_expiry)
    core = PaymentCore(
        now=trio.current_time(),
        source_amount=source_amount,
        delivery_amount=delivery_amount,
        slippage=slippage,
        min_exchange_rate=min_exchange_rate,
        source_asset=source_asset,
        source_address=source_address,
        max_in_flight=max_in_flight,
        probe_timeout=probe_timeout,
        idle_timeout=idle_timeout,
    )
    sender = _Sender(
        link,
        destination,
        bytes(shared_secret),
        core,
        packet_expiry,
        clock or _utc_now,
        on_progress,
    )
    cancelled = await sender.run()
    result = core.result(trio.current_time())
    if cancelled is None:
        await sender.close()
    if sender.callback_error is not None:
        raise sender.callback_error
    return result


async def quote(
    link: IlpLink,
    destination: str,
    shared_secret: bytes,
    *,
    source_amount: int | None = None,
    delivery_amount: int | None = None,
    slippage: Fraction = Fraction(1, 100),
    min_exchange_rate: Fraction | None = None,
    source_asset: AssetDetails | tuple[str, int] | None = None,
    source_address: str | None = None,
    max_in_flight: int = 20,
    packet_expiry: float = 30.0,
    probe_timeout: float = 10.0,
    clock: Callable[[], datetime] | None = None,
) -> Quote:
    """Probe the path as :func:`pay` would, without moving money, and say what it would do.

    Arguments as for :func:`pay`. The connection is left open (no ConnectionClose), so the same
    destination and secret can be paid afterwards. Raises :class:`QuoteError` when probing fails;
    the caller's cancellation propagates as usual.
    """
    _setup(destination, shared_secret, packet_expiry)
    core = PaymentCore(
        now=trio.current_time(),
        source_amount=source_amount,
        delivery_amount=delivery_amount,
        slippage=slippage,
        min_exchange_rate=min_exchange_rate,
        source_asset=source_asset,
        source_address=source_address,
        max_in_flight=max_in_flight,
        probe_timeout=probe_timeout,
        quote_only=True,
    )
    sender = _Sender(
        link, destination, bytes(shared_secret), core, packet_expiry, clock or _utc_now, None
    )
    cancelled = await sender.run()
    if cancelled is not None:
        raise cancelled
    failure = core.failure
    if failure is not None:
        raise QuoteError(failure)
    return core.quote(trio.current_time())
