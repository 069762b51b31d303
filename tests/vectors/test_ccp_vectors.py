"""Every vector of ../shared/vectors/ccp.json through ilp.ccp."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from ilp.ccp import (
    CCP_RESPONSE,
    Mode,
    Route,
    RouteControlRequest,
    RouteProp,
    RouteUpdateRequest,
)
from ilp.errors import DecodeError
from ilp.packet import Fulfill, Prepare, decode_packet
from ilp.peer import PeerRequestError
from tests.conftest import vector_params
from tests.vectors.test_oer_vectors import iso

TEST_CLOCK = datetime(2015, 6, 16, tzinfo=UTC)

INVALID: dict[str, tuple[type[RouteControlRequest] | type[RouteUpdateRequest], str, str]] = {
    "ccp:invalid:control:wrong_destination": (RouteControlRequest, "F01", "prepare.destination"),
    "ccp:invalid:control:wrong_condition": (
        RouteControlRequest,
        "F01",
        "prepare.execution_condition",
    ),
    "ccp:invalid:control:expired": (RouteControlRequest, "R00", "prepare.expires_at"),
    "ccp:invalid:update:wrong_destination": (RouteUpdateRequest, "F01", "prepare.destination"),
    "ccp:invalid:update:wrong_condition": (
        RouteUpdateRequest,
        "F01",
        "prepare.execution_condition",
    ),
    "ccp:invalid:update:expired": (RouteUpdateRequest, "R00", "prepare.expires_at"),
}


def table_id(text: str) -> bytes:
    return uuid.UUID(text).bytes


def expected_control(dec: dict[str, Any]) -> RouteControlRequest:
    assert Mode(dec["mode"]).name == dec["modeName"]
    return RouteControlRequest(
        mode=Mode(dec["mode"]),
        last_known_routing_table_id=table_id(dec["lastKnownRoutingTableId"]),
        last_known_epoch=dec["lastKnownEpoch"],
        features=tuple(dec["features"]),
    )


def expected_prop(p: dict[str, Any]) -> RouteProp:
    value = p["value"].encode() if p["isUtf8"] else bytes.fromhex(p["value_hex"])
    prop = RouteProp(
        is_optional=p["isOptional"],
        is_transitive=p["isTransitive"],
        is_partial=p["isPartial"],
        is_utf8=p["isUtf8"],
        id=p["id"],
        value=value,
    )
    assert prop.meta == int(p["meta_byte"], 16)
    return prop


def expected_update(dec: dict[str, Any]) -> RouteUpdateRequest:
    return RouteUpdateRequest(
        routing_table_id=table_id(dec["routingTableId"]),
        current_epoch_index=dec["currentEpochIndex"],
        from_epoch_index=dec["fromEpochIndex"],
        to_epoch_index=dec["toEpochIndex"],
        hold_down_time=dec["holdDownTime"],
        speaker=dec["speaker"],
        new_routes=tuple(
            Route(
                prefix=r["prefix"],
                path=tuple(r["path"]),
                auth=bytes.fromhex(r["auth_hex"]),
                props=tuple(expected_prop(p) for p in r["props"]),
            )
            for r in dec["newRoutes"]
        ),
        withdrawn_routes=tuple(dec["withdrawnRoutes"]),
    )


def check_prepare_envelope(prepare: Prepare, dec: dict[str, Any]) -> None:
    assert prepare.amount == int(dec["amount"])
    assert iso(prepare.expires_at) == dec["expiresAt"]
    assert prepare.execution_condition.hex() == dec["executionCondition_hex"]
    assert prepare.destination == dec["destination"]


@pytest.mark.parametrize("v", vector_params("ccp"))
def test_ccp_vector(v: dict[str, Any]) -> None:
    name = v["name"]
    raw = bytes.fromhex(v["hex"])
    dec = v["decoded"]
    expect = v.get("expect", "valid")

    if name in INVALID:
        assert expect == "invalid"
        cls, code, field = INVALID[name]
        prepare = decode_packet(raw)
        assert isinstance(prepare, Prepare)
        with pytest.raises(DecodeError) as info:
            cls.from_prepare(prepare, TEST_CLOCK)
        assert isinstance(info.value, PeerRequestError)
        assert info.value.code == code
        assert info.value.field == field
        # Only the envelope is wrong: the data itself decodes.
        cls.decode(prepare.data)
        return

    assert expect == "valid"
    if name == "ccp:route_control_request:payload":
        message = RouteControlRequest.decode(raw)
        assert message == expected_control(dec)
        assert message.mode.name == dec["modeName"]
        assert message.encode() == raw
    elif name == "ccp:route_update_request:simple:payload":
        update = RouteUpdateRequest.decode(raw)
        assert update == expected_update(dec)
        assert update.encode() == raw
    elif name == "ccp:route_control_request:prepare":
        prepare = decode_packet(raw)
        assert isinstance(prepare, Prepare)
        check_prepare_envelope(prepare, dec)
        message = RouteControlRequest.from_prepare(prepare, TEST_CLOCK)
        assert message == expected_control(dec["ccp"])
        assert message.to_prepare(prepare.expires_at).encode() == raw
    elif name in (
        "ccp:route_update_request:simple:prepare",
        "ccp:route_update_request:complex:prepare",
    ):
        prepare = decode_packet(raw)
        assert isinstance(prepare, Prepare)
        check_prepare_envelope(prepare, dec)
        update = RouteUpdateRequest.from_prepare(prepare, TEST_CLOCK)
        assert update == expected_update(dec["ccp"])
        assert update.to_prepare(prepare.expires_at).encode() == raw
    elif name == "ccp:response":
        fulfill = decode_packet(raw)
        assert isinstance(fulfill, Fulfill)
        assert fulfill.fulfillment.hex() == dec["fulfillment_hex"]
        assert fulfill.data.hex() == dec["data_hex"]
        assert fulfill == CCP_RESPONSE
        assert CCP_RESPONSE.encode() == raw
    else:  # pragma: no cover
        pytest.fail(f"unmapped CCP vector {name}")
