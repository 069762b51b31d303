"""BTP 2.0 (RFC 23): the WebSocket transport to connectors.

* :mod:`ilp.btp.packet` — the codec (sans-I/O): :class:`Message`, :class:`Response`,
  :class:`Error`, :class:`Transfer`, :func:`decode_btp`.
* :mod:`ilp.btp.session` — the protocol state of one connection (sans-I/O).
* :mod:`ilp.btp.url` — ``btp+ws://user:token@host:port/path`` URLs.
* :mod:`ilp.btp.client` — :func:`open_btp_client` / :func:`connect_btp` (trio).
* :mod:`ilp.btp.server` — :func:`serve_btp` (trio).

The trio parts are imported lazily, on first use of their names, so that importing the codec
or the session core never pulls in trio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
)
from .session import BtpSession, LocalProtocolError, RemoteProtocolError
from .url import BtpUrl, parse_btp_url

if TYPE_CHECKING:
    from .client import BtpClient, connect_btp, open_btp_client
    from .server import BtpRequest, BtpServerLink, OnClient, serve_btp

__all__ = [
    "BtpClient",
    "BtpPacket",
    "BtpRequest",
    "BtpServerLink",
    "BtpSession",
    "BtpType",
    "BtpUrl",
    "ContentType",
    "Error",
    "LocalProtocolError",
    "Message",
    "OnClient",
    "ProtocolData",
    "RemoteProtocolError",
    "Response",
    "Transfer",
    "connect_btp",
    "decode_btp",
    "open_btp_client",
    "parse_btp_url",
    "serve_btp",
]

_LAZY = {
    "BtpClient": "client",
    "connect_btp": "client",
    "open_btp_client": "client",
    "BtpRequest": "server",
    "BtpServerLink": "server",
    "OnClient": "server",
    "serve_btp": "server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ilp.btp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
