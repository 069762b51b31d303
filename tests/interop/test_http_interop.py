"""ILP over HTTP against the JavaScript reference connector (ilp-connector with ilp-plugin-http).

connector.js gets an ILP-over-HTTP account ``http`` (relation child, so it answers ILDCP with
``test.harness.http``): it accepts our POSTs on ``--http-port`` with the bearer token
``harness-incoming-secret``, and POSTs what is routed to that account to our
:class:`~ilp.http.IlpHttpApp` with ``harness-outgoing-secret``. Both directions carry real
STREAM payments: our ``pay()`` to receiver.js, and sender.js to our :class:`StreamServer`. The
CLI (`ilp query-address`, `ilp pay`) uses the same account as its uplink.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trio
from ilp_cli.exit_codes import ExitCode

from ilp.http import HttpLink, IlpHttpApp, open_http_link, serve_ilp_http
from ilp.ildcp import fetch_config
from ilp.link import PrepareHandler, Reply
from ilp.packet import Prepare, Reject
from ilp.spsp import parse_spsp_response
from ilp.stream.pay import PaymentStatus, pay
from ilp.stream.server import StreamServer
from tests.interop.harness import JsProcess, free_port, receiver_js, run_js

pytestmark = pytest.mark.interop

LIMIT = 90  # seconds: the bound of every test
THEIR_TOKEN = "harness-incoming-secret"  # what connector.js wants from us
OUR_TOKEN = "harness-outgoing-secret"  # what connector.js sends us


@dataclass
class Peering:
    connector: JsProcess
    link: HttpLink
    app: IlpHttpApp


@asynccontextmanager
async def http_peering(
    interop: Path, handler: PrepareHandler, *, our_token: str = OUR_TOKEN
) -> AsyncIterator[Peering]:
    """connector.js with an HTTP child account pointing at our app, and our link to it."""
    app = IlpHttpApp(handler, token=our_token)
    their_port = free_port()
    async with trio.open_nursery() as nursery:
        our_port = await nursery.start(serve_ilp_http, app, "127.0.0.1", 0)
        async with (
            run_js(
                interop,
                "connector.js",
                "--btp-port",
                str(free_port()),
                "--http-port",
                str(their_port),
                "--http-url",
                f"http://127.0.0.1:{our_port}/ilp",
                "--http-relation",
                "child",
                "--max-lifetime-s",
                "180",
            ) as connector,
            open_http_link(f"http://127.0.0.1:{their_port}/", token=THEIR_TOKEN) as link,
        ):
            assert connector.ready["http_peer"]["incoming_url"] == f"http://127.0.0.1:{their_port}/"
            yield Peering(connector, link, app)
        nursery.cancel_scope.cancel()


async def refuse(prepare: Prepare) -> Reply:
    raise AssertionError("no Prepare expected here")  # pragma: no cover


async def test_ildcp_over_http(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with http_peering(interop, refuse) as peering:
            config = await fetch_config(peering.link)
    assert (config.client_address, config.asset_code, config.asset_scale) == (
        "test.harness.http",
        "XRP",
        9,
    )


async def test_our_pay_over_http_to_receiver_js(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with http_peering(interop, refuse) as peering:
            port = peering.connector.ready["btp_port"]
            async with receiver_js(interop, port, "--max-lifetime-s", "180") as receiver:
                async with httpx.AsyncClient() as http:
                    answer = await http.get(receiver.ready["spsp_url"])
                creds = parse_spsp_response(answer.content, status=answer.status_code)
                config = await fetch_config(peering.link)
                peering.link.address = config.client_address
                result = await pay(
                    peering.link,
                    creds.destination_account,
                    creds.shared_secret,
                    source_amount=2_000_000,
                    source_asset=(config.asset_code, config.asset_scale),
                )
                assert result.status is PaymentStatus.COMPLETE, result.error
                line = await receiver.wait_for(
                    "money", where=lambda m: int(m["total"]) >= 2_000_000
                )
    assert result.amount_sent == result.amount_delivered == 2_000_000
    assert int(line["total"]) == 2_000_000


async def test_sender_js_pays_our_receiver_over_http(interop: Path) -> None:
    server: StreamServer | None = None

    async def to_server(prepare: Prepare) -> Reply:
        assert server is not None
        return await server(prepare)

    with trio.fail_after(LIMIT):
        async with http_peering(interop, to_server) as peering:
            config = await fetch_config(peering.link)
            server = StreamServer(
                b"\x17" * 32,
                config.client_address,
                config.asset_code,
                config.asset_scale,
                link=peering.link,
            )
            totals: list[int] = []
            async with server, trio.open_nursery() as nursery:

                async def accept() -> None:
                    async for conn in server.connections():
                        await conn.wait_closed()
                        totals.append(conn.total_received)

                nursery.start_soon(accept)
                destination, secret = server.generate_credentials(tag="over-http")
                btp = peering.connector.ready["btp_port"]
                async with run_js(
                    interop,
                    "sender.js",
                    "--btp",
                    f"btp+ws://jssender:jssender-token@127.0.0.1:{btp}",
                    "--destination",
                    destination,
                    "--shared-secret",
                    base64.b64encode(secret).decode(),
                    "--amount",
                    "300000",
                    "--expect-echo",
                    "false",
                    "--timeout-ms",
                    "60000",
                    ready_event="done",
                    ready_timeout=LIMIT,
                ) as sender:
                    done = sender.events("done")[0]
                with trio.fail_after(10):
                    while not totals:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    assert done["ok"], {k: v for k, v in done.items() if k != "ts"}
    assert int(done["delivered"]) == 300000
    assert totals == [300000]
    assert peering.app.requests >= 2  # the connection setup and the money went through our app


def prepare_to(destination: str) -> Prepare:
    fulfillment = b"\x01" * 32
    return Prepare(
        10,
        datetime.now(UTC) + timedelta(seconds=10),
        hashlib.sha256(fulfillment).digest(),
        destination,
    )


async def test_tokens_are_checked_both_ways(interop: Path) -> None:
    """Our wrong token: connector.js answers 401, which our link turns into F02. Its token
    refused by us: connector.js turns our 401 into a Reject for the sender."""
    with trio.fail_after(LIMIT):
        async with http_peering(interop, refuse, our_token="not-what-they-send") as peering:
            their_url = peering.connector.ready["http_peer"]["incoming_url"]
            async with open_http_link(their_url, token="wrong-token-for-them") as wrong:
                refused = await wrong.send(prepare_to("test.harness.http.x"))
            # A Prepare from our (correctly authenticated) link, routed back to the HTTP
            # account: connector.js POSTs it to our app, which refuses its token.
            config = await fetch_config(peering.link)
            bounced = await peering.link.send(prepare_to(config.client_address + ".x"))
    assert isinstance(refused, Reject)
    assert refused.code == "F02"
    assert "refused our token (HTTP 401)" in refused.message
    assert "wrong-token-for-them" not in refused.message
    assert isinstance(bounced, Reject)
    assert peering.app.requests == 0
    # ilp-connector: "failed to send packet: failed to fetch. code=401", as F02 (what our link
    # makes of a 401 too).
    assert bounced.code == "F02"
    assert bounced.triggered_by == "test.harness"


async def ilp_cli(*args: str) -> tuple[int, str, str]:
    """Run ``ilp ARGS``: exit code, stdout, stderr."""
    done = await trio.run_process(
        [sys.executable, "-m", "ilp_cli", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("ILP_")},
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_ilp_cli_over_http_to_connector_js(interop: Path) -> None:
    """`ilp query-address` and `ilp pay` with connector.js as an ILP-over-HTTP uplink (the
    token as the URL's password, as for BTP uplinks), paying receiver.js behind it."""
    amount = 300_000
    with trio.fail_after(LIMIT):
        async with http_peering(interop, refuse) as peering:
            incoming = peering.connector.ready["http_peer"]["incoming_url"]
            uplink = incoming.replace("http://", f"http://harness:{THEIR_TOKEN}@", 1)
            code, out, err = await ilp_cli("query-address", "--json", "-u", uplink)
            assert code == ExitCode.OK, err
            assert json.loads(out) == {
                "address": "test.harness.http",
                "asset_code": "XRP",
                "asset_scale": 9,
            }
            wrong = incoming.replace("http://", "http://harness:wrong-token@", 1)
            code, out, err = await ilp_cli("query-address", "-u", wrong)
            assert code == ExitCode.AUTH_REFUSED, err
            assert "refused our token" in err and "wrong-token" not in err
            port = peering.connector.ready["btp_port"]
            async with receiver_js(interop, port, "--max-lifetime-s", "180") as receiver:
                spsp_url = receiver.ready["spsp_url"]
                code, out, err = await ilp_cli("pay", spsp_url, str(amount), "--json", "-u", uplink)
                assert code == ExitCode.OK, (out, err)
                result = json.loads(out)
                assert result["status"] == "complete"
                assert result["source"]["address"] == "test.harness.http"
                assert result["source"]["amount"] == result["destination"]["amount"] == str(amount)
                line = await receiver.wait_for("money", where=lambda m: int(m["total"]) >= amount)
                assert int(line["total"]) == amount
                assert THEIR_TOKEN not in out + err
