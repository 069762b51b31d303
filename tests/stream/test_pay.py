"""pay() and quote() over an in-memory path: a fake connector in front of a fake STREAM receiver.

Everything runs on trio's autojump clock, so backoffs, latencies and expiries cost no real time.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Concatenate, ParamSpec, TypeVar

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ilp.errors import DecodeError
from ilp.link import IlpLink, ReplyCallback
from ilp.packet import AmountTooLargeData, ErrorCode, Fulfill, PacketType, Prepare, Reject
from ilp.stream.crypto import StreamCrypto
from ilp.stream.packet import (
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionNewAddress,
    Frame,
    StreamMaxMoney,
    StreamMoney,
    StreamPacket,
    StreamReceipt,
)
from ilp.stream.packet import (
    ErrorCode as StreamErrorCode,
)
from ilp.stream.pay import (
    FailureKind,
    PaymentProgress,
    PaymentSetupError,
    PaymentStatus,
    QuoteError,
)
from ilp.stream.pay import pay as pay_over
from ilp.stream.pay import quote as quote_over
from ilp.stream.receipt import Receipt

from .nowait_link import nowait_link

SECRET = bytes(range(32))
RECEIVER = "test.receiver.conn"
CONNECTOR = "test.connector"

Reply = Fulfill | Reject

P = ParamSpec("P")
T = TypeVar("T")

PATH = ["send"]
"""How the tests' pay() and quote() reach the link (see the ``link_path`` fixture)."""


