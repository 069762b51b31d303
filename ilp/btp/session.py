"""The state of one BTP connection, sans-I/O (no sockets, no clock, no randomness of its own).

A :class:`BtpSession` takes the binary WebSocket messages that arrived and says what they mean;
its ``send_*`` methods return the bytes to write. The trio shells in :mod:`ilp.btp.client` and
:mod:`ilp.btp.server` read, feed this core, and write. One session lives as long as one
WebSocket; a reconnection starts a new one.

Client::

    session = BtpSession.client(os.urandom)
    ws.send(session.start_auth(username, token))
    event = session.receive_frame(frame, now).event      # Authenticated or AuthRefused

Server::

    session = BtpSession.server(os.urandom)
    event = session.receive_frame(first_frame, now).event  # AuthRequested (or RemoteProtocolError)
    ws.send(session.accept_auth())      # or session.refuse_auth("...", now), then close

Then, on both sides: ``request_id, frame = session.send_prepare(prepare)`` and a later
:class:`ReplyReceived` with that id; :class:`PrepareReceived` answered with
``session.send_reply(request_id, reply)``.

Errors follow h11: :class:`LocalProtocolError` when the caller misuses the session,
:class:`RemoteProtocolError` when the peer broke the protocol so badly that the connection must
close (only during authentication; later, bad frames are dropped or answered, never raised).

Carrying ILP (RFC 23, SPEC §7.4): a Prepare goes out in a Message, its reply in a Response.
Liberal on input: an ``ilp`` entry is accepted in either packet type and dispatched on the ILP
packet type (interledger-rs appears to invert the mapping). Responses and Errors with an unknown
request id are dropped without an answer.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, NamedTuple

from ..errors import DecodeError, IlpError, TransportError
from ..packet import (
    MAX_MESSAGE_SIZE,
    ErrorCode,
    Fulfill,
    Prepare,
    Reject,
    decode_packet,
    is_fulfillment_valid,
)
from .packet import (
    BtpPacket,
    BtpType,
    ContentType,
    Error,
    Message,
    ProtocolData,
    Response,
    Transfer,
    decode_btp,
    encode_ilp_frame,
    peek_ilp,
)

__all__ = [
    "AuthRefused",
    "AuthRequested",
    "Authenticated",
    "BtpSession",
    "Dropped",
    "Event",
    "LocalProtocolError",
    "PrepareReceived",
    "Received",
    "RemoteProtocolError",
    "ReplyReceived",
    "Role",
    "SessionState",
    "local_reject",
]

RandomBytes = Callable[[int], bytes]
_U32 = struct.Struct(">I")

#: BTP error names by code (RFC 23).
BTP_ERROR_NAMES: Final = {
    "T00": "UnreachableError",
    "F00": "NotAcceptedError",
    "F01": "InvalidFieldsError",
    "F03": "TransferNotFoundError",
    "F04": "InvalidFulfillmentError",
    "F05": "DuplicateIdError",
    "F06": "AlreadyRolledBackError",
    "F07": "AlreadyFulfilledError",
    "F08": "InsufficientBalanceError",
}


class LocalProtocolError(IlpError):
    """The caller used the session in a way BTP does not allow (a bug on our side)."""


class RemoteProtocolError(TransportError):
    """The peer broke the protocol; the connection must close.

    ``reply`` holds a frame to send before closing (a BTP Error), or None.
    """

    def __init__(self, message: str, *, reply: bytes | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class SessionState(enum.Enum):
    """Where a session is: authentication first, then open, then closed."""

    IDLE = "idle"  # client, before start_auth
    AUTHENTICATING = "authenticating"  # client waits for the answer; server waits for auth
    AUTH_PENDING = "auth-pending"  # server: AuthRequested delivered, accept or refuse next
    OPEN = "open"
    CLOSED = "closed"


# ----------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class AuthRequested:
    """Server: the client asked to authenticate. Answer with accept_auth or refuse_auth."""

    request_id: int
    username: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Client: the server accepted our credentials."""


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """Client: the server answered the auth request with a BTP Error."""

    error: Error


@dataclass(frozen=True, slots=True)
class PrepareReceived:
    """The peer sent a Prepare; answer it with ``send_reply(request_id, reply)``."""

    request_id: int
    prepare: Prepare


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    """The reply to our Prepare ``request_id``.

    ``reply`` is what the peer sent, or a Reject made here when its answer was unusable (a BTP
    Error, no ``ilp`` entry, a fulfillment that does not match the condition).
    """

    request_id: int
    reply: Fulfill | Reject


@dataclass(frozen=True, slots=True)
class Dropped:
    """A frame was ignored without an answer (unparseable, or a reply nobody waits for)."""

    reason: str


Event = AuthRequested | Authenticated | AuthRefused | PrepareReceived | ReplyReceived | Dropped


