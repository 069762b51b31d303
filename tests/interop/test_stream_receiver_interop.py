"""Our STREAM receiver behind the JavaScript reference connector, paid by the reference sender.

``sender.js`` (ilp-protocol-stream) → ``connector.js`` (ilp-connector) → our :class:`StreamServer`
attached as a BTP child of the connector. Totals must equal what sender.js reports delivered, its
data must come back, and our receipts must verify (see ../shared/interop/README.md).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from ilp.btp import open_btp_client
from ilp.btp.client import BtpClient
from ilp.ildcp import fetch_config
from ilp.stream.connection import Connection, DataStream
from ilp.stream.server import StreamServer
from tests.interop.harness import JsProcess, free_port, run_js

pytestmark = pytest.mark.interop

LIMIT = 90  # seconds: the bound of every test
RECEIPT_NONCE = bytes(range(16))
RECEIPT_SECRET = bytes(range(100, 132))


@dataclass
class Receiver:
    """Our receiver and what its application saw."""

    server: StreamServer
    link: BtpClient
    connections: list[Connection] = field(default_factory=list)
    echoed: bytearray = field(default_factory=bytearray)
    money: int = 0
    streams_ended: int = 0
    served: trio.Event = field(default_factory=trio.Event)
    """Set when the first connection closed and its streams and money iterators ended."""


@asynccontextmanager
async def our_receiver(connector: JsProcess, *, echo: bool = True) -> AsyncIterator[Receiver]:
    """A StreamServer on a BTP child account of connector.js, echoing data like receiver.js."""
    url = f"btp+ws://ourreceiver:ourreceiver-token@127.0.0.1:{connector.ready['btp_port']}"
    async with open_btp_client(url) as link:
        config = await fetch_config(link)
        assert config.client_address == "test.harness.local.ourreceiver"
        server = StreamServer(
            b"\x42" * 32,
            config.client_address,
            config.asset_code,
            config.asset_scale,
            link=link,
        )
        link.handler = server
        state = Receiver(server, link)

        async def serve_stream(stream: DataStream) -> None:
            while data := await stream.receive_some():
                state.echoed += data
                if echo:
                    await stream.send_all(data)
            state.streams_ended += 1
            await stream.aclose()

        async def serve_money(stream: DataStream) -> None:
            async for amount in stream.money():
                state.money += amount

        async def serve(conn: Connection) -> None:
            async with trio.open_nursery() as nursery:
                async for stream in conn.streams():
                    nursery.start_soon(serve_stream, stream)
                    nursery.start_soon(serve_money, stream)
            state.served.set()

        async with server, trio.open_nursery() as nursery:

            async def accept() -> None:
                async for conn in server.connections():
                    state.connections.append(conn)
                    nursery.start_soon(serve, conn)

            nursery.start_soon(accept)
            yield state
            nursery.cancel_scope.cancel()


def sender_args(connector: JsProcess, destination: str, secret: bytes, *args: str) -> list[str]:
    return [
        "--btp",
        f"btp+ws://jssender:jssender-token@127.0.0.1:{connector.ready['btp_port']}",
        "--destination",
        destination,
        "--shared-secret",
        base64.b64encode(secret).decode(),
        "--timeout-ms",
        "60000",
        *args,
    ]


async def run_sender(interop: Path, args: list[str]) -> dict:  # type: ignore[type-arg]
    """Run sender.js to its end and return its ``done`` line."""
    async with run_js(interop, "sender.js", *args, ready_event="done", ready_timeout=LIMIT) as js:
        done = js.events("done")[0]
    return done


async def test_sender_js_pays_our_receiver_with_data_and_receipts(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        port = free_port()
        async with (
            run_js(interop, "connector.js", "--btp-port", str(port)) as connector,
            our_receiver(connector) as receiver,
        ):
            destination, secret = receiver.server.generate_credentials(
                tag="jsorder", receipt_nonce=RECEIPT_NONCE, receipt_secret=RECEIPT_SECRET
            )
            text = "hello from sender.js " * 40
            done = await run_sender(
                interop,
                sender_args(
                    connector,
                    destination,
                    secret,
                    "--amount",
                    "250000",
                    "--data",
                    text,
                    "--receipt-secret",
                    base64.b64encode(RECEIPT_SECRET).decode(),
                ),
            )
            assert done["ok"], done
            assert done["sent"] == "250000"
            assert int(done["delivered"]) == 250000  # same asset, no spread
            assert done["destination_asset"] == {"code": "XRP", "scale": 9}
            assert done["data_echo_match"] is True
            assert done["receipt_verified"] is True
            assert done["receipt_decoded"]["total_received"] == "250000"
            assert done["receipt_decoded"]["nonce"] == base64.b64encode(RECEIPT_NONCE).decode()
            (conn,) = receiver.connections
            assert conn.tag == "jsorder"
            assert conn.total_received == 250000
            assert conn.remote_asset == ("XRP", 9)
            assert conn.destination == "test.harness.local.jssender"
            assert bytes(receiver.echoed) == text.encode()
            with trio.fail_after(10):
                reason = await conn.wait_closed()  # sender.js ends the connection
                await receiver.served.wait()
            assert reason.by_remote
            assert receiver.money == 250000  # what the application's money iterator saw
            assert receiver.streams_ended == 1
            assert receiver.server.live_connections == 0


async def test_sender_js_through_a_small_max_packet_amount(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        port = free_port()
        async with (
            run_js(
                interop, "connector.js", "--btp-port", str(port), "--max-packet-amount", "1000"
            ) as connector,
            our_receiver(connector, echo=False) as receiver,
        ):
            destination, secret = receiver.server.generate_credentials()
            done = await run_sender(
                interop, sender_args(connector, destination, secret, "--amount", "300000")
            )
            assert done["ok"], done
            assert int(done["delivered"]) == 300000
            assert done["packets"] >= 300  # F08 forced packets of at most 1000
            assert done["packet_stats"]["reject_codes"].get("F08", 0) >= 1
            (conn,) = receiver.connections
            assert conn.total_received == 300000


async def test_sender_js_data_only(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        port = free_port()
        async with (
            run_js(interop, "connector.js", "--btp-port", str(port)) as connector,
            our_receiver(connector) as receiver,
        ):
            destination, secret = receiver.server.generate_credentials()
            done = await run_sender(
                interop,
                sender_args(
                    connector, destination, secret, "--amount", "0", "--data-bytes", "50000"
                ),
            )
            assert done["ok"], done
            assert done["data_sent_bytes"] == 50000 and done["data_echo_match"] is True
            assert len(receiver.echoed) == 50000
            (conn,) = receiver.connections
            assert conn.total_received == 0
