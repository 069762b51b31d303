"""The sans-I/O payment core, driven by hand: explicit time, replies made up in the test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp.packet import AmountTooLargeData, ErrorCode, Fulfill, PacketType, Reject
from ilp.stream.packet import (
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionNewAddress,
    Frame,
    StreamClose,
    StreamMaxMoney,
    StreamMoney,
    StreamPacket,
)
from ilp.stream.packet import (
    ErrorCode as StreamErrorCode,
)
from ilp.stream.pay_core import (
    MAX_PROBE_AMOUNT,
    FailureKind,
    PacketKind,
    PacketRequest,
    PaymentCore,
    PaymentSetupError,
    PaymentStatus,
)

BY = "test.connector"
Answer = Callable[[PacketRequest], tuple[Fulfill | Reject, StreamPacket | None]]


def stream_reply(
    req: PacketRequest, kind: PacketType, arrived: int, frames: tuple[Frame, ...] = ()
) -> StreamPacket:
    return StreamPacket(req.sequence, kind, arrived, frames)


def f99(req: PacketRequest, arrived: int, *frames: Frame) -> tuple[Reject, StreamPacket]:
    return Reject(ErrorCode("F99"), "test.receiver"), stream_reply(
        req, PacketType.REJECT, arrived, frames
    )


def fulfill(req: PacketRequest, arrived: int, *frames: Frame) -> tuple[Fulfill, StreamPacket]:
    return Fulfill(bytes(32)), stream_reply(req, PacketType.FULFILL, arrived, frames)


def reject(code: str, data: bytes = b"") -> tuple[Reject, None]:
    return Reject(ErrorCode(code), BY, "", data), None


def receiver(
    rate: Fraction = Fraction(1),
    limit: int | None = None,
    f08_data: bool = True,
    frames: tuple[Frame, ...] = (),
) -> Answer:
    """An honest path: F08 above ``limit``, then a receiver that fulfills what it may."""

    def answer(req: PacketRequest) -> tuple[Fulfill | Reject, StreamPacket | None]:
        if limit is not None and req.source_amount > limit:
            data = AmountTooLargeData(req.source_amount, limit).encode() if f08_data else b""
            return reject("F08", data)
        arrived = req.source_amount * rate.numerator // rate.denominator
        if req.fulfillable and arrived >= req.min_destination_amount:
            return fulfill(req, arrived, *frames)
        return f99(req, arrived, *frames)

    return answer


def take(core: PaymentCore, now: float = 0.0) -> list[PacketRequest]:
    out = []
    while (req := core.next_request(now)) is not None:
        out.append(req)
    return out


def run(core: PaymentCore, answer: Answer, now: float = 0.0, limit: int = 100_000) -> int:
    """Answer every request in order until the core is finished; returns packets sent."""
    sent = 0
    while not core.finished and sent < limit:
        batch = take(core, now)
        if not batch:
            if core.finished or core.in_flight:
                break  # done, or only probes left to abandon
            wakeup = core.next_wakeup(now)
            assert wakeup is not None and wakeup > now, "stuck with nothing to wait for"
            now = wakeup
            continue
        for req in batch:
            sent += 1
            reply, stream = answer(req)
            core.on_reply(req, reply, stream, now)
    return sent


def new_core(**kwargs: object) -> PaymentCore:
    kwargs.setdefault("now", 0.0)
    if "delivery_amount" not in kwargs:
        kwargs.setdefault("source_amount", 1000)
    return PaymentCore(**kwargs)  # type: ignore[arg-type]


def test_core_imports_no_io_library() -> None:
    code = (
        "import sys, ilp.stream.pay_core; "
        "print(','.join(m for m in ('trio', 'httpx', 'trio_websocket') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_first_volley_of_probes() -> None:
    core = new_core(source_asset=("USD", 2), max_in_flight=20)
    reqs = take(core)
    assert [r.source_amount for r in reqs] == [0, *(10**e for e in range(12, 2, -1))]
    assert [r.sequence for r in reqs] == list(range(1, 12))
    assert all(r.kind is PacketKind.PROBE and not r.fulfillable for r in reqs)
    assert reqs[0].packet.frames == (
        ConnectionNewAddress(""),
        ConnectionAssetDetails("USD", 2),
    )
    assert all(r.packet.ilp_packet_type is PacketType.PREPARE for r in reqs)
    # Probes stay within max_in_flight.
    assert len(take(new_core(max_in_flight=3))) == 3


def test_connection_frames_stop_once_the_receiver_answered() -> None:
    core = new_core(max_in_flight=1, source_address="test.me")
    (first,) = take(core)
    assert first.packet.frames == (ConnectionNewAddress("test.me"),)
    core.on_reply(first, *f99(first, 0), 0.0)
    (second,) = take(core)
    assert second.packet.frames == ()


def test_money_packets_carry_the_minimum_and_stream_money() -> None:
    core = new_core(source_amount=2500, slippage=Fraction(1, 10))
    answer = receiver(rate=Fraction(2), limit=1000)
    money: list[PacketRequest] = []

    def record(req: PacketRequest) -> tuple[Fulfill | Reject, StreamPacket | None]:
        if req.kind is PacketKind.MONEY:
            money.append(req)
        return answer(req)

    run(core, record)
    result = core.result(1.0)
    assert result.status is PaymentStatus.COMPLETE
    assert [r.source_amount for r in money] == [1000, 1000, 500]
    assert result.min_exchange_rate == Fraction(9, 5)
    # ceil(amount x 9/5), except the last packet, which may lose one source unit to rounding.
    assert [r.min_destination_amount for r in money] == [1800, 1800, 899]
    assert [r.rounding_correction for r in money] == [False, False, True]
    for r in money:
        assert r.fulfillable
        assert r.packet.frames == (StreamMoney(1, 1),)
        assert r.packet.prepare_amount == r.min_destination_amount
    assert result.amount_sent == 2500
    assert result.amount_delivered == 5000


def test_minimum_rounds_up() -> None:
    core = new_core(source_amount=10, min_exchange_rate=Fraction(1, 3))
    run(core, receiver(rate=Fraction(1, 2)))
    # 10 x 1/3 = 3.33: the receiver must get at least 4 (the single packet is the last one, so
    # it may lose one source unit: ceil(9/3) = 3).
    result = core.result(0.0)
    assert result.status is PaymentStatus.COMPLETE
    assert result.amount_delivered == 5


def test_f08_data_is_scaled_into_source_units() -> None:
    core = new_core(source_amount=10**6, quote_only=True)
    reqs = take(core)
    # A later hop (after a rate of 4) takes at most 1000 of its units.
    for r in reqs:
        if r.source_amount > 250:
            data = AmountTooLargeData(4 * r.source_amount, 1000).encode()
            core.on_reply(r, *reject("F08", data), 0.0)
        else:
            core.on_reply(r, *f99(r, 4 * r.source_amount), 0.0)
    (verify,) = take(core)
    assert verify.source_amount == 250
    core.on_reply(verify, *f99(verify, 1000), 0.0)
    assert core.finished
    quote = core.quote(0.0)
    assert quote.max_packet_amount == 250
    assert quote.probed_rate == 4


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10**8), st.booleans(), st.sampled_from([1, 3, 20]))
def test_probing_finds_the_exact_packet_limit(limit: int, f08_data: bool, in_flight: int) -> None:
    core = new_core(source_amount=10**13, quote_only=True, max_in_flight=in_flight)
    sent = run(core, receiver(rate=Fraction(7, 3), limit=limit, f08_data=f08_data))
    assert core.failure is None
    quote = core.quote(0.0)
    assert quote.max_packet_amount == limit
    # The volley, then a binary search below the smallest probe that failed (or one verification
    # probe when F08 carries data).
    assert sent <= 11 + max(limit, 1000).bit_length() + 4


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_probed_rate_bounds_contain_the_rate(num: int, den: int) -> None:
    rate = Fraction(num, den)
    core = new_core(source_amount=10**9, quote_only=True)
    run(core, receiver(rate=rate))
    quote = core.quote(0.0)
    assert quote.probed_rate <= rate < quote.probed_rate_upper
    assert quote.max_packet_amount is None


def test_no_packet_limit_when_the_largest_probe_gets_through() -> None:
    core = new_core(source_amount=10**15, quote_only=True)
    run(core, receiver())
    assert core.quote(0.0).max_packet_amount is None
    assert core.quote(0.0).max_source_amount == 10**15
    assert MAX_PROBE_AMOUNT == 10**12


def test_t_errors_halve_the_window_once_per_round_and_back_off() -> None:
    core = new_core(source_amount=10**6, max_in_flight=8)
    answer = receiver(limit=1000)
    # Probe, then grow the window with fulfills.
    now = 0.0
    pending = probe(core, answer)
    for _ in range(20):
        nxt = []
        for r in pending:
            core.on_reply(r, *answer(r), now)
            nxt.extend(take(core, now))
        pending = nxt
    assert len(pending) == 8  # the window grew to max_in_flight
    # A round of T04: the whole window fails, the window halves once and sending pauses.
    for r in pending:
        core.on_reply(r, *reject("T04"), now)
    assert take(core, now) == []
    assert core.next_wakeup(now) == pytest.approx(now + 0.1)
    delays = []
    for _ in range(8):
        now = core.next_wakeup(now) or now
        batch = take(core, now)
        assert len(batch) >= 1
        for r in batch:
            core.on_reply(r, *reject("T04"), now)
        wake = core.next_wakeup(now)
        assert wake is not None
        delays.append(round(wake - now, 6))
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    # A fulfill resets the backoff.
    now = core.next_wakeup(now) or now
    (r,) = take(core, now)
    core.on_reply(r, *answer(r), now)
    batch = take(core, now)
    assert len(batch) == 2  # window grows from 1 again
    core.on_reply(batch[0], *reject("T00"), now)
    assert core.next_wakeup(now) == pytest.approx(now + 0.1)


def test_idle_timeout() -> None:
    core = new_core(source_amount=10_000, idle_timeout=30.0)
    answer = receiver(limit=1000)
    now = 0.0
    fulfilled = 0
    while not core.finished:
        batch = take(core, now)
        if not batch:
            wake = core.next_wakeup(now)
            if wake is None:
                break
            now = wake
            continue
        for r in batch:
            if r.kind is PacketKind.MONEY and fulfilled >= 2:
                core.on_reply(r, *reject("T04"), now)
            else:
                fulfilled += r.kind is PacketKind.MONEY
                core.on_reply(r, *answer(r), now)
    result = core.result(now)
    assert result.error is not None and result.error.kind is FailureKind.IDLE_TIMEOUT
    assert now == pytest.approx(30.0)
    assert result.amount_sent == 2000
    assert result.status is PaymentStatus.PARTIAL


def test_probe_timeout() -> None:
    core = new_core(probe_timeout=10.0)
    take(core)  # nothing ever comes back
    assert core.next_wakeup(0.0) == 10.0
    assert core.next_request(10.0) is None
    assert core.finished
    failure = core.failure
    assert failure is not None and failure.kind is FailureKind.RATE_PROBE_FAILED


def test_probe_timeout_with_enough_answers_finishes_probing() -> None:
    core = new_core(source_amount=1000, quote_only=True)
    reqs = take(core)
    for r in reqs:
        if r.source_amount <= 10**6:
            core.on_reply(r, *f99(r, r.source_amount), 0.0)
    assert not core.finished  # waits for the bigger probes, for a better rate
    assert core.next_request(10.0) is None
    assert core.finished and core.failure is None
    assert core.quote(10.0).probed_rate == 1


def test_reply_checks_sequence_and_type() -> None:
    core = new_core(max_in_flight=1)
    (probe,) = take(core)
    # Wrong sequence: not authentic, so an F99 without a readable reply ends probing.
    bad = StreamPacket(probe.sequence + 1, PacketType.REJECT, 0, ())
    core.on_reply(probe, Reject(ErrorCode("F99"), "test.receiver"), bad, 0.0)
    assert core.failure is not None and core.failure.kind is FailureKind.REJECTED


def probe(core: PaymentCore, answer: Answer, now: float = 0.0) -> list[PacketRequest]:
    """Answer probes until money requests come out; returns them (unanswered)."""
    while True:
        batch = take(core, now)
        assert batch, "probing stalled"
        if batch[0].kind is PacketKind.MONEY:
            return batch
        for r in batch:
            core.on_reply(r, *answer(r), now)


def test_fulfill_type_inside_reject_is_accepted_but_not_the_reverse() -> None:
    core = new_core(source_amount=100, max_in_flight=1)
    (money,) = probe(core, receiver())
    assert money.kind is PacketKind.MONEY
    # The receiver fulfilled, a later hop rejected: its reply still counts for the rate.
    inside = StreamPacket(money.sequence, PacketType.FULFILL, 100, ())
    core.on_reply(money, Reject(ErrorCode("T01"), BY), inside, 0.0)
    assert core.result(0.0).amount_sent == 0
    now = core.next_wakeup(0.0) or 0.0
    (money,) = take(core, now)
    # A "Reject" STREAM packet in a Fulfill is discarded: a fulfill without an authentic reply.
    wrong = StreamPacket(money.sequence, PacketType.REJECT, 100, ())
    core.on_reply(money, Fulfill(bytes(32)), wrong, now)
    result = core.result(now)
    assert result.error is not None
    assert result.error.kind is FailureKind.RECEIVER_PROTOCOL_VIOLATION
    assert result.amount_sent == 100
    assert result.amount_delivered == money.min_destination_amount == 99


def test_destination_asset_conflict() -> None:
    core = new_core(max_in_flight=2)
    a, b = take(core)
    core.on_reply(a, *f99(a, 0, ConnectionAssetDetails("USD", 2)), 0.0)
    core.on_reply(b, *f99(b, 0, ConnectionAssetDetails("EUR", 2)), 0.0)
    failure = core.failure
    assert failure is not None and failure.kind is FailureKind.DESTINATION_ASSET_CONFLICT
    close = core.close_request()
    assert close is not None
    assert close.packet.frames == (
        ConnectionClose(StreamErrorCode.PROTOCOL_VIOLATION, "destination_asset_conflict"),
    )


@pytest.mark.parametrize(
    "frame",
    [ConnectionClose(StreamErrorCode.NO_ERROR, "done"), StreamClose(1, 0x09, "no more")],
)
def test_remote_close_ends_without_closing_again(frame: Frame) -> None:
    core = new_core(source_amount=5000)
    answer = receiver(limit=1000)
    money = 0

    def closing(req: PacketRequest) -> tuple[Fulfill | Reject, StreamPacket | None]:
        nonlocal money
        if req.kind is PacketKind.MONEY:
            money += 1
            if money == 2:
                return fulfill(req, req.source_amount, frame)
        return answer(req)

    run(core, closing)
    result = core.result(0.0)
    assert result.error is not None and result.error.kind is FailureKind.CLOSED_BY_RECEIVER
    assert result.status is PaymentStatus.PARTIAL
    assert result.amount_sent == 2000
    assert core.close_request() is None


def test_close_request_codes() -> None:
    core = new_core(source_amount=100)
    run(core, receiver())
    close = core.close_request()
    assert close is not None
    assert close.kind is PacketKind.CLOSE and not close.fulfillable and close.source_amount == 0
    assert close.packet.frames == (ConnectionClose(StreamErrorCode.NO_ERROR, ""),)
    quote_core = new_core(quote_only=True)
    run(quote_core, receiver())
    assert quote_core.close_request() is None
    cancelled = new_core()
    first, *_ = take(cancelled)
    cancelled.on_reply(first, *f99(first, 0), 0.0)
    cancelled.cancel(0.0)
    assert cancelled.close_request() is None
    assert new_core().close_request() is None  # nothing was sent
    unanswered = new_core(max_in_flight=1)
    (first,) = take(unanswered)
    unanswered.on_reply(first, *reject("F02"), 0.0)
    assert unanswered.failure is not None
    assert unanswered.close_request() is None  # the receiver never saw us: nothing to close
    failed = new_core(min_exchange_rate=Fraction(2))
    run(failed, receiver())
    assert failed.finished and failed.failure is not None
    close = failed.close_request()
    assert close is not None
    assert close.packet.frames == (
        ConnectionClose(StreamErrorCode.APPLICATION_ERROR, "insufficient_exchange_rate"),
    )


def test_receive_max_caps_packets() -> None:
    core = new_core(source_amount=10_000)
    answer = receiver(frames=(StreamMaxMoney(1, 2_500, 0),))
    sizes: list[int] = []

    def record(req: PacketRequest) -> tuple[Fulfill | Reject, StreamPacket | None]:
        if req.kind is PacketKind.MONEY:
            sizes.append(req.source_amount)
        return answer(req)

    run(core, record)
    result = core.result(0.0)
    assert result.error is not None and result.error.kind is FailureKind.RECEIVE_MAX
    assert result.amount_delivered == 2_500
    assert sizes == [2_500]


def test_late_probe_after_paying_started_is_only_information() -> None:
    core = new_core(source_amount=1000)
    reqs = take(core)
    late = next(r for r in reqs if r.source_amount == 10**12)
    for r in reqs:
        if r is not late and r.source_amount <= 10**9:
            core.on_reply(r, *f99(r, r.source_amount), 0.0)
    assert core.next_request(10.0) is not None  # probe deadline passed: paying
    core.on_reply(late, *reject("F02"), 10.0)
    assert core.failure is None


def test_cancel_keeps_counting_money_in_flight() -> None:
    core = new_core(source_amount=3000, max_in_flight=4)
    answer = receiver(limit=1000)
    batch = probe(core, answer)
    assert batch and all(r.kind is PacketKind.MONEY for r in batch)
    core.cancel(1.0)
    assert take(core, 1.0) == []
    assert not core.finished
    for r in batch:
        core.on_reply(r, *answer(r), 1.0)
    assert core.finished
    result = core.result(1.0)
    assert result.error is not None and result.error.kind is FailureKind.CANCELLED
    assert result.amount_sent == 1000 * len(batch)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source_amount": None},
        {"source_amount": 1, "delivery_amount": 1},
        {"source_amount": True},
        {"slippage": 0.5},
        {"slippage": Fraction(-1, 2)},
        {"min_exchange_rate": Fraction(-1)},
        {"max_in_flight": 0},
        {"source_asset": ("X", -1)},
    ],
)
def test_setup_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(PaymentSetupError):
        PaymentCore(now=0.0, **{"source_amount": 10, **kwargs})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Any order of replies, any outcome: sent + in flight never exceeds the maximum source amount.

OUTCOMES = ["fulfill", "fulfill", "fulfill", "f99", "T04", "F08", "F08-data", "R01", "F02"]


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(1, 10**6),
    fixed_delivery=st.booleans(),
    rate=st.fractions(min_value=Fraction(1, 100), max_value=100, max_denominator=1000),
    max_in_flight=st.integers(1, 12),
    steps=st.lists(st.tuples(st.integers(0, 50), st.sampled_from(OUTCOMES)), max_size=300),
)
def test_in_flight_never_exceeds_maximum(
    amount: int,
    fixed_delivery: bool,
    rate: Fraction,
    max_in_flight: int,
    steps: list[tuple[int, str]],
) -> None:
    core = new_core(
        **({"delivery_amount": amount} if fixed_delivery else {"source_amount": amount}),
        max_in_flight=max_in_flight,
    )
    now = 0.0
    pending: list[PacketRequest] = []
    honest = receiver(rate=rate)
    for pick, outcome in steps:
        pending.extend(take(core, now))
        progress = core.progress()
        if core.result(now).min_exchange_rate is not None:
            bound = amount
            if fixed_delivery:
                min_rate = core.result(now).min_exchange_rate
                assert min_rate is not None
                bound = -(-amount // min_rate)
            assert progress.amount_sent + progress.source_amount_in_flight <= bound
        if not pending:
            wake = core.next_wakeup(now)
            if wake is None:
                break
            now = max(now, wake)
            continue
        req = pending.pop(pick % len(pending))
        reply: tuple[Fulfill | Reject, StreamPacket | None]
        if outcome in ("fulfill", "f99"):
            reply = honest(req)
        elif outcome == "F08-data" and req.source_amount > 1:
            reply = reject("F08", AmountTooLargeData(req.source_amount, 1).encode())
        elif outcome in ("T04", "R01", "F02", "F08"):
            reply = reject(outcome)
        else:
            reply = honest(req)
        core.on_reply(req, *reply, now)
        now += 0.01
    result = core.result(now)
    if not fixed_delivery:
        assert result.amount_sent <= amount
    if result.status is PaymentStatus.COMPLETE:
        assert (result.amount_delivered if fixed_delivery else result.amount_sent) >= amount


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_wrapped_probe_is_left_out_whatever_the_order(order: str) -> None:
    core = new_core(source_amount=10**6, quote_only=True)
    reqs = take(core)
    if order == "descending":
        reqs.sort(key=lambda r: -r.source_amount)
    else:
        reqs.sort(key=lambda r: r.source_amount)
    rate = 2 * 10**7
    for r in reqs:
        core.on_reply(r, *f99(r, r.source_amount * rate % 2**64), 0.0)
    quote = core.quote(0.0)
    assert quote.probed_rate == rate
    assert quote.probed_rate_upper == Fraction(rate * 10**11 + 1, 10**11)
