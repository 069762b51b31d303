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

__all__ = ["IlpLink", "PrepareHandler", "Reply", "ReplyCallback"]

Reply = Fulfill | Reject
"""What a Prepare turns into."""

PrepareHandler = Callable[[Prepare], Awaitable[Reply]]
"""An async callable answering one Prepare with a Fulfill or a Reject.

A handler object may also offer a synchronous entry point, which a transport tries first
(BTP connections do): ``handle_nowait(prepare, respond) -> bool``. It either takes the Prepare
and returns True, promising to call ``respond(reply)`` exactly once, soon enough to answer
before the Prepare expires (at once, or from a :data:`ReplyCallback` of a link's
``send_nowait``); or it returns False having done nothing, and the transport awaits the handler
as usual. It must not block. A connector forwarding over a link with ``send_nowait`` answers this
way without a task of its own per Prepare.
"""

ReplyCallback = Callable[[Reply], None]
"""Called with the reply to a Prepare sent by a link's ``send_nowait``."""


@runtime_checkable
class IlpLink(Protocol):
    """Something that carries a Prepare to a peer and brings back its Fulfill or Reject.

    ``send`` never raises for an ILP-level failure: a packet that cannot be delivered resolves to
    a Reject (``T01`` peer unreachable, ``R00`` expired, ...), made locally where needed.

    A link class may set ``bounds_expiry = True`` to promise that ``send`` returns by the
    Prepare's expiry (with an R00 of its own when no reply came); a connector then sets no timer
    of its own around it. Links without the attribute are treated as unbounded.

    Such a link may also offer ``send_nowait(prepare, on_reply) -> bool``: it sends without
    waiting and calls ``on_reply(reply)`` exactly once, by the expiry at the latest (with the
    same local Rejects as ``send``), from one of the link's own tasks or at once. It returns
    False, having sent nothing, when it cannot send without waiting (then ``send`` is the way).
    ``on_reply`` must not block.
    """

    async def send(self, prepare: Prepare) -> Reply: ...
