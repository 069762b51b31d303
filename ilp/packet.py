"""ILPv4 packets (RFC 27): Prepare, Fulfill, Reject, error codes, F08 data. Sans-I/O.

Wire layout (every packet is ``u8 type || varoct contents``)::

    Prepare (12)  u64 amount | 17-byte timestamp expires_at | 32-byte condition | ascii destination | varoct data
    Fulfill (13)  32-byte fulfillment | varoct data
    Reject  (14)  3-byte code | ascii triggered_by | utf8 message | varoct data

Decoding is strict about the envelope (nothing may follow it) and lenient inside it: bytes after
the last field of the contents are ignored, as RFC 27 asks for extensibility. ``triggered_by`` may be
empty (JS STREAM receivers send that). See docs/decisions.md.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from .address import MAX_ADDRESS_LENGTH, is_valid_address, validate_address
from .errors import DecodeError, EncodeError
from .oer import (
    MAX_UINT64,
    Buffer,
    Reader,
    decode_ilp_timestamp,
    encode_ilp_timestamp,
    encode_length,
)

__all__ = [
    "MAX_DATA_SIZE",
    "MAX_MESSAGE_SIZE",
    "AmountTooLargeData",
    "ErrorCode",
    "ErrorKind",
    "Fulfill",
    "IlpPacket",
    "PacketType",
    "Prepare",
    "Reject",
    "decode_packet",
    "encode_packet",
    "is_fulfillment_valid",
]

MAX_DATA_SIZE: Final = 32767
MAX_MESSAGE_SIZE: Final = 8191


class PacketType(enum.IntEnum):
    PREPARE = 12
    FULFILL = 13
    REJECT = 14


class ErrorKind(enum.Enum):
    """The class of an ILP error code, from its first letter."""

    FINAL = "F"
    TEMPORARY = "T"
    RELATIVE = "R"


_ERROR_NAMES: Final = {
    "F00": "Bad Request",
    "F01": "Invalid Packet",
    "F02": "Unreachable",
    "F03": "Invalid Amount",
    "F04": "Insufficient Destination Amount",
    "F05": "Wrong Condition",
    "F06": "Unexpected Payment",
    "F07": "Cannot Receive",
    "F08": "Amount Too Large",
    "F09": "Invalid Peer Response",
    "F99": "Application Error",
    "T00": "Internal Error",
    "T01": "Peer Unreachable",
    "T02": "Peer Busy",
    "T03": "Connector Busy",
    "T04": "Insufficient Liquidity",
    "T05": "Rate Limited",
    "T99": "Application Error",
    "R00": "Transfer Timed Out",
    "R01": "Insufficient Source Amount",
    "R02": "Insufficient Timeout",
    "R99": "Application Error",
}


class ErrorCode(str):
    """A three-character ILP error code such as ``"F02"``; compares equal to the plain string.

    Unknown codes are kept as they are. The class comes from the first letter; a code with an
    unknown first letter counts as final, as RFC 27 advises.
    """

    __slots__ = ()

    F00_BAD_REQUEST: ErrorCode
    F01_INVALID_PACKET: ErrorCode
    F02_UNREACHABLE: ErrorCode
    F03_INVALID_AMOUNT: ErrorCode
    F04_INSUFFICIENT_DESTINATION_AMOUNT: ErrorCode
    F05_WRONG_CONDITION: ErrorCode
    F06_UNEXPECTED_PAYMENT: ErrorCode
    F07_CANNOT_RECEIVE: ErrorCode
    F08_AMOUNT_TOO_LARGE: ErrorCode
    F99_APPLICATION_ERROR: ErrorCode
    T00_INTERNAL_ERROR: ErrorCode
    T01_PEER_UNREACHABLE: ErrorCode
    T02_PEER_BUSY: ErrorCode
    T03_CONNECTOR_BUSY: ErrorCode
    T04_INSUFFICIENT_LIQUIDITY: ErrorCode
    T05_RATE_LIMITED: ErrorCode
    T99_APPLICATION_ERROR: ErrorCode
    R00_TRANSFER_TIMED_OUT: ErrorCode
    R01_INSUFFICIENT_SOURCE_AMOUNT: ErrorCode
    R02_INSUFFICIENT_TIMEOUT: ErrorCode
    R99_APPLICATION_ERROR: ErrorCode

    def __new__(cls, code: str) -> ErrorCode:
        if len(code) != 3 or not code.isascii():
            raise EncodeError(f"an ILP error code is 3 ASCII characters, got {code!r}")
        return super().__new__(cls, code)

    @property
    def kind(self) -> ErrorKind:
        first = self[0]
        if first == "T":
            return ErrorKind.TEMPORARY
        if first == "R":
            return ErrorKind.RELATIVE
        return ErrorKind.FINAL

    @property
    def is_final(self) -> bool:
        return self.kind is ErrorKind.FINAL

    @property
    def is_temporary(self) -> bool:
        return self.kind is ErrorKind.TEMPORARY

    @property
    def is_relative(self) -> bool:
        return self.kind is ErrorKind.RELATIVE

    @property
    def description(self) -> str:
        """The standard name (``"Unreachable"``), or ``"Unknown Error"``."""
        return _ERROR_NAMES.get(str(self), "Unknown Error")


for _code, _name in _ERROR_NAMES.items():
    if _code != "F09":
        setattr(ErrorCode, f"{_code}_{_name.upper().replace(' ', '_')}", ErrorCode(_code))


def _check_bytes(value: bytes, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise EncodeError(f"{what} must be {size} bytes")


def _check_data(data: bytes) -> None:
    if len(data) > MAX_DATA_SIZE:
        raise EncodeError(f"data is {len(data)} bytes, over the limit of {MAX_DATA_SIZE}")


@dataclass(frozen=True, slots=True)
class Prepare:
    """An ILP Prepare: money on hold, released by the fulfillment of ``execution_condition``."""

    amount: int
    expires_at: datetime
    execution_condition: bytes
    destination: str
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.amount <= MAX_UINT64:
            raise EncodeError(f"amount {self.amount} is not an unsigned 64-bit integer")
        expires_at = self.expires_at
        if expires_at.tzinfo is None:
            raise EncodeError("expires_at must be timezone-aware (UTC)")
        if expires_at.microsecond % 1000 or expires_at.tzinfo is not UTC:
            # The wire has millisecond precision in UTC: hold exactly what will be sent, so a
            # decoded packet equals the one that was encoded.
            expires_at = expires_at.astimezone(UTC)
            expires_at = expires_at.replace(microsecond=expires_at.microsecond // 1000 * 1000)
            object.__setattr__(self, "expires_at", expires_at)
        _check_bytes(self.execution_condition, 32, "execution_condition")
        validate_address(self.destination)
        _check_data(self.data)

    def forward(self, amount: int, expires_at: datetime) -> Prepare:
        """A copy with a new ``amount`` and ``expires_at``, as a connector forwards it.

        The condition, destination and data are the same objects, already valid, so only the
        two new fields are checked (cheaper than building a Prepare from scratch).
        """
        if not 0 <= amount <= MAX_UINT64:
            raise EncodeError(f"amount {amount} is not an unsigned 64-bit integer")
        if expires_at.tzinfo is not UTC:
            if expires_at.tzinfo is None:
                raise EncodeError("expires_at must be timezone-aware (UTC)")
            expires_at = expires_at.astimezone(UTC)
        if expires_at.microsecond % 1000:
            expires_at = expires_at.replace(microsecond=expires_at.microsecond // 1000 * 1000)
        p: Prepare = _new(Prepare)
        _set(p, "amount", amount)
        _set(p, "expires_at", expires_at)
        _set(p, "execution_condition", self.execution_condition)
        _set(p, "destination", self.destination)
        _set(p, "data", self.data)
        return p

    def encode(self) -> bytes:
        dest = self.destination.encode("ascii")
        data = self.data
        body = b"".join(
            (
                _pack_u64(self.amount),
                encode_ilp_timestamp(self.expires_at),
                self.execution_condition,
                encode_length(len(dest)),
                dest,
                encode_length(len(data)),
                data,
            )
        )
        return b"\x0c" + encode_length(len(body)) + body

    @classmethod
    def decode(cls, data: Buffer) -> Prepare:
        packet = decode_packet(data)
        if not isinstance(packet, Prepare):
            raise DecodeError(
                f"expected a Prepare, got a {type(packet).__name__}", field="type", offset=0
            )
        return packet


@dataclass(frozen=True, slots=True)
class Fulfill:
    """An ILP Fulfill: the preimage of the Prepare's condition, and end-to-end data."""

    fulfillment: bytes
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_bytes(self.fulfillment, 32, "fulfillment")
        _check_data(self.data)

    def encode(self) -> bytes:
        data = self.data
        body = b"".join((self.fulfillment, encode_length(len(data)), data))
        return b"\x0d" + encode_length(len(body)) + body

    @classmethod
    def decode(cls, data: Buffer) -> Fulfill:
        packet = decode_packet(data)
        if not isinstance(packet, Fulfill):
            raise DecodeError(
                f"expected a Fulfill, got a {type(packet).__name__}", field="type", offset=0
            )
        return packet


