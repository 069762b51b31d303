"""Test helpers, like :mod:`trio.testing`: links without sockets and a tiny fake connector.

:func:`memory_link_pair` gives two :class:`MemoryLink` ends: a Prepare sent on one end is
answered by the other end's ``handler``. Packets pass through their encoders and decoders on the
way, as on a wire, and the link keeps the rules of a real one: a Prepare unanswered at its expiry
becomes R00, a handler that raises answers T00, no handler answers F02. Expiry maps onto trio
deadlines, so tests can run on ``autojump_clock``.

:class:`FakeConnector` is a connector in one object: children attach with
:meth:`FakeConnector.add_child`, get their address over ILDCP (``peer.config``) and reach each
other by address; anything else is F02, and Prepares over ``max_packet_amount`` are F08.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import trio

from .address import validate_address
from .ildcp import ILDCP_DESTINATION, IldcpResponse, check_request
from .link import PrepareHandler, Reply
from .packet import AmountTooLargeData, ErrorCode, Prepare, Reject, decode_packet
from .peer import PeerRequestError

__all__ = ["FakeConnector", "MemoryLink", "memory_link_pair"]

_log = logging.getLogger("ilp.testing")

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MemoryLink:
    """One end of an in-memory link (an :class:`~ilp.link.IlpLink`).

    ``handler`` answers the Prepares sent from the *other* end; it may be set or replaced at any
    time. ``address`` goes into the ``triggered_by`` of Rejects made by the link. ``sent`` lists
    every Prepare sent from this end, for assertions.
    """

    bounds_expiry = True
    """``send`` answers R00 by the expiry itself (see :class:`~ilp.link.IlpLink`)."""

    def __init__(
        self, handler: PrepareHandler | None = None, *, address: str = "", now: Clock = _utcnow
    ) -> None:
        self.handler = handler
        self.address = address
        self.sent: list[Prepare] = []
        self._now = now
        self.peer: MemoryLink = self

    async def send(self, prepare: Prepare) -> Reply:
        """Deliver ``prepare`` to the other end's handler and return its (re-decoded) reply."""
        self.sent.append(prepare)
        prepare = Prepare.decode(prepare.encode())
        handler = self.peer.handler
        if handler is None:
            return Reject(ErrorCode("F02"), self.address, "no handler at the other end")
        deadline = trio.current_time() + (prepare.expires_at - self._now()).total_seconds()
        with trio.move_on_at(deadline):
            try:
                reply = await handler(prepare)
            except Exception:
                _log.exception("memory link: the Prepare handler raised")
                return Reject(ErrorCode("T00"), self.address, "the Prepare handler raised")
            decoded = decode_packet(reply.encode())
            if isinstance(decoded, Prepare):
                return Reject(ErrorCode("T00"), self.address, "the handler returned a Prepare")
            return decoded
        return Reject(
            ErrorCode("R00"),
            self.address,
            f"no reply before the Prepare expired at {prepare.expires_at.isoformat()}",
        )


def memory_link_pair(
    handler_a: PrepareHandler | None = None,
    handler_b: PrepareHandler | None = None,
    *,
    now: Clock = _utcnow,
) -> tuple[MemoryLink, MemoryLink]:
    """Two connected link ends ``(a, b)``.

    ``a.send(p)`` is answered by ``handler_b`` (b's end receives it) and ``b.send(p)`` by
    ``handler_a``. ``now`` is the wall clock used to turn expiries into deadlines.
    """
    a = MemoryLink(handler_a, now=now)
    b = MemoryLink(handler_b, now=now)
    a.peer, b.peer = b, a
    return a, b


class FakeConnector:
    """A tiny connector for tests: ILDCP for its children and routing between them.

    ``add_child("alice")`` returns the child's end of a memory link; the child's address is
    ``<address>.alice``. Set ``handler`` on that end to receive the Prepares routed to the child.
    Amounts and expiries are forwarded unchanged (no rates, no fees).
    """

    def __init__(
        self,
        address: str = "test.connector",
        *,
        asset_code: str = "XRP",
        asset_scale: int = 9,
        max_packet_amount: int | None = None,
        now: Clock = _utcnow,
    ) -> None:
        self.address = validate_address(address)
        self.asset_code = asset_code
        self.asset_scale = asset_scale
        self.max_packet_amount = max_packet_amount
        self._now = now
        self._children: dict[str, MemoryLink] = {}
        self.forwarded: list[tuple[str, Prepare]] = []
        """(child name, Prepare) for every Prepare routed to a child."""

    def add_child(self, name: str, handler: PrepareHandler | None = None) -> MemoryLink:
        """Attach a child; returns its end of the link (``handler`` answers Prepares to it)."""
        address = validate_address(f"{self.address}.{name}")
        if name in self._children:
            raise ValueError(f"child {name!r} already exists")

        async def from_child(prepare: Prepare) -> Reply:
            return await self._handle(name, prepare)

        child_end, connector_end = memory_link_pair(handler, from_child, now=self._now)
        child_end.address = address
        connector_end.address = self.address
        self._children[name] = connector_end
        return child_end

    def child_address(self, name: str) -> str:
        return f"{self.address}.{name}"

    async def _handle(self, source: str, prepare: Prepare) -> Reply:
        if prepare.destination == ILDCP_DESTINATION:
            try:
                check_request(prepare, self._now())
            except PeerRequestError as exc:
                return Reject(exc.code, self.address, str(exc))
            config = IldcpResponse(self.child_address(source), self.asset_scale, self.asset_code)
            return config.to_fulfill()
        limit = self.max_packet_amount
        if limit is not None and prepare.amount > limit:
            return Reject(
                ErrorCode("F08"),
                self.address,
                f"packet size too large. maxAmount={limit} actualAmount={prepare.amount}",
                AmountTooLargeData(prepare.amount, limit).encode(),
            )
        target = self._route(prepare.destination)
        if target is None:
            return Reject(
                ErrorCode("F02"), self.address, f"no route to {prepare.destination[:200]}"
            )
        self.forwarded.append((target, prepare))
        return await self._children[target].send(prepare)

    def _route(self, destination: str) -> str | None:
        prefix = self.address + "."
        if not destination.startswith(prefix):
            return None
        name = destination[len(prefix) :].split(".", 1)[0]
        return name if name in self._children else None
