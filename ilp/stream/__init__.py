"""STREAM (RFC 29): codec, crypto, receipts, connections, the receiver and payments.

* :mod:`ilp.stream.packet`, :mod:`ilp.stream.crypto`, :mod:`ilp.stream.receipt` — wire formats.
* :mod:`ilp.stream.core` — the sans-I/O connection; :mod:`ilp.stream.pay_core` — the payment engine.
* :mod:`ilp.stream.connection`, :mod:`ilp.stream.client`, :mod:`ilp.stream.server` — trio
  connections, :func:`open_stream_connection`, :class:`StreamServer`.
* :mod:`ilp.stream.pay` — :func:`pay` and :func:`quote`.

Import payments from their module (``from ilp.stream.pay import pay``): the name ``pay`` in this
package is the submodule. The trio parts are imported lazily, on first use of their names, so that importing the codec
never pulls in trio.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .crypto import (
    StreamCrypto,
    derive_encryption_key,
    derive_fulfillment_key,
    derive_legacy_shared_secret,
)
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
    FrameType,
    StreamClose,
    StreamData,
    StreamDataBlocked,
    StreamMaxData,
    StreamMaxMoney,
    StreamMoney,
    StreamMoneyBlocked,
    StreamPacket,
    StreamReceipt,
    decode_frame,
    encode_frame,
)
from .receipt import InvalidReceiptError, Receipt, verify_receipt

if TYPE_CHECKING:
    from .client import ConnectionRouter, open_stream_connection
    from .connection import Connection, DataStream
    from .server import StreamServer

__all__ = [
    "Connection",
    "ConnectionAssetDetails",
    "ConnectionClose",
    "ConnectionDataBlocked",
    "ConnectionMaxData",
    "ConnectionMaxStreamId",
    "ConnectionNewAddress",
    "ConnectionRouter",
    "ConnectionStreamIdBlocked",
    "DataStream",
    "ErrorCode",
    "Frame",
    "FrameType",
    "InvalidReceiptError",
    "Receipt",
    "StreamClose",
    "StreamCrypto",
    "StreamData",
    "StreamDataBlocked",
    "StreamMaxData",
    "StreamMaxMoney",
    "StreamMoney",
    "StreamMoneyBlocked",
    "StreamPacket",
    "StreamReceipt",
    "StreamServer",
    "decode_frame",
    "derive_encryption_key",
    "derive_fulfillment_key",
    "derive_legacy_shared_secret",
    "encode_frame",
    "open_stream_connection",
    "verify_receipt",
]

_LAZY = {
    "Connection": "connection",
    "DataStream": "connection",
    "ConnectionRouter": "client",
    "open_stream_connection": "client",
    "StreamServer": "server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ilp.stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