@dataclass(frozen=True, slots=True)
class Reject:
    """An ILP Reject. ``triggered_by`` may be empty; ``code`` is an :class:`ErrorCode`."""

    code: ErrorCode
    triggered_by: str = ""
    message: str = ""
    data: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.code, ErrorCode):
            object.__setattr__(self, "code", ErrorCode(self.code))
        if self.triggered_by:
            validate_address(self.triggered_by)
        if len(self.message.encode("utf-8")) > MAX_MESSAGE_SIZE:
            raise EncodeError(f"reject message is over the limit of {MAX_MESSAGE_SIZE} bytes")
        _check_data(self.data)

    def encode(self) -> bytes:
        by = self.triggered_by.encode("ascii")
        message = self.message.encode("utf-8")
        data = self.data
        body = b"".join(
            (
                self.code.encode("ascii"),
                encode_length(len(by)),
                by,
                encode_length(len(message)),
                message,
                encode_length(len(data)),
                data,
            )
        )
        return b"\x0e" + encode_length(len(body)) + body

    @classmethod
    def decode(cls, data: Buffer) -> Reject:
        packet = decode_packet(data)
        if not isinstance(packet, Reject):
            raise DecodeError(
                f"expected a Reject, got a {type(packet).__name__}", field="type", offset=0
            )
        return packet

    def amount_too_large(self) -> AmountTooLargeData | None:
        """The F08 data of this reject, or ``None`` if it is not F08 or carries no valid data."""
        if self.code != "F08":
            return None
        try:
            return AmountTooLargeData.decode(self.data)
        except DecodeError:
            return None


