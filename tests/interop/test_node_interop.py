"""`ilp node` (:class:`ilp.node.Node`, run in-process) against the JavaScript reference peers.

Both directions: receiver.js and sender.js as children of our node, paid by and paying our own
`ilp pay` / `ilp receive` (subprocesses, children of the node too); connector.js as a peer that
dials our node, and one our node dials. Every amount is checked at both ends and in the node's
balances: one asset (XRP, scale 9) everywhere and no spread, so what is delivered is what is
sent. Every wait is bounded by ``LIMIT`` and waits on an event (a JSON line, a connection).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from ilp_cli.exit_codes import ExitCode

from ilp.btp.client import BtpClient
from ilp.http import HttpLink
from ilp.node.config import AccountConfig, NodeConfig
from ilp.node.connector import RouteInfo
from ilp.node.node import Node, open_node
from tests.interop.harness import JsProcess, free_port, receiver_js, run_js, run_program

pytestmark = pytest.mark.interop

LIMIT = 60  # seconds: the bound of every test
ILP = [sys.executable, "-m", "ilp_cli"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("ILP_")}
ADDRESS = "test.pynode"
PEER_TOKEN = "harness-peer-token"


def node_config(*accounts: AccountConfig) -> NodeConfig:
    """Our node: ``test.pynode`` in XRP/9, BTP on a free port, no API, store in memory."""
    return NodeConfig(address=ADDRESS, btp_port=0, api_port=None, accounts=accounts)


def btp_port(node: Node) -> int:
    assert node.btp_port is not None
    return node.btp_port


def child_url(node: Node, user: str) -> str:
    """Where ``user`` connects as a child of our node (with the token ``<user>-token``)."""
    return f"btp+ws://{user}:{user}-token@127.0.0.1:{btp_port(node)}"


def payer_account(
    *, max_packet_amount: int | None = None, credit_limit: int | None = None
) -> AccountConfig:
    """The child ``payer`` that `ilp pay` connects as (``child_url(node, "payer")``)."""
    return AccountConfig(
        "payer",
        token="payer-token",
        max_packet_amount=max_packet_amount,
        credit_limit=credit_limit,
    )


def balance(node: Node, name: str) -> int:
    return node.connector.accounts[name].balance


def received(receiver: JsProcess) -> int:
    """What receiver.js received in all, by its ``money`` lines."""
    return sum(int(line["amount"]) for line in receiver.events("money"))


async def wait_received(receiver: JsProcess, amount: int) -> None:
    await receiver.wait_for("money", where=lambda line: int(line["total"]) >= amount)


async def ilp_pay(url: str, amount: int, uplink: str, *args: str) -> tuple[int, dict[str, Any]]:
    """``ilp pay --json``: its exit code and its JSON object."""
    done = await trio.run_process(
        [*ILP, "pay", url, str(amount), "-u", uplink, "--json", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env=ENV,
    )
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, (done.stdout, done.stderr)
    out: dict[str, Any] = json.loads(lines[0])
    return done.returncode, out


@asynccontextmanager
async def ilp_receive(
    uplink: str, ledger: Path, amount: int, *args: str
) -> AsyncIterator[JsProcess]:
    """``ilp receive --json`` until ``amount`` arrived; yields once its ``ready`` line came."""
    async with run_program(
        "ilp receive",
        [
            *ILP,
            "receive",
            "--json",
            "-u",
            uplink,
            "--ledger",
            str(ledger),
            "--amount",
            str(amount),
            *(args or ("--port", "0")),
        ],
    ) as proc:
        yield proc


async def sender_js(interop: Path, btp_url: str, to: str, amount: int) -> dict[str, Any]:
    """Run sender.js to the end; its ``done`` line."""
    args = ["--btp", btp_url, "--to", to, "--amount", str(amount)]
    async with run_js(interop, "sender.js", *args, ready_event="done", ready_timeout=LIMIT) as s:
        done: dict[str, Any] = s.events("done")[0]
        return done


async def receive_from_sender_js(
    interop: Path,
    node: Node,
    sender_btp: str,
    user: str,
    amount: int,
    ledger: Path,
    uplink: str | None = None,
    *args: str,
) -> None:
    """sender.js (connected at ``sender_btp``) pays ``amount`` to `ilp receive`, a child
    ``user`` of our node (over BTP unless ``uplink`` says otherwise, with ``args`` for
    `ilp receive`); both ends must count exactly ``amount``."""
    uplink = uplink or child_url(node, user)
    async with ilp_receive(uplink, ledger, amount, *args) as receiver:
        assert receiver.ready["address"] == f"{ADDRESS}.{user}"
        assert receiver.ready["asset"] == {"code": "XRP", "scale": 9}
        done = await sender_js(interop, sender_btp, receiver.ready["spsp_url"], amount)
        assert done["ok"] is True, done
        assert int(done["sent"]) == int(done["delivered"]) == amount
        assert done["destination_account"].startswith(f"{ADDRESS}.{user}.")
        end = await receiver.wait_for("done")
        await receiver.exited.wait()
    assert receiver.process.returncode == ExitCode.OK, receiver.stderr_tail()
    assert end["total"] == str(amount)
    assert sum(int(line["amount"]) for line in receiver.events("money")) == amount


# -- our children ---------------------------------------------------------------------------


@pytest.mark.parametrize("uplink", ["btp", "http"])
async def test_ilp_pay_to_receiver_js_through_our_node(interop: Path, uplink: str) -> None:
    """Many packets: the payer's max_packet_amount makes our node answer F08, and `ilp pay`
    learns the limit from its data. `ilp pay` is the child ``payer`` over BTP, or over ILP over
    HTTP (POSTing to the node's API with the account's token)."""
    amount = 100_000
    config = replace(node_config(payer_account(max_packet_amount=1000)), api_port=0)
    with trio.fail_after(LIMIT):
        async with (
            open_node(config) as node,
            receiver_js(interop, btp_port(node), "--max-lifetime-s", "120") as receiver,
        ):
            assert receiver.ready["address"] == f"{ADDRESS}.receiver"
            assert node.connector.accounts["receiver"].relation == "child"
            url = receiver.ready["spsp_url"]
            if uplink == "http":
                payer = f"http://payer:payer-token@127.0.0.1:{node.api_port}/accounts/payer/ilp"
            else:
                payer = child_url(node, "payer")
            code, out = await ilp_pay(url, amount, payer)
            assert code == ExitCode.OK, out
            await wait_received(receiver, amount)
            assert out["status"] == "complete"
            assert out["source"]["address"] == f"{ADDRESS}.payer"
            assert out["source"]["amount"] == str(amount)
            assert out["destination"]["address"].startswith(f"{ADDRESS}.receiver.")
            assert out["destination"]["amount"] == str(amount)
            assert out["max_packet_amount"] == "1000"  # learned from our node's F08
            assert received(receiver) == amount
            money = receiver.events("money")
            assert len(money) >= amount // 1000
            assert max(int(line["amount"]) for line in money) == 1000
            assert balance(node, "payer") == -amount
            assert balance(node, "receiver") == amount
            assert node.connector.packets["rejected"] > 0  # the probes, F08 among them


@pytest.mark.parametrize("uplink", ["btp", "http"])
async def test_sender_js_pays_ilp_receive_through_our_node(
    interop: Path, tmp_path: Path, uplink: str
) -> None:
    """`ilp receive` is the child ``bob``: over BTP, or over ILP over HTTP, where it asks ILDCP
    with a POST to the node's API and the node POSTs bob's Prepares to its ``/ilp``."""
    amount = 4321
    config = node_config()
    args: tuple[str, ...] = ()
    if uplink == "http":
        port = free_port()
        bob = AccountConfig("bob", token="bob-token", url=f"http://:to-bob@127.0.0.1:{port}/ilp")
        config = replace(node_config(bob), api_port=0)
        args = ("--port", str(port), "--incoming-token", "to-bob")
    with trio.fail_after(LIMIT):
        async with open_node(config) as node:
            sender = child_url(node, "jsender")
            receive_uplink = None
            if uplink == "http":
                receive_uplink = f"http://bob:bob-token@127.0.0.1:{node.api_port}/accounts/bob/ilp"
            await receive_from_sender_js(
                interop,
                node,
                sender,
                "bob",
                amount,
                tmp_path / "ledger.sqlite3",
                receive_uplink,
                *args,
            )
            assert balance(node, "jsender") == -amount
            assert balance(node, "bob") == amount


async def test_credit_limit_stops_a_payment(interop: Path) -> None:
    """The payer may owe the node 5000 at most: `ilp pay` of 20000 fails and says exactly what
    arrived, which is what the receiver counted and what the payer owes."""
    config = node_config(payer_account(credit_limit=5000))
    with trio.fail_after(LIMIT):
        async with (
            open_node(config) as node,
            receiver_js(interop, btp_port(node), "--max-lifetime-s", "120") as receiver,
        ):
            url = receiver.ready["spsp_url"]
            code, out = await ilp_pay(url, 20_000, child_url(node, "payer"), "--timeout", "5")
            # T04 is temporary: `ilp pay` backs off and retries until --timeout.
            assert code in (ExitCode.PARTIAL, ExitCode.TIMEOUT), out
            assert out["status"] == "partial"
            delivered = int(out["destination"]["amount"])
            assert int(out["source"]["amount"]) == delivered
            await wait_received(receiver, delivered)
            assert received(receiver) == delivered
            assert balance(node, "payer") == -delivered >= -5000
            assert balance(node, "receiver") == delivered
            assert 0 < delivered <= 5000


# -- connector.js as a peer ------------------------------------------------------------------


async def payments_both_ways(
    interop: Path, node: Node, connector: JsProcess, receiver: JsProcess, tmp_path: Path
) -> None:
    """(a) `ilp pay`, our child, pays receiver.js, connector.js's child; (b) sender.js,
    connector.js's child, pays `ilp receive`, our child. The peer account ``harness`` is
    credited with (a) (the node owes connector.js what it forwarded) and debited with (b)."""
    assert receiver.ready["address"] == "test.harness.local.receiver"
    sent = 30_000
    code, out = await ilp_pay(receiver.ready["spsp_url"], sent, child_url(node, "payer"))
    assert code == ExitCode.OK, out
    assert out["source"]["address"] == f"{ADDRESS}.payer"
    assert out["destination"]["address"].startswith("test.harness.local.receiver.")
    assert out["destination"]["amount"] == str(sent)
    await wait_received(receiver, sent)
    assert received(receiver) == sent
    assert balance(node, "payer") == -sent
    assert balance(node, "harness") == sent

    back = 12_345
    sender = f"btp+ws://jsender:jsender-token@127.0.0.1:{connector.ready['btp_port']}"
    await receive_from_sender_js(interop, node, sender, "bob", back, tmp_path / "ledger.sqlite3")
    assert balance(node, "harness") == sent - back
    assert balance(node, "bob") == back
    assert balance(node, "payer") == -sent


@pytest.mark.parametrize("ccp", [False, True], ids=["static-routes", "ccp"])
async def test_connector_js_dials_our_node(interop: Path, tmp_path: Path, ccp: bool) -> None:
    """connector.js dials our node as a peer. The routes are static on both sides, or
    (``ccp``) there are none: connector.js (``--btp-peer-routes``) and our node learn each
    other's address over CCP, and the payments take those routes."""
    routes = () if ccp else ("test.harness",)
    harness = AccountConfig("harness", "peer", token=PEER_TOKEN, routes=routes)
    port, admin = free_port(), free_port()
    routing = ["--btp-peer-routes", "true", "--admin-port", str(admin)]
    with trio.fail_after(LIMIT):
        async with (
            open_node(node_config(harness, payer_account())) as node,
            run_js(
                interop,
                "connector.js",
                "--btp-port",
                str(port),
                "--btp-peer-url",
                f"btp+ws://:{PEER_TOKEN}@127.0.0.1:{btp_port(node)}",
                "--btp-peer-relation",
                "peer",
                *(routing if ccp else ["--btp-peer-prefix", ADDRESS]),
                "--max-lifetime-s",
                "120",
            ) as connector,
            receiver_js(interop, port, "--max-lifetime-s", "120") as receiver,
        ):
            # connector.js is ready once its dial-out is up (or after 10 s without it).
            assert connector.ready["accounts"]["btppeer"]["connected"] is True
            await node.wait_connected("harness")
            if ccp:
                assert connector.ready["static_routes"] == []
                route = await learned_route(node, "test.harness")
                assert (route.account, route.path) == ("harness", ("test.harness",))
                theirs = await js_route(admin, ADDRESS)
                assert (theirs["nextHop"], theirs["path"]) == ("btppeer", ADDRESS)
                # Our children are reached through our address: not advertised one by one.
                table = (await js_routing(admin))["localRoutingTable"]
                assert not [p for p in table if p.startswith(ADDRESS + ".")]
                assert node.status()["routing"]["peers"]["harness"]["mode"] == "sync"
            await payments_both_ways(interop, node, connector, receiver, tmp_path)


