"""``ilp node`` on trio: the connector with its BTP server, dial-out peers, store and HTTP API.

::

    async with open_node(NodeConfig(address="test.mynode", btp_port=0, api_port=0)) as node:
        print(node.btp_port, node.api_port)
        ...                                   # children connect, packets flow
    # leaving the block stops every task and closes the store

or ``node = await nursery.start(Node(config).run)``.

What runs, all in the node's nursery:

- the BTP server (children, and peers that dial us), each client authenticated against the
  accounts: the username names the account and the token must match; a client without a
  username is found by its token. With ``open_children`` an unknown client becomes a new child
  account (named by its username, else by ``base64url(sha256(token))``, as mini-accounts does).
- a persistent BTP client for every account with a BTP ``url`` (peers and parents we dial), and
  an ILP-over-HTTP link (:class:`~ilp.http.HttpLink`) for every account with an http(s) ``url``.
- the node's own STREAM receivers, one per account that is paid through the node's SPSP
  endpoint (``<address>.~receive.<account>``); what they receive is credited to the account.
- the route exchange (CCP) with peer and parent accounts (:mod:`ilp.ccp.routing`), unless
  ``route_broadcast`` is off: one task that follows the links, sends the control requests and
  route updates that are due (each in a task of its own) and expires what peers stopped renewing.
- the HTTP API (:mod:`ilp.node.api`), on our HTTP server like the SPSP server. It also takes the
  Prepares that ILP-over-HTTP peers POST to ``/accounts/<name>/ilp`` with the account's token.

Without an address in the configuration, the node asks its parent over ILDCP before it serves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import trio

from ..btp.client import BtpClient
from ..btp.server import BtpRequest, BtpServerLink, serve_btp
from ..btp.url import parse_btp_url
from ..ccp.packet import (
    CCP_CONTROL_DESTINATION,
    CCP_RESPONSE,
    RouteControlRequest,
    RouteUpdateRequest,
)
from ..ccp.routing import RouteExchange, RoutingRefusedError
from ..errors import DecodeError, IlpError
from ..http.client import HttpLink, is_http_url, split_http_url
from ..ildcp import fetch_config
from ..link import PrepareHandler, Reply
from ..packet import ErrorCode, Fulfill, Prepare, Reject
from ..peer import PEER_EXPIRY, PeerRequestError
from ..spsp.client import query_spsp
from ..stream.pay import PaymentResult, pay
from ..stream.server import StreamServer
from .config import AccountConfig, ConfigError, NodeConfig, check_account_name
from .connector import Account, Connector, NodeError, hash_token
from .store import AccountRecord, NodeStore

__all__ = ["Node", "open_node"]

_log = logging.getLogger("ilp.node")

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 (a file name)


class Node:
    """One node. Make it with a :class:`~ilp.node.config.NodeConfig`, run it with
    ``await nursery.start(node.run)`` (or :func:`open_node`); ``run`` reports the node once its
    ports accept connections."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.store: NodeStore | None = None
        self._connector: Connector | None = None
        self.btp_port: int | None = None
        self.api_port: int | None = None
        self.admin_token: str = ""
        self.admin_token_file: Path | None = None
        self.started_at = 0.0
        self._nursery: trio.Nursery | None = None
        self._dialers: dict[str, tuple[str, BtpClient | HttpLink]] = {}
        self._receivers: dict[str, StreamServer] = {}
        self._receiver_scopes: dict[str, trio.CancelScope] = {}
        self._server_links: dict[str, set[BtpServerLink]] = {}
        self._links_changed = trio.Event()
        self._secret = b""
        self.routing: RouteExchange | None = None
        """The route exchange (CCP) with peers and parents; None when ``route_broadcast`` is
        off."""
        self._routing_wake = trio.Event()

    # -- public -----------------------------------------------------------------------------

    @property
    def connector(self) -> Connector:
        if self._connector is None:
            raise RuntimeError("the node is not running")
        return self._connector

    @property
    def address(self) -> str:
        return self.connector.address

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` shows: address, asset, ports, uptime, accounts, packets."""
        connector = self.connector
        return {
            "address": connector.address,
            "asset_code": connector.asset_code,
            "asset_scale": connector.asset_scale,
            "btp_port": self.btp_port,
            "api_port": self.api_port,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "accounts": len(connector.accounts),
            "connected_accounts": sum(
                1 for a in connector.accounts.values() if self.is_connected(a)
            ),
            "routes": len(connector.routes()),
            "packets": dict(connector.packets),
            "routing": self._routing_status(),
        }

    def _routing_status(self) -> dict[str, Any]:
        routing = self.routing
        if routing is None:
            return {"enabled": False}
        return {
            "enabled": True,
            "table_id": str(uuid.UUID(bytes=routing.table_id)),
            "epoch": routing.epoch,
            "peers": {
                name: {
                    "send": peer.send,
                    "receive": peer.receive,
                    "mode": peer.mode.name.lower(),
                    "their_epoch": peer.next_epoch,
                    "routes": len(peer.routes),
                }
                for name, peer in sorted(routing.peers.items())
            },
        }

    def is_connected(self, account: Account) -> bool:
        dialer = self._dialers.get(account.name)
        if dialer is not None:
            return dialer[1].connected
        return account.connected

    async def wait_connected(self, name: str) -> None:
        """Return once account ``name`` has a live link (a client connected, or our dial-out
        authenticated); bound it with a timeout."""
        while True:
            account = self.connector.accounts.get(name)
            if account is not None and self.is_connected(account):
                return
            dialer = self._dialers.get(name)
            if dialer is not None:
                await dialer[1].wait_connected()
            else:
                await self._links_changed.wait()

    def _notify_links(self) -> None:
        self._links_changed.set()
        self._links_changed = trio.Event()
        self._routing_wake.set()

    def receiver(self, name: str) -> StreamServer:
        """The node's STREAM receiver for account ``name`` (made and started on first use)."""
        account = self.connector.account(name)
        server = self._receivers.get(name)
        if server is not None and (server.asset_code, server.asset_scale) == (
            account.asset_code,
            account.asset_scale,
        ):
            return server
        self._retire_receiver(name)  # if any: its asset changed, and it would answer in the old one
        secret = hmac.new(self._secret, b"receive:" + name.encode(), hashlib.sha256).digest()
        server = StreamServer(
            secret,
            self.connector.local_address(name),
            account.asset_code,
            account.asset_scale,
            backlog=0,
        )
        self._receivers[name] = server
        self._start_receiver(name, server)
        return server

    def _start_receiver(self, name: str, server: StreamServer) -> None:
        """Run ``server`` in the node's nursery, in a cancel scope of its own (kept by name)."""
        if self._nursery is None:
            return  # _start runs it
        scope = trio.CancelScope()
        self._receiver_scopes[name] = scope

        async def run() -> None:
            with scope:
                await server.run()

        self._nursery.start_soon(run)

    def _retire_receiver(self, name: str) -> None:
        """Stop and forget the receiver of account ``name``, with its connections."""
        self._receivers.pop(name, None)
        scope = self._receiver_scopes.pop(name, None)
        if scope is not None:
            scope.cancel()

    def spsp_credentials(
        self,
        name: str,
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> tuple[str, bytes]:
        """Fresh STREAM credentials that pay account ``name`` through the node itself."""
        return self.receiver(name).generate_credentials(
            tag=name, receipt_nonce=receipt_nonce, receipt_secret=receipt_secret
        )

    async def pay(
        self,
        name: str,
        to: str,
        *,
        source_amount: int | None = None,
        delivery_amount: int | None = None,
        slippage: Fraction = Fraction(1, 100),
        idle_timeout: float = 10.0,
    ) -> PaymentResult:
        """Pay the payment pointer (or SPSP URL) ``to`` from account ``name`` over STREAM.

        The packets enter the connector as if the account had sent them: the account is debited
        and its credit limit applies. Raises :class:`~ilp.errors.SpspError` if ``to`` cannot be
        queried; payment failures are in the result. ``idle_timeout``: give up after this long
        without progress (an account at its credit limit gets T04 from the node itself, which
        would otherwise be retried for pay()'s default 30 s).
        """
        connector = self.connector
        account = connector.account(name)
        response = await query_spsp(to)
        return await pay(
            connector.link_from(account),
            response.destination_account,
            response.shared_secret,
            source_amount=source_amount,
            delivery_amount=delivery_amount,
            slippage=slippage,
            source_asset=(account.asset_code, account.asset_scale),
            source_address=connector.child_address(name),
            idle_timeout=idle_timeout,
        )

    def put_account(self, spec: AccountConfig, *, origin: str = "api") -> Account:
        """Create or update an account from ``spec``; a token given replaces the old one."""
        connector = self.connector
        existing = connector.accounts.get(spec.name)
        token_hash = hash_token(spec.token) if spec.token else None
        if token_hash is None and existing is not None:
            token_hash = existing.token_hash
        record = AccountRecord(
            spec.name,
            spec.relation,
            spec.asset_code or self.config.asset_code,
            self.config.asset_scale if spec.asset_scale is None else spec.asset_scale,
            spec.max_packet_amount,
            spec.credit_limit,
            token_hash,
            spec.url,
            origin,
            send_routes=spec.send_routes,
            receive_routes=spec.receive_routes,
        )
        account = connector.put_account(record)
        for prefix in spec.routes:
            connector.set_route(prefix, spec.name)
        return account

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop gracefully: refuse new Prepares (T03), wait up to ``timeout`` seconds for those
        in flight, then close every link with a closing handshake, so the last Fulfills reach
        the peers. Cancel the node's task afterwards (or leave :func:`open_node`)."""
        connector = self.connector
        with trio.move_on_after(timeout):
            await connector.drain()
        async with trio.open_nursery() as nursery:
            for account in connector.accounts.values():
                for link in list(account.links):
                    aclose = getattr(link, "aclose", None)
                    if aclose is not None:
                        nursery.start_soon(aclose)

    # -- running ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, start every listener and dialer, report the node, serve until
        cancelled; then close the store."""
        config = self.config
        store = NodeStore(config.store_path)
        self.store = store
        try:
            self._secret = self._node_secret(store)
            self.admin_token = self._load_admin_token(store)
            self._connector = Connector(
                store,
                address=config.address or "local.unconfigured",
                asset_code=config.asset_code,
                asset_scale=config.asset_scale,
                spread=config.spread,
                min_message_window=config.min_message_window,
                max_hold_time=config.max_hold_time,
                local_handler=self._local_handler,
                on_change=self._account_changed,
            )
            if config.route_broadcast:
                self.routing = RouteExchange(
                    self._connector.address,
                    hmac.new(self._secret, b"ccp routing", hashlib.sha256).digest(),
                    relation_of=self._relation_of,
                    route_expiry=config.route_expiry,
                    broadcast_interval=config.route_broadcast_interval,
                )
                self._connector.on_routes = self._originated_changed
                self._connector.ccp = self._handle_ccp
                self._originated_changed()
            self._apply_config()
            failure: Exception | None = None
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._start(nursery)
                except (OSError, IlpError) as exc:
                    # Raised after the nursery is gone, so the caller gets the error itself
                    # (a busy port, an unreachable parent), not a group around it.
                    failure = exc
                    nursery.cancel_scope.cancel()
                else:
                    task_status.started(self)
                    await trio.sleep_forever()
            if failure is not None:
                raise failure
        finally:
            self._nursery = None
            self._receiver_scopes.clear()
            store.close()

    async def _start(self, nursery: trio.Nursery) -> None:
        config = self.config
        await nursery.start(self.connector.run)
        for name, receiver in self._receivers.items():
            self._start_receiver(name, receiver)
        for name in list(self.connector.accounts):
            self._account_changed(name)
        if config.address is None:
            await self._address_from_parent()
        if self.routing is not None:
            nursery.start_soon(self._exchange_routes)
        self.btp_port = await nursery.start(
            serve_btp, self._on_client, config.btp_host, config.btp_port
        )
        if config.api_port is not None:
            from ..spsp.server import serve_spsp
            from .api import NodeApi

            self.api_port = await nursery.start(
                serve_spsp, NodeApi(self), config.api_host, config.api_port
            )
        self.started_at = time.monotonic()
        _log.info(
            "node %s: BTP on %s:%s, API on %s",
            self.address,
            config.btp_host,
            self.btp_port,
            f"{config.api_host}:{self.api_port}" if self.api_port else "(off)",
        )

    def _node_secret(self, store: NodeStore) -> bytes:
        value = store.setting("node_secret")
        if value is None:
            value = secrets.token_hex(32)
            store.put_setting("node_secret", value)
        return bytes.fromhex(value)

    def _load_admin_token(self, store: NodeStore) -> str:
        token = self.config.admin_token
        if token is not None:
            return token
        token = store.setting("admin_token")
        if token is None:
            token = secrets.token_urlsafe(24)
            store.put_setting("admin_token", token)
        if self.config.data_dir is not None:
            path = self.config.data_dir / ADMIN_TOKEN_FILE
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(token + "\n")
            self.admin_token_file = path
        return token

    def _apply_config(self) -> None:
        """Accounts, rates and routes of the file go into the store (the file wins)."""
        connector = self.connector
        for code, rate in self.config.rates.items():
            connector.set_rate(code, rate)
        try:
            for spec in self.config.accounts:
                self.put_account(spec, origin="config")
            for prefix, name in self.config.routes.items():
                connector.set_route(prefix, name)
        except NodeError as exc:
            raise ConfigError(str(exc)) from None

    async def _address_from_parent(self) -> None:
        parents = [a for a in self.connector.accounts.values() if a.relation == "parent"]
        if not parents or parents[0].name not in self._dialers:
            raise ConfigError("no address configured, and no parent account with a url to ask")
        client = self._dialers[parents[0].name][1]
        _log.info("asking the parent %s for our address (ILDCP)", parents[0].name)
        config = await fetch_config(client)
        self.connector.set_address(config.client_address)
        for _, dialer in self._dialers.values():
            dialer.address = config.client_address

    # -- routes (CCP) -----------------------------------------------------------------------

    def _relation_of(self, name: str) -> str | None:
        account = self.connector.accounts.get(name)
        return None if account is None else account.relation

    def _originated_changed(self) -> None:
        """The node's address, children or static routes changed: tell the route exchange."""
        routing = self.routing
        if routing is None:
            return
        local, static = self.connector.originated()
        self._routes_changed(routing.set_origin(self.connector.address, local, static))

    def _routes_changed(self, changed: list[str]) -> None:
        """Give the connector the learned routes and wake the exchange, if anything changed."""
        if changed:
            self._push_learned()

    def _push_learned(self) -> None:
        routing = self.routing
        assert routing is not None
        self.connector.set_learned_routes(
            {prefix: (r.next_hop, r.path) for prefix, r in routing.learned().items()}
        )
        self._routing_wake.set()

    def _handle_ccp(self, account: Account, prepare: Prepare) -> Reply:
        """Answer a route control or route update request from ``account``."""
        routing = self.routing
        assert routing is not None
        connector = self.connector
        self._track_peer(account)
        now = connector.now()
        try:
            if prepare.destination == CCP_CONTROL_DESTINATION:
                routing.handle_control(account.name, RouteControlRequest.from_prepare(prepare, now))
                self._routing_wake.set()
            else:
                update = RouteUpdateRequest.from_prepare(prepare, now)
                try:
                    changed = routing.handle_update(account.name, update, trio.current_time())
                finally:
                    self._push_learned()  # even a refused update may drop an old table's routes
                if changed:
                    _log.info(
                        "routes from %s: %d new, %d withdrawn",
                        account.name,
                        len(update.new_routes),
                        len(update.withdrawn_routes),
                    )
        except PeerRequestError as exc:
            return Reject(exc.code, connector.address, f"not a valid CCP request: {exc}")
        except DecodeError as exc:
            return Reject(ErrorCode("F01"), connector.address, f"not a valid CCP request: {exc}")
        except RoutingRefusedError as exc:
            return Reject(ErrorCode("F00"), connector.address, str(exc))
        return CCP_RESPONSE

    def _track_peer(self, account: Account) -> None:
        """Make ``account`` a CCP peer of the exchange if it is one and is not yet."""
        routing = self.routing
        if routing is None or account.name in routing.peers or not self.is_connected(account):
            return
        send, receive = account.route_exchange()
        if send or receive:
            routing.add_peer(account.name, account.relation, send=send, receive=receive)

    def _sync_peers(self) -> None:
        """Peers whose link came up join the exchange (and are asked for routes); peers whose
        link went down, or that are no CCP peers any more, leave it with their routes."""
        routing = self.routing
        assert routing is not None
        accounts = self.connector.accounts
        changed: list[str] = []
        for name, peer in list(routing.peers.items()):
            account = accounts.get(name)
            if (
                account is None
                or account.relation != peer.relation
                or account.route_exchange() != (peer.send, peer.receive)
                or not self.is_connected(account)
            ):
                _log.info("route exchange with %s stopped", name)
                changed += routing.remove_peer(name)
        for account in accounts.values():
            self._track_peer(account)
        self._routes_changed(changed)

    async def _exchange_routes(self) -> None:
        """The route exchange's task: follow the links, expire routes, and send the control
        requests and updates that are due, each in a task of its own."""
        routing = self.routing
        assert routing is not None and self._nursery is not None
        nursery = self._nursery
        while True:
            self._routing_wake = trio.Event()
            self._sync_peers()
            now = trio.current_time()
            self._routes_changed(routing.expire(now))
            for name in routing.controls_due(now):
                nursery.start_soon(self._send_control, name)
            for name in routing.updates_due(now):
                update, first = routing.route_update(name, now)
                nursery.start_soon(self._send_update, name, update, first)
            # Links come and go without a wake-up from BtpClient: look again every second.
            with trio.move_on_at(min(routing.next_due(now), now + 1.0)):
                await self._routing_wake.wait()

    async def _send_ccp(self, name: str, prepare: Prepare) -> bool:
        """Send a CCP request to account ``name``; True if it was fulfilled."""
        account = self.connector.accounts.get(name)
        if account is None or not account.links:
            return False
        link = account.links[-1]
        with trio.move_on_after(PEER_EXPIRY.total_seconds() + 1):
            try:
                reply = await link.send(prepare)
            except (IlpError, OSError) as exc:
                _log.debug("CCP request to %s failed: %s", name, exc)
                return False
            if isinstance(reply, Fulfill):
                return True
            _log.debug("CCP request to %s rejected: %s %s", name, reply.code, reply.message)
        return False

    async def _send_control(self, name: str) -> None:
        routing = self.routing
        assert routing is not None
        if name not in routing.peers:
            return
        request = routing.control_request(name)
        ok = await self._send_ccp(name, request.to_prepare(self.connector.now() + PEER_EXPIRY))
        if not ok:
            # Debug only: a parent that does not speak CCP refuses every 30 s.
            _log.debug("%s did not take our route control request; asking again later", name)
        routing.control_done(name, ok, trio.current_time())
        self._routing_wake.set()

    async def _send_update(self, name: str, update: RouteUpdateRequest, first: int) -> None:
        routing = self.routing
        assert routing is not None
        ok = await self._send_ccp(name, update.to_prepare(self.connector.now() + PEER_EXPIRY))
        routing.update_done(name, ok, first)
        self._routing_wake.set()

    # -- links ------------------------------------------------------------------------------

    def _local_handler(self, account: Account) -> PrepareHandler | None:
        return self.receiver(account.name)

    def _account_changed(self, name: str) -> None:
        """Start, restart or stop the dial-out link of account ``name``; when the account is
        gone, also disconnect its BTP clients (a new account of that name starts afresh)."""
        account = self.connector.accounts.get(name)
        if account is None:
            for link in self._server_links.pop(name, set()):
                self._nursery_start(link.aclose)
            self._retire_receiver(name)
        url = account.url if account is not None else None
        current = self._dialers.get(name)
        if current is not None and current[0] == url:
            if account is not None and current[1] not in account.links:
                account.links[:] = [current[1]]
            return
        if current is not None:
            del self._dialers[name]
            self._nursery_start(current[1].aclose)
        if account is None or url is None or self._nursery is None:
            return
        client: BtpClient | HttpLink
        if is_http_url(url):
            target, peer_name, token = split_http_url(url)
            client = HttpLink(
                target, token=token, peer_name=peer_name, address=self.connector.address
            )
        else:
            client = BtpClient(
                parse_btp_url(url),
                handler=self.connector.handler_for(account),
                address=self.connector.address,
                persistent=True,
            )
        self._dialers[name] = (url, client)
        account.links[:] = [client]
        self._nursery_start(client.run)

    def _nursery_start(self, fn: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn)

    def _authenticate(self, request: BtpRequest) -> Account | None:
        connector = self.connector
        username, token = request.username, request.token
        if username:
            account = connector.accounts.get(username)
            if account is not None:
                return account if account.check_token(token) else None
        elif token:
            wanted = hash_token(token)
            for account in connector.accounts.values():
                if account.token_hash is not None and hmac.compare_digest(
                    account.token_hash, wanted
                ):
                    return account
        if not self.config.open_children or not token:
            return None
        name = username or base64.urlsafe_b64encode(
            hashlib.sha256(token.encode("utf-8")).digest()
        ).rstrip(b"=").decode("ascii")
        try:
            check_account_name(name)
        except ValueError:
            return None
        if name in connector.accounts:
            return None
        spec = AccountConfig(
            name,
            "child",
            token=token,
            credit_limit=self.config.child_credit_limit,
            max_packet_amount=self.config.child_max_packet_amount,
        )
        _log.info("new child account %s", name)
        return self.put_account(spec, origin="auto")

    async def _on_client(self, request: BtpRequest) -> None:
        try:
            account = self._authenticate(request)
        except IlpError:
            _log.exception("could not create an account for %r", request)
            account = None
        if account is None:
            await request.refuse("unknown account or wrong token")
            return
        if account.name in self._dialers:
            await request.refuse("this node dials that account itself")
            return
        link = await request.accept(
            self.connector.handler_for(account), address=self.connector.address
        )
        account.links.append(link)
        self._server_links.setdefault(account.name, set()).add(link)
        self._notify_links()
        _log.info("account %s connected from %s", account.name, request.remote)
        try:
            await link.wait_closed()
        finally:
            current = self.connector.accounts.get(account.name)
            for holder in {id(account): account, id(current): current}.values():
                if holder is not None and link in holder.links:
                    holder.links.remove(link)
            self._server_links.get(account.name, set()).discard(link)
            self._notify_links()
            _log.info("account %s disconnected", account.name)


@asynccontextmanager
async def open_node(config: NodeConfig) -> AsyncIterator[Node]:
    """Run a node for the duration of the block; leaving it stops every task."""
    async with trio.open_nursery() as nursery:
        node: Node = await nursery.start(Node(config).run)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()
