"""ilp.testing: in-memory links and the fake connector, on trio's autojump clock."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import trio
import trio.testing

from ilp.ildcp import fetch_config
from ilp.link import IlpLink, Reply
from ilp.packet import ErrorCode, Fulfill, Prepare, Reject
from ilp.testing import FakeConnector, memory_link_pair

FULFILLMENT = b"\x07" * 32
CONDITION = hashlib.sha256(FULFILLMENT).digest()
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def prepare(destination: str = "test.b", amount: int = 5, seconds: float = 30) -> Prepare:
    return Prepare(amount, NOW + timedelta(seconds=seconds), CONDITION, destination, b"d")


async def fulfill(p: Prepare) -> Reply:
    return Fulfill(FULFILLMENT, p.data + b"!")


async def test_pair_delivers_both_ways() -> None:
    async def reject(p: Prepare) -> Reply:
        return Reject(ErrorCode("F99"), "test.a", "no")

    a, b = memory_link_pair(reject, fulfill, now=clock)
    assert isinstance(a, IlpLink)
    assert await a.send(prepare()) == Fulfill(FULFILLMENT, b"d!")
    assert await b.send(prepare()) == Reject(ErrorCode("F99"), "test.a", "no")
    assert a.sent == [prepare()]
    assert b.sent == [prepare()]


async def test_no_handler_is_f02_and_raising_is_t00() -> None:
    async def boom(p: Prepare) -> Reply:
        raise RuntimeError("bug")

    a, b = memory_link_pair(None, boom, now=clock)
    a.address = "test.a"
    b.address = "test.b"
    reply = await a.send(prepare())
    assert isinstance(reply, Reject)
    assert (reply.code, reply.triggered_by) == ("T00", "test.a")
    reply = await b.send(prepare())
    assert isinstance(reply, Reject)
    assert (reply.code, reply.triggered_by) == ("F02", "test.b")
    b.handler = fulfill  # handlers can be set later
    assert await a.send(prepare()) == Fulfill(FULFILLMENT, b"d!")
    b.peer.handler = fulfill
    assert await b.send(prepare()) == Fulfill(FULFILLMENT, b"d!")


async def test_expiry_is_r00(autojump_clock: trio.testing.MockClock) -> None:
    cancelled = False

    async def slow(p: Prepare) -> Reply:
        nonlocal cancelled
        try:
            await trio.sleep(3600)
        except trio.Cancelled:
            cancelled = True
            raise
        return Fulfill(FULFILLMENT)  # pragma: no cover

    a, _ = memory_link_pair(None, slow, now=clock)
    start = trio.current_time()
    reply = await a.send(prepare(seconds=30))
    assert isinstance(reply, Reject)
    assert reply.code == "R00"
    assert trio.current_time() - start == 30
    assert cancelled


async def test_fake_connector_ildcp_and_routing() -> None:
    connector = FakeConnector("test.conn", asset_code="USD", asset_scale=2, now=clock)
    alice = connector.add_child("alice")
    bob = connector.add_child("bob", fulfill)
    config = await fetch_config(alice, now=clock)
    assert (config.client_address, config.asset_code, config.asset_scale) == (
        "test.conn.alice",
        "USD",
        2,
    )
    assert await alice.send(prepare("test.conn.bob.x")) == Fulfill(FULFILLMENT, b"d!")
    assert connector.forwarded == [("bob", prepare("test.conn.bob.x"))]
    reply = await alice.send(prepare("test.conn.carol"))
    assert isinstance(reply, Reject)
    assert (reply.code, reply.triggered_by) == ("F02", "test.conn")
    reply = await bob.send(prepare("test.conn.alice"))  # alice has no handler
    assert isinstance(reply, Reject)
    assert reply.code == "F02"


async def test_fake_connector_max_packet_amount() -> None:
    connector = FakeConnector("test.conn", max_packet_amount=100, now=clock)
    alice = connector.add_child("alice")
    connector.add_child("bob", fulfill)
    reply = await alice.send(prepare("test.conn.bob", amount=1000))
    assert isinstance(reply, Reject)
    assert reply.code == "F08"
    f08 = reply.amount_too_large()
    assert f08 is not None
    assert (f08.received_amount, f08.maximum_amount) == (1000, 100)
    assert isinstance(await alice.send(prepare("test.conn.bob", amount=100)), Fulfill)


async def test_fake_connector_rejects_bad_ildcp() -> None:
    connector = FakeConnector(now=clock)
    alice = connector.add_child("alice")
    reply = await alice.send(prepare("peer.config"))  # not the peer condition
    assert isinstance(reply, Reject)
    assert reply.code == "F01"