async def test_our_node_dials_connector_js(interop: Path, tmp_path: Path) -> None:
    """Our node starts first: its dial-out is refused until connector.js listens, and it keeps
    redialling (connector.js is ready only once its single peer is connected)."""
    port, listen_port = free_port(), free_port()
    secret = "harness-listen-secret"
    harness = AccountConfig(
        "harness",
        "peer",
        url=f"btp+ws://:{secret}@127.0.0.1:{listen_port}",
        routes=("test.harness",),
    )
    with trio.fail_after(LIMIT):
        async with open_node(node_config(harness, payer_account())) as node:
            links = node.connector.accounts["harness"].links
            assert len(links) == 1 and isinstance(links[0], BtpClient)
            assert not node.is_connected(node.connector.accounts["harness"])
            async with (
                run_js(
                    interop,
                    "connector.js",
                    "--btp-port",
                    str(port),
                    "--btp-listen-port",
                    str(listen_port),
                    "--btp-listen-secret",
                    secret,
                    "--btp-listen-prefix",
                    ADDRESS,
                    "--max-lifetime-s",
                    "120",
                ) as connector,
                receiver_js(interop, port, "--max-lifetime-s", "120") as receiver,
            ):
                assert connector.ready["accounts"]["btpin"]["connected"] is True
                await node.wait_connected("harness")
                assert node.is_connected(node.connector.accounts["harness"])
                await payments_both_ways(interop, node, connector, receiver, tmp_path)


