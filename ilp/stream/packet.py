"""STREAM packets and frames (RFC 29), plaintext wire format. Sans-I/O.

Wire layout::

    u8 version (1) | u8 ilp_packet_type (12/13/14) | varuint sequence | varuint prepare_amount
    | varuint frame_count | frame_count x (u8 frame_type | varoct contents) | junk (ignored)

Decoding rules (see docs/decisions.md):

* frames of unknown type are skipped and not kept; bytes after the last frame are ignored;
* a known frame whose contents are longer than its fields is accepted, the excess ignored (as
  ilp-protocol-stream does); contents that are too short or malformed fail the whole packet;
* ``StreamMaxMoney.receive_max`` and ``StreamMoneyBlocked.send_max`` saturate to 2^64-1 when larger;
  every other integer must fit in 64 bits;
* error codes outside :class:`ErrorCode` are kept as plain ints;
* ``ConnectionNewAddress.source_account`` must be a valid ILP address or empty (@interledger/pay
  sends an empty one to ask for asset details);
* text fields must be valid UTF-8 (ASCII for the address).

Constructing a frame or packet with a value that cannot be encoded raises
:class:`~ilp.errors.EncodeError`; decoding raises only :class:`~ilp.errors.DecodeError`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, TypeVar

from ..address import MAX_ADDRESS_LENGTH, is_valid_address, validate_address
from ..errors import DecodeError, EncodeError
from ..oer import MAX_UINT64, Buffer, Reader, encode_length, encode_var_uint
from ..packet import PacketType

__all__ = [
    "STREAM_VERSION",
    "ConnectionAssetDetails",
    "ConnectionClose",
    "ConnectionDataBlocked",
    "ConnectionMaxData",
    "ConnectionMaxStreamId",
    "ConnectionNewAddress",
    "ConnectionStreamIdBlocked",
    "ErrorCode",
    "Frame",
    "FrameType",
    "StreamClose",
    "StreamData",
    "StreamDataBlocked",
    "StreamMaxData",
    "StreamMaxMoney",
    "StreamMoney",
    "StreamMoneyBlocked",
    "StreamPacket",
    "StreamReceipt",
    "decode_frame",
    "encode_frame",
]

STREAM_VERSION: Final = 1

_MAX: Final = MAX_UINT64
_set = object.__setattr__


class FrameType(enum.IntEnum):
    """STREAM frame type ids."""

    CONNECTION_CLOSE = 0x01
    CONNECTION_NEW_ADDRESS = 0x02
    CONNECTION_MAX_DATA = 0x03
    CONNECTION_DATA_BLOCKED = 0x04
    CONNECTION_MAX_STREAM_ID = 0x05
    CONNECTION_STREAM_ID_BLOCKED = 0x06
    CONNECTION_ASSET_DETAILS = 0x07
    STREAM_CLOSE = 0x10
    STREAM_MONEY = 0x11
    STREAM_MAX_MONEY = 0x12
    STREAM_MONEY_BLOCKED = 0x13
    STREAM_DATA = 0x14
    STREAM_MAX_DATA = 0x15
    STREAM_DATA_BLOCKED = 0x16
    STREAM_RECEIPT = 0x17


class ErrorCode(enum.IntEnum):
    """STREAM error codes of ConnectionClose and StreamClose.

    Frames keep codes outside this list as plain ints.
    """

    NO_ERROR = 0x01
    INTERNAL_ERROR = 0x02
    ENDPOINT_BUSY = 0x03
    FLOW_CONTROL_ERROR = 0x04
    STREAM_ID_ERROR = 0x05
    STREAM_STATE_ERROR = 0x06
    FRAME_FORMAT_ERROR = 0x07
    PROTOCOL_VIOLATION = 0x08
    APPLICATION_ERROR = 0x09


_ERROR_CODES: Final[dict[int, ErrorCode]] = {int(c): c for c in ErrorCode}


# --------------------------------------------------------------------------------------------
# Validation helpers (construction time; they raise EncodeError)


def _check_u64(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0 <= value <= _MAX:
            raise EncodeError(
                f"{type(obj).__name__}.{name} = {value} is not an unsigned 64-bit integer"
            )


def _check_error_code(obj: ConnectionClose | StreamClose) -> None:
    code = obj.error_code
    if not 0 <= code <= 0xFF:
        raise EncodeError(f"{type(obj).__name__}.error_code {code} does not fit in one byte")
    _set(obj, "error_code", _ERROR_CODES.get(code, code))


def _check_bytes(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if type(value) is not bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise EncodeError(f"{type(obj).__name__}.{name} must be bytes")
        _set(obj, name, bytes(value))


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError(f"{what} cannot be encoded as UTF-8") from None


def _varoct(data: bytes) -> bytes:
    return encode_length(len(data)) + data


_vu = encode_var_uint


# --------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True, slots=True)
class ConnectionClose:
    """Close the connection (``NO_ERROR``) or report why it failed."""

    frame_type: ClassVar[FrameType] = FrameType.CONNECTION_CLOSE
    error_code: int
    error_message: str = ""

    def __post_init__(self) -> None:
        _check_error_code(self)

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        msg = _utf8(self.error_message, "ConnectionClose.error_message")
        return bytes((self.error_code,)) + encode_length(len(msg)) + msg


@dataclass(frozen=True, slots=True)
class ConnectionNewAddress:
    """The sender's ILP address (empty: "tell me your asset details", as @interledger/pay does)."""

    frame_type: ClassVar[FrameType] = FrameType.CONNECTION_NEW_ADDRESS
    source_account: str

    def __post_init__(self) -> None:
        if self.source_account:
            validate_address(self.source_account)

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _varoct(self.source_account.encode("ascii"))


