"""STREAM connections and streams on trio, over in-memory links."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
import trio
import trio.testing

from ilp.errors import StreamError
from ilp.link import IlpLink, Reply
from ilp.packet import ErrorCode, Prepare, Reject
from ilp.stream.client import ConnectionRouter, open_stream_connection
from ilp.stream.connection import Connection, DataStream
from ilp.stream.core import ReplyKind
from ilp.stream.packet import ErrorCode as StreamErrorCode
from ilp.stream.receipt import verify_receipt
from ilp.stream.server import StreamServer
from ilp.testing import FakeConnector, MemoryLink, memory_link_pair

from .nowait import mount

SERVER_SECRET = b"\x11" * 32

pytestmark = pytest.mark.usefixtures("receiver_path")


class RateLink:
    """A link that changes amounts on the way, as a connector with a rate does."""

    def __init__(self, inner: IlpLink, rate: Fraction) -> None:
        self.inner = inner
        self.rate = rate

    async def send(self, prepare: Prepare) -> Reply:
        amount = prepare.amount * self.rate.numerator // self.rate.denominator
        moved = Prepare(
            amount,
            prepare.expires_at,
            prepare.execution_condition,
            prepare.destination,
            prepare.data,
        )
        return await self.inner.send(moved)


class FlakyLink:
    """A link rejecting the first ``failures`` Prepares with ``code``."""

    def __init__(self, inner: IlpLink, failures: int, code: str = "T04") -> None:
        self.inner = inner
        self.failures = failures
        self.code = code
        self.rejected_at: list[float] = []

    async def send(self, prepare: Prepare) -> Reply:
        if self.failures > 0:
            self.failures -= 1
            self.rejected_at.append(trio.current_time())
            return Reject(ErrorCode(self.code), "test.connector", "busy")
        return await self.inner.send(prepare)


@dataclass
class Pair:
    client: Connection
    server_conn: Connection
    server: StreamServer
    client_link: MemoryLink


@asynccontextmanager
async def connected(
    *,
    wrap: Callable[[MemoryLink], IlpLink] | None = None,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    credentials: dict[str, Any] | None = None,
) -> AsyncIterator[Pair]:
    """A client connection and the server's end of it, over a memory link pair."""
    router = ConnectionRouter()
    client_link, server_link = memory_link_pair(router, None)
    srv = StreamServer(SERVER_SECRET, "test.bob", "USD", 2, link=server_link, **(server or {}))
    server_link.handler = mount(srv)
    async with srv:
        incoming = srv.connections()
        destination, secret = srv.generate_credentials(**(credentials or {}))
        link = wrap(client_link) if wrap is not None else client_link
        async with open_stream_connection(
            link,
            destination,
            secret,
            source_address="test.alice",
            asset_code="XRP",
            asset_scale=9,
            router=router,
            **(client or {}),
        ) as conn:
            server_conn = await incoming.__anext__()
            yield Pair(conn, server_conn, srv, client_link)


