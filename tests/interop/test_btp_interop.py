"""Our BTP client and server against the JavaScript reference connector (ilp-connector +
mini-accounts, ilp-plugin-btp), see ../shared/interop/README.md."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from ilp.btp import BtpRequest, BtpServerLink, connect_btp, open_btp_client, serve_btp
from ilp.errors import AuthError
from ilp.link import IlpLink, Reply
from ilp.oer import Reader, Writer
from ilp.packet import ErrorCode, Fulfill, Prepare, Reject
from tests.interop.harness import JsProcess, free_port, run_js

pytestmark = pytest.mark.interop

LIMIT = 60  # seconds: the bound of every test
PEER_FULFILLMENT = bytes(32)
PEER_CONDITION = hashlib.sha256(PEER_FULFILLMENT).digest()


def expiry(seconds: float = 30) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def ildcp_request() -> Prepare:
    """ILDCP by hand: amount 0, ``peer.config``, the condition sha256(32 zero bytes)."""
    return Prepare(0, expiry(), PEER_CONDITION, "peer.config")


def decode_ildcp(reply: Reply) -> tuple[str, int, str]:
    assert isinstance(reply, Fulfill), reply
    assert reply.fulfillment == PEER_FULFILLMENT
    r = Reader(reply.data)
    return r.read_ascii("address"), r.read_u8("scale"), r.read_utf8("code")


def encode_ildcp(address: str, scale: int, code: str) -> bytes:
    w = Writer()
    w.write_ascii(address)
    w.write_u8(scale)
    w.write_utf8(code)
    return w.getvalue()


@asynccontextmanager
async def connector(interop: Path, *args: str, port: int | None = None) -> AsyncIterator[JsProcess]:
    port = free_port() if port is None else port
    async with run_js(
        interop, "connector.js", "--btp-port", str(port), "--max-lifetime-s", "120", *args
    ) as process:
        yield process


def child_url(process: JsProcess, user: str, token: str = "py-token") -> str:
    return f"btp+ws://{user}:{token}@127.0.0.1:{process.ready['btp_port']}"


async def test_ildcp_over_our_client(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with connector(interop) as js, open_btp_client(child_url(js, "pyildcp")) as link:
            event = await js.wait_for("child_connected")
            assert event["auth_username"] == "pyildcp"
            address, scale, code = decode_ildcp(await link.send(ildcp_request()))
    assert (address, scale, code) == ("test.harness.local.pyildcp", 9, "XRP")


async def test_wrong_token_is_an_auth_error(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with connector(interop, "--btp-token", "the-right-one") as js:
            with pytest.raises(AuthError) as info:
                async with open_btp_client(child_url(js, "pybad", token="not-the-right-one")):
                    pytest.fail("must not connect")  # pragma: no cover
            await js.wait_for("child_auth_rejected")
            # The right token works.
            async with open_btp_client(child_url(js, "pygood", token="the-right-one")) as link:
                assert decode_ildcp(await link.send(ildcp_request()))[0].endswith(".pygood")
    message = str(info.value)
    assert "not-the-right-one" not in message
    assert "NotAcceptedError" in message
    assert f"ws://127.0.0.1:{js.ready['btp_port']}" in message
    assert len(js.events("child_auth_rejected")) == 1  # no reconnect loop


async def test_unknown_destination_gets_the_connectors_f02(interop: Path) -> None:
    condition = hashlib.sha256(os.urandom(32)).digest()
    with trio.fail_after(LIMIT):
        async with connector(interop) as js, open_btp_client(child_url(js, "pyf02")) as link:
            reply = await link.send(Prepare(100, expiry(), condition, "test.nowhere.bob"))
    assert isinstance(reply, Reject)
    assert reply.code == "F02"
    assert reply.triggered_by == "test.harness"


async def test_fifty_concurrent_prepares_over_one_socket(interop: Path) -> None:
    """Fifty Prepares through the connector to another child of ours, all in flight at once."""
    count = 50
    fulfillments = {i: hashlib.sha256(b"f%d" % i).digest() for i in range(count)}
    arrived: list[int] = []
    all_in = trio.Event()

    async def receiver(prepare: Prepare) -> Reply:
        i = int(prepare.data)
        arrived.append(i)
        if len(arrived) == count:
            all_in.set()
        await all_in.wait()  # none is answered before all arrived: no head-of-line blocking
        return Fulfill(fulfillments[i], b"ok %d" % i)

    replies: dict[int, Reply] = {}

    async def send_one(link: IlpLink, i: int) -> None:
        condition = hashlib.sha256(fulfillments[i]).digest()
        prepare = Prepare(1000 + i, expiry(), condition, "test.harness.local.pyrecv.x", b"%d" % i)
        replies[i] = await link.send(prepare)

    with trio.fail_after(LIMIT):
        async with (
            connector(interop) as js,
            open_btp_client(child_url(js, "pyrecv"), handler=receiver),
            open_btp_client(child_url(js, "pysend")) as sender,
            trio.open_nursery() as nursery,
        ):
            for i in range(count):
                nursery.start_soon(send_one, sender, i)
    assert replies == {i: Fulfill(fulfillments[i], b"ok %d" % i) for i in range(count)}
    assert sorted(arrived) == list(range(count))


async def test_js_connector_dials_our_btp_server(interop: Path) -> None:
    """ilp-connector (ilp-plugin-btp client, relation parent) connects to our server, fetches
    its address from us over ILDCP, and forwards its children's packets to us."""
    got_ildcp = trio.Event()
    forwarded: list[Prepare] = []
    links: list[BtpServerLink] = []
    requests: list[BtpRequest] = []
    fulfillment = os.urandom(32)

    async def parent_handler(prepare: Prepare) -> Reply:
        if prepare.destination == "peer.config":
            assert prepare.execution_condition == PEER_CONDITION
            got_ildcp.set()
            return Fulfill(PEER_FULFILLMENT, encode_ildcp("test.pyparent.js", 9, "XRP"))
        forwarded.append(prepare)
        return Fulfill(fulfillment, b"from the parent")

    async def on_client(request: BtpRequest) -> None:
        requests.append(request)
        if request.token != "secret":
            await request.refuse("invalid auth_token")
            return
        link = await request.accept(parent_handler, address="test.pyparent")
        links.append(link)
        await link.wait_closed()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_btp, on_client)
            async with connector(
                interop,
                "--address",
                "unknown",
                "--btp-peer-url",
                f"btp+ws://:secret@127.0.0.1:{port}",
                "--btp-peer-relation",
                "parent",
            ) as js:
                assert got_ildcp.is_set()  # the connector is ready only once it has its address
                assert js.ready["accounts"]["btppeer"]["connected"] is True
                assert [(r.username, r.path) for r in requests] == [("", "/")]
                async with open_btp_client(child_url(js, "pychild")) as child:
                    address, _, _ = decode_ildcp(await child.send(ildcp_request()))
                    assert address == "test.pyparent.js.local.pychild"
                    condition = hashlib.sha256(fulfillment).digest()
                    reply = await child.send(
                        Prepare(500, expiry(), condition, "test.elsewhere.bob", b"up")
                    )
                    assert reply == Fulfill(fulfillment, b"from the parent")
                    # And our server sends through the connector to its child.
                    reply = await links[0].send(
                        Prepare(7, expiry(), PEER_CONDITION, "test.pyparent.js.local.nobody")
                    )
                    assert isinstance(reply, Reject)
                    assert reply.code == ErrorCode("F02")
                    assert reply.triggered_by == "test.pyparent.js"
            nursery.cancel_scope.cancel()
    assert len(forwarded) == 1
    assert (forwarded[0].destination, forwarded[0].amount, forwarded[0].data) == (
        "test.elsewhere.bob",
        500,
        b"up",
    )


