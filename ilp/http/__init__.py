"""ILP over HTTP (RFC 35, synchronous mode): a client link and a server application.

* :class:`HttpLink` / :func:`open_http_link`: an :class:`~ilp.link.IlpLink` that POSTs each
  Prepare to a peer and returns its Fulfill or Reject.
* :class:`IlpHttpApp` / :func:`serve_ilp_http`: an ASGI application answering the Prepares a
  peer POSTs, through a :data:`~ilp.link.PrepareHandler`.

See docs/connecting.md for how they fit together, and what the asynchronous mode of the newest
RFC text would add.
"""

from .client import (
    CONTENT_TYPE,
    HttpAuthError,
    HttpLink,
    HttpStatusError,
    check_http_url,
    is_http_url,
    open_http_link,
    reject_for_status,
    split_http_url,
)
from .server import MAX_REQUEST_SIZE, IlpHttpApp, IlpHttpRequest, serve_ilp_http

__all__ = [
    "CONTENT_TYPE",
    "MAX_REQUEST_SIZE",
    "HttpAuthError",
    "HttpLink",
    "HttpStatusError",
    "IlpHttpApp",
    "IlpHttpRequest",
    "check_http_url",
    "is_http_url",
    "open_http_link",
    "reject_for_status",
    "serve_ilp_http",
    "split_http_url",
]
