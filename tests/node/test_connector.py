"""The connector's packet pipeline and management, driven in memory with an explicit clock."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp.ildcp import IldcpError, fetch_config, make_request
from ilp.link import PrepareHandler, Reply, ReplyCallback
from ilp.node.connector import (
    Account,
    AccountHandler,
    Connector,
    NodeError,
    NotFoundError,
    RouteInfo,
    hash_token,
)
from ilp.node.store import AccountRecord, NodeStore, StoreError
from ilp.packet import AmountTooLargeData, ErrorCode, Fulfill, Prepare, Reject
from ilp.testing import MemoryLink, memory_link_pair

NODE = "test.node"
NOW = datetime(2024, 1, 1, tzinfo=UTC)
FULFILLMENT = b"\x07" * 32
CONDITION = hashlib.sha256(FULFILLMENT).digest()


def clock() -> datetime:
    return NOW


def prepare(
    destination: str, amount: int = 100, seconds: float = 10, data: bytes = b"hi"
) -> Prepare:
    return Prepare(amount, NOW + timedelta(seconds=seconds), CONDITION, destination, data)


async def fulfill(p: Prepare) -> Reply:
    return Fulfill(FULFILLMENT, b"paid")


def make_connector(store: NodeStore | None = None, **options: Any) -> Connector:
    connector = Connector(
        store if store is not None else NodeStore(":memory:"),
        address=NODE,
        asset_code="XRP",
        asset_scale=9,
        clock=clock,
        **options,
    )
    if PATH.grouped:
        with contextlib.suppress(RuntimeError):  # a test outside trio: commits one by one
            trio.lowlevel.spawn_system_task(connector.run)
    return connector


def attach(
    connector: Connector,
    name: str,
    relation: str = "child",
    asset: tuple[str, int] = ("XRP", 9),
    handler: PrepareHandler | None = None,
    *,
    max_packet_amount: int | None = None,
    credit_limit: int | None = None,
    connected: bool = True,
) -> MemoryLink:
    """Create account ``name`` and connect it; returns the account's own end of the link:
    ``send`` on it sends from the account, its ``handler`` answers what the node routes to it."""
    account = connector.put_account(
        AccountRecord(
            name,
            relation,
            *asset,
            max_packet_amount=max_packet_amount,
            credit_limit=credit_limit,
        )
    )
    incoming: PrepareHandler = connector.handler_for(account)
    if PATH.nowait:
        incoming = NowaitCaller(connector.handler_for(account))
    node_end, own_end = memory_link_pair(incoming, handler, now=clock)
    node_end.address = NODE
    if connected:
        account.links.append(NowaitEnd(node_end) if PATH.nowait else node_end)
    return own_end


class _Path:
    """Which entry point of the connector the tests go through (see the ``path`` fixture)."""

    nowait = False
    grouped = False
    """The connector's committer runs (:meth:`Connector.run`)."""
    taken = 0
    """Prepares the connector took through ``handle_nowait``."""


PATH = _Path()


@pytest.fixture(
    autouse=True,
    params=["handle", "handle_nowait", "handle+grouped", "handle_nowait+grouped"],
)
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs four times: with links and handlers as the awaitable kind, or with
    ``send_nowait`` on the links the node forwards to and the accounts' Prepares going through
    ``handle_nowait`` (the way BTP links drive the connector); and each of those with balances
    committed packet by packet, or in groups by the connector's committer task (as in a node)."""
    PATH.nowait = request.param.startswith("handle_nowait")
    PATH.grouped = request.param.endswith("+grouped")
    PATH.taken = 0
    yield request.param
    PATH.nowait = PATH.grouped = False


class NowaitCaller:
    """Calls the connector the way a BTP connection does: ``handle_nowait`` first, and the
    awaitable handler only when it declines."""

    def __init__(self, handler: AccountHandler) -> None:
        self.handler = handler

    async def __call__(self, p: Prepare) -> Reply:
        replies: list[Reply] = []
        answered = trio.Event()

        def respond(reply: Reply) -> None:
            replies.append(reply)
            answered.set()

        if not self.handler.handle_nowait(p, respond):
            assert not replies
            return await self.handler(p)
        PATH.taken += 1
        await answered.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert len(replies) == 1, replies  # exactly once
        return replies[0]


class NowaitEnd:
    """The node's end of an account's link, with ``send_nowait``: the reply callback runs in a
    task of the link's own (a system task here), as a BTP connection's reader would run it."""

    bounds_expiry = True

    def __init__(self, inner: MemoryLink) -> None:
        self.inner = inner
        self.sent_nowait = 0

    async def send(self, p: Prepare) -> Reply:
        return await self.inner.send(p)

    def send_nowait(self, p: Prepare, on_reply: ReplyCallback) -> bool:
        self.sent_nowait += 1

        async def deliver() -> None:
            on_reply(await self.inner.send(p))

        trio.lowlevel.spawn_system_task(deliver)
        return True


