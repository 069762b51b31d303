"""The SPSP client: pointer forms, headers, redirects and every kind of bad answer."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from ilp.errors import SpspError
from ilp.spsp import PaymentPointerError, SpspTimeoutError, SpspUnreachableError, query_spsp
from tests.interop.harness import free_port, run_js

SECRET = bytes(range(200, 232))  # base64 has '+' and '/' in it, base64url '-' and '_'
GOOD = {
    "destination_account": "test.bob.abc",
    "shared_secret": base64.b64encode(SECRET).decode(),
}

Handler = Callable[[httpx.Request], httpx.Response]


def spsp(body: object = GOOD, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/spsp4+json", **headers},
    )


class Recorder:
    """A MockTransport handler answering from a dict of URL -> response, recording requests."""

    def __init__(self, answers: dict[str, httpx.Response]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers[str(request.url)]

    def client(self, **kw: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self), **kw)  # type: ignore[arg-type]


async def query(answers: dict[str, httpx.Response], receiver: str, **kw: object) -> Recorder:
    recorder = Recorder(answers)
    async with recorder.client() as client:
        await query_spsp(receiver, client=client, **kw)  # type: ignore[arg-type]
    return recorder


@pytest.mark.parametrize(
    ("receiver", "url"),
    [
        ("$example.com", "https://example.com/.well-known/pay"),
        ("$Example.com/bob/", "https://example.com/bob"),
        ("example.com/bob", "https://example.com/bob"),
        ("example.com", "https://example.com/.well-known/pay"),
        ("https://example.com/p?x=1", "https://example.com/p?x=1"),
        ("http://localhost:8080/", "http://localhost:8080/.well-known/pay"),
    ],
)
async def test_receiver_forms_and_request_headers(receiver: str, url: str) -> None:
    recorder = Recorder({url: spsp()})
    async with recorder.client() as client:
        response = await query_spsp(receiver, client=client)
    assert response.destination_account == "test.bob.abc"
    assert response.shared_secret == SECRET
    assert not response.receipts_enabled
    (request,) = recorder.requests
    assert request.method == "GET"
    assert request.headers["accept"] == "application/spsp4+json, application/spsp+json"


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(SECRET).decode(),
        base64.urlsafe_b64encode(SECRET).decode(),
        base64.urlsafe_b64encode(SECRET).decode().rstrip("="),
    ],
    ids=["base64", "base64url", "base64url-unpadded"],
)
async def test_secret_encodings(encoded: str) -> None:
    url = "https://example.com/.well-known/pay"
    recorder = Recorder({url: spsp({**GOOD, "shared_secret": encoded, "receipts_enabled": True})})
    async with recorder.client() as client:
        response = await query_spsp("$example.com", client=client)
    assert response.shared_secret == SECRET
    assert response.receipts_enabled


@pytest.mark.parametrize(
    "content_type", ["application/spsp+json", "application/json; charset=utf-8"]
)
async def test_other_json_content_types_are_accepted(content_type: str) -> None:
    url = "https://example.com/.well-known/pay"
    answer = httpx.Response(
        200, content=json.dumps(GOOD).encode(), headers={"Content-Type": content_type}
    )
    recorder = await query({url: answer}, "$example.com")
    assert len(recorder.requests) == 1


async def test_redirects_are_followed_and_reported() -> None:
    seen: list[tuple[str, str]] = []
    answers = {
        "https://a.example/.well-known/pay": httpx.Response(
            302, headers={"Location": "https://b.example/pay"}
        ),
        "https://b.example/pay": httpx.Response(307, headers={"Location": "/final"}),
        "https://b.example/final": spsp(),
    }
    recorder = Recorder(answers)
    # The client's own redirect setting does not matter: query_spsp follows them itself.
    async with recorder.client(follow_redirects=True) as client:
        response = await query_spsp(
            "$a.example", client=client, on_redirect=lambda a, b: seen.append((a, b))
        )
    assert response.shared_secret == SECRET
    assert [str(r.url) for r in recorder.requests] == list(answers)
    assert all(r.headers["accept"].startswith("application/spsp4+json") for r in recorder.requests)
    assert seen == [
        ("https://a.example/.well-known/pay", "https://b.example/pay"),
        ("https://b.example/pay", "https://b.example/final"),
    ]


async def test_redirect_limits() -> None:
    loop = {
        "https://a.example/.well-known/pay": httpx.Response(
            301, headers={"Location": "https://a.example/.well-known/pay"}
        )
    }
    with pytest.raises(SpspError, match="redirected more than 2 times"):
        await query(loop, "$a.example", max_redirects=2)
    insecure = {
        "https://a.example/.well-known/pay": httpx.Response(
            302, headers={"Location": "http://a.example/pay"}
        )
    }
    with pytest.raises(SpspError, match="not https"):
        await query(insecure, "$a.example")
    nowhere = {"https://a.example/.well-known/pay": httpx.Response(302)}
    with pytest.raises(SpspError, match="without a Location"):
        await query(nowhere, "$a.example")


BAD_ANSWERS = [
    pytest.param(
        spsp({"id": "InvalidReceiverError", "message": "no such user"}, 404),
        "HTTP 404 \\(InvalidReceiverError: no such user\\).*does not exist",
        id="not-found",
    ),
    pytest.param(
        httpx.Response(200, content=b"<html>", headers={"Content-Type": "text/html"}),
        "Content-Type 'text/html'.*not an SPSP endpoint",
        id="html",
    ),
    pytest.param(
        httpx.Response(200, content=b"{nope", headers={"Content-Type": "application/spsp4+json"}),
        "not JSON",
        id="not-json",
    ),
    pytest.param(httpx.Response(200, content=b"{nope"), "not JSON", id="not-json-untyped"),
    pytest.param(spsp([1, 2]), "not a JSON object", id="array"),
    pytest.param(
        spsp({"shared_secret": GOOD["shared_secret"]}), "no destination_account", id="no-account"
    ),
    pytest.param(
        spsp({**GOOD, "destination_account": "not an address"}),
        "not a valid ILP address",
        id="bad-account",
    ),
    pytest.param(spsp({"destination_account": "test.bob"}), "no shared_secret", id="no-secret"),
    pytest.param(
        spsp({**GOOD, "shared_secret": base64.b64encode(SECRET[:31]).decode()}),
        "decodes to 31 bytes, must be 32",
        id="short-secret",
    ),
    pytest.param(spsp({**GOOD, "shared_secret": "***"}), "not base64", id="secret-not-base64"),
    pytest.param(
        spsp({**GOOD, "receipts_enabled": "yes"}), "not a boolean", id="receipts-not-bool"
    ),
    pytest.param(spsp(status=500), "HTTP 500", id="server-error"),
    pytest.param(
        httpx.Response(200, content=b" " * 70_000, headers={"Content-Type": "application/json"}),
        "more than 65536 bytes",
        id="huge",
    ),
]


@pytest.mark.parametrize(("answer", "message"), BAD_ANSWERS)
async def test_bad_answers_raise_spsp_error(answer: httpx.Response, message: str) -> None:
    url = "https://example.com/.well-known/pay"
    with pytest.raises(SpspError, match=message) as info:
        await query({url: answer}, "$example.com")
    assert not isinstance(info.value, SpspUnreachableError)
    assert url in str(info.value)  # every message names the endpoint
    for encoded in (base64.b64encode(SECRET), base64.urlsafe_b64encode(SECRET)):
        assert encoded.decode().rstrip("=") not in str(info.value)


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_unavailable_servers_are_unreachable(status: int) -> None:
    with pytest.raises(SpspUnreachableError, match=f"unavailable \\(HTTP {status}\\)"):
        await query({"https://x.example/.well-known/pay": spsp(status=status)}, "$x.example")


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), SpspUnreachableError, "refused"),
        (httpx.ConnectError("Name or service not known"), SpspUnreachableError, "not known"),
        (httpx.ReadError("reset"), SpspUnreachableError, "failed \\(reset\\)"),
        (httpx.ReadTimeout("slow"), SpspTimeoutError, "did not answer in time"),
    ],
)
async def test_transport_failures(
    error: httpx.TransportError, kind: type[SpspError], message: str
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as client:
        with pytest.raises(kind, match=message) as info:
            await query_spsp("$x.example", client=client)
    assert type(info.value) is kind


async def test_the_whole_query_is_bounded_by_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await trio.sleep(100)
        return spsp()

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        start = trio.current_time()
        with pytest.raises(SpspTimeoutError, match="did not answer within 3 s"):
            await query_spsp("$x.example", client=client, timeout=3)
    assert trio.current_time() - start == pytest.approx(3)


async def test_a_real_refused_connection() -> None:
    port = free_port()
    with pytest.raises(SpspUnreachableError) as info:
        await query_spsp(f"http://127.0.0.1:{port}/")
    assert str(info.value) == (
        f"cannot reach the SPSP server at http://127.0.0.1:{port}/.well-known/pay"
        " (connection refused)"
    )


@pytest.mark.parametrize("receiver", ["$example.com:443", "ftp://example.com", "$", "$a b"])
async def test_invalid_receivers_raise_before_any_request(receiver: str) -> None:
    recorder = Recorder({})
    async with recorder.client() as client:
        with pytest.raises(PaymentPointerError):
            await query_spsp(receiver, client=client)
    assert recorder.requests == []


@pytest.mark.interop
async def test_against_receiver_js(interop: Path) -> None:
    port = free_port()
    with trio.fail_after(60):
        async with (
            run_js(interop, "connector.js", "--btp-port", str(port), "--max-lifetime-s", "120"),
            run_js(
                interop,
                "receiver.js",
                "--btp",
                f"btp+ws://receiver:receiver-secret@127.0.0.1:{port}",
                "--spsp-port",
                "0",
                "--max-lifetime-s",
                "120",
            ) as receiver,
        ):
            url = receiver.ready["spsp_url"]
            first = await query_spsp(url)
            second = await query_spsp(url.rstrip("/") + "/alice")
            line = await receiver.wait_for("spsp_query")
    assert first.destination_account.startswith("test.harness.local.receiver.")
    assert first.destination_account != second.destination_account
    assert len(first.shared_secret) == 32
    assert first.shared_secret != second.shared_secret
    assert line["path"] == "/.well-known/pay"
    assert "application/spsp4+json" in line["accept"]
