"""The callback paths of BTP links: ``send_nowait`` on our links, ``handle_nowait`` on handlers.

A connector forwards through these without a task per Prepare; each reply must reach its
callback exactly once, whatever happens to the Prepare: a reply, its expiry, or the connection's
end. Real loopback sockets, as in ``test_client_server``.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from ilp.btp import BtpClient, open_btp_client, parse_btp_url
from ilp.link import Reply, ReplyCallback
from ilp.packet import ErrorCode, Fulfill, Prepare, Reject

from .test_client_server import FULFILLMENT, LIMIT, Server, echo, free_port, prepare


class Replies:
    """A reply callback that records every call (there must be exactly one per Prepare)."""

    def __init__(self) -> None:
        self.got: list[Reply] = []
        self.one = trio.Event()

    def __call__(self, reply: Reply) -> None:
        self.got.append(reply)
        self.one.set()

    async def wait(self) -> Reply:
        await self.one.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert len(self.got) == 1, self.got
        return self.got[0]


def code_of(reply: Reply) -> str:
    assert isinstance(reply, Reject), reply
    return str(reply.code)


async def test_send_nowait_both_ways_gets_each_reply_once() -> None:
    server = Server()
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url(), handler=echo) as client:
            server_link = await server.accepted.receive()
            many = [Replies() for _ in range(20)]
            for i, replies in enumerate(many):
                assert client.send_nowait(prepare(data=b"%d" % i), replies)
            for i, replies in enumerate(many):
                assert await replies.wait() == Fulfill(FULFILLMENT, b"%d" % i)
            back = Replies()
            assert server_link.send_nowait(prepare(data=b"back", destination="test.a"), back)
            assert await back.wait() == Fulfill(FULFILLMENT, b"back")


async def test_send_nowait_checks_the_fulfillment() -> None:
    async def cheat(p: Prepare) -> Reply:
        return Fulfill(b"\x01" * 32)

    server = Server(cheat)
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url()) as client:
            replies = Replies()
            assert client.send_nowait(prepare(), replies)
            assert code_of(await replies.wait()) == "F05"


async def test_send_nowait_unanswered_is_r00_at_the_expiry() -> None:
    async def hang(p: Prepare) -> Reply:
        if p.data == b"hang":
            await trio.sleep_forever()
        return Fulfill(FULFILLMENT, p.data)

    server = Server(hang)
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url(), address="test.a") as client:
            replies = Replies()
            start = trio.current_time()
            assert client.send_nowait(prepare(seconds=0.5, data=b"hang"), replies)
            assert code_of(await replies.wait()) == "R00"
            assert trio.current_time() - start >= 0.45
            after = Replies()
            assert client.send_nowait(prepare(data=b"next"), after)
            assert await after.wait() == Fulfill(FULFILLMENT, b"next")


async def test_send_nowait_pending_when_the_connection_drops_is_t01() -> None:
    arrived = trio.Event()

    async def hang(p: Prepare) -> Reply:
        arrived.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    server = Server(hang)
    replies = Replies()
    with trio.fail_after(LIMIT):
        async with server.running():
            async with open_btp_client(server.url()) as client:
                server_link = await server.accepted.receive()
                assert client.send_nowait(prepare(), replies)
                await arrived.wait()
                await server_link.aclose()
                assert code_of(await replies.wait()) == "T01"
            # A link that is gone answers at once: a T01 from the server link, a decline from
            # the client (whose send() would wait for a reconnection).
            late = Replies()
            assert server_link.send_nowait(prepare(destination="test.a"), late)
            assert late.got and code_of(late.got[0]) == "T01"
            assert not client.send_nowait(prepare(), Replies())


async def test_send_nowait_past_the_expiry_answers_r00_at_once() -> None:
    server = Server()
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url()) as client:
            replies = Replies()
            assert client.send_nowait(prepare(seconds=-1), replies)
            assert replies.got and code_of(replies.got[0]) == "R00"


async def test_a_persistent_client_not_connected_declines() -> None:
    client = BtpClient(parse_btp_url(f"btp+ws://a:b@127.0.0.1:{free_port()}"), persistent=True)
    called = Replies()
    assert not client.send_nowait(prepare(), called)
    assert called.got == []


async def test_a_callback_that_raises_is_logged_and_the_connection_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(reply: Reply) -> None:
        raise RuntimeError("boom")

    server = Server()
    with trio.fail_after(LIMIT), caplog.at_level(logging.ERROR, "ilp.btp"):
        async with server.running(), open_btp_client(server.url()) as client:
            assert client.send_nowait(prepare(), broken)
            replies = Replies()
            assert client.send_nowait(prepare(data=b"next"), replies)
            assert await replies.wait() == Fulfill(FULFILLMENT, b"next")
    assert "a reply callback raised" in caplog.text


class LaterHandler:
    """A handler with ``handle_nowait``: keeps each ``respond`` and answers when told to."""

    def __init__(self, mode: str = "take") -> None:
        self.mode = mode
        self.pending: list[tuple[Prepare, ReplyCallback]] = []
        self.arrived = trio.Event()
        self.awaited = 0

    async def __call__(self, p: Prepare) -> Reply:
        self.awaited += 1
        return Fulfill(FULFILLMENT, b"awaited")

    def handle_nowait(self, p: Prepare, respond: ReplyCallback) -> bool:
        if self.mode == "decline":
            return False
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "now":
            respond(Fulfill(FULFILLMENT, b"at once"))
            respond(Fulfill(FULFILLMENT, b"twice"))  # ignored
            return True
        self.pending.append((p, respond))
        self.arrived.set()
        return True


async def send_into(results: list[Reply], client: BtpClient, p: Prepare) -> None:
    results.append(await client.send(p))


async def test_handle_nowait_answers_later_from_another_task() -> None:
    handler = LaterHandler()
    server = Server(handler)
    results: list[Reply] = []
    with trio.fail_after(LIMIT):
        async with (
            server.running(),
            open_btp_client(server.url()) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(send_into, results, client, prepare(data=b"x"))
            await handler.arrived.wait()
            p, respond = handler.pending.pop()
            respond(Fulfill(FULFILLMENT, p.data + b" later"))
    assert results == [Fulfill(FULFILLMENT, b"x later")]
    assert handler.awaited == 0


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("now", Fulfill(FULFILLMENT, b"at once")),
        ("decline", Fulfill(FULFILLMENT, b"awaited")),
        ("raise", "T00"),
    ],
)
async def test_handle_nowait_answers_at_once_declines_or_raises(
    mode: str, expected: Reply | str
) -> None:
    server = Server(LaterHandler(mode))
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url()) as client:
            for _ in range(2):  # the connection lives on
                reply = await client.send(prepare())
                if isinstance(expected, str):
                    assert code_of(reply) == expected
                else:
                    assert reply == expected


async def test_handle_nowait_answering_a_non_packet_is_t00() -> None:
    handler = LaterHandler()
    server = Server(handler)
    with trio.fail_after(LIMIT):
        async with server.running(), open_btp_client(server.url()) as client:
            results: list[Reply] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_into, results, client, prepare())
                await handler.arrived.wait()
                _, respond = handler.pending.pop()
                respond("not a packet")  # type: ignore[arg-type]
            assert [code_of(r) for r in results] == ["T00"]


async def test_prepares_held_by_handle_nowait_count_against_the_limit() -> None:
    handler = LaterHandler()
    server = Server(handler, max_concurrent_prepares=2)
    results: list[Reply] = []
    with trio.fail_after(LIMIT):
        async with (
            server.running(),
            open_btp_client(server.url()) as client,
            trio.open_nursery() as nursery,
        ):
            for _ in range(2):
                nursery.start_soon(send_into, results, client, prepare())
            while len(handler.pending) < 2:
                await trio.sleep(0.01)
            assert code_of(await client.send(prepare())) == "T03"
            for _, respond in handler.pending:
                respond(Reject(ErrorCode("F99"), "test.x", "no"))
    assert [code_of(r) for r in results] == ["F99", "F99"]
