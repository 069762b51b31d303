"""BTP 2.0 packets (RFC 23), sans-I/O.

Each WebSocket binary message is one BTP packet::

    u8      type        1 Response, 2 Error, 6 Message, 7 Transfer
    u32     request_id  chosen by the requester; replies echo it
    varoct  contents    by type:
        Response, Message   ProtocolData
        Transfer            u64 amount, ProtocolData
        Error               bytes[3] code, ascii name, varoct(GeneralizedTime) triggered_at,
                            varoct data (0..8192), ProtocolData
    ProtocolData            varuint count, then per entry: ascii name, u8 content_type, varoct data

Decoding is strict like interledger-rs: trailing bytes after the envelope or inside the contents
are rejected, and so are the retired BTP 1.0 types 3/4/5 and any other unknown type.
``triggered_at`` is decoded leniently (1 to 3 fraction digits) and always encoded with three, as
btp-packet does. :func:`decode_btp` raises only :class:`~ilp.errors.DecodeError`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from ..errors import DecodeError, EncodeError
from ..oer import (
    MAX_UINT64,
    Buffer,
    Reader,
    Writer,
    decode_generalized_time,
    encode_generalized_time,
    encode_length,
)

__all__ = [
    "MAX_ERROR_DATA_SIZE",
    "BtpPacket",
    "BtpType",
    "ContentType",
    "Error",
    "Message",
    "ProtocolData",
    "Response",
    "Transfer",
    "decode_btp",
    "encode_ilp_frame",
    "peek_ilp",
]

MAX_ERROR_DATA_SIZE: Final = 8192
_MAX_REQUEST_ID: Final = 0xFFFFFFFF
_TYPE_AND_ID: Final = struct.Struct(">BI")
_UNPACK_U32: Final = struct.Struct(">I").unpack_from
# Protocol data holding one entry named "ilp": varuint count 1, then the name.
_ILP_ENTRY: Final = b"\x01\x01\x03ilp"


class BtpType(enum.IntEnum):
    """The BTP packet type byte (3/4/5 were BTP 1.0 Prepare/Fulfill/Reject, retired)."""

    RESPONSE = 1
    ERROR = 2
    MESSAGE = 6
    TRANSFER = 7


class ContentType(enum.IntEnum):
    """What the data of a protocol-data entry holds."""

    OCTET_STREAM = 0
    TEXT_PLAIN_UTF8 = 1
    APPLICATION_JSON = 2


@dataclass(frozen=True, slots=True)
class ProtocolData:
    """One named entry of a packet's protocol data (``ilp``, ``auth_token``, ...).

    ``content_type`` is a :class:`ContentType` for the three known values; other byte values
    are kept as plain ints (interledger-rs accepts them too).
    """

    name: str
    content_type: int
    data: bytes

    def __post_init__(self) -> None:
        if not self.name.isascii():
            raise EncodeError(f"protocol name is not ASCII: {self.name[:40]!r}")
        if not 0 <= self.content_type <= 0xFF:
            raise EncodeError(f"content type {self.content_type} does not fit in a byte")
        if self.content_type <= 2 and type(self.content_type) is not ContentType:
            object.__setattr__(self, "content_type", ContentType(self.content_type))

    @classmethod
    def text(cls, name: str, text: str) -> ProtocolData:
        """An entry holding UTF-8 text (content type 1)."""
        return cls(name, ContentType.TEXT_PLAIN_UTF8, text.encode("utf-8"))


def _entries(value: tuple[ProtocolData, ...] | list[ProtocolData]) -> tuple[ProtocolData, ...]:
    entries = tuple(value)
    for entry in entries:
        if not isinstance(entry, ProtocolData):
            raise EncodeError(f"protocol data entries must be ProtocolData, got {entry!r}")
    return entries


def _check_request_id(request_id: int) -> None:
    if not 0 <= request_id <= _MAX_REQUEST_ID:
        raise EncodeError(f"request id {request_id} is not an unsigned 32-bit integer")


class _Packet:
    """What all BTP packets share: a request id and protocol data."""

    __slots__ = ()
    request_id: int
    protocol_data: tuple[ProtocolData, ...]

    def get(self, name: str) -> ProtocolData | None:
        """The first protocol-data entry called ``name``, or None."""
        for entry in self.protocol_data:
            if entry.name == name:
                return entry
        return None

    @property
    def primary(self) -> ProtocolData | None:
        """The first entry, which says what the packet is about; None if there is none."""
        return self.protocol_data[0] if self.protocol_data else None


@dataclass(frozen=True, slots=True)
class Response(_Packet):
    """Type 1: the successful reply to a Message or Transfer with the same ``request_id``."""

    request_id: int
    protocol_data: tuple[ProtocolData, ...] = ()

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        object.__setattr__(self, "protocol_data", _entries(self.protocol_data))

    def encode(self) -> bytes:
        w = Writer()
        _write_protocol_data(w, self.protocol_data)
        return _envelope(BtpType.RESPONSE, self.request_id, w.buf)


@dataclass(frozen=True, slots=True)
class Message(_Packet):
    """Type 6: a request; an ILP Prepare travels in its ``ilp`` entry."""

    request_id: int
    protocol_data: tuple[ProtocolData, ...] = ()

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        object.__setattr__(self, "protocol_data", _entries(self.protocol_data))

    def encode(self) -> bytes:
        w = Writer()
        _write_protocol_data(w, self.protocol_data)
        return _envelope(BtpType.MESSAGE, self.request_id, w.buf)


@dataclass(frozen=True, slots=True)
class Transfer(_Packet):
    """Type 7: a request moving ``amount`` (settlement); interledger-rs does not know it."""

    request_id: int
    amount: int
    protocol_data: tuple[ProtocolData, ...] = ()

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        if not 0 <= self.amount <= MAX_UINT64:
            raise EncodeError(f"amount {self.amount} is not an unsigned 64-bit integer")
        object.__setattr__(self, "protocol_data", _entries(self.protocol_data))

    def encode(self) -> bytes:
        w = Writer()
        w.write_u64(self.amount)
        _write_protocol_data(w, self.protocol_data)
        return _envelope(BtpType.TRANSFER, self.request_id, w.buf)


@dataclass(frozen=True, slots=True)
class Error(_Packet):
    """Type 2: a link-level failure answering a request (never an ILP Reject).

    ``code`` is a BTP error code such as ``F00`` (NotAcceptedError) or ``T00``
    (UnreachableError); ``data`` is up to 8192 bytes, usually UTF-8 text.
    """

    request_id: int
    code: str
    name: str
    triggered_at: datetime
    data: bytes = b""
    protocol_data: tuple[ProtocolData, ...] = ()

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        if len(self.code) != 3 or not self.code.isascii():
            raise EncodeError(f"a BTP error code is 3 ASCII characters, got {self.code!r}")
        if not self.name.isascii():
            raise EncodeError(f"BTP error name is not ASCII: {self.name[:40]!r}")
        if self.triggered_at.tzinfo is None:
            raise EncodeError("triggered_at must be timezone-aware (UTC)")
        if len(self.data) > MAX_ERROR_DATA_SIZE:
            raise EncodeError(
                f"BTP error data is {len(self.data)} bytes, over the limit of {MAX_ERROR_DATA_SIZE}"
            )
        object.__setattr__(self, "protocol_data", _entries(self.protocol_data))

    @property
    def text(self) -> str:
        """``data`` as text (JS peers put a UTF-8 message there); undecodable bytes replaced."""
        return self.data.decode("utf-8", "replace")

    def encode(self) -> bytes:
        w = Writer()
        w.write_bytes(self.code.encode("ascii"))
        w.write_ascii(self.name)
        w.write_var_octets(encode_generalized_time(self.triggered_at))
        w.write_var_octets(self.data)
        _write_protocol_data(w, self.protocol_data)
        return _envelope(BtpType.ERROR, self.request_id, w.buf)


BtpPacket = Response | Error | Message | Transfer


def _envelope(kind: BtpType, request_id: int, contents: bytearray) -> bytes:
    w = Writer()
    w.write_u8(kind)
    w.write_u32(request_id)
    w.write_var_octets(bytes(contents))
    return w.getvalue()


def _write_protocol_data(w: Writer, entries: tuple[ProtocolData, ...]) -> None:
    w.write_var_uint(len(entries))
    for entry in entries:
        w.write_ascii(entry.name)
        w.write_u8(entry.content_type)
        w.write_var_octets(entry.data)


def _read_protocol_data(r: Reader) -> tuple[ProtocolData, ...]:
    count = r.read_var_uint("protocol_data.count")
    entries: list[ProtocolData] = []
    # Never trust the declared count for an allocation: each entry needs at least 3 bytes.
    for i in range(count):
        if r.remaining < 3:
            raise DecodeError(
                f"declares {count} entries but only {i} fit in the packet",
                field="protocol_data",
                offset=r.pos,
            )
        field = f"protocol_data[{i}]"
        name = r.read_ascii(f"{field}.name")
        raw_type = r.read_u8(f"{field}.content_type")
        data = r.read_var_octets(f"{field}.data")
        content_type: int = ContentType(raw_type) if raw_type <= 2 else raw_type
        entry: ProtocolData = object.__new__(ProtocolData)
        object.__setattr__(entry, "name", name)
        object.__setattr__(entry, "content_type", content_type)
        object.__setattr__(entry, "data", data)
        entries.append(entry)
    return tuple(entries)


def _decode_error(request_id: int, r: Reader) -> Error:
    pos = r.pos
    raw_code = r.read_bytes(3, "error.code")
    if not raw_code.isascii():
        raise DecodeError(f"error code {raw_code!r} is not ASCII", field="error.code", offset=pos)
    name = r.read_ascii("error.name")
    pos = r.pos
    raw_time = r.read_var_octets("error.triggered_at")
    triggered_at = decode_generalized_time(raw_time, "error.triggered_at", pos)
    data = r.read_var_octets("error.data", MAX_ERROR_DATA_SIZE)
    protocol_data = _read_protocol_data(r)
    return Error(request_id, raw_code.decode("ascii"), name, triggered_at, data, protocol_data)


def encode_ilp_frame(kind: BtpType, request_id: int, ilp: bytes) -> bytes:
    """A Message or Response whose only protocol data is ``ilp`` (octet-stream) holding ``ilp``.

    The same bytes as ``Message(request_id, (ProtocolData("ilp", 0, ilp),)).encode()`` (or
    Response), built in one step: how every ILP packet travels.
    """
    _check_request_id(request_id)
    entry_length = encode_length(len(ilp))
    return b"".join(
        (
            _TYPE_AND_ID.pack(kind, request_id),
            encode_length(7 + len(entry_length) + len(ilp)),
            _ILP_ENTRY,
            b"\x00",  # octet-stream
            entry_length,
            ilp,
        )
    )


def _length_at(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A canonical length of at most two bytes at ``pos`` and the position after it; (-1, 0)
    for anything else (no byte there, a longer or non-canonical form)."""
    if pos >= end:
        return -1, 0
    n = data[pos]
    if n < 0x80:
        return n, pos + 1
    if n == 0x81 and pos + 1 < end:
        n = data[pos + 1]
        return (n, pos + 2) if n >= 0x80 else (-1, 0)
    if n == 0x82 and pos + 2 < end:
        n = (data[pos + 1] << 8) | data[pos + 2]
        return (n, pos + 3) if n >= 0x100 else (-1, 0)
    return -1, 0


