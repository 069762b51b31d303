"""The connector at the heart of ``ilp node``: accounts, routing and the per-packet rules.

:meth:`Connector.handle` is the :data:`~ilp.link.PrepareHandler` of every account's link (with
the account bound). For each Prepare it does, in this order:

1. ``peer.*`` destinations are never forwarded: ``peer.config`` answers ILDCP for children,
   ``peer.route.*`` goes to the ``ccp`` handler (the node's route exchange), anything else is F01.
2. The account's ``max_packet_amount``: over it is F08 with the amounts in the data.
3. The route: longest-prefix match over static routes, the children's addresses, the node's own
   receiving addresses, the parent's default route and the routes learned from peers (see
   :meth:`Connector.set_learned_routes`); nothing matches is F02.
4. The expiry: the next hop gets ``min(expiry - min_message_window, now + max_hold_time)``; less
   than ``min_message_window`` left is R02.
5. The amount: ``floor(amount * rate * (1 - spread))`` in exact arithmetic; 0 out of a non-zero
   amount in is R01.
6. The credit limit: the account's balance, less what it has in flight, less this amount, may not
   fall below ``-credit_limit``; otherwise T04.
7. Forward, and wait no longer than the outgoing expiry (then R00). Links that say they answer
   R00 at the expiry themselves (``bounds_expiry = True``: BTP, memory links) get no timer of
   ours, which is a cancel scope per packet saved.
8. A Fulfill counts only if ``sha256(fulfillment) == condition`` (else F05, and nothing moves).
   The incoming account is debited, the outgoing credited, and both balances are committed to
   the store *before* the Fulfill goes back. A Reject releases the amount held and goes back as
   it came.

:meth:`Connector.handle_nowait` does the same without a task per Prepare, when the next hop's
link has ``send_nowait`` (BTP links): the reply is settled in the callback the link runs. While
:meth:`Connector.run` runs, the balances of the packets settled in one scheduler pass are
committed in one transaction before their Fulfills go back.

Balances are the node's view of each account, in the account's base units: positive when the
node owes the account, negative when the account owes the node. The node does no settlement:
balances move only with packets and with adjustments made through the API.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import partial
from typing import Final

import trio

from ..address import is_valid_address
from ..ccp.packet import CCP_CONTROL_DESTINATION, CCP_UPDATE_DESTINATION
from ..ildcp import ILDCP_DESTINATION, IldcpResponse, check_request
from ..link import IlpLink, PrepareHandler, Reply, ReplyCallback
from ..oer import MAX_UINT64
from ..packet import AmountTooLargeData, ErrorCode, Fulfill, Prepare, Reject
from ..peer import PeerRequestError
from ..routing import DEFAULT_PREFIX, RoutingTable, is_valid_prefix
from .config import RELATIONS, check_account_name, check_asset
from .rates import NoRateError, convert, exchange_rate
from .store import AccountRecord, NodeStore, StoreError

__all__ = [
    "LOCAL_SEGMENT",
    "Account",
    "AccountLink",
    "Connector",
    "NodeError",
    "NotFoundError",
    "RouteInfo",
    "hash_token",
]

_log = logging.getLogger("ilp.node")

LOCAL_SEGMENT: Final = "~receive"
"""``<node address>.~receive.<account>`` is where the node itself receives for an account (SPSP
served by the node's API); account names cannot contain ``~``, so it never clashes."""

_F01, _F02, _F03, _F05, _F08 = (ErrorCode(c) for c in ("F01", "F02", "F03", "F05", "F08"))
_T00, _T01, _T03, _T04 = (ErrorCode(c) for c in ("T00", "T01", "T03", "T04"))
_R00, _R01, _R02 = (ErrorCode(c) for c in ("R00", "R01", "R02"))
_sha256 = hashlib.sha256
_CCP_DESTINATIONS: Final = frozenset((CCP_CONTROL_DESTINATION, CCP_UPDATE_DESTINATION))


def hash_token(token: str) -> str:
    """How tokens are kept: hex SHA-256 (the node never stores a token it is given)."""
    return _sha256(token.encode("utf-8")).hexdigest()


class NodeError(ValueError):
    """A management request cannot be done; the message says why (the API answers 400)."""


class NotFoundError(NodeError):
    """No such account, route or rate (the API answers 404)."""


class Account:
    """An account of the node: its settings, its balance and its current link."""

    __slots__ = (
        "asset_code",
        "asset_scale",
        "balance",
        "credit_limit",
        "in_flight",
        "links",
        "max_packet_amount",
        "name",
        "origin",
        "receive_routes",
        "relation",
        "send_routes",
        "token_hash",
        "url",
    )

    def __init__(self, record: AccountRecord) -> None:
        self.name = record.name
        self.update(record)
        self.balance = record.balance
        """Committed balance, base units: positive means the node owes the account."""
        self.in_flight = 0
        """Amount of the account's Prepares being forwarded now (held against its credit)."""
        self.links: list[IlpLink] = []
        """Live links to the account, newest last (children may connect more than once)."""

    def update(self, record: AccountRecord) -> None:
        """Take the settings of ``record``; the balance, the amount in flight and the links stay."""
        self.relation = record.relation
        self.asset_code = record.asset_code
        self.asset_scale = record.asset_scale
        self.max_packet_amount = record.max_packet_amount
        self.credit_limit = record.credit_limit
        self.token_hash = record.token_hash
        self.url = record.url
        self.origin = record.origin
        self.send_routes = record.send_routes
        self.receive_routes = record.receive_routes

    def record(self) -> AccountRecord:
        return AccountRecord(
            self.name,
            self.relation,
            self.asset_code,
            self.asset_scale,
            self.max_packet_amount,
            self.credit_limit,
            self.token_hash,
            self.url,
            self.origin,
            self.balance,
            self.send_routes,
            self.receive_routes,
        )

    @property
    def connected(self) -> bool:
        return bool(self.links)

    def route_exchange(self) -> tuple[bool, bool]:
        """Whether the node sends this account its routes and takes the account's, over CCP:
        as set, else yes for peers and parents and no for children (as ilp-connector)."""
        default = self.relation != "child"
        send, receive = self.send_routes, self.receive_routes
        return (default if send is None else send, default if receive is None else receive)

    def check_token(self, token: str) -> bool:
        """True if ``token`` is the account's BTP token (constant-time comparison)."""
        return self.token_hash is not None and hmac.compare_digest(
            self.token_hash, hash_token(token)
        )

    def __repr__(self) -> str:
        return f"<Account {self.name} {self.relation} {self.asset_code}/{self.asset_scale}>"


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One entry of the routing table: ``kind`` is ``static`` (stored), ``child`` (an account's
    own address), ``local`` (the node receiving for its accounts), ``default`` (the parent) or
    ``ccp`` (learned from a peer; ``path`` lists the connectors the route passes, nearest
    first)."""

    prefix: str
    account: str
    kind: str
    path: tuple[str, ...] = ()


class AccountLink:
    """An :class:`~ilp.link.IlpLink` that sends *from* an account into the connector, as if the
    account's own client had sent it (used by the API to pay from an account)."""

    def __init__(self, connector: Connector, account: Account) -> None:
        self._connector = connector
        self._account = account

    async def send(self, prepare: Prepare) -> Reply:
        return await self._connector.handle(self._account, prepare)


_LOCAL: Final = object()


def _abort_wait(_: object) -> trio.lowlevel.Abort:
    """A wait that cancellation cannot end (the committer ends it in its next pass)."""
    return trio.lowlevel.Abort.FAILED


def _abort_parked(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.SUCCEEDED


class _Forward:
    """A Prepare that passed every rule: where it goes, as what, and what to settle."""

    __slots__ = (
        "amount",
        "bounded",
        "condition",
        "expires_at",
        "forwarded",
        "link",
        "now",
        "out_amount",
        "send",
        "source",
        "target",
    )

    def __init__(
        self,
        source: Account,
        target: Account,
        link: IlpLink | None,
        send: PrepareHandler,
        bounded: bool,
        forwarded: Prepare,
        condition: bytes,
        amount: int,
        out_amount: int,
        expires_at: datetime,
        now: datetime,
    ) -> None:
        self.source = source
        self.target = target
        self.link = link
        """None for the node's own receivers."""
        self.send = send
        self.bounded = bounded
        """The link answers by the forwarded expiry itself (``bounds_expiry``)."""
        self.forwarded = forwarded
        self.condition = condition
        self.amount = amount
        self.out_amount = out_amount
        self.expires_at = expires_at
        """The forwarded expiry."""
        self.now = now


class _InFlight:
    """The reply callback of a Prepare forwarded by :meth:`Connector.handle_nowait`."""

    __slots__ = ("connector", "hop", "reply", "respond")

    def __init__(self, connector: Connector, hop: _Forward, respond: ReplyCallback) -> None:
        self.connector = connector
        self.hop = hop
        self.respond = respond
        self.reply: Reply | None = None

    def __call__(self, reply: Reply) -> None:
        connector = self.connector
        hop = self.hop
        hop.source.in_flight -= hop.amount
        try:
            reply = connector._complete(hop, reply)
        except Exception:
            # Run by the link's own task, which must live on; the peer still gets an answer.
            _log.exception("settling a forwarded packet failed")
            reply = connector._reject(_T00, "internal error while settling the packet")
        self.reply = reply
        if type(reply) is Fulfill:
            connector._when_committed(self.answer)
        else:
            self.answer()

    def answer(self) -> None:
        connector = self.connector
        connector._done()
        reply = self.reply
        assert reply is not None
        self.respond(connector._count(reply))


Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Connector:
    """Accounts, routes, rates and the packet pipeline of one node (see the module docs).

    ``local_handler(account)`` gives the handler that receives for ``account`` at
    ``<address>.~receive.<account>`` (the node's own STREAM receiver), or None.
    ``on_change(account_name)`` is called after an account was added, changed or removed, so
    the node can start or stop its dial-out link. ``on_routes()`` is called after the routes
    the node originates changed (its address, children or static routes; see
    :meth:`originated`). ``ccp(account, prepare)`` answers the CCP requests
    (``peer.route.*``) of an account; without it they get F01.
    """

    def __init__(
        self,
        store: NodeStore,
        *,
        address: str,
        asset_code: str,
        asset_scale: int,
        spread: Fraction = Fraction(0),
        min_message_window: float = 1.0,
        max_hold_time: float = 30.0,
        local_handler: Callable[[Account], PrepareHandler | None] | None = None,
        on_change: Callable[[str], None] | None = None,
        on_routes: Callable[[], None] | None = None,
        ccp: Callable[[Account, Prepare], Reply] | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self.store = store
        self.address = address
        self.asset_code = asset_code
        self.asset_scale = asset_scale
        self.spread = spread
        self._window = timedelta(seconds=min_message_window)
        self._max_hold = timedelta(seconds=max_hold_time)
        self._local_handler = local_handler
        self._on_change = on_change
        self.on_routes = on_routes
        self.ccp = ccp
        self._clock = clock
        self.accounts: dict[str, Account] = {r.name: Account(r) for r in store.accounts()}
        self.rates: dict[str, Fraction] = store.rates()
        self._static: dict[str, str] = store.routes()
        self._learned: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._table: RoutingTable[object] = RoutingTable()
        self._rate_cache: dict[tuple[str, int, str, int], Fraction] = {}
        self.packets = {"fulfilled": 0, "rejected": 0}
        self.active = 0
        """Prepares being handled now."""
        self.draining = False
        self._idle = trio.Event()
        # Group commit (while :meth:`run` runs): accounts whose balance changed and the replies
        # waiting for those changes to be committed, and the committer task, parked until woken.
        self._dirty: dict[str, Account] = {}
        self._after_commit: list[Callable[[], None]] = []
        self._committer: trio.lowlevel.Task | None = None
        self._commit_woken = False
        self._rebuild_routes()

    def now(self) -> datetime:
        """The node's clock (UTC), as the packet rules read it."""
        return self._clock()

    # -- the packet pipeline ---------------------------------------------------------------

    def _reject(self, code: ErrorCode, message: str, data: bytes = b"") -> Reject:
        return Reject(code, self.address, message, data)

    async def handle(self, source: Account, prepare: Prepare) -> Reply:
        """Answer a Prepare that arrived from ``source`` (see the module documentation)."""
        if self.draining:
            return self._count(self._reject(_T03, "the node is shutting down: try again shortly"))
        self.active += 1
        try:
            reply = await self._handle(source, prepare)
        finally:
            self._done()
        return self._count(reply)

    def handle_nowait(self, source: Account, prepare: Prepare, respond: ReplyCallback) -> bool:
        """:meth:`handle` without a task of its own (see :data:`~ilp.link.PrepareHandler`):
        True if ``respond`` has been or will be called with the reply, False (nothing done)
        when the Prepare needs :meth:`handle` (its next hop has no ``send_nowait``, as the
        node's own receivers, or cannot take it now)."""
        if self.draining:
            respond(self._count(self._reject(_T03, "the node is shutting down: try again shortly")))
            return True
        hop = self._route(source, prepare, nowait=True)
        if hop is None:
            return False
        if type(hop) is not _Forward:
            assert isinstance(hop, Fulfill | Reject)
            respond(self._count(hop))
            return True
        send_nowait = hop.link.send_nowait  # type: ignore[union-attr]
        self.active += 1
        source.in_flight += hop.amount
        if send_nowait(hop.forwarded, _InFlight(self, hop, respond)):
            return True
        source.in_flight -= hop.amount
        self._done()
        return False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit balances in groups while this runs (``await nursery.start(connector.run)``).

        Without it every fulfilled packet commits its two balances on its own. With it, the
        packets settled in one pass of the scheduler (the Fulfills a reader took from one
        read) share one transaction, which this task commits in the next pass; each Fulfill
        still goes back only once its balances are committed.
        """
        self._committer = trio.lowlevel.current_task()
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_task_rescheduled(_abort_parked)
                self._commit()
        finally:
            self._committer = None
            self._commit()

    def _commit(self) -> None:
        """Store the balances changed since the last commit, then send the replies that wait."""
        self._commit_woken = True  # nobody wakes the committer while it commits
        while self._dirty or self._after_commit:
            dirty, self._dirty = self._dirty, {}
            waiting, self._after_commit = self._after_commit, []
            accounts = self.accounts
            try:
                # An account deleted while its packet was in flight is not written back: its
                # name may already belong to a new account, whose stored balance this must not
                # overwrite.
                self.store.save_balances(
                    [(a.name, a.balance) for a in dirty.values() if accounts.get(a.name) is a]
                )
            except StoreError:
                # The money moved downstream: the Fulfills must go back all the same.
                _log.exception("could not store the balances of fulfilled packets")
            for then in waiting:
                try:
                    then()
                except Exception:
                    _log.exception("answering a settled packet failed")
        self._commit_woken = False

    def _when_committed(self, then: Callable[[], None]) -> None:
        """Run ``then`` once the balances changed so far are committed: in the committer's next
        pass while :meth:`run` runs, else after committing at once."""
        committer = self._committer
        if committer is None:
            self._commit()
            then()
            return
        self._after_commit.append(then)
        if not self._commit_woken:
            self._commit_woken = True
            trio.lowlevel.reschedule(committer)

    async def drain(self) -> None:
        """Refuse new Prepares (T03) and return once none is being handled.

        A node that stops this way has stored every balance change of the packets it answered,
        and answered every packet it took: nothing is left half done.
        """
        self.draining = True
        while self.active:
            await self._idle.wait()

    def _count(self, reply: Reply) -> Reply:
        if type(reply) is Fulfill:
            self.packets["fulfilled"] += 1
        else:
            self.packets["rejected"] += 1
        return reply

    def _done(self) -> None:
        """A Prepare taken (``active``) has been answered."""
        self.active -= 1
        if self.active == 0 and self.draining:
            self._idle.set()

    async def _handle(self, source: Account, prepare: Prepare) -> Reply:
        hop = self._route(source, prepare)
        if type(hop) is not _Forward:
            assert isinstance(hop, Fulfill | Reject)
            return hop
        amount = hop.amount
        send = hop.send
        source.in_flight += amount
        try:
            if hop.bounded:
                # The link answers R00 itself at the forwarded expiry: no timer of our own.
                reply = await send(hop.forwarded)
            else:
                deadline = trio.current_time() + (hop.expires_at - hop.now).total_seconds()
                with trio.move_on_at(deadline) as scope:
                    reply = await send(hop.forwarded)
                if scope.cancelled_caught:
                    return self._reject(
                        _R00,
                        f"no reply from {hop.target.name} before {hop.expires_at.isoformat()}",
                    )
        finally:
            source.in_flight -= amount
        reply = self._complete(hop, reply)
        if type(reply) is Fulfill:
            if self._committer is None:
                self._commit()
            else:
                task = trio.lowlevel.current_task()
                self._when_committed(partial(trio.lowlevel.reschedule, task))
                # Not cancellable: the money has moved, the Fulfill must go back.
                await trio.lowlevel.wait_task_rescheduled(_abort_wait)
        return reply

    def _route(
        self, source: Account, prepare: Prepare, *, nowait: bool = False
    ) -> Reply | _Forward | None:
        """Every rule before forwarding: the reply when the node answers itself, or the hop.

        With ``nowait``, None (before any side effect) when the next hop cannot be sent to
        without a task: the node's own receivers, links without ``send_nowait``.
        """
        destination = prepare.destination
        if destination.startswith("peer."):
            return self._peer_protocol(source, prepare)
        amount = prepare.amount
        limit = source.max_packet_amount
        if limit is not None and amount > limit:
            return self._reject(
                _F08,
                f"packet size too large. maxAmount={limit} actualAmount={amount}",
                AmountTooLargeData(amount, limit).encode(),
            )
        next_hop = self._table.lookup(destination)
        if next_hop is None:
            return self._reject(_F02, f"no route to {destination[:200]}")
        link: IlpLink | None
        if next_hop is _LOCAL:
            if nowait:
                return None
            target, send = self._local_target(destination)
            if send is None or target is None:
                return self._reject(_F02, f"no account receives at {destination[:200]}")
            link, bounded = None, False
        else:
            assert isinstance(next_hop, Account)
            target = next_hop
            if target is source:
                return self._reject(_F02, "the route leads back to the account it came from")
            links = target.links
            if not links:
                return self._reject(_T01, f"account {target.name} is not connected")
            link = links[-1]
            send = link.send
            bounded = getattr(link, "bounds_expiry", False)
            if nowait and not (bounded and hasattr(link, "send_nowait")):
                return None
        now = self._clock()
        expires_at = prepare.expires_at
        out_expiry = expires_at - self._window
        if out_expiry <= now:
            return self._reject(
                _R02,
                f"too little time left: the Prepare expires at {expires_at.isoformat()} and "
                f"this node keeps {self._window.total_seconds():g} s of it",
            )
        latest = now + self._max_hold
        if out_expiry > latest:
            out_expiry = latest
        key = (source.asset_code, source.asset_scale, target.asset_code, target.asset_scale)
        rate = self._rate_cache.get(key)
        if rate is None:
            try:
                rate = exchange_rate(key[:2], key[2:], self.rates, self.spread)
            except NoRateError as exc:
                return self._reject(_F02, f"cannot convert {key[0]} to {key[2]}: {exc}")
            self._rate_cache[key] = rate
        out_amount = convert(amount, rate)
        if out_amount == 0 and amount > 0:
            return self._reject(
                _R01, f"{amount} {source.asset_code} converts to 0 {target.asset_code}"
            )
        if out_amount > MAX_UINT64:
            return self._reject(_F03, f"{amount} converts to more than a packet can carry")
        credit = source.credit_limit
        if credit is not None and source.balance - source.in_flight - amount < -credit:
            return self._reject(
                _T04,
                f"insufficient liquidity: account {source.name} has used its credit limit",
            )
        return _Forward(
            source,
            target,
            link,
            send,
            bounded,
            prepare.forward(out_amount, out_expiry),
            prepare.execution_condition,
            amount,
            out_amount,
            out_expiry,
            now,
        )

    def _complete(self, hop: _Forward, reply: Reply) -> Reply:
        """The reply from the next hop, as it goes back: a Fulfill is checked and settled."""
        if type(reply) is Fulfill:
            if _sha256(reply.fulfillment).digest() != hop.condition:
                return self._reject(_F05, "fulfillment did not match the condition")
            self._settle(hop.source, hop.amount, hop.target, hop.out_amount)
        return reply

    def _settle(self, source: Account, amount: int, target: Account, out_amount: int) -> None:
        """Move the balances in memory; :meth:`_when_committed` stores them."""
        source.balance -= amount
        target.balance += out_amount
        dirty = self._dirty
        dirty[source.name] = source
        dirty[target.name] = target

    def _local_target(self, destination: str) -> tuple[Account | None, PrepareHandler | None]:
        rest = destination[len(self.address) + len(LOCAL_SEGMENT) + 2 :]
        account = self.accounts.get(rest.split(".", 1)[0])
        if account is None or self._local_handler is None:
            return None, None
        return account, self._local_handler(account)

    def _peer_protocol(self, source: Account, prepare: Prepare) -> Reply:
        if prepare.destination in _CCP_DESTINATIONS:
            if self.ccp is None:
                return self._reject(_F01, "this node does not exchange routes (CCP is off)")
            return self.ccp(source, prepare)
        if prepare.destination != ILDCP_DESTINATION:
            return self._reject(_F01, f"unknown peer protocol {prepare.destination[:80]}")
        if source.relation != "child":
            return self._reject(_F01, "ILDCP is served to child accounts only")
        try:
            check_request(prepare, self._clock())
        except PeerRequestError as exc:
            return self._reject(exc.code, f"not a valid ILDCP request: {exc}")
        return IldcpResponse(
            self.child_address(source.name), source.asset_scale, source.asset_code
        ).to_fulfill()

    # -- addresses and routes --------------------------------------------------------------

    def child_address(self, name: str) -> str:
        return f"{self.address}.{name}"

    def local_address(self, name: str) -> str:
        """Where the node receives for account ``name`` (see :data:`LOCAL_SEGMENT`)."""
        return f"{self.address}.{LOCAL_SEGMENT}.{name}"

    def set_address(self, address: str) -> None:
        self.address = address
        self._rebuild_routes()

    def _rebuild_routes(self, *, originated: bool = True) -> None:
        """Build the table the packets use: learned routes, then the parent's default route,
        the children, the node's own receivers and static routes, each over the ones before
        for the same prefix. ``originated``: the node's own routes may have changed (tell
        ``on_routes``)."""
        table: RoutingTable[object] = RoutingTable()
        for prefix, (name, _) in self._learned.items():
            target = self.accounts.get(name)
            if target is not None and is_valid_prefix(prefix):
                table.set(prefix, target)
        for account in self.accounts.values():
            if account.relation == "parent" and DEFAULT_PREFIX not in table:
                table.set(DEFAULT_PREFIX, account)
        for account in self.accounts.values():
            if account.relation == "child" and is_valid_address(self.child_address(account.name)):
                table.set(self.child_address(account.name), account)
        if is_valid_address(self.address):
            table.set(f"{self.address}.{LOCAL_SEGMENT}", _LOCAL)
        for prefix, name in self._static.items():
            target = self.accounts.get(name)
            if target is not None:
                table.set(prefix, target)
        self._table = table
        if originated and self.on_routes is not None:
            self.on_routes()

    def originated(self) -> tuple[dict[str, str], dict[str, str]]:
        """The routes this node starts: its address (to ``""``, itself), and its static routes
        (prefix -> account). The children's addresses are not among them: they lie under the
        node's address, which is what peers are told, and no peer route can take them (the route
        exchange takes nothing under the node's address)."""
        local = {self.address: ""} if is_valid_address(self.address) else {}
        static = {p: a for p, a in self._static.items() if a in self.accounts}
        return local, static

    def set_learned_routes(self, routes: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        """Replace the routes learned from peers: prefix -> (account, path)."""
        if routes != self._learned:
            self._learned = routes
            self._rebuild_routes(originated=False)

    def routes(self) -> list[RouteInfo]:
        """The routing table as it is used, shortest prefix first."""
        result = []
        for prefix, hop in self._table.items():
            if hop is _LOCAL:
                result.append(RouteInfo(prefix, "", "local"))
                continue
            assert isinstance(hop, Account)
            learned = self._learned.get(prefix)
            if self._static.get(prefix) == hop.name:
                kind = "static"
            elif prefix == DEFAULT_PREFIX:
                kind = "default"
            elif learned is not None and learned[0] == hop.name:
                result.append(RouteInfo(prefix, hop.name, "ccp", learned[1]))
                continue
            else:
                kind = "child"
            result.append(RouteInfo(prefix, hop.name, kind))
        return result

    def set_route(self, prefix: str, account: str) -> RouteInfo:
        """Add or replace a static route (stored)."""
        if not is_valid_prefix(prefix):
            raise NodeError(f"{prefix[:80]!r} is not an ILP address prefix")
        if prefix.startswith("peer.") or prefix == "peer":
            raise NodeError("peer.* is link-local and never routed")
        if account not in self.accounts:
            raise NotFoundError(f"no account named {account!r}")
        self.store.put_route(prefix, account)
        self._static[prefix] = account
        self._rebuild_routes()
        return RouteInfo(prefix, account, "static")

    def delete_route(self, prefix: str) -> None:
        if prefix not in self._static:
            raise NotFoundError(f"no static route for {prefix[:80]!r}")
        self.store.delete_route(prefix)
        del self._static[prefix]
        self._rebuild_routes()

    # -- rates -----------------------------------------------------------------------------

    def set_rate(self, asset_code: str, rate: Fraction) -> None:
        try:
            check_asset(asset_code, 0)
        except ValueError as exc:
            raise NodeError(str(exc)) from None
        if rate <= 0:
            raise NodeError("a rate must be more than 0")
        self.store.put_rate(asset_code, rate)
        self.rates[asset_code] = rate
        self._rate_cache.clear()

    def delete_rate(self, asset_code: str) -> None:
        if asset_code not in self.rates:
            raise NotFoundError(f"no rate for {asset_code[:20]!r}")
        self.store.delete_rate(asset_code)
        del self.rates[asset_code]
        self._rate_cache.clear()

    # -- accounts --------------------------------------------------------------------------

    def account(self, name: str) -> Account:
        try:
            return self.accounts[name]
        except KeyError:
            raise NotFoundError(f"no account named {name[:80]!r}") from None

    def put_account(self, record: AccountRecord) -> Account:
        """Create an account, or change the settings of an existing one (its balance stays)."""
        try:
            check_account_name(record.name)
            check_asset(record.asset_code, record.asset_scale)
        except ValueError as exc:
            raise NodeError(str(exc)) from None
        if record.relation not in RELATIONS:
            raise NodeError(f"relation must be one of {', '.join(RELATIONS)}")
        existing = self.accounts.get(record.name)
        if existing is not None:
            record.balance = existing.balance
            if existing.in_flight and (
                existing.asset_code,
                existing.asset_scale,
            ) != (record.asset_code, record.asset_scale):
                raise NodeError("cannot change the asset of an account with packets in flight")
        self.store.put_account(record)
        if existing is None:
            account = Account(record)
            self.accounts[record.name] = account
        else:
            # Changed in place, never replaced: the packets in flight hold this object, and
            # their release and their balance change must land on the account as it is now.
            account = existing
            account.update(record)
        self._rebuild_routes()
        if self._on_change is not None:
            self._on_change(record.name)
        return account

    def delete_account(self, name: str) -> None:
        account = self.account(name)
        self.store.delete_account(name)
        del self.accounts[name]
        for prefix in [p for p, a in self._static.items() if a == name]:
            del self._static[prefix]
        self._rebuild_routes()
        if self._on_change is not None:
            self._on_change(account.name)

    def adjust_balance(self, name: str, delta: int) -> Account:
        """Move an account's balance by ``delta`` (a deposit, a settlement made elsewhere)."""
        account = self.account(name)
        account.balance += delta
        self.store.save_balances([(account.name, account.balance)])
        return account

    def link_from(self, account: Account) -> AccountLink:
        return AccountLink(self, account)

    def handler_for(self, account: Account) -> AccountHandler:
        """The Prepare handler of ``account``'s link: :meth:`handle` with the account bound."""
        return AccountHandler(self, account.name)


class AccountHandler:
    """:meth:`Connector.handle` (and :meth:`~Connector.handle_nowait`) for the account named
    ``name``, a :data:`~ilp.link.PrepareHandler`.

    The account is looked up by name on every packet, so a link keeps working after the
    account's settings change and stops when it is deleted.
    """

    __slots__ = ("connector", "name")

    def __init__(self, connector: Connector, name: str) -> None:
        self.connector = connector
        self.name = name

    def _deleted(self) -> Reject:
        return self.connector._reject(_T01, f"account {self.name} was deleted")

    async def __call__(self, prepare: Prepare) -> Reply:
        connector = self.connector
        current = connector.accounts.get(self.name)
        if current is None:
            return self._deleted()
        return await connector.handle(current, prepare)

    def handle_nowait(self, prepare: Prepare, respond: ReplyCallback) -> bool:
        connector = self.connector
        current = connector.accounts.get(self.name)
        if current is None:
            respond(self._deleted())
            return True
        return connector.handle_nowait(current, prepare, respond)
