"""The few pieces of Canonical OER that Interledger uses (RFC 30), sans-I/O.

:class:`Reader` walks a buffer with an offset and raises :class:`~ilp.errors.DecodeError` naming the
field and the byte offset for anything malformed; :class:`Writer` appends to a ``bytearray`` and
raises :class:`~ilp.errors.EncodeError` for values that cannot be encoded.

Decoding is strict: length determinants and variable-length integers must be canonical (shortest
form), fixed-size fields must be complete. Encoding is always canonical.

Module-level helpers (``encode_var_uint``, ``decode_var_uint``, ``encode_length``, ...) encode or
decode one value on its own, for tests and tools.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

from .errors import DecodeError, EncodeError

__all__ = [
    "MAX_UINT64",
    "Reader",
    "Writer",
    "decode_generalized_time",
    "decode_ilp_timestamp",
    "decode_length",
    "decode_uint",
    "decode_var_octets",
    "decode_var_uint",
    "encode_generalized_time",
    "encode_ilp_timestamp",
    "encode_length",
    "encode_uint",
    "encode_var_octets",
    "encode_var_uint",
]

MAX_UINT64 = (1 << 64) - 1

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_UNPACK_U16 = _U16.unpack_from
_UNPACK_U32 = _U32.unpack_from
_UNPACK_U64 = _U64.unpack_from

Buffer = bytes | bytearray | memoryview

# Length prefixes for the common short lengths, built once.
_SHORT_LENGTHS = [bytes((n,)) for n in range(128)]
_SMALL_VAR_UINTS = [bytes((1, n)) for n in range(256)]


def encode_length(n: int) -> bytes:
    """Canonical OER length determinant for ``n`` (short form up to 127)."""
    if n < 128:
        if n < 0:
            raise EncodeError(f"length cannot be negative: {n}")
        return _SHORT_LENGTHS[n]
    size = (n.bit_length() + 7) // 8
    if size > 127:
        raise EncodeError(f"length too large to encode: {n}")
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def encode_var_uint(n: int) -> bytes:
    """Canonical OER variable-length unsigned integer: minimal bytes, at least one."""
    if n < 0:
        raise EncodeError(f"variable-length unsigned integer cannot be negative: {n}")
    if n < 256:
        return _SMALL_VAR_UINTS[n]
    size = (n.bit_length() + 7) // 8
    if size < 128:
        # The one-byte length in front, in the same to_bytes call.
        return ((size << (size << 3)) | n).to_bytes(size + 1, "big")
    return encode_length(size) + n.to_bytes(size, "big")


def encode_var_octets(data: bytes) -> bytes:
    """A length determinant followed by ``data``."""
    return encode_length(len(data)) + data


def encode_uint(n: int, size: int) -> bytes:
    """A fixed-size big-endian unsigned integer of ``size`` bytes."""
    if n < 0 or n.bit_length() > size * 8:
        raise EncodeError(f"{n} does not fit in an unsigned {size * 8}-bit integer")
    return n.to_bytes(size, "big")


class Reader:
    """Reads OER fields from a buffer, front to back.

    Offsets in errors are relative to the start of the buffer given to the outermost reader, so a
    message says where in the packet the problem is. ``end`` bounds a reader to a nested field.
    """

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: Buffer, pos: int = 0, end: int | None = None) -> None:
        if not isinstance(data, bytes):
            data = bytes(data)
        self.data: bytes = data
        self.pos = pos
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int, field: str) -> int:
        pos = self.pos
        if pos + n > self.end:
            raise DecodeError(
                f"truncated: needs {n} byte{'s' if n != 1 else ''}, {self.end - pos} left",
                field=field,
                offset=pos,
            )
        self.pos = pos + n
        return pos

    def read_u8(self, field: str) -> int:
        pos = self._need(1, field)
        return self.data[pos]

    def read_u16(self, field: str) -> int:
        pos = self._need(2, field)
        return int(_UNPACK_U16(self.data, pos)[0])

    def read_u32(self, field: str) -> int:
        pos = self._need(4, field)
        return int(_UNPACK_U32(self.data, pos)[0])

    def read_u64(self, field: str) -> int:
        pos = self._need(8, field)
        return int(_UNPACK_U64(self.data, pos)[0])

    def read_bytes(self, n: int, field: str) -> bytes:
        pos = self._need(n, field)
        return self.data[pos : pos + n]

    def read_length(self, field: str) -> int:
        """A canonical length determinant."""
        start = self.pos
        first = self.read_u8(field)
        if first < 0x80:
            return first
        n = first & 0x7F
        if n == 0:
            raise DecodeError("indefinite length (0x80) is not allowed", field=field, offset=start)
        if n > 8:
            raise DecodeError(
                f"length determinant of {n} bytes is too long", field=field, offset=start
            )
        pos = self._need(n, field)
        raw = self.data[pos : pos + n]
        value = int.from_bytes(raw, "big")
        if raw[0] == 0 or value < 0x80:
            raise DecodeError(
                f"length {value} is not canonically encoded ({n}-byte long form)",
                field=field,
                offset=start,
            )
        return value

    def read_var_octets(self, field: str, max_size: int | None = None) -> bytes:
        """A length-prefixed octet string."""
        start = self.pos
        n = self.read_length(field)
        if max_size is not None and n > max_size:
            raise DecodeError(
                f"{n} bytes is over the limit of {max_size}", field=field, offset=start
            )
        pos = self._need(n, field)
        return self.data[pos : pos + n]

    def read_var_octets_reader(self, field: str) -> Reader:
        """A length-prefixed octet string, as a reader bounded to its contents (no copy)."""
        n = self.read_length(field)
        pos = self._need(n, field)
        return Reader(self.data, pos, pos + n)

    def _read_var_uint_raw(self, field: str) -> tuple[int, int, int]:
        start = self.pos
        n = self.read_length(field)
        if n == 0:
            raise DecodeError("variable-length integer of length 0", field=field, offset=start)
        pos = self._need(n, field)
        data = self.data
        if n > 1 and data[pos] == 0:
            raise DecodeError(
                "variable-length integer has a leading zero byte (not canonical)",
                field=field,
                offset=start,
            )
        return int.from_bytes(data[pos : pos + n], "big"), n, start

    def read_var_uint(self, field: str) -> int:
        """A canonical variable-length unsigned integer that must fit in 64 bits."""
        value, n, start = self._read_var_uint_raw(field)
        if n > 8:
            raise DecodeError(
                f"integer of {n} bytes exceeds the 64-bit maximum", field=field, offset=start
            )
        return value

    def read_var_uint_big(self, field: str) -> int:
        """A canonical variable-length unsigned integer of any size."""
        return self._read_var_uint_raw(field)[0]

    def read_var_uint_saturating(self, field: str) -> int:
        """A variable-length unsigned integer, saturated to 2^64-1 when larger (STREAM max-money)."""
        value = self._read_var_uint_raw(field)[0]
        return MAX_UINT64 if value > MAX_UINT64 else value

    def read_ascii(self, field: str, max_size: int | None = None) -> str:
        start = self.pos
        raw = self.read_var_octets(field, max_size)
        if not raw.isascii():
            raise DecodeError("text is not ASCII", field=field, offset=start)
        return raw.decode("ascii")

    def read_utf8(self, field: str, max_size: int | None = None) -> str:
        start = self.pos
        raw = self.read_var_octets(field, max_size)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"text is not valid UTF-8 (byte {exc.start} of the string)",
                field=field,
                offset=start,
            ) from None

    def expect_end(self, field: str) -> None:
        if self.pos != self.end:
            raise DecodeError(
                f"{self.end - self.pos} unexpected trailing byte(s)", field=field, offset=self.pos
            )


class Writer:
    """Appends OER fields to a ``bytearray``."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self.buf)

    def write_u8(self, n: int) -> None:
        if not 0 <= n <= 0xFF:
            raise EncodeError(f"{n} does not fit in an unsigned 8-bit integer")
        self.buf.append(n)

    def write_u16(self, n: int) -> None:
        if not 0 <= n <= 0xFFFF:
            raise EncodeError(f"{n} does not fit in an unsigned 16-bit integer")
        self.buf += _U16.pack(n)

    def write_u32(self, n: int) -> None:
        if not 0 <= n <= 0xFFFFFFFF:
            raise EncodeError(f"{n} does not fit in an unsigned 32-bit integer")
        self.buf += _U32.pack(n)

    def write_u64(self, n: int) -> None:
        if not 0 <= n <= MAX_UINT64:
            raise EncodeError(f"{n} does not fit in an unsigned 64-bit integer")
        self.buf += _U64.pack(n)

    def write_bytes(self, data: bytes) -> None:
        self.buf += data

    def write_length(self, n: int) -> None:
        self.buf += encode_length(n)

    def write_var_octets(self, data: bytes) -> None:
        self.buf += encode_length(len(data))
        self.buf += data

    def write_var_uint(self, n: int) -> None:
        """A variable-length unsigned integer, checked to fit in 64 bits."""
        if n > MAX_UINT64:
            raise EncodeError(f"{n} does not fit in an unsigned 64-bit integer")
        self.buf += encode_var_uint(n)

    def write_ascii(self, text: str) -> None:
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise EncodeError(f"text is not ASCII: {text!r}") from None
        self.write_var_octets(raw)

    def write_utf8(self, text: str) -> None:
        self.write_var_octets(text.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Standalone helpers


def _whole(data: Buffer, field: str, read: str) -> int | bytes:
    reader = Reader(data)
    value: int | bytes = getattr(reader, read)(field)
    reader.expect_end(field)
    return value


def decode_length(data: Buffer) -> int:
    """Decode a buffer holding exactly one length determinant."""
    value = _whole(data, "length", "read_length")
    assert isinstance(value, int)
    return value


def decode_var_uint(data: Buffer, *, max_bytes: int | None = 8) -> int:
    """Decode a buffer holding exactly one variable-length unsigned integer.

    With ``max_bytes=None`` integers of any size are accepted.
    """
    value = _whole(data, "var_uint", "read_var_uint" if max_bytes == 8 else "read_var_uint_big")
    assert isinstance(value, int)
    if max_bytes is not None and value.bit_length() > max_bytes * 8:
        raise DecodeError(f"integer exceeds {max_bytes} bytes", field="var_uint", offset=0)
    return value


def decode_var_octets(data: Buffer) -> bytes:
    """Decode a buffer holding exactly one variable-length octet string."""
    value = _whole(data, "var_octets", "read_var_octets")
    assert isinstance(value, bytes)
    return value


def decode_uint(data: Buffer, size: int) -> int:
    """Decode a buffer holding exactly one fixed-size unsigned integer of ``size`` bytes."""
    if len(data) != size:
        raise DecodeError(f"expected {size} bytes, got {len(data)}", field="uint", offset=0)
    return int.from_bytes(data, "big")


# --------------------------------------------------------------------------------------------
# Time

_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_fromisoformat = datetime.fromisoformat


def _check_fields(year: int, month: int, day: int, hour: int, minute: int, second: int) -> str:
    if not 1 <= month <= 12:
        return "month out of range"
    if not 1 <= day <= _DAYS[month]:
        return "day out of range"
    if hour > 23:
        return "hour out of range (midnight is 00 of the next day)"
    if minute > 59:
        return "minute out of range"
    if second > 59:
        return "second out of range (leap seconds are smeared, 60 is invalid)"
    if year == 0:
        return "year 0000 is out of range"
    return ""


def decode_ilp_timestamp(raw: bytes, field: str = "timestamp", offset: int = 0) -> datetime:
    """Decode ILP's fixed 17-digit ``YYYYMMDDHHmmSSfff`` UTC timestamp."""
    if len(raw) != 17 or not raw.isdigit():
        raise DecodeError(
            f"timestamp must be 17 ASCII digits YYYYMMDDHHmmSSfff, got {bytes(raw)!r}",
            field=field,
            offset=offset,
        )
    text = raw.decode("ascii")
    try:
        # The digits are checked above, so this parses exactly YYYYMMDD T HHmmSS . fff, and
        # datetime checks every range (month 13, hour 24, second 60, 29 February...).
        return _fromisoformat(f"{text[0:8]}T{text[8:14]}.{text[14:17]}+00:00")
    except ValueError as exc:
        problem = _check_fields(
            int(raw[0:4]),
            int(raw[4:6]),
            int(raw[6:8]),
            int(raw[8:10]),
            int(raw[10:12]),
            int(raw[12:14]),
        ) or str(exc)
    raise DecodeError(f"invalid timestamp {raw.decode()}: {problem}", field=field, offset=offset)


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise EncodeError("timestamps must be timezone-aware (use datetime.now(UTC))")
    return dt.astimezone(UTC) if dt.utcoffset() else dt


def encode_ilp_timestamp(dt: datetime) -> bytes:
    """Encode a timezone-aware datetime as ILP's 17-digit timestamp (sub-milliseconds dropped)."""
    dt = _utc(dt)
    return b"%04d%02d%02d%02d%02d%02d%03d" % (
        dt.year,
        dt.month,
        dt.day,
        dt.hour,
        dt.minute,
        dt.second,
        dt.microsecond // 1000,
    )


def decode_generalized_time(
    raw: bytes, field: str = "generalized_time", offset: int = 0
) -> datetime:
    """Decode ``YYYYMMDDHHmmSS[.f{1,3}]Z`` (the text, without its length prefix).

    Lenient where implementations differ: 1 to 3 fraction digits, trailing zeros allowed
    (interledger-rs accepts ``...00.20Z``, which RFC 30 calls invalid).
    """

    def bad(why: str) -> DecodeError:
        return DecodeError(
            f"invalid GeneralizedTime {bytes(raw)!r}: {why}", field=field, offset=offset
        )

    if len(raw) < 15 or not raw.endswith(b"Z"):
        raise bad("expected YYYYMMDDHHmmSS[.fff]Z")
    digits = raw[:14]
    if not digits.isdigit() or not digits.isascii():
        raise bad("expected YYYYMMDDHHmmSS[.fff]Z")
    frac = raw[14:-1]
    millis = 0
    if frac:
        if frac[:1] != b"." or not 2 <= len(frac) <= 4 or not frac[1:].isdigit():
            raise bad("the fraction must be '.' and 1 to 3 digits")
        millis = int(frac[1:].ljust(3, b"0"))
    year, month, day = int(digits[0:4]), int(digits[4:6]), int(digits[6:8])
    hour, minute, second = int(digits[8:10]), int(digits[10:12]), int(digits[12:14])
    leap = second == 60
    problem = _check_fields(year, month, day, hour, minute, 59 if leap else second)
    if problem:
        raise bad(problem)
    try:
        dt = datetime(
            year, month, day, hour, minute, 59 if leap else second, millis * 1000, tzinfo=UTC
        )
    except ValueError as exc:
        raise bad(str(exc)) from None
    # RFC 30 allows a leap second; datetime cannot hold one, so it becomes the next second.
    return dt + timedelta(seconds=1) if leap else dt


def encode_generalized_time(dt: datetime, *, fixed_millis: bool = True) -> bytes:
    """Encode as GeneralizedTime text (without length prefix).

    ``fixed_millis=True`` (the default) always writes three fraction digits, as btp-packet does
    (``20170828183200.000Z``); ``False`` writes RFC 30's canonical form, trailing zeros and a zero
    fraction removed (``20171224161432.2Z``, ``20171225000000Z``).
    """
    dt = _utc(dt)
    head = b"%04d%02d%02d%02d%02d%02d" % (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    millis = dt.microsecond // 1000
    if fixed_millis:
        return head + b".%03dZ" % millis
    if millis == 0:
        return head + b"Z"
    return head + b"." + (b"%03d" % millis).rstrip(b"0") + b"Z"