@dataclass(frozen=True, slots=True)
class ConnectionMaxData:
    """Total bytes the sender of this frame can receive on the connection."""

    frame_type: ClassVar[FrameType] = FrameType.CONNECTION_MAX_DATA
    max_offset: int

    def __post_init__(self) -> None:
        if not 0 <= self.max_offset <= _MAX:
            _check_u64(self, "max_offset")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _vu(self.max_offset)


@dataclass(frozen=True, slots=True)
class ConnectionDataBlocked:
    """Total bytes the sender of this frame wants to send (informational)."""

    frame_type: ClassVar[FrameType] = FrameType.CONNECTION_DATA_BLOCKED
    max_offset: int

    def __post_init__(self) -> None:
        if not 0 <= self.max_offset <= _MAX:
            _check_u64(self, "max_offset")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _vu(self.max_offset)


@dataclass(frozen=True, slots=True)
class ConnectionMaxStreamId:
    """Highest stream id the sender of this frame accepts."""

    frame_type: ClassVar[FrameType] = FrameType.CONNECTION_MAX_STREAM_ID
    max_stream_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.max_stream_id <= _MAX:
            _check_u64(self, "max_stream_id")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _vu(self.max_stream_id)


@dataclass(frozen=True, slots=True)
class ConnectionStreamIdBlocked:
    """Stream id the sender of this frame wants to open (informational)."""

    frame_type: ClassVar[FrameType] = FrameType.CONNECTION_STREAM_ID_BLOCKED
    max_stream_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.max_stream_id <= _MAX:
            _check_u64(self, "max_stream_id")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _vu(self.max_stream_id)


@dataclass(frozen=True, slots=True)
class ConnectionAssetDetails:
    """The asset of the sender of this frame."""

    frame_type: ClassVar[FrameType] = FrameType.CONNECTION_ASSET_DETAILS
    source_asset_code: str
    source_asset_scale: int

    def __post_init__(self) -> None:
        if not 0 <= self.source_asset_scale <= 0xFF:
            raise EncodeError(
                f"ConnectionAssetDetails.source_asset_scale {self.source_asset_scale} "
                "does not fit in one byte"
            )

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        code = _utf8(self.source_asset_code, "ConnectionAssetDetails.source_asset_code")
        return encode_length(len(code)) + code + bytes((self.source_asset_scale,))


@dataclass(frozen=True, slots=True)
class StreamClose:
    """Close a stream (``NO_ERROR``) or report why it failed."""

    frame_type: ClassVar[FrameType] = FrameType.STREAM_CLOSE
    stream_id: int
    error_code: int
    error_message: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.stream_id <= _MAX:
            _check_u64(self, "stream_id")
        _check_error_code(self)

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        msg = _utf8(self.error_message, "StreamClose.error_message")
        return b"".join(
            (_vu(self.stream_id), bytes((self.error_code,)), encode_length(len(msg)), msg)
        )


@dataclass(frozen=True, slots=True)
class StreamMoney:
    """This stream's share of the Prepare amount."""

    frame_type: ClassVar[FrameType] = FrameType.STREAM_MONEY
    stream_id: int
    shares: int

    def __post_init__(self) -> None:
        if not (0 <= self.stream_id <= _MAX and 0 <= self.shares <= _MAX):
            _check_u64(self, "stream_id", "shares")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _vu(self.stream_id) + _vu(self.shares)


