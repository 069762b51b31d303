"""Our STREAM client through the JavaScript reference connector to the reference receiver.

:func:`open_stream_connection` → ``connector.js`` (ilp-connector) → ``receiver.js``
(ilp-protocol-stream, echoing data). Money is checked against the receiver's ``money`` lines;
the echo comes back as Prepares from receiver.js (after its own exchange-rate probes of us),
routed to the connection by a :class:`ConnectionRouter` on our BTP link.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path

import pytest
import trio

from ilp.btp import open_btp_client
from ilp.errors import StreamError
from ilp.spsp import query_spsp
from ilp.stream.client import ConnectionRouter, open_stream_connection
from ilp.stream.connection import DataStream
from ilp.stream.receipt import verify_receipt
from tests.interop.harness import JsProcess, free_port, receiver_js, run_js

pytestmark = pytest.mark.interop

LIMIT = 90  # seconds: the bound of every test


@asynccontextmanager
async def network(
    interop: Path, *connector_args: str, receiver_args: tuple[str, ...] = ()
) -> AsyncIterator[tuple[JsProcess, JsProcess]]:
    """connector.js with receiver.js as its child ``receiver``."""
    port = free_port()
    async with (
        run_js(interop, "connector.js", "--btp-port", str(port), *connector_args) as connector,
        receiver_js(interop, port, *receiver_args) as receiver,
    ):
        yield connector, receiver


def btp_url(connector: JsProcess, user: str, port: int | None = None) -> str:
    port = connector.ready["btp_port"] if port is None else port
    return f"btp+ws://{user}:{user}-token@127.0.0.1:{port}"


async def wait_received(receiver: JsProcess, amount: int) -> int:
    line = await receiver.wait_for("money", where=lambda line: int(line["total"]) >= amount)
    return int(line["total"])


async def read_exactly(stream: DataStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some()
        assert chunk, "EOF before the echo came back"
        data += chunk
    return bytes(data)


async def test_money_data_echo_and_receipts_to_receiver_js(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with network(interop, receiver_args=("--receipts", "true")) as (connector, receiver):
            creds = await query_spsp(receiver.ready["spsp_url"])
            assert creds.receipts_enabled
            router = ConnectionRouter()
            async with (
                open_btp_client(btp_url(connector, "pyclient"), handler=router) as link,
                open_stream_connection(
                    link, creds.destination_account, creds.shared_secret, router=router
                ) as conn,
            ):
                assert conn.source_address is not None
                assert conn.source_address.startswith("test.harness.local.pyclient.")
                assert conn.remote_asset == ("XRP", 9)
                stream = conn.open_stream()
                await stream.send_money(250_000)
                assert await wait_received(receiver, 250_000) == 250_000
                assert stream.total_sent == stream.total_delivered == 250_000
                message = b"echo me, receiver.js! " * 100
                await stream.send_all(message)
                assert await read_exactly(stream, len(message)) == message
                await stream.send_money(1)
                assert stream.receipt is not None
                secret = base64.b64decode(receiver.ready["receipt_secret"])
                receipt = verify_receipt(stream.receipt, secret)
                assert receipt.total_received == 250_001 and receipt.stream_id == stream.id
                await stream.aclose()
            closed = await receiver.wait_for("connection_close")
            assert closed["connection_total"] == "250001"
            data_lines = receiver.events("data")
            assert sum(line["bytes"] for line in data_lines) == len(message)
            assert len(router) == 0


async def test_money_through_a_small_max_packet_amount(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with network(interop, "--max-packet-amount", "1000") as (connector, receiver):
            creds = await query_spsp(receiver.ready["spsp_url"])
            router = ConnectionRouter()
            async with (
                open_btp_client(btp_url(connector, "pysmall"), handler=router) as link,
                open_stream_connection(
                    link, creds.destination_account, creds.shared_secret, router=router
                ) as conn,
            ):
                stream = conn.open_stream()
                await stream.send_money(50_000)
                assert conn.max_packet_amount == 1000  # learned from the F08 data
                assert await wait_received(receiver, 50_000) == 50_000
            money_lines = receiver.events("money")
            assert len(money_lines) == 50
            assert all(int(line["amount"]) <= 1000 for line in money_lines)


async def test_cross_currency_with_a_minimum_rate(interop: Path) -> None:
    fx_port = free_port()
    with trio.fail_after(LIMIT):
        async with network(interop, "--fx-btp-port", str(fx_port)) as (connector, receiver):
            creds = await query_spsp(receiver.ready["spsp_url"])
            # The router matters: once a stream opens, receiver.js probes *us* for a rate and
            # destroys the connection if nobody answers.
            router = ConnectionRouter()
            async with (
                open_btp_client(btp_url(connector, "pyusd", fx_port), handler=router) as link,
                open_stream_connection(
                    link, creds.destination_account, creds.shared_secret, router=router
                ) as conn,
            ):
                assert (conn.asset_code, conn.asset_scale) == ("USD", 2)
                assert conn.remote_asset == ("XRP", 9)
                probe = await conn.probe(100)
                assert probe.delivered == 100 * 2 * 10**7  # 1 USD = 2 XRP
                conn.minimum_exchange_rate = Fraction(probe.delivered, 100) * Fraction(99, 100)
                stream = conn.open_stream()
                await stream.send_money(1234)
                assert stream.total_delivered == 1234 * 2 * 10**7
                assert await wait_received(receiver, 1234 * 2 * 10**7) == 1234 * 2 * 10**7
                # Ask for more than the path gives: nothing is sent, nothing lost.
                conn.minimum_exchange_rate = Fraction(3 * 10**7)
                with pytest.raises(StreamError, match="exchange rate"):
                    await stream.send_money(10)
                assert stream.total_sent == 1234
            assert receiver.events("money")[-1]["total"] == str(1234 * 2 * 10**7)