@pytest.mark.parametrize("ccp", [False, True], ids=["static-routes", "ccp"])
async def test_connector_js_peered_with_our_node_over_http(
    interop: Path, tmp_path: Path, ccp: bool
) -> None:
    """ILP over HTTP both ways: our node POSTs to connector.js's ilp-plugin-http port with the
    token it wants, connector.js POSTs to our node's ``/accounts/harness/ilp`` with the token
    our account has; payments cross both connectors in both directions. The routes are static
    on both sides, or (``ccp``) exchanged over CCP (``--http-routes``) with none configured."""
    port, http_port, admin = free_port(), free_port(), free_port()
    harness = AccountConfig(
        "harness",
        "peer",
        token="harness-outgoing-secret",  # connector.js's --http-outgoing-token (its default)
        url=f"http://:harness-incoming-secret@127.0.0.1:{http_port}/",
        routes=() if ccp else ("test.harness",),
    )
    config = replace(node_config(harness, payer_account()), api_port=0)
    routing = ["--http-routes", "true", "--admin-port", str(admin)]
    with trio.fail_after(LIMIT):
        async with (
            open_node(config) as node,
            run_js(
                interop,
                "connector.js",
                "--btp-port",
                str(port),
                "--http-port",
                str(http_port),
                "--http-url",
                f"http://127.0.0.1:{node.api_port}/accounts/harness/ilp",
                "--http-relation",
                "peer",
                *(routing if ccp else ["--http-prefix", ADDRESS]),
                "--max-lifetime-s",
                "120",
            ) as connector,
            receiver_js(interop, port, "--max-lifetime-s", "120") as receiver,
        ):
            links = node.connector.accounts["harness"].links
            assert len(links) == 1 and isinstance(links[0], HttpLink)
            if ccp:
                route = await learned_route(node, "test.harness")
                assert (route.account, route.path) == ("harness", ("test.harness",))
                assert (await js_route(admin, ADDRESS))["nextHop"] == "http"
            else:
                assert connector.ready["http_peer"]["prefix"] == ADDRESS
            await payments_both_ways(interop, node, connector, receiver, tmp_path)


