"""Links with ``send_nowait`` for the pay() tests: the callback path of ``ilp.stream.pay``.

:func:`nowait_link` wraps any link (one with only ``send``) and offers ``send_nowait`` on top:
each Prepare goes to ``send`` in a task of a nursery the wrapper owns, and ``on_reply`` is called
from that task, as a BTP connection calls it from its reader. With ``at_once``, a Prepare that the
wrapped link can answer without waiting (it has ``answer_now(prepare) -> Reply | None``) is
answered inside ``send_nowait`` itself, as the contract allows. ``decline`` makes every n-th
``send_nowait`` return False (a congested socket), so the caller falls back to ``send``.

Leaving the ``async with`` cancels what is still being sent and answers it with a T01 Reject: a
callback that arrives after the caller is done with the link (an abandoned probe).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from ilp.link import IlpLink, Reply, ReplyCallback
from ilp.packet import ErrorCode, Prepare, Reject

AnswerNow = Callable[[Prepare], Reply | None]


class NowaitLink:
    """``send`` as the wrapped link's, plus ``send_nowait`` (see the module docstring)."""

    bounds_expiry = True

    def __init__(
        self, link: IlpLink, nursery: trio.Nursery, *, at_once: bool, decline: int
    ) -> None:
        self.link = link
        self.nursery = nursery
        self.answer_now: AnswerNow | None = getattr(link, "answer_now", None) if at_once else None
        self.decline = decline
        self.calls = 0
        self.declined = 0
        self.answered_at_once = 0
        self.late = 0
        """Replies delivered after the wrapper was closed."""
        self.scopes: set[trio.CancelScope] = set()

    async def send(self, prepare: Prepare) -> Reply:
        return await self.link.send(prepare)

    def send_nowait(self, prepare: Prepare, on_reply: ReplyCallback) -> bool:
        self.calls += 1
        if self.decline and self.calls % self.decline == 0:
            self.declined += 1
            return False
        if self.answer_now is not None:
            reply = self.answer_now(prepare)
            if reply is not None:
                self.answered_at_once += 1
                on_reply(reply)
                return True
        self.nursery.start_soon(self._deliver, prepare, on_reply)
        return True

    async def _deliver(self, prepare: Prepare, on_reply: ReplyCallback) -> None:
        # The link's own task: the caller's cancellation does not reach it, closing does.
        with trio.CancelScope(shield=True) as scope:
            self.scopes.add(scope)
            try:
                reply = await self.link.send(prepare)
            finally:
                self.scopes.discard(scope)
        if scope.cancelled_caught:
            self.late += 1
            on_reply(Reject(ErrorCode("T01"), "", "the link was closed"))
        else:
            on_reply(reply)

    def close(self) -> None:
        """Stop sending: what is in flight is answered T01."""
        for scope in self.scopes:
            scope.cancel()


@asynccontextmanager
async def nowait_link(
    link: IlpLink, *, at_once: bool = False, decline: int = 0
) -> AsyncIterator[NowaitLink]:
    """A :class:`NowaitLink` over ``link``, its tasks in a nursery of its own."""
    async with trio.open_nursery() as nursery:
        wrapped = NowaitLink(link, nursery, at_once=at_once, decline=decline)
        try:
            yield wrapped
        finally:
            wrapped.close()