async def read_exactly(stream: DataStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some()
        assert chunk, "EOF before the expected bytes"
        data += chunk
    return bytes(data)


# --------------------------------------------------------------------------------------------
# trio's own conformance checks


async def test_data_streams_pass_trios_half_closeable_stream_checks() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:

            async def maker() -> tuple[DataStream, DataStream]:
                pair = await stack.enter_async_context(connected())
                ours = pair.client.open_stream()
                theirs = await pair.server_conn.streams().__anext__()
                return ours, theirs

            await trio.testing.check_half_closeable_stream(maker, None)


# --------------------------------------------------------------------------------------------
# Money and data


async def test_money_and_data_both_ways_with_receipts() -> None:
    nonce, receipt_secret = b"\x05" * 16, b"\x06" * 32
    with trio.fail_after(10):
        async with connected(
            credentials={
                "tag": "invoice-9",
                "receipt_nonce": nonce,
                "receipt_secret": receipt_secret,
            }
        ) as pair:
            assert pair.server_conn.tag == "invoice-9"
            assert pair.client.remote_asset == ("USD", 2)
            assert pair.server_conn.remote_asset == ("XRP", 9)
            stream = pair.client.open_stream()
            await stream.send_money(700)
            await stream.send_money(300)
            await stream.send_all(b"ping")
            theirs = await pair.server_conn.streams().__anext__()
            assert theirs.id == stream.id == 1
            assert await read_exactly(theirs, 4) == b"ping"
            await theirs.send_all(b"pong")
            assert await read_exactly(stream, 4) == b"pong"
            # The server's money events add up to what was sent.
            money = theirs.money()
            assert await money.__anext__() == 1000
            assert theirs.total_received == pair.server_conn.total_received == 1000
            assert stream.total_sent == stream.total_delivered == pair.client.total_sent == 1000
            assert stream.receipt is not None
            receipt = verify_receipt(stream.receipt, receipt_secret)
            assert (receipt.nonce, receipt.stream_id, receipt.total_received) == (nonce, 1, 1000)
            # A stream the server opens has an even id.
            server_stream = pair.server_conn.open_stream()
            await server_stream.send_all(b"from the server")
            mine = await pair.client.streams().__anext__()
            assert mine.id == 2
            assert await read_exactly(mine, 15) == b"from the server"
        assert pair.client.close_reason is not None
        assert pair.client.close_reason.code == StreamErrorCode.NO_ERROR
        assert pair.server_conn.close_reason is not None
        assert pair.server_conn.close_reason.by_remote
        assert pair.server.live_connections == 0


async def test_large_data_with_several_packets_in_flight() -> None:
    data = bytes(range(256)) * 2000  # 512 kB
    with trio.fail_after(30):
        async with connected(client={"max_in_flight": 4}, server={"max_in_flight": 4}) as pair:
            stream = pair.client.open_stream()
            theirs_task: list[bytes] = []

            async def echo_back() -> None:
                theirs = await pair.server_conn.streams().__anext__()
                got = await read_exactly(theirs, len(data))
                theirs_task.append(got)
                await theirs.send_all(got[::-1])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo_back)
                await stream.send_all(data)
                assert await read_exactly(stream, len(data)) == data[::-1]
            assert theirs_task == [data]


async def test_send_eof_keeps_the_stream_readable() -> None:
    with trio.fail_after(10):
        async with connected() as pair:
            stream = pair.client.open_stream()
            await stream.send_all(b"request")
            await stream.send_eof()
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_all(b"more")
            theirs = await pair.server_conn.streams().__anext__()
            assert await read_exactly(theirs, 7) == b"request"
            assert await theirs.receive_some() == b""
            await theirs.send_all(b"response")
            await theirs.aclose()
            assert await read_exactly(stream, 8) == b"response"
            assert await stream.receive_some() == b""


async def test_should_fulfill_refuses_money() -> None:
    seen: list[tuple[int, int]] = []

    async def at_most_500(conn: Connection, stream: DataStream, amount: int) -> bool:
        seen.append((stream.id, amount))
        return stream.total_received + amount <= 500

    with trio.fail_after(10):
        async with connected(server={"should_fulfill": at_most_500}) as pair:
            stream = pair.client.open_stream()
            await stream.send_money(400)
            with pytest.raises(StreamError, match="refused") as info:
                await stream.send_money(200)
            assert "400 of 600 sent" in str(info.value)
            assert pair.server_conn.total_received == 400
            assert seen == [(1, 400), (1, 200)]


async def test_the_receivers_limit_holds_money_until_it_is_raised() -> None:
    with trio.fail_after(10):
        async with connected(server={"receive_max": 300}) as pair:
            stream = pair.client.open_stream()
            pair.client.minimum_exchange_rate = Fraction(1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.send_money, 1000)
                theirs = await pair.server_conn.streams().__anext__()
                money = theirs.money()
                total = 0
                while total < 300:
                    total += await money.__anext__()
                assert total == 300
                await trio.testing.wait_all_tasks_blocked()
                assert stream.total_sent == 300  # blocked at the receiver's limit
                theirs.set_receive_max(1000)
            assert stream.total_sent == 1000 and theirs.total_received == 1000