class Received(NamedTuple):
    """What :meth:`BtpSession.receive_frame` makes of a frame: an event and/or a frame to send."""

    event: Event | None
    reply: bytes | None


def local_reject(code: str, message: str, triggered_by: str = "") -> Reject:
    """A Reject made on this side of the link (``triggered_by`` may be empty)."""
    raw = message.encode("utf-8")
    if len(raw) > MAX_MESSAGE_SIZE:
        message = raw[:MAX_MESSAGE_SIZE].decode("utf-8", "ignore")
    return Reject(ErrorCode(code), triggered_by, message)


def _utcnow() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------------------------
# The session


class BtpSession:
    """One BTP connection's protocol state. Build it with :meth:`client` or :meth:`server`.

    ``random_bytes(n)`` (e.g. ``os.urandom``) supplies request ids: random 32-bit numbers, never
    one that is still in flight. ``address`` is our ILP address if known; it goes into the
    ``triggered_by`` of Rejects made here (empty is allowed).
    """

    def __init__(self, role: Role, random_bytes: RandomBytes, *, address: str = "") -> None:
        self.role = role
        self.address = address
        self.clock: Callable[[], datetime] = _utcnow
        """The wall clock read for the ``triggered_at`` of BTP Errors when
        :meth:`receive_frame` is given no ``now``."""
        self._random = random_bytes
        self.state = SessionState.IDLE if role is Role.CLIENT else SessionState.AUTHENTICATING
        self._auth_request_id: int | None = None
        # Our requests in flight: request id -> condition of the Prepare.
        self._outgoing: dict[int, bytes] = {}
        # The peer's requests we still have to answer.
        self._incoming: set[int] = set()

    @classmethod
    def client(cls, random_bytes: RandomBytes, *, address: str = "") -> BtpSession:
        """The session of the side that dialed and authenticates."""
        return cls(Role.CLIENT, random_bytes, address=address)

    @classmethod
    def server(cls, random_bytes: RandomBytes, *, address: str = "") -> BtpSession:
        """The session of the side that accepted the WebSocket and checks credentials."""
        return cls(Role.SERVER, random_bytes, address=address)

    # -- inspection ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state is SessionState.OPEN

    @property
    def in_flight(self) -> frozenset[int]:
        """Request ids of our Prepares still waiting for a reply."""
        return frozenset(self._outgoing)

    @property
    def awaiting_reply(self) -> frozenset[int]:
        """Request ids of the peer's Prepares we have not answered yet."""
        return frozenset(self._incoming)

    # -- authentication -----------------------------------------------------------------------

    def start_auth(self, username: str, token: str) -> bytes:
        """Client: the auth Message, the first frame to send after the WebSocket opens.

        Entries as ilp-plugin-btp sends them: ``auth`` (octet-stream, empty), ``auth_username``
        and ``auth_token`` (text).
        """
        if self.role is not Role.CLIENT or self.state is not SessionState.IDLE:
            raise LocalProtocolError(f"start_auth needs an idle client session, not {self._desc}")
        request_id = self._new_request_id()
        self._auth_request_id = request_id
        self.state = SessionState.AUTHENTICATING
        return Message(
            request_id,
            (
                ProtocolData("auth", ContentType.OCTET_STREAM, b""),
                ProtocolData.text("auth_username", username),
                ProtocolData.text("auth_token", token),
            ),
        ).encode()

    def accept_auth(self) -> bytes:
        """Server: accept the pending auth request; returns the Response to send."""
        request_id = self._pending_auth()
        self.state = SessionState.OPEN
        return Response(request_id).encode()

    def refuse_auth(self, message: str, now: datetime) -> bytes:
        """Server: refuse the pending auth request; returns the BTP Error to send, then close."""
        request_id = self._pending_auth()
        self.state = SessionState.CLOSED
        return _error(request_id, "F00", message, now)

    def _pending_auth(self) -> int:
        if self.state is not SessionState.AUTH_PENDING or self._auth_request_id is None:
            raise LocalProtocolError(f"no auth request is waiting for a decision ({self._desc})")
        return self._auth_request_id

    # -- sending --------------------------------------------------------------------------------

    def send_prepare(self, prepare: Prepare) -> tuple[int, bytes]:
        """A Message carrying ``prepare``: its request id and the frame to send."""
        if self.state is not SessionState.OPEN:
            raise LocalProtocolError(f"cannot send a Prepare on a session that is {self._desc}")
        request_id = self._new_request_id()
        frame = encode_ilp_frame(BtpType.MESSAGE, request_id, prepare.encode())
        self._outgoing[request_id] = prepare.execution_condition
        return request_id, frame

    def abandon(self, request_id: int) -> None:
        """Stop waiting for the reply to ``request_id`` (it expired); a late reply is dropped."""
        self._outgoing.pop(request_id, None)

    def send_reply(self, request_id: int, reply: Fulfill | Reject) -> bytes:
        """The Response answering the peer's Prepare ``request_id``."""
        if self.state is not SessionState.OPEN:
            raise LocalProtocolError(f"cannot reply on a session that is {self._desc}")
        if request_id not in self._incoming:
            raise LocalProtocolError(f"no Prepare with request id {request_id} awaits a reply")
        if not isinstance(reply, Fulfill | Reject):
            raise LocalProtocolError(f"a reply is a Fulfill or a Reject, not {reply!r}")
        self._incoming.discard(request_id)
        return _ilp_response(request_id, reply)

    def connection_lost(self) -> frozenset[int]:
        """The WebSocket is gone. Returns the ids of our Prepares that will get no reply."""
        lost = frozenset(self._outgoing)
        self._outgoing.clear()
        self._incoming.clear()
        self.state = SessionState.CLOSED
        return lost

    # -- receiving ------------------------------------------------------------------------------

    def receive_frame(self, frame: bytes, now: datetime | None = None) -> Received:
        """Make sense of one binary WebSocket message from the peer.

        ``now`` is only used as the ``triggered_at`` of BTP Errors sent back; without it,
        :attr:`clock` is read when one is sent (most frames need no clock at all).
        """
        state = self.state
        if state is SessionState.OPEN and type(frame) is bytes:
            # Nearly every frame: a Message or Response carrying one ILP packet.
            peeked = peek_ilp(frame)
            if peeked is not None:
                kind, request_id, raw = peeked
                if kind == BtpType.MESSAGE:
                    return self._receive_ilp(request_id, raw, now, is_request=True)
                return self._response_ilp(request_id, raw, now)
        if state is SessionState.CLOSED:
            return Received(Dropped("the session is closed"), None)
        if state is SessionState.IDLE:
            raise LocalProtocolError("start_auth before feeding frames to a client session")
        if state is SessionState.AUTH_PENDING:
            raise LocalProtocolError("accept or refuse the auth request before reading on")
        try:
            packet = decode_btp(frame)
        except DecodeError as exc:
            if self.role is Role.SERVER and state is SessionState.AUTHENTICATING:
                self.state = SessionState.CLOSED
                raise RemoteProtocolError(
                    f"the first frame is not a BTP packet: {exc}",
                    reply=_error(
                        0, "F00", "the first frame must be the auth Message", now or self.clock()
                    ),
                ) from exc
            return Received(Dropped(f"unparseable BTP packet: {exc}"), None)
        if state is SessionState.AUTHENTICATING:
            if self.role is Role.SERVER:
                return Received(self._receive_auth(packet, now), None)
            if packet.request_id == self._auth_request_id and isinstance(packet, Response | Error):
                return Received(self._receive_auth_answer(packet), None)
            return Received(Dropped("a packet before the auth answer"), None)
        if isinstance(packet, Message):
            return self._receive_message(packet, now)
        if isinstance(packet, Response):
            return self._receive_response(packet, now)
        if isinstance(packet, Error):
            return self._receive_error(packet)
        return self._receive_transfer(packet, now)

    def _receive_auth(self, packet: BtpPacket, now: datetime | None) -> AuthRequested:
        def refuse(why: str) -> RemoteProtocolError:
            self.state = SessionState.CLOSED
            return RemoteProtocolError(
                why, reply=_error(packet.request_id, "F00", why, now or self.clock())
            )

        if not isinstance(packet, Message):
            raise refuse("the first BTP packet must be the auth Message")
        primary = packet.primary
        if primary is None or primary.name != "auth":
            raise refuse("the first protocol-data entry of the auth Message must be 'auth'")
        token = packet.get("auth_token")
        if token is None:
            raise refuse("the auth Message has no auth_token")
        username = packet.get("auth_username")
        try:
            token_text = token.data.decode("utf-8")
            username_text = username.data.decode("utf-8") if username is not None else ""
        except UnicodeDecodeError:
            raise refuse("auth_username and auth_token must be UTF-8 text") from None
        self._auth_request_id = packet.request_id
        self.state = SessionState.AUTH_PENDING
        return AuthRequested(packet.request_id, username_text, token_text)

    def _receive_auth_answer(self, packet: Response | Error) -> Authenticated | AuthRefused:
        self._auth_request_id = None
        if isinstance(packet, Response):
            self.state = SessionState.OPEN
            return Authenticated()
        self.state = SessionState.CLOSED
        return AuthRefused(packet)

    def _receive_message(self, packet: Message, now: datetime | None) -> Received:
        entry = packet.get("ilp")
        if entry is None:
            # Side protocols we do not know: acknowledge and ignore (RFC 23).
            return Received(None, Response(packet.request_id).encode())
        return self._receive_ilp(packet.request_id, entry.data, now, is_request=True)

    def _receive_response(self, packet: Response, now: datetime | None) -> Received:
        entry = packet.get("ilp")
        if entry is not None:
            return self._response_ilp(packet.request_id, entry.data, now)
        if packet.request_id in self._outgoing:
            return self._resolve(
                packet.request_id,
                self._reject("T00", "the peer answered the Prepare without an ILP reply"),
            )
        return Received(Dropped(f"response to unknown request id {packet.request_id}"), None)

    def _response_ilp(self, request_id: int, raw: bytes, now: datetime | None) -> Received:
        """A Response whose ``ilp`` entry holds ``raw``."""
        if request_id in self._outgoing:
            return self._receive_ilp(request_id, raw, now, is_request=False)
        # A Prepare in a Response (interledger-rs's mapping) is still a Prepare.
        try:
            inner = decode_packet(raw)
        except DecodeError:
            inner = None
        if isinstance(inner, Prepare):
            return self._receive_ilp(request_id, raw, now, is_request=True)
        return Received(Dropped(f"response to unknown request id {request_id}"), None)

    def _receive_error(self, packet: Error) -> Received:
        if packet.request_id not in self._outgoing:
            return Received(Dropped(f"BTP error for unknown request id {packet.request_id}"), None)
        code = "F00" if packet.code.startswith("F") else "T00"
        text = f": {packet.text}" if packet.data else ""
        return self._resolve(
            packet.request_id,
            self._reject(
                code, f"the peer answered with BTP error {packet.code} {packet.name}{text}"
            ),
        )

    def _receive_transfer(self, packet: Transfer, now: datetime | None) -> Received:
        return Received(
            None,
            _error(
                packet.request_id,
                "F00",
                "BTP Transfer (settlement) is not supported",
                now or self.clock(),
            ),
        )

    def _receive_ilp(
        self, request_id: int, raw: bytes, now: datetime | None, *, is_request: bool
    ) -> Received:
        """An ``ilp`` entry. ``is_request`` is False only for a Response to our own Prepare."""
        try:
            inner = decode_packet(raw)
        except DecodeError as exc:
            if not is_request:
                return self._resolve(
                    request_id, self._reject("T00", f"the peer's ILP reply is malformed: {exc}")
                )
            # A garbled Prepare is answered as ilp-connector does: an ILP Reject F01.
            reply = self._reject("F01", f"invalid ILP packet: {exc}")
            return Received(None, _ilp_response(request_id, reply))
        if isinstance(inner, Prepare):
            if not is_request:
                return self._resolve(
                    request_id, self._reject("T00", "the peer answered our Prepare with a Prepare")
                )
            if request_id in self._incoming:
                return Received(
                    None,
                    _error(
                        request_id,
                        "F05",
                        f"request id {request_id} is already in use",
                        now or self.clock(),
                    ),
                )
            self._incoming.add(request_id)
            return Received(PrepareReceived(request_id, inner), None)
        condition = self._outgoing.get(request_id)
        if condition is None:
            # A Message carrying a Fulfill/Reject nobody waits for: answer, a request needs one.
            return Received(
                None,
                _error(
                    request_id, "F01", "an ILP reply to no Prepare of ours", now or self.clock()
                ),
            )
        # The reply to our Prepare, whichever packet type carried it.
        if isinstance(inner, Fulfill) and not is_fulfillment_valid(inner.fulfillment, condition):
            inner = self._reject("F05", "the peer's fulfillment does not match the condition")
        return self._resolve(request_id, inner)

    def _resolve(self, request_id: int, reply: Fulfill | Reject) -> Received:
        del self._outgoing[request_id]
        return Received(ReplyReceived(request_id, reply), None)

    def _reject(self, code: str, message: str) -> Reject:
        return local_reject(code, message, self.address)

    # -- helpers --------------------------------------------------------------------------------

    def _new_request_id(self) -> int:
        outgoing = self._outgoing
        for _ in range(64):
            raw = self._random(4)
            if len(raw) != 4:
                raise LocalProtocolError("random_bytes(4) must return 4 bytes")
            request_id: int = _U32.unpack(raw)[0]
            if request_id not in outgoing and request_id != self._auth_request_id:
                return request_id
        raise LocalProtocolError("random_bytes keeps returning request ids already in flight")

    @property
    def _desc(self) -> str:
        return f"{self.role.value} in state {self.state.value}"


def _error(request_id: int, code: str, message: str, now: datetime) -> bytes:
    data = message.encode("utf-8")[:8192]
    return Error(request_id, code, BTP_ERROR_NAMES.get(code, ""), now, data).encode()


def _ilp_response(request_id: int, reply: Fulfill | Reject) -> bytes:
    return encode_ilp_frame(BtpType.RESPONSE, request_id, reply.encode())
