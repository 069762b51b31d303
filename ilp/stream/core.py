"""The STREAM connection state machine (RFC 29), sans-I/O: frames in, frames out, explicit ``now``.

One :class:`ConnectionCore` is one end of a connection, client or server. It never touches a link,
the clock or randomness (random conditions come in as arguments; STREAM packet IVs are the one
documented exception of :mod:`ilp.stream.crypto`). The trio layer (:mod:`ilp.stream.connection`)
drives it:

* an incoming Prepare goes to :meth:`ConnectionCore.handle_prepare`, which answers a Fulfill or a
  Reject at once, or an :class:`IncomingMoney` to settle with :meth:`ConnectionCore.fulfill` or
  :meth:`ConnectionCore.decline` once the application has had its say;
* :meth:`ConnectionCore.next_packet` builds the next Prepare to send (money, data, flow-control
  updates, closes) and :meth:`ConnectionCore.handle_reply` takes its Fulfill or Reject;
* the application side writes and reads stream data, adds money to send and closes streams with the
  methods in between; state is read from the attributes.

Rules this core keeps (SPEC §9):

* streams: client ids odd, server ids even; a wrong parity closes the connection with
  ``PROTOCOL_VIOLATION``, an id above our ``ConnectionMaxStreamId`` with ``STREAM_ID_ERROR``;
* money: the Prepare amount is split by shares, floor per stream, the remainder to the
  lowest-numbered stream of the packet that can still receive (RFC 29 §5.3.8, unlike
  ilp-protocol-stream which drops it); a stream receives up to its ``receive_max`` plus 1 %,
  as ilp-protocol-stream allows for senders rounding up;
* data: offsets are reassembled in order; duplicates are dropped; bytes beyond the advertised stream
  or connection window close the connection with ``FLOW_CONTROL_ERROR``;
* half-open streams (RFC 29 §5.3.7): a peer's ``StreamClose`` ends its direction only; our side may
  still send until we close. Frames for a stream we closed completely are answered F99 with a
  ``StreamClose(STREAM_STATE_ERROR)``;
* asset details never change: a contradicting ``ConnectionAssetDetails`` is a ``PROTOCOL_VIOLATION``;
* at most 2^31 packets each way, then the connection closes;
* the receiver rejects undecryptable data with F06, and everything else it refuses with F99 carrying
  an encrypted STREAM reply (same sequence, the amount that arrived, frames saying why).

The server-side connection tokens (:class:`ConnectionTokens`) live here too: they are pure crypto.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..address import validate_address
from ..errors import DecodeError, EncodeError, StreamError
from ..oer import MAX_UINT64, Reader, encode_length
from ..packet import MAX_DATA_SIZE, Fulfill, PacketType, Prepare, Reject
from ..packet import ErrorCode as IlpErrorCode
from .crypto import ENCRYPTION_OVERHEAD, StreamCrypto, decrypt_envelope, encrypt_envelope
from .packet import (
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionDataBlocked,
    ConnectionMaxData,
    ConnectionMaxStreamId,
    ConnectionNewAddress,
    ConnectionStreamIdBlocked,
    ErrorCode,
    Frame,
    StreamClose,
    StreamData,
    StreamDataBlocked,
    StreamMaxData,
    StreamMaxMoney,
    StreamMoney,
    StreamMoneyBlocked,
    StreamPacket,
    StreamReceipt,
)
from .receipt import Receipt

__all__ = [
    "DEFAULT_CONNECTION_WINDOW",
    "DEFAULT_MAX_REMOTE_STREAMS",
    "DEFAULT_SEND_BUFFER",
    "DEFAULT_STREAM_WINDOW",
    "MAX_PACKETS",
    "MAX_PLAINTEXT",
    "CloseReason",
    "ConnectionCore",
    "ConnectionTokens",
    "IncomingMoney",
    "OutgoingPacket",
    "ReplyKind",
    "ReplyResult",
    "StreamState",
    "TokenParameters",
    "split_amount",
]

MAX_PACKETS: Final = 1 << 31
"""Packets one endpoint may send on a connection (RFC 29 §5.1.3)."""

MAX_PLAINTEXT: Final = MAX_DATA_SIZE - ENCRYPTION_OVERHEAD
"""Largest STREAM packet that fits, encrypted, in an ILP packet's data (32739 bytes)."""

DEFAULT_MAX_REMOTE_STREAMS: Final = 10
DEFAULT_STREAM_WINDOW: Final = 65536
DEFAULT_CONNECTION_WINDOW: Final = 131072
DEFAULT_SEND_BUFFER: Final = 65536

# What ilp-protocol-stream advertises until it says otherwise: we assume the same of any peer.
_ASSUMED_REMOTE_STREAM_WINDOW: Final = 16384
_ASSUMED_REMOTE_CONNECTION_WINDOW: Final = 2 * 32767
_DEFAULT_REMOTE_MAX_STREAM_ID: Final = 2 * DEFAULT_MAX_REMOTE_STREAMS

# Bytes a StreamData frame needs besides its data: type, length, id, offset, data length.
_DATA_FRAME_OVERHEAD: Final = 1 + 3 + 9 + 9 + 3
# Room kept for the frame count growing and the packet's own fields.
_PACKET_SLACK: Final = 16
# Replies with at most this many frames fit without measuring: every frame we put in a reply is
# under 100 bytes (our own short messages, receipts of 58 bytes), 200 of them under 32739.
_FIT_WITHOUT_CHECK: Final = 200

# A stream receives up to its receive_max plus 1 % (_TOLERANCE_NUM / _TOLERANCE_DEN).
_TOLERANCE_NUM: Final = 101
_TOLERANCE_DEN: Final = 100

# Frames naming a stream that may open it, and those of them a closed stream refuses.
# (Tuples: an ``A | B`` union in isinstance is built anew on every call.)
_STREAM_ID_FRAMES: Final = (StreamMoney, StreamData, StreamMaxMoney, StreamMaxData)
_MONEY_OR_DATA: Final = (StreamMoney, StreamData)

_F06: Final = IlpErrorCode("F06")
_F99: Final = IlpErrorCode("F99")

_sha256 = hashlib.sha256
_hmac_digest = hmac.digest


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error code {code}"


# --------------------------------------------------------------------------------------------
# Results and events


@dataclass(frozen=True, slots=True)
class CloseReason:
    """Why a connection (or one direction of a stream) closed."""

    code: int
    message: str
    by_remote: bool

    def describe(self) -> str:
        """Human-readable: who closed and why."""
        who = "the peer" if self.by_remote else "this endpoint"
        text = f": {self.message}" if self.message else ""
        if self.code == ErrorCode.NO_ERROR:
            return f"closed by {who}{text}"
        return f"closed by {who} with {_error_name(self.code)}{text}"


@dataclass(slots=True)
class IncomingMoney:
    """A fulfillable Prepare carrying money, waiting for the application's decision.

    ``amounts`` maps stream id to the part of the Prepare amount that stream gets. The amounts are
    held against the streams' limits until :meth:`ConnectionCore.fulfill` or
    :meth:`ConnectionCore.decline` settles them; settle each exactly once.
    """

    sequence: int
    amount: int
    amounts: dict[int, int]
    fulfillment: bytes
    _reply_frames: list[Frame]
    settled: bool = False


@dataclass(frozen=True, slots=True)
class OutgoingPacket:
    """A Prepare to send: the link layer adds destination and expiry.

    ``amount`` is the source amount; ``minimum_destination_amount`` is what the STREAM packet asks
    the receiver to accept at least. ``data`` is the encrypted STREAM packet, ``condition`` the
    execution condition (random for a probe).
    """

    sequence: int
    amount: int
    minimum_destination_amount: int
    data: bytes
    condition: bytes
    fulfillable: bool


class ReplyKind(enum.Enum):
    """What the reply to one of our Prepares means for the sender."""

    FULFILLED = "fulfilled"
    REJECTED = "rejected"
    """The receiver rejected it (F99 with a STREAM reply): see the reply's frames."""
    AMOUNT_TOO_LARGE = "amount_too_large"
    """F08 on the path: ``max_packet_amount`` was lowered."""
    TEMPORARY = "temporary"
    """A T error, or R00/R02: try again later."""
    FINAL = "final"
    """Any other error: the connection is closed."""


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """The outcome of one of our Prepares.

    ``delivered`` is the amount the receiver says arrived (from its STREAM reply), if it sent one.
    ``stream_reply`` is that decrypted reply.
    """

    kind: ReplyKind
    reply: Fulfill | Reject
    sequence: int
    amount: int
    delivered: int | None
    stream_reply: StreamPacket | None


