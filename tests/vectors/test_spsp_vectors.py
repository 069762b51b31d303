"""Every vector of ../shared/vectors/spsp.json through ilp.spsp, plus the accepted-input rules."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ilp.errors import SpspError
from ilp.spsp import (
    SPSP_ACCEPT,
    SPSP_CONTENT_TYPE,
    PaymentPointer,
    PaymentPointerError,
    SpspResponse,
    check_redirect,
    is_valid_payment_pointer,
    parse_payment_pointer,
    parse_spsp_response,
    resolve_payment_pointer,
    resolve_spsp_endpoint,
)
from tests.conftest import vector_params

SECRET = bytes(range(32))
SECRET_B64 = base64.b64encode(SECRET).decode()


def check_pointer(v: dict[str, Any]) -> None:
    """Vectors with ``payment_pointer`` and ``endpoint_url`` (RFC 26, pay fromPaymentPointer)."""
    dec = v["decoded"]
    text = dec["payment_pointer"]
    if v["expect"] == "valid":
        assert resolve_payment_pointer(text) == dec["endpoint_url"]
        assert is_valid_payment_pointer(text)
        assert resolve_spsp_endpoint(text) == dec["endpoint_url"]
        return
    assert dec["endpoint_url"] is None
    assert not is_valid_payment_pointer(text)
    with pytest.raises(PaymentPointerError):
        resolve_payment_pointer(text)
    if text.startswith("$"):
        with pytest.raises(PaymentPointerError):
            resolve_spsp_endpoint(text)
    else:
        # Our decision: the CLI form also takes a bare host (not a payment pointer).
        assert resolve_spsp_endpoint(text) == f"https://{text}/.well-known/pay"


@pytest.mark.parametrize("v", vector_params("spsp"))
def test_spsp_vector(v: dict[str, Any]) -> None:
    name = v["name"]
    dec = v["decoded"]
    expect = v["expect"]
    assert v["hex"] is None

    if "payment_pointer" in dec and "endpoint_url" in dec:
        check_pointer(v)
    elif "canonical_payment_pointer" in dec:
        assert expect == "valid"
        pointer = parse_payment_pointer(dec["payment_pointer"])
        assert str(pointer) == dec["canonical_payment_pointer"]
        assert parse_payment_pointer(str(pointer)) == pointer
        assert pointer.url == resolve_payment_pointer(dec["canonical_payment_pointer"])
    elif "account_url" in dec:
        if expect == "valid":
            assert resolve_spsp_endpoint(dec["account_url"]) == dec["endpoint_url"]
        else:
            assert dec["endpoint_url"] is None
            with pytest.raises(PaymentPointerError):
                resolve_spsp_endpoint(dec["account_url"])
        assert not is_valid_payment_pointer(dec["account_url"])
    elif dec.get("result") == "InvalidPaymentPointer":
        assert expect == "invalid"
        assert not is_valid_payment_pointer(dec["input"])
        with pytest.raises(PaymentPointerError):
            resolve_spsp_endpoint(dec["input"])
    elif name == "pay:spsp_query:resolves":
        request = dec["request"]
        assert request["method"] == "GET"
        assert resolve_payment_pointer(dec["payment_pointer"]) == request["url"]
        assert request["url"] == dec["accountUrl"]
        assert request["accept_must_match"] in SPSP_ACCEPT.split(", ")
    elif name == "pay:spsp_query:invalid_shared_secret_length":
        assert expect == "invalid"
        body = dec["response_body"]
        with pytest.raises(SpspError, match="decodes to 3 bytes, must be 32"):
            parse_spsp_response(body)
        with pytest.raises(SpspError, match="decodes to 3 bytes, must be 32"):
            parse_spsp_response(json.dumps(body).encode())
    elif name == "pay:spsp_query:non_object_body":
        assert expect == "invalid"
        with pytest.raises(SpspError, match="not a JSON object"):
            parse_spsp_response(dec["response_body"])
        with pytest.raises(SpspError, match="not a JSON object"):
            parse_spsp_response(json.dumps(dec["response_body"]).encode())
    elif name.startswith("pay:spsp_query:redirect_"):
        url = resolve_payment_pointer(dec["payment_pointer"])
        location = dec["first_response"]["Location"]
        assert dec["first_response"]["status"] in (301, 302, 303, 307, 308)
        if expect == "valid":
            assert check_redirect(url, location) == location
        else:
            with pytest.raises(SpspError, match="insecure redirect"):
                check_redirect(url, location)
    elif name == "ilp-spsp-server:receipt_headers":
        # The server side (Receipt-Nonce/Receipt-Secret headers) belongs to the SPSP server; here
        # the media types and the body fields a client reads.
        assert "application/spsp4+json" in SPSP_ACCEPT.split(", ")
        assert dec["response_headers"]["Content-Type"] == SPSP_CONTENT_TYPE
        assert [f.split(" ")[0] for f in dec["body_fields"]] == [
            "destination_account",
            "shared_secret",
            "receipts_enabled",
        ]
        body = {
            "destination_account": "test.receiver.abc",
            "shared_secret": SECRET_B64,
            "receipts_enabled": True,
        }
        assert parse_spsp_response(json.dumps(body)) == SpspResponse(
            "test.receiver.abc", SECRET, True
        )
    elif name == "rfc9:example_response":
        request = dec["request"]
        assert request["Accept"] == SPSP_ACCEPT
        assert dec["response_content_type"] == SPSP_CONTENT_TYPE
        assert resolve_payment_pointer("$" + request["Host"]) == (
            f"https://{request['Host']}{request['path']}"
        )
        body = dec["response_body"]
        response = parse_spsp_response(json.dumps(body).encode())
        assert response.destination_account == body["destination_account"]
        assert response.shared_secret.hex() == dec["shared_secret_hex"]
        assert response.receipts_enabled is False
    elif name == "rfc9:error_404":
        assert dec["content_type"] == SPSP_CONTENT_TYPE
        with pytest.raises(SpspError) as info:
            parse_spsp_response(json.dumps(dec["body"]).encode(), status=dec["status"])
        text = str(info.value)
        assert "HTTP 404" in text
        assert dec["body"]["id"] in text
        assert dec["body"]["message"] in text
        assert "does not exist" in text
    else:  # pragma: no cover
        pytest.fail(f"unmapped SPSP vector {name}")


# --------------------------------------------------------------------------------------------
# What resolve_spsp_endpoint accepts beyond the vectors (documented in ilp.spsp.pointer)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("$Example.COM/Alice", "https://example.com/Alice"),
        ("$example.com/.well-known/pay", "https://example.com/.well-known/pay"),
        ("$example.com/a//", "https://example.com/a"),
        ("$192.0.2.1/x", "https://192.0.2.1/x"),
        ("$[2001:db8::1]/x", "https://[2001:db8::1]/x"),
        ("$example.com/%7Ebob/a:b@c", "https://example.com/%7Ebob/a:b@c"),
        ("wallet.example", "https://wallet.example/.well-known/pay"),
        ("wallet.example/bob/", "https://wallet.example/bob"),
        ("HTTPS://Wallet.Example/bob", "https://wallet.example/bob"),
        ("http://127.0.0.1:7770/", "http://127.0.0.1:7770/.well-known/pay"),
        ("http://localhost:7770/alice", "http://localhost:7770/alice"),
        ("http://[::1]:8080", "http://[::1]:8080/.well-known/pay"),
        ("https://127.0.0.2:443/x?y=1", "https://127.0.0.2:443/x?y=1"),
    ],
)
def test_accepted_receivers(text: str, url: str) -> None:
    assert resolve_spsp_endpoint(text) == url


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("$", "host is missing"),
        ("$/bob", "host is missing"),
        ("$exa mple.com", "not a valid host name"),
        ("$example..com", "not a valid host name"),
        ("$bücher.example", "xn-- form"),
        ("$[::1", "IPv6 host is malformed"),
        ("$example.com:", "cannot have a port"),
        ("$[::1]:80", "cannot have a port"),
        ("$example.com/a b", "characters that are not allowed"),
        ("$example.com/%zz", "characters that are not allowed"),
        ("$example.com/../etc", "'.' or '..' segments"),
        ("example.com:443", "cannot have a port"),
        ("ftp://example.com", r"use a \$payment\.pointer"),
        ("https://", "host is missing"),
        ("https://user@example.com", "user name or password"),
        ("http://example.com:80/", "only allowed for a loopback host"),
        ("http://localhost:0/", "from 1 to 65535"),
        ("http://localhost:99999/", "from 1 to 65535"),
        ("http://localhost:/", "from 1 to 65535"),
        ("https://example.com/?a b", "query or fragment"),
    ],
)
def test_rejected_receivers(text: str, why: str) -> None:
    with pytest.raises(PaymentPointerError, match=why) as info:
        resolve_spsp_endpoint(text)
    assert isinstance(info.value, SpspError)
    assert isinstance(info.value, ValueError)
    assert not is_valid_payment_pointer(text)


def test_pointer_parts() -> None:
    pointer = parse_payment_pointer("$Wallet.Example/alice/")
    assert pointer == PaymentPointer("wallet.example", "/alice")
    assert str(pointer) == "$wallet.example/alice"
    assert pointer.url == "https://wallet.example/alice"
    assert parse_payment_pointer("$wallet.example/") == PaymentPointer("wallet.example", "")
    with pytest.raises(PaymentPointerError, match="starts with '\\$'"):
        parse_payment_pointer("wallet.example")


@given(st.text(max_size=60))
def test_arbitrary_text_raises_only_pointer_errors(text: str) -> None:
    try:
        url = resolve_spsp_endpoint(text)
    except PaymentPointerError:
        return
    assert url.startswith(("https://", "http://"))
    # A pointer that resolves is canonical after one round.
    if text.startswith("$"):
        pointer = parse_payment_pointer(text)
        assert parse_payment_pointer(str(pointer)) == pointer
        assert resolve_spsp_endpoint(str(pointer)) == url


# --------------------------------------------------------------------------------------------
# SPSP responses and redirects


def body(**fields: object) -> dict[str, object]:
    out: dict[str, object] = {"destination_account": "g.alice.xyz", "shared_secret": SECRET_B64}
    out.update(fields)
    return out


def test_secret_encodings() -> None:
    secret = bytes([0xFB, 0xEF, 0xBE]) * 10 + b"\xff\xff"
    standard = base64.b64encode(secret).decode()
    url_safe = base64.urlsafe_b64encode(secret).decode()
    assert "+" in standard and "/" in standard and standard.endswith("=")
    assert "-" in url_safe and "_" in url_safe
    for text in (standard, standard.rstrip("="), url_safe, url_safe.rstrip("=")):
        assert parse_spsp_response(body(shared_secret=text)).shared_secret == secret


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"shared_secret": "not base64!"}, "not base64"),
        ({"shared_secret": "A"}, "not base64"),
        ({"shared_secret": "Zm9vYmFy☃"}, "not base64"),
        ({"shared_secret": 7}, "no shared_secret string"),
        ({"shared_secret": base64.b64encode(bytes(33)).decode()}, "33 bytes, must be 32"),
        ({"destination_account": "nope"}, "not a valid ILP address"),
        ({"destination_account": None}, "no destination_account"),
        ({"receipts_enabled": "yes"}, "not a boolean"),
    ],
)
def test_bad_responses(fields: dict[str, object], why: str) -> None:
    with pytest.raises(SpspError, match=why) as info:
        parse_spsp_response(body(**fields))
    assert SECRET_B64 not in str(info.value)


def test_response_fields_and_secrecy() -> None:
    raw = json.dumps(body(receipts_enabled=True, extra={"ignored": 1})).encode()
    response = parse_spsp_response(raw)
    assert response == SpspResponse("g.alice.xyz", SECRET, True)
    assert parse_spsp_response(body(receipts_enabled=None)).receipts_enabled is False
    assert SECRET.hex() not in repr(response)
    assert repr(SECRET) not in repr(response)
    with pytest.raises(SpspError, match="not JSON"):
        parse_spsp_response(b"\xff{")
    with pytest.raises(SpspError, match="HTTP 500: try again later"):
        parse_spsp_response(b"<html>", status=500)


def test_redirects() -> None:
    https = "https://wallet1.example/.well-known/pay"
    assert check_redirect(https, "/bob") == "https://wallet1.example/bob"
    assert check_redirect("http://localhost:7770/", "/x") == "http://localhost:7770/x"
    with pytest.raises(SpspError, match="insecure redirect"):
        check_redirect(https, "ftp://wallet2.example/")
    with pytest.raises(SpspError, match="insecure redirect"):
        check_redirect(https, "http://wallet2.example/x")


@given(st.binary(max_size=200))
def test_arbitrary_bodies_raise_only_spsp_errors(raw: bytes) -> None:
    try:
        response = parse_spsp_response(raw)
    except SpspError:
        return
    assert len(response.shared_secret) == 32