class Recorder:
    """A Prepare handler that keeps what it got and fulfills (or answers ``reply``)."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.got: list[Prepare] = []
        self.reply = reply

    async def __call__(self, p: Prepare) -> Reply:
        self.got.append(p)
        return self.reply if self.reply is not None else Fulfill(FULFILLMENT, b"paid")


class Gate:
    """A handler that holds every Prepare until ``release`` is set, then fulfills."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.arrived = 0
        self.one_arrived = trio.Event()

    async def __call__(self, p: Prepare) -> Reply:
        self.arrived += 1
        self.one_arrived.set()
        await self.release.wait()
        return Fulfill(FULFILLMENT)


class SilentLink:
    """A link that never answers (its ``send`` is cancelled by the connector's deadline)."""

    def __init__(self) -> None:
        self.cancelled = False

    async def send(self, p: Prepare) -> Reply:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")  # pragma: no cover


def check_reject(reply: Reply, code: str, by: str = NODE) -> Reject:
    assert isinstance(reply, Reject), reply
    assert reply.code == code, reply
    assert reply.triggered_by == by
    return reply


def balances(connector: Connector) -> dict[str, tuple[int, int]]:
    """name -> (balance, in_flight)."""
    return {a.name: (a.balance, a.in_flight) for a in connector.accounts.values()}


# -- ILDCP and peer protocols ---------------------------------------------------------------


async def test_ildcp_for_a_child_gives_its_address_and_asset() -> None:
    connector = make_connector()
    alice = attach(connector, "alice", asset=("USD", 2))
    config = await fetch_config(alice, now=clock)
    assert (config.client_address, config.asset_code, config.asset_scale) == (
        "test.node.alice",
        "USD",
        2,
    )


@pytest.mark.parametrize("relation", ["peer", "parent"])
async def test_ildcp_refused_to_non_children(relation: str) -> None:
    connector = make_connector()
    other = attach(connector, "other", relation)
    with pytest.raises(IldcpError) as info:
        await fetch_config(other, now=clock)
    assert info.value.code == "F01"


async def test_other_peer_protocols_are_f01() -> None:
    connector = make_connector()
    alice = attach(connector, "alice")
    attach(connector, "up", "parent", handler=fulfill)  # a default route must not catch it
    reply = await alice.send(prepare("peer.route.control", amount=0))
    check_reject(reply, "F01")
    # An ILDCP request without the peer condition is F01 too; an expired one R00.
    check_reject(await alice.send(prepare("peer.config", amount=0)), "F01")
    expired = make_request(NOW - timedelta(seconds=1))
    check_reject(await connector.handle(connector.account("alice"), expired), "R00")


# -- routing ---------------------------------------------------------------------------------


async def test_unknown_destination_is_f02() -> None:
    connector = make_connector()
    alice = attach(connector, "alice")
    attach(connector, "bob", handler=fulfill)
    reply = await alice.send(prepare("g.nowhere"))
    assert "no route" in check_reject(reply, "F02").message
    check_reject(await alice.send(prepare("test.node.bobby")), "F02")


async def test_default_route_goes_to_the_parent() -> None:
    connector = make_connector()
    alice = attach(connector, "alice")
    parent = Recorder()
    attach(connector, "up", "parent", handler=parent)
    reply = await alice.send(prepare("g.elsewhere.x"))
    assert reply == Fulfill(FULFILLMENT, b"paid")
    assert [p.destination for p in parent.got] == ["g.elsewhere.x"]
    assert RouteInfo("", "up", "default") in connector.routes()


async def test_longer_static_route_beats_a_child_route() -> None:
    connector = make_connector()
    alice = attach(connector, "alice")
    bob, carol = Recorder(), Recorder()
    attach(connector, "bob", handler=bob)
    attach(connector, "carol", "peer", handler=carol)
    connector.set_route("test.node.bob.phone", "carol")
    connector.set_route("test.node", "carol")  # shorter than the child route: loses
    assert isinstance(await alice.send(prepare("test.node.bob.phone.1")), Fulfill)
    assert isinstance(await alice.send(prepare("test.node.bob.laptop")), Fulfill)
    assert isinstance(await alice.send(prepare("test.node.dave")), Fulfill)
    assert [p.destination for p in bob.got] == ["test.node.bob.laptop"]
    assert [p.destination for p in carol.got] == ["test.node.bob.phone.1", "test.node.dave"]
    kinds = {r.prefix: r.kind for r in connector.routes()}
    assert kinds["test.node.bob.phone"] == "static"
    assert kinds["test.node.bob"] == "child"
    assert kinds["test.node.~receive"] == "local"


async def test_route_back_to_the_source_is_f02() -> None:
    connector = make_connector()
    alice = attach(connector, "alice", handler=fulfill)
    parent = attach(connector, "up", "parent", handler=fulfill)
    check_reject(await alice.send(prepare("test.node.alice.x")), "F02")
    # A parent sending to an address only its own default route matches: F02, not a loop.
    check_reject(await parent.send(prepare("g.somewhere")), "F02")


