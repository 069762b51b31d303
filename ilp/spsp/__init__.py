"""SPSP (RFC 9) and payment pointers (RFC 26).

* :mod:`ilp.spsp.pointer` — payment pointers and SPSP responses (sans-I/O).
* :mod:`ilp.spsp.client` — :func:`query_spsp` (httpx).
* :mod:`ilp.spsp.server` — :class:`SpspApp` (ASGI) and :func:`serve_spsp` (our HTTP/1.1
  server, :mod:`ilp._http_server`).

The client and server are imported lazily, on first use of their names, so that importing the
pointer code never pulls in httpx or trio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .pointer import (
    DEFAULT_PATH,
    SPSP_ACCEPT,
    SPSP_CONTENT_TYPE,
    PaymentPointer,
    PaymentPointerError,
    SpspResponse,
    check_redirect,
    is_valid_payment_pointer,
    parse_payment_pointer,
    parse_spsp_response,
    resolve_payment_pointer,
    resolve_spsp_endpoint,
)

if TYPE_CHECKING:
    from .client import SpspTimeoutError, SpspUnreachableError, query_spsp
    from .server import AccountResolver, CredentialSource, SpspApp, serve_spsp

__all__ = [
    "DEFAULT_PATH",
    "SPSP_ACCEPT",
    "SPSP_CONTENT_TYPE",
    "AccountResolver",
    "CredentialSource",
    "PaymentPointer",
    "PaymentPointerError",
    "SpspApp",
    "SpspResponse",
    "SpspTimeoutError",
    "SpspUnreachableError",
    "check_redirect",
    "is_valid_payment_pointer",
    "parse_payment_pointer",
    "parse_spsp_response",
    "query_spsp",
    "resolve_payment_pointer",
    "resolve_spsp_endpoint",
    "serve_spsp",
]

_LAZY = {
    "SpspTimeoutError": "client",
    "SpspUnreachableError": "client",
    "query_spsp": "client",
    "AccountResolver": "server",
    "CredentialSource": "server",
    "SpspApp": "server",
    "serve_spsp": "server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ilp.spsp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
