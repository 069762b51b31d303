"""pay() over links with ``send_nowait``: the edges of the callback path.

The whole of ``test_pay.py`` also runs over such links (its ``link_path`` fixture); these tests
are about what only the callback path has: declined sends, replies from inside ``send_nowait``,
cancellation while callbacks are due, and callbacks that come after pay() returned.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from ilp.link import Reply, ReplyCallback
from ilp.packet import ErrorCode, Prepare, Reject
from ilp.stream.pay import FailureKind, PaymentProgress, PaymentStatus
from ilp.stream.pay import pay as pay_over

from .nowait_link import nowait_link
from .test_pay import RECEIVER, SECRET, FakePath, _fulfillable, path


async def test_declined_sends_go_through_send(autojump_clock: trio.testing.MockClock) -> None:
    for decline in (1, 3):  # every send_nowait declined; every third one
        p = path(max_packet=100, latency=0.5)
        async with nowait_link(p, decline=decline) as link:
            result = await pay_over(link, RECEIVER, SECRET, source_amount=5_000)
        assert result.status is PaymentStatus.COMPLETE, result.error
        assert result.amount_sent == 5_000 == p.money_sent
        assert result.amount_delivered == p.receiver.total == 5_000
        assert link.declined > 0
        assert link.declined == link.calls if decline == 1 else link.declined < link.calls


async def test_replies_from_inside_send_nowait(autojump_clock: trio.testing.MockClock) -> None:
    # 20,000 packets, every one answered before send_nowait returns: no recursion, no task per
    # packet, and the scheduler still gets its turns (a concurrent task runs meanwhile).
    p = path(max_packet=10)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        async with nowait_link(p, at_once=True) as link:
            result = await pay_over(link, RECEIVER, SECRET, source_amount=200_000)
        nursery.cancel_scope.cancel()
    assert result.status is PaymentStatus.COMPLETE, result.error
    assert result.amount_sent == 200_000 == p.money_sent == p.receiver.total
    assert result.packets_fulfilled == 20_000
    assert link.answered_at_once == link.calls == len(p.prepares) - 1  # the close is awaited
    assert ticks > 100


async def test_a_volley_leaves_before_its_replies_are_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Probes answered at once are still read only once all of the volley has left, as replies
    # over a network would be: the probed rate comes from the smaller probes, not from the
    # 10^12 one alone, which this path wraps around 2^64.
    p = path(rate=2 * 10**7)
    async with nowait_link(p, at_once=True) as link:
        result = await pay_over(link, RECEIVER, SECRET, source_amount=10**6)
    assert result.probed_rate == 2 * 10**7
    sizes = [prepare.amount for _, prepare in p.prepares[:10]]
    assert sizes == [0, *(10**e for e in range(12, 3, -1))]


@pytest.mark.parametrize("at_once", [False, True])
async def test_cancelled_from_a_reply_callback_sends_nothing_more(
    at_once: bool, autojump_clock: trio.testing.MockClock
) -> None:
    p = path(max_packet=100, latency=0 if at_once else 0.2)
    sent_at_cancel = -1
    with trio.CancelScope() as scope:

        def stop(progress: PaymentProgress) -> None:
            nonlocal sent_at_cancel
            if progress.amount_sent >= 1_000 and sent_at_cancel < 0:
                sent_at_cancel = link.calls
                scope.cancel()

        async with nowait_link(p, at_once=at_once) as link:
            result = await pay_over(link, RECEIVER, SECRET, source_amount=100_000, on_progress=stop)
    assert sent_at_cancel > 0
    assert link.calls == sent_at_cancel
    assert result.error is not None and result.error.kind is FailureKind.CANCELLED
    # Money in flight at the cancellation was awaited and counted.
    assert result.amount_sent == p.money_sent and p.in_flight == 0
    assert result.amount_delivered == p.receiver.total


async def test_cancelled_with_callbacks_due_awaits_the_money(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path(max_packet=100, latency=3.0)
    async with nowait_link(p) as link:
        with trio.move_on_after(10):
            result = await pay_over(link, RECEIVER, SECRET, source_amount=100_000)
        assert p.money_in_flight == 0  # answered before pay() returned
    assert result.error is not None and result.error.kind is FailureKind.CANCELLED
    assert result.amount_sent == p.money_sent > 0
    assert all(t <= 10 for t, _ in p.prepares)


class HoldingLink:
    """Answers money through ``send`` in a task; keeps the callbacks of probes of 10^9 and up."""

    def __init__(self, inner: FakePath, nursery: trio.Nursery) -> None:
        self.inner = inner
        self.nursery = nursery
        self.held: list[tuple[Prepare, ReplyCallback]] = []

    async def send(self, prepare: Prepare) -> Reply:
        return await self.inner.send(prepare)

    def send_nowait(self, prepare: Prepare, on_reply: ReplyCallback) -> bool:
        if prepare.amount >= 10**9 and not _fulfillable(self.inner, prepare):
            self.held.append((prepare, on_reply))
            return True

        async def deliver() -> None:
            on_reply(await self.send(prepare))

        self.nursery.start_soon(deliver)
        return True


async def test_callbacks_after_pay_returned_are_harmless(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = path(max_packet=10**6)
    progress: list[PaymentProgress] = []
    async with trio.open_nursery() as nursery:
        link = HoldingLink(p, nursery)
        result = await pay_over(
            link, RECEIVER, SECRET, source_amount=5_000, on_progress=progress.append
        )
    assert result.status is PaymentStatus.COMPLETE, result.error
    assert link.held  # abandoned probes, never answered while pay() ran
    seen = len(progress)
    for _, on_reply in link.held:
        on_reply(Reject(ErrorCode("F08"), "test.connector", "late"))
    for _, on_reply in link.held:  # twice, even
        on_reply(Reject(ErrorCode("T01"), "test.connector", "late"))
    assert len(progress) == seen