IlpPacket = Prepare | Fulfill | Reject

_U64 = struct.Struct(">Q")
_pack_u64 = _U64.pack
_unpack_u64 = _U64.unpack_from
_new = object.__new__
_fromisoformat = datetime.fromisoformat
_set = object.__setattr__


@dataclass(frozen=True, slots=True)
class AmountTooLargeData:
    """F08 data: the amount that arrived and the most the connector accepts, in its units."""

    received_amount: int
    maximum_amount: int

    def encode(self) -> bytes:
        for value in (self.received_amount, self.maximum_amount):
            if not 0 <= value <= MAX_UINT64:
                raise EncodeError(f"amount {value} is not an unsigned 64-bit integer")
        return _pack_u64(self.received_amount) + _pack_u64(self.maximum_amount)

    @classmethod
    def decode(cls, data: Buffer) -> AmountTooLargeData:
        reader = Reader(data)
        received = reader.read_u64("f08.received_amount")
        maximum = reader.read_u64("f08.maximum_amount")
        reader.expect_end("f08")
        return cls(received, maximum)


def _decode_prepare(r: Reader) -> Prepare:
    amount = r.read_u64("prepare.amount")
    pos = r.pos
    expires_at = decode_ilp_timestamp(
        r.read_bytes(17, "prepare.expires_at"), "prepare.expires_at", pos
    )
    condition = r.read_bytes(32, "prepare.execution_condition")
    pos = r.pos
    destination = r.read_ascii("prepare.destination", MAX_ADDRESS_LENGTH)
    if not is_valid_address(destination):
        raise DecodeError(
            f"invalid ILP address {destination[:80]!r}", field="prepare.destination", offset=pos
        )
    data = r.read_var_octets("prepare.data", MAX_DATA_SIZE)
    p: Prepare = _new(Prepare)
    _set(p, "amount", amount)
    _set(p, "expires_at", expires_at)
    _set(p, "execution_condition", condition)
    _set(p, "destination", destination)
    _set(p, "data", data)
    return p