@pytest.fixture(autouse=True, params=["send", "send_nowait", "send_nowait+at_once"])
def link_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs three times: pay() awaiting ``send`` (a link without ``send_nowait``), or
    over a link with ``send_nowait`` whose replies come from a task of the link's, or at once
    from inside ``send_nowait`` when the path can answer without waiting (see ``nowait_link.py``)."""
    PATH[0] = request.param
    yield request.param
    PATH[0] = "send"


def _over_path(
    function: Callable[Concatenate[IlpLink, P], Awaitable[T]],
) -> Callable[Concatenate[IlpLink, P], Awaitable[T]]:
    async def over_path(link: IlpLink, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if PATH[0] == "send":
            return await function(link, *args, **kwargs)
        error: BaseException | None = None
        async with nowait_link(link, at_once=PATH[0].endswith("at_once")) as wrapped:
            try:
                return await function(wrapped, *args, **kwargs)
            except trio.Cancelled:
                raise
            except BaseException as exc:  # raised below, not in the link's nursery's group
                error = exc
        raise error

    return over_path


pay = _over_path(pay_over)
quote = _over_path(quote_over)


@dataclass
class FakeReceiver:
    """A small STREAM receiver: fulfills what it can, F99 with an encrypted reply otherwise."""

    secret: bytes = SECRET
    asset: tuple[str, int] = ("XRP", 9)
    receive_max: int | None = None
    close_after: int | None = None
    """Close the connection (in the reply) once this many packets were fulfilled."""
    strip_fulfill_data: bool = False
    under_claim: bool = False
    receipt_nonce: bytes | None = None
    total: int = 0
    fulfilled: int = 0
    closed_by_sender: bool = False
    closed: bool = False
    frames_seen: list[Frame] = field(default_factory=list)
    crypto: StreamCrypto = field(init=False)

    def __post_init__(self) -> None:
        self.crypto = StreamCrypto(self.secret)

    def _reply(self, kind: PacketType, seq: int, amount: int, frames: list[Frame]) -> bytes:
        return self.crypto.encrypt_packet(StreamPacket(seq, kind, amount, tuple(frames)))

    async def handle(self, prepare: Prepare) -> Reply:
        return self.handle_now(prepare)

    def handle_now(self, prepare: Prepare) -> Reply:
        try:
            packet = self.crypto.decrypt_packet(prepare.data)
        except DecodeError:
            return Reject(ErrorCode("F06"), RECEIVER, "")
        if packet.ilp_packet_type is not PacketType.PREPARE:
            return Reject(ErrorCode("F06"), RECEIVER, "")
        self.frames_seen.extend(packet.frames)
        frames: list[Frame] = []
        if any(type(f) is ConnectionNewAddress for f in packet.frames):
            frames.append(ConnectionAssetDetails(*self.asset))
        if any(type(f) is ConnectionClose for f in packet.frames):
            self.closed_by_sender = True
        if self.closed:
            frames.append(ConnectionClose(StreamErrorCode.NO_ERROR, "bye"))
        money = any(type(f) is StreamMoney for f in packet.frames)
        if self.receive_max is not None:
            frames.append(StreamMaxMoney(1, self.receive_max, self.total))
        fulfillment = self.crypto.fulfillment(prepare.data)
        ok = (
            not self.closed
            and money
            and hashlib.sha256(fulfillment).digest() == prepare.execution_condition
            and prepare.amount >= packet.prepare_amount
            and (self.receive_max is None or self.total + prepare.amount <= self.receive_max)
        )
        if not ok:
            data = self._reply(PacketType.REJECT, packet.sequence, prepare.amount, frames)
            return Reject(ErrorCode("F99"), RECEIVER, "", data)
        self.total += prepare.amount
        self.fulfilled += 1
        if self.close_after is not None and self.fulfilled >= self.close_after:
            self.closed = True
        if self.receipt_nonce is not None:
            receipt = Receipt(self.receipt_nonce, 1, self.total).build(bytes(32))
            frames.append(StreamReceipt(1, receipt))
        claim = prepare.amount - 1 if self.under_claim else prepare.amount
        data = (
            b""
            if self.strip_fulfill_data
            else self._reply(PacketType.FULFILL, packet.sequence, claim, frames)
        )
        return Fulfill(fulfillment, data)


Hook = Callable[[Prepare], Awaitable[Reply | None]]


@dataclass
class FakePath:
    """A connector in front of a receiver: rate (floored), max packet amount (F08), hooks."""

    receiver: FakeReceiver
    rate: Fraction = Fraction(1)
    max_packet: int | None = None
    f08_data: bool = True
    max_after_rate: int | None = None
    """A limit applied after conversion, as a second connector would (F08 in its units)."""
    latency: float = 0.0
    hook: Hook | None = None
    prepares: list[tuple[float, Prepare]] = field(default_factory=list)
    fulfilled_amounts: list[int] = field(default_factory=list)
    in_flight: int = 0
    money_in_flight: int = 0
    max_money_in_flight: int = 0

    async def send(self, prepare: Prepare) -> Reply:
        prepare = Prepare.decode(prepare.encode())
        self.prepares.append((trio.current_time(), prepare))
        money = _fulfillable(self, prepare)
        self.in_flight += 1
        self.money_in_flight += money
        self.max_money_in_flight = max(self.max_money_in_flight, self.money_in_flight)
        try:
            reply = await self._forward(prepare)
        finally:
            self.in_flight -= 1
            self.money_in_flight -= money
        if (
            isinstance(reply, Fulfill)
            and hashlib.sha256(reply.fulfillment).digest() == prepare.execution_condition
        ):
            self.fulfilled_amounts.append(prepare.amount)
        return reply

    def answer_now(self, prepare: Prepare) -> Reply | None:
        """As :meth:`send`, when the path answers without waiting (no latency, no hook)."""
        if self.latency or self.hook is not None:
            return None
        prepare = Prepare.decode(prepare.encode())
        self.prepares.append((trio.current_time(), prepare))
        reply = self._forward_now(prepare)
        if (
            isinstance(reply, Fulfill)
            and hashlib.sha256(reply.fulfillment).digest() == prepare.execution_condition
        ):
            self.fulfilled_amounts.append(prepare.amount)
        return reply

    async def _forward(self, prepare: Prepare) -> Reply:
        if self.latency:
            await trio.sleep(self.latency / 2)
        if self.hook is not None:
            injected = await self.hook(prepare)
            if injected is not None:
                return injected
        reply = self._forward_now(prepare)
        if self.latency:
            await trio.sleep(self.latency / 2)
        return reply

    def _forward_now(self, prepare: Prepare) -> Reply:
        if self.max_packet is not None and prepare.amount > self.max_packet:
            data = AmountTooLargeData(prepare.amount, self.max_packet).encode()
            return Reject(ErrorCode("F08"), CONNECTOR, "too large", data if self.f08_data else b"")
        # Wrapped modulo 2^64 on overflow, as ilp-connector does.
        amount = prepare.amount * self.rate.numerator // self.rate.denominator % 2**64
        limit = self.max_after_rate
        if limit is not None and amount > limit:
            data = AmountTooLargeData(amount, limit).encode()
            return Reject(ErrorCode("F08"), CONNECTOR, "too large", data)
        forwarded = Prepare(
            amount,
            prepare.expires_at,
            prepare.execution_condition,
            prepare.destination,
            prepare.data,
        )
        return self.receiver.handle_now(forwarded)

    @property
    def money_sent(self) -> int:
        """Source units that left through fulfilled Prepares."""
        return sum(self.fulfilled_amounts)


def path(**kwargs: object) -> FakePath:
    receiver_args = {
        k: kwargs.pop(k)
        for k in list(kwargs)
        if k in {"receive_max", "close_after", "strip_fulfill_data", "under_claim", "asset"}
    }
    return FakePath(FakeReceiver(**receiver_args), **kwargs)  # type: ignore[arg-type]


def money_prepares(p: FakePath) -> list[Prepare]:
    return [prep for _, prep in p.prepares if prep.amount > 0 and _is_money(p, prep)]


def _is_money(p: FakePath, prepare: Prepare) -> bool:
    packet = p.receiver.crypto.decrypt_packet(prepare.data)
    return any(type(f) is StreamMoney for f in packet.frames)


# --------------------------------------------------------------------------------------------
# Fixed send


async def test_same_asset_payment_completes(autojump_clock: trio.testing.MockClock) -> None:
    p = path()
    result = await pay(p, RECEIVER, SECRET, source_amount=10_000, source_asset=("XRP", 9))
    assert result.status is PaymentStatus.COMPLETE
    assert result.error is None
    assert result.amount_sent == 10_000 == p.money_sent
    assert result.amount_delivered == 10_000 == p.receiver.total
    assert result.destination_asset == ("XRP", 9)
    assert result.source_asset == ("XRP", 9)
    assert result.probed_rate == 1
    assert result.min_exchange_rate == Fraction(99, 100)
    assert result.exchange_rate == 1
    assert result.packets_fulfilled == 1
    assert result.max_packet_amount is None
    # The first packets say who we are; the last one closes the connection.
    packets = [p.receiver.crypto.decrypt_packet(prep.data) for _, prep in p.prepares]
    first = next(packet for packet in packets if packet.sequence == 1)
    assert ConnectionNewAddress("") in first.frames
    assert ConnectionAssetDetails("XRP", 9) in first.frames
    assert p.receiver.closed_by_sender
    last = p.receiver.crypto.decrypt_packet(p.prepares[-1][1].data)
    assert last.frames == (ConnectionClose(StreamErrorCode.NO_ERROR, ""),)
    assert p.prepares[-1][1].amount == 0


async def test_sequences_increase_and_probes_are_unfulfillable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path(max_packet=1000)
    await pay(p, RECEIVER, SECRET, source_amount=5_000)
    sequences = [p.receiver.crypto.decrypt_packet(prep.data).sequence for _, prep in p.prepares]
    # Tasks start in any order, but every number is used once.
    assert sorted(sequences) == list(range(1, len(sequences) + 1))
    for _, prep in p.prepares:
        packet = p.receiver.crypto.decrypt_packet(prep.data)
        fulfillable = (
            hashlib.sha256(p.receiver.crypto.fulfillment(prep.data)).digest()
            == prep.execution_condition
        )
        assert fulfillable == any(type(f) is StreamMoney for f in packet.frames)
        if fulfillable:
            # Each money packet asks for at least ceil(amount x 99/100).
            assert packet.prepare_amount == -(-prep.amount * 99 // 100)


async def test_rate_probe_and_fx_payment(autojump_clock: trio.testing.MockClock) -> None:
    p = path(rate=Fraction(3, 7), max_packet=10_000, asset=("USD", 2))
    result = await pay(p, RECEIVER, SECRET, source_amount=1_000_000)
    assert result.status is PaymentStatus.COMPLETE
    assert result.amount_sent == 1_000_000 == p.money_sent
    assert result.amount_delivered == p.receiver.total
    assert result.destination_asset == ("USD", 2)
    assert result.max_packet_amount == 10_000
    assert result.packets_fulfilled == 100
    assert result.probed_rate is not None
    # The probes pin the rate down to a few parts in 10^4 (10^4 is the largest probe through).
    assert Fraction(3, 7) - Fraction(1, 10_000) < result.probed_rate <= Fraction(3, 7)
    assert result.min_exchange_rate == result.probed_rate * Fraction(99, 100)
    assert all(prep.amount <= 10_000 for prep in money_prepares(p))
    # Delivered is what the receiver got, packet by packet floored.
    assert result.amount_delivered == 100 * (10_000 * 3 // 7)


async def test_min_rate_above_real_rate_fails_with_nothing_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path(rate=Fraction(1, 2))
    result = await pay(
        p, RECEIVER, SECRET, source_amount=50_000, min_exchange_rate=Fraction(51, 100)
    )
    assert result.status is PaymentStatus.FAILED
    assert result.error is not None
    assert result.error.kind is FailureKind.INSUFFICIENT_EXCHANGE_RATE
    assert result.amount_sent == result.amount_delivered == 0
    assert p.money_sent == 0 and p.receiver.total == 0
    assert money_prepares(p) == []
    assert result.probed_rate == Fraction(1, 2)


async def test_slippage_allows_a_lower_rate(autojump_clock: trio.testing.MockClock) -> None:
    p = path(rate=Fraction(1, 2))
    result = await pay(p, RECEIVER, SECRET, source_amount=50_000, slippage=Fraction(0))
    assert result.status is PaymentStatus.COMPLETE
    assert result.min_exchange_rate == Fraction(1, 2)
    assert result.amount_delivered == 25_000


async def test_f08_with_data_from_a_later_hop_is_scaled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The limit sits after a 1:3 conversion: 300 destination units = 900 source units.
    p = path(rate=Fraction(1, 3), max_after_rate=300)
    result = await pay(p, RECEIVER, SECRET, source_amount=9_000)
    assert result.status is PaymentStatus.COMPLETE
    assert result.max_packet_amount == 900
    assert result.packets_fulfilled == 10
    assert result.amount_delivered == 3_000 == p.receiver.total


@pytest.mark.parametrize("limit", [1, 2, 777, 1000, 65_535])
async def test_f08_without_data_binary_search(
    autojump_clock: trio.testing.MockClock, limit: int
) -> None:
    p = path(max_packet=limit, f08_data=False)
    amount = limit * 3 + 1
    result = await pay(p, RECEIVER, SECRET, source_amount=amount)
    assert result.status is PaymentStatus.COMPLETE, result.error
    assert result.max_packet_amount == limit
    assert result.amount_sent == amount == p.money_sent
    assert max(prep.amount for prep in money_prepares(p)) == limit


async def test_many_packets_in_flight_within_the_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path(max_packet=100, latency=0.05)
    result = await pay(p, RECEIVER, SECRET, source_amount=100_000, max_in_flight=8)
    assert result.status is PaymentStatus.COMPLETE
    assert result.packets_fulfilled == 1000
    assert p.max_money_in_flight == 8


# --------------------------------------------------------------------------------------------
# Temporary errors and congestion


async def test_t04_backs_off_then_completes(autojump_clock: trio.testing.MockClock) -> None:
    rejected: list[float] = []

    async def liquidity(prepare: Prepare) -> Reply | None:
        # The first eight fulfillable packets hit a liquidity limit.
        if prepare.amount > 0 and len(rejected) < 8 and _fulfillable(p, prepare):
            rejected.append(trio.current_time())
            return Reject(ErrorCode("T04"), CONNECTOR, "insufficient liquidity")
        return None

    p = path(max_packet=1000, hook=liquidity)
    result = await pay(p, RECEIVER, SECRET, source_amount=20_000, max_in_flight=4)
    assert result.status is PaymentStatus.COMPLETE
    assert result.amount_sent == 20_000 == p.money_sent
    assert result.packets_rejected == 8
    # Each round of T04 doubles the pause: the gaps between rounds grow.
    rounds = sorted(set(rejected))
    gaps = [b - a for a, b in itertools.pairwise(rounds)]
    assert gaps and gaps[0] >= 0.1
    assert all(b >= a for a, b in itertools.pairwise(gaps))


def _fulfillable(p: FakePath, prepare: Prepare) -> bool:
    digest = hashlib.sha256(p.receiver.crypto.fulfillment(prepare.data)).digest()
    return digest == prepare.execution_condition


async def test_t04_on_large_probes_is_a_size_limit(autojump_clock: trio.testing.MockClock) -> None:
    # A credit limit of 5000 on the path: every Prepare over it is T04, whatever it carries.
    async def credit_limit(prepare: Prepare) -> Reply | None:
        if prepare.amount > 5000:
            return Reject(ErrorCode("T04"), CONNECTOR, "insufficient liquidity")
        return None

    p = path(hook=credit_limit)
    result = await pay(p, RECEIVER, SECRET, source_amount=12_000, probe_timeout=5)
    assert result.status is PaymentStatus.COMPLETE, result.error
    assert result.amount_sent == 12_000 == p.money_sent
    assert result.max_packet_amount is not None and result.max_packet_amount <= 5000
    assert all(amount <= 5000 for amount in p.fulfilled_amounts)


async def test_persistent_t04_ends_with_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def after_two(prepare: Prepare) -> Reply | None:
        if _fulfillable(p, prepare) and len(p.fulfilled_amounts) >= 2:
            return Reject(ErrorCode("T04"), CONNECTOR, "insufficient liquidity")
        return None

    p = path(max_packet=1000, hook=after_two)
    start = trio.current_time()
    result = await pay(p, RECEIVER, SECRET, source_amount=10_000, idle_timeout=20)
    assert result.status is PaymentStatus.PARTIAL
    assert result.error is not None and result.error.kind is FailureKind.IDLE_TIMEOUT
    # It names what kept the packets from going through.
    assert (result.error.code, result.error.triggered_by) == ("T04", CONNECTOR)
    assert "the last Reject: T04 Insufficient Liquidity: insufficient liquidity" in str(
        result.error
    )
    assert result.amount_sent == 2_000 == p.money_sent
    assert result.amount_delivered == p.receiver.total == 2_000
    assert 20 <= trio.current_time() - start < 40


async def test_a_credit_limit_used_up_before_the_payment_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def exhausted(prepare: Prepare) -> Reply | None:
        if prepare.amount > 0:
            return Reject(ErrorCode("T04"), CONNECTOR, "account alice has used its credit limit")
        return None

    p = path(hook=exhausted)
    result = await pay(p, RECEIVER, SECRET, source_amount=1000, probe_timeout=5)
    assert result.status is PaymentStatus.FAILED
    assert result.amount_sent == 0 == p.money_sent
    assert result.error is not None and result.error.kind is FailureKind.REJECTED
    assert (result.error.code, result.error.triggered_by) == ("T04", CONNECTOR)
    assert "credit limit" in str(result.error)


async def test_final_error_ends_the_payment(autojump_clock: trio.testing.MockClock) -> None:
    async def unreachable(prepare: Prepare) -> Reply | None:
        return Reject(ErrorCode("F02"), CONNECTOR, "no route")

    p = path(hook=unreachable)
    result = await pay(p, RECEIVER, SECRET, source_amount=1000)
    assert result.status is PaymentStatus.FAILED
    assert result.error is not None
    assert result.error.kind is FailureKind.REJECTED
    assert result.error.code == "F02"
    assert result.error.triggered_by == CONNECTOR
    assert "no route" in result.error.message


async def test_final_error_mid_payment_is_partial(autojump_clock: trio.testing.MockClock) -> None:
    async def breaks(prepare: Prepare) -> Reply | None:
        if _fulfillable(p, prepare) and len(p.fulfilled_amounts) >= 3:
            return Reject(ErrorCode("F02"), CONNECTOR, "route lost")
        return None

    p = path(max_packet=100, hook=breaks)
    result = await pay(p, RECEIVER, SECRET, source_amount=1000, max_in_flight=1)
    assert result.status is PaymentStatus.PARTIAL
    assert result.error is not None and result.error.code == "F02"
    assert result.amount_sent == 300 == p.money_sent
    assert result.amount_delivered == 300 == p.receiver.total


async def test_large_probe_failing_with_final_error_is_a_size_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Like ilp-connector converting 10^12 to more than 2^64: F00 for big amounts only.
    async def overflow(prepare: Prepare) -> Reply | None:
        if prepare.amount > 10**9:
            return Reject(ErrorCode("F00"), CONNECTOR, "amount overflow")
        return None

    p = path(hook=overflow)
    result = await pay(p, RECEIVER, SECRET, source_amount=5 * 10**9)
    assert result.status is PaymentStatus.COMPLETE, result.error
    assert result.amount_sent == 5 * 10**9
    assert all(prep.amount <= 10**9 for prep in money_prepares(p))


# --------------------------------------------------------------------------------------------
# Fixed delivery, receiver limits, receiver behaviour


async def test_fixed_delivery(autojump_clock: trio.testing.MockClock) -> None:
    p = path(rate=Fraction(3, 2), max_packet=100)
    result = await pay(p, RECEIVER, SECRET, delivery_amount=5_000)
    assert result.status is PaymentStatus.COMPLETE, result.error
    assert result.amount_delivered == p.receiver.total
    assert 5_000 <= result.amount_delivered < 5_000 + 150
    assert result.min_exchange_rate is not None
    assert result.amount_sent <= -(-5_000 // result.min_exchange_rate)
    assert result.amount_sent == p.money_sent


async def test_fixed_delivery_needs_a_positive_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path()
    result = await pay(p, RECEIVER, SECRET, delivery_amount=10, min_exchange_rate=Fraction(0))
    assert result.status is PaymentStatus.FAILED
    assert result.error is not None
    assert result.error.kind is FailureKind.INSUFFICIENT_EXCHANGE_RATE


async def test_receive_max_limits_a_fixed_send(autojump_clock: trio.testing.MockClock) -> None:
    p = path(receive_max=5_000, max_packet=1000)
    result = await pay(p, RECEIVER, SECRET, source_amount=10_000)
    assert result.status is PaymentStatus.PARTIAL
    assert result.error is not None and result.error.kind is FailureKind.RECEIVE_MAX
    assert result.amount_delivered == 5_000 == p.receiver.total
    assert result.amount_sent == 5_000 == p.money_sent


async def test_receive_max_below_fixed_delivery_fails_before_paying(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path(receive_max=5_000, max_packet=1000)
    result = await pay(p, RECEIVER, SECRET, delivery_amount=5_000)
    assert result.status is PaymentStatus.COMPLETE
    assert result.amount_delivered == 5_000
    p = path(receive_max=4_000, max_packet=1000)
    result = await pay(p, RECEIVER, SECRET, delivery_amount=5_000)
    assert result.status is PaymentStatus.FAILED
    assert result.error is not None and result.error.kind is FailureKind.RECEIVE_MAX
    assert money_prepares(p) == []


async def test_receive_max_learned_mid_payment_ends_fixed_delivery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = 0

    async def reveal_later(prepare: Prepare) -> Reply | None:
        # The receiver's limit shows up only once money flows.
        nonlocal limit
        if _fulfillable(p, prepare):
            p.receiver.receive_max = limit = 2_500
        return None

    p = path(max_packet=1000, hook=reveal_later)
    result = await pay(p, RECEIVER, SECRET, delivery_amount=5_000, max_in_flight=1)
    assert limit == 2_500
    assert result.status is PaymentStatus.PARTIAL
    assert result.error is not None and result.error.kind is FailureKind.RECEIVE_MAX
    assert result.amount_delivered == p.receiver.total == 1_000


async def test_receiver_closing_gives_a_partial_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path(close_after=3, max_packet=100)
    result = await pay(p, RECEIVER, SECRET, source_amount=1000, max_in_flight=1)
    assert result.status is PaymentStatus.PARTIAL
    assert result.error is not None
    assert result.error.kind is FailureKind.CLOSED_BY_RECEIVER
    assert result.amount_delivered == 300 == p.receiver.total
    assert result.amount_sent == 300 == p.money_sent
    assert not p.receiver.closed_by_sender  # no ConnectionClose to a closed connection


async def test_fulfill_without_stream_reply_counts_the_minimum(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path(strip_fulfill_data=True, max_packet=100)
    result = await pay(p, RECEIVER, SECRET, source_amount=1000)
    assert result.error is not None
    assert result.error.kind is FailureKind.RECEIVER_PROTOCOL_VIOLATION
    assert result.amount_sent == p.money_sent > 0
    # 99 per packet of 100: what each packet demanded at least.
    assert result.amount_delivered == result.packets_fulfilled * 99


async def test_receiver_claiming_less_than_minimum_is_a_violation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path(under_claim=True, max_packet=100)
    result = await pay(p, RECEIVER, SECRET, source_amount=1000, slippage=Fraction(0))
    assert result.error is not None
    assert result.error.kind is FailureKind.RECEIVER_PROTOCOL_VIOLATION
    assert result.amount_delivered == result.packets_fulfilled * 100


async def test_receipt_is_kept(autojump_clock: trio.testing.MockClock) -> None:
    p = path(max_packet=100)
    p.receiver.receipt_nonce = bytes(16)
    result = await pay(p, RECEIVER, SECRET, source_amount=1000)
    assert result.receipt is not None
    assert Receipt.decode(result.receipt).total_received == 1000


async def test_wrong_secret_fails_probing(autojump_clock: trio.testing.MockClock) -> None:
    p = path()
    result = await pay(p, RECEIVER, bytes(32), source_amount=1000)
    assert result.status is PaymentStatus.FAILED
    assert result.error is not None
    assert result.error.kind is FailureKind.REJECTED
    assert result.error.code == "F06"


# --------------------------------------------------------------------------------------------
# Cancellation, link failures, expiry


async def test_cancel_mid_payment_awaits_in_flight_packets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path(max_packet=100, latency=1.0)
    result = None
    with trio.move_on_after(10.5) as scope:
        result = await pay(p, RECEIVER, SECRET, source_amount=100_000, max_in_flight=4)
    assert scope.cancel_called
    assert result is not None
    assert result.status is PaymentStatus.PARTIAL
    assert result.error is not None and result.error.kind is FailureKind.CANCELLED
    assert result.amount_sent == p.money_sent > 0
    assert result.amount_delivered == p.receiver.total
    assert p.in_flight == 0
    # Nothing left after the cancellation, and no close was sent.
    assert all(t <= 10.5 for t, _ in p.prepares)
    assert not p.receiver.closed_by_sender


async def test_deadline_before_any_money(autojump_clock: trio.testing.MockClock) -> None:
    p = path(latency=5.0)
    with trio.move_on_after(1):
        result = await pay(p, RECEIVER, SECRET, source_amount=100)
    assert result.status is PaymentStatus.FAILED
    assert result.error is not None and result.error.kind is FailureKind.CANCELLED
    assert p.receiver.total == 0


async def test_cancelled_before_it_starts_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path()
    with trio.CancelScope() as scope:
        scope.cancel()
        result = await pay(p, RECEIVER, SECRET, source_amount=100)
    assert result.error is not None and result.error.kind is FailureKind.CANCELLED
    assert p.prepares == []


async def test_link_that_raises(autojump_clock: trio.testing.MockClock) -> None:
    class Broken:
        async def send(self, prepare: Prepare) -> Reply:
            raise ConnectionResetError("socket closed")

    class BrokenNowait(Broken):
        def send_nowait(self, prepare: Prepare, on_reply: ReplyCallback) -> bool:
            raise ConnectionResetError("socket closed")

    # A link with send_nowait answers with Rejects, but one that raises anyway fails the same.
    link = Broken() if PATH[0] == "send" else BrokenNowait()
    result = await pay_over(link, RECEIVER, SECRET, source_amount=100)
    assert result.status is PaymentStatus.FAILED
    assert result.error is not None
    assert result.error.kind is FailureKind.LINK_ERROR
    assert "socket closed" in result.error.message


async def test_unanswered_money_expires(autojump_clock: trio.testing.MockClock) -> None:
    async def black_hole(prepare: Prepare) -> Reply | None:
        if _fulfillable(p, prepare) and len(p.fulfilled_amounts) >= 1:
            await trio.sleep_forever()
        return None

    p = path(max_packet=100, hook=black_hole)
    start = trio.current_time()
    result = await pay(p, RECEIVER, SECRET, source_amount=1000, packet_expiry=7)
    assert result.error is not None and result.error.kind is FailureKind.LINK_ERROR
    assert "expired" in result.error.message
    assert result.amount_sent == 100 == p.money_sent
    assert 7 <= trio.current_time() - start < 20


async def test_wrong_fulfillment_is_not_money(autojump_clock: trio.testing.MockClock) -> None:
    async def forge(prepare: Prepare) -> Reply | None:
        if _fulfillable(p, prepare):
            return Fulfill(bytes(32))
        return None

    p = path(hook=forge)
    result = await pay(p, RECEIVER, SECRET, source_amount=1000)
    assert result.error is not None and result.error.kind is FailureKind.LINK_ERROR
    assert result.amount_sent == 0


# --------------------------------------------------------------------------------------------
# Callbacks and misuse


async def test_progress_callback(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[PaymentProgress] = []
    p = path(max_packet=250)
    result = await pay(p, RECEIVER, SECRET, source_amount=1000, on_progress=seen.append)
    assert result.status is PaymentStatus.COMPLETE
    assert seen[-1].amount_sent == 1000
    assert [s.amount_sent for s in seen] == sorted(s.amount_sent for s in seen)
    assert all(s.amount_sent + s.source_amount_in_flight <= 1000 for s in seen)


async def test_progress_callback_error_is_raised(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class StopError(Exception):
        pass

    def stop(progress: PaymentProgress) -> None:
        if progress.amount_sent >= 300:
            raise StopError

    p = path(max_packet=100)
    with pytest.raises(StopError) as caught:
        await pay(p, RECEIVER, SECRET, source_amount=1000, on_progress=stop, max_in_flight=1)
    assert p.money_sent == 300
    assert caught.value.__notes__ == [
        "pay() stopped by on_progress: 300 sent (source units), 300 delivered (destination "
        "units), in 3 fulfilled packets; none left in flight"
    ]


class _Halt(BaseException):
    """Not an Exception: what a callback raising KeyboardInterrupt or SystemExit looks like."""


@pytest.mark.parametrize("error", [_Halt, KeyboardInterrupt])
async def test_progress_callback_base_exception_is_raised_by_pay(
    error: type[BaseException], autojump_clock: trio.testing.MockClock
) -> None:
    # Raised by pay() itself, alone (not in a group), on every path: also where the callback runs
    # in the link's task; the money in flight is awaited first, and the link still works.
    def stop(progress: PaymentProgress) -> None:
        if progress.amount_sent >= 500:
            raise error

    p = path(max_packet=100, latency=0.5)
    with pytest.raises(error) as caught, trio.fail_after(300):  # (before: stuck, or a group)
        await pay(p, RECEIVER, SECRET, source_amount=5_000, on_progress=stop, max_in_flight=4)
    assert 500 <= p.money_sent < 5_000
    assert p.money_in_flight == 0
    assert f"{p.money_sent} sent" in caught.value.__notes__[0]
    assert p.receiver.total == p.money_sent
    result = await pay(p, RECEIVER, SECRET, source_amount=1_000)
    assert result.status is PaymentStatus.COMPLETE, result.error


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"source_amount": 10, "delivery_amount": 10},
        {"source_amount": 0},
        {"source_amount": -5},
        {"source_amount": 10, "slippage": 0.01},
        {"source_amount": 10, "slippage": Fraction(1)},
        {"source_amount": 10, "min_exchange_rate": 1.5},
        {"source_amount": 10, "max_in_flight": 0},
        {"source_amount": 10, "source_asset": ("XRP", 300)},
        {"source_amount": 10, "source_address": "not an address"},
        {"source_amount": 10, "packet_expiry": 0},
    ],
)
async def test_misuse_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(PaymentSetupError):
        await pay(path(), RECEIVER, SECRET, **kwargs)  # type: ignore[arg-type]


async def test_bad_destination_or_secret_raises() -> None:
    with pytest.raises(PaymentSetupError):
        await pay(path(), "nope", SECRET, source_amount=1)
    with pytest.raises(PaymentSetupError):
        await pay(path(), RECEIVER, b"short", source_amount=1)
    with pytest.raises(ValueError):  # PaymentSetupError is a ValueError too
        await pay(path(), RECEIVER, SECRET)


# --------------------------------------------------------------------------------------------
# Quote


async def test_quote_moves_no_money(autojump_clock: trio.testing.MockClock) -> None:
    p = path(rate=Fraction(2, 3), max_packet=5_000, asset=("EUR", 4))
    q = await quote(p, RECEIVER, SECRET, source_amount=100_000, source_asset=("USD", 6))
    assert p.money_sent == 0 and p.receiver.total == 0
    assert not p.receiver.closed_by_sender
    assert q.max_packet_amount == 5_000
    assert q.probed_rate <= Fraction(2, 3) < q.probed_rate_upper
    assert q.min_exchange_rate == q.probed_rate * Fraction(99, 100)
    assert q.destination_asset == ("EUR", 4)
    assert q.source_asset == ("USD", 6)
    assert q.max_source_amount == 100_000
    assert q.estimated_delivery_amount == 100_000 * q.probed_rate.numerator // (
        q.probed_rate.denominator
    )
    # The connection stays usable.
    result = await pay(p, RECEIVER, SECRET, source_amount=100_000)
    assert result.status is PaymentStatus.COMPLETE


async def test_quote_fixed_delivery(autojump_clock: trio.testing.MockClock) -> None:
    p = path(rate=Fraction(1, 4))
    q = await quote(p, RECEIVER, SECRET, delivery_amount=1000)
    assert q.probed_rate == Fraction(1, 4)
    assert q.min_delivery_amount == 1000
    assert q.estimated_source_amount == 4000
    assert q.max_source_amount == -(-1000 // q.min_exchange_rate)


async def test_quote_failure_raises(autojump_clock: trio.testing.MockClock) -> None:
    async def unreachable(prepare: Prepare) -> Reply | None:
        return Reject(ErrorCode("F02"), CONNECTOR, "no route")

    with pytest.raises(QuoteError) as info:
        await quote(path(hook=unreachable), RECEIVER, SECRET, source_amount=10)
    assert info.value.failure.code == "F02"


async def test_quote_cancellation_propagates(autojump_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(1) as scope:
        await quote(path(latency=10), RECEIVER, SECRET, source_amount=10)
        pytest.fail("quote returned after cancellation")
    assert scope.cancelled_caught


# --------------------------------------------------------------------------------------------
# The invariant: never more than the maximum source amount leaves, and the result is exact.


@st.composite
def behaviours(draw: st.DrawFn) -> dict[str, object]:
    max_packet = draw(st.none() | st.integers(1, 5_000))
    return {
        "rate": Fraction(draw(st.integers(1, 50)), draw(st.integers(1, 50))),
        "max_packet": max_packet,
        "f08_data": draw(st.booleans()),
        "receive_max": draw(st.none() | st.integers(0, 200_000)),
        "close_after": draw(st.none() | st.integers(1, 50)),
        # At most a few hundred packets per example.
        "amount": draw(st.integers(1, 100_000 if max_packet is None else max_packet * 300)),
        "fixed_delivery": draw(st.booleans()),
        "max_in_flight": draw(st.integers(1, 10)),
        "faults": draw(
            st.lists(
                st.sampled_from(["ok", "ok", "ok", "ok", "ok", "T04", "T00", "F08", "slow"]),
                min_size=1,
                max_size=40,
            )
        ),
        "final_at": draw(
            st.none() | st.tuples(st.integers(5, 300), st.sampled_from(["F02", "R01"]))
        ),
        "cancel_at": draw(st.none() | st.floats(0.5, 30)),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(behaviours())
def test_never_more_than_the_maximum_leaves(b: dict[str, object]) -> None:
    faults = b["faults"]
    assert isinstance(faults, list)
    count = 0

    final_at = b["final_at"]

    async def chaos(prepare: Prepare) -> Reply | None:
        nonlocal count
        fault = faults[count % len(faults)]
        if isinstance(final_at, tuple) and count >= final_at[0]:
            fault = final_at[1]
        count += 1
        if fault == "slow":
            await trio.sleep(0.7)
        elif fault in ("T04", "T00", "F02", "R01"):
            return Reject(ErrorCode(fault), CONNECTOR, "chaos")
        elif fault == "F08" and prepare.amount > 1:
            return Reject(ErrorCode("F08"), CONNECTOR, "chaos", b"")
        return None

    p = path(
        rate=b["rate"],
        max_packet=b["max_packet"],
        f08_data=b["f08_data"],
        receive_max=b["receive_max"],
        close_after=b["close_after"],
        hook=chaos,
        latency=0.1,
    )
    amount = b["amount"]
    assert isinstance(amount, int)

    async def main() -> None:
        kwargs: dict[str, object] = (
            {"delivery_amount": amount} if b["fixed_delivery"] else {"source_amount": amount}
        )
        cancel_at = b["cancel_at"]
        with trio.move_on_after(cancel_at if isinstance(cancel_at, float) else 1e9):
            result = await pay(
                p,
                RECEIVER,
                SECRET,
                max_in_flight=b["max_in_flight"],  # type: ignore[arg-type]
                idle_timeout=10,
                **kwargs,  # type: ignore[arg-type]
            )
        kind = result.error.kind.value if result.error else ""
        event(f"{result.status.value} {kind}")
        # What left is exactly what the result says, and never more than allowed.
        assert result.amount_sent == p.money_sent
        assert result.amount_delivered == p.receiver.total
        if b["fixed_delivery"]:
            if result.min_exchange_rate:
                assert p.money_sent <= -(-amount // result.min_exchange_rate)
        else:
            assert p.money_sent <= amount
        if result.status is PaymentStatus.COMPLETE:
            if b["fixed_delivery"]:
                assert result.amount_delivered >= amount
            else:
                assert result.amount_sent == amount
        else:
            assert result.error is not None
        # Every fulfilled packet met its minimum rate, but for one unit of rounding in all.
        if result.amount_sent:
            assert result.min_exchange_rate is not None
            assert result.amount_delivered >= (result.amount_sent - 1) * result.min_exchange_rate

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_expiry_uses_the_injected_clock() -> None:
    fixed = datetime(2030, 1, 1, tzinfo=UTC)
    p = path()

    async def main() -> None:
        await pay(p, RECEIVER, SECRET, source_amount=5, clock=lambda: fixed, packet_expiry=12)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert {prep.expires_at for _, prep in p.prepares} == {
        datetime(2030, 1, 1, 0, 0, 12, tzinfo=UTC)
    }


async def test_probe_wrapped_by_the_connector_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # USD cents to XRP drops: 10^12 cents arrive as 2 x 10^19 mod 2^64.
    p = path(rate=Fraction(2 * 10**7), asset=("XRP", 9))
    result = await pay(p, RECEIVER, SECRET, source_amount=10**12)
    assert result.probed_rate == 2 * 10**7
    assert result.status is PaymentStatus.COMPLETE, result.error
    assert result.amount_delivered == 2 * 10**19 == p.receiver.total
    # No packet converted to more than 2^64 - 1.
    assert all(prep.amount * 2 * 10**7 < 2**64 for prep in money_prepares(p))


async def test_refused_money_backs_off_instead_of_spinning(autojump_clock: object) -> None:
    """A receiver that declines money (should_fulfill) is retried with back-off, not in a loop."""
    import os

    from ilp.stream.pay import pay as pay_
    from ilp.stream.server import StreamServer
    from ilp.testing import FakeConnector

    seen = 0

    async def refuse(conn: object, stream: object, amount: int) -> bool:
        nonlocal seen
        seen += 1
        return False

    connector = FakeConnector("test.local")
    alice = connector.add_child("alice")
    server = StreamServer(
        os.urandom(32), connector.child_address("bob"), "XRP", 9, should_fulfill=refuse
    )
    connector.add_child("bob", server)
    destination, secret = server.generate_credentials()
    async with server:
        result = await pay_(alice, destination, secret, source_amount=1000, idle_timeout=10)
    assert result.amount_delivered == 0
    assert result.error is not None
    # Back-off from 0.1 s doubling to a 5 s cap fits about a dozen tries into 10 s; the old loop
    # sent thousands.
    assert 1 <= seen <= 40