def _ilp_layout(data: bytes) -> tuple[int, int]:
    """Where the content type and the data of the only ``ilp`` entry are (see :func:`peek_ilp`);
    (-1, -1) if the packet has another shape."""
    end = len(data)
    if end < 14 or (data[0] != 6 and data[0] != 1):  # Message, Response
        return -1, -1
    # Short lengths (under 128 bytes) inline: most packets have them.
    size = data[5]
    if size < 0x80:
        pos = 6
    else:
        size, pos = _length_at(data, 5, end)
    if pos + size != end or not data.startswith(_ILP_ENTRY, pos):
        return -1, -1
    content_type = pos + 6
    pos += 7
    if pos >= end:
        return -1, -1
    size = data[pos]
    if size < 0x80:
        pos += 1
    else:
        size, pos = _length_at(data, pos, end)
    if pos + size != end:
        return -1, -1
    return content_type, pos


def peek_ilp(data: bytes) -> tuple[int, int, bytes] | None:
    """Type, request id and ``ilp`` data of a Message or Response whose protocol data is
    exactly one entry named ``ilp`` (of any content type), as nearly every packet is.

    None for any other packet, valid or not (:func:`decode_btp` then tells which); never raises.
    Whatever it accepts, :func:`decode_btp` decodes to the same values.
    """
    start = _ilp_layout(data)[1]
    if start < 0:
        return None
    return data[0], _UNPACK_U32(data, 1)[0], data[start:]