async def test_rate_below_the_minimum_ends_the_payment_with_nothing_lost() -> None:
    def halving(link: MemoryLink) -> IlpLink:
        return RateLink(link, Fraction(1, 2))

    with trio.fail_after(10):
        async with connected(
            wrap=halving, client={"minimum_exchange_rate": Fraction(9, 10)}
        ) as pair:
            stream = pair.client.open_stream()
            with pytest.raises(StreamError, match="exchange rate"):
                await stream.send_money(1000)
            assert stream.total_sent == 0 and pair.server_conn.total_received == 0
            probe = await pair.client.probe(1000)
            assert probe.kind is ReplyKind.REJECTED and probe.delivered == 500
            # At a rate the path honours, money goes through.
            pair.client.minimum_exchange_rate = Fraction(2, 5)
            again = pair.client.open_stream()
            await again.send_money(1000)
            assert again.total_delivered == 500 == pair.server_conn.total_received


async def test_f08_splits_money_into_packets(autojump_clock: trio.testing.MockClock) -> None:
    connector = FakeConnector("test.connector", max_packet_amount=100)
    server_end = connector.add_child("bob")
    router = ConnectionRouter()
    client_end = connector.add_child("alice", router)
    server = StreamServer(SERVER_SECRET, "test.connector.bob", "XRP", 9, link=server_end)
    server_end.handler = mount(server)
    with trio.fail_after(60):
        async with server:
            destination, secret = server.generate_credentials()
            async with open_stream_connection(
                client_end, destination, secret, router=router, max_in_flight=3
            ) as conn:
                assert conn.source_address is not None
                assert conn.source_address.startswith("test.connector.alice.")
                stream = conn.open_stream()
                await stream.send_money(1050)
                assert conn.max_packet_amount is not None and conn.max_packet_amount <= 100
                assert stream.total_sent == 1050 == conn.total_delivered
    packets = [p for _, p in connector.forwarded if p.amount > 0]
    assert sum(p.amount for p in packets) == 1050
    assert all(p.amount <= 100 for p in packets)


async def test_temporary_errors_are_retried_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky: list[FlakyLink] = []

    def wrap(link: MemoryLink) -> IlpLink:
        flaky.append(FlakyLink(link, 0))
        return flaky[0]

    with trio.fail_after(60):
        async with connected(wrap=wrap) as pair:
            flaky[0].failures = 3
            stream = pair.client.open_stream()
            start = trio.current_time()
            await stream.send_money(10)
            assert stream.total_sent == 10
            times = [t - start for t in flaky[0].rejected_at]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert gaps == pytest.approx([0.1, 0.2], abs=1e-6)


async def test_final_error_closes_the_connection() -> None:
    with trio.fail_after(10):
        async with connected(wrap=lambda link: FlakyLink(link, 0)) as pair:
            link = pair.client._link
            assert isinstance(link, FlakyLink)
            link.failures, link.code = 1, "F02"
            stream = pair.client.open_stream()
            with pytest.raises(StreamError, match="F02"):
                await stream.send_money(10)
            assert pair.client.closed
            with pytest.raises(trio.BrokenResourceError):
                await stream.send_all(b"x")


# --------------------------------------------------------------------------------------------
# Opening, closing, time


async def test_wrong_secret_cannot_connect() -> None:
    router = ConnectionRouter()
    client_link, server_link = memory_link_pair(router, None)
    server = StreamServer(SERVER_SECRET, "test.bob", "USD", 2, link=server_link)
    server_link.handler = mount(server)
    destination, _ = server.generate_credentials()
    with trio.fail_after(10):
        with pytest.raises(StreamError, match="F06"):
            async with open_stream_connection(
                client_link,
                destination,
                b"\x00" * 32,
                source_address="test.alice",
                asset_code="XRP",
                asset_scale=9,
            ):
                pytest.fail("connected with a wrong secret")
    assert server.live_connections == 0


