"""The STREAM payment engine without I/O: probing, packet amounts, congestion control. Sans-I/O.

:class:`PaymentCore` decides what to send and reads what came back; the trio layer
(:mod:`ilp.stream.pay`) encrypts, sends, waits and feeds replies in. Time is an explicit ``now``
(seconds on any monotonic clock); the core never reads a clock, makes no random bytes and does no
I/O.

A payment runs in two phases:

1. **Probing.** Unfulfillable Prepares (the trio layer gives them a random condition) of 0 and
   10^12 ... 10^3 source units. The receiver rejects each with F99 and an encrypted STREAM reply
   that says how much arrived, which bounds the exchange rate; F08 rejects bound the path's
   maximum packet amount (scaled from their data, or by binary search when they carry none). The
   first packets carry ``ConnectionNewAddress`` and, when known, ``ConnectionAssetDetails``.
2. **Paying.** Fulfillable Prepares with a ``StreamMoney`` frame on stream 1. Each carries, as the
   STREAM ``prepare_amount``, the least amount the receiver may accept:
   ``ceil(source_amount x minimum_rate)``, so no hop can take more than the minimum rate allows.
   The minimum rate is the caller's, or the probed rate less the slippage. Source amounts in flight
   count against the maximum source amount, so even if every packet in flight is fulfilled, no
   more than that leaves.

Rates are :class:`~fractions.Fraction` objects in destination units per source unit (the integer
units on the wire); amounts are ints. Nothing here uses floats for money.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, NamedTuple

from ..address import is_valid_address
from ..errors import StreamError
from ..oer import MAX_UINT64
from ..packet import Fulfill, PacketType, Reject
from .packet import (
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionNewAddress,
    ErrorCode,
    Frame,
    StreamClose,
    StreamMaxMoney,
    StreamMoney,
    StreamPacket,
    StreamReceipt,
)

__all__ = [
    "DEFAULT_STREAM_ID",
    "MAX_PROBE_AMOUNT",
    "AssetDetails",
    "FailureKind",
    "PacketKind",
    "PacketRequest",
    "PaymentCore",
    "PaymentFailure",
    "PaymentProgress",
    "PaymentResult",
    "PaymentSetupError",
    "PaymentStatus",
    "Quote",
]

DEFAULT_STREAM_ID: Final = 1
"""The stream that carries the money (client-opened streams are odd)."""

MAX_PROBE_AMOUNT: Final = 10**12
"""The largest probe; a path that carries it is treated as having no packet limit."""

_PROBE_AMOUNTS: Final = (0, *(10**e for e in range(12, 2, -1)))
_MAX_SEQUENCE: Final = 2**31
"""Both directions share one key: close the connection before 2^31 packets (SPEC §9.2)."""

_INITIAL_WINDOW: Final = 2
_BACKOFF_START: Final = 0.1
_BACKOFF_MAX: Final = 5.0
_U64: Final = MAX_UINT64


class PaymentSetupError(StreamError, ValueError):
    """The caller asked for something impossible (both or neither amount, a float rate, ...)."""


class AssetDetails(NamedTuple):
    """An account's asset: code (``"USD"``) and scale (2 means 1 unit = 0.01 USD)."""

    code: str
    scale: int


class PaymentStatus(enum.Enum):
    """How a payment ended."""

    COMPLETE = "complete"
    """The whole source amount was sent (fixed send) or the whole amount delivered (fixed delivery)."""
    PARTIAL = "partial"
    """It ended early after some money moved; ``amount_sent``/``amount_delivered`` say how much."""
    FAILED = "failed"
    """It ended early and no money moved."""


class FailureKind(enum.Enum):
    """Why a payment or quote ended early."""

    INSUFFICIENT_EXCHANGE_RATE = "insufficient_exchange_rate"
    """The rate is below the minimum, or packets would deliver less than their minimum."""
    RATE_PROBE_FAILED = "rate_probe_failed"
    """No exchange rate or path capacity could be established in time."""
    REJECTED = "rejected"
    """A final ILP reject (``code``, ``triggered_by``) from a connector or the receiver."""
    MAX_PACKET_AMOUNT = "max_packet_amount"
    """The path will not carry a packet of even one unit."""
    CLOSED_BY_RECEIVER = "closed_by_receiver"
    """The receiver closed the connection or the money stream."""
    RECEIVE_MAX = "receive_max"
    """The receiver will not accept more on the stream (StreamMaxMoney)."""
    DESTINATION_ASSET_CONFLICT = "destination_asset_conflict"
    """The receiver changed its asset details mid-connection."""
    RECEIVER_PROTOCOL_VIOLATION = "receiver_protocol_violation"
    """A Fulfill without an authentic STREAM reply, or below the minimum destination amount."""
    IDLE_TIMEOUT = "idle_timeout"
    """No Fulfill for ``idle_timeout`` seconds."""
    LINK_ERROR = "link_error"
    """The link raised, gave a bad fulfillment, or did not answer before the packet expired."""
    SEQUENCE_EXHAUSTED = "sequence_exhausted"
    """2^31 packets were sent on the connection."""
    CANCELLED = "cancelled"
    """The caller's cancel scope or deadline stopped the payment."""


def _reject_text(reject: Reject) -> str:
    """``T04 Insufficient Liquidity: <message>``, for failure messages."""
    text = f": {reject.message}" if reject.message else ""
    return f"{reject.code} {reject.code.description}{text}"