@dataclass(frozen=True, slots=True)
class StreamMaxMoney:
    """How much the sender of this frame will receive on the stream, and has received."""

    frame_type: ClassVar[FrameType] = FrameType.STREAM_MAX_MONEY
    stream_id: int
    receive_max: int
    total_received: int

    def __post_init__(self) -> None:
        if not (
            0 <= self.stream_id <= _MAX
            and 0 <= self.receive_max <= _MAX
            and 0 <= self.total_received <= _MAX
        ):
            _check_u64(self, "stream_id", "receive_max", "total_received")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _vu(self.stream_id) + _vu(self.receive_max) + _vu(self.total_received)


@dataclass(frozen=True, slots=True)
class StreamMoneyBlocked:
    """The sender of this frame wants to send more than the peer allows (informational)."""

    frame_type: ClassVar[FrameType] = FrameType.STREAM_MONEY_BLOCKED
    stream_id: int
    send_max: int
    total_sent: int

    def __post_init__(self) -> None:
        if not (
            0 <= self.stream_id <= _MAX
            and 0 <= self.send_max <= _MAX
            and 0 <= self.total_sent <= _MAX
        ):
            _check_u64(self, "stream_id", "send_max", "total_sent")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _vu(self.stream_id) + _vu(self.send_max) + _vu(self.total_sent)


@dataclass(frozen=True, slots=True)
class StreamData:
    """Bytes of a stream, starting at ``offset``."""

    frame_type: ClassVar[FrameType] = FrameType.STREAM_DATA
    stream_id: int
    offset: int
    data: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.stream_id <= _MAX and 0 <= self.offset <= _MAX):
            _check_u64(self, "stream_id", "offset")
        if type(self.data) is not bytes:
            _check_bytes(self, "data")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        data = self.data
        return b"".join((_vu(self.stream_id), _vu(self.offset), encode_length(len(data)), data))


@dataclass(frozen=True, slots=True)
class StreamMaxData:
    """How many bytes of the stream the sender of this frame can receive in all."""

    frame_type: ClassVar[FrameType] = FrameType.STREAM_MAX_DATA
    stream_id: int
    max_offset: int

    def __post_init__(self) -> None:
        if not (0 <= self.stream_id <= _MAX and 0 <= self.max_offset <= _MAX):
            _check_u64(self, "stream_id", "max_offset")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _vu(self.stream_id) + _vu(self.max_offset)


@dataclass(frozen=True, slots=True)
class StreamDataBlocked:
    """The sender of this frame wants to send more stream data than allowed (informational)."""

    frame_type: ClassVar[FrameType] = FrameType.STREAM_DATA_BLOCKED
    stream_id: int
    max_offset: int

    def __post_init__(self) -> None:
        if not (0 <= self.stream_id <= _MAX and 0 <= self.max_offset <= _MAX):
            _check_u64(self, "stream_id", "max_offset")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _vu(self.stream_id) + _vu(self.max_offset)


@dataclass(frozen=True, slots=True)
class StreamReceipt:
    """A receipt (RFC 39) for money received on a stream; the bytes are kept as they are."""

    frame_type: ClassVar[FrameType] = FrameType.STREAM_RECEIPT
    stream_id: int
    receipt: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.stream_id <= _MAX:
            _check_u64(self, "stream_id")
        if type(self.receipt) is not bytes:
            _check_bytes(self, "receipt")

    def encode_contents(self) -> bytes:
        """The frame contents, without type byte and length."""
        return _vu(self.stream_id) + _varoct(self.receipt)


Frame = (
    ConnectionClose
    | ConnectionNewAddress
    | ConnectionMaxData
    | ConnectionDataBlocked
    | ConnectionMaxStreamId
    | ConnectionStreamIdBlocked
    | ConnectionAssetDetails
    | StreamClose
    | StreamMoney
    | StreamMaxMoney
    | StreamMoneyBlocked
    | StreamData
    | StreamMaxData
    | StreamDataBlocked
    | StreamReceipt
)

# Type byte + short length prefix of a frame, per frame type and contents length < 128.
_FRAME_HEADS: Final[dict[int, tuple[bytes, ...]]] = {
    int(t): tuple(bytes((t, n)) for n in range(128)) for t in FrameType
}


