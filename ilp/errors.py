"""The one exception hierarchy of trio-ilp.

Every error the library raises on purpose derives from :class:`IlpError`::

    IlpError
    ├── DecodeError          bytes from the outside could not be decoded (field + byte offset)
    ├── EncodeError          a value cannot be put on the wire (negative amount, bad address, ...)
    ├── TransportError       the link under us failed
    │   ├── ConnectError     could not reach the peer at all
    │   └── AuthError        the peer refused our credentials
    ├── RejectedError        a Prepare came back as an ILP Reject (code, triggered_by, message)
    ├── StreamError          a STREAM connection or stream failed
    └── SpspError            an SPSP query failed

Messages say what happened and what to try. They never contain shared secrets or tokens.
"""

from __future__ import annotations


class IlpError(Exception):
    """Base class of every error raised on purpose by trio-ilp."""


class DecodeError(IlpError, ValueError):
    """Bytes could not be decoded.

    ``field`` names what was being read (``"prepare.amount"``) and ``offset`` is the byte offset
    in the buffer handed to the decoder, when known.
    """

    def __init__(self, message: str, *, field: str | None = None, offset: int | None = None):
        self.reason = message
        self.field = field
        self.offset = offset
        parts = []
        if field is not None:
            parts.append(field)
        if offset is not None:
            parts.append(f"at byte {offset}")
        where = " ".join(parts)
        super().__init__(f"{where}: {message}" if where else message)


class EncodeError(IlpError, ValueError):
    """A value cannot be encoded (out of range, wrong size, invalid address)."""


class TransportError(IlpError):
    """The transport under a link failed."""


class ConnectError(TransportError):
    """The peer could not be reached. ``reason`` says why in a few words (``connection
    refused``, ``the WebSocket upgrade was refused with HTTP 405``), for a message that names
    the peer itself; it defaults to the whole message."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason


class AuthError(TransportError):
    """The peer refused our credentials."""


class RejectedError(IlpError):
    """An ILP Prepare was rejected."""

    def __init__(self, code: str, triggered_by: str, message: str, data: bytes = b""):
        self.code = code
        self.triggered_by = triggered_by
        self.reject_message = message
        self.data = data
        by = f" by {triggered_by}" if triggered_by else ""
        text = f": {message}" if message else ""
        super().__init__(f"rejected with {code}{by}{text}")


class StreamError(IlpError):
    """A STREAM connection or stream failed."""


class SpspError(IlpError):
    """An SPSP query failed."""
