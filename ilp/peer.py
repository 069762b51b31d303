"""Conventions shared by the peer protocols (ILDCP, CCP), sans-I/O.

Peer protocols travel as ILP Prepares between *adjacent* nodes, addressed to ``peer.*``, with amount
0 and a publicly known condition: the SHA-256 of 32 zero bytes. A successful reply is a Fulfill with
those 32 zero bytes. Requests expire 60 s after they are made (JS and RS both use that).

:func:`check_peer_request` is what a receiver does first: right destination, the peer condition,
not expired. It raises :class:`PeerRequestError` (a :class:`~ilp.errors.DecodeError`) that carries
the ILP error code to reject with.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Final

from .errors import DecodeError
from .packet import ErrorCode, Prepare

__all__ = [
    "PEER_CONDITION",
    "PEER_EXPIRY",
    "PEER_FULFILLMENT",
    "PeerRequestError",
    "check_peer_request",
]

PEER_FULFILLMENT: Final = bytes(32)
"""The fulfillment of every peer-protocol request: 32 zero bytes."""

PEER_CONDITION: Final = hashlib.sha256(PEER_FULFILLMENT).digest()
"""``sha256(PEER_FULFILLMENT)`` = ``66687aad...0d5f2925``, the condition of every peer request."""

PEER_EXPIRY: Final = timedelta(seconds=60)
"""How long a peer-protocol request lives by default."""


class PeerRequestError(DecodeError):
    """A Prepare is not a valid request of the peer protocol it was handed to.

    ``code`` is the ILP error code a server answers with: ``F01`` for a wrong destination or
    condition, ``R00`` for an expired request.
    """

    def __init__(self, message: str, *, code: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = ErrorCode(code)


def check_peer_request(prepare: Prepare, destination: str, now: datetime) -> None:
    """Raise :class:`PeerRequestError` unless ``prepare`` is a live request to ``destination``.

    Checked in the order ilp-protocol-ildcp and ilp-protocol-ccp use: destination, condition,
    expiry. A request expiring exactly at ``now`` still counts (both reference implementations
    reject only when the expiry is strictly in the past).
    """
    if prepare.destination != destination:
        raise PeerRequestError(
            f"destination is {prepare.destination[:80]!r}, expected {destination!r}",
            code="F01",
            field="prepare.destination",
        )
    if prepare.execution_condition != PEER_CONDITION:
        raise PeerRequestError(
            "the condition is not the peer-protocol condition (sha256 of 32 zero bytes)",
            code="F01",
            field="prepare.execution_condition",
        )
    if prepare.expires_at < now:
        raise PeerRequestError(
            f"the request expired at {prepare.expires_at.isoformat()}, before {now.isoformat()}",
            code="R00",
            field="prepare.expires_at",
        )
