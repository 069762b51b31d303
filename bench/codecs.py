"""Codec benchmarks: ILP Prepare encode/decode and STREAM packet encrypt/decrypt.

The inputs are the same as in ``bench/js/codecs.js``: a Prepare of 107 to ``example.alice``
with 32 bytes of data and a fixed expiry; a STREAM Prepare packet (sequence 1, amount 1000)
with a StreamMoney and a StreamMaxMoney frame, under a fixed 32-byte shared secret. Each maker
does its setup (and checks one call) outside the timed loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from ilp.packet import PacketType, Prepare, decode_packet

from .runner import OPS, Benchmark, Op

if TYPE_CHECKING:
    from ilp.stream.packet import StreamPacket

__all__ = ["BENCHMARKS", "SHARED_SECRET", "prepare", "stream_packet"]

SHARED_SECRET = bytes(range(100, 132))


def prepare() -> Prepare:
    """The Prepare both sides encode and decode."""
    return Prepare(
        amount=107,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        execution_condition=bytes(range(32, 64)),
        destination="example.alice",
        data=bytes(range(32)),
    )


def stream_packet() -> StreamPacket:
    """The STREAM packet both sides encrypt and decrypt."""
    from ilp.stream.packet import StreamMaxMoney, StreamMoney, StreamPacket

    return StreamPacket(
        sequence=1,
        ilp_packet_type=PacketType.PREPARE,
        prepare_amount=1000,
        frames=(
            StreamMoney(stream_id=1, shares=1),
            StreamMaxMoney(stream_id=1, receive_max=10**10, total_received=500),
        ),
    )


def _prepare_encode() -> Op:
    return prepare().encode


def _prepare_decode() -> Op:
    raw = prepare().encode()
    if decode_packet(raw) != prepare():
        raise RuntimeError("the decoded Prepare differs from the input")
    return partial(decode_packet, raw)


def _stream_encrypt() -> Op:
    from ilp.stream.crypto import StreamCrypto

    crypto = StreamCrypto(SHARED_SECRET)  # keyed once per shared secret, as a connection does
    packet = stream_packet()
    if crypto.decrypt_packet(crypto.encrypt_packet(packet)) != packet:
        raise RuntimeError("the STREAM packet does not survive encrypt + decrypt")
    return partial(crypto.encrypt_packet, packet)


def _stream_decrypt() -> Op:
    from ilp.stream.crypto import StreamCrypto

    crypto = StreamCrypto(SHARED_SECRET)
    packet = stream_packet()
    data = crypto.encrypt_packet(packet)
    if crypto.decrypt_packet(data) != packet:
        raise RuntimeError("the STREAM packet does not survive encrypt + decrypt")
    return partial(crypto.decrypt_packet, data)


BENCHMARKS = (
    Benchmark("ilp-prepare-encode", OPS, python=_prepare_encode, js="ilp-prepare-encode"),
    Benchmark("ilp-prepare-decode", OPS, python=_prepare_decode, js="ilp-prepare-decode"),
    Benchmark("stream-packet-encrypt", OPS, python=_stream_encrypt, js="stream-packet-encrypt"),
    Benchmark("stream-packet-decrypt", OPS, python=_stream_decrypt, js="stream-packet-decrypt"),
)