@dataclass(frozen=True, slots=True)
class PaymentFailure:
    """Why a payment ended early: the kind, an ILP error code and its origin when one caused it
    (for an idle timeout: the last Reject, if any, such as a ``T04`` of a credit limit)."""

    kind: FailureKind
    message: str
    code: str | None = None
    triggered_by: str | None = None

    def __str__(self) -> str:
        origin = f" ({self.code}" if self.code else ""
        if origin:
            origin += f" from {self.triggered_by})" if self.triggered_by else ")"
        return f"{self.kind.value}{origin}: {self.message}"


@dataclass(frozen=True, slots=True)
class PaymentProgress:
    """Running totals, passed to the ``on_progress`` callback after every reply."""

    amount_sent: int
    amount_delivered: int
    source_amount_in_flight: int
    destination_amount_in_flight: int
    packets_fulfilled: int
    packets_rejected: int


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """What a payment did. :func:`~ilp.stream.pay.pay` returns it and never raises for a failure.

    ``amount_sent`` is in source units and counts fulfilled packets only; ``amount_delivered`` is
    in destination units: what the receiver claimed in its fulfill replies, and never less than
    the minimum each fulfilled packet carried. Rates are destination units per source unit.
    ``error`` says why it ended early (``None`` when complete).
    """

    status: PaymentStatus
    amount_sent: int
    amount_delivered: int
    source_asset: AssetDetails | None
    destination_asset: AssetDetails | None
    packets_fulfilled: int
    packets_rejected: int
    probed_rate: Fraction | None
    """Lower bound of the rate measured by the probes (and later replies)."""
    min_exchange_rate: Fraction | None
    """The least rate every money packet enforced."""
    max_packet_amount: int | None
    """Largest packet the path carries, in source units; ``None`` if no limit was found."""
    duration: float
    """Seconds from the first probe to the last reply."""
    error: PaymentFailure | None = None
    receipt: bytes | None = None
    """The latest STREAM receipt (RFC 39) the receiver sent for the money stream, if any."""

    @property
    def exchange_rate(self) -> Fraction | None:
        """The rate realized by the fulfilled packets: ``amount_delivered / amount_sent``."""
        return Fraction(self.amount_delivered, self.amount_sent) if self.amount_sent else None


@dataclass(frozen=True, slots=True)
class Quote:
    """What a payment would do, from probing the path (no money moves).

    ``max_source_amount`` is the most the payment may send (fixed send: the amount; fixed
    delivery: ``ceil(delivery / min_exchange_rate)``). ``min_delivery_amount`` is what it must
    deliver at least if it completes, ``estimated_delivery_amount`` what it should deliver at the
    probed rate.
    """

    source_asset: AssetDetails | None
    destination_asset: AssetDetails | None
    probed_rate: Fraction
    probed_rate_upper: Fraction
    """Exclusive upper bound of the rate: the real rate lies in [probed_rate, probed_rate_upper)."""
    min_exchange_rate: Fraction
    max_packet_amount: int | None
    max_source_amount: int
    min_delivery_amount: int
    estimated_source_amount: int
    estimated_delivery_amount: int
    duration: float


class PacketKind(enum.Enum):
    """What a Prepare is for."""

    PROBE = "probe"
    MONEY = "money"
    CLOSE = "close"


@dataclass(frozen=True, slots=True, eq=False)
class PacketRequest:
    """One Prepare to send: amount, plaintext STREAM packet, and whether it may be fulfilled.

    A fulfillable request gets the condition derived from its encrypted data; any other gets 32
    random bytes, so nobody can fulfill it.
    """

    sequence: int
    kind: PacketKind
    source_amount: int
    min_destination_amount: int
    fulfillable: bool
    packet: StreamPacket
    high_destination_amount: int = 0
    rounding_correction: bool = False
    epoch: int = 0


# --------------------------------------------------------------------------------------------
# Exact helpers


def _floor_ratio(amount: int, num: int, den: int) -> int:
    """``floor(amount x num / den)``, exactly (``den`` > 0)."""
    return amount * num // den