def encode_frame(frame: Frame) -> bytes:
    """One frame as it appears in a packet: type byte, then the contents as a varoct."""
    contents = frame.encode_contents()
    return bytes((frame.frame_type,)) + encode_length(len(contents)) + contents


# --------------------------------------------------------------------------------------------
# Frame decoders. Each reads from a Reader bounded to the frame's contents.

_T = TypeVar("_T")
_new = object.__new__


def _maker(cls: type[_T]) -> Callable[..., _T]:
    """A constructor that sets the slots directly, skipping ``__post_init__``.

    Decoders use it for values they have already checked (a varuint read as u64 is in range), which
    saves the frozen-dataclass ``__init__`` and the re-validation on every decoded frame.
    """
    setters = [cls.__dict__[f.name].__set__ for f in fields(cls)]  # type: ignore[arg-type]
    if len(setters) == 1:
        (s1,) = setters

        def make1(a: Any) -> _T:
            obj: _T = _new(cls)
            s1(obj, a)
            return obj

        return make1
    if len(setters) == 2:
        s1, s2 = setters

        def make2(a: Any, b: Any) -> _T:
            obj: _T = _new(cls)
            s1(obj, a)
            s2(obj, b)
            return obj

        return make2
    if len(setters) == 3:
        s1, s2, s3 = setters

        def make3(a: Any, b: Any, c: Any) -> _T:
            obj: _T = _new(cls)
            s1(obj, a)
            s2(obj, b)
            s3(obj, c)
            return obj

        return make3
    s1, s2, s3, s4 = setters

    def make4(a: Any, b: Any, c: Any, d: Any) -> _T:
        obj: _T = _new(cls)
        s1(obj, a)
        s2(obj, b)
        s3(obj, c)
        s4(obj, d)
        return obj

    return make4


def _read_vu(r: Reader, field: str, saturate: bool = False) -> int:
    """A varuint: u64, or saturated to 2^64-1 when larger if ``saturate`` (max-money fields).

    The common canonical forms are read inline; everything else goes through the Reader, which
    raises the precise error.
    """
    data = r.data
    pos = r.pos
    end = r.end
    if pos < end:
        n = data[pos]
        if n == 1:
            if pos + 2 <= end:
                r.pos = pos + 2
                return data[pos + 1]
        elif 1 < n <= 8 and pos + 1 + n <= end and data[pos + 1]:
            r.pos = pos + 1 + n
            return int.from_bytes(data[pos + 1 : pos + 1 + n], "big")
    return r.read_var_uint_saturating(field) if saturate else r.read_var_uint(field)


_make_connection_close = _maker(ConnectionClose)
_make_connection_new_address = _maker(ConnectionNewAddress)
_make_connection_max_data = _maker(ConnectionMaxData)
_make_connection_data_blocked = _maker(ConnectionDataBlocked)
_make_connection_max_stream_id = _maker(ConnectionMaxStreamId)
_make_connection_stream_id_blocked = _maker(ConnectionStreamIdBlocked)
_make_connection_asset_details = _maker(ConnectionAssetDetails)
_make_stream_close = _maker(StreamClose)
_make_stream_money = _maker(StreamMoney)
_make_stream_max_money = _maker(StreamMaxMoney)
_make_stream_money_blocked = _maker(StreamMoneyBlocked)
_make_stream_data = _maker(StreamData)
_make_stream_max_data = _maker(StreamMaxData)
_make_stream_data_blocked = _maker(StreamDataBlocked)
_make_stream_receipt = _maker(StreamReceipt)


def _dec_connection_close(r: Reader) -> ConnectionClose:
    code = r.read_u8("ConnectionClose.error_code")
    return _make_connection_close(
        _ERROR_CODES.get(code, code), r.read_utf8("ConnectionClose.error_message")
    )


def _dec_connection_new_address(r: Reader) -> ConnectionNewAddress:
    pos = r.pos
    address = r.read_ascii("ConnectionNewAddress.source_account", MAX_ADDRESS_LENGTH)
    if address and not is_valid_address(address):
        raise DecodeError(
            f"invalid ILP address {address[:80]!r}",
            field="ConnectionNewAddress.source_account",
            offset=pos,
        )
    return _make_connection_new_address(address)


def _dec_connection_max_data(r: Reader) -> ConnectionMaxData:
    return _make_connection_max_data(_read_vu(r, "ConnectionMaxData.max_offset"))


