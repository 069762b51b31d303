"""Route exchange (CCP) between our nodes, over real BTP on 127.0.0.1: three nodes in a line,
``test.a`` - ``test.b`` - ``test.c``, no static route anywhere."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import trio

from ilp.btp import open_btp_client
from ilp.ccp import RouteControlRequest, RouteUpdateRequest
from ilp.ccp.packet import Mode
from ilp.node import AccountConfig, NodeConfig, open_node
from ilp.node.connector import RouteInfo
from ilp.node.node import Node
from ilp.packet import Prepare, Reject
from tests.node.test_api import check_documented
from tests.node.test_node import _pay_child

ADMIN = "admin-token-for-the-test"


def config(address: str, *accounts: AccountConfig) -> NodeConfig:
    return NodeConfig(address=address, btp_port=0, api_port=None, accounts=accounts)


def learned(node: Node) -> dict[str, RouteInfo]:
    return {r.prefix: r for r in node.connector.routes() if r.kind == "ccp"}


async def wait_routes(node: Node, *prefixes: str) -> dict[str, RouteInfo]:
    """Wait until the learned routes of ``node`` are exactly ``prefixes``."""
    while sorted(learned(node)) != sorted(prefixes):
        await trio.sleep(0.02)
    return learned(node)


async def test_three_nodes_learn_each_other_and_forget_a_node_that_goes() -> None:
    with trio.fail_after(30):
        b_config = config(
            "test.b",
            AccountConfig("a", "peer", token="a-secret"),
            AccountConfig("c", "peer", token="c-secret"),
        )
        async with open_node(replace(b_config, api_port=0, admin_token=ADMIN)) as b:
            b_url = f"btp+ws://{{}}:{{}}-secret@127.0.0.1:{b.btp_port}"
            async with open_node(
                config("test.a", AccountConfig("b", "peer", url=b_url.format("a", "a")))
            ) as a:
                async with open_node(
                    config("test.c", AccountConfig("b", "peer", url=b_url.format("c", "c")))
                ) as c:
                    a_routes = await wait_routes(a, "test.b", "test.c")
                    assert a_routes["test.c"].path == ("test.b", "test.c")
                    assert a_routes["test.b"].path == ("test.b",)
                    assert all(r.account == "b" for r in a_routes.values())
                    b_routes = await wait_routes(b, "test.a", "test.c")
                    assert (b_routes["test.a"].account, b_routes["test.c"].account) == ("a", "c")
                    await wait_routes(c, "test.a", "test.b")
                    # A child of test.a pays a child of test.c, two hops on learned routes.
                    payer = f"btp+ws://alice:x@127.0.0.1:{a.btp_port}"
                    payee = f"btp+ws://carol:x@127.0.0.1:{c.btp_port}"
                    assert await _pay_child(payer, payee, 7000) == 7000
                    assert a.connector.accounts["b"].balance == 7000
                    assert b.connector.accounts["a"].balance == -7000
                    assert b.connector.accounts["c"].balance == 7000
                    assert c.connector.accounts["carol"].balance == 7000
                    # The API shows it all, as documented.
                    async with httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{b.api_port}",
                        headers={"Authorization": f"Bearer {ADMIN}"},
                    ) as api:
                        response = await api.get("/routes")
                        check_documented(response, "/routes", "GET")
                        assert {
                            "prefix": "test.c",
                            "account": "c",
                            "kind": "ccp",
                            "path": ["test.c"],
                        } in response.json()
                        response = await api.get("/status")
                        check_documented(response, "/status", "GET")
                    routing = response.json()["routing"]
                    assert routing["enabled"] is True
                    assert routing["epoch"] >= 3  # test.b, test.a, test.c at least
                    assert set(routing["peers"]) == {"a", "c"}
                    assert routing["peers"]["a"]["mode"] == "sync"
                    assert routing["peers"]["a"]["routes"] == 1
                # test.c stopped: b drops its routes and withdraws them from a.
                await wait_routes(b, "test.a")
                await wait_routes(a, "test.b")
                async with open_btp_client(f"btp+ws://alice:x@127.0.0.1:{a.btp_port}") as alice:
                    reply = await alice.send(_prepare("test.c.carol"))
                assert isinstance(reply, Reject)
                assert (reply.code, reply.triggered_by) == ("F02", "test.a")


def _prepare(destination: str) -> Prepare:
    return Prepare(1, datetime.now(UTC) + timedelta(seconds=10), bytes(32), destination, b"")


async def test_ccp_requests_from_children_and_bad_ones_are_rejected() -> None:
    with trio.fail_after(30):
        async with (
            open_node(config("test.b")) as b,
            open_btp_client(f"btp+ws://kid:x@127.0.0.1:{b.btp_port}") as kid,
        ):
            expires = datetime.now(UTC) + timedelta(seconds=30)
            control = RouteControlRequest(Mode.SYNC, bytes(16), 0).to_prepare(expires)
            reply = await kid.send(control)
            assert isinstance(reply, Reject) and reply.code == "F00"
            assert "does not exchange routes" in reply.message
            update = RouteUpdateRequest(bytes(16), 0, 0, 0, 0, "test.x").to_prepare(expires)
            reply = await kid.send(replace(update, data=b"\x01"))  # truncated
            assert isinstance(reply, Reject) and reply.code == "F01"
            assert "not a valid CCP request" in reply.message


async def test_route_broadcast_off_answers_f01_and_asks_nothing() -> None:
    with trio.fail_after(30):
        peer_config = config("test.b", AccountConfig("a", "peer", token="a-secret"))
        async with open_node(replace(peer_config, route_broadcast=False)) as b:
            assert b.routing is None
            assert b.status()["routing"] == {"enabled": False}
            async with open_btp_client(f"btp+ws://a:a-secret@127.0.0.1:{b.btp_port}") as peer:
                expires = datetime.now(UTC) + timedelta(seconds=30)
                control = RouteControlRequest(Mode.SYNC, bytes(16), 0).to_prepare(expires)
                reply = await peer.send(control)
                assert isinstance(reply, Reject) and reply.code == "F01"
                assert "CCP is off" in reply.message


async def test_per_account_settings_say_who_is_told_and_who_is_heard() -> None:
    """``b`` takes no routes from ``a`` (``receive_routes = false``) but sends it its own; a
    child with ``send_routes = true`` is told them too."""
    b_config = config(
        "test.b",
        AccountConfig("a", "peer", token="a-secret", receive_routes=False),
        AccountConfig("kid", "child", token="kid-secret", send_routes=True),
    )
    with trio.fail_after(30):
        async with open_node(b_config) as b:
            a_url = f"btp+ws://a:a-secret@127.0.0.1:{b.btp_port}"
            kid_url = f"btp+ws://kid:kid-secret@127.0.0.1:{b.btp_port}"
            kid_config = replace(
                config("test.b.kid", AccountConfig("b", "parent", url=kid_url)), address=None
            )
            async with (
                open_node(config("test.a", AccountConfig("b", "peer", url=a_url))) as a,
                open_node(kid_config) as kid,
            ):
                assert kid.address == "test.b.kid"  # over ILDCP from b
                await wait_routes(a, "test.b")
                await wait_routes(kid, "test.b")
                peers = b.status()["routing"]["peers"]
                assert (peers["a"]["send"], peers["a"]["receive"]) == (True, False)
                assert (peers["kid"]["send"], peers["kid"]["receive"]) == (True, False)
                # a asked b for its routes; b never asked a, and has learned nothing from it.
                assert peers["a"]["mode"] == "sync"
                assert a.status()["routing"]["peers"]["b"]["mode"] == "idle"
                assert peers["a"]["routes"] == 0
                assert learned(b) == {}
                # Changed through the node: now b takes a's routes too.
                b.put_account(AccountConfig("a", "peer", token="a-secret"))
                await wait_routes(b, "test.a")