async def test_an_exception_in_the_block_propagates_and_tells_the_peer() -> None:
    with trio.fail_after(10):
        with pytest.raises(KeyError, match="boom"):
            async with connected() as pair:
                server_conn = pair.server_conn
                raise KeyError("boom")
        reason = await server_conn.wait_closed()
        assert reason.code == StreamErrorCode.APPLICATION_ERROR and reason.by_remote
        assert "KeyError" in reason.message


async def test_cancelling_send_money_stops_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with connected(server={"receive_max": 100}) as pair:
            pair.client.minimum_exchange_rate = Fraction(1)
            stream = pair.client.open_stream()
            with trio.move_on_after(5):
                await stream.send_money(1000)
            assert stream.total_sent == 100 == pair.server_conn.total_received
            theirs = await pair.server_conn.streams().__anext__()
            theirs.set_receive_max(10_000)
            await trio.sleep(5)  # nothing more may leave: the rest was cancelled
            assert stream.total_sent == 100 == pair.server_conn.total_received
            assert pair.client.core.flushed()


async def test_stream_aclose_gives_up_when_the_peer_cannot_be_reached(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with connected(
            wrap=lambda link: FlakyLink(link, 0), client={"close_timeout": 3.0}
        ) as pair:
            link = pair.client._link
            assert isinstance(link, FlakyLink)
            stream = pair.client.open_stream()
            link.failures = 10**6  # every Prepare from now on: T04
            await stream.send_all(b"never delivered")
            start = trio.current_time()
            await stream.aclose()
            assert trio.current_time() - start == pytest.approx(3.0, abs=0.01)
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_all(b"x")
            link.failures = 0  # the connection can still close properly


async def test_idle_connections_close(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with connected(client={"idle_timeout": 30.0}, server={"idle_timeout": 45.0}) as pair:
            stream = pair.client.open_stream()
            await stream.send_all(b"x")
            start = trio.current_time()
            reason = await pair.client.wait_closed()
            assert reason.message == "idle timeout" and not reason.by_remote
            assert trio.current_time() - start == pytest.approx(30.0, abs=0.5)
            with pytest.raises(trio.BrokenResourceError):
                await stream.send_all(b"y")
            assert await stream.receive_some() == b""
            await pair.server_conn.wait_closed()
            assert trio.current_time() - start == pytest.approx(45.0, abs=0.5)
            assert pair.server.live_connections == 0


async def test_two_connections_share_one_link_through_a_router() -> None:
    router = ConnectionRouter()
    client_link, server_link = memory_link_pair(router, None)
    server = StreamServer(SERVER_SECRET, "test.bob", "USD", 2, link=server_link)
    server_link.handler = mount(server)
    with trio.fail_after(10):
        async with server:
            incoming = server.connections()

            async def echo(conn: Connection) -> None:
                async for stream in conn.streams():
                    data = await stream.receive_some()
                    await stream.send_all(data * 2)

            async def client(name: bytes) -> bytes:
                destination, secret = server.generate_credentials()
                async with open_stream_connection(
                    client_link,
                    destination,
                    secret,
                    source_address="test.alice",
                    asset_code="XRP",
                    asset_scale=9,
                    router=router,
                ) as conn:
                    stream = conn.open_stream()
                    await stream.send_all(name)
                    return await read_exactly(stream, 2 * len(name))

            results: dict[bytes, bytes] = {}

            async def run_client(name: bytes) -> None:
                results[name] = await client(name)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_client, b"one")
                nursery.start_soon(run_client, b"two")
                for _ in range(2):
                    nursery.start_soon(echo, await incoming.__anext__())
            assert results == {b"one": b"oneone", b"two": b"twotwo"}
            assert len(router) == 0


async def test_router_rejects_unknown_addresses() -> None:
    router = ConnectionRouter()
    prepare = Prepare(1, datetime.now(UTC) + timedelta(seconds=30), bytes(32), "test.alice.nobody")
    reply = await router(prepare)
    assert isinstance(reply, Reject) and reply.code == "F02"