def _decode_fulfill(r: Reader) -> Fulfill:
    fulfillment = r.read_bytes(32, "fulfill.fulfillment")
    data = r.read_var_octets("fulfill.data", MAX_DATA_SIZE)
    f: Fulfill = _new(Fulfill)
    _set(f, "fulfillment", fulfillment)
    _set(f, "data", data)
    return f


def _decode_reject(r: Reader) -> Reject:
    pos = r.pos
    raw_code = r.read_bytes(3, "reject.code")
    if not raw_code.isascii():
        raise DecodeError(f"error code {raw_code!r} is not ASCII", field="reject.code", offset=pos)
    pos = r.pos
    triggered_by = r.read_ascii("reject.triggered_by", MAX_ADDRESS_LENGTH)
    if triggered_by and not is_valid_address(triggered_by):
        raise DecodeError(
            f"invalid ILP address {triggered_by[:80]!r}", field="reject.triggered_by", offset=pos
        )
    message = r.read_utf8("reject.message", MAX_MESSAGE_SIZE)
    data = r.read_var_octets("reject.data", MAX_DATA_SIZE)
    j: Reject = _new(Reject)
    _set(j, "code", ErrorCode(raw_code.decode("ascii")))
    _set(j, "triggered_by", triggered_by)
    _set(j, "message", message)
    _set(j, "data", data)
    return j


_DECODERS: dict[int, Callable[[Reader], IlpPacket]] = {
    12: _decode_prepare,
    13: _decode_fulfill,
    14: _decode_reject,
}


def decode_packet(data: Buffer) -> IlpPacket:
    """Decode an ILP Prepare, Fulfill or Reject; raises only :class:`DecodeError`."""
    if type(data) is not bytes:
        data = bytes(data)
    if data:
        kind = data[0]
        fast: IlpPacket | None = None
        if kind == 12:
            fast = _decode_prepare_fast(data)
        elif kind == 13:
            fast = _decode_fulfill_fast(data)
        if fast is not None:
            return fast
    return _decode_packet_checked(data)


def _decode_packet_checked(data: bytes) -> IlpPacket:
    r = Reader(data)
    kind = r.read_u8("type")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(
            f"unknown ILP packet type {kind} (expected 12 Prepare, 13 Fulfill, 14 Reject)",
            field="type",
            offset=0,
        )
    contents = r.read_var_octets_reader("contents")
    r.expect_end("packet")
    return decoder(contents)


# Destinations validated recently, raw bytes -> str. Every packet of a STREAM connection goes to
# the same address, so a sender, receiver or connector sees the same few destinations again and
# again; validating each once saves the ASCII decode and the grammar check. Bounded: cleared when
# full. Only valid addresses enter it.
_RECENT_DESTINATIONS_MAX = 1024
_recent_destinations: dict[bytes, str] = {}


