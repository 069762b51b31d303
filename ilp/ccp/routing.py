"""The route exchange of a connector (CCP), sans-I/O: what it learns from its peers, which route
it picks for each prefix, and what it tells each peer.

:class:`RouteExchange` keeps, with no clock or I/O of its own (times are plain seconds from a
monotonic clock the caller passes in):

- the routes the node *originates*: its own address (``next_hop ""``), its children's addresses
  and its static routes. Static routes win over everything, then local ones, then learned ones.
- per CCP peer, what the peer advertised (its routing table id, the epoch it has told us up to,
  its routes and when they expire), and what we have told it (the epoch it asked for, whether it
  wants updates at all).
- the best route per prefix. Among learned routes the next hop's relation decides first (a
  child's route over a peer's over a parent's, as ilp-connector does), then the shorter path,
  then the account name.
- the *forwarding table* we advertise, with its id (a random UUID, new with every start) and
  its log: each change of an advertised route takes one epoch. An update to a peer covers at
  most 50 epochs from the one the peer asked for; an update without routes is a heartbeat.

What is advertised: every best route whose prefix lies under the node's scheme (the first
segment of its address), is not the scheme alone, and is not one of the node's own children
(those are reached through the node's own address, which is advertised). The node's address is
put in front of the path and the route's ``auth`` is replaced with its SHA-256; routes that
start here get ``HMAC-SHA256(secret, prefix)``. A peer is never told its own routes back (they
go out as withdrawn), and a parent is told only the routes of children and the node itself.

What is learned: routes under the node's scheme, not the scheme alone, not under the node's own
address (it is authoritative for those), and not passing through the node already (a loop).
Learned routes of a peer expire ``hold_down_time`` after its last update (heartbeats renew
them), and go at once when the peer is removed (its link went down).

Unlike ilp-connector: path changes of a route are advertised (not only a new next hop); routes
expire when their hold-down time passes; a peer's new routing table id drops the routes of its
old one; a gap in the epochs asks the peer to resync at once; an epoch asked for that is ahead
of ours is treated as ours. DRAGON filtering (leaving out a route covered by a shorter prefix)
is not done: it only saves update size.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ..address import is_valid_address
from .packet import Mode, Route, RouteControlRequest, RouteUpdateRequest

__all__ = [
    "MAX_EPOCHS_PER_UPDATE",
    "MAX_ROUTES_PER_PEER",
    "RELATION_PRIORITY",
    "ZERO_TABLE_ID",
    "ExchangeRoute",
    "PeerState",
    "RouteExchange",
    "RoutingRefusedError",
]

MAX_EPOCHS_PER_UPDATE: Final = 50
"""The most epochs one route update covers (as ilp-connector)."""

MAX_ROUTES_PER_PEER: Final = 10_000
"""Routes kept from one peer at most; an update that would go beyond is refused whole."""

RELATION_PRIORITY: Final = {"parent": 0, "peer": 1, "child": 2}
"""Which learned route wins: the next hop with the higher number (as ilp-connector)."""

ZERO_TABLE_ID: Final = bytes(16)
"""The routing table id a receiver names before it has seen any."""

_MIN_UPDATE_INTERVAL: Final = 0.15
"""Seconds between two updates to one peer at least (ilp-connector: 150 ms)."""


class RoutingRefusedError(ValueError):
    """A CCP request the exchange does not take from this account; the node answers F00."""


@dataclass(frozen=True, slots=True)
class ExchangeRoute:
    """A route as the exchange keeps it. ``next_hop`` is an account name, ``""`` for the node
    itself; ``origin`` is ``local`` (the node or a child), ``static`` or ``ccp`` (learned)."""

    next_hop: str
    path: tuple[str, ...]
    auth: bytes
    origin: str


@dataclass(slots=True)
class _Entry:
    """One advertised route (``route`` None: withdrawn) and the epoch that set it."""

    prefix: str
    route: ExchangeRoute | None
    epoch: int


@dataclass(slots=True)
class PeerState:
    """One CCP peer: what it told us and what we tell it."""

    name: str
    relation: str
    send: bool
    """We send it routes (when it asks, with a SYNC control request)."""
    receive: bool
    """We take its routes (and ask for them with control requests)."""
    # receiving
    table_id: bytes = ZERO_TABLE_ID
    epoch: int = 0
    """The epoch of the peer's table that we have applied up to."""
    routes: dict[str, ExchangeRoute] = field(default_factory=dict)
    expires_at: float = -math.inf
    control_due: float | None = 0.0
    """When to send the next control request (None: acknowledged, or one is on its way)."""
    control_failures: int = 0
    # sending
    mode: Mode = Mode.IDLE
    next_epoch: int = 0
    """The first epoch the peer does not have (``lastKnownEpoch``)."""
    last_update: float = -math.inf
    sending: bool = False