async def test_target_without_a_link_is_t01() -> None:
    connector = make_connector()
    alice = attach(connector, "alice")
    attach(connector, "bob", handler=fulfill, connected=False)
    reply = await alice.send(prepare("test.node.bob"))
    assert "not connected" in check_reject(reply, "T01").message
    assert balances(connector) == {"alice": (0, 0), "bob": (0, 0)}


async def test_newest_link_of_an_account_is_used() -> None:
    connector = make_connector()
    alice = attach(connector, "alice")
    old, new = Recorder(), Recorder()
    attach(connector, "bob", handler=old)
    node_end, _ = memory_link_pair(None, new, now=clock)
    connector.account("bob").links.append(node_end)
    assert isinstance(await alice.send(prepare("test.node.bob")), Fulfill)
    assert (len(old.got), len(new.got)) == (0, 1)


# -- max packet amount -------------------------------------------------------------------------


async def test_over_max_packet_amount_is_f08_with_the_amounts() -> None:
    connector = make_connector()
    alice = attach(connector, "alice", max_packet_amount=1000)
    bob = Recorder()
    attach(connector, "bob", handler=bob)
    reply = check_reject(await alice.send(prepare("test.node.bob", amount=1001)), "F08")
    assert AmountTooLargeData.decode(reply.data) == AmountTooLargeData(1001, 1000)
    assert bob.got == []
    assert isinstance(await alice.send(prepare("test.node.bob", amount=1000)), Fulfill)
    assert [p.amount for p in bob.got] == [1000]


# -- expiry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "forwarded_after"),
    [
        (10, 9),  # expiry less the 1 s window
        (31, 30),
        (100, 30),  # never held longer than max_hold_time
        (1.5, 0.5),
    ],
)
async def test_forwarded_expiry(seconds: float, forwarded_after: float) -> None:
    connector = make_connector(min_message_window=1.0, max_hold_time=30.0)
    alice = attach(connector, "alice")
    bob = Recorder()
    attach(connector, "bob", handler=bob)
    sent = prepare("test.node.bob", seconds=seconds, data=b"end to end")
    assert isinstance(await alice.send(sent), Fulfill)
    (got,) = bob.got
    assert got.expires_at == NOW + timedelta(seconds=forwarded_after)
    assert (got.amount, got.destination, got.data) == (sent.amount, sent.destination, sent.data)
    assert got.execution_condition == CONDITION


@pytest.mark.parametrize("seconds", [1, 0.5, 0, -5])
async def test_too_little_time_left_is_r02(seconds: float) -> None:
    connector = make_connector(min_message_window=1.0)
    attach(connector, "alice")
    bob = Recorder()
    attach(connector, "bob", handler=bob)
    p = prepare("test.node.bob", seconds=seconds)
    # Straight into the connector: the memory link would turn an expired Prepare into R00.
    check_reject(await connector.handle(connector.account("alice"), p), "R02")
    assert bob.got == []


async def test_no_answer_before_the_forwarded_expiry_is_r00(
    autojump_clock: trio.testing.MockClock,
) -> None:
    connector = make_connector(min_message_window=1.0, max_hold_time=30.0)
    alice = attach(connector, "alice", credit_limit=1000)
    attach(connector, "bob")
    silent = SilentLink()
    connector.account("bob").links.append(silent)
    start = trio.current_time()
    reply = await alice.send(prepare("test.node.bob", amount=700, seconds=10))
    assert "no reply from bob" in check_reject(reply, "R00").message
    assert trio.current_time() - start == 9  # the forwarded expiry, not the incoming one
    assert silent.cancelled
    assert balances(connector) == {"alice": (0, 0), "bob": (0, 0)}
    # The amount was released: the whole credit is there again.
    connector.account("bob").links[:] = []
    attach_end, _ = memory_link_pair(None, fulfill, now=clock)
    connector.account("bob").links.append(attach_end)
    assert isinstance(await alice.send(prepare("test.node.bob", amount=1000)), Fulfill)


async def test_a_link_that_bounds_expiry_gets_no_timer_and_its_r00_passes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    connector = make_connector(min_message_window=1.0, max_hold_time=30.0)
    alice = attach(connector, "alice", credit_limit=1000)

    async def never(_: Prepare) -> Reply:
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    attach(connector, "bob", handler=never)  # a memory link: bounds_expiry = True
    assert getattr(connector.account("bob").links[-1], "bounds_expiry", False)
    start = trio.current_time()
    reply = await alice.send(prepare("test.node.bob", amount=700, seconds=10))
    assert check_reject(reply, "R00").message.startswith("no reply before the Prepare expired")
    assert trio.current_time() - start == 9  # the link's own answer, at the forwarded expiry
    assert balances(connector) == {"alice": (0, 0), "bob": (0, 0)}


# -- rates -------------------------------------------------------------------------------------


def _exchange_connector() -> tuple[Connector, MemoryLink, Recorder]:
    connector = make_connector(spread=Fraction(2, 1000))
    connector.set_rate("XRP", Fraction(1, 2))
    connector.set_rate("USD", Fraction(1))
    alice = attach(connector, "alice", asset=("XRP", 9))
    bob = Recorder()
    attach(connector, "bob", asset=("USD", 2), handler=bob)
    return connector, alice, bob