# -- route exchange (CCP) with connector.js ----------------------------------------------------


async def learned_route(node: Node, prefix: str) -> RouteInfo:
    """Wait until our node has learned a route for ``prefix`` over CCP; that route."""
    while True:
        for route in node.connector.routes():
            if route.prefix == prefix and route.kind == "ccp":
                return route
        await trio.sleep(0.05)


async def js_routing(admin_port: int) -> dict[str, Any]:
    """connector.js's ``GET /routing`` (its admin API)."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{admin_port}/routing")
        response.raise_for_status()
        routing: dict[str, Any] = response.json()
        return routing


async def js_route(admin_port: int, prefix: str, *, present: bool = True) -> dict[str, Any]:
    """Wait until connector.js has (or, ``present=False``, no longer has) a route for
    ``prefix`` in its local routing table; that route (or {})."""
    while True:
        table = (await js_routing(admin_port))["localRoutingTable"]
        if (prefix in table) == present:
            route: dict[str, Any] = table.get(prefix, {})
            return route
        await trio.sleep(0.05)


async def test_routes_follow_static_routes_and_links_with_connector_js(interop: Path) -> None:
    """Our node dials connector.js (``--btp-listen-routes``). A static route added on our node
    reaches connector.js over CCP with our address in its path, and is withdrawn there when it
    is deleted; when connector.js goes away, so do the routes learned from it."""
    port, listen_port, admin = free_port(), free_port(), free_port()
    secret = "harness-listen-secret"
    harness = AccountConfig("harness", "peer", url=f"btp+ws://:{secret}@127.0.0.1:{listen_port}")
    with trio.fail_after(LIMIT):
        async with open_node(node_config(harness, payer_account())) as node:
            async with run_js(
                interop,
                "connector.js",
                "--btp-port",
                str(port),
                "--btp-listen-port",
                str(listen_port),
                "--btp-listen-secret",
                secret,
                "--btp-listen-routes",
                "true",
                "--admin-port",
                str(admin),
                "--max-lifetime-s",
                "120",
            ):
                route = await learned_route(node, "test.harness")
                assert (route.account, route.path) == ("harness", ("test.harness",))
                assert (await js_route(admin, ADDRESS))["nextHop"] == "btpin"
                node.connector.set_route("test.elsewhere", "payer")
                theirs = await js_route(admin, "test.elsewhere")
                assert (theirs["nextHop"], theirs["path"]) == ("btpin", ADDRESS)
                node.connector.delete_route("test.elsewhere")
                await js_route(admin, "test.elsewhere", present=False)
                assert "test.harness" in (await js_routing(admin))["localRoutingTable"]
            # connector.js stopped: its routes go with its link.
            while any(r.kind == "ccp" for r in node.connector.routes()):
                await trio.sleep(0.05)
            assert node.connector.accounts["harness"].links  # our dialer keeps trying
            assert "harness" not in node.status()["routing"]["peers"]
