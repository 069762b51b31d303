"""trio-ilp: the Interledger protocol stack (ILPv4, BTP, ILDCP, STREAM, SPSP) for trio."""

from .errors import (
    AuthError,
    ConnectError,
    DecodeError,
    EncodeError,
    IlpError,
    RejectedError,
    SpspError,
    StreamError,
    TransportError,
)
from .packet import (
    AmountTooLargeData,
    ErrorCode,
    ErrorKind,
    Fulfill,
    IlpPacket,
    PacketType,
    Prepare,
    Reject,
    decode_packet,
    encode_packet,
)

__version__ = "0.1.0"

__all__ = [
    "AmountTooLargeData",
    "AuthError",
    "ConnectError",
    "DecodeError",
    "EncodeError",
    "ErrorCode",
    "ErrorKind",
    "Fulfill",
    "IlpError",
    "IlpPacket",
    "PacketType",
    "Prepare",
    "Reject",
    "RejectedError",
    "SpspError",
    "StreamError",
    "TransportError",
    "__version__",
    "decode_packet",
    "encode_packet",
]