async def test_cross_asset_amount_is_floored_exactly() -> None:
    connector, alice, bob = _exchange_connector()
    amount = 123_456_789_012  # 123.456789012 XRP = 61.72839... USD, less 0.2 %
    expected = amount * 1 * 998 // (2 * 10**7 * 1000)
    assert expected == 6160
    assert isinstance(await alice.send(prepare("test.node.bob", amount=amount)), Fulfill)
    assert [p.amount for p in bob.got] == [expected]
    assert balances(connector) == {"alice": (-amount, 0), "bob": (expected, 0)}


async def test_converting_to_zero_is_r01() -> None:
    _, alice, bob = _exchange_connector()
    check_reject(await alice.send(prepare("test.node.bob", amount=20_000_000)), "R01")
    assert bob.got == []
    # A zero-amount Prepare stays zero: forwarded, not R01.
    assert isinstance(await alice.send(prepare("test.node.bob", amount=0)), Fulfill)
    assert [p.amount for p in bob.got] == [0]


async def test_no_rate_is_f02_until_one_is_set() -> None:
    connector, alice, _ = _exchange_connector()
    carol = Recorder()
    attach(connector, "carol", asset=("GBP", 2), handler=carol)
    reply = await alice.send(prepare("test.node.carol", amount=10**9))
    assert "GBP" in check_reject(reply, "F02").message
    connector.set_rate("GBP", Fraction(5, 4))  # the cached answers must not survive this
    assert isinstance(await alice.send(prepare("test.node.carol", amount=10**9)), Fulfill)
    assert [p.amount for p in carol.got] == [10**9 * 4 * 998 // (2 * 5 * 10**7 * 1000)]
    connector.delete_rate("GBP")
    check_reject(await alice.send(prepare("test.node.carol", amount=10**9)), "F02")


async def test_same_asset_other_scale_needs_no_rate() -> None:
    connector = make_connector()
    alice = attach(connector, "alice", asset=("XRP", 9))
    bob = Recorder()
    attach(connector, "bob", asset=("XRP", 6), handler=bob)
    assert isinstance(await alice.send(prepare("test.node.bob", amount=123_456_789)), Fulfill)
    assert [p.amount for p in bob.got] == [123_456]


async def test_amount_over_u64_after_conversion_is_f03() -> None:
    connector = make_connector()
    alice = attach(connector, "alice", asset=("XRP", 0))
    attach(connector, "bob", asset=("XRP", 9), handler=fulfill)
    check_reject(await alice.send(prepare("test.node.bob", amount=2**60)), "F03")
    assert balances(connector) == {"alice": (0, 0), "bob": (0, 0)}


# -- credit limit ------------------------------------------------------------------------------


async def test_credit_limit_is_t04() -> None:
    connector = make_connector()
    alice = attach(connector, "alice", credit_limit=100)
    attach(connector, "bob", handler=fulfill)
    check_reject(await alice.send(prepare("test.node.bob", amount=101)), "T04")
    assert isinstance(await alice.send(prepare("test.node.bob", amount=100)), Fulfill)
    assert balances(connector)["alice"] == (-100, 0)
    check_reject(await alice.send(prepare("test.node.bob", amount=1)), "T04")
    connector.adjust_balance("alice", 30)  # a deposit
    assert isinstance(await alice.send(prepare("test.node.bob", amount=30)), Fulfill)
    assert balances(connector)["alice"] == (-100, 0)


async def test_packets_in_flight_count_against_the_credit_limit() -> None:
    connector = make_connector()
    alice = attach(connector, "alice", credit_limit=100)
    gate = Gate()
    attach(connector, "bob", handler=gate)
    replies: list[Reply] = []

    async def send_first() -> None:
        replies.append(await alice.send(prepare("test.node.bob", amount=60)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_first)
        await gate.one_arrived.wait()
        assert balances(connector)["alice"] == (0, 60)
        # 0 - 60 in flight - 60 < -100: refused while the first is held, fine alone.
        check_reject(await alice.send(prepare("test.node.bob", amount=60)), "T04")
        check_reject(await alice.send(prepare("test.node.bob", amount=41)), "T04")
        gate.release.set()
    assert replies == [Fulfill(FULFILLMENT)]
    assert gate.arrived == 1
    assert balances(connector) == {"alice": (-60, 0), "bob": (60, 0)}


async def test_a_reject_leaves_the_balances_and_releases_the_hold() -> None:
    connector = make_connector()
    alice = attach(connector, "alice", credit_limit=100)
    downstream = Reject(ErrorCode("F99"), "test.node.bob", "no thanks", b"\x01\x02")
    attach(connector, "bob", handler=Recorder(downstream))
    for _ in range(3):  # a hold that leaked would show by the third
        assert await alice.send(prepare("test.node.bob", amount=100)) == downstream
    assert balances(connector) == {"alice": (0, 0), "bob": (0, 0)}
    assert connector.packets == {"fulfilled": 0, "rejected": 3}


# -- fulfillment -------------------------------------------------------------------------------


async def test_wrong_fulfillment_is_f05_and_nothing_moves(tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "node.sqlite3")
    connector = make_connector(store)
    alice = attach(connector, "alice")

    async def cheat(p: Prepare) -> Reply:
        return Fulfill(b"\x08" * 32)

    attach(connector, "bob", handler=cheat)
    reply = await alice.send(prepare("test.node.bob"))
    assert "fulfillment" in check_reject(reply, "F05").message
    assert balances(connector) == {"alice": (0, 0), "bob": (0, 0)}
    assert {a.name: a.balance for a in store.accounts()} == {"alice": 0, "bob": 0}


async def test_fulfill_moves_balances_and_stores_them(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    connector = make_connector(NodeStore(path), spread=Fraction(1, 10))
    alice = attach(connector, "alice")
    attach(connector, "bob", handler=fulfill)
    reply = await alice.send(prepare("test.node.bob", amount=1000))
    assert reply == Fulfill(FULFILLMENT, b"paid")
    assert balances(connector) == {"alice": (-1000, 0), "bob": (900, 0)}
    with NodeStore(path) as other:  # committed, as another process would see it
        assert {a.name: a.balance for a in other.accounts()} == {"alice": -1000, "bob": 900}
    assert connector.packets == {"fulfilled": 1, "rejected": 0}
    assert PATH.taken == (1 if PATH.nowait else 0)


class CountingStore(NodeStore):
    """A store that logs each commit of balances (and can be made to fail)."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(":memory:")
        self.log = log
        self.fail = False

    def save_balances(self, balances: Iterable[tuple[str, int]]) -> None:
        self.log.append("commit")
        if self.fail:
            raise StoreError("the disk is full")
        super().save_balances(balances)


async def test_fulfills_go_back_only_after_their_balances_are_committed() -> None:
    log: list[str] = []
    connector = make_connector(CountingStore(log))
    alice = attach(connector, "alice")
    gate = Gate()
    attach(connector, "bob", handler=gate)

    async def send() -> None:
        reply = await alice.send(prepare("test.node.bob", amount=10))
        assert isinstance(reply, Fulfill)
        log.append("reply")

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(send)
        while gate.arrived < 5:
            await trio.sleep(0)
        gate.release.set()  # the five Fulfills come back in one pass of the scheduler
    if PATH.grouped:
        assert log == ["commit"] + ["reply"] * 5  # one transaction for the five, then replies
    else:
        # One commit per packet, and every Fulfill that came back had its own before it.
        assert log.count("commit") == 5
        for i, entry in enumerate(log):
            if entry == "reply":
                assert log[:i].count("commit") >= log[: i + 1].count("reply")
    assert balances(connector) == {"alice": (-50, 0), "bob": (50, 0)}
    assert {a.name: a.balance for a in connector.store.accounts()} == {"alice": -50, "bob": 50}
    assert connector.active == 0


async def test_a_failing_store_still_lets_the_fulfill_go_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    store = CountingStore(log)
    connector = make_connector(store)
    alice = attach(connector, "alice")
    attach(connector, "bob", handler=fulfill)
    store.fail = True
    assert isinstance(await alice.send(prepare("test.node.bob", amount=10)), Fulfill)
    assert "could not store the balances" in caplog.text
    assert balances(connector) == {"alice": (-10, 0), "bob": (10, 0)}
    assert connector.active == 0


class BusyEnd(NowaitEnd):
    """A link whose ``send_nowait`` cannot take a Prepare now (a congested WebSocket)."""

    def send_nowait(self, p: Prepare, on_reply: ReplyCallback) -> bool:
        self.sent_nowait += 1
        return False


async def test_a_link_that_cannot_take_a_packet_now_is_awaited_instead() -> None:
    connector = make_connector()
    alice = attach(connector, "alice", credit_limit=1000)
    attach(connector, "bob", connected=False)
    node_end, _ = memory_link_pair(None, fulfill, now=clock)
    busy = BusyEnd(node_end)
    connector.account("bob").links.append(busy)
    for _ in range(2):  # what the refused attempt held would show in the second
        assert isinstance(await alice.send(prepare("test.node.bob", amount=500)), Fulfill)
    assert busy.sent_nowait == (2 if PATH.nowait else 0)
    assert PATH.taken == 0
    assert balances(connector) == {"alice": (-1000, 0), "bob": (1000, 0)}
    assert connector.active == 0


async def test_state_survives_a_new_connector(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    connector = make_connector(NodeStore(path))
    alice = attach(connector, "alice")
    attach(connector, "carol", "peer", handler=fulfill)
    connector.set_route("g.carol", "carol")
    connector.set_rate("USD", Fraction(3, 2))
    assert isinstance(await alice.send(prepare("g.carol.x", amount=5)), Fulfill)
    connector.store.close()
    again = make_connector(NodeStore(path))
    assert balances(again) == {"alice": (-5, 0), "carol": (5, 0)}
    assert again.rates == {"USD": Fraction(3, 2)}
    assert RouteInfo("g.carol", "carol", "static") in again.routes()


# -- local receiving ---------------------------------------------------------------------------


async def test_local_receiving_credits_the_account() -> None:
    local = Recorder()
    wanted: list[str] = []

    def local_handler(account: Account) -> PrepareHandler | None:
        wanted.append(account.name)
        return local if account.name == "bob" else None

    connector = make_connector(local_handler=local_handler)
    alice = attach(connector, "alice")
    attach(connector, "bob", connected=False)  # the node receives for bob: no link needed
    attach(connector, "carol", connected=False)
    address = connector.local_address("bob")
    assert address == "test.node.~receive.bob"
    assert isinstance(await alice.send(prepare(address + ".conn1", amount=50)), Fulfill)
    assert [p.destination for p in local.got] == [address + ".conn1"]
    assert balances(connector) == {"alice": (-50, 0), "bob": (50, 0), "carol": (0, 0)}
    check_reject(await alice.send(prepare(connector.local_address("carol"))), "F02")
    check_reject(await alice.send(prepare(connector.local_address("nobody"))), "F02")
    check_reject(await alice.send(prepare("test.node.~receive")), "F02")
    assert wanted == ["bob", "carol"]


async def test_local_receiving_needs_a_local_handler() -> None:
    connector = make_connector()
    alice = attach(connector, "alice")
    attach(connector, "bob", connected=False)
    check_reject(await alice.send(prepare(connector.local_address("bob"))), "F02")


# -- management --------------------------------------------------------------------------------


def test_set_route_validation() -> None:
    connector = make_connector()
    connector.put_account(AccountRecord("bob", "peer", "XRP", 9))
    with pytest.raises(NodeError, match="link-local"):
        connector.set_route("peer.config", "bob")
    with pytest.raises(NodeError, match="link-local"):
        connector.set_route("peer", "bob")
    with pytest.raises(NodeError, match="prefix"):
        connector.set_route("test..x", "bob")
    with pytest.raises(NotFoundError, match="nobody"):
        connector.set_route("test.x", "nobody")
    assert connector.store.routes() == {}
    assert connector.set_route("", "bob") == RouteInfo("", "bob", "static")
    assert connector.store.routes() == {"": "bob"}


async def test_delete_route() -> None:
    connector = make_connector()
    alice = attach(connector, "alice")
    attach(connector, "bob", "peer", handler=fulfill)
    connector.set_route("g.bob", "bob")
    assert isinstance(await alice.send(prepare("g.bob.x")), Fulfill)
    connector.delete_route("g.bob")
    assert connector.store.routes() == {}
    check_reject(await alice.send(prepare("g.bob.x")), "F02")
    with pytest.raises(NotFoundError):
        connector.delete_route("g.bob")
    with pytest.raises(NotFoundError):  # a child's own route is not a static one
        connector.delete_route("test.node.alice")


def test_rates_management() -> None:
    connector = make_connector()
    connector.set_rate("EUR", Fraction(11, 10))
    assert connector.rates == {"EUR": Fraction(11, 10)}
    assert connector.store.rates() == {"EUR": Fraction(11, 10)}
    for code, rate in (("E UR", Fraction(1)), ("", Fraction(1)), ("EUR", Fraction(0))):
        with pytest.raises(NodeError):
            connector.set_rate(code, rate)
    with pytest.raises(NodeError, match="more than 0"):
        connector.set_rate("EUR", Fraction(-1))
    assert connector.rates == {"EUR": Fraction(11, 10)}
    connector.delete_rate("EUR")
    assert connector.rates == {} == connector.store.rates()
    with pytest.raises(NotFoundError):
        connector.delete_rate("EUR")


async def test_put_account_keeps_the_balance_and_the_links() -> None:
    changed: list[str] = []
    connector = make_connector(on_change=changed.append)
    alice = attach(connector, "alice")
    attach(connector, "bob", handler=fulfill)
    assert isinstance(await alice.send(prepare("test.node.bob", amount=40)), Fulfill)
    account = connector.put_account(
        AccountRecord("alice", "child", "XRP", 9, credit_limit=10, token_hash=hash_token("t"))
    )
    assert account.balance == -40
    assert account.check_token("t")
    assert not account.check_token("u")
    assert connector.store.accounts()[0].balance == -40
    # The new settings apply to the link already there: -40 - 1 < -10.
    check_reject(await alice.send(prepare("test.node.bob", amount=1)), "T04")
    assert changed == ["alice", "bob", "alice"]


@pytest.mark.parametrize(
    "record",
    [
        AccountRecord("a.b", "child", "XRP", 9),
        AccountRecord("", "child", "XRP", 9),
        AccountRecord("a", "friend", "XRP", 9),
        AccountRecord("a", "child", "X-RP", 9),
        AccountRecord("a", "child", "XRP", 256),
    ],
)
def test_put_account_validation(record: AccountRecord) -> None:
    connector = make_connector()
    with pytest.raises(NodeError):
        connector.put_account(record)
    assert connector.accounts == {}
    assert connector.store.accounts() == []


async def test_account_settings_change_while_packets_are_in_flight() -> None:
    connector = make_connector()
    alice = attach(connector, "alice", credit_limit=1000)
    gate = Gate()
    attach(connector, "bob", handler=gate)
    replies: list[Reply] = []

    async def send() -> None:
        replies.append(await alice.send(prepare("test.node.bob", amount=300)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await gate.one_arrived.wait()
        connector.put_account(AccountRecord("alice", "child", "XRP", 9, credit_limit=2000))
        connector.put_account(AccountRecord("bob", "child", "XRP", 9, max_packet_amount=5000))
        assert balances(connector) == {"alice": (0, 300), "bob": (0, 0)}
        with pytest.raises(NodeError, match="in flight"):
            connector.put_account(AccountRecord("alice", "child", "USD", 2))
        gate.release.set()
    assert replies == [Fulfill(FULFILLMENT)]
    # The packet's effects land on the accounts as they are now, and in the store.
    assert balances(connector) == {"alice": (-300, 0), "bob": (300, 0)}
    assert {a.name: a.balance for a in connector.store.accounts()} == {"alice": -300, "bob": 300}
    assert connector.account("alice").credit_limit == 2000


async def test_an_account_deleted_and_made_again_mid_packet_keeps_its_new_balance(
    tmp_path: Path,
) -> None:
    connector = make_connector(NodeStore(tmp_path / "node.sqlite3"))
    alice = attach(connector, "alice")
    gate = Gate()
    attach(connector, "bob", handler=gate)
    replies: list[Reply] = []

    async def send() -> None:
        replies.append(await alice.send(prepare("test.node.bob", amount=300)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await gate.one_arrived.wait()
        connector.delete_account("bob")
        connector.put_account(AccountRecord("bob", "child", "XRP", 9))
        gate.release.set()
    assert replies == [Fulfill(FULFILLMENT)]  # the money moved downstream: alice pays
    assert balances(connector) == {"alice": (-300, 0), "bob": (0, 0)}
    assert {a.name: a.balance for a in connector.store.accounts()} == {"alice": -300, "bob": 0}


async def test_delete_account_removes_its_routes_and_stops_its_link() -> None:
    changed: list[str] = []
    connector = make_connector(on_change=changed.append)
    alice = attach(connector, "alice")
    bob = attach(connector, "bob", "peer", handler=fulfill)
    connector.set_route("g.bob", "bob")
    connector.set_route("g.alice", "alice")
    connector.delete_account("bob")
    assert "bob" not in connector.accounts
    assert connector.store.routes() == {"g.alice": "alice"}
    assert [a.name for a in connector.store.accounts()] == ["alice"]
    assert all(r.account != "bob" for r in connector.routes())
    check_reject(await alice.send(prepare("g.bob.x")), "F02")
    # bob's link is still open, but the account is gone.
    reply = await bob.send(prepare("test.node.alice"))
    assert "deleted" in check_reject(reply, "T01").message
    with pytest.raises(NotFoundError):
        connector.delete_account("bob")
    with pytest.raises(NotFoundError):
        connector.account("bob")
    with pytest.raises(NotFoundError):
        connector.adjust_balance("bob", 1)
    assert changed[-1] == "bob"
    # A new account of the same name starts from zero, with no old routes.
    attach(connector, "bob", "peer", handler=fulfill)
    assert connector.account("bob").balance == 0
    check_reject(await alice.send(prepare("g.bob.x")), "F02")


async def test_adjust_balance_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    connector = make_connector(NodeStore(path))
    attach(connector, "alice")
    assert connector.adjust_balance("alice", 2**64).balance == 2**64
    assert connector.adjust_balance("alice", -(2**65)).balance == -(2**64)
    with NodeStore(path) as other:
        assert other.accounts()[0].balance == -(2**64)


async def test_link_from_sends_as_the_account() -> None:
    connector = make_connector()
    attach(connector, "alice", credit_limit=10)
    bob = Recorder()
    attach(connector, "bob", handler=bob)
    link = connector.link_from(connector.account("alice"))
    assert isinstance(await link.send(prepare("test.node.bob", amount=10)), Fulfill)
    check_reject(await link.send(prepare("test.node.bob", amount=1)), "T04")
    assert balances(connector)["alice"] == (-10, 0)


async def test_set_address_moves_the_child_routes() -> None:
    connector = make_connector()
    alice = attach(connector, "alice")
    attach(connector, "bob", handler=fulfill)
    connector.set_address("g.newhome")
    check_reject(await alice.send(prepare("test.node.bob")), "F02", by="g.newhome")
    assert isinstance(await alice.send(prepare("g.newhome.bob")), Fulfill)
    config = await fetch_config(alice, now=clock)
    assert config.client_address == "g.newhome.alice"


async def test_drain_refuses_new_packets_and_waits_for_those_in_flight() -> None:
    connector = make_connector()
    alice = attach(connector, "alice")
    gate = Gate()
    attach(connector, "bob", handler=gate)
    drained = False
    replies: list[Reply] = []

    async def send() -> None:
        replies.append(await alice.send(prepare("test.node.bob")))

    async def drain() -> None:
        nonlocal drained
        await connector.drain()
        drained = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await gate.one_arrived.wait()
        nursery.start_soon(drain)
        await trio.testing.wait_all_tasks_blocked()
        assert not drained
        check_reject(await alice.send(prepare("test.node.bob")), "T03")
        gate.release.set()
    assert drained
    assert replies == [Fulfill(FULFILLMENT)]


# -- the books under arbitrary traffic ---------------------------------------------------------

_BEHAVIOURS = ("fulfill", "wrong fulfillment", "reject", "raise")
"""What the next hop does with a Prepare (its first data byte picks one)."""

_traffic = st.lists(
    st.tuples(
        # Weighted towards packets that go through (repeated entries), so that most examples
        # move money; the rest meet every check on the way.
        st.sampled_from(
            ["test.node.bob"] * 4
            + ["test.node.carol"] * 3
            + [
                "test.node.bob.deeper",
                "test.node.alice",  # back to the source
                "test.node.nobody",
                "test.elsewhere",
                "peer.config",
                "peer.route.update",
            ]
        ),
        st.one_of(st.integers(0, 2_000), st.integers(10**9, 10**11), st.integers(0, 2**64 - 1)),
        st.sampled_from([-5.0, 0.0, 0.5, 1.5] + [10.0, 60.0] * 4),  # seconds to expiry
        st.sampled_from([0] * 5 + list(range(1, len(_BEHAVIOURS)))),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, database=None)
@given(traffic=_traffic, credit_limit=st.sampled_from([None, 0, 1_500, 10**6]))
def test_arbitrary_traffic_keeps_the_books(
    traffic: list[tuple[str, int, float, int]], credit_limit: int | None
) -> None:
    # Concurrent Prepares of any amount, expiry and destination, next hops that fulfill, cheat,
    # reject or fail: every Prepare gets a Fulfill or a Reject, a Fulfill only for what the next
    # hop really fulfilled, and the balances are exactly the sums of the fulfilled packets (same
    # asset and across assets), within the credit limit, with nothing left held.
    credited: dict[int, tuple[str, int]] = {}
    """Packet number -> (account, amount) the next hop got and fulfilled correctly."""

    def next_hop(name: str) -> PrepareHandler:
        async def answer(p: Prepare) -> Reply:
            number, behaviour = int.from_bytes(p.data[:4], "big"), _BEHAVIOURS[p.data[4]]
            if behaviour == "fulfill":
                credited[number] = (name, p.amount)
                return Fulfill(FULFILLMENT, b"paid")
            if behaviour == "wrong fulfillment":
                return Fulfill(b"\x08" * 32)
            if behaviour == "reject":
                return Reject(ErrorCode("F99"), f"test.node.{name}", "no", b"\x01")
            raise RuntimeError("the next hop broke")

        return answer

    async def scenario() -> None:
        connector = make_connector(spread=Fraction(3, 1000))
        connector.set_rate("XRP", Fraction(1, 2))
        connector.set_rate("USD", Fraction(1))
        alice = attach(connector, "alice", credit_limit=credit_limit, max_packet_amount=10**12)
        attach(connector, "bob", handler=next_hop("bob"))
        attach(connector, "carol", asset=("USD", 2), handler=next_hop("carol"))
        replies: dict[int, Reply] = {}

        async def send(number: int, destination: str, amount: int, seconds: float, b: int) -> None:
            data = number.to_bytes(4, "big") + bytes([b])
            replies[number] = await alice.send(prepare(destination, amount, seconds, data))

        async with trio.open_nursery() as nursery:
            for number, packet in enumerate(traffic):
                nursery.start_soon(send, number, *packet)
        await trio.testing.wait_all_tasks_blocked()

        assert sorted(replies) == list(range(len(traffic)))
        fulfilled = [n for n, reply in replies.items() if isinstance(reply, Fulfill)]
        assert all(isinstance(reply, Fulfill | Reject) for reply in replies.values())
        assert all(replies[n] == Fulfill(FULFILLMENT, b"paid") for n in fulfilled)
        assert sorted(fulfilled) == sorted(credited), (replies, credited)
        for n in fulfilled:  # the amount limit held
            assert traffic[n][1] <= 10**12
        paid = sum(traffic[n][1] for n in fulfilled)
        assert balances(connector) == {
            "alice": (-paid, 0),
            "bob": (sum(a for who, a in credited.values() if who == "bob"), 0),
            "carol": (sum(a for who, a in credited.values() if who == "carol"), 0),
        }
        if credit_limit is not None:
            assert paid <= credit_limit
        for n, (who, amount) in credited.items():  # cross-asset amounts are floored exactly
            if who == "carol":
                assert amount == traffic[n][1] * 1 * 997 // (2 * 10**7 * 1000)
            else:
                assert amount == traffic[n][1] * 997 // 1000
        assert connector.packets["fulfilled"] == len(fulfilled)
        stored = {r.name: r.balance for r in connector.store.accounts()}
        assert stored == {name: b for name, (b, _) in balances(connector).items()}

    trio.run(scenario)