async def test_js_connector_with_a_wrong_token_is_refused(interop: Path) -> None:
    refused = trio.Event()

    async def on_client(request: BtpRequest) -> None:
        await request.refuse("invalid auth_token")
        refused.set()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_btp, on_client)
            async with connector(
                interop, "--btp-peer-url", f"btp+ws://:wrong@127.0.0.1:{port}"
            ) as js:
                await refused.wait()
                assert js.ready["accounts"]["btppeer"]["connected"] is False
            nursery.cancel_scope.cancel()


async def test_our_client_survives_a_connector_restart(interop: Path) -> None:
    port = free_port()
    url = f"btp+ws://pyrestart:py-token@127.0.0.1:{port}"
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            async with connector(interop, port=port):
                client = await connect_btp(nursery, url, reconnect_backoff=(0.05, 0.5))
                assert decode_ildcp(await client.send(ildcp_request()))[0].endswith(".pyrestart")
            # connector.js is gone; a new one comes up on the same port.
            async with connector(interop, port=port) as second:
                while True:
                    reply = await client.send(ildcp_request())
                    if not (isinstance(reply, Reject) and reply.code == "T01"):
                        break
                    # Only if this send raced with noticing the old socket's end.
                    assert "dropped" in reply.message or "closed" in reply.message
                assert decode_ildcp(reply)[0] == "test.harness.local.pyrestart"
                assert client.connections == 2
                await second.wait_for("child_connected")
            await client.aclose()
