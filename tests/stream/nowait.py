"""Running receiver tests both ways: awaiting the handler, or through ``handle_nowait`` first.

BTP connections (our client and server) call a handler's ``handle_nowait`` before awaiting it.
The ``receiver_path`` fixture (tests/stream/conftest.py) runs a test once each way; tests send
Prepares to a :class:`~ilp.stream.server.StreamServer` with :func:`call` and mount it on links
with :func:`mount`, which follow the fixture.
"""

from __future__ import annotations

from typing import Any

import trio

from ilp.link import PrepareHandler, Reply
from ilp.packet import Prepare


class _Path:
    nowait = False


PATH = _Path()


class NowaitCaller:
    """Calls a handler as a BTP connection does: ``handle_nowait`` first, awaiting the handler
    only when it declines (having done nothing)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def __call__(self, prepare: Prepare) -> Reply:
        replies: list[Reply] = []
        if self.handler.handle_nowait(prepare, replies.append):
            # StreamServer answers at once, exactly once.
            assert len(replies) == 1, replies
            await trio.lowlevel.checkpoint()
            return replies[0]
        assert not replies, "handle_nowait answered but declined"
        reply: Reply = await self.handler(prepare)
        return reply


def mount(handler: Any) -> PrepareHandler:
    """``handler`` as the fixture's path calls it: itself, or through ``handle_nowait``."""
    return NowaitCaller(handler) if PATH.nowait else handler


async def call(handler: Any, prepare: Prepare) -> Reply:
    """Send one Prepare to ``handler`` the fixture's way."""
    reply: Reply = await mount(handler)(prepare)
    return reply
