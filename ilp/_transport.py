"""What the HTTP clients (SPSP, ILP-over-HTTP) say when a connection fails."""

from __future__ import annotations

import errno
from collections.abc import Iterator

__all__ = ["causes", "transport_reason"]


def causes(exc: BaseException, depth: int = 0) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of exception groups among them."""
    if depth > 20:
        return
    yield exc
    if isinstance(exc, BaseExceptionGroup):
        for member in exc.exceptions:
            yield from causes(member, depth + 1)
    nested = exc.__cause__ or exc.__context__
    if nested is not None:
        yield from causes(nested, depth + 1)


def transport_reason(exc: BaseException) -> str:
    """A short reason for messages: "connection refused" when that is what happened."""
    for cause in causes(exc):
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    return text[:200] if text else type(exc).__name__
