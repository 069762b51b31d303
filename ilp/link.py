"""The seam everything plugs into.

An :class:`IlpLink` sends a Prepare and returns what came back: a BTP client, an ILP-over-HTTP
client, an in-memory pair in :mod:`ilp.testing`, an account of a connector node. A
:data:`PrepareHandler` answers Prepares: a STREAM server, an ILDCP server, a router.
STREAM, ILDCP and SPSP only know this seam, never the transport under it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from .packet import Fulfill, Prepare, Reject

__all__ = ["IlpLink", "PrepareHandler", "Reply"]

Reply = Fulfill | Reject
"""What a Prepare turns into."""

PrepareHandler = Callable[[Prepare], Awaitable[Reply]]
"""An async callable answering one Prepare with a Fulfill or a Reject."""


@runtime_checkable
class IlpLink(Protocol):
    """Something that carries a Prepare to a peer and brings back its Fulfill or Reject.

    ``send`` never raises for an ILP-level failure: a packet that cannot be delivered resolves to
    a Reject (``T01`` peer unreachable, ``R00`` expired, ...), made locally where needed.

    A link class may set ``bounds_expiry = True`` to promise that ``send`` returns by the
    Prepare's expiry (with an R00 of its own when no reply came); a connector then sets no timer
    of its own around it. Links without the attribute are treated as unbounded.
    """

    async def send(self, prepare: Prepare) -> Reply: ...