def _decode_prepare_fast(data: bytes) -> Prepare | None:
    """The common case of a Prepare, decoded in one pass; None sends it to the checked path.

    It handles well-formed packets with canonical 1- to 3-byte lengths. Anything unusual or wrong
    returns None, and :func:`_decode_packet_checked` decodes it again to raise the precise error.
    """
    size = len(data)
    if size < 61:
        return None
    # The usual lengths are read inline (a call per length costs this decoder about 8%).
    if data[1] == 0x81 and data[2] >= 0x80:  # a packet of 128 to 255 bytes
        length, pos = data[2], 3
    else:
        length, pos = _short_length(data, 1, size)
    if pos + length != size:
        return None
    raw_expiry = data[pos + 8 : pos + 25]
    if not raw_expiry.isdigit():
        return None
    dest_len = data[pos + 57]
    if dest_len >= 0x80:
        return None
    at = pos + 58 + dest_len
    if at < size and data[at] < 0x80:
        data_len, at = data[at], at + 1
    else:
        data_len, at = _short_length(data, at, size)
    if data_len < 0 or data_len > MAX_DATA_SIZE or at + data_len > size:
        return None
    raw_destination = data[pos + 58 : pos + 58 + dest_len]
    destination = _recent_destinations.get(raw_destination)
    if destination is None:
        try:
            destination = raw_destination.decode("ascii")
        except ValueError:
            return None
        if not is_valid_address(destination):
            return None
        if len(_recent_destinations) >= _RECENT_DESTINATIONS_MAX:
            _recent_destinations.clear()
        _recent_destinations[raw_destination] = destination
    text = raw_expiry.decode("ascii")
    try:
        expires_at = _fromisoformat(f"{text[0:8]}T{text[8:14]}.{text[14:17]}+00:00")
    except ValueError:
        return None
    p: Prepare = _new(Prepare)
    _set_amount(p, _unpack_u64(data, pos)[0])
    _set_expires_at(p, expires_at)
    _set_condition(p, data[pos + 25 : pos + 57])
    _set_destination(p, destination)
    _set_data(p, data[at : at + data_len])
    return p


def _short_length(data: bytes, at: int, size: int) -> tuple[int, int]:
    """A canonical length determinant of 1 to 3 bytes at ``at`` (below ``size``) and the
    position after it; (-1, size) for anything else, which the checked path then explains."""
    if at >= size:
        return -1, size
    first = data[at]
    if first < 0x80:
        return first, at + 1
    if first == 0x81 and at + 1 < size:
        n = data[at + 1]
        return (n, at + 2) if n >= 0x80 else (-1, size)
    if first == 0x82 and at + 2 < size:
        n = (data[at + 1] << 8) | data[at + 2]
        return (n, at + 3) if n >= 0x100 else (-1, size)
    return -1, size


def _decode_fulfill_fast(data: bytes) -> Fulfill | None:
    """The common case of a Fulfill in one pass (canonical lengths, nothing after the data);
    None sends anything else to :func:`_decode_packet_checked`."""
    size = len(data)
    if size < 35:
        return None
    length, pos = _short_length(data, 1, size)
    if pos + length != size:
        return None
    data_len, at = _short_length(data, pos + 32, size)
    if data_len < 0 or data_len > MAX_DATA_SIZE or at + data_len != size:
        return None
    f: Fulfill = _new(Fulfill)
    _set_fulfillment(f, data[pos : pos + 32])
    _set_fulfill_data(f, data[at:size])
    return f


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    setter: Callable[[Any, Any], None] = cls.__dict__[name].__set__
    return setter


# Slot descriptors of Prepare: setting fields through them skips the frozen __setattr__ and
# __post_init__ (the fast decoder has already checked every field).
_set_amount = _slot_setter(Prepare, "amount")
_set_expires_at = _slot_setter(Prepare, "expires_at")
_set_condition = _slot_setter(Prepare, "execution_condition")
_set_destination = _slot_setter(Prepare, "destination")
_set_data = _slot_setter(Prepare, "data")
_set_fulfillment = _slot_setter(Fulfill, "fulfillment")
_set_fulfill_data = _slot_setter(Fulfill, "data")


def encode_packet(packet: IlpPacket) -> bytes:
    """Encode any ILP packet (same as ``packet.encode()``)."""
    return packet.encode()


def is_fulfillment_valid(fulfillment: bytes, condition: bytes) -> bool:
    """True if ``sha256(fulfillment) == condition``."""
    return hashlib.sha256(fulfillment).digest() == condition
