"""The trio node: two of our nodes, one the parent of the other, over real BTP on 127.0.0.1."""

from __future__ import annotations

import trio
import trio.testing

from ilp.btp import open_btp_client
from ilp.ildcp import fetch_config
from ilp.node import AccountConfig, NodeConfig, open_node
from ilp.stream.pay import PaymentStatus, pay
from ilp.stream.server import StreamServer


async def test_a_node_without_address_asks_its_parent_and_pays_through_it() -> None:
    upstream_config = NodeConfig(
        address="test.up",
        btp_port=0,
        api_port=None,
        accounts=(AccountConfig("down", "child", token="down-secret"),),
    )
    with trio.fail_after(30):
        async with open_node(upstream_config) as upstream:
            port = upstream.btp_port
            downstream_config = NodeConfig(
                address=None,  # learn it over ILDCP
                btp_port=0,
                api_port=None,
                accounts=(
                    AccountConfig(
                        "up", "parent", url=f"btp+ws://down:down-secret@127.0.0.1:{port}"
                    ),
                ),
            )
            async with open_node(downstream_config) as downstream:
                assert downstream.address == "test.up.down"
                default = downstream.connector.routes()[0]
                assert (default.prefix, default.account, default.kind) == ("", "up", "default")
                # A child of the downstream node pays a child of the upstream node: the packets
                # take the default route up, then the upstream node's child route.
                async with (
                    open_btp_client(f"btp+ws://alice:a@127.0.0.1:{downstream.btp_port}") as alice,
                    open_btp_client(f"btp+ws://bob:b@127.0.0.1:{port}") as bob,
                ):
                    alice_config = await fetch_config(alice)
                    assert alice_config.client_address == "test.up.down.alice"
                    bob_config = await fetch_config(bob)
                    server = StreamServer(
                        bytes(32), bob_config.client_address, "XRP", 9, link=bob, backlog=0
                    )
                    bob.handler = server
                    async with server:
                        destination, secret = server.generate_credentials()
                        result = await pay(
                            alice,
                            destination,
                            secret,
                            source_amount=5000,
                            source_address=alice_config.client_address,
                            source_asset=("XRP", 9),
                        )
                assert result.status is PaymentStatus.COMPLETE
                assert result.amount_delivered == 5000
                down_accounts = downstream.connector.accounts
                assert (down_accounts["alice"].balance, down_accounts["up"].balance) == (
                    -5000,
                    5000,
                )
                up_accounts = upstream.connector.accounts
                assert (up_accounts["down"].balance, up_accounts["bob"].balance) == (-5000, 5000)


async def test_a_deleted_or_re_assetted_account_stops_its_receiver() -> None:
    """The node's own STREAM receiver of an account stops with the account, and is replaced when
    the account's asset changes; nothing of the old one keeps running."""
    config = NodeConfig(
        address="test.node",
        btp_port=0,
        api_port=None,
        accounts=(AccountConfig("carol", "child", token="c"),),
    )
    with trio.fail_after(10):
        async with open_node(config) as node:
            node.spsp_credentials("carol")
            first = node.receiver("carol")
            await trio.testing.wait_all_tasks_blocked()
            assert first._nursery is not None  # running

            node.put_account(AccountConfig("carol", "child", asset_code="EUR", asset_scale=2))
            second = node.receiver("carol")
            assert second is not first
            assert (second.asset_code, second.asset_scale) == ("EUR", 2)
            await trio.testing.wait_all_tasks_blocked()
            assert first._nursery is None  # stopped
            assert second._nursery is not None

            node.connector.delete_account("carol")
            await trio.testing.wait_all_tasks_blocked()
            assert second._nursery is None
            assert "carol" not in node._receivers


async def _pay_child(payer_url: str, payee_url: str, amount: int) -> int:
    """A STREAM payment from one BTP child to another; what was delivered."""
    async with open_btp_client(payer_url) as payer, open_btp_client(payee_url) as payee:
        payer_config = await fetch_config(payer)
        payee_config = await fetch_config(payee)
        server = StreamServer(bytes(32), payee_config.client_address, "XRP", 9, link=payee)
        payee.handler = server
        async with server:
            destination, secret = server.generate_credentials()
            result = await pay(
                payer,
                destination,
                secret,
                source_amount=amount,
                source_address=payer_config.client_address,
                source_asset=("XRP", 9),
            )
    assert result.status is PaymentStatus.COMPLETE, result.error
    return result.amount_delivered


async def test_two_nodes_peered_over_ilp_over_http_pay_both_ways() -> None:
    """The parent link is ILP over HTTP both ways: the child node POSTs to the parent's
    ``/accounts/down/ilp`` (and learns its address over it, ILDCP), the parent POSTs to the
    child's ``/accounts/up/ilp``; each checks the other's token."""
    upstream_config = NodeConfig(
        address="test.up",
        btp_port=0,
        api_port=0,
        accounts=(AccountConfig("down", "child", token="down-secret"),),
    )
    with trio.fail_after(30):
        async with open_node(upstream_config) as upstream:
            up_api = f"http://127.0.0.1:{upstream.api_port}"
            downstream_config = NodeConfig(
                address=None,  # learn it over ILDCP, over HTTP
                btp_port=0,
                api_port=0,
                accounts=(
                    AccountConfig(
                        "up",
                        "parent",
                        token="up-secret",
                        url=f"{up_api.replace('//', '//down:down-secret@')}/accounts/down/ilp",
                    ),
                ),
            )
            async with open_node(downstream_config) as downstream:
                assert downstream.address == "test.up.down"
                # The way back: the parent's account for the child gets the child's endpoint.
                upstream.put_account(
                    AccountConfig(
                        "down",
                        "child",
                        token="down-secret",
                        url=f"http://:up-secret@127.0.0.1:{downstream.api_port}/accounts/up/ilp",
                    )
                )
                down_btp = f"btp+ws://alice:a@127.0.0.1:{downstream.btp_port}"
                up_btp = f"btp+ws://bob:b@127.0.0.1:{upstream.btp_port}"
                assert await _pay_child(down_btp, up_btp, 5000) == 5000
                assert await _pay_child(up_btp, down_btp, 2000) == 2000
                down_accounts = downstream.connector.accounts
                assert (down_accounts["alice"].balance, down_accounts["up"].balance) == (
                    -3000,
                    3000,
                )
                up_accounts = upstream.connector.accounts
                assert (up_accounts["down"].balance, up_accounts["bob"].balance) == (-3000, 3000)