def _decode_ilp_fast(data: bytes) -> BtpPacket | None:
    content_type, start = _ilp_layout(data)
    if start < 0:
        return None
    raw_type = data[content_type]
    entry: ProtocolData = object.__new__(ProtocolData)
    object.__setattr__(entry, "name", "ilp")
    object.__setattr__(entry, "content_type", ContentType(raw_type) if raw_type <= 2 else raw_type)
    object.__setattr__(entry, "data", data[start:])
    cls: type[Message | Response] = Message if data[0] == BtpType.MESSAGE else Response
    packet = object.__new__(cls)
    object.__setattr__(packet, "request_id", _UNPACK_U32(data, 1)[0])
    object.__setattr__(packet, "protocol_data", (entry,))
    return packet


def decode_btp(data: Buffer) -> BtpPacket:
    """Decode one BTP packet; raises only :class:`~ilp.errors.DecodeError`."""
    if type(data) is bytes:
        fast = _decode_ilp_fast(data)
        if fast is not None:
            return fast
    r = Reader(data)
    kind = r.read_u8("type")
    request_id = r.read_u32("request_id")
    contents = r.read_var_octets_reader("contents")
    r.expect_end("packet")
    packet: BtpPacket
    if kind == BtpType.MESSAGE:
        packet = Message(request_id, _read_protocol_data(contents))
    elif kind == BtpType.RESPONSE:
        packet = Response(request_id, _read_protocol_data(contents))
    elif kind == BtpType.ERROR:
        packet = _decode_error(request_id, contents)
    elif kind == BtpType.TRANSFER:
        amount = contents.read_u64("transfer.amount")
        packet = Transfer(request_id, amount, _read_protocol_data(contents))
    else:
        retired = " (a retired BTP 1.0 type)" if kind in (3, 4, 5) else ""
        raise DecodeError(
            f"unknown BTP packet type {kind}{retired}; expected 1 Response, 2 Error, "
            "6 Message or 7 Transfer",
            field="type",
            offset=0,
        )
    contents.expect_end("contents")
    return packet