def _dec_connection_data_blocked(r: Reader) -> ConnectionDataBlocked:
    return _make_connection_data_blocked(_read_vu(r, "ConnectionDataBlocked.max_offset"))


def _dec_connection_max_stream_id(r: Reader) -> ConnectionMaxStreamId:
    return _make_connection_max_stream_id(_read_vu(r, "ConnectionMaxStreamId.max_stream_id"))


def _dec_connection_stream_id_blocked(r: Reader) -> ConnectionStreamIdBlocked:
    return _make_connection_stream_id_blocked(
        _read_vu(r, "ConnectionStreamIdBlocked.max_stream_id")
    )


def _dec_connection_asset_details(r: Reader) -> ConnectionAssetDetails:
    code = r.read_utf8("ConnectionAssetDetails.source_asset_code")
    return _make_connection_asset_details(
        code, r.read_u8("ConnectionAssetDetails.source_asset_scale")
    )


def _dec_stream_close(r: Reader) -> StreamClose:
    stream_id = _read_vu(r, "StreamClose.stream_id")
    code = r.read_u8("StreamClose.error_code")
    return _make_stream_close(
        stream_id, _ERROR_CODES.get(code, code), r.read_utf8("StreamClose.error_message")
    )


def _dec_stream_money(r: Reader) -> StreamMoney:
    stream_id = _read_vu(r, "StreamMoney.stream_id")
    return _make_stream_money(stream_id, _read_vu(r, "StreamMoney.shares"))


def _dec_stream_max_money(r: Reader) -> StreamMaxMoney:
    stream_id = _read_vu(r, "StreamMaxMoney.stream_id")
    receive_max = _read_vu(r, "StreamMaxMoney.receive_max", True)
    return _make_stream_max_money(
        stream_id, receive_max, _read_vu(r, "StreamMaxMoney.total_received")
    )


def _dec_stream_money_blocked(r: Reader) -> StreamMoneyBlocked:
    stream_id = _read_vu(r, "StreamMoneyBlocked.stream_id")
    send_max = _read_vu(r, "StreamMoneyBlocked.send_max", True)
    return _make_stream_money_blocked(
        stream_id, send_max, _read_vu(r, "StreamMoneyBlocked.total_sent")
    )


def _dec_stream_data(r: Reader) -> StreamData:
    stream_id = _read_vu(r, "StreamData.stream_id")
    offset = _read_vu(r, "StreamData.offset")
    return _make_stream_data(stream_id, offset, r.read_var_octets("StreamData.data"))


def _dec_stream_max_data(r: Reader) -> StreamMaxData:
    stream_id = _read_vu(r, "StreamMaxData.stream_id")
    return _make_stream_max_data(stream_id, _read_vu(r, "StreamMaxData.max_offset"))


def _dec_stream_data_blocked(r: Reader) -> StreamDataBlocked:
    stream_id = _read_vu(r, "StreamDataBlocked.stream_id")
    return _make_stream_data_blocked(stream_id, _read_vu(r, "StreamDataBlocked.max_offset"))


def _dec_stream_receipt(r: Reader) -> StreamReceipt:
    stream_id = _read_vu(r, "StreamReceipt.stream_id")
    return _make_stream_receipt(stream_id, r.read_var_octets("StreamReceipt.receipt"))


_FRAME_DECODERS: Final[dict[int, Callable[[Reader], Frame]]] = {
    FrameType.CONNECTION_CLOSE: _dec_connection_close,
    FrameType.CONNECTION_NEW_ADDRESS: _dec_connection_new_address,
    FrameType.CONNECTION_MAX_DATA: _dec_connection_max_data,
    FrameType.CONNECTION_DATA_BLOCKED: _dec_connection_data_blocked,
    FrameType.CONNECTION_MAX_STREAM_ID: _dec_connection_max_stream_id,
    FrameType.CONNECTION_STREAM_ID_BLOCKED: _dec_connection_stream_id_blocked,
    FrameType.CONNECTION_ASSET_DETAILS: _dec_connection_asset_details,
    FrameType.STREAM_CLOSE: _dec_stream_close,
    FrameType.STREAM_MONEY: _dec_stream_money,
    FrameType.STREAM_MAX_MONEY: _dec_stream_max_money,
    FrameType.STREAM_MONEY_BLOCKED: _dec_stream_money_blocked,
    FrameType.STREAM_DATA: _dec_stream_data,
    FrameType.STREAM_MAX_DATA: _dec_stream_max_data,
    FrameType.STREAM_DATA_BLOCKED: _dec_stream_data_blocked,
    FrameType.STREAM_RECEIPT: _dec_stream_receipt,
}


