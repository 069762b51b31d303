"""Every vector of ../shared/vectors/ildcp.json through ilp.ildcp."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ilp.errors import DecodeError
from ilp.ildcp import (
    IldcpError,
    IldcpResponse,
    check_request,
    decode_response,
    make_ildcp_handler,
    make_request,
)
from ilp.packet import Fulfill, Prepare, Reject, decode_packet
from ilp.peer import PeerRequestError
from tests.conftest import vector_params
from tests.vectors.test_oer_vectors import iso

# The JS tests run with a fake clock at this instant (see the "expired" vector).
TEST_CLOCK = datetime(2015, 6, 16, tzinfo=UTC)

# Invalid requests: the ILP error code a server rejects them with.
INVALID_REQUESTS = {
    "ildcp:request:wrong_destination": ("F01", "prepare.destination"),
    "ildcp:request:wrong_condition": ("F01", "prepare.execution_condition"),
    "ildcp:request:expired": ("R00", "prepare.expires_at"),
}


def check_prepare(prepare: Prepare, dec: dict[str, Any]) -> None:
    assert prepare.amount == int(dec["amount"])
    assert iso(prepare.expires_at) == dec["expiresAt"]
    assert prepare.execution_condition.hex() == dec["executionCondition_hex"]
    assert prepare.destination == dec["destination"]
    assert prepare.data.hex() == dec["data_hex"]


def check_ildcp(config: IldcpResponse, dec: dict[str, Any]) -> None:
    assert config.client_address == dec["clientAddress"]
    assert config.asset_scale == dec["assetScale"]
    assert config.asset_code == dec["assetCode"]


@pytest.mark.parametrize("v", vector_params("ildcp"))
async def test_ildcp_vector(v: dict[str, Any]) -> None:
    name = v["name"]
    raw = bytes.fromhex(v["hex"])
    dec = v["decoded"]
    expect = v.get("expect", "valid")

    if name in INVALID_REQUESTS:
        assert expect == "invalid"
        code, field = INVALID_REQUESTS[name]
        prepare = decode_packet(raw)
        assert isinstance(prepare, Prepare)
        if "destination" in dec:
            assert prepare.destination == dec["destination"]
        if "expiresAt" in dec:
            assert iso(prepare.expires_at) == dec["expiresAt"]
        with pytest.raises(DecodeError) as info:
            check_request(prepare, TEST_CLOCK)
        assert isinstance(info.value, PeerRequestError)
        assert info.value.code == code
        assert info.value.field == field
        # A server answers the same way.
        handler = make_ildcp_handler(
            lambda _: IldcpResponse("example.client", 9, "XRP"),
            "example.server",
            now=lambda: TEST_CLOCK,
        )
        reply = await handler(prepare)
        assert isinstance(reply, Reject)
        assert reply.code == code
        assert reply.triggered_by == "example.server"
    elif name in ("ildcp:request", "ildcp:request:custom_expiry"):
        assert expect == "valid"
        prepare = decode_packet(raw)
        assert isinstance(prepare, Prepare)
        check_prepare(prepare, dec)
        check_request(prepare, TEST_CLOCK)
        assert make_request(prepare.expires_at).encode() == raw
    elif name == "ildcp:response":
        assert expect == "valid"
        fulfill = decode_packet(raw)
        assert isinstance(fulfill, Fulfill)
        assert fulfill.fulfillment.hex() == dec["fulfillment_hex"]
        assert fulfill.data.hex() == dec["data_hex"]
        config = decode_response(fulfill)
        check_ildcp(config, dec["ildcp"])
        assert config.to_fulfill().encode() == raw
    elif name == "ildcp:response:data_only":
        assert expect == "valid"
        config = IldcpResponse.decode(raw)
        check_ildcp(config, dec)
        assert config.encode() == raw
    elif name == "ildcp:response:wrong_fulfillment":
        assert expect == "invalid"
        fulfill = decode_packet(raw)
        assert isinstance(fulfill, Fulfill)
        with pytest.raises(IldcpError, match="fulfillment other than 32 zero bytes"):
            decode_response(fulfill)
    elif name.startswith("ildcp:serve:"):
        assert expect == "valid"
        reject = decode_packet(raw)
        assert isinstance(reject, Reject)
        assert reject.code == dec["code"]
        assert reject.triggered_by == dec["triggeredBy"]
        assert reject.message == dec["message"]
        assert reject.data.hex() == dec["data_hex"]

        def refuse(_: Prepare) -> IldcpResponse:
            if name == "ildcp:serve:reject_handler_error":
                # The JS handler threw an Error with this message: the refusal is passed on.
                raise IldcpError(dec["message"])
            # The JS handler threw a non-Error: nothing of it reaches the child.
            raise KeyError("internal detail")

        handler = make_ildcp_handler(refuse, dec["triggeredBy"], now=lambda: TEST_CLOCK)
        reply = await handler(make_request(datetime(2015, 6, 16, 0, 1, tzinfo=UTC)))
        assert reply == reject
        assert reply.encode() == raw
        with pytest.raises(IldcpError) as refused:
            decode_response(reject)
        assert refused.value.code == dec["code"]
        assert dec["message"] in str(refused.value)
    else:  # pragma: no cover
        pytest.fail(f"unmapped ILDCP vector {name}")
