"""What the ASGI applications (SPSP, ILP over HTTP, the node's API) share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["Message", "Receive", "Scope", "Send", "header", "serve_lifespan"]

Scope = Mapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first request header called ``name`` (lowercase), or None."""
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == name:
            return bytes(value)
    return None


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer a lifespan scope: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
