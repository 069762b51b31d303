"""Pay over STREAM: :func:`pay` and :func:`quote` on any :class:`~ilp.link.IlpLink`.

A standalone, send-only STREAM client, like @interledger/pay: it speaks STREAM directly over the
link, probes the exchange rate and the path's packet limit with unfulfillable packets, then sends
money on stream 1 with several Prepares in flight, and closes the connection. The decisions live
in the sans-I/O :class:`~ilp.stream.pay_core.PaymentCore`; this module encrypts, sends, waits.
Over a link with ``send_nowait`` (see :class:`~ilp.link.IlpLink`) each reply is settled in the
link's callback, which sends the next Prepares at once: no task per packet.

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

import contextvars
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from hashlib import sha256 as _sha256

import trio

from ..address import is_valid_address
from ..errors import DecodeError, StreamError
from ..link import IlpLink, Reply, ReplyCallback
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

_BATCH = 64
"""At most this many Prepares leave in one go without a checkpoint (see ``_Sender._pump``)."""

ProgressCallback = Callable[[PaymentProgress], object]


class QuoteError(StreamError):
    """A quote could not be made; ``failure`` says why (no money moved)."""

    def __init__(self, failure: PaymentFailure) -> None:
        self.failure = failure
        super().__init__(f"could not quote the payment: {failure}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _link_failed(exc: Exception) -> str:
    return f"the link failed: {type(exc).__name__}: {exc}"


class _Sender:
    """Runs a :class:`PaymentCore` over a link.

    Each Prepare goes out through the link's ``send_nowait`` when it has one, and its reply is
    settled in the callback, which sends at once whatever the core then allows: no task per
    packet. Otherwise (or when ``send_nowait`` declines a Prepare) a task awaits ``link.send``
    and does the same when the reply comes. The loop task only keeps the timers (the core's
    :meth:`~PaymentCore.next_wakeup`, and the expiry of Prepares whose link never answered) and
    notices when the payment is over.
    """

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
        nowait = getattr(link, "send_nowait", None)
        self._send_nowait: Callable[[Prepare, ReplyCallback], bool] | None = (
            nowait if callable(nowait) else None
        )
        self._destination = destination
        self._crypto = StreamCrypto(shared_secret)
        self._core = core
        self._expiry = packet_expiry
        self._expiry_delta = timedelta(seconds=packet_expiry)
        self._expiry_us = self._expiry_delta // _MICROSECOND
        self._expiry_ms = -1
        self._expiry_at = _EPOCH
        self._clock = clock
        self._on_progress = on_progress
        # on_progress runs where a reply arrives (maybe a task of the link's): give it the
        # caller's context variables all the same.
        self._context = contextvars.copy_context()
        self._nursery: trio.Nursery | None = None
        self._probes: set[trio.CancelScope] = set()
        self._pending: dict[PacketRequest, float] = {}
        """Prepares sent by ``send_nowait``, awaiting their callback: the time to give up."""
        self._sleeper: trio.lowlevel.Task | None = None
        """The loop task while it sleeps."""
        self._timer_at = math.inf
        """When the sleeping loop task wakes up by itself."""
        self._held = False
        """The loop task was woken or interrupted (maybe by the caller's cancellation): nothing
        more is sent until it has looked."""
        self._pumping = False
        self._early: list[tuple[PacketRequest, bytes | None, Reply | None, str]] = []
        """Replies that came while :meth:`_pump` was sending, to settle once it has sent all."""
        self._more = False
        self._abandoning = False
        self.callback_error: BaseException | None = None

    def _prepare(self, request: PacketRequest) -> tuple[Prepare, bytes | None]:
        crypto = self._crypto
        data = crypto.encrypt_packet(request.packet)
        fulfillment: bytes | None = None
        if request.fulfillable:
            fulfillment = secret = crypto.fulfillment(data)
            condition = _sha256(secret).digest()  # crypto.condition(data), one HMAC less
        else:
            condition = os.urandom(32)
        prepare = Prepare(
            request.source_amount,
            self._expires_at(),
            condition,
            self._destination,
            data,
        )
        return prepare, fulfillment

    def _expires_at(self) -> datetime:
        """Now plus ``packet_expiry``, to the millisecond (what the wire carries).

        With the default clock, from :func:`time.time_ns` and one datetime per millisecond:
        Prepares sent in the same millisecond share it, and the Prepare need not round it.
        """
        if self._clock is not _utc_now:
            return self._clock() + self._expiry_delta
        ms = (time.time_ns() // 1000 + self._expiry_us) // 1000
        if ms != self._expiry_ms:
            self._expiry_ms = ms
            self._expiry_at = _EPOCH + timedelta(milliseconds=ms)
        return self._expiry_at

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
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._loop()
                except trio.Cancelled as exc:
                    cancelled = exc
                    self._core.cancel(trio.current_time())
                    # Once a Prepare has left, its outcome must be known to count the money:
                    # wait for the money in flight (at most until it expires), send nothing.
                    with trio.CancelScope(shield=True):
                        await self._loop()
                # Probes cannot be fulfilled: stop waiting for them. (Tasks sending money are
                # shielded; none is left once the core is finished.)
                self._abandoning = True
                self._pending.clear()
                for scope in self._probes:
                    scope.cancel()
        finally:
            # Whatever comes back later (abandoned probes) finds nothing to settle.
            self._abandoning = True
            self._pending.clear()
        return cancelled

    async def _loop(self) -> None:
        core = self._core
        while True:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._held = self._more = False
            now = trio.current_time()
            if self._pending:
                self._expire(now)
            self._pump(in_loop=True)
            if core.finished:
                return
            if self._more:
                at = -math.inf  # a link answered at once, many times: checkpoint, go on
            else:
                wakeup = core.next_wakeup(now)
                at = math.inf if wakeup is None else wakeup
                if self._pending:
                    at = min(at, *self._pending.values())
            self._timer_at = at
            with trio.move_on_at(at):
                self._sleeper = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        # Runs synchronously when the loop's timer fires or the caller cancels: from now on no
        # callback sends, so nothing leaves after a cancellation.
        self._sleeper = None
        self._held = True
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        task = self._sleeper
        if task is not None:
            self._sleeper = None
            self._held = True
            trio.lowlevel.reschedule(task)

    def _expire(self, now: float) -> None:
        for request in [r for r, at in self._pending.items() if at <= now]:
            del self._pending[request]
            self._settle(request, None, None, "no reply before the packet expired")

    def _pump(self, in_loop: bool = False) -> None:
        """Send what the core allows now; never blocks.

        Not re-entered. Replies that come at once, from inside ``send_nowait``, wait until
        everything the core allowed has left, as replies arriving over a network would; then
        they are settled and what they allow is sent. After ``_BATCH`` Prepares (only a link
        that answers at once gets there), the loop task takes over after a checkpoint.
        """
        if self._pumping or self._held:
            return
        self._pumping = True
        try:
            core = self._core
            now = trio.current_time()
            budget = _BATCH
            while True:
                # Stop when the loop task was interrupted, or (in the loop task, whose own
                # settling may have run a callback that cancelled it) the caller cancelled.
                stop = (
                    self._held
                    or not budget
                    or (in_loop and trio.current_effective_deadline() == -math.inf)
                )
                request = None if stop else core.next_request(now)
                if request is not None:
                    budget -= 1
                    self._start(request, now)
                    continue
                if not self._early:
                    break
                early, self._early = self._early, []
                for request, fulfillment, reply, problem in early:
                    self._settle(request, fulfillment, reply, problem)
                now = trio.current_time()
            if not budget:
                self._more = True
                self._wake()
        finally:
            self._pumping = False

    def _start(self, request: PacketRequest, now: float) -> None:
        prepare, fulfillment = self._prepare(request)
        send_nowait = self._send_nowait
        if send_nowait is not None:
            give_up = now + self._expiry + _REPLY_GRACE
            pending = self._pending
            pending[request] = give_up

            def on_reply(reply: Reply) -> None:
                if pending.pop(request, None) is None:
                    return  # settled already (expired), or pay() is over
                if self._pumping:
                    self._early.append((request, fulfillment, reply, ""))
                else:
                    self._settle(request, fulfillment, reply, "")
                    self._next()

            try:
                taken = send_nowait(prepare, on_reply)
            except Exception as exc:
                if pending.pop(request, None) is not None:
                    self._early.append((request, None, None, _link_failed(exc)))
                return
            if taken:
                if give_up < self._timer_at:
                    self._wake()
                return
            if pending.pop(request, None) is None:
                return  # answered, yet declined: a link breaking the contract; count it once
        assert self._nursery is not None
        self._nursery.start_soon(self._send, request, prepare, fulfillment)

    async def _send(
        self, request: PacketRequest, prepare: Prepare, fulfillment: bytes | None
    ) -> None:
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
                    problem = _link_failed(exc)
        finally:
            self._probes.discard(scope)
        if reply is None and self._abandoning and not request.fulfillable:
            return
        self._settle(request, fulfillment, reply, problem)
        self._next()

    def _settle(
        self,
        request: PacketRequest,
        fulfillment: bytes | None,
        reply: Reply | None,
        problem: str,
    ) -> None:
        """Feed one outcome to the core (``reply`` None: ``problem`` says why there is none)."""
        core = self._core
        now = trio.current_time()
        if reply is None:
            core.on_failure(request, problem, now)
        elif type(reply) is Fulfill and reply.fulfillment != fulfillment:
            core.on_failure(
                request, "the link returned a fulfillment that does not match the condition", now
            )
        else:
            core.on_reply(request, reply, self._read_reply(reply), now)
        if self._on_progress is not None and request.kind is PacketKind.MONEY:
            try:
                self._context.run(self._on_progress, core.progress())
            except BaseException as exc:
                # Whatever it raises (KeyboardInterrupt too) stops the payment and reaches the
                # caller from pay(), on every path: never the link's task, where a callback may
                # run, nor a task of pay()'s nursery, which would lose the money in flight.
                if self.callback_error is None:
                    self.callback_error = exc
                core.cancel(now)

    def _next(self) -> None:
        """After a reply: send what follows, and wake the loop task if its timer must change."""
        if self._abandoning:
            return
        self._pump()
        if self._sleeper is not None:
            core = self._core
            if core.finished:
                self._wake()
            else:
                wakeup = core.next_wakeup(trio.current_time())
                if wakeup is not None and wakeup < self._timer_at:
                    self._wake()

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
    packet expiries (default: now in UTC). ``on_progress`` is called after every money reply; it
    must not block (over a link with ``send_nowait`` it runs in the link's task).

    Raises :class:`PaymentSetupError` for invalid arguments only; an exception raised by
    ``on_progress`` (any, ``KeyboardInterrupt`` too) stops the payment and is re-raised by
    ``pay()`` once the packets in flight are settled, with a note (PEP 678) of the amounts sent
    and delivered.
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
    error = sender.callback_error
    if error is not None:
        # The caller gets its own exception back; the note says what the payment did.
        error.add_note(
            f"pay() stopped by on_progress: {result.amount_sent} sent (source units), "
            f"{result.amount_delivered} delivered (destination units), in "
            f"{result.packets_fulfilled} fulfilled packets; none left in flight"
        )
        raise error
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