def decode_frame(frame_type: int, contents: Buffer) -> Frame | None:
    """Decode one frame from its type and contents; ``None`` for an unknown type.

    Bytes after the frame's last field are ignored, as in a packet.
    """
    decoder = _FRAME_DECODERS.get(frame_type)
    if decoder is None:
        return None
    return decoder(Reader(contents))


# --------------------------------------------------------------------------------------------
# Packet

_PACKET_TYPES: Final[dict[int, PacketType]] = {int(t): t for t in PacketType}
_HEADERS: Final[dict[int, bytes]] = {int(t): bytes((STREAM_VERSION, t)) for t in PacketType}


@dataclass(frozen=True, slots=True)
class StreamPacket:
    """A plaintext STREAM packet: the frames one endpoint sends inside one ILP packet.

    ``ilp_packet_type`` is the ILP packet this STREAM packet must travel in. ``prepare_amount`` is,
    in a Prepare, the least amount the receiver should accept and, in a Fulfill or Reject, the
    amount that arrived.
    """

    sequence: int
    ilp_packet_type: PacketType
    prepare_amount: int
    frames: tuple[Frame, ...] = ()

    def __post_init__(self) -> None:
        if not (0 <= self.sequence <= _MAX and 0 <= self.prepare_amount <= _MAX):
            _check_u64(self, "sequence", "prepare_amount")
        kind = _PACKET_TYPES.get(self.ilp_packet_type)
        if kind is None:
            raise EncodeError(
                f"StreamPacket.ilp_packet_type {self.ilp_packet_type!r} is not 12, 13 or 14"
            )
        _set(self, "ilp_packet_type", kind)
        if type(self.frames) is not tuple:
            _set(self, "frames", tuple(self.frames))

    def encode(self) -> bytes:
        """The plaintext packet bytes (no padding)."""
        frames = self.frames
        parts = [
            _HEADERS[self.ilp_packet_type],
            _vu(self.sequence),
            _vu(self.prepare_amount),
            _vu(len(frames)),
        ]
        append = parts.append
        heads = _FRAME_HEADS
        for frame in frames:
            contents = frame.encode_contents()
            n = len(contents)
            if n < 128:
                append(heads[frame.frame_type][n])
            else:
                append(bytes((frame.frame_type,)) + encode_length(n))
            append(contents)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: Buffer) -> StreamPacket:
        """Decode a plaintext STREAM packet; raises only :class:`~ilp.errors.DecodeError`."""
        r = Reader(data)
        buf = r.data
        kind = _PACKET_TYPES.get(buf[1]) if len(buf) >= 2 and buf[0] == STREAM_VERSION else None
        if kind is None:
            version = r.read_u8("stream.version")
            if version != STREAM_VERSION:
                raise DecodeError(
                    f"unsupported STREAM version {version} (expected 1)",
                    field="stream.version",
                    offset=0,
                )
            raw_type = r.read_u8("stream.ilp_packet_type")
            raise DecodeError(
                f"ILP packet type {raw_type} is not 12, 13 or 14",
                field="stream.ilp_packet_type",
                offset=1,
            )
        r.pos = 2
        sequence = _read_vu(r, "stream.sequence")
        amount = _read_vu(r, "stream.prepare_amount")
        count = _read_vu(r, "stream.frame_count")
        frames: list[Frame] = []
        append = frames.append
        decoders = _FRAME_DECODERS
        end = r.end
        # A declared count is never trusted for allocation: each frame takes at least two bytes,
        # so a short buffer fails long before a large count is reached.
        for _ in range(count):
            pos = r.pos
            if pos + 2 <= end and buf[pos + 1] < 0x80:
                frame_type = buf[pos]
                start = pos + 2
                stop = start + buf[pos + 1]
            else:
                frame_type = r.read_u8("stream.frame.type")
                length = r.read_length("stream.frame.contents")
                start = r.pos
                stop = start + length
            if stop > end:
                raise DecodeError(
                    f"truncated: frame contents need {stop - start} bytes, {end - start} left",
                    field="stream.frame.contents",
                    offset=pos + 1,
                )
            decoder = decoders.get(frame_type)
            if decoder is not None:
                r.pos = start
                r.end = stop
                append(decoder(r))
                r.end = end
            r.pos = stop
        return _make_packet(sequence, kind, amount, tuple(frames))


_make_packet = _maker(StreamPacket)
