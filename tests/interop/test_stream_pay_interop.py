"""Our pay() through the JavaScript reference connector (ilp-connector) to the reference STREAM
receiver (ilp-protocol-stream), see ../shared/interop/README.md.

Every amount is checked against the receiver's own ``money`` lines: what it says it received is
what our result says was delivered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
import trio

from ilp.btp import open_btp_client
from ilp.ildcp import fetch_config
from ilp.spsp import SpspResponse, parse_spsp_response
from ilp.stream.pay import FailureKind, PaymentProgress, PaymentStatus, pay, quote
from tests.interop.harness import JsProcess, free_port, receiver_js, run_js

pytestmark = pytest.mark.interop

LIMIT = 90  # seconds: the bound of every test


@asynccontextmanager
async def network(
    interop: Path, *connector_args: str
) -> AsyncIterator[tuple[JsProcess, JsProcess]]:
    """connector.js with receiver.js as its child ``receiver``."""
    port = free_port()
    async with (
        run_js(
            interop,
            "connector.js",
            "--btp-port",
            str(port),
            "--max-lifetime-s",
            "180",
            *connector_args,
        ) as connector,
        receiver_js(interop, port, "--max-lifetime-s", "180") as receiver,
    ):
        yield connector, receiver


async def spsp_query(receiver: JsProcess) -> SpspResponse:
    """A plain SPSP GET at receiver.js."""
    async with httpx.AsyncClient() as client:
        response = await client.get(
            receiver.ready["spsp_url"], headers={"Accept": "application/spsp4+json"}
        )
    return parse_spsp_response(response.content, status=response.status_code)


def btp_url(connector: JsProcess, user: str, port: int | None = None) -> str:
    """A child account of the connector (its main listener unless ``port`` says otherwise)."""
    port = connector.ready["btp_port"] if port is None else port
    return f"btp+ws://{user}:{user}-token@127.0.0.1:{port}"


def received(receiver: JsProcess) -> int:
    """What receiver.js says it received in all, from its ``money`` lines."""
    return max((int(line["total"]) for line in receiver.events("money")), default=0)


async def wait_received(receiver: JsProcess, amount: int) -> None:
    await receiver.wait_for("money", where=lambda line: int(line["total"]) >= amount)


async def test_same_asset_payment(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with network(interop) as (connector, receiver):
            creds = await spsp_query(receiver)
            async with open_btp_client(btp_url(connector, "pysame")) as link:
                config = await fetch_config(link)
                result = await pay(
                    link,
                    creds.destination_account,
                    creds.shared_secret,
                    source_amount=1_000_000,
                    source_asset=(config.asset_code, config.asset_scale),
                )
            assert result.status is PaymentStatus.COMPLETE, result.error
            await wait_received(receiver, 1_000_000)
            closed = await receiver.wait_for("connection_close")
    assert result.amount_sent == result.amount_delivered == 1_000_000
    assert received(receiver) == 1_000_000
    assert result.source_asset == result.destination_asset == ("XRP", 9)
    assert result.probed_rate == 1
    assert result.max_packet_amount is None
    assert result.packets_fulfilled == 1
    assert closed["conn"] == receiver.events("connection")[0]["conn"]


async def test_cross_currency_usd_to_xrp(interop: Path) -> None:
    fx_port = free_port()
    with trio.fail_after(LIMIT):
        async with network(interop, "--fx-btp-port", str(fx_port)) as (connector, receiver):
            creds = await spsp_query(receiver)
            async with open_btp_client(btp_url(connector, "pyfx", fx_port)) as link:
                config = await fetch_config(link)
                assert (config.asset_code, config.asset_scale) == ("USD", 2)
                q = await quote(
                    link, creds.destination_account, creds.shared_secret, source_amount=1234
                )
                result = await pay(
                    link,
                    creds.destination_account,
                    creds.shared_secret,
                    source_amount=1234,
                    source_asset=("USD", 2),
                )
            assert result.status is PaymentStatus.COMPLETE, result.error
            await wait_received(receiver, result.amount_delivered)
    # 1 USD = 2 XRP: a cent is 2 x 10^7 XRP drops of 10^-9.
    assert q.probed_rate == 2 * 10**7
    assert q.destination_asset == ("XRP", 9)
    assert q.estimated_delivery_amount == 1234 * 2 * 10**7
    assert result.source_asset == ("USD", 2)
    assert result.destination_asset == ("XRP", 9)
    assert result.probed_rate == 2 * 10**7
    assert result.amount_sent == 1234
    assert result.amount_delivered == 1234 * 2 * 10**7 == received(receiver)


async def test_max_packet_amount_many_packets(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with network(interop, "--max-packet-amount", "1000") as (connector, receiver):
            creds = await spsp_query(receiver)
            async with open_btp_client(btp_url(connector, "pymany")) as link:
                result = await pay(
                    link, creds.destination_account, creds.shared_secret, source_amount=1_000_000
                )
            await wait_received(receiver, 1_000_000)
    assert result.status is PaymentStatus.COMPLETE, result.error
    assert result.max_packet_amount == 1000  # from the connector's F08 data
    assert result.packets_fulfilled == 1000
    assert result.amount_delivered == 1_000_000 == received(receiver)
    assert len(receiver.events("money")) == 1000
    print(
        f"\n1,000,000 units in 1000 packets through connector.js: {result.duration:.3f} s,"
        f" {result.packets_fulfilled / result.duration:.0f} packets/s"
    )


async def test_rate_below_minimum_moves_nothing(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        # The connector keeps 2 %: a sender insisting on 1:1 must not pay at all.
        async with network(interop, "--spread", "0.02") as (connector, receiver):
            creds = await spsp_query(receiver)
            async with open_btp_client(btp_url(connector, "pyslip")) as link:
                result = await pay(
                    link,
                    creds.destination_account,
                    creds.shared_secret,
                    source_amount=100_000,
                    min_exchange_rate=Fraction(1),
                )
                # The default slippage (1 %) does not cover a 2 % spread either... once the
                # caller states the rate it expects: here the probed rate is the reference.
                check = await pay(
                    link,
                    creds.destination_account,
                    creds.shared_secret,
                    source_amount=100_000,
                    min_exchange_rate=Fraction(99, 100),
                )
    assert result.status is PaymentStatus.FAILED
    assert result.error is not None
    assert result.error.kind is FailureKind.INSUFFICIENT_EXCHANGE_RATE
    assert result.amount_sent == result.amount_delivered == 0
    assert result.probed_rate == Fraction(98, 100)
    assert check.status is PaymentStatus.FAILED
    assert received(receiver) == 0
    assert receiver.events("money") == []


async def test_connector_killed_mid_payment(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with network(interop, "--max-packet-amount", "1000") as (connector, receiver):
            creds = await spsp_query(receiver)

            def kill_at_100_packets(progress: PaymentProgress) -> None:
                # Called as a reply is counted, before the next packet leaves (one in flight).
                if progress.packets_fulfilled == 100 and connector.process.returncode is None:
                    connector.process.kill()

            async with open_btp_client(
                btp_url(connector, "pykill"), reconnect_backoff=(0.05, 0.2)
            ) as link:
                result = await pay(
                    link,
                    creds.destination_account,
                    creds.shared_secret,
                    source_amount=1_000_000,
                    max_in_flight=1,
                    packet_expiry=3,
                    idle_timeout=4,
                    on_progress=kill_at_100_packets,
                )
            await wait_received(receiver, result.amount_delivered)
    assert result.status is PaymentStatus.PARTIAL
    assert result.error is not None
    print(f"\nafter the connector died: {result.error}")
    assert result.amount_sent == result.amount_delivered == 100_000
    assert received(receiver) == 100_000
