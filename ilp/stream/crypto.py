"""STREAM cryptography (RFC 29 §4.3): keys, AES-256-GCM envelopes, fulfillments. Sans-I/O.

::

    encryption_key  = HMAC-SHA256(shared_secret, "ilp_stream_encryption")
    fulfillment_key = HMAC-SHA256(shared_secret, "ilp_stream_fulfillment")
    envelope        = IV(12) || TAG(16) || CIPHERTEXT        (AES-256-GCM, no associated data)
    fulfillment     = HMAC-SHA256(fulfillment_key, envelope)  condition = SHA-256(fulfillment)

Randomness: encryption needs a fresh 12-byte IV per packet. :meth:`StreamCrypto.encrypt` reads
it from ``os.urandom`` unless the caller passes ``iv`` -- the one documented exception to "sans-I/O
code takes random bytes as arguments", because a forgotten or reused IV breaks GCM outright.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..crypto import HmacSha256
from ..errors import DecodeError, EncodeError
from ..oer import Buffer
from .packet import StreamPacket

__all__ = [
    "ENCRYPTION_OVERHEAD",
    "IV_SIZE",
    "TAG_SIZE",
    "StreamCrypto",
    "decrypt_envelope",
    "derive_encryption_key",
    "derive_fulfillment_key",
    "derive_legacy_shared_secret",
    "encrypt_envelope",
]

IV_SIZE: Final = 12
TAG_SIZE: Final = 16
ENCRYPTION_OVERHEAD: Final = IV_SIZE + TAG_SIZE

_ENCRYPTION_STRING: Final = b"ilp_stream_encryption"
_FULFILLMENT_STRING: Final = b"ilp_stream_fulfillment"
_SHARED_SECRET_STRING: Final = b"ilp_stream_shared_secret"

_hmac_digest = hmac.digest
_sha256 = hashlib.sha256
_urandom = os.urandom


def derive_encryption_key(shared_secret: bytes) -> bytes:
    """The AES-256-GCM key of a connection: ``HMAC-SHA256(shared_secret, "ilp_stream_encryption")``."""
    return _hmac_digest(shared_secret, _ENCRYPTION_STRING, "sha256")


def derive_fulfillment_key(shared_secret: bytes) -> bytes:
    """The fulfillment HMAC key: ``HMAC-SHA256(shared_secret, "ilp_stream_fulfillment")``."""
    return _hmac_digest(shared_secret, _FULFILLMENT_STRING, "sha256")


def derive_legacy_shared_secret(server_secret: bytes, token: str) -> bytes:
    """A connection's shared secret from a server secret and the address token (SPEC §9.3, scheme 2).

    ``HMAC-SHA256(HMAC-SHA256(server_secret, "ilp_stream_shared_secret"), ascii(token))``, as legacy
    ilp-protocol-stream and interledger-rs derive it: the HMAC is over the token *text*.
    """
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        raise EncodeError("a connection token must be ASCII") from None
    base = _hmac_digest(server_secret, _SHARED_SECRET_STRING, "sha256")
    return _hmac_digest(base, raw, "sha256")


def encrypt_envelope(aead: AESGCM, plaintext: bytes, iv: bytes) -> bytes:
    """AES-GCM encrypt into STREAM's ``IV || TAG || CIPHERTEXT`` layout (tag first)."""
    if len(iv) != IV_SIZE:
        raise EncodeError(f"the IV must be {IV_SIZE} bytes")
    sealed = aead.encrypt(iv, plaintext, None)  # ciphertext || tag
    view = memoryview(sealed)
    return b"".join((iv, view[-TAG_SIZE:], view[:-TAG_SIZE]))


def decrypt_envelope(aead: AESGCM, envelope: Buffer) -> bytes:
    """Decrypt an ``IV || TAG || CIPHERTEXT`` envelope; :class:`DecodeError` if it does not open."""
    if type(envelope) is not bytes:
        envelope = bytes(envelope)
    if len(envelope) < ENCRYPTION_OVERHEAD:
        raise DecodeError(
            f"encrypted data is {len(envelope)} bytes, shorter than IV and tag ({ENCRYPTION_OVERHEAD})",
            field="stream.envelope",
            offset=0,
        )
    try:
        return aead.decrypt(
            envelope[:IV_SIZE],
            envelope[ENCRYPTION_OVERHEAD:] + envelope[IV_SIZE:ENCRYPTION_OVERHEAD],
            None,
        )
    except InvalidTag:
        raise DecodeError(
            "could not decrypt: not encrypted with this connection's key, or corrupted",
            field="stream.envelope",
            offset=IV_SIZE,
        ) from None


class StreamCrypto:
    """The keys of one STREAM connection, derived once from its shared secret.

    Holds the ``AESGCM`` object and the fulfillment key; the shared secret itself is not kept.
    Build one per connection and reuse it for every packet.
    """

    __slots__ = ("_aead", "_fulfillment_mac")

    def __init__(self, shared_secret: bytes) -> None:
        self._aead = AESGCM(derive_encryption_key(shared_secret))
        self._fulfillment_mac = HmacSha256(derive_fulfillment_key(shared_secret)).digest

    def __repr__(self) -> str:
        return "StreamCrypto(<keys hidden>)"

    def encrypt(self, plaintext: bytes, iv: bytes | None = None) -> bytes:
        """Encrypt into ``IV || TAG || CIPHERTEXT``; ``iv`` defaults to 12 fresh random bytes.

        Pass ``iv`` only in tests: an IV must never be used twice under one key.
        """
        return encrypt_envelope(self._aead, plaintext, _urandom(IV_SIZE) if iv is None else iv)

    def decrypt(self, envelope: Buffer) -> bytes:
        """Decrypt an envelope; :class:`~ilp.errors.DecodeError` if it is short, foreign or altered."""
        return decrypt_envelope(self._aead, envelope)

    def fulfillment(self, data: bytes) -> bytes:
        """The fulfillment of a Prepare carrying ``data`` (the encrypted envelope)."""
        return self._fulfillment_mac(data)

    def condition(self, data: bytes) -> bytes:
        """The execution condition of a fulfillable Prepare carrying ``data``."""
        return _sha256(self._fulfillment_mac(data)).digest()

    def encrypt_packet(self, packet: StreamPacket, iv: bytes | None = None) -> bytes:
        """Serialize and encrypt a STREAM packet (``iv`` as in :meth:`encrypt`)."""
        return encrypt_envelope(
            self._aead, packet.encode(), _urandom(IV_SIZE) if iv is None else iv
        )

    def decrypt_packet(self, data: Buffer) -> StreamPacket:
        """Decrypt and decode a STREAM packet; raises only :class:`~ilp.errors.DecodeError`."""
        return StreamPacket.decode(decrypt_envelope(self._aead, data))