class RouteExchange:
    """The CCP state of one node (see the module documentation).

    ``relation_of(account)`` names the relation of an account (``child``, ``peer``,
    ``parent``) or returns None for an unknown one. ``route_expiry`` (seconds) is the hold-down
    time sent to peers; ``broadcast_interval`` the seconds between heartbeats to each peer;
    ``control_retry`` the longest wait before a refused or lost control request is sent again
    (the waits double from 1 s up to it: an HTTP peer may just not be listening yet).
    """

    def __init__(
        self,
        address: str,
        secret: bytes,
        *,
        relation_of: Callable[[str], str | None],
        route_expiry: float = 45.0,
        broadcast_interval: float = 30.0,
        control_retry: float = 30.0,
    ) -> None:
        self.address = address
        self._secret = secret
        self._relation_of = relation_of
        self.route_expiry = route_expiry
        self.broadcast_interval = broadcast_interval
        self.control_retry = control_retry
        self.table_id = uuid.uuid4().bytes
        self.epoch = 0
        """The next epoch: the number of changes made to the advertised table so far."""
        self._log: list[_Entry | None] = []
        self._advertised: dict[str, _Entry] = {}
        self._best: dict[str, ExchangeRoute] = {}
        self._local: dict[str, str] = {}
        self._static: dict[str, str] = {}
        self.peers: dict[str, PeerState] = {}

    # -- what the node originates ----------------------------------------------------------

    @property
    def scheme(self) -> str:
        return self.address.split(".", 1)[0]

    def set_origin(
        self, address: str, local: Mapping[str, str], static: Mapping[str, str]
    ) -> list[str]:
        """The node's address, its local routes (prefix -> account, ``""`` for the node) and
        its static routes (prefix -> account). Returns the prefixes whose best route changed."""
        prefixes = set(self._local) | set(self._static) | set(local) | set(static)
        if address != self.address:
            # Everything advertised carries the address in its path, and what was learned is
            # judged against it: start over on both.
            self.address = address
            prefixes |= set(self._best) | set(self._advertised)
            for peer in self.peers.values():
                for prefix in [p for p, r in peer.routes.items() if not self._acceptable(p, r)]:
                    del peer.routes[prefix]
        self._local = dict(local)
        self._static = dict(static)
        return self._update_prefixes(prefixes)

    # -- peers -----------------------------------------------------------------------------

    def add_peer(
        self, name: str, relation: str, *, send: bool = True, receive: bool = True
    ) -> None:
        """A CCP peer's link is up: ask it for its routes (again, if it reconnected)."""
        peer = self.peers.get(name)
        if peer is None:
            self.peers[name] = PeerState(name, relation, send, receive)
            return
        peer.relation, peer.send, peer.receive = relation, send, receive
        if receive:
            peer.control_due = 0.0
            peer.control_failures = 0

    def remove_peer(self, name: str) -> list[str]:
        """A CCP peer's link is down: its routes go. Returns the prefixes whose route changed."""
        peer = self.peers.pop(name, None)
        if peer is None:
            return []
        return self._update_prefixes(peer.routes)

    def _peer(self, name: str, *, sending: bool) -> PeerState:
        peer = self.peers.get(name)
        if peer is None:
            raise RoutingRefusedError("this node does not exchange routes with you")
        if sending and not peer.send:
            raise RoutingRefusedError("this node is configured not to send you routes")
        if not sending and not peer.receive:
            raise RoutingRefusedError("this node is configured not to take routes from you")
        return peer

    # -- incoming requests -----------------------------------------------------------------

    def handle_control(self, name: str, request: RouteControlRequest) -> None:
        """A peer asks for routes (SYNC, from the epoch it names) or to stop (IDLE)."""
        peer = self._peer(name, sending=True)
        peer.mode = request.mode
        if request.last_known_routing_table_id != self.table_id:
            peer.next_epoch = 0
        else:
            peer.next_epoch = min(request.last_known_epoch, self.epoch)
        if request.mode is Mode.SYNC:
            peer.last_update = -math.inf  # answer it now, not at the next heartbeat

    def handle_update(self, name: str, request: RouteUpdateRequest, now: float) -> list[str]:
        """Apply a peer's route update. Returns the prefixes whose best route changed."""
        peer = self._peer(name, sending=False)
        peer.expires_at = max(peer.expires_at, now + request.hold_down_time / 1000)
        changed: set[str] = set()
        if request.routing_table_id != peer.table_id:
            # A new table (the peer restarted): its old routes mean nothing any more.
            changed.update(peer.routes)
            peer.routes.clear()
            peer.table_id = request.routing_table_id
            peer.epoch = 0
        if request.from_epoch_index > peer.epoch:
            peer.control_due = now  # a gap: ask for what we missed
            return self._update_prefixes(changed)
        if request.to_epoch_index < peer.epoch:
            return self._update_prefixes(changed)  # older than what we have
        routes = dict(peer.routes)
        for prefix in request.withdrawn_routes:
            if routes.pop(prefix, None) is not None:
                changed.add(prefix)
        for route in request.new_routes:
            learned = ExchangeRoute(name, route.path, route.auth, "ccp")
            if not self._acceptable(route.prefix, learned):
                continue
            if routes.get(route.prefix) != learned:
                routes[route.prefix] = learned
                changed.add(route.prefix)
        if len(routes) > MAX_ROUTES_PER_PEER:
            self._update_prefixes(changed)
            raise RoutingRefusedError(f"more than {MAX_ROUTES_PER_PEER} routes from one peer")
        peer.routes = routes
        peer.epoch = request.to_epoch_index
        return self._update_prefixes(changed)

    def _acceptable(self, prefix: str, route: ExchangeRoute) -> bool:
        scheme, address = self.scheme, self.address
        return (
            prefix.startswith(scheme + ".")
            and is_valid_address(prefix)
            and prefix != address
            and not prefix.startswith(address + ".")
            and address not in route.path
        )

    def expire(self, now: float) -> list[str]:
        """Drop the routes of peers that have not renewed them in time; returns the prefixes
        whose best route changed. Such a peer is asked for its routes again."""
        changed: list[str] = []
        for peer in self.peers.values():
            if peer.routes and peer.expires_at < now:
                prefixes = list(peer.routes)
                peer.routes.clear()
                peer.epoch = 0
                peer.control_due = now
                changed.extend(self._update_prefixes(prefixes))
        return changed

    # -- outgoing requests -----------------------------------------------------------------

    def controls_due(self, now: float) -> list[str]:
        """Peers to send a control request to now; each is then marked as on its way."""
        due = []
        for peer in self.peers.values():
            if peer.receive and peer.control_due is not None and peer.control_due <= now:
                peer.control_due = None
                due.append(peer.name)
        return due

    def control_request(self, name: str) -> RouteControlRequest:
        """The SYNC request for peer ``name``: the table and epoch we have from it."""
        peer = self.peers[name]
        return RouteControlRequest(Mode.SYNC, peer.table_id, peer.epoch)

    def control_done(self, name: str, ok: bool, now: float) -> None:
        """The control request to ``name`` was fulfilled (``ok``) or not (retry later)."""
        peer = self.peers.get(name)
        if peer is None:
            return
        if ok:
            peer.control_failures = 0
        elif peer.control_due is None:
            peer.control_due = now + min(self.control_retry, 2.0**peer.control_failures)
            peer.control_failures += 1

    def updates_due(self, now: float) -> list[str]:
        """Peers to send a route update to now: those in SYNC mode with changes they lack (at
        most every 150 ms) or whose heartbeat is due."""
        due = []
        for peer in self.peers.values():
            if not peer.send or peer.mode is not Mode.SYNC or peer.sending:
                continue
            since = now - peer.last_update
            if since >= self.broadcast_interval or (
                peer.next_epoch < self.epoch and since >= _MIN_UPDATE_INTERVAL
            ):
                due.append(peer.name)
        return due

    def route_update(self, name: str, now: float) -> tuple[RouteUpdateRequest, int]:
        """The next update for peer ``name``, and the epoch to give back to
        :meth:`update_done` if it fails. The peer counts as having it meanwhile."""
        peer = self.peers[name]
        first = peer.next_epoch
        entries = self._log[first : first + MAX_EPOCHS_PER_UPDATE]
        last = first + len(entries)
        new_routes: list[Route] = []
        withdrawn: list[str] = []
        for entry in entries:
            if entry is None:
                continue
            route = entry.route
            if route is not None and self._tells(peer, route):
                new_routes.append(Route(entry.prefix, route.path, route.auth))
            else:
                withdrawn.append(entry.prefix)
        update = RouteUpdateRequest(
            self.table_id,
            self.epoch,
            first,
            last,
            round(self.route_expiry * 1000),
            self.address,
            tuple(new_routes),
            tuple(withdrawn),
        )
        peer.next_epoch = last
        peer.last_update = now
        peer.sending = True
        return update, first

    def _tells(self, peer: PeerState, route: ExchangeRoute) -> bool:
        if route.next_hop == peer.name:
            return False  # its own routes
        if peer.relation == "parent" and route.next_hop:
            return self._relation_of(route.next_hop) == "child"
        return True

    def update_done(self, name: str, ok: bool, first: int) -> None:
        """The update to ``name`` was fulfilled, or not: then it is sent again from ``first``."""
        peer = self.peers.get(name)
        if peer is None:
            return
        peer.sending = False
        if not ok:
            peer.next_epoch = min(peer.next_epoch, first)

    def next_due(self, now: float) -> float:
        """The earliest time something is due (a control request, an update, an expiry)."""
        times = [math.inf]
        for peer in self.peers.values():
            if peer.receive and peer.control_due is not None:
                times.append(peer.control_due)
            if peer.routes:
                times.append(peer.expires_at)
            if peer.send and peer.mode is Mode.SYNC and not peer.sending:
                if peer.next_epoch < self.epoch:
                    times.append(peer.last_update + _MIN_UPDATE_INTERVAL)
                times.append(peer.last_update + self.broadcast_interval)
        return max(now, min(times))

    # -- the table -------------------------------------------------------------------------

    def best(self, prefix: str) -> ExchangeRoute | None:
        """The route the node uses for exactly ``prefix``, if any."""
        return self._best.get(prefix)

    def learned(self) -> dict[str, ExchangeRoute]:
        """The best routes that were learned from peers (prefix -> route)."""
        return {p: r for p, r in self._best.items() if r.origin == "ccp"}

    def advertised(self) -> dict[str, ExchangeRoute]:
        """What the node advertises now (prefix -> route as sent: path from here)."""
        return {p: e.route for p, e in self._advertised.items() if e.route is not None}

    def _choose(self, prefix: str) -> ExchangeRoute | None:
        static = self._static.get(prefix)
        if static is not None:
            return ExchangeRoute(static, (), self._auth(prefix), "static")
        local = self._local.get(prefix)
        if local is not None:
            return ExchangeRoute(local, (), self._auth(prefix), "local")
        candidates = [peer.routes[prefix] for peer in self.peers.values() if prefix in peer.routes]
        if not candidates:
            return None
        priority = RELATION_PRIORITY.get
        return min(
            candidates,
            key=lambda r: (
                -priority(self.peers[r.next_hop].relation, 0),
                len(r.path),
                r.next_hop,
            ),
        )

    def _auth(self, prefix: str) -> bytes:
        return hmac.new(self._secret, prefix.encode("ascii", "replace"), hashlib.sha256).digest()

    def _update_prefixes(self, prefixes: Iterable[str]) -> list[str]:
        changed = []
        for prefix in sorted(set(prefixes)):
            best = self._choose(prefix)
            if best != self._best.get(prefix):
                if best is None:
                    del self._best[prefix]
                else:
                    self._best[prefix] = best
                changed.append(prefix)
            self._advertise(prefix, best)
        return changed

    def _advertise(self, prefix: str, best: ExchangeRoute | None) -> None:
        route = None
        if best is not None and self._advertisable(prefix, best):
            route = ExchangeRoute(
                best.next_hop,
                (self.address, *best.path),
                hashlib.sha256(best.auth).digest(),
                best.origin,
            )
        current = self._advertised.get(prefix)
        if current is None and route is None:
            return
        if current is not None and current.route == route:
            return
        entry = _Entry(prefix, route, self.epoch)
        if current is not None:
            self._log[current.epoch] = None
        self._log.append(entry)
        self._advertised[prefix] = entry
        self.epoch += 1

    def _advertisable(self, prefix: str, best: ExchangeRoute) -> bool:
        scheme = self.scheme
        if not prefix.startswith(scheme + "."):
            return False  # the default route, the scheme alone, another scheme
        # The node's children are reached through its own address.
        return not (best.origin == "local" and prefix.startswith(self.address + "."))
