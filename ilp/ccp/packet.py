"""CCP, the connector-to-connector route exchange of ilp-connector and interledger-rs. Sans-I/O.

Both messages are the data of a peer-protocol Prepare (:mod:`ilp.peer`); the reply is
:data:`CCP_RESPONSE` (zero fulfillment, no data) or a Reject::

    RouteControlRequest  -> peer.route.control
        u8 mode | bytes[16] last_known_routing_table_id | u32 last_known_epoch | list<utf8> features
    RouteUpdateRequest   -> peer.route.update
        bytes[16] routing_table_id | u32 current_epoch_index | u32 from_epoch_index
        | u32 to_epoch_index | u32 hold_down_time | ascii speaker | list<Route> new_routes
        | list<ascii> withdrawn_routes
    Route  ascii prefix | list<ascii> path | bytes[32] auth | list<RouteProp> props
    Prop   u8 meta (0x80 optional, 0x40 transitive, 0x20 partial, 0x10 utf8) | u16 id | varoct value

Lists are a varuint count followed by the items. Decoders ignore bytes after the last field (as
both reference decoders do) and the four low bits of a prop's meta byte; the speaker must be a
valid ILP address (as in interledger-rs); prefixes, paths and withdrawn routes must be ASCII.

Prop flags are written exactly as given, as interledger-rs does. ilp-protocol-ccp instead forces
the transitive bit on non-optional props and drops "partial" unless the prop is optional and
transitive; a JS peer re-encoding our props may therefore change those bits. Prop values are
kept as raw bytes whatever ``is_utf8`` says, so every message round-trips exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from ..address import MAX_ADDRESS_LENGTH, is_valid_address, validate_address
from ..errors import DecodeError, EncodeError
from ..oer import Buffer, Reader, Writer
from ..packet import Fulfill, Prepare
from ..peer import PEER_CONDITION, PEER_FULFILLMENT, check_peer_request

__all__ = [
    "CCP_CONTROL_DESTINATION",
    "CCP_RESPONSE",
    "CCP_UPDATE_DESTINATION",
    "Mode",
    "Route",
    "RouteControlRequest",
    "RouteProp",
    "RouteUpdateRequest",
]

CCP_CONTROL_DESTINATION: Final = "peer.route.control"
CCP_UPDATE_DESTINATION: Final = "peer.route.update"
CCP_RESPONSE: Final = Fulfill(PEER_FULFILLMENT)
"""The reply to an accepted control or update request: zero fulfillment, empty data."""

_OPTIONAL = 0x80
_TRANSITIVE = 0x40
_PARTIAL = 0x20
_UTF8 = 0x10
_U32_MAX = 0xFFFFFFFF


class Mode(enum.IntEnum):
    """What a route control request asks of the speaker."""

    IDLE = 0
    """Stop sending me routes."""
    SYNC = 1
    """Send me routes (from the epoch I name)."""


def _check_size(value: bytes, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise EncodeError(f"{what} must be {size} bytes")


def _check_u32(value: int, what: str) -> None:
    if not 0 <= value <= _U32_MAX:
        raise EncodeError(f"{what} {value} is not an unsigned 32-bit integer")


def _read_list_count(r: Reader, field: str) -> int:
    # Never pre-allocate from the count: every item consumes bytes, so a huge count with a short
    # buffer fails on truncation.
    return r.read_var_uint(field)


@dataclass(frozen=True, slots=True)
class RouteProp:
    """A route property; CCP defines no well-known ids, so ``value`` stays raw bytes.

    With ``is_utf8`` the value is meant as UTF-8 text (``prop.value.decode()``).
    """

    is_optional: bool
    is_transitive: bool
    is_partial: bool
    is_utf8: bool
    id: int
    value: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.id <= 0xFFFF:
            raise EncodeError(f"route prop id {self.id} is not an unsigned 16-bit integer")
        if not isinstance(self.value, bytes):
            raise EncodeError("route prop value must be bytes (encode text as UTF-8)")

    @property
    def meta(self) -> int:
        """The meta byte: the four flags, exactly as set."""
        return (
            (_OPTIONAL if self.is_optional else 0)
            | (_TRANSITIVE if self.is_transitive else 0)
            | (_PARTIAL if self.is_partial else 0)
            | (_UTF8 if self.is_utf8 else 0)
        )

    def _write(self, w: Writer) -> None:
        w.write_u8(self.meta)
        w.write_u16(self.id)
        w.write_var_octets(self.value)

    @classmethod
    def _read(cls, r: Reader) -> RouteProp:
        meta = r.read_u8("ccp.route.prop.meta")
        prop_id = r.read_u16("ccp.route.prop.id")
        value = r.read_var_octets("ccp.route.prop.value")
        return cls(
            bool(meta & _OPTIONAL),
            bool(meta & _TRANSITIVE),
            bool(meta & _PARTIAL),
            bool(meta & _UTF8),
            prop_id,
            value,
        )


@dataclass(frozen=True, slots=True)
class Route:
    """A route: a prefix, the connectors it traverses (nearest first), its auth and props."""

    prefix: str
    path: tuple[str, ...]
    auth: bytes
    props: tuple[RouteProp, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple(self.path))
        object.__setattr__(self, "props", tuple(self.props))
        _check_size(self.auth, 32, "route auth")

    def _write(self, w: Writer) -> None:
        w.write_ascii(self.prefix)
        w.write_var_uint(len(self.path))
        for hop in self.path:
            w.write_ascii(hop)
        w.write_bytes(self.auth)
        w.write_var_uint(len(self.props))
        for prop in self.props:
            prop._write(w)

    @classmethod
    def _read(cls, r: Reader) -> Route:
        prefix = r.read_ascii("ccp.route.prefix")
        path = tuple(
            r.read_ascii("ccp.route.path") for _ in range(_read_list_count(r, "ccp.route.path"))
        )
        auth = r.read_bytes(32, "ccp.route.auth")
        props = tuple(RouteProp._read(r) for _ in range(_read_list_count(r, "ccp.route.props")))
        return cls(prefix, path, auth, props)


@dataclass(frozen=True, slots=True)
class RouteControlRequest:
    """Sent by a route receiver to the speaker: start (SYNC) or stop (IDLE) sending routes."""

    mode: Mode
    last_known_routing_table_id: bytes
    last_known_epoch: int
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise EncodeError(f"unknown route control mode {self.mode!r}") from None
        object.__setattr__(self, "features", tuple(self.features))
        _check_size(self.last_known_routing_table_id, 16, "last_known_routing_table_id")
        _check_u32(self.last_known_epoch, "last_known_epoch")

    def encode(self) -> bytes:
        """The Prepare data of this request."""
        w = Writer()
        w.write_u8(self.mode)
        w.write_bytes(self.last_known_routing_table_id)
        w.write_u32(self.last_known_epoch)
        w.write_var_uint(len(self.features))
        for feature in self.features:
            w.write_utf8(feature)
        return w.getvalue()

    @classmethod
    def decode(cls, data: Buffer) -> RouteControlRequest:
        """Decode the Prepare data; raises only :class:`~ilp.errors.DecodeError`."""
        r = Reader(data)
        raw_mode = r.read_u8("ccp.mode")
        try:
            mode = Mode(raw_mode)
        except ValueError:
            raise DecodeError(
                f"unknown route control mode {raw_mode} (0 IDLE, 1 SYNC)",
                field="ccp.mode",
                offset=0,
            ) from None
        table_id = r.read_bytes(16, "ccp.last_known_routing_table_id")
        epoch = r.read_u32("ccp.last_known_epoch")
        features = tuple(
            r.read_utf8("ccp.features") for _ in range(_read_list_count(r, "ccp.features"))
        )
        return cls(mode, table_id, epoch, features)

    def to_prepare(self, expires_at: datetime) -> Prepare:
        """This request as a Prepare to ``peer.route.control`` (use now + ``PEER_EXPIRY``)."""
        return Prepare(0, expires_at, PEER_CONDITION, CCP_CONTROL_DESTINATION, self.encode())

    @classmethod
    def from_prepare(cls, prepare: Prepare, now: datetime) -> RouteControlRequest:
        """The request in ``prepare``, after checking destination, condition and expiry.

        Raises :class:`~ilp.peer.PeerRequestError` (with the code to reject with) for a wrong
        destination, condition or an expired Prepare, :class:`~ilp.errors.DecodeError` for
        malformed data.
        """
        check_peer_request(prepare, CCP_CONTROL_DESTINATION, now)
        return cls.decode(prepare.data)


@dataclass(frozen=True, slots=True)
class RouteUpdateRequest:
    """Sent by a speaker: the route changes from ``from_epoch_index`` up to ``to_epoch_index``.

    No new and no withdrawn routes make it a heartbeat. ``hold_down_time`` is in milliseconds.
    """

    routing_table_id: bytes
    current_epoch_index: int
    from_epoch_index: int
    to_epoch_index: int
    hold_down_time: int
    speaker: str
    new_routes: tuple[Route, ...] = ()
    withdrawn_routes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "new_routes", tuple(self.new_routes))
        object.__setattr__(self, "withdrawn_routes", tuple(self.withdrawn_routes))
        _check_size(self.routing_table_id, 16, "routing_table_id")
        _check_u32(self.current_epoch_index, "current_epoch_index")
        _check_u32(self.from_epoch_index, "from_epoch_index")
        _check_u32(self.to_epoch_index, "to_epoch_index")
        _check_u32(self.hold_down_time, "hold_down_time")
        validate_address(self.speaker)

    def encode(self) -> bytes:
        """The Prepare data of this update."""
        w = Writer()
        w.write_bytes(self.routing_table_id)
        w.write_u32(self.current_epoch_index)
        w.write_u32(self.from_epoch_index)
        w.write_u32(self.to_epoch_index)
        w.write_u32(self.hold_down_time)
        w.write_ascii(self.speaker)
        w.write_var_uint(len(self.new_routes))
        for route in self.new_routes:
            route._write(w)
        w.write_var_uint(len(self.withdrawn_routes))
        for prefix in self.withdrawn_routes:
            w.write_ascii(prefix)
        return w.getvalue()

    @classmethod
    def decode(cls, data: Buffer) -> RouteUpdateRequest:
        """Decode the Prepare data; raises only :class:`~ilp.errors.DecodeError`."""
        r = Reader(data)
        table_id = r.read_bytes(16, "ccp.routing_table_id")
        current = r.read_u32("ccp.current_epoch_index")
        first = r.read_u32("ccp.from_epoch_index")
        last = r.read_u32("ccp.to_epoch_index")
        hold_down = r.read_u32("ccp.hold_down_time")
        pos = r.pos
        speaker = r.read_ascii("ccp.speaker", MAX_ADDRESS_LENGTH)
        if not is_valid_address(speaker):
            raise DecodeError(
                f"invalid ILP address {speaker[:80]!r}", field="ccp.speaker", offset=pos
            )
        new_routes = tuple(Route._read(r) for _ in range(_read_list_count(r, "ccp.new_routes")))
        withdrawn = tuple(
            r.read_ascii("ccp.withdrawn_routes")
            for _ in range(_read_list_count(r, "ccp.withdrawn_routes"))
        )
        return cls(table_id, current, first, last, hold_down, speaker, new_routes, withdrawn)

    def to_prepare(self, expires_at: datetime) -> Prepare:
        """This update as a Prepare to ``peer.route.update`` (use now + ``PEER_EXPIRY``)."""
        return Prepare(0, expires_at, PEER_CONDITION, CCP_UPDATE_DESTINATION, self.encode())

    @classmethod
    def from_prepare(cls, prepare: Prepare, now: datetime) -> RouteUpdateRequest:
        """The update in ``prepare``, after checking destination, condition and expiry.

        Raises :class:`~ilp.peer.PeerRequestError` or :class:`~ilp.errors.DecodeError`, as
        :meth:`RouteControlRequest.from_prepare` does.
        """
        check_peer_request(prepare, CCP_UPDATE_DESTINATION, now)
        return cls.decode(prepare.data)