def _ceil_ratio(amount: int, num: int, den: int) -> int:
    """``ceil(amount x num / den)``, exactly (``den`` > 0)."""
    return -(-amount * num // den)


def _mul_floor(amount: int, rate: Fraction) -> int:
    return _floor_ratio(amount, rate.numerator, rate.denominator)


def _mul_ceil(amount: int, rate: Fraction) -> int:
    return _ceil_ratio(amount, rate.numerator, rate.denominator)


def _as_fraction(value: object, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, Fraction | int):
        raise PaymentSetupError(
            f"{name} must be a fractions.Fraction or an int, got {type(value).__name__}"
            " (floats are not accepted for rates)"
        )
    return Fraction(value)


class _MaxPacketState(enum.Enum):
    UNKNOWN = 0
    IMPRECISE = 1
    PRECISE = 2


class _MaxPacket:
    """The path's maximum packet amount, in source units, learned from F08 rejects.

    F08 data (received, maximum) scales to ``floor(sent * maximum / received)``; an F08 without
    usable data only says ``sent - 1`` is an upper bound, and a binary search between the largest
    amount that got through and that bound finds the limit.
    """

    __slots__ = ("greatest_ack", "limit", "state")

    def __init__(self) -> None:
        self.state = _MaxPacketState.UNKNOWN
        self.limit = _U64
        self.greatest_ack = 0

    def next_amount(self) -> int:
        if self.state is _MaxPacketState.IMPRECISE:
            ack = min(self.greatest_ack, self.limit)
            return ack + -(-(self.limit - ack) // 2)
        return self.limit

    @property
    def known(self) -> int | None:
        return None if self.state is _MaxPacketState.UNKNOWN else self.limit

    def reduce(self, sent: int, received: int | None, maximum: int | None) -> None:
        if received is not None and maximum is not None and received > maximum:
            new, state = sent * maximum // received, _MaxPacketState.PRECISE
        else:
            new, state = sent - 1, _MaxPacketState.IMPRECISE
        if self.state is not _MaxPacketState.UNKNOWN and new >= self.limit:
            return
        self.state, self.limit = state, max(new, 0)
        self.greatest_ack = min(self.greatest_ack, self.limit)

    def ack(self, sent: int) -> None:
        if sent > self.greatest_ack:
            self.greatest_ack = sent
        if self.state is _MaxPacketState.IMPRECISE and self.greatest_ack >= self.limit:
            self.state = _MaxPacketState.PRECISE


class _Rate:
    """Bounds of the exchange rate: ``low <= rate < high``, narrowed by every authentic reply.

    Connectors floor, so a reply saying ``d`` of ``s`` arrived means ``d/s <= rate < (d+1)/s``.
    A sample outside the bounds means the rate moved: the bounds restart from it.

    The bounds are also kept as integer numerators and denominators (and ``most``, the largest
    amount that converts to at most 2^64 - 1 at ``high``), so that the per-packet arithmetic
    builds no Fraction.
    """

    __slots__ = ("high", "high_den", "high_num", "known", "low", "low_den", "low_num", "most")

    def __init__(self) -> None:
        self.known = False
        self._set_low(Fraction(0))
        self._set_high(Fraction(_U64))

    def _set_low(self, low: Fraction) -> None:
        self.low = low
        self.low_num = low.numerator
        self.low_den = low.denominator

    def _set_high(self, high: Fraction) -> None:
        # high > 0 always: it starts at 2^64 - 1 and samples give (arrived + 1) / sent.
        self.high = high
        self.high_num = num = high.numerator
        self.high_den = den = high.denominator
        self.most = _floor_ratio(_U64 + 1, den, num)  # floor(2^64 / high)

    def update(self, sent: int, arrived: int) -> None:
        if sent <= 0:
            return
        # Fast path: most replies repeat a sample already taken (same lower bound, no narrower
        # upper bound); skip building Fractions for them.
        if (
            self.known
            and arrived * self.low_den == sent * self.low_num
            and (arrived + 1) * self.high_den >= sent * self.high_num
        ):
            return
        lo = Fraction(arrived, sent)
        hi = Fraction(arrived + 1, sent)
        if not self.known or hi <= self.low or lo >= self.high:
            self.known = True
            self._set_low(lo)
            self._set_high(hi)
            return
        if lo > self.low:
            self._set_low(lo)
        if hi < self.high:
            self._set_high(hi)


class _Phase(enum.Enum):
    PROBING = 0
    PAYING = 1
    DONE = 2


class PaymentCore:
    """The state of one STREAM payment (or quote), driven by its caller.

    The caller loops: take requests from :meth:`next_request` until it returns ``None``, send
    them, feed each outcome to :meth:`on_reply` (or :meth:`on_failure` when the link gave none),
    and, when idle, wait for a reply or until :meth:`next_wakeup`. :attr:`finished` turns true
    once nothing more will be sent and nothing is in flight; :meth:`result` then tells the story
    and :meth:`close_request` gives the ConnectionClose packet to send, if one is due.

    Exactly one of ``source_amount`` (fixed send) and ``delivery_amount`` (fixed delivery) must be
    given. ``min_exchange_rate``, when given, replaces ``probed rate x (1 - slippage)``.
    """

    def __init__(
        self,
        *,
        now: float,
        source_amount: int | None = None,
        delivery_amount: int | None = None,
        slippage: Fraction = Fraction(1, 100),
        min_exchange_rate: Fraction | None = None,
        source_asset: AssetDetails | tuple[str, int] | None = None,
        source_address: str | None = None,
        max_in_flight: int = 20,
        probe_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        quote_only: bool = False,
    ) -> None:
        if (source_amount is None) == (delivery_amount is None):
            raise PaymentSetupError(
                "give exactly one of source_amount (fixed send) and delivery_amount (fixed delivery)"
            )
        target = source_amount if source_amount is not None else delivery_amount
        if isinstance(target, bool) or not isinstance(target, int) or target <= 0:
            raise PaymentSetupError(f"the amount must be a positive int, got {target!r}")
        slip = _as_fraction(slippage, "slippage")
        if not 0 <= slip < 1:
            raise PaymentSetupError(f"slippage must be in [0, 1), got {slip}")
        min_rate = None
        if min_exchange_rate is not None:
            min_rate = _as_fraction(min_exchange_rate, "min_exchange_rate")
            if min_rate < 0:
                raise PaymentSetupError(f"min_exchange_rate must not be negative, got {min_rate}")
        asset = None
        if source_asset is not None:
            code, scale = source_asset
            if not isinstance(scale, int) or not 0 <= scale <= 255:
                raise PaymentSetupError(f"asset scale must be an int in 0..255, got {scale!r}")
            asset = AssetDetails(str(code), scale)
        if source_address is not None and not is_valid_address(source_address):
            raise PaymentSetupError(f"invalid source address {source_address[:80]!r}")
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise PaymentSetupError(f"max_in_flight must be an int >= 1, got {max_in_flight!r}")

        self._fixed_delivery = delivery_amount is not None
        self._source_amount = source_amount
        self._delivery_amount = delivery_amount
        self._slippage = slip
        self._caller_min_rate = min_rate
        self._source_asset = asset
        self._max_in_flight = max_in_flight
        self._probe_deadline = now + probe_timeout
        self._idle_timeout = idle_timeout
        self._quote_only = quote_only
        self._started = now

        frames: list[Frame] = [ConnectionNewAddress(source_address or "")]
        if asset is not None:
            frames.append(ConnectionAssetDetails(asset.code, asset.scale))
        self._connection_frames: tuple[Frame, ...] = tuple(frames)
        self._money_frames: tuple[Frame, ...] = (StreamMoney(DEFAULT_STREAM_ID, 1),)

        self._phase = _Phase.PROBING
        self._failure: PaymentFailure | None = None
        self._sequence = 0
        self._remote_knows_us = False
        self._remote_closed = False
        self._destination_asset: AssetDetails | None = None
        self._receive_max: int | None = None
        self._remote_received = 0
        self._receipt: bytes | None = None
        self._receipt_total = -1

        self._rate = _Rate()
        self._max_packet = _MaxPacket()
        self._min_rate: Fraction | None = None
        self._min_num = 0
        self._min_den = 1
        """``_min_rate`` as integers, for the per-packet arithmetic."""
        self._max_source = 0

        # probing
        self._probe_queue: list[int] = list(_PROBE_AMOUNTS)
        self._probe_pending: set[int] = set(_PROBE_AMOUNTS)
        self._probes_in_flight = 0
        self._probe_error: PaymentFailure | None = None
        self._last_reject: Reject | None = None
        """The last Reject of a money packet: what an idle timeout reports."""
        self._probe_samples: list[tuple[int, int]] = []

        # congestion control
        self._window = min(_INITIAL_WINDOW, max_in_flight)
        self._threshold = max_in_flight
        self._acks = 0
        self._epoch = 0
        self._backoffs = 0
        self._backoff_until = float("-inf")

        # accounting
        self._in_flight = 0
        self._money_in_flight = 0
        self._source_in_flight = 0
        self._destination_in_flight = 0
        self._amount_sent = 0
        self._amount_delivered = 0
        self._fulfilled = 0
        self._rejected = 0
        self._applied_correction = False
        self._last_fulfill = now

    # ----------------------------------------------------------------------------------------
    # State

    @property
    def finished(self) -> bool:
        """Nothing more will be sent (apart from the close) and no money is in flight.

        Probes may still be in flight: they cannot be fulfilled, so the caller may abandon them.
        """
        return (
            self._phase is _Phase.DONE or self._failure is not None
        ) and self._money_in_flight == 0

    @property
    def in_flight(self) -> int:
        """Number of Prepares awaiting a reply."""
        return self._in_flight

    @property
    def failure(self) -> PaymentFailure | None:
        """Why the payment ended early, once it has."""
        return self._failure

    def progress(self) -> PaymentProgress:
        """The running totals."""
        return PaymentProgress(
            self._amount_sent,
            self._amount_delivered,
            self._source_in_flight,
            self._destination_in_flight,
            self._fulfilled,
            self._rejected,
        )

    def _fail(self, kind: FailureKind, message: str, reject: Reject | None = None) -> None:
        if self._failure is None and self._phase is not _Phase.DONE:
            code = str(reject.code) if reject is not None else None
            by = reject.triggered_by if reject is not None else None
            self._failure = PaymentFailure(kind, message, code, by)
            self._probe_queue.clear()

    def _fail_reject(self, reject: Reject, what: str) -> None:
        self._fail(FailureKind.REJECTED, f"{what} was rejected with {_reject_text(reject)}", reject)

    def cancel(self, now: float) -> None:
        """The caller stopped the payment: send nothing more (in-flight packets still count)."""
        self._fail(FailureKind.CANCELLED, "the caller's cancel scope or deadline stopped it")

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    # ----------------------------------------------------------------------------------------
    # Sending

    def next_wakeup(self, now: float) -> float | None:
        """When to call :meth:`next_request` again if no reply comes first (``None``: no timer)."""
        if self._failure is not None or self._phase is _Phase.DONE:
            return None
        deadline = (
            self._probe_deadline
            if self._phase is _Phase.PROBING
            else self._last_fulfill + self._idle_timeout
        )
        if self._backoff_until > now:
            deadline = min(deadline, self._backoff_until)
        return deadline

    def next_request(self, now: float) -> PacketRequest | None:
        """The next Prepare to send now, or ``None`` until a reply arrives or a timer fires."""
        if self._failure is not None or self._phase is _Phase.DONE:
            return None
        if self._phase is _Phase.PROBING:
            if now >= self._probe_deadline:
                if self._probe_verified():
                    # Some probes are still out; what came back is enough.
                    self._finish_probing(now)
                    return self.next_request(now)
                self._fail(
                    FailureKind.RATE_PROBE_FAILED,
                    "probing did not establish the exchange rate and path capacity in time",
                )
                return None
        elif now >= self._last_fulfill + self._idle_timeout:
            last = self._last_reject
            why = "" if last is None else f"; the last Reject: {_reject_text(last)}"
            self._fail(
                FailureKind.IDLE_TIMEOUT,
                f"no packet was fulfilled for {self._idle_timeout:g} s{why}",
                last,
            )
            return None
        if now < self._backoff_until:
            return None
        if self._sequence >= _MAX_SEQUENCE:
            self._fail(
                FailureKind.SEQUENCE_EXHAUSTED,
                "2^31 packets were sent on this connection; use a new one",
            )
            return None
        if self._phase is _Phase.PROBING:
            return self._next_probe()
        return self._next_money()

    def _frames(self) -> tuple[Frame, ...]:
        return () if self._remote_knows_us else self._connection_frames

    def _next_probe(self) -> PacketRequest | None:
        if not self._probe_queue or self._in_flight >= self._max_in_flight:
            return None
        amount = self._probe_queue.pop(0)
        seq = self._next_sequence()
        self._in_flight += 1
        self._probes_in_flight += 1
        return PacketRequest(
            seq,
            PacketKind.PROBE,
            amount,
            0,
            False,
            StreamPacket(seq, PacketType.PREPARE, 0, self._frames()),
            epoch=self._epoch,
        )

    def _next_money(self) -> PacketRequest | None:
        if self._money_in_flight >= self._window:
            return None
        available = self._max_source - self._amount_sent - self._source_in_flight
        if available <= 0:
            return None
        # Exact integer arithmetic on the bounds' numerators and denominators (see _Rate):
        # the same floors and ceilings as with Fractions, without building any.
        rate = self._rate
        low_num = rate.low_num
        low_den = rate.low_den
        # No packet may convert to more than 2^64 - 1 (ilp-connector would wrap it around).
        amount = min(available, self._max_packet.next_amount(), _U64, rate.most)
        if self._fixed_delivery:
            assert self._delivery_amount is not None
            remaining = self._delivery_amount - self._amount_delivered - self._destination_in_flight
            if remaining <= 0:
                return None
            if low_num <= 0:
                self._fail(
                    FailureKind.INSUFFICIENT_EXCHANGE_RATE,
                    "the exchange rate dropped to 0: nothing would arrive",
                )
                return None
            needed = _ceil_ratio(remaining, low_den, low_num)  # ceil(remaining / low)
            completes = needed <= amount
            if completes:
                amount = needed
        else:
            completes = amount == available

        if self._receive_max is not None:
            room = (
                self._receive_max
                - max(self._remote_received, self._amount_delivered)
                - self._destination_in_flight
            )
            cap = _floor_ratio(room + 1, rate.high_den, rate.high_num) if room > 0 else 0
            if cap < amount:
                amount, completes = cap, False
            if amount <= 0:
                if self._money_in_flight == 0:
                    self._fail(
                        FailureKind.RECEIVE_MAX,
                        f"the receiver accepts at most {self._receive_max} on the stream and has"
                        f" {max(self._remote_received, self._amount_delivered)}",
                    )
                return None

        correction = completes and not self._applied_correction
        min_dest = _ceil_ratio(amount - 1 if correction else amount, self._min_num, self._min_den)
        projected = min(_floor_ratio(amount, low_num, low_den), _U64)
        if projected < min_dest:
            self._fail(
                FailureKind.INSUFFICIENT_EXCHANGE_RATE,
                f"at the probed rate {rate.low} a packet of {amount} would deliver {projected},"
                f" below its minimum of {min_dest} (minimum rate {self._min_rate})",
            )
            return None
        high = min(_ceil_ratio(amount, rate.high_num, rate.high_den) - 1, _U64)
        if high <= 0:
            self._fail(
                FailureKind.INSUFFICIENT_EXCHANGE_RATE,
                f"a packet of {amount} would deliver nothing at the probed rate {rate.low}",
            )
            return None

        seq = self._next_sequence()
        self._in_flight += 1
        self._money_in_flight += 1
        self._source_in_flight += amount
        self._destination_in_flight += high
        if correction:
            self._applied_correction = True
        frames = self._money_frames
        if not self._remote_knows_us:
            frames = self._connection_frames + frames
        return PacketRequest(
            seq,
            PacketKind.MONEY,
            amount,
            min_dest,
            True,
            StreamPacket(seq, PacketType.PREPARE, min_dest, frames),
            high,
            correction,
            self._epoch,
        )

    def close_request(self) -> PacketRequest | None:
        """The zero-amount ConnectionClose packet to send once :attr:`finished`, if one is due.

        None for a quote (the connection stays usable), after the caller cancelled, when the
        receiver closed the connection itself, or when it never answered (no connection to close).
        """
        if self._quote_only or self._remote_closed or not self._remote_knows_us:
            return None
        failure = self._failure
        if failure is not None and failure.kind is FailureKind.CANCELLED:
            return None
        if failure is None and self._phase is _Phase.DONE:
            frame = ConnectionClose(ErrorCode.NO_ERROR, "")
        elif failure is None:
            frame = ConnectionClose(ErrorCode.APPLICATION_ERROR, "unfinished")
        elif failure.kind in (
            FailureKind.DESTINATION_ASSET_CONFLICT,
            FailureKind.RECEIVER_PROTOCOL_VIOLATION,
        ):
            frame = ConnectionClose(ErrorCode.PROTOCOL_VIOLATION, failure.kind.value)
        else:
            frame = ConnectionClose(ErrorCode.APPLICATION_ERROR, failure.kind.value)
        seq = self._next_sequence()
        return PacketRequest(
            seq,
            PacketKind.CLOSE,
            0,
            0,
            False,
            StreamPacket(seq, PacketType.PREPARE, 0, (frame,)),
        )

    # ----------------------------------------------------------------------------------------
    # Replies

    def on_failure(self, request: PacketRequest, message: str, now: float) -> None:
        """A packet settled without a usable reply: the link raised, gave a fulfillment that does
        not match, or did not answer before the packet expired. The payment ends."""
        self._release(request)
        if request.kind is PacketKind.MONEY:
            self._rejected += 1
        if request.kind is not PacketKind.CLOSE:
            self._fail(FailureKind.LINK_ERROR, message)
        self._after_reply(now)

    def _release(self, request: PacketRequest) -> None:
        self._in_flight -= 1
        if request.kind is PacketKind.PROBE:
            self._probes_in_flight -= 1
            self._probe_pending.discard(request.source_amount)
        elif request.kind is PacketKind.MONEY:
            self._money_in_flight -= 1
            self._source_in_flight -= request.source_amount
            self._destination_in_flight -= request.high_destination_amount
            if request.rounding_correction:
                self._applied_correction = False

    def on_reply(
        self,
        request: PacketRequest,
        reply: Fulfill | Reject,
        stream: StreamPacket | None,
        now: float,
    ) -> None:
        """Account for the reply to ``request``.

        ``stream`` is the decrypted STREAM packet of the reply's data, or ``None`` if there was
        none or it did not decrypt. It counts only if its sequence matches and its type fits the
        ILP reply: a Fulfill must carry a "Fulfill" STREAM packet; a Reject may carry either (the
        receiver may have fulfilled a packet a later hop rejected, as @interledger/pay accepts).
        The caller has checked that a Fulfill's fulfillment matches the condition.
        """
        fulfilled = type(reply) is Fulfill
        if stream is not None and (
            stream.sequence != request.sequence
            or (
                stream.ilp_packet_type is not PacketType.FULFILL
                and (fulfilled or stream.ilp_packet_type is not PacketType.REJECT)
            )
        ):
            stream = None
        if stream is not None:
            self._remote_knows_us = True
            self._read_frames(stream.frames)
            if request.source_amount > 0:
                if request.kind is PacketKind.PROBE and self._phase is _Phase.PROBING:
                    self._add_probe_sample(request.source_amount, stream.prepare_amount)
                else:
                    self._rate.update(request.source_amount, stream.prepare_amount)
        self._release(request)
        kind = request.kind
        if kind is PacketKind.MONEY:
            if fulfilled:
                self._money_fulfilled(request, stream, now)
            else:
                assert isinstance(reply, Reject)
                self._money_rejected(request, reply, stream, now)
        elif kind is PacketKind.PROBE:
            self._probe_reply(request, reply, stream, now)
        self._after_reply(now)

    def _read_frames(self, frames: tuple[Frame, ...]) -> None:
        for frame in frames:
            if type(frame) is StreamMaxMoney:
                if frame.stream_id == DEFAULT_STREAM_ID:
                    if self._receive_max is None or frame.receive_max > self._receive_max:
                        self._receive_max = frame.receive_max
                    if frame.total_received > self._remote_received:
                        self._remote_received = frame.total_received
            elif type(frame) is ConnectionAssetDetails:
                asset = AssetDetails(frame.source_asset_code, frame.source_asset_scale)
                if self._destination_asset is None:
                    self._destination_asset = asset
                elif asset != self._destination_asset:
                    self._fail(
                        FailureKind.DESTINATION_ASSET_CONFLICT,
                        f"the receiver changed its asset from {self._destination_asset.code}"
                        f" {self._destination_asset.scale} to {asset.code} {asset.scale}",
                    )
            elif type(frame) is ConnectionClose or (
                type(frame) is StreamClose and frame.stream_id == DEFAULT_STREAM_ID
            ):
                self._remote_closed = True
                code = frame.error_code
                name = code.name if isinstance(code, ErrorCode) else str(code)
                text = f": {frame.error_message}" if frame.error_message else ""
                what = "connection" if type(frame) is ConnectionClose else "money stream"
                self._fail(
                    FailureKind.CLOSED_BY_RECEIVER,
                    f"the receiver closed the {what} ({name}){text}",
                )
            elif type(frame) is StreamReceipt:
                self._keep_receipt(frame)

    def _keep_receipt(self, frame: StreamReceipt) -> None:
        data = frame.receipt
        if frame.stream_id != DEFAULT_STREAM_ID or len(data) != 58:
            return
        total = int.from_bytes(data[18:26], "big")
        if total > self._receipt_total:
            self._receipt_total, self._receipt = total, data

    def _money_fulfilled(
        self, request: PacketRequest, stream: StreamPacket | None, now: float
    ) -> None:
        claimed = stream.prepare_amount if stream is not None else 0
        minimum = request.min_destination_amount
        self._amount_sent += request.source_amount
        self._amount_delivered += max(claimed, minimum)
        self._fulfilled += 1
        self._last_fulfill = now
        self._max_packet.ack(request.source_amount)
        self._grow_window()
        if stream is None:
            self._fail(
                FailureKind.RECEIVER_PROTOCOL_VIOLATION,
                "a packet was fulfilled without an authentic STREAM reply; counted its minimum"
                f" of {minimum} as delivered",
            )
        elif claimed < minimum:
            self._fail(
                FailureKind.RECEIVER_PROTOCOL_VIOLATION,
                f"the receiver fulfilled a packet claiming {claimed} arrived, below its minimum"
                f" of {minimum}",
            )

    def _money_rejected(
        self, request: PacketRequest, reply: Reject, stream: StreamPacket | None, now: float
    ) -> None:
        self._rejected += 1
        self._last_reject = reply
        code = reply.code
        first = code[:1]
        if stream is not None:
            self._max_packet.ack(request.source_amount)
        if code == "F08":
            self._reduce_max_packet(request, reply)
            if self._max_packet.limit <= 0:
                self._fail(
                    FailureKind.MAX_PACKET_AMOUNT,
                    "the path does not carry packets of even 1 unit",
                    reply,
                )
        elif first == "T":
            self._back_off(request, now)
        elif code == "F99" and stream is not None:
            # The receiver said why: too little arrived (the rate moved; the next packet's check
            # ends the payment if it is now too low), a limit (StreamMaxMoney, handled above), or
            # a close (handled above). Anything else: slow down and try again.
            # A StreamMaxMoney frame explains the reject only if what arrived did not fit in the
            # window it shows; receivers attach one to every refusal (e.g. an application that
            # declined the money), and without this check such a refusal was retried at once, in
            # a tight loop, until the idle timeout.
            limit_explains = any(
                type(f) is StreamMaxMoney
                and f.stream_id == DEFAULT_STREAM_ID
                and f.receive_max - f.total_received < stream.prepare_amount
                for f in stream.frames
            )
            if stream.prepare_amount >= request.min_destination_amount and not limit_explains:
                self._back_off(request, now)
        elif code == "R01":
            self._fail(
                FailureKind.INSUFFICIENT_EXCHANGE_RATE,
                f"a packet of {request.source_amount} was too small to forward"
                f" (R01{': ' + reply.message if reply.message else ''})",
                reply,
            )
        else:
            self._fail_reject(reply, f"a packet of {request.source_amount}")

    def _reduce_max_packet(self, request: PacketRequest, reply: Reject) -> None:
        data = reply.amount_too_large()
        if data is None:
            self._max_packet.reduce(request.source_amount, None, None)
        else:
            self._max_packet.reduce(
                request.source_amount, data.received_amount, data.maximum_amount
            )

    def _probe_reply(
        self,
        request: PacketRequest,
        reply: Fulfill | Reject,
        stream: StreamPacket | None,
        now: float,
    ) -> None:
        amount = request.source_amount
        if type(reply) is Fulfill:
            # Impossible for a random condition; the caller checked the fulfillment.
            self._fail(FailureKind.LINK_ERROR, "an unfulfillable probe came back fulfilled")
            return
        assert isinstance(reply, Reject)
        if stream is not None:
            self._max_packet.ack(amount)
            self._backoffs = 0
            return
        code = reply.code
        if self._phase is not _Phase.PROBING:
            # A late probe: keep what it says about the path, nothing else.
            if code == "F08" and amount > 0:
                self._reduce_max_packet(request, reply)
            return
        if code == "F08" and amount > 0:
            self._reduce_max_packet(request, reply)
        elif code == "T04" and amount > self._max_packet.greatest_ack:
            # Insufficient liquidity for a probe larger than any that got through: a credit
            # limit on the path caps what a packet can carry now. Search below it, as for F08
            # without data; waiting would not make a 10^12 probe fit a limit of 10^4. If not
            # even 1 unit gets through, the T04 is what to report: a credit limit used up.
            self._probe_too_large(amount, reply)
        elif code[:1] == "T":
            self._back_off(request, now)
            self._queue_probe(amount)
        elif code == "R01" and amount > 0:
            pass  # too small to forward: this probe says nothing
        elif code == "F99":
            self._fail(
                FailureKind.REJECTED,
                "the receiver rejected a probe without an authentic STREAM reply (wrong shared"
                " secret or destination?)",
                reply,
            )
        elif amount > self._max_packet.greatest_ack:
            # A final error on a large probe may be about its size (a connector may fail to
            # convert 10^12 units); search below it, and report this error if nothing gets through.
            self._probe_too_large(amount, reply)
        else:
            self._fail_reject(reply, f"a probe of {amount}")

    def _probe_too_large(self, amount: int, reply: Reject) -> None:
        """Search for the packet size below ``amount``; keep the first such Reject, the failure
        to report if no probe gets through."""
        self._max_packet.reduce(amount, None, None)
        if self._probe_error is None:
            self._probe_error = PaymentFailure(
                FailureKind.REJECTED,
                f"probing was rejected with {_reject_text(reply)}",
                str(reply.code),
                reply.triggered_by,
            )

    def _add_probe_sample(self, sent: int, arrived: int) -> None:
        """Recompute the rate bounds from every probe so far, smallest first.

        A probe whose amount could convert to more than 2^64 - 1 at the rate the smaller probes
        show is left out: ilp-connector wraps such amounts modulo 2^64 instead of rejecting them
        (10^12 US cents at 2 x 10^7 XRP drops each arrives as 1553255926290448384).
        """
        samples = self._probe_samples
        samples.append((sent, arrived))
        samples.sort()
        rate = _Rate()
        for s, d in samples:
            if rate.known and s * rate.high.numerator > (_U64 + 1) * rate.high.denominator:
                continue
            rate.update(s, d)
        self._rate = rate

    def _queue_probe(self, amount: int) -> None:
        if amount not in self._probe_pending:
            self._probe_pending.add(amount)
            self._probe_queue.append(amount)

    def _target_source_amount(self) -> int | None:
        if not self._fixed_delivery:
            return self._source_amount
        min_rate = self._current_min_rate()
        if min_rate <= 0:
            return None
        assert self._delivery_amount is not None
        return _mul_ceil(self._delivery_amount, 1 / min_rate)

    def _current_min_rate(self) -> Fraction:
        if self._caller_min_rate is not None:
            return self._caller_min_rate
        return self._rate.low * (1 - self._slippage)

    def _probe_verified(self) -> bool:
        if not self._rate.known:
            return False
        mp = self._max_packet
        target = self._target_source_amount()
        if target is not None and mp.greatest_ack >= target:
            return True
        if mp.state is _MaxPacketState.UNKNOWN:
            return mp.greatest_ack >= MAX_PROBE_AMOUNT
        return mp.greatest_ack >= mp.limit

    def _after_probe_reply(self, now: float) -> None:
        mp = self._max_packet
        if mp.known == 0:
            if self._probe_error is not None:
                self._failure = self._probe_error
            else:
                self._fail(
                    FailureKind.MAX_PACKET_AMOUNT, "the path does not carry packets of even 1 unit"
                )
            return
        if self._probe_verified():
            self._probe_queue.clear()
            self._probe_pending.clear()
            if self._probes_in_flight == 0:
                self._finish_probing(now)
            return
        if mp.state is not _MaxPacketState.UNKNOWN:
            # Queued amounts above the limit would only fail and those at or below the largest
            # amount through tell nothing new; what is left of the descending volley narrows the
            # search fastest, then the binary search takes over.
            low, high = mp.greatest_ack, mp.limit
            for amount in [a for a in self._probe_queue if not low < a <= high]:
                self._probe_queue.remove(amount)
                self._probe_pending.discard(amount)
            if not self._probe_queue:
                self._queue_probe(mp.next_amount())
        if not self._probe_queue and self._probes_in_flight == 0:
            if self._probe_error is not None:
                self._failure = self._probe_error
            else:
                self._fail(
                    FailureKind.RATE_PROBE_FAILED,
                    "no probe got an exchange rate back from the receiver",
                )

    def _finish_probing(self, now: float) -> None:
        low = self._rate.low
        if low <= 0:
            self._fail(
                FailureKind.INSUFFICIENT_EXCHANGE_RATE,
                "the probed exchange rate is 0: nothing would arrive",
            )
            return
        min_rate = self._current_min_rate()
        self._min_rate = min_rate
        self._min_num = min_rate.numerator
        self._min_den = min_rate.denominator
        if self._fixed_delivery:
            assert self._delivery_amount is not None
            if min_rate <= 0:
                self._fail(
                    FailureKind.INSUFFICIENT_EXCHANGE_RATE,
                    "a fixed-delivery payment needs a minimum exchange rate above 0",
                )
                return
            self._max_source = _mul_ceil(self._delivery_amount, 1 / min_rate)
            if self._receive_max is not None and self._receive_max < self._delivery_amount:
                self._fail(
                    FailureKind.RECEIVE_MAX,
                    f"the receiver accepts at most {self._receive_max} on the stream, less than"
                    f" the {self._delivery_amount} to deliver",
                )
                return
        else:
            assert self._source_amount is not None
            self._max_source = self._source_amount
        self._last_fulfill = now
        self._backoffs = 0
        self._backoff_until = float("-inf")
        self._phase = _Phase.DONE if self._quote_only else _Phase.PAYING

    def _after_reply(self, now: float) -> None:
        if self._failure is not None:
            return
        if self._phase is _Phase.PROBING:
            self._after_probe_reply(now)
        elif self._phase is _Phase.PAYING:
            if self._fixed_delivery:
                assert self._delivery_amount is not None
                if self._receive_max is not None and self._receive_max < self._delivery_amount:
                    self._fail(
                        FailureKind.RECEIVE_MAX,
                        f"the receiver accepts at most {self._receive_max} on the stream, less"
                        f" than the {self._delivery_amount} to deliver",
                    )
                elif self._amount_delivered >= self._delivery_amount and self._money_in_flight == 0:
                    self._complete(now)
            elif self._amount_sent >= self._max_source:
                self._complete(now)

    def _complete(self, now: float) -> None:
        self._phase = _Phase.DONE

    # ----------------------------------------------------------------------------------------
    # Congestion control: a window of packets in flight, grown on fulfills (slow start, then one
    # packet per window of fulfills), halved once per round of temporary errors, with an
    # exponential pause (100 ms, doubling, at most 5 s) before the next packet.

    def _grow_window(self) -> None:
        self._backoffs = 0
        if self._window >= self._max_in_flight:
            return
        if self._window < self._threshold:
            self._window += 1
        else:
            self._acks += 1
            if self._acks >= self._window:
                self._acks = 0
                self._window += 1

    def _back_off(self, request: PacketRequest, now: float) -> None:
        if request.epoch != self._epoch:
            return  # sent before the last back-off: already accounted for
        self._epoch += 1
        self._threshold = max(1, self._window // 2)
        self._window = self._threshold
        self._acks = 0
        self._backoffs += 1
        delay = min(_BACKOFF_MAX, _BACKOFF_START * 2 ** min(self._backoffs - 1, 16))
        self._backoff_until = now + delay

    # ----------------------------------------------------------------------------------------
    # Outcome

    def result(self, now: float) -> PaymentResult:
        """The payment's outcome so far (final once :attr:`finished`)."""
        failure = self._failure
        if failure is None and self._phase is not _Phase.DONE:
            failure = PaymentFailure(FailureKind.CANCELLED, "the payment has not finished")
        if failure is None:
            status = PaymentStatus.COMPLETE
        elif self._amount_sent > 0:
            status = PaymentStatus.PARTIAL
        else:
            status = PaymentStatus.FAILED
        return PaymentResult(
            status=status,
            amount_sent=self._amount_sent,
            amount_delivered=self._amount_delivered,
            source_asset=self._source_asset,
            destination_asset=self._destination_asset,
            packets_fulfilled=self._fulfilled,
            packets_rejected=self._rejected,
            probed_rate=self._rate.low if self._rate.known else None,
            min_exchange_rate=self._min_rate,
            max_packet_amount=self._max_packet.known,
            duration=now - self._started,
            error=failure,
            receipt=self._receipt,
        )

    def quote(self, now: float) -> Quote:
        """The quote, once probing finished without a failure."""
        if self._phase is not _Phase.DONE or self._failure is not None:
            raise StreamError("no quote: probing has not finished")
        low = self._rate.low
        min_rate = self._min_rate
        assert min_rate is not None
        if self._fixed_delivery:
            assert self._delivery_amount is not None
            min_delivery = self._delivery_amount
            estimated_source = _mul_ceil(self._delivery_amount, 1 / low)
            estimated_delivery = min_delivery
        else:
            assert self._source_amount is not None
            min_delivery = _mul_ceil(self._source_amount, min_rate)
            estimated_source = self._source_amount
            estimated_delivery = _mul_floor(self._source_amount, low)
        return Quote(
            source_asset=self._source_asset,
            destination_asset=self._destination_asset,
            probed_rate=low,
            probed_rate_upper=self._rate.high,
            min_exchange_rate=min_rate,
            max_packet_amount=self._max_packet.known,
            max_source_amount=self._max_source,
            min_delivery_amount=min_delivery,
            estimated_source_amount=estimated_source,
            estimated_delivery_amount=estimated_delivery,
            duration=now - self._started,
        )
