"""Every vector of ../shared/vectors/stream_crypto.json through the public API."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ilp.crypto import condition_of, hmac_sha256, sha256
from ilp.errors import DecodeError
from ilp.stream import (
    StreamCrypto,
    derive_encryption_key,
    derive_fulfillment_key,
    derive_legacy_shared_secret,
)
from ilp.stream.crypto import decrypt_envelope, encrypt_envelope
from tests.conftest import vector_params


@pytest.mark.parametrize("v", vector_params("stream_crypto"))
def test_stream_crypto_vector(v: dict[str, Any]) -> None:
    assert v.get("expect", "valid") == "valid"
    inputs = {k: bytes.fromhex(x) for k, x in v["inputs"].items()}
    expected = {k: bytes.fromhex(x) for k, x in v["expected"].items()}
    secret = None if v["shared_secret"] is None else bytes.fromhex(v["shared_secret"])
    (what,) = expected
    if what == "encryption_key":
        assert secret is not None and not inputs
        assert derive_encryption_key(secret) == expected[what]
    elif what == "fulfillment_key":
        assert secret is not None and not inputs
        assert derive_fulfillment_key(secret) == expected[what]
    elif what == "fulfillment":
        assert inputs.keys() == {"fulfillment_key", "data"}
        assert hmac_sha256(inputs["fulfillment_key"], inputs["data"]) == expected[what]
    elif what == "condition":
        assert inputs.keys() == {"fulfillment"}
        assert condition_of(inputs["fulfillment"]) == expected[what]
        assert sha256(inputs["fulfillment"]) == expected[what]
    elif what == "plaintext":
        assert inputs.keys() == {"encryption_key", "envelope"}
        aead = AESGCM(inputs["encryption_key"])
        envelope = inputs["envelope"]
        assert decrypt_envelope(aead, envelope) == expected[what]
        # Same key and IV: encryption reproduces the envelope, tag before ciphertext.
        assert encrypt_envelope(aead, expected[what], envelope[:12]) == envelope
    else:  # pragma: no cover
        pytest.fail(f"unmapped crypto vector output {what}")


def test_stream_crypto_uses_the_derived_keys() -> None:
    secret = b"foo"
    crypto = StreamCrypto(secret)
    data = bytes(range(50))
    fulfillment = hmac_sha256(derive_fulfillment_key(secret), data)
    assert crypto.fulfillment(data) == fulfillment
    assert crypto.condition(data) == sha256(fulfillment)
    iv = bytes(range(12))
    plaintext = b"hello stream"
    envelope = crypto.encrypt(plaintext, iv=iv)
    sealed = AESGCM(derive_encryption_key(secret)).encrypt(iv, plaintext, None)
    assert envelope == iv + sealed[-16:] + sealed[:-16]
    assert crypto.decrypt(envelope) == plaintext
    assert StreamCrypto(b"bar").fulfillment(data) != fulfillment


def test_wrong_key_and_short_envelope_raise_decode_error() -> None:
    envelope = StreamCrypto(b"foo").encrypt(b"secret data")
    with pytest.raises(DecodeError) as info:
        StreamCrypto(b"bar").decrypt(envelope)
    assert info.value.field == "stream.envelope"
    with pytest.raises(DecodeError, match="shorter than IV and tag"):
        StreamCrypto(b"foo").decrypt(envelope[:27])
    # An empty ciphertext is a valid envelope of 28 bytes.
    assert StreamCrypto(b"foo").decrypt(StreamCrypto(b"foo").encrypt(b"")) == b""


def test_errors_and_repr_do_not_show_keys() -> None:
    secret = bytes(range(32))
    crypto = StreamCrypto(secret)
    with pytest.raises(DecodeError) as info:
        crypto.decrypt(bytes(40))
    text = str(info.value) + repr(crypto)
    for key in (secret, derive_encryption_key(secret), derive_fulfillment_key(secret)):
        assert key.hex() not in text
        assert repr(key) not in text


def test_random_iv_by_default() -> None:
    crypto = StreamCrypto(b"foo")
    a, b = crypto.encrypt(b"x"), crypto.encrypt(b"x")
    assert a[:12] != b[:12]
    assert crypto.decrypt(a) == crypto.decrypt(b) == b"x"


LEGACY_DESTINATION = "test.peerB.NjXD0uJPBuGz56SBmI3uX6h-"


def test_legacy_shared_secret_derivation() -> None:
    """SPEC §9.3 scheme 2: server secret of 32 zero bytes, destination test.peerB.<token>."""
    token = LEGACY_DESTINATION.rsplit(".", 1)[1]
    secret = derive_legacy_shared_secret(bytes(32), token)
    assert len(secret) == 32
    # The SPEC quotes the verified value abbreviated as b7d09d2e…0309.
    assert secret.hex().startswith("b7d09d2e")
    assert secret.hex().endswith("0309")
    base = hmac_sha256(bytes(32), b"ilp_stream_shared_secret")
    assert secret == hmac_sha256(base, token.encode("ascii"))
