"""The node's HTTP API: a real node in-process, spoken to with httpx over 127.0.0.1.

What is checked: the admin token guards every endpoint but SPSP; accounts, balances, routes,
rates and payments work end to end; secrets never come back; bad input is a 4xx with a reason,
never a 500; and ``docs/openapi.json`` lists exactly what the app serves, with answers that fit
its schemas.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ilp.http import open_http_link
from ilp.ildcp import fetch_config, make_request
from ilp.node import NodeConfig, open_node
from ilp.node.api import MAX_BODY, ROUTES, NodeApi
from ilp.node.connector import hash_token
from ilp.node.node import Node
from ilp.spsp import parse_spsp_response
from ilp.stream.pay import pay

ADMIN = "x" * 20
AUTH = {"Authorization": f"Bearer {ADMIN}"}
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass
class Api:
    node: Node
    client: httpx.AsyncClient
    """Sends the admin token with every request."""
    base: str

    async def account(self, name: str, **fields: Any) -> dict[str, Any]:
        response = await self.client.post("/accounts", json={"name": name, **fields})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def balance(self, name: str) -> str:
        response = await self.client.get(f"/accounts/{name}/balance")
        assert response.status_code == 200, response.text
        value: str = response.json()["balance"]
        return value


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    config = NodeConfig(address="test.node", btp_port=0, api_port=0, admin_token=ADMIN)
    async with open_node(config) as node:
        base = f"http://127.0.0.1:{node.api_port}"
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client:
            yield Api(node, client, base)


# -- the OpenAPI document, and a small validator for the part of JSON Schema it uses -------------


def openapi() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(OPENAPI.read_text())
    return doc


def documented() -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in openapi()["paths"].items()
        for method in item
        if method.upper() in METHODS
    }


def _deref(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def conforms(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str = "$") -> None:
    """Raise AssertionError if ``value`` does not fit ``schema`` (type, enum, pattern, bounds,
    properties, required, additionalProperties, items, oneOf, $ref)."""
    schema = _deref(doc, schema)
    if "oneOf" in schema:
        fits = 0
        for option in schema["oneOf"]:
            try:
                conforms(value, option, doc, where)
                fits += 1
            except AssertionError:
                pass
        assert fits == 1, f"{where}: {value!r} fits {fits} of the oneOf options"
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        assert any(_TYPES[k](value) for k in kinds), f"{where}: {value!r} is not {kinds}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, str) and "pattern" in schema:
        assert re.search(schema["pattern"], value), f"{where}: {value!r} !~ {schema['pattern']}"
    if _TYPES["number"](value):
        assert value >= schema.get("minimum", value), f"{where}: {value} below the minimum"
        assert value <= schema.get("maximum", value), f"{where}: {value} above the maximum"
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", ()):
            assert key in value, f"{where}: {key!r} is missing"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                conforms(item, properties[key], doc, f"{where}.{key}")
            elif extra is False:
                raise AssertionError(f"{where}: {key!r} is not documented")
            elif isinstance(extra, dict):
                conforms(item, extra, doc, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            conforms(item, schema["items"], doc, f"{where}[{i}]")


def check_documented(response: httpx.Response, path: str, method: str) -> None:
    """The status is one the document lists for this operation, and the body fits its schema."""
    doc = openapi()
    operation = doc["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path}: {status} is not documented"
    documented_response = _deref(doc, operation["responses"][status])
    content = documented_response.get("content")
    if content is None:
        assert response.content == b"", f"{method} {path}: {status} should have no body"
        return
    kind = response.headers["content-type"]
    assert kind in content, f"{method} {path}: {kind} is not documented for {status}"
    if "json" not in kind:  # ILP packets and plain-text reasons
        assert content[kind]["schema"]["type"] == "string"
        return
    conforms(response.json(), content[kind]["schema"], doc, f"{method} {path} {status}")


# -- the OpenAPI document and the app agree ----------------------------------------------------


def test_openapi_lists_exactly_the_served_endpoints() -> None:
    doc = openapi()
    assert doc["openapi"].startswith("3.1")
    served = {(path, method) for path, methods in ROUTES.items() for method in methods}
    assert documented() == served
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The node's admin token.",
    }
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method.upper() not in METHODS:
                continue
            public = path.startswith("/spsp/")
            assert (operation.get("security") == []) == public, (method, path)
            assert ("401" in operation["responses"]) != public, (method, path)
            if "requestBody" in operation:
                assert "400" in operation["responses"], (method, path)
                assert "413" in operation["responses"], (method, path)


# Every documented operation, in an order in which each one succeeds.
OPERATIONS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/status", None),
    ("POST", "/accounts", {"name": "alice", "credit_limit": "5000", "token": "alice-token-123"}),
    ("GET", "/accounts", None),
    ("GET", "/accounts/{name}", None),
    ("PATCH", "/accounts/{name}", {"max_packet_amount": 1000000}),
    ("GET", "/accounts/{name}/balance", None),
    ("POST", "/accounts/{name}/balance", {"adjustment": "-10"}),
    ("POST", "/accounts/{name}/payments", {"to": "{base}/spsp/bob", "amount": "100"}),
    ("PUT", "/routes/{prefix}", {"account": "alice"}),
    ("PUT", "/routes", {"prefix": "", "account": "alice"}),
    ("GET", "/routes", None),
    ("DELETE", "/routes/{prefix}", None),
    ("DELETE", "/routes", {"prefix": ""}),
    ("PUT", "/rates/{asset_code}", {"rate": "1.1"}),
    ("GET", "/rates", None),
    ("DELETE", "/rates/{asset_code}", None),
    ("OPTIONS", "/spsp/{name}", None),
    ("GET", "/spsp/{name}", None),
    ("DELETE", "/accounts/{name}", None),
]
SAMPLES = {"name": "alice", "prefix": "g.sample", "asset_code": "EUR"}
ILP_OPERATION = ("/accounts/{name}/ilp", "POST")  # ILP packets, not JSON: its own test below


def template_of(path: str) -> str | None:
    for template in ROUTES:
        if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", template), path):
            return template
    return None


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path)


async def test_every_documented_operation_works_as_documented(api: Api) -> None:
    assert {(path, method) for method, path, _ in OPERATIONS} | {ILP_OPERATION} == documented()
    await api.account("bob")
    for method, path, body in OPERATIONS:
        content = None
        if body is not None:
            content = json.dumps(body).replace("{base}", api.base).encode()
        response = await api.client.request(method, concrete(path), content=content)
        assert response.status_code < 300, (method, path, response.text)
        check_documented(response, path, method)
    assert (await api.client.get("/accounts/alice")).status_code == 404


async def test_other_methods_are_405_with_allow(api: Api) -> None:
    await api.account("alice")
    for path, methods in ROUTES.items():
        for method in set(METHODS) - set(methods):
            response = await api.client.request(method, concrete(path))
            assert response.status_code == 405, (method, path)
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == set(methods), (method, path)
            body = response.json()
            if not path.startswith("/spsp/"):
                assert body["error"] == "MethodNotAllowed"
                conforms(body, {"$ref": "#/components/schemas/Error"}, openapi())


async def test_unknown_paths_are_404(api: Api) -> None:
    for path in ("/", "/nope", "/accounts/", "/accounts/a/b", "/status/x", "/rates/EUR/x", "/%ff"):
        response = await api.client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "NotFound"


# -- authentication ----------------------------------------------------------------------------

ADMIN_REQUESTS = [
    ("GET", "/status", None),
    ("GET", "/accounts", None),
    ("POST", "/accounts", {"name": "mallory"}),
    ("GET", "/accounts/alice", None),
    ("PATCH", "/accounts/alice", {"credit_limit": None}),
    ("DELETE", "/accounts/alice", None),
    ("GET", "/accounts/alice/balance", None),
    ("POST", "/accounts/alice/balance", {"adjustment": "1000"}),
    ("POST", "/accounts/alice/payments", {"to": "{base}/spsp/alice", "amount": "1"}),
    ("GET", "/routes", None),
    ("PUT", "/routes", {"prefix": "", "account": "alice"}),
    ("DELETE", "/routes", {"prefix": "g.x"}),
    ("PUT", "/routes/g.y", {"account": "alice"}),
    ("DELETE", "/routes/g.x", None),
    ("GET", "/rates", None),
    ("PUT", "/rates/EUR", {"rate": "2"}),
    ("DELETE", "/rates/USD", None),
    ("GET", "/no/such/path", None),
]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-wrong-token", f"Bearer {ADMIN}x", f"Basic {ADMIN}", ADMIN, "Bearer"],
)
async def test_admin_endpoints_need_the_token(api: Api, authorization: str | None) -> None:
    await api.account("alice", credit_limit="7")
    api.node.connector.set_route("g.x", "alice")
    api.node.connector.set_rate("USD", Fraction(1))
    headers = {} if authorization is None else {"Authorization": authorization}
    before = api.node.status()["routes"], dict(api.node.connector.rates)
    async with httpx.AsyncClient(base_url=api.base, headers=headers) as anonymous:
        for method, path, body in ADMIN_REQUESTS:
            content = None
            if body is not None:
                content = json.dumps(body).replace("{base}", api.base).encode()
            response = await anonymous.request(method, path, content=content)
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"] == "Unauthorized"
            template = template_of(path)
            if template is not None:
                check_documented(response, template, method)
    # Nothing changed.
    accounts = (await api.client.get("/accounts")).json()
    assert [(a["name"], a["balance"], a["credit_limit"]) for a in accounts] == [("alice", "0", "7")]
    assert (api.node.status()["routes"], dict(api.node.connector.rates)) == before


async def test_ilp_over_http_endpoint_takes_the_accounts_own_token(api: Api) -> None:
    """POST /accounts/{name}/ilp: ILDCP and a payment from an ILP-over-HTTP child, answered as
    documented; the admin token is not what opens it, and a wrong or missing token is 401."""
    await api.account("alice", token="alice-http-token")
    await api.account("bob")
    url = f"{api.base}/accounts/alice/ilp"
    async with open_http_link(url, token="alice-http-token", address="test.node.alice") as alice:
        config = await fetch_config(alice)
        assert config.client_address == "test.node.alice"
        to_bob = await api.client.get("/spsp/bob")
        creds = parse_spsp_response(to_bob.content, status=to_bob.status_code)
        result = await pay(
            alice,
            creds.destination_account,
            creds.shared_secret,
            source_amount=4321,
            source_address=config.client_address,
            source_asset=("XRP", 9),
        )
    assert result.amount_delivered == 4321
    assert (await api.balance("alice"), await api.balance("bob")) == ("-4321", "4321")
    ildcp = make_request(datetime.now(UTC) + timedelta(seconds=30)).encode()
    async with httpx.AsyncClient() as anonymous:
        good = await anonymous.post(
            url, content=ildcp, headers={"Authorization": "Bearer alice-http-token"}
        )
        check_documented(good, *ILP_OPERATION)
        for headers in ({}, AUTH, {"Authorization": "Bearer not-alices-token"}):
            refused = await anonymous.post(url, content=ildcp, headers=headers)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            check_documented(refused, *ILP_OPERATION)
        nobody = await anonymous.post(
            f"{api.base}/accounts/nobody/ilp",
            content=ildcp,
            headers={"Authorization": "Bearer alice-http-token"},
        )
        assert nobody.status_code == 401
        garbage = await anonymous.post(
            url, content=b"\x0c\x05", headers={"Authorization": "Bearer alice-http-token"}
        )
        assert garbage.status_code == 400
        check_documented(garbage, *ILP_OPERATION)
    assert "alice-http-token" not in (await api.client.get("/accounts/alice")).text


async def test_spsp_needs_no_token(api: Api) -> None:
    await api.account("bob")
    async with httpx.AsyncClient(base_url=api.base) as anonymous:
        response = await anonymous.get("/spsp/bob", headers={"Accept": "application/spsp4+json"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/spsp4+json"
        assert response.headers["access-control-allow-origin"] == "*"
        body = response.json()
        assert body["destination_account"].startswith("test.node.~receive.bob.")
        assert len(base64.b64decode(body["shared_secret"])) == 32
        assert body["receipts_enabled"] is False
        check_documented(response, "/spsp/{name}", "GET")

        with_query = await anonymous.get("/spsp/bob?x=1")
        assert with_query.status_code == 200  # as SpspApp: the query string is ignored

        receipts = await anonymous.get(
            "/spsp/bob",
            headers={
                "Receipt-Nonce": base64.b64encode(b"\x01" * 16).decode(),
                "Receipt-Secret": base64.b64encode(b"\x02" * 32).decode(),
            },
        )
        assert receipts.status_code == 200
        assert receipts.json()["receipts_enabled"] is True

        bad_nonce = await anonymous.get("/spsp/bob", headers={"Receipt-Nonce": "!!"})
        assert bad_nonce.status_code == 400
        check_documented(bad_nonce, "/spsp/{name}", "GET")

        missing = await anonymous.get("/spsp/nobody")
        assert missing.status_code == 404
        assert missing.json()["id"] == "InvalidReceiverError"
        check_documented(missing, "/spsp/{name}", "GET")

        preflight = await anonymous.options("/spsp/bob")
        assert preflight.status_code == 204
        assert "GET" in preflight.headers["access-control-allow-methods"]


# -- accounts ---------------------------------------------------------------------------------


async def test_account_crud_round_trip(api: Api) -> None:
    created = await api.client.post(
        "/accounts",
        json={
            "name": "carol",
            "relation": "child",
            "asset_code": "USD",
            "asset_scale": 2,
            "max_packet_amount": "18446744073709551615",
            "credit_limit": 5000,
            "routes": ["g.carol"],
        },
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/accounts/carol"
    check_documented(created, "/accounts", "POST")
    assert created.json() == {
        "name": "carol",
        "relation": "child",
        "asset_code": "USD",
        "asset_scale": 2,
        "max_packet_amount": "18446744073709551615",
        "credit_limit": "5000",
        "balance": "0",
        "in_flight": "0",
        "connected": False,
        "origin": "api",
        "address": "test.node.carol",
        "has_token": False,
        "url": None,
        "send_routes": None,
        "receive_routes": None,
    }
    routes = (await api.client.get("/routes")).json()
    assert {"prefix": "g.carol", "account": "carol", "kind": "static", "path": []} in routes

    again = await api.client.post("/accounts", json={"name": "carol"})
    assert again.status_code == 409
    assert again.json()["error"] == "Conflict"
    check_documented(again, "/accounts", "POST")

    fetched = await api.client.get("/accounts/carol")
    assert fetched.json() == created.json()
    listed = await api.client.get("/accounts")
    assert [a["name"] for a in listed.json()] == ["carol"]

    patched = await api.client.patch("/accounts/carol", json={"credit_limit": "9"})
    assert patched.status_code == 200
    assert patched.json() == {**created.json(), "credit_limit": "9"}
    cleared = await api.client.patch(
        "/accounts/carol", json={"max_packet_amount": None, "credit_limit": None}
    )
    assert cleared.json()["max_packet_amount"] is None
    assert cleared.json()["credit_limit"] is None
    assert cleared.json()["asset_code"] == "USD"  # unspecified fields keep their values
    assert api.node.connector.accounts["carol"].credit_limit is None
    routing = await api.client.patch("/accounts/carol", json={"send_routes": True})
    check_documented(routing, "/accounts/{name}", "PATCH")
    assert (routing.json()["send_routes"], routing.json()["receive_routes"]) == (True, None)
    assert api.node.connector.accounts["carol"].route_exchange() == (True, False)
    routing = await api.client.patch("/accounts/carol", json={"send_routes": None})
    assert api.node.connector.accounts["carol"].route_exchange() == (False, False)

    for bad in (
        {"send_routes": "yes"},
        {"relation": "cousin"},
        {"name": "dave"},
        {"asset_code": None},
        {"credit_limit": "-1"},
        {"credit_limit": "1.5"},
        {"credit_limit": "18446744073709551616"},
        {"asset_scale": 256},
        {"token": ""},
        {"url": "ftp://example.com"},
        {"url": "https://example.com/#fragment"},
        {"routes": ["peer.config"]},
        {"colour": "red"},
    ):
        response = await api.client.patch("/accounts/carol", json=bad)
        assert response.status_code == 400, bad
        assert response.json()["error"] == "BadRequest"
        assert response.json()["message"]
        check_documented(response, "/accounts/{name}", "PATCH")
    assert (await api.client.get("/accounts/carol")).json() == cleared.json()

    deleted = await api.client.delete("/accounts/carol")
    assert deleted.status_code == 204
    assert deleted.content == b""
    for method in ("GET", "DELETE"):
        gone = await api.client.request(method, "/accounts/carol")
        assert gone.status_code == 404
        assert gone.json()["error"] == "NotFound"
    patch_gone = await api.client.patch("/accounts/carol", json={"credit_limit": 1})
    assert patch_gone.status_code == 404
    assert "carol" not in api.node.connector.accounts


async def test_account_creation_is_validated(api: Api) -> None:
    for bad in (
        {},
        {"name": ""},
        {"name": "a.b"},
        {"name": 7},
        {"name": "x" * 65},
        {"name": "ok", "relation": "parent", "url": "ftp://nope"},
        {"name": "ok", "relation": "child", "url": "btp+ws://127.0.0.1:1"},
        {"name": "ok", "asset_code": "TOO-LONG-FOR-AN-ASSET"},
        {"name": "ok", "max_packet_amount": True},
        {"name": "ok", "max_packet_amount": 1.0},
        {"name": "ok", "credit_limit": " 1"},
        {"name": "ok", "credit_limit": "1_000"},
        {"name": "ok", "routes": "g.x"},
        {"name": "ok", "routes": ["peer"]},
        {"name": "ok", "extra": 1},
    ):
        response = await api.client.post("/accounts", json=bad)
        assert response.status_code == 400, (bad, response.text)
        check_documented(response, "/accounts", "POST")
    assert (await api.client.get("/accounts")).json() == []


async def test_tokens_and_url_credentials_are_never_shown(api: Api) -> None:
    token, url_token = "tok-SECRET-abcdef", "url-SECRET-ghijkl"
    url = f"btp+ws://dave:{url_token}@127.0.0.1:1/ilp?auth=q-SECRET"
    texts = []
    created = await api.client.post(
        "/accounts", json={"name": "dave", "relation": "peer", "token": token, "url": url}
    )
    assert created.status_code == 201
    assert created.json()["has_token"] is True
    assert created.json()["url"] == "btp+ws://127.0.0.1:1/ilp"
    texts.append(created.text)
    patched = await api.client.patch("/accounts/dave", json={"token": "tok2-SECRET-mnop"})
    assert patched.json()["has_token"] is True
    assert api.node.connector.accounts["dave"].check_token("tok2-SECRET-mnop")
    assert api.node.connector.accounts["dave"].url == url  # kept, credentials and all
    texts.append(patched.text)
    rejected = await api.client.patch(
        "/accounts/dave", json={"token": "tok3-SECRET-qrst", "relation": "child"}
    )
    assert rejected.status_code == 400  # a child has no url
    texts.append(rejected.text)
    for path in ("/accounts", "/accounts/dave", "/accounts/dave/balance", "/status", "/routes"):
        texts.append((await api.client.get(path)).text)
    text = "\n".join(texts)
    assert "SECRET" not in text
    assert hash_token(token) not in text
    assert hash_token("tok2-SECRET-mnop") not in text
    assert api.node.connector.accounts["dave"].check_token("tok2-SECRET-mnop")


# -- balances, routes, rates --------------------------------------------------------------------


async def test_balance_adjustment(api: Api) -> None:
    await api.account("alice", asset_code="EUR", asset_scale=2)
    response = await api.client.post("/accounts/alice/balance", json={"adjustment": "500"})
    assert response.status_code == 200
    assert response.json() == {
        "name": "alice",
        "balance": "500",
        "in_flight": "0",
        "asset_code": "EUR",
        "asset_scale": 2,
    }
    response = await api.client.post("/accounts/alice/balance", json={"adjustment": -200})
    assert response.json()["balance"] == "300"
    big = 2**53 + 1
    response = await api.client.post("/accounts/alice/balance", json={"adjustment": str(big)})
    assert response.json()["balance"] == str(big + 300)  # exact past 2^53
    assert api.node.connector.accounts["alice"].balance == big + 300
    response = await api.client.post("/accounts/alice/balance", json={"adjustment": f"-{big}"})
    assert (await api.balance("alice")) == "300"

    for bad in (
        {},
        {"adjustment": "1.5"},
        {"adjustment": 1.5},
        {"adjustment": "ten"},
        {"adjustment": None},
        {"adjustment": True},
        {"adjustment": "1" * 41},
        {"adjustment": 1, "memo": "x"},
    ):
        response = await api.client.post("/accounts/alice/balance", json=bad)
        assert response.status_code == 400, bad
        check_documented(response, "/accounts/{name}/balance", "POST")
    assert (await api.balance("alice")) == "300"
    missing = await api.client.post("/accounts/nobody/balance", json={"adjustment": "1"})
    assert missing.status_code == 404
    assert (await api.client.get("/accounts/nobody/balance")).status_code == 404


async def test_routes(api: Api) -> None:
    await api.account("alice")
    await api.account("up", relation="parent")
    routes = (await api.client.get("/routes")).json()
    assert {"prefix": "test.node.alice", "account": "alice", "kind": "child", "path": []} in routes
    assert {"prefix": "", "account": "up", "kind": "default", "path": []} in routes
    assert {"prefix": "test.node.~receive", "account": None, "kind": "local", "path": []} in routes

    response = await api.client.put("/routes/g.foo", json={"account": "alice"})
    assert response.status_code == 200
    assert response.json() == {"prefix": "g.foo", "account": "alice", "kind": "static", "path": []}
    response = await api.client.put("/routes", json={"prefix": "", "account": "alice"})
    assert response.json() == {"prefix": "", "account": "alice", "kind": "static", "path": []}
    routes = (await api.client.get("/routes")).json()
    assert {"prefix": "", "account": "alice", "kind": "static", "path": []} in routes
    assert {"prefix": "g.foo", "account": "alice", "kind": "static", "path": []} in routes

    assert (await api.client.delete("/routes/g.foo")).status_code == 204
    assert (await api.client.delete("/routes/g.foo")).status_code == 404
    response = await api.client.request("DELETE", "/routes", json={"prefix": ""})
    assert response.status_code == 204
    routes = (await api.client.get("/routes")).json()
    assert {"prefix": "", "account": "up", "kind": "default", "path": []} in routes
    assert all(r["kind"] != "static" for r in routes)

    for path, body in (
        ("/routes/peer.x", {"account": "alice"}),
        ("/routes/g..x", {"account": "alice"}),
        ("/routes/g.x", {"account": 3}),
        ("/routes/g.x", {}),
        ("/routes/g.x", {"account": "alice", "prefix": "g.x"}),
        ("/routes", {"account": "alice"}),
        ("/routes", {"prefix": None, "account": "alice"}),
    ):
        response = await api.client.put(path, json=body)
        assert response.status_code == 400, (path, body)
        check_documented(response, "/routes/{prefix}" if path != "/routes" else "/routes", "PUT")
    missing = await api.client.put("/routes/g.x", json={"account": "nobody"})
    assert missing.status_code == 404
    assert "nobody" in missing.json()["message"]
    assert (await api.client.request("DELETE", "/routes", json={})).status_code == 400


async def test_rates(api: Api) -> None:
    assert (await api.client.get("/rates")).json() == {"rates": {}, "spread": "0"}
    for value, shown in (("1.1", "1.1"), ("11/3", "11/3"), (2, "2"), ("2e-3", "0.002")):
        response = await api.client.put("/rates/EUR", json={"rate": value})
        assert response.status_code == 200, value
        assert response.json() == {"asset_code": "EUR", "rate": shown}
    await api.client.put("/rates/USD", json={"rate": "1"})
    assert (await api.client.get("/rates")).json() == {
        "rates": {"EUR": "0.002", "USD": "1"},
        "spread": "0",
    }
    for path, body in (
        ("/rates/EUR", {"rate": "abc"}),
        ("/rates/EUR", {"rate": "0"}),
        ("/rates/EUR", {"rate": "-1"}),
        ("/rates/EUR", {"rate": None}),
        ("/rates/EUR", {"rate": "1e999999999"}),
        ("/rates/EUR", {}),
        ("/rates/EUR", {"rate": "1", "spread": "0"}),
        (f"/rates/{quote('€')}", {"rate": "1"}),
        ("/rates/TOO-LONG-ASSET-CODE", {"rate": "1"}),
    ):
        response = await api.client.put(path, json=body)
        assert response.status_code == 400, (path, body)
        check_documented(response, "/rates/{asset_code}", "PUT")
    assert (await api.client.delete("/rates/EUR")).status_code == 204
    assert (await api.client.delete("/rates/EUR")).status_code == 404
    assert (await api.client.get("/rates")).json()["rates"] == {"USD": "1"}


# -- payments ---------------------------------------------------------------------------------


async def test_payment_from_one_account_to_another(api: Api) -> None:
    await api.account("alice")
    await api.account("bob")
    response = await api.client.post(
        "/accounts/alice/payments", json={"to": f"{api.base}/spsp/bob", "amount": "1000"}
    )
    assert response.status_code == 200, response.text
    check_documented(response, "/accounts/{name}/payments", "POST")
    result = response.json()
    assert result["status"] == "complete"
    assert (result["amount_sent"], result["amount_delivered"]) == ("1000", "1000")
    assert result["source_asset"] == result["destination_asset"] == {"code": "XRP", "scale": 9}
    assert result["exchange_rate"] == "1"
    assert result["error"] is None
    assert result["packets_fulfilled"] >= 1
    assert "shared_secret" not in response.text
    assert (await api.balance("bob"), await api.balance("alice")) == ("1000", "-1000")

    fixed_delivery = await api.client.post(
        "/accounts/bob/payments",
        json={"to": f"{api.base}/spsp/alice", "delivery_amount": 400, "slippage": "0"},
    )
    assert fixed_delivery.status_code == 200, fixed_delivery.text
    assert fixed_delivery.json()["amount_delivered"] == "400"
    assert (await api.balance("bob"), await api.balance("alice")) == ("600", "-600")


async def test_a_payment_that_does_not_complete_is_422(api: Api) -> None:
    await api.account("alice")
    await api.account("bob", asset_code="EUR", asset_scale=2)  # no rate: XRP cannot become EUR
    response = await api.client.post(
        "/accounts/alice/payments", json={"to": f"{api.base}/spsp/bob", "amount": "1000"}
    )
    assert response.status_code == 422, response.text
    check_documented(response, "/accounts/{name}/payments", "POST")
    result = response.json()
    assert result["status"] == "failed"
    assert result["amount_sent"] == "0"
    assert result["error"]["code"] == "F02"
    assert result["error"]["triggered_by"] == "test.node"
    assert (await api.balance("alice"), await api.balance("bob")) == ("0", "0")


async def test_payment_errors(api: Api) -> None:
    await api.account("alice")
    path = "/accounts/alice/payments"
    unknown = await api.client.post(path, json={"to": f"{api.base}/spsp/nobody", "amount": 5})
    assert unknown.status_code == 502
    assert unknown.json()["error"] == "SpspError"
    assert "404" in unknown.json()["message"] or "not found" in unknown.json()["message"].lower()
    check_documented(unknown, "/accounts/{name}/payments", "POST")
    unreachable = await api.client.post(path, json={"to": "http://127.0.0.1:1/x", "amount": 5})
    assert unreachable.status_code == 502
    for bad in (
        {"to": "ftp://example.com", "amount": "5"},
        {"to": "", "amount": "5"},
        {"to": 5, "amount": "5"},
        {"amount": "5"},
        {"to": f"{api.base}/spsp/alice"},
        {"to": f"{api.base}/spsp/alice", "amount": "5", "delivery_amount": "5"},
        {"to": f"{api.base}/spsp/alice", "amount": "0"},
        {"to": f"{api.base}/spsp/alice", "amount": "-5"},
        {"to": f"{api.base}/spsp/alice", "amount": "18446744073709551616"},
        {"to": f"{api.base}/spsp/alice", "amount": "5", "slippage": "1"},
        {"to": f"{api.base}/spsp/alice", "amount": "5", "slippage": "x"},
        {"to": f"{api.base}/spsp/alice", "amount": "5", "memo": "hi"},
    ):
        response = await api.client.post(path, json=bad)
        assert response.status_code == 400, (bad, response.text)
        check_documented(response, "/accounts/{name}/payments", "POST")
    missing = await api.client.post(
        "/accounts/nobody/payments", json={"to": f"{api.base}/spsp/alice", "amount": 5}
    )
    assert missing.status_code == 404
    assert await api.balance("alice") == "0"


# -- what a client sends wrong ------------------------------------------------------------------


async def test_malformed_bodies_are_400(api: Api) -> None:
    for content in (
        b"",
        b"{",
        b"[]",
        b'"name"',
        b"\xff\xfe{",
        b'{"name": "a", "name": "b"}',
        b'{"name": "a", "credit_limit": NaN}',
        b'{"name": "a", "credit_limit": Infinity}',
        b"[" * 20000 + b"]" * 20000,
        b'{"name": "a", "credit_limit": ' + b"9" * 5000 + b"}",
        b'{"name": "a", "token": "\\ud800"}',
    ):
        response = await api.client.post("/accounts", content=content)
        assert response.status_code == 400, content[:40]
        assert response.json()["error"] == "BadRequest"
        assert response.json()["message"]
    assert (await api.client.get("/accounts")).json() == []


async def test_bodies_over_64_kib_are_413(api: Api) -> None:
    big = json.dumps({"name": "alice", "routes": ["g.x"] * (MAX_BODY // 4)}).encode()
    assert len(big) > MAX_BODY
    response = await api.client.post("/accounts", content=big)
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLarge"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    response = await api.client.post("/accounts", content=chunked())
    assert response.status_code == 413
    check_documented(response, "/accounts", "POST")
    just_fits = json.dumps({"name": "alice", "pad": " " * (MAX_BODY - 40)}).encode()
    assert len(just_fits) <= MAX_BODY
    response = await api.client.post("/accounts", content=just_fits)
    assert response.status_code == 400  # read, parsed, and refused for the unknown field
    assert (await api.client.get("/accounts")).json() == []


async def test_a_bug_is_a_500_without_details(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("internal detail 1234")

    monkeypatch.setattr(api.node, "status", broken)
    with caplog.at_level(logging.ERROR, logger="ilp.node.api"):
        response = await api.client.get("/status")
    assert response.status_code == 500
    assert response.json() == {"error": "InternalError", "message": "the node failed; see its log"}
    assert "internal detail" not in response.text
    assert any("internal detail 1234" in (r.exc_text or "") for r in caplog.records)


# -- the ASGI scopes other than HTTP ------------------------------------------------------------


async def _drive(
    app: NodeApi, scope: dict[str, Any], incoming: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    messages = iter(incoming)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    with trio.fail_after(5):
        await app(scope, receive, send)
    return sent


async def test_lifespan_and_websocket_scopes(api: Api) -> None:
    app = NodeApi(api.node)
    sent = await _drive(
        app,
        {"type": "lifespan"},
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    sent = await _drive(
        app, {"type": "websocket", "path": "/status"}, [{"type": "websocket.connect"}]
    )
    assert [m["type"] for m in sent] == ["websocket.close"]
    with pytest.raises(ValueError, match="does not serve"):
        await _drive(app, {"type": "carrier-pigeon"}, [])


# -- nothing a client sends is a 500 ------------------------------------------------------------

_SAFE_TO = ("{base}/spsp/bob", "{base}/spsp/fz", "{base}/spsp/nobody", "http://127.0.0.1:1/x", "$")
_SAFE_URLS = (None, "btp+ws://127.0.0.1:1", "btp+ws://u:t@127.0.0.1:1/x", "http://x", "nope", 3)
_KEYS = {
    "/accounts": ("name", "relation", "asset_code", "asset_scale", "token", "url", "routes"),
    "account": ("relation", "asset_code", "asset_scale", "token", "url", "routes", "name"),
    "routes": ("prefix", "account"),
    "rates": ("rate",),
    "payments": ("to", "amount", "delivery_amount", "slippage"),
    "balance": ("adjustment",),
}
_LIMITS = ("max_packet_amount", "credit_limit")
_TARGETS = (
    ("POST", "/accounts", "/accounts"),
    ("PATCH", "/accounts/{name}", "account"),
    ("PUT", "/routes", "routes"),
    ("DELETE", "/routes", "routes"),
    ("PUT", "/routes/{prefix}", "routes"),
    ("PUT", "/rates/{asset_code}", "rates"),
    ("POST", "/accounts/{name}/payments", "payments"),
    ("POST", "/accounts/{name}/balance", "balance"),
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.just("\udc00")  # valid in JSON as an escape, but not a string that can be encoded
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_amount = (
    st.integers(-10, 2**65)
    | st.from_regex(r"-?[0-9]{1,22}", fullmatch=True)
    | st.text(alphabet="0123456789-+. e/_", max_size=24)
)
_rate = st.sampled_from(["1.1", "11/10", "0", "-1", "2e-3", "1e999999", "x", ""]) | st.floats()
_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from(["fz", "bob", "new1", "new2", "a.b", ""]),
    "relation": st.sampled_from(["child", "peer", "parent", "cousin"]),
    "asset_code": st.sampled_from(["XRP", "EUR", "USD", "", "€"]),
    "asset_scale": st.integers(-1, 300),
    "token": st.text(max_size=8) | st.just("tok\ud800"),
    "url": st.sampled_from(_SAFE_URLS),
    "routes": st.lists(st.sampled_from(["g.x", "g", "peer.x", "", "g..x", "test.node.fz"])),
    "prefix": st.sampled_from(["", "g.x", "g", "peer.x", "g..x", "test.node.fz"]),
    "account": st.sampled_from(["fz", "bob", "nobody"]),
    "rate": _rate,
    "to": st.sampled_from(_SAFE_TO),
    "amount": _amount,
    "delivery_amount": _amount,
    "slippage": _rate,
    "adjustment": _amount,
    "max_packet_amount": _amount | st.none(),
    "credit_limit": _amount | st.none(),
    "bogus": _json,
}


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, str, str, bytes]:
    """One request to an endpoint that takes a body: random bytes, random JSON, or an object
    of the endpoint's fields with plausible or arbitrary values (so that some succeed)."""
    method, template, kind = draw(st.sampled_from(_TARGETS))
    segment = draw(
        st.sampled_from(["fz", "bob", "nobody", "g.x", "EUR"])
        | st.text(min_size=1, max_size=10).filter(lambda s: s not in (".", ".."))
    )  # httpx resolves "." and ".." segments before sending
    path = re.sub(r"\{\w+\}", quote(segment, safe=""), template)
    shape = draw(st.sampled_from(["bytes", "json", "fields", "fields"]))
    if shape == "bytes":
        return method, template, path, draw(st.binary(max_size=64))
    body: Any
    if shape == "json":
        body = draw(_json)
    else:
        keys = _KEYS[kind] + (_LIMITS if kind in ("/accounts", "account") else ()) + ("bogus",)
        body = {}
        for key in keys:
            if draw(st.integers(0, 9)) < (1 if key == "bogus" else 6):
                plausible = draw(st.integers(0, 4)) > 0
                body[key] = draw(_PLAUSIBLE[key] if plausible else _json)
    if isinstance(body, dict):  # never let a payment or a dial-out leave this machine
        if "to" in body:
            body["to"] = draw(st.sampled_from(_SAFE_TO))
        if "url" in body:
            body["url"] = draw(st.sampled_from(_SAFE_URLS))
    return method, template, path, json.dumps(body).encode()


async def test_nothing_a_client_sends_gives_a_500(api: Api) -> None:
    await api.account("fz")
    await api.account("bob")
    base = api.base
    seen: set[int] = set()

    def run() -> None:
        with httpx.Client(base_url=base, headers=AUTH, timeout=60) as client:

            @settings(
                max_examples=100,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(request=_requests())
            def check(request: tuple[str, str, str, bytes]) -> None:
                method, template, path, content = request
                content = content.replace(b"{base}", base.encode())
                response = client.request(method, path, content=content)
                seen.add(response.status_code)
                assert response.status_code != 500, (method, path, content, response.text)
                check_documented(response, template, method)

            check()

    await trio.to_thread.run_sync(run)
    assert 400 in seen  # the fuzzing reached the validation