def _fit(packet: StreamPacket) -> StreamPacket:
    """``packet`` without its last frames if it would not fit in an ILP packet (a reply listing
    many refused streams); a ``ConnectionClose`` is kept."""
    if len(packet.frames) <= _FIT_WITHOUT_CHECK:
        return packet  # our reply frames are small: these always fit
    size = len(packet.encode())
    if size <= MAX_PLAINTEXT:
        return packet
    frames = list(packet.frames)
    close = [f for f in frames if isinstance(f, ConnectionClose)]
    kept: list[Frame] = []
    budget = MAX_PLAINTEXT - 64 - sum(len(c.encode_contents()) + 4 for c in close)
    for f in frames:
        if isinstance(f, ConnectionClose):
            continue
        n = len(f.encode_contents()) + 4
        if n > budget:
            break
        kept.append(f)
        budget -= n
    return StreamPacket(
        packet.sequence, packet.ilp_packet_type, packet.prepare_amount, (*kept, *close)
    )


# --------------------------------------------------------------------------------------------
# Money split


def split_amount(amount: int, shares: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Split ``amount`` over ``(stream_id, shares)`` pairs: floor per stream, remainder unassigned.

    Shares of one stream id appearing twice add up. Returns stream id → amount; the caller gives
    the remainder (``amount - sum``) to whichever stream the RFC's rule picks.
    """
    merged: dict[int, int] = {}
    for stream_id, share in shares:
        merged[stream_id] = merged.get(stream_id, 0) + share
    total = sum(merged.values())
    if total == 0:
        return dict.fromkeys(merged, 0)
    return {sid: amount * share // total for sid, share in merged.items()}


# --------------------------------------------------------------------------------------------
# Streams


class _Send(enum.IntEnum):
    OPEN = 0
    EOF = 1  # the application is done; close once everything was delivered
    CLOSING = 2  # StreamClose in flight
    CLOSED = 3  # StreamClose delivered (or the connection closed)
    BROKEN = 4  # the peer refused the stream, or it was aborted


class StreamState:
    """The state of one stream, as the core keeps it. Read-only for users of the core.

    Money in the receiver's units: ``receive_max``, ``total_received``. Money in ours:
    ``send_max`` (the total the application wants sent), ``total_sent`` (fulfilled), ``held`` (in
    flight). ``total_delivered`` is what the receiver reported for our money (its units).
    """

    __slots__ = (
        "_close_code",
        "_close_message",
        "_inflight_bytes",
        "_inflight_dest",
        "_ooo",
        "_ooo_bytes",
        "adv_dirty",
        "advertised_max_offset",
        "advertised_receive_max",
        "blocked_data_reported",
        "blocked_money_reported",
        "broken_reason",
        "conn_counted_end",
        "held",
        "id",
        "incoming_held",
        "inflight_packets",
        "limit_released",
        "money_error",
        "read_closed",
        "read_offset",
        "receipt",
        "receive_max",
        "recv_buf",
        "recv_end",
        "remote_closed",
        "remote_error",
        "remote_max_offset",
        "remote_receive_max",
        "remote_received",
        "retry",
        "send_buf",
        "send_max",
        "send_next",
        "send_state",
        "total_delivered",
        "total_received",
        "total_sent",
        "window",
    )

    def __init__(self, stream_id: int, *, receive_max: int, window: int) -> None:
        self.id = stream_id
        # Money in.
        self.receive_max = receive_max
        self.total_received = 0
        self.incoming_held = 0
        self.advertised_receive_max = -1
        # Money out.
        self.send_max = 0
        self.total_sent = 0
        self.held = 0
        self.total_delivered = 0
        self._inflight_dest = 0  # estimated destination amount of our held money
        self._inflight_bytes = 0
        self.remote_receive_max: int | None = None
        self.remote_received = 0
        self.money_error: str | None = None
        self.receipt: bytes | None = None
        # Data in.
        self.recv_buf = bytearray()
        self.read_offset = 0  # bytes the application consumed
        self.recv_end = 0  # end of the contiguous bytes received
        self._ooo: dict[int, bytes] = {}
        self._ooo_bytes = 0
        self.conn_counted_end = 0  # highest end offset counted against the connection window
        self.window = window
        self.advertised_max_offset = window
        self.adv_dirty = False
        self.remote_closed = False  # the peer closed its direction (EOF after the buffer)
        self.remote_error: CloseReason | None = None
        self.read_closed = False  # the application closed the stream: incoming data is refused
        # Data out.
        self.send_buf = bytearray()
        self.send_next = 0  # stream offset of send_buf[0]
        self.retry: list[tuple[int, bytes]] = []
        self.inflight_packets = 0
        self.limit_released = False  # a peer's stream: its slot was given back (+2 max id)
        self.remote_max_offset = _ASSUMED_REMOTE_STREAM_WINDOW
        self.blocked_data_reported = -1
        self.blocked_money_reported = -1
        # Closing.
        self.send_state = _Send.OPEN
        self._close_code: int = ErrorCode.NO_ERROR
        self._close_message = ""
        self.broken_reason: str | None = None

    def __repr__(self) -> str:
        return f"<StreamState {self.id} {self.send_state.name}>"

    # -- views -----------------------------------------------------------------------------

    @property
    def max_offset(self) -> int:
        """The byte offset up to which we accept data on this stream."""
        return self.read_offset + self.window

    @property
    def readable(self) -> int:
        """Bytes waiting for the application."""
        return len(self.recv_buf)

    @property
    def at_eof(self) -> bool:
        """The peer closed its direction and every byte it sent was read."""
        return self.remote_closed and not self.recv_buf and not self._ooo

    @property
    def can_send(self) -> bool:
        """The application may still write data or add money."""
        return self.send_state == _Send.OPEN

    @property
    def send_closed(self) -> bool:
        """Our direction is finished: closed, or broken."""
        return self.send_state in (_Send.CLOSED, _Send.BROKEN)

    @property
    def unsent_bytes(self) -> int:
        """Bytes written by the application and not yet acknowledged by the peer."""
        return len(self.send_buf) + sum(len(d) for _, d in self.retry) + self._inflight_bytes

    @property
    def money_pending(self) -> int:
        """Money still to send (not yet fulfilled), in our units."""
        return max(0, self.send_max - self.total_sent)

    def can_receive(self) -> int:
        """How much more money this stream accepts before its limit (without the tolerance)."""
        return max(0, self.receive_max - self.total_received - self.incoming_held)


@dataclass(slots=True)
class _InFlight:
    """What one of our Prepares carries, to settle when its reply comes."""

    amount: int
    minimum: int
    condition: bytes
    holds: dict[int, int] = field(default_factory=dict)
    data: list[tuple[int, int, bytes]] = field(default_factory=list)
    control: list[Frame] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)
    streams: set[int] = field(default_factory=set)
    connection_close: bool = False


# --------------------------------------------------------------------------------------------
# The connection


class ConnectionCore:
    """One end of a STREAM connection. See the module documentation.

    ``now`` is any monotonic clock in seconds (the trio layer passes ``trio.current_time()``); it
    only serves the idle timeout. ``local_address`` is the ILP address we announce in
    ``ConnectionNewAddress`` (the client does, in its first packet; a server does not need to) and
    put in ``triggered_by``. ``remote_address`` is where our Prepares go; a server learns it from
    the client's ``ConnectionNewAddress``.

    ``minimum_exchange_rate`` (receiver units per sender unit, a Fraction) sets the minimum
    destination amount of every money packet: ``floor(amount × rate)``. Without it, packets ask for
    no minimum. ``max_packet_amount`` caps the source amount of one Prepare; F08 replies lower it.
    """

    max_packets: int = MAX_PACKETS
    """Packets each side may send before the connection closes (tests lower it)."""

    def __init__(
        self,
        crypto: StreamCrypto,
        *,
        is_server: bool,
        now: float,
        local_address: str | None = None,
        remote_address: str | None = None,
        asset_code: str | None = None,
        asset_scale: int | None = None,
        idle_timeout: float | None = 60.0,
        max_remote_streams: int = DEFAULT_MAX_REMOTE_STREAMS,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        connection_window: int = DEFAULT_CONNECTION_WINDOW,
        send_buffer: int = DEFAULT_SEND_BUFFER,
        receive_max: int = MAX_UINT64,
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
        minimum_exchange_rate: Fraction | None = None,
        max_packet_amount: int | None = None,
    ) -> None:
        if (receipt_nonce is None) != (receipt_secret is None):
            raise ValueError("receipt_nonce and receipt_secret go together")
        if receipt_nonce is not None and len(receipt_nonce) != 16:
            raise ValueError("a receipt nonce is 16 bytes")
        if receipt_secret is not None and len(receipt_secret) != 32:
            raise ValueError("a receipt secret is 32 bytes")
        if (asset_code is None) != (asset_scale is None):
            raise ValueError("asset_code and asset_scale go together")
        if stream_window < 1 or connection_window < 1 or send_buffer < 1:
            raise ValueError("windows and buffers must be positive")
        if local_address:
            validate_address(local_address)
        if remote_address:
            validate_address(remote_address)
        self._crypto = crypto
        self.is_server = is_server
        self.local_address = local_address
        self.remote_address = remote_address
        self.asset_code = asset_code
        self.asset_scale = asset_scale
        self.remote_asset: tuple[str, int] | None = None
        self.idle_timeout = idle_timeout
        self.last_activity = now
        self.receipt_nonce = receipt_nonce
        self._receipt_secret = receipt_secret
        self.minimum_exchange_rate = minimum_exchange_rate
        self.max_packet_amount = max_packet_amount
        self.observed_rate: Fraction | None = None
        """Delivered ÷ sent of the last reply that said what arrived for a non-zero amount."""

        self._default_receive_max = receive_max
        self._stream_window = stream_window
        self._send_buffer = send_buffer
        self.streams: dict[int, StreamState] = {}
        self._next_local_id = 2 if is_server else 1
        # Remote-opened ids: all of the peer's parity up to the watermark were opened; ids seen
        # above it are in the set. "Closed" = opened and no longer in ``streams``.
        self._remote_watermark = -1 if is_server else 0
        self._remote_seen: set[int] = set()
        self.max_stream_id = 2 * max_remote_streams
        self._advertised_max_stream_id = self.max_stream_id
        self.remote_max_stream_id = _DEFAULT_REMOTE_MAX_STREAM_ID
        self._accept_queue: deque[int] = deque()
        self.announce_streams = True
        """Keep the peer's new streams until :meth:`accept_stream` takes them (False: the
        application never takes them, e.g. a server driven only by its money hook)."""

        # Connection data accounting: cumulative bytes over all streams.
        self._conn_window = connection_window
        self._conn_received = 0
        self._conn_read = 0
        self._advertised_conn_max = connection_window
        self._conn_adv_dirty = False
        self.remote_conn_max = _ASSUMED_REMOTE_CONNECTION_WINDOW
        self._conn_sent = 0
        self._conn_blocked_reported = -1

        self._next_sequence = 1
        self.packets_received = 0
        self._inflight: dict[int, _InFlight] = {}
        self._pending_control: list[Frame] = []
        self.remote_knows_us = is_server

        self.total_sent = 0
        self.total_delivered = 0
        self.total_received = 0
        self._incoming_held = 0

        self.close_reason: CloseReason | None = None
        self._close_frame_pending = False

    def __repr__(self) -> str:
        role = "server" if self.is_server else "client"
        state = "closed" if self.closed else "open"
        return f"<ConnectionCore {role} {state} streams={len(self.streams)}>"

    # -- state -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The connection is closed (``close_reason`` says why)."""
        return self.close_reason is not None

    @property
    def idle_deadline(self) -> float | None:
        """When the connection times out unless something arrives; None without idle timeout."""
        if self.idle_timeout is None:
            return None
        return self.last_activity + self.idle_timeout

    @property
    def packets_sent(self) -> int:
        """Prepares we numbered so far."""
        return self._next_sequence - 1

    @property
    def in_flight(self) -> int:
        """Our Prepares waiting for a reply."""
        return len(self._inflight)

    def expire_idle(self, now: float) -> bool:
        """Close the connection if it has been idle too long; True if it did (or was closed)."""
        if self.closed:
            return True
        deadline = self.idle_deadline
        if deadline is None or now < deadline:
            return False
        self._close(ErrorCode.NO_ERROR, "idle timeout", by_remote=False, send=False)
        return True

    def flushed(self) -> bool:
        """Nothing left to deliver: no stream data, money or close pending, nothing in flight."""
        if self._inflight or self._pending_control:
            return False
        for st in self.streams.values():
            if st.send_state == _Send.BROKEN:
                continue
            if st.send_buf or st.retry or st.held:
                return False
            if st.money_pending and st.money_error is None:
                return False
            if st.send_state in (_Send.EOF, _Send.CLOSING):
                return False
        return True

    def wants_to_send(self) -> bool:
        """Whether :meth:`next_packet` may have something to send (a cheap over-estimate)."""
        if self.remote_address is None:
            return False
        if self.closed:
            return self._close_frame_pending
        if self._pending_control or self._conn_adv_dirty or not self.remote_knows_us:
            return True
        for st in self.streams.values():
            if st.adv_dirty or st.send_buf or st.retry:
                return True
            if st.send_state == _Send.EOF:
                return True
            if (
                st.send_state <= _Send.EOF
                and st.money_error is None
                and st.send_max - st.total_sent - st.held > 0
            ):
                return True
        return False

    # -- application side ------------------------------------------------------------------

    def open_stream(self) -> int:
        """Open a stream of ours and return its id. Raises :class:`StreamError` when the peer's
        stream limit is reached (a ``ConnectionStreamIdBlocked`` then tells it) or the connection
        is closed."""
        self._check_open()
        stream_id = self._next_local_id
        if stream_id > self.remote_max_stream_id:
            self._pending_control.append(ConnectionStreamIdBlocked(stream_id))
            raise StreamError(
                f"the peer accepts streams up to id {self.remote_max_stream_id}; close a stream "
                "before opening another"
            )
        self._next_local_id += 2
        st = self._new_stream(stream_id)
        st.adv_dirty = True  # announce it (and our limits) in the next packet
        return stream_id

    def accept_stream(self) -> int | None:
        """The next stream the peer opened that the application has not taken yet."""
        while self._accept_queue:
            stream_id = self._accept_queue.popleft()
            st = self.streams.get(stream_id)
            if st is not None:
                if st.remote_closed:
                    self._release_limit(st)
                return stream_id
        return None

    def stream(self, stream_id: int) -> StreamState:
        """The state of a live stream; :class:`KeyError` if it is unknown or gone."""
        return self.streams[stream_id]

    def send_space(self, stream_id: int) -> int:
        """How many bytes :meth:`write` would take now."""
        st = self.streams[stream_id]
        return max(0, self._send_buffer - st.unsent_bytes)

    def write(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Buffer up to :meth:`send_space` bytes of ``data``; returns how many were taken."""
        st = self.streams[stream_id]
        self._check_stream_can_send(st)
        n = min(len(data), self._send_buffer - st.unsent_bytes)
        if n > 0:
            st.send_buf += data[:n]
        return max(n, 0)

    def read(self, stream_id: int, max_bytes: int) -> bytes:
        """Take up to ``max_bytes`` received bytes of a stream (b"" if none are waiting)."""
        st = self.streams[stream_id]
        n = min(max_bytes, len(st.recv_buf))
        if n <= 0:
            return b""
        data = bytes(st.recv_buf[:n])
        del st.recv_buf[:n]
        st.read_offset += n
        self._conn_read += n
        # Advertise bigger windows once half of one was consumed.
        if st.max_offset - st.advertised_max_offset >= st.window // 2 and not st.remote_closed:
            st.adv_dirty = True
        if self._conn_max_offset() - self._advertised_conn_max >= self._conn_window // 2:
            self._conn_adv_dirty = True
        self._maybe_remove(st)
        return data

    def add_money(self, stream_id: int, amount: int) -> int:
        """Raise the stream's send target by ``amount``; returns the new target (``send_max``)."""
        if amount < 0:
            raise ValueError("an amount cannot be negative")
        st = self.streams[stream_id]
        self._check_stream_can_send(st)
        if st.money_error is not None:
            raise StreamError(st.money_error)
        st.send_max += amount
        st.blocked_money_reported = -1
        return st.send_max

    def cancel_money(self, stream_id: int) -> None:
        """Stop sending more money on a stream: the target drops to what is sent or in flight."""
        st = self.streams.get(stream_id)
        if st is not None:
            st.send_max = st.total_sent + st.held

    def set_receive_max(self, stream_id: int, receive_max: int) -> None:
        """Set how much money a stream accepts in all. It cannot go below what the peer was
        already told (advertised limits only grow, RFC 29 §4.4.4) nor below what arrived."""
        st = self.streams[stream_id]
        if not 0 <= receive_max <= MAX_UINT64:
            raise ValueError("receive_max must be an unsigned 64-bit integer")
        floor = max(st.advertised_receive_max, st.total_received + st.incoming_held)
        if receive_max < floor:
            raise ValueError(
                f"receive_max can only grow from what the peer was told or what arrived "
                f"({floor}), asked {receive_max}"
            )
        if receive_max != st.receive_max:
            st.receive_max = receive_max
            st.adv_dirty = True

    def shutdown_stream(self, stream_id: int) -> None:
        """The application is done sending on this stream (``send_eof``): once its data and money
        are delivered, a ``StreamClose(NO_ERROR)`` goes out. Reading continues."""
        st = self.streams.get(stream_id)
        if st is not None and st.send_state == _Send.OPEN:
            st.send_state = _Send.EOF

    def close_stream(
        self, stream_id: int, code: int = ErrorCode.NO_ERROR, message: str = ""
    ) -> None:
        """Close a stream both ways. ``NO_ERROR`` is graceful: buffered data and money already
        in flight are still delivered, unsent money is cancelled, then ``StreamClose`` goes out.
        Another code aborts: nothing more is sent and the close carries that code."""
        st = self.streams.get(stream_id)
        if st is None:
            return
        st.read_closed = True
        self._discard_incoming(st)
        self.cancel_money(stream_id)
        if code != ErrorCode.NO_ERROR:
            self._abort_stream_send(st, code, message)
        elif st.send_state == _Send.OPEN:
            st.send_state = _Send.EOF
        self._maybe_remove(st)

    def abort_stream(self, stream_id: int, message: str = "") -> None:
        """Close a stream at once (a cancelled ``aclose``): unsent data is dropped. The close
        says ``NO_ERROR`` if nothing was dropped, ``APPLICATION_ERROR`` otherwise."""
        st = self.streams.get(stream_id)
        if st is None:
            return
        dropped = bool(st.send_buf or st.retry or st.money_pending)
        code = ErrorCode.APPLICATION_ERROR if dropped else ErrorCode.NO_ERROR
        text = message or ("stream closed before all its data was sent" if dropped else "")
        st.read_closed = True
        self._discard_incoming(st)
        self.cancel_money(stream_id)
        if st.send_state in (_Send.OPEN, _Send.EOF):
            self._abort_stream_send(st, code, text)
        self._maybe_remove(st)

    def close(self, code: int = ErrorCode.NO_ERROR, message: str = "") -> None:
        """Close the connection from our side; the next packet carries ``ConnectionClose``.

        Graceful closing (flushing first) is the caller's job: wait for :meth:`flushed`."""
        self._close(code, message, by_remote=False, send=True)

    # -- incoming Prepares -----------------------------------------------------------------

    def handle_prepare(self, prepare: Prepare, now: float) -> Fulfill | Reject | IncomingMoney:
        """Answer a Prepare addressed to this connection (SPEC §9.6).

        Undecryptable data or a STREAM packet meant for another ILP packet type → F06. Frames are
        applied, then the packet is rejected (F99 with a STREAM reply) if it asks for more than
        arrived, cannot be fulfilled (a probe), breaks a rule, or carries money a stream cannot
        take. A fulfillable Prepare with money returns :class:`IncomingMoney` to settle; one
        without money is fulfilled at once.
        """
        try:
            packet = self._crypto.decrypt_packet(prepare.data)
        except DecodeError:
            return Reject(_F06, self._triggered_by(), "")
        if packet.ilp_packet_type != PacketType.PREPARE:
            return Reject(_F06, self._triggered_by(), "")
        self.packets_received += 1
        self.last_activity = now
        amount = prepare.amount
        reply: list[Frame] = []

        if self.closed:
            return self._reject_reply(packet, amount, reply)
        if self.packets_received > self.max_packets:
            self._close(
                ErrorCode.PROTOCOL_VIOLATION,
                "the peer sent more than 2^31 packets",
                by_remote=False,
                send=True,
            )
            return self._reject_reply(packet, amount, reply)

        frames = packet.frames
        # 1. Stream ids: open new streams, refuse closed ones.
        refused = self._check_stream_ids(frames, reply)
        if self.closed or refused:
            return self._reject_reply(packet, amount, reply)

        # 2. Frames, connection close last.
        remote_close: ConnectionClose | None = None
        for frame in frames:
            if isinstance(frame, ConnectionClose):
                remote_close = frame
                continue
            self._apply_frame(frame, reply, incoming=True)
            if self.closed:
                return self._reject_reply(packet, amount, reply)
        reply.append(ConnectionMaxData(self._conn_max_offset()))
        self._advertised_conn_max = self._conn_max_offset()
        self._conn_adv_dirty = False
        if remote_close is not None:
            self._apply_frame(remote_close, reply, incoming=True)

        # 3. Money.
        if amount < packet.prepare_amount:
            return self._reject_reply(packet, amount, reply)
        fulfillment = self._crypto.fulfillment(prepare.data)
        if _sha256(fulfillment).digest() != prepare.execution_condition:
            return self._reject_reply(packet, amount, reply)
        money = [f for f in frames if isinstance(f, StreamMoney)]
        if self.closed:
            # The peer closed the connection in this packet: acknowledge a packet without money.
            if amount == 0:
                return self._fulfill_reply(packet, amount, fulfillment, reply, ())
            return self._reject_reply(packet, amount, reply)
        if amount == 0:
            for f in money:
                self._add_stream_limits(f.stream_id, reply)
            return self._fulfill_reply(packet, amount, fulfillment, reply, ())
        amounts = self._split_incoming(amount, money, reply)
        if amounts is None:
            return self._reject_reply(packet, amount, reply)
        for sid, part in amounts.items():
            self.streams[sid].incoming_held += part
        self._incoming_held += amount
        return IncomingMoney(packet.sequence, amount, amounts, fulfillment, reply)

    def fulfill(self, incoming: IncomingMoney, now: float) -> Fulfill:
        """Accept the money of ``incoming``: credit the streams and build the Fulfill."""
        self._settle(incoming)
        receipts: list[Frame] = []
        for sid, part in incoming.amounts.items():
            st = self.streams.get(sid)
            if st is None:
                continue
            st.total_received += part
            receipt = self._receipt(st)
            if receipt is not None:
                receipts.append(receipt)
        self.total_received += incoming.amount
        reply = incoming._reply_frames
        for sid in incoming.amounts:
            self._add_stream_limits(sid, reply)
        reply.extend(receipts)
        packet = _fit(
            StreamPacket(
                incoming.sequence, PacketType.FULFILL, incoming.amount, self._reply_frames(reply)
            )
        )
        return Fulfill(incoming.fulfillment, self._crypto.encrypt_packet(packet))

    def decline(self, incoming: IncomingMoney, now: float) -> Reject:
        """Refuse the money of ``incoming`` (the application said no): F99 with a STREAM reply."""
        self._settle(incoming)
        reply = incoming._reply_frames
        for sid in incoming.amounts:
            self._add_stream_limits(sid, reply)
        packet = _fit(
            StreamPacket(
                incoming.sequence, PacketType.REJECT, incoming.amount, self._reply_frames(reply)
            )
        )
        return Reject(_F99, self._triggered_by(), "", self._crypto.encrypt_packet(packet))

    # -- outgoing Prepares -----------------------------------------------------------------

    def next_packet(self, now: float) -> OutgoingPacket | None:
        """The next Prepare worth sending, or None: money, data, closes, flow-control updates.

        The packet is fulfillable (its condition comes from the fulfillment key). Until a reply
        arrives, its money is held and its data counts as in flight.
        """
        if self.remote_address is None:
            return None
        if self.closed:
            if not self._close_frame_pending:
                return None
            self._close_frame_pending = False
            reason = self.close_reason
            assert reason is not None
            if self._next_sequence > self.max_packets:
                return None
            rec = _InFlight(0, 0, b"", connection_close=True)
            return self._emit([ConnectionClose(reason.code, reason.message)], rec)
        if self._next_sequence > self.max_packets:
            self._close(
                ErrorCode.INTERNAL_ERROR,
                "sent 2^31 packets: a connection must not carry more",
                by_remote=False,
                send=False,
            )
            return None

        rec = _InFlight(0, 0, b"")
        control = self._account_frames()
        control.extend(self._take_pending_control())
        if self._conn_adv_dirty:
            control.append(ConnectionMaxData(self._conn_max_offset()))
            self._advertised_conn_max = self._conn_max_offset()
            self._conn_adv_dirty = False
        for sid in sorted(self.streams):
            st = self.streams[sid]
            if st.adv_dirty:
                st.adv_dirty = False
                control.extend(self._limits_frames(st))
        rec.control = control
        frames: list[Frame] = list(control)
        meaningful = bool(frames)

        # Money.
        before = len(frames)
        amount, money_frames = self._take_money(rec, frames)
        if amount or len(frames) > before:
            meaningful = True
        frames.extend(money_frames)

        # Data.
        if self._add_data(rec, frames):
            meaningful = True

        # Closes of streams whose data and money were all delivered.
        for sid in sorted(self.streams):
            st = self.streams[sid]
            if self._close_ready(st, rec.streams):
                frames.append(StreamClose(sid, st._close_code, st._close_message))
                st.send_state = _Send.CLOSING
                rec.closes.append(sid)
                meaningful = True
        if not meaningful:
            return None
        rec.amount = amount
        rate = self.minimum_exchange_rate
        if amount and rate is not None and rate > 0:
            rec.minimum = min(MAX_UINT64, amount * rate.numerator // rate.denominator)
        for sid in rec.streams:
            self.streams[sid].inflight_packets += 1
        return self._emit(frames, rec)

    def make_probe(self, amount: int, condition: bytes, now: float) -> OutgoingPacket:
        """An unfulfillable Prepare of ``amount`` to learn the exchange rate and path limits.

        ``condition`` must be 32 random bytes. The receiver rejects it (F99) and its reply says
        what arrived: :attr:`ReplyResult.delivered`. The first probes also announce our address
        and asset if the peer does not know them yet.
        """
        self._check_open()
        if not 0 <= amount <= MAX_UINT64:
            raise ValueError("a probe amount is an unsigned 64-bit integer")
        if len(condition) != 32:
            raise ValueError("a condition is 32 bytes")
        if self.remote_address is None:
            raise StreamError("the peer's address is not known yet")
        if self._next_sequence > self.max_packets:
            raise StreamError("this connection sent 2^31 packets and cannot send more")
        rec = _InFlight(amount, 0, condition)
        rec.control = self._account_frames()
        return self._emit(list(rec.control), rec, condition=condition)

    def handle_reply(self, sequence: int, reply: Fulfill | Reject, now: float) -> ReplyResult:
        """Take the Fulfill or Reject of our Prepare number ``sequence``."""
        rec = self._inflight.pop(sequence, None)
        if rec is None:
            raise StreamError(f"no Prepare {sequence} is in flight")
        # The streams of this packet stay in flight (so none is forgotten) until it is settled.
        self.last_activity = now  # any answer counts, as in ilp-protocol-stream
        stream_reply = self._open_reply(sequence, reply)
        if stream_reply is not None:
            self.remote_knows_us = True
            if rec.amount > 0:
                self.observed_rate = Fraction(stream_reply.prepare_amount, rec.amount)
            scratch: list[Frame] = []
            for frame in stream_reply.frames:
                self._apply_frame(frame, scratch, incoming=False)
        delivered = stream_reply.prepare_amount if stream_reply is not None else None

        fulfilled = (
            isinstance(reply, Fulfill)
            and bool(rec.condition)
            and _sha256(reply.fulfillment).digest() == rec.condition
        )
        if fulfilled:
            self._commit(rec, stream_reply)
            result = ReplyResult(
                ReplyKind.FULFILLED,
                reply,
                sequence,
                rec.amount,
                delivered if delivered is not None else rec.minimum,
                stream_reply,
            )
        else:
            result = self._rollback(rec, reply, stream_reply, sequence, delivered)
        for sid in rec.streams:
            st = self.streams.get(sid)
            if st is not None:
                st.inflight_packets -= 1
        for sid in list(rec.streams) + rec.closes:
            st = self.streams.get(sid)
            if st is not None:
                self._maybe_remove(st)
        return result

    # -- internals: incoming ---------------------------------------------------------------

    def _triggered_by(self) -> str:
        return self.local_address or ""

    def _check_open(self) -> None:
        if self.close_reason is not None:
            raise StreamError(f"the STREAM connection is {self.close_reason.describe()}")

    def _check_stream_can_send(self, st: StreamState) -> None:
        self._check_open()
        if st.send_state == _Send.BROKEN:
            raise StreamError(st.broken_reason or f"stream {st.id} is broken")
        if st.send_state != _Send.OPEN:
            raise StreamError(f"stream {st.id} was closed for sending")

    def _is_remote_id(self, stream_id: int) -> bool:
        return stream_id % 2 == (1 if self.is_server else 0)

    def _remote_opened(self, stream_id: int) -> bool:
        return stream_id <= self._remote_watermark or stream_id in self._remote_seen

    def _mark_remote_opened(self, stream_id: int) -> None:
        self._remote_seen.add(stream_id)
        while self._remote_watermark + 2 in self._remote_seen:
            self._remote_watermark += 2
            self._remote_seen.discard(self._remote_watermark)

    def _new_stream(self, stream_id: int) -> StreamState:
        st = StreamState(
            stream_id, receive_max=self._default_receive_max, window=self._stream_window
        )
        self.streams[stream_id] = st
        return st

    def _check_stream_ids(self, frames: tuple[Frame, ...], reply: list[Frame]) -> bool:
        """Open streams the peer starts; True if the packet must be refused (closed stream)."""
        refused = False
        for frame in frames:
            if not isinstance(frame, _STREAM_ID_FRAMES):
                continue
            sid = frame.stream_id
            st = self.streams.get(sid)
            if st is not None:
                if st.read_closed and isinstance(frame, _MONEY_OR_DATA):
                    refused |= self._refuse_closed(sid, reply)
                continue
            if self._is_remote_id(sid):
                if sid == 0:
                    self._close(
                        ErrorCode.PROTOCOL_VIOLATION,
                        "stream id 0 is not valid",
                        by_remote=False,
                        send=True,
                    )
                    return True
                if self._remote_opened(sid):
                    if isinstance(frame, _MONEY_OR_DATA):
                        refused |= self._refuse_closed(sid, reply)
                    continue
                if sid > self.max_stream_id:
                    self._close(
                        ErrorCode.STREAM_ID_ERROR,
                        f"stream id {sid} is above the maximum of {self.max_stream_id}",
                        by_remote=False,
                        send=True,
                    )
                    return True
                self._mark_remote_opened(sid)
                self._new_stream(sid)
                if self.announce_streams:
                    self._accept_queue.append(sid)
                if sid > self.max_stream_id * 3 // 4:
                    # Past 75 % of the limit: remind the peer of it (as ilp-protocol-stream does).
                    self._pending_control.append(ConnectionMaxStreamId(self.max_stream_id))
            elif sid < self._next_local_id:
                if isinstance(frame, _MONEY_OR_DATA):
                    refused |= self._refuse_closed(sid, reply)
            else:
                parity = "even" if self.is_server else "odd"
                self._close(
                    ErrorCode.PROTOCOL_VIOLATION,
                    f"stream id {sid} has our parity ({parity}) but we never opened it",
                    by_remote=False,
                    send=True,
                )
                return True
        return refused

    def _refuse_closed(self, stream_id: int, reply: list[Frame]) -> bool:
        for f in reply:
            if isinstance(f, StreamClose) and f.stream_id == stream_id:
                return True
        reply.append(StreamClose(stream_id, ErrorCode.STREAM_STATE_ERROR, "stream is closed"))
        return True

    def _apply_frame(self, frame: Frame, reply: list[Frame], *, incoming: bool) -> None:
        """Apply one frame from the peer (a Prepare, or a reply to ours when not ``incoming``)."""
        if isinstance(frame, StreamData):
            if incoming:
                self._receive_data(frame)
        elif isinstance(frame, StreamMaxMoney):
            st = self.streams.get(frame.stream_id)
            if st is not None:
                st.remote_received = max(st.remote_received, frame.total_received)
                if st.remote_receive_max is None or frame.receive_max > st.remote_receive_max:
                    st.remote_receive_max = frame.receive_max
        elif isinstance(frame, StreamMaxData):
            st = self.streams.get(frame.stream_id)
            if st is not None and frame.max_offset > st.remote_max_offset:
                st.remote_max_offset = frame.max_offset
        elif isinstance(frame, StreamClose):
            self._remote_stream_close(frame)
        elif isinstance(frame, ConnectionMaxData):
            if frame.max_offset > self.remote_conn_max:
                self.remote_conn_max = frame.max_offset
        elif isinstance(frame, ConnectionMaxStreamId):
            if frame.max_stream_id > self.remote_max_stream_id:
                self.remote_max_stream_id = frame.max_stream_id
        elif isinstance(frame, ConnectionAssetDetails):
            details = (frame.source_asset_code, frame.source_asset_scale)
            if self.remote_asset is None:
                self.remote_asset = details
            elif self.remote_asset != details:
                self._close(
                    ErrorCode.PROTOCOL_VIOLATION,
                    f"asset details changed from {self.remote_asset[0]} scale "
                    f"{self.remote_asset[1]} to {details[0]} scale {details[1]}",
                    by_remote=False,
                    send=True,
                )
        elif isinstance(frame, ConnectionNewAddress):
            if frame.source_account:
                self.remote_address = frame.source_account
            if incoming:
                reply.append(ConnectionMaxStreamId(self.max_stream_id))
                if self.asset_code is not None and self.asset_scale is not None:
                    reply.append(ConnectionAssetDetails(self.asset_code, self.asset_scale))
        elif isinstance(frame, StreamReceipt):
            if not incoming:
                st = self.streams.get(frame.stream_id)
                if st is not None:
                    st.receipt = frame.receipt
        elif isinstance(frame, StreamDataBlocked):
            st = self.streams.get(frame.stream_id)
            if st is not None and incoming:
                self._add_stream_limits(st.id, reply)
        elif isinstance(frame, ConnectionClose):
            self._close(frame.error_code, frame.error_message, by_remote=True, send=False)
        # StreamMoney is settled apart; ConnectionDataBlocked, ConnectionStreamIdBlocked and
        # StreamMoneyBlocked are informational.

    def _receive_data(self, frame: StreamData) -> None:
        st = self.streams.get(frame.stream_id)
        if st is None or st.read_closed:
            return
        data = frame.data
        offset = frame.offset
        end = offset + len(data)
        if end > MAX_UINT64 or end > st.max_offset:
            self._close(
                ErrorCode.FLOW_CONTROL_ERROR,
                f"stream {st.id} accepts bytes up to offset {st.max_offset}, got up to {end}",
                by_remote=False,
                send=True,
            )
            return
        if end > st.conn_counted_end:
            grown = end - st.conn_counted_end
            if self._conn_received + grown > self._conn_max_offset():
                self._close(
                    ErrorCode.FLOW_CONTROL_ERROR,
                    f"the connection accepts {self._conn_max_offset()} bytes, got "
                    f"{self._conn_received + grown}",
                    by_remote=False,
                    send=True,
                )
                return
            self._conn_received += grown
            st.conn_counted_end = end
        if end <= st.recv_end or not data:
            return  # a retransmission of bytes we have
        if offset > st.recv_end:
            old = st._ooo.get(offset)
            if old is not None and len(old) >= len(data):
                return
            st._ooo_bytes += len(data) - (len(old) if old is not None else 0)
            st._ooo[offset] = data
            if st._ooo_bytes > st.window:
                self._close(
                    ErrorCode.PROTOCOL_VIOLATION,
                    f"overlapping data on stream {st.id}",
                    by_remote=False,
                    send=True,
                )
            return
        st.recv_buf += memoryview(data)[st.recv_end - offset :]
        st.recv_end = end
        ooo = st._ooo
        while ooo:
            piece = ooo.pop(st.recv_end, None)
            if piece is None:
                # Drop pieces the contiguous data has overtaken; keep only later ones.
                stale = [k for k in ooo if k < st.recv_end]
                if not stale:
                    break
                for k in stale:
                    old_piece = ooo.pop(k)
                    st._ooo_bytes -= len(old_piece)
                    if k + len(old_piece) > st.recv_end:
                        st.recv_buf += memoryview(old_piece)[st.recv_end - k :]
                        st.recv_end = k + len(old_piece)
                continue
            st._ooo_bytes -= len(piece)
            st.recv_buf += piece
            st.recv_end += len(piece)

    def _remote_stream_close(self, frame: StreamClose) -> None:
        st = self.streams.get(frame.stream_id)
        if st is None:
            return
        if frame.error_code != ErrorCode.NO_ERROR:
            # Also after a graceful close: the peer now refuses what we still send.
            reason = CloseReason(frame.error_code, frame.error_message, by_remote=True)
            if st.remote_error is None and not st.remote_closed:
                st.remote_error = reason
            if st.send_state not in (_Send.CLOSED, _Send.BROKEN):
                self._break_stream(st, f"the peer closed stream {st.id}: {reason.describe()}")
        if not st.remote_closed:
            st.remote_closed = True
            if not (self.announce_streams and st.id in self._accept_queue):
                self._release_limit(st)
        self._maybe_remove(st)

    def _release_limit(self, st: StreamState) -> None:
        """A stream of the peer's ended (and the application saw it): let the peer open
        another, as ilp-protocol-stream does, with a higher ``ConnectionMaxStreamId``."""
        if st.limit_released or not self._is_remote_id(st.id) or self.closed:
            return
        st.limit_released = True
        self.max_stream_id += 2
        self._pending_control.append(ConnectionMaxStreamId(self.max_stream_id))

    def _split_incoming(
        self, amount: int, money: list[StreamMoney], reply: list[Frame]
    ) -> dict[int, int] | None:
        """Amounts per stream for a money packet, or None (with frames saying why) to refuse."""
        if not money:
            return None
        if self.total_received + self._incoming_held + amount > MAX_UINT64:
            return None
        if len(money) == 1:  # the usual packet: one stream takes it all
            only = money[0]
            if only.shares == 0:
                return None
            amounts = {only.stream_id: amount}
            remainder = 0
        else:
            amounts = split_amount(amount, ((f.stream_id, f.shares) for f in money))
            if sum(f.shares for f in money) == 0:
                return None
            remainder = amount - sum(amounts.values())
        streams = self.streams
        for sid in amounts:
            st = streams.get(sid)
            if st is None or st.read_closed:
                self._refuse_closed(sid, reply)
                return None
        if remainder:
            ids = sorted(amounts)
            target = ids[0]
            for sid in ids:
                if streams[sid].can_receive() >= amounts[sid] + remainder:
                    target = sid
                    break
            amounts[target] += remainder
        ok = True
        for sid, part in amounts.items():
            st = streams[sid]
            held = st.incoming_held
            allowed = max(0, st.receive_max - st.total_received - held)  # st.can_receive()
            if allowed < MAX_UINT64:
                # ceil(room × 101/100) - held, at least 0: the 1 % tolerance, in integers.
                room = st.receive_max - st.total_received
                allowed = max(0, -(-room * _TOLERANCE_NUM // _TOLERANCE_DEN) - held)
            if part > allowed:
                ok = False
                reply.append(StreamMaxMoney(sid, st.receive_max, st.total_received))
        return amounts if ok else None

    def _settle(self, incoming: IncomingMoney) -> None:
        if incoming.settled:
            raise StreamError("this incoming Prepare was already settled")
        incoming.settled = True
        for sid, part in incoming.amounts.items():
            st = self.streams.get(sid)
            if st is not None:
                st.incoming_held -= part
        self._incoming_held -= incoming.amount

    def _receipt(self, st: StreamState) -> StreamReceipt | None:
        if self.receipt_nonce is None or self._receipt_secret is None:
            return None
        if st.id > 0xFF or st.total_received > MAX_UINT64:
            return None  # RFC 39 receipts have a one-byte stream id
        receipt = Receipt(self.receipt_nonce, st.id, st.total_received)
        return StreamReceipt(st.id, receipt.build(self._receipt_secret))

    def _add_stream_limits(self, stream_id: int, reply: list[Frame]) -> None:
        st = self.streams.get(stream_id)
        if st is None:
            return
        for f in reply:
            if isinstance(f, StreamMaxMoney) and f.stream_id == stream_id:
                return
        reply.extend(self._limits_frames(st))

    def _limits_frames(self, st: StreamState) -> list[Frame]:
        st.advertised_receive_max = st.receive_max
        st.advertised_max_offset = max(st.advertised_max_offset, st.max_offset)
        return [
            StreamMaxMoney(st.id, st.receive_max, min(st.total_received, MAX_UINT64)),
            StreamMaxData(st.id, st.advertised_max_offset),
        ]

    def _conn_max_offset(self) -> int:
        return max(self._advertised_conn_max, self._conn_read + self._conn_window)

    def _take_pending_control(self) -> list[Frame]:
        frames = self._pending_control
        self._pending_control = []
        return frames

    def _reply_frames(self, reply: list[Frame]) -> tuple[Frame, ...]:
        """Complete the frames of a reply: what we have to say rides on it too (control frames,
        new limits, stream closes), so a server that cannot send Prepares still says it."""
        reply.extend(self._take_pending_control())
        if not self.closed:
            for sid in sorted(self.streams):
                st = self.streams[sid]
                if st.adv_dirty:
                    st.adv_dirty = False
                    for f in reply:
                        if isinstance(f, StreamMaxMoney) and f.stream_id == sid:
                            break
                    else:
                        reply.extend(self._limits_frames(st))
            if self._conn_adv_dirty:
                self._conn_adv_dirty = False
                self._advertised_conn_max = self._conn_max_offset()
            told = {f.stream_id for f in reply if isinstance(f, StreamClose)}
            for st in [st for st in self.streams.values() if self._close_ready(st, ())]:
                if st.id not in told:
                    reply.append(StreamClose(st.id, st._close_code, st._close_message))
                st.send_state = _Send.CLOSED
                self._maybe_remove(st)
        if self._close_frame_pending and self.close_reason is not None:
            # The reply tells the peer why we closed; no Prepare needs to carry it any more.
            self._close_frame_pending = False
            reason = self.close_reason
            reply.append(ConnectionClose(reason.code, reason.message))
        elif self.closed and self.close_reason is not None and not self.close_reason.by_remote:
            reason = self.close_reason
            reply.append(ConnectionClose(reason.code, reason.message))
        return tuple(reply)

    def _reject_reply(self, packet: StreamPacket, amount: int, reply: list[Frame]) -> Reject:
        data = _fit(
            StreamPacket(packet.sequence, PacketType.REJECT, amount, self._reply_frames(reply))
        )
        return Reject(_F99, self._triggered_by(), "", self._crypto.encrypt_packet(data))

    def _fulfill_reply(
        self,
        packet: StreamPacket,
        amount: int,
        fulfillment: bytes,
        reply: list[Frame],
        receipts: tuple[Frame, ...],
    ) -> Fulfill:
        frames = self._reply_frames(reply) + receipts
        data = _fit(StreamPacket(packet.sequence, PacketType.FULFILL, amount, frames))
        return Fulfill(fulfillment, self._crypto.encrypt_packet(data))

    # -- internals: outgoing ---------------------------------------------------------------

    def _close_ready(self, st: StreamState, busy: Iterable[int]) -> bool:
        """The application closed the stream and everything it sent was delivered."""
        return (
            st.send_state == _Send.EOF
            and st.id not in busy
            and st.inflight_packets == 0
            and not st.send_buf
            and not st.retry
            and (st.money_pending == 0 or st.money_error is not None)
        )

    def _account_frames(self) -> list[Frame]:
        if self.remote_knows_us or not self.local_address:
            return []
        frames: list[Frame] = [ConnectionNewAddress(self.local_address)]
        if self.asset_code is not None and self.asset_scale is not None:
            frames.append(ConnectionAssetDetails(self.asset_code, self.asset_scale))
        return frames

    def _emit(
        self, frames: list[Frame], rec: _InFlight, *, condition: bytes | None = None
    ) -> OutgoingPacket:
        sequence = self._next_sequence
        self._next_sequence += 1
        packet = StreamPacket(sequence, PacketType.PREPARE, rec.minimum, tuple(frames))
        data = self._crypto.encrypt_packet(packet)
        fulfillable = condition is None
        if condition is None:
            condition = self._crypto.condition(data)
            rec.condition = condition
        else:
            rec.condition = b""  # a probe: no fulfillment can be valid
        self._inflight[sequence] = rec
        return OutgoingPacket(sequence, rec.amount, rec.minimum, data, condition, fulfillable)

    def _money_cap(self, st: StreamState) -> int | None:
        """Most we may send on a stream now in our units, from its receiver's limit; None = any."""
        if st.remote_receive_max is None:
            return None
        room = st.remote_receive_max - st.remote_received - st._inflight_dest
        if room <= 0:
            return 0
        rate = self.minimum_exchange_rate or self.observed_rate
        if rate is None or rate <= 0:
            return None
        return room * rate.denominator // rate.numerator

    def _take_money(self, rec: _InFlight, frames: list[Frame]) -> tuple[int, list[Frame]]:
        budget = MAX_UINT64 if self.max_packet_amount is None else self.max_packet_amount
        money: list[Frame] = []
        total = 0
        rate = self.minimum_exchange_rate or self.observed_rate
        for sid in sorted(self.streams):
            if budget <= 0:
                break
            st = self.streams[sid]
            if st.send_state > _Send.EOF or st.money_error is not None:
                continue
            available = st.send_max - st.total_sent - st.held
            if available <= 0:
                continue
            part = min(available, budget)
            cap = self._money_cap(st)
            if cap is not None and cap < part:
                part = cap
                if st.blocked_money_reported != st.send_max:
                    st.blocked_money_reported = st.send_max
                    frames.append(
                        StreamMoneyBlocked(
                            sid, min(st.send_max, MAX_UINT64), min(st.total_sent, MAX_UINT64)
                        )
                    )
            if part <= 0:
                continue
            st.held += part
            if rate is not None:
                st._inflight_dest += part * rate.numerator // rate.denominator
            rec.holds[sid] = part
            rec.streams.add(sid)
            money.append(StreamMoney(sid, part))
            total += part
            budget -= part
        return total, money

    def _add_data(self, rec: _InFlight, frames: list[Frame]) -> bool:
        if not any(st.send_buf or st.retry for st in self.streams.values()):
            return False
        size = len(StreamPacket(0, PacketType.PREPARE, MAX_UINT64, tuple(frames)).encode())
        budget = MAX_PLAINTEXT - size - _PACKET_SLACK
        added = False
        for sid in sorted(self.streams):
            st = self.streams[sid]
            if st.send_state in (_Send.CLOSED, _Send.BROKEN):
                continue
            while st.retry and budget > _DATA_FRAME_OVERHEAD:
                offset, chunk = st.retry[0]
                room = budget - _DATA_FRAME_OVERHEAD
                if len(chunk) > room:
                    st.retry[0] = (offset + room, chunk[room:])
                    chunk = chunk[:room]
                else:
                    st.retry.pop(0)
                frames.append(StreamData(sid, offset, chunk))
                rec.data.append((sid, offset, chunk))
                rec.streams.add(sid)
                st._inflight_bytes += len(chunk)
                budget -= len(chunk) + _DATA_FRAME_OVERHEAD
                added = True
            if not st.send_buf:
                continue
            stream_room = st.remote_max_offset - st.send_next
            conn_room = self.remote_conn_max - self._conn_sent
            n = min(len(st.send_buf), stream_room, conn_room, budget - _DATA_FRAME_OVERHEAD)
            if n > 0:
                chunk = bytes(st.send_buf[:n])
                del st.send_buf[:n]
                frames.append(StreamData(sid, st.send_next, chunk))
                rec.data.append((sid, st.send_next, chunk))
                rec.streams.add(sid)
                st._inflight_bytes += n
                st.send_next += n
                self._conn_sent += n
                budget -= n + _DATA_FRAME_OVERHEAD
                added = True
            if st.send_buf:
                wanted = st.send_next + len(st.send_buf)
                if stream_room <= n and st.blocked_data_reported != wanted:
                    st.blocked_data_reported = wanted
                    frames.append(StreamDataBlocked(sid, wanted))
                    added = True
                if conn_room <= n and self._conn_blocked_reported != self._conn_sent + len(
                    st.send_buf
                ):
                    self._conn_blocked_reported = self._conn_sent + len(st.send_buf)
                    frames.append(ConnectionDataBlocked(self._conn_blocked_reported))
                    added = True
        return added

    def _open_reply(self, sequence: int, reply: Fulfill | Reject) -> StreamPacket | None:
        """The STREAM reply in ``reply``: authenticated, same sequence, right packet type."""
        if not reply.data:
            return None
        if isinstance(reply, Reject) and reply.code == "F08":
            return None  # F08 data is the connector's, not STREAM
        try:
            packet = self._crypto.decrypt_packet(reply.data)
        except DecodeError:
            return None
        expected = PacketType.FULFILL if isinstance(reply, Fulfill) else PacketType.REJECT
        if packet.sequence != sequence or packet.ilp_packet_type != expected:
            return None
        return packet

    def _commit(self, rec: _InFlight, stream_reply: StreamPacket | None) -> None:
        delivered = rec.minimum
        if stream_reply is not None:
            delivered = max(delivered, stream_reply.prepare_amount)
        self.total_sent += rec.amount
        self.total_delivered += delivered
        reported = set()
        if stream_reply is not None:
            reported = {f.stream_id for f in stream_reply.frames if isinstance(f, StreamMaxMoney)}
        if rec.holds:
            shares = split_amount(delivered, rec.holds.items())
            remainder = delivered - sum(shares.values())
            first = min(rec.holds)
            shares[first] += remainder
            for sid, part in rec.holds.items():
                st = self.streams.get(sid)
                if st is None:
                    continue
                st.held -= part
                st.total_sent += part
                st.total_delivered += shares[sid]
                self._release_dest_estimate(st, part)
                if sid not in reported:
                    st.remote_received += shares[sid]
        for sid, _, chunk in rec.data:
            st = self.streams.get(sid)
            if st is not None:
                st._inflight_bytes -= len(chunk)
        for sid in rec.closes:
            st = self.streams.get(sid)
            if st is not None and st.send_state == _Send.CLOSING:
                st.send_state = _Send.CLOSED

    def _release_dest_estimate(self, st: StreamState, part: int) -> None:
        rate = self.minimum_exchange_rate or self.observed_rate
        if rate is None:
            st._inflight_dest = 0
            return
        st._inflight_dest = max(0, st._inflight_dest - part * rate.numerator // rate.denominator)
        if st.held == 0:
            st._inflight_dest = 0

    def _rollback(
        self,
        rec: _InFlight,
        reply: Fulfill | Reject,
        stream_reply: StreamPacket | None,
        sequence: int,
        delivered: int | None,
    ) -> ReplyResult:
        for sid, part in rec.holds.items():
            st = self.streams.get(sid)
            if st is not None:
                st.held -= part
                self._release_dest_estimate(st, part)
        for sid, offset, chunk in rec.data:
            st = self.streams.get(sid)
            if st is None:
                continue
            st._inflight_bytes -= len(chunk)
            if st.send_state != _Send.BROKEN:
                st.retry.append((offset, chunk))
                st.retry.sort()
        processed = stream_reply is not None  # the receiver applied our frames
        for sid in rec.closes:
            st = self.streams.get(sid)
            if st is not None and st.send_state == _Send.CLOSING:
                st.send_state = _Send.CLOSED if processed else _Send.EOF
        if not processed and rec.control and not self.closed:
            # Lost on the way: send again (our address and asset go out until a reply comes).
            self._pending_control.extend(
                f
                for f in rec.control
                if not isinstance(f, ConnectionNewAddress | ConnectionAssetDetails)
            )

        if isinstance(reply, Fulfill):
            # A Fulfill that does not match our condition: nobody can be trusted on this path.
            if rec.condition:
                self._close(
                    ErrorCode.INTERNAL_ERROR,
                    f"Prepare {sequence} came back with a fulfillment that does not match",
                    by_remote=False,
                    send=False,
                )
            return ReplyResult(ReplyKind.FINAL, reply, sequence, rec.amount, delivered, None)

        code = reply.code
        if code == "F08":
            self._amount_too_large(rec, reply)
            kind = ReplyKind.AMOUNT_TOO_LARGE if not self.closed else ReplyKind.FINAL
        elif code == "F99" and stream_reply is not None:
            kind = ReplyKind.REJECTED
            self._money_refused(rec, stream_reply)
        elif code.is_temporary or code in ("R00", "R02"):
            kind = ReplyKind.TEMPORARY
        elif not rec.condition or rec.connection_close:
            kind = ReplyKind.FINAL  # a probe or our farewell: nothing to close over
        else:
            kind = ReplyKind.FINAL
            if not self.closed:
                by = f" by {reply.triggered_by}" if reply.triggered_by else ""
                text = f": {reply.message}" if reply.message else ""
                self._close(
                    ErrorCode.INTERNAL_ERROR,
                    f"Prepare {sequence} was rejected with {code} {code.description}{by}{text}",
                    by_remote=False,
                    send=False,
                )
        return ReplyResult(kind, reply, sequence, rec.amount, delivered, stream_reply)

    def _amount_too_large(self, rec: _InFlight, reject: Reject) -> None:
        if rec.amount == 0:
            return
        info = reject.amount_too_large()
        if info is not None and info.received_amount > 0:
            new_max = rec.amount * info.maximum_amount // info.received_amount
        else:
            new_max = rec.amount // 2  # no data: search downwards
        new_max = min(new_max, rec.amount - 1)
        if self.max_packet_amount is None or new_max < self.max_packet_amount:
            self.max_packet_amount = new_max
        if self.max_packet_amount <= 0 and rec.condition:
            self._close(
                ErrorCode.INTERNAL_ERROR,
                "the path's maximum packet amount is 0: no money can be sent",
                by_remote=False,
                send=False,
            )

    def _money_refused(self, rec: _InFlight, stream_reply: StreamPacket) -> None:
        """The receiver rejected our money (F99): retry if its limits explain it, else give up."""
        if not rec.holds:
            return
        if rec.minimum and stream_reply.prepare_amount < rec.minimum:
            arrived = stream_reply.prepare_amount
            reason = (
                f"the exchange rate fell below the minimum: {rec.amount} sent, {arrived} arrived, "
                f"at least {rec.minimum} required"
            )
            for sid in rec.holds:
                self._fail_money(sid, reason)
            return
        for sid, part in rec.holds.items():
            st = self.streams.get(sid)
            if st is None or st.send_state == _Send.BROKEN:
                continue
            cap = self._money_cap(st)
            if cap is not None and cap < part:
                continue  # the receiver's limit is lower than we thought: retry within it
            self._fail_money(sid, f"the receiver refused the money on stream {sid} (F99)")

    def _fail_money(self, stream_id: int, reason: str) -> None:
        st = self.streams.get(stream_id)
        if st is not None and st.money_error is None:
            st.money_error = reason
            st.send_max = st.total_sent + st.held

    def _break_stream(self, st: StreamState, reason: str) -> None:
        st.send_state = _Send.BROKEN
        st.broken_reason = reason
        st.send_buf.clear()
        st.retry.clear()
        if st.money_error is None and st.money_pending:
            st.money_error = reason
        st.send_max = st.total_sent + st.held

    def _abort_stream_send(self, st: StreamState, code: int, message: str) -> None:
        st.send_buf.clear()
        st.retry.clear()
        st._close_code = code
        st._close_message = message
        if st.send_state in (_Send.OPEN, _Send.EOF):
            st.send_state = _Send.EOF  # the close goes out once in-flight packets settle

    def _discard_incoming(self, st: StreamState) -> None:
        n = len(st.recv_buf)
        if n:
            st.read_offset += n
            self._conn_read += n
            st.recv_buf.clear()
        st._ooo.clear()
        st._ooo_bytes = 0

    def _maybe_remove(self, st: StreamState) -> None:
        """Forget a stream once both directions are done and nothing of it is pending."""
        if self.streams.get(st.id) is not st:
            return
        recv_done = st.read_closed or (st.remote_closed and not st.recv_buf and not st._ooo)
        if not recv_done or not st.send_closed:
            return
        if st.inflight_packets or st.incoming_held or st.held:
            return
        if self.announce_streams and st.id in self._accept_queue:
            return  # the application has not seen it yet
        self._release_limit(st)
        del self.streams[st.id]

    def _close(self, code: int, message: str, *, by_remote: bool, send: bool) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = CloseReason(code, message, by_remote)
        self._close_frame_pending = send and not by_remote
        reason = self.close_reason.describe()
        for st in self.streams.values():
            if st.send_state in (_Send.OPEN, _Send.EOF, _Send.CLOSING):
                if st.send_state == _Send.CLOSING or (
                    st.send_state == _Send.EOF and not st.send_buf and not st.retry
                ):
                    st.send_state = _Send.CLOSED
                else:
                    st.send_state = _Send.BROKEN
                    st.broken_reason = f"the STREAM connection is {reason}"
                st.send_buf.clear()
                st.retry.clear()
            if st.money_pending and st.money_error is None:
                st.money_error = f"the STREAM connection is {reason}"
            st.send_max = st.total_sent + st.held
            if not st.remote_closed:
                st.remote_closed = True
                if code != ErrorCode.NO_ERROR:
                    st.remote_error = self.close_reason
        self._pending_control.clear()


# --------------------------------------------------------------------------------------------
# Server-side connection tokens

_TOKEN_KEY_STRING: Final = b"ilp_stream_connection_token"
_SHARED_SECRET_STRING: Final = b"ilp_stream_shared_secret"
_FLAG_TAG: Final = 1
_FLAG_RECEIPTS: Final = 2
MAX_TAG_LENGTH: Final = 256


@dataclass(frozen=True, slots=True)
class TokenParameters:
    """What a connection token carries: the application's tag and the receipt parameters."""

    tag: str | None = None
    receipt_nonce: bytes | None = None
    receipt_secret: bytes | None = None


class ConnectionTokens:
    """Stateless connection credentials of a STREAM server (SPEC §9.3, the stream-receiver scheme).

    ``token = AES-256-GCM(HMAC(server_secret, "ilp_stream_connection_token"))`` of
    ``u8 flags (1 tag, 2 receipts) | [varoct tag (UTF-8)] | [nonce(16) | secret(32)]``, packed
    ``IV || TAG || CIPHERTEXT`` like a STREAM packet; the address gets ``"." + base64url(token)``
    and ``shared_secret = HMAC(HMAC(server_secret, "ilp_stream_shared_secret"), token)``. Nothing
    is stored: a token proves itself by decrypting, and tag and receipt parameters come back out.
    """

    __slots__ = ("_aead", "_secret_key")

    def __init__(self, server_secret: bytes) -> None:
        if len(server_secret) != 32:
            raise ValueError("a STREAM server secret is 32 bytes")
        self._aead = AESGCM(_hmac_digest(server_secret, _TOKEN_KEY_STRING, "sha256"))
        self._secret_key = _hmac_digest(server_secret, _SHARED_SECRET_STRING, "sha256")

    def __repr__(self) -> str:
        return "ConnectionTokens(<keys hidden>)"

    def make(self, params: TokenParameters, iv: bytes) -> bytes:
        """A new token; ``iv`` must be 12 fresh random bytes."""
        body = bytearray(1)
        flags = 0
        if params.tag is not None:
            tag = params.tag.encode("utf-8")
            if len(tag) > MAX_TAG_LENGTH:
                raise EncodeError(f"a connection tag is at most {MAX_TAG_LENGTH} bytes of UTF-8")
            flags |= _FLAG_TAG
            body += encode_length(len(tag)) + tag
        if (params.receipt_nonce is None) != (params.receipt_secret is None):
            raise EncodeError("receipt_nonce and receipt_secret go together")
        if params.receipt_nonce is not None and params.receipt_secret is not None:
            if len(params.receipt_nonce) != 16 or len(params.receipt_secret) != 32:
                raise EncodeError("a receipt nonce is 16 bytes and a receipt secret 32")
            flags |= _FLAG_RECEIPTS
            body += params.receipt_nonce + params.receipt_secret
        body[0] = flags
        return encrypt_envelope(self._aead, bytes(body), iv)

    def open(self, token: bytes) -> TokenParameters:
        """The parameters in a token; :class:`DecodeError` if it is not one of ours."""
        body = decrypt_envelope(self._aead, token)
        r = Reader(body)
        flags = r.read_u8("token.flags")
        tag = r.read_utf8("token.tag") if flags & _FLAG_TAG else None
        nonce = secret = None
        if flags & _FLAG_RECEIPTS:
            nonce = r.read_bytes(16, "token.receipt_nonce")
            secret = r.read_bytes(32, "token.receipt_secret")
        return TokenParameters(tag, nonce, secret)

    def shared_secret(self, token: bytes) -> bytes:
        """The connection's shared secret for ``token``."""
        return _hmac_digest(self._secret_key, token, "sha256")
