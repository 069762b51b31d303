"""ILDCP: codec properties, the client over a fake link, the handler."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ilp.errors import DecodeError, EncodeError, IlpError
from ilp.ildcp import (
    ILDCP_DESTINATION,
    IldcpError,
    IldcpResponse,
    decode_response,
    fetch_config,
    make_ildcp_handler,
    make_request,
)
from ilp.link import IlpLink, PrepareHandler
from ilp.packet import ErrorCode, Fulfill, Prepare, Reject
from ilp.peer import PEER_CONDITION, PEER_FULFILLMENT
from tests.strategies import addresses

NOW = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
CONFIG = IldcpResponse("test.parent.child", 9, "XRP")


class FakeLink:
    """An in-memory link: hands each Prepare to ``answer`` and keeps what was sent."""

    def __init__(self, answer: PrepareHandler) -> None:
        self.answer = answer
        self.sent: list[Prepare] = []

    async def send(self, prepare: Prepare) -> Fulfill | Reject:
        self.sent.append(prepare)
        return await self.answer(prepare)


def replying(reply: Fulfill | Reject) -> FakeLink:
    async def answer(_: Prepare) -> Fulfill | Reject:
        return reply

    return FakeLink(answer)


def test_peer_constants() -> None:
    assert bytes(32) == PEER_FULFILLMENT
    assert PEER_CONDITION.hex() == (
        "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
    )


# --------------------------------------------------------------------------------------------
# Codec

responses = st.builds(
    IldcpResponse, addresses, st.integers(min_value=0, max_value=255), st.text(max_size=20)
)


@given(responses)
def test_response_round_trip(config: IldcpResponse) -> None:
    assert IldcpResponse.decode(config.encode()) == config
    assert decode_response(config.to_fulfill()) == config


@given(st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_decode_error(raw: bytes) -> None:
    try:
        config = IldcpResponse.decode(raw)
    except DecodeError:
        return
    assert IldcpResponse.decode(config.encode()) == config


def test_decode_errors_name_field_and_offset() -> None:
    with pytest.raises(DecodeError) as info:
        IldcpResponse.decode(bytes.fromhex("036e6f7409"))  # "not" is no ILP address
    assert info.value.field == "ildcp.client_address"
    assert info.value.offset == 0
    with pytest.raises(DecodeError) as info:
        IldcpResponse.decode(bytes.fromhex("0e6578616d706c652e636c69656e74"))
    assert info.value.field == "ildcp.asset_scale"
    assert info.value.offset == 15
    with pytest.raises(DecodeError, match="UTF-8") as info:
        IldcpResponse.decode(bytes.fromhex("0e6578616d706c652e636c69656e740d01ff"))
    assert info.value.field == "ildcp.asset_code"


def test_trailing_bytes_are_ignored() -> None:
    assert IldcpResponse.decode(CONFIG.encode() + b"\x00\x01") == CONFIG


@pytest.mark.parametrize(
    ("address", "scale"), [("nope", 9), ("test.a", -1), ("test.a", 256), ("", 0)]
)
def test_invalid_responses_cannot_be_built(address: str, scale: int) -> None:
    with pytest.raises(EncodeError):
        IldcpResponse(address, scale, "XRP")


def test_make_request() -> None:
    prepare = make_request(NOW)
    assert prepare == Prepare(0, NOW, PEER_CONDITION, "peer.config", b"")
    assert ILDCP_DESTINATION == "peer.config"


# --------------------------------------------------------------------------------------------
# Client


async def test_fetch_config_sends_a_request_and_reads_the_reply() -> None:
    link = replying(CONFIG.to_fulfill())
    assert isinstance(link, IlpLink)
    assert await fetch_config(link, now=lambda: NOW) == CONFIG
    assert link.sent == [make_request(NOW + timedelta(seconds=60))]


async def test_fetch_config_timeout_sets_the_expiry() -> None:
    link = replying(CONFIG.to_fulfill())
    await fetch_config(link, now=lambda: NOW, timeout=5.5)
    assert link.sent[0].expires_at == NOW + timedelta(seconds=5.5)


async def test_fetch_config_default_clock() -> None:
    link = replying(CONFIG.to_fulfill())
    before = datetime.now(UTC)
    await fetch_config(link)
    expiry = link.sent[0].expires_at
    assert before + timedelta(seconds=59) < expiry < datetime.now(UTC) + timedelta(seconds=61)


async def test_fetch_config_reject_says_code_and_message() -> None:
    reject = Reject(ErrorCode("F02"), "test.parent", "no such account")
    link = replying(reject)
    with pytest.raises(IldcpError) as info:
        await fetch_config(link, now=lambda: NOW)
    assert isinstance(info.value, IlpError)
    assert info.value.code == "F02"
    assert info.value.reject == reject
    text = str(info.value)
    assert "F02 Unreachable" in text
    assert "no such account" in text
    assert "test.parent" in text


async def test_fetch_config_rejects_wrong_fulfillment() -> None:
    link = replying(Fulfill(b"\x01" * 32, CONFIG.encode()))
    with pytest.raises(IldcpError, match="does not speak ILDCP") as info:
        await fetch_config(link, now=lambda: NOW)
    assert info.value.code == "F00"
    assert info.value.reject is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex("0e6578616d706c652e636c69656e74"),
        bytes.fromhex("0a6578616d706c652e2e630d0358414d"),  # "example..c"
    ],
)
async def test_fetch_config_rejects_malformed_data(data: bytes) -> None:
    link = replying(Fulfill(PEER_FULFILLMENT, data))
    with pytest.raises(IldcpError, match="malformed") as info:
        await fetch_config(link, now=lambda: NOW)
    assert isinstance(info.value.__cause__, DecodeError)


# --------------------------------------------------------------------------------------------
# Handler


async def test_handler_fulfills_valid_requests() -> None:
    seen: list[Prepare] = []

    def config_for(prepare: Prepare) -> IldcpResponse:
        seen.append(prepare)
        return CONFIG

    handler = make_ildcp_handler(config_for, "test.parent", now=lambda: NOW)
    request = make_request(NOW + timedelta(seconds=1))
    reply = await handler(request)
    assert reply == Fulfill(PEER_FULFILLMENT, CONFIG.encode())
    assert seen == [request]


async def test_handler_accepts_async_config_for() -> None:
    async def config_for(_: Prepare) -> IldcpResponse:
        return CONFIG

    handler = make_ildcp_handler(config_for, "test.parent", now=lambda: NOW)
    assert await handler(make_request(NOW)) == CONFIG.to_fulfill()


async def test_client_and_handler_together() -> None:
    async def config_for(_: Prepare) -> IldcpResponse:
        return CONFIG

    link = FakeLink(make_ildcp_handler(config_for, "test.parent"))
    assert await fetch_config(link) == CONFIG


@pytest.mark.parametrize(
    ("prepare", "code", "words"),
    [
        (Prepare(0, NOW, PEER_CONDITION, "peer.configx"), "F01", "destination"),
        (Prepare(0, NOW, bytes(32), "peer.config"), "F01", "condition"),
        (make_request(NOW - timedelta(milliseconds=1)), "R00", "expired"),
    ],
)
async def test_handler_rejects_bad_requests(prepare: Prepare, code: str, words: str) -> None:
    def config_for(_: Prepare) -> IldcpResponse:
        raise AssertionError("not called for bad requests")

    handler = make_ildcp_handler(config_for, "test.parent", now=lambda: NOW)
    reply = await handler(prepare)
    assert isinstance(reply, Reject)
    assert reply.code == code
    assert reply.triggered_by == "test.parent"
    assert words in reply.message


async def test_handler_passes_ildcp_errors_on() -> None:
    def config_for(_: Prepare) -> IldcpResponse:
        raise IldcpError("unknown child " + "x" * 9000, code="F02")

    handler = make_ildcp_handler(config_for, "test.parent", now=lambda: NOW)
    reply = await handler(make_request(NOW))
    assert isinstance(reply, Reject)
    assert reply.code == "F02"
    assert reply.message.startswith("unknown child xxx")
    assert len(reply.message.encode()) == 8191


async def test_handler_hides_unexpected_errors(caplog: pytest.LogCaptureFixture) -> None:
    def config_for(_: Prepare) -> IldcpResponse:
        raise RuntimeError("database password is hunter2")

    handler = make_ildcp_handler(config_for, "test.parent", now=lambda: NOW)
    with caplog.at_level(logging.ERROR, logger="ilp.ildcp"):
        reply = await handler(make_request(NOW))
    assert reply == Reject(ErrorCode("F00"), "test.parent", "unexpected error.")
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_handler_needs_a_valid_address() -> None:
    with pytest.raises(EncodeError):
        make_ildcp_handler(lambda _: CONFIG, "not an address")
