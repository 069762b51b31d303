"""ILP over HTTP: our client link against our server application, over real loopback sockets,
and each against a misbehaving other side."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ilp.errors import AuthError, ConnectError, TransportError
from ilp.http import (
    CONTENT_TYPE,
    HttpLink,
    HttpStatusError,
    IlpHttpApp,
    IlpHttpRequest,
    check_http_url,
    open_http_link,
    reject_for_status,
    serve_ilp_http,
)
from ilp.link import IlpLink, PrepareHandler, Reply
from ilp.packet import ErrorCode, Fulfill, Prepare, Reject, decode_packet

FULFILLMENT = b"\x42" * 32
CONDITION = hashlib.sha256(FULFILLMENT).digest()
TOKEN = "their-token-0123456789"
LIMIT = 15  # seconds: the bound of every test

Message = MutableMapping[str, Any]
Asgi = Callable[[Any, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Any]


def prepare(seconds: float = 10.0, data: bytes = b"", amount: int = 10) -> Prepare:
    return Prepare(
        amount, datetime.now(UTC) + timedelta(seconds=seconds), CONDITION, "test.peer.x", data
    )


async def echo(p: Prepare) -> Reply:
    return Fulfill(FULFILLMENT, p.data)


@asynccontextmanager
async def serving(app: Asgi) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yield its URL."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_ilp_http, app, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{port}/ilp"
        finally:
            nursery.cancel_scope.cancel()


def raw_app(status: int, body: bytes, content_type: bytes = b"application/octet-stream") -> Asgi:
    """An HTTP server that answers every request with ``status`` and ``body``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError("no lifespan here")
        while (await receive()).get("more_body", False):
            pass
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


# -- our link against our server ------------------------------------------------------------------


async def test_fulfill_and_reject_round_trip() -> None:
    async def handler(p: Prepare) -> Reply:
        if p.amount == 10:
            return Fulfill(FULFILLMENT, b"fulfilled " + p.data)
        return Reject(ErrorCode("F99"), "test.peer", "no thanks", b"why")

    app = IlpHttpApp(handler, token=TOKEN)
    with trio.fail_after(LIMIT):
        async with serving(app) as url, open_http_link(url, token=TOKEN) as link:
            assert isinstance(link, IlpLink)
            fulfilled = await link.send(prepare(data=b"hello"))
            rejected = await link.send(prepare(amount=11))
    assert fulfilled == Fulfill(FULFILLMENT, b"fulfilled hello")
    assert rejected == Reject(ErrorCode("F99"), "test.peer", "no thanks", b"why")
    assert app.requests == 2


async def test_many_prepares_in_flight() -> None:
    started = 0
    all_in = trio.Event()

    async def handler(p: Prepare) -> Reply:
        nonlocal started
        started += 1
        if started == 40:
            all_in.set()
        await all_in.wait()  # every request is held until all 40 are in: they are concurrent
        return Fulfill(FULFILLMENT, p.data)

    results: list[Reply] = []
    with trio.fail_after(LIMIT):
        async with (
            serving(IlpHttpApp(handler, token=TOKEN)) as url,
            open_http_link(url, token=TOKEN) as link,
        ):

            async def one(i: int) -> None:
                results.append(await link.send(prepare(data=b"%d" % i)))

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(one, i)
    assert sorted(r.data for r in results if isinstance(r, Fulfill)) == sorted(
        b"%d" % i for i in range(40)
    )


async def test_wrong_fulfillment_is_f05() -> None:
    async def cheat(p: Prepare) -> Reply:
        return Fulfill(b"\x00" * 32)

    with trio.fail_after(LIMIT):
        async with (
            serving(IlpHttpApp(cheat, token=TOKEN)) as url,
            open_http_link(url, token=TOKEN, address="test.me") as link,
        ):
            reply = await link.send(prepare())
    assert isinstance(reply, Reject)
    assert (reply.code, reply.triggered_by) == ("F05", "test.me")


async def test_handler_that_raises_is_t00_in_a_200(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(p: Prepare) -> Reply:
        raise RuntimeError("boom")

    with trio.fail_after(LIMIT):
        async with serving(IlpHttpApp(broken, address="test.server")) as url:
            async with open_http_link(url) as link:
                reply = await link.send(prepare())
            # The peer got a packet, not an HTTP error.
            async with httpx.AsyncClient() as http:
                response = await http.post(url, content=prepare().encode())
    assert isinstance(reply, Reject)
    assert (reply.code, reply.triggered_by) == ("T00", "test.server")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    assert decode_packet(response.content) == reply
    assert "boom" in caplog.text


async def test_handler_that_hangs_is_r00_by_the_expiry() -> None:
    async def hang(p: Prepare) -> Reply:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    with trio.fail_after(LIMIT):
        async with serving(IlpHttpApp(hang)) as url, open_http_link(url) as link:
            start = trio.current_time()
            reply = await link.send(prepare(seconds=0.5))
            elapsed = trio.current_time() - start
    assert isinstance(reply, Reject)
    assert reply.code == "R00"
    assert elapsed < 5


async def test_wrong_or_missing_token_is_f02_and_the_token_is_not_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(LIMIT):
        async with serving(IlpHttpApp(echo, token=TOKEN)) as url:
            async with open_http_link(url, token="not-their-token-987") as link:
                wrong = await link.send(prepare())
            async with open_http_link(url) as link:
                missing = await link.send(prepare())
    for reply in (wrong, missing):
        assert isinstance(reply, Reject)
        assert reply.code == "F02"
        assert "refused our token (HTTP 401)" in reply.message
        assert "not-their-token-987" not in reply.message
    assert "not-their-token-987" not in caplog.text
    assert TOKEN not in caplog.text


async def test_unreachable_peer_is_t01() -> None:
    with trio.fail_after(LIMIT):
        async with serving(raw_app(200, b"")) as url:
            pass  # the port is free again
        async with open_http_link(url) as link:
            reply = await link.send(prepare())
    assert isinstance(reply, Reject)
    assert reply.code == "T01"
    assert "connection refused" in reply.message
    assert url.removesuffix("/ilp") in reply.message


async def test_closed_link_is_t01() -> None:
    async with serving(IlpHttpApp(echo)) as url:
        async with open_http_link(url) as link:
            assert link.connected
        assert not link.connected
        reply = await link.send(prepare())
    assert isinstance(reply, Reject)
    assert reply.code == "T01"


async def test_run_keeps_the_link_open_until_cancelled() -> None:
    async with serving(IlpHttpApp(echo)) as url:
        link = HttpLink(url)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            assert isinstance(await link.send(prepare()), Fulfill)
            nursery.cancel_scope.cancel()
        assert not link.connected


# -- our link against a misbehaving server --------------------------------------------------------

BAD_ANSWERS = [
    pytest.param(500, b"", "T00", "failed (HTTP 500)", id="500"),
    pytest.param(503, b"", "T00", "failed (HTTP 503)", id="503"),
    pytest.param(429, b"", "T05", "rate limiting", id="429"),
    pytest.param(403, b"", "F02", "refused our token (HTTP 403)", id="403"),
    pytest.param(404, b"", "F02", "refused the Prepare (HTTP 404)", id="404"),
    pytest.param(302, b"", "F02", "HTTP 302", id="redirect"),
    pytest.param(202, b"", "F02", "asynchronous mode", id="202-async-only"),
    pytest.param(200, b"not a packet", "T01", "not an ILP packet", id="garbage"),
    pytest.param(200, b"", "T01", "not an ILP packet", id="empty"),
    pytest.param(200, prepare().encode(), "T01", "with a Prepare", id="prepare"),
    pytest.param(200, b"\x0d" * 70_000, "T01", "more than 65536 bytes", id="huge"),
]


@pytest.mark.parametrize(("status", "body", "code", "words"), BAD_ANSWERS)
async def test_bad_answers_become_local_rejects_or_raise_from_request(
    status: int, body: bytes, code: str, words: str
) -> None:
    with trio.fail_after(LIMIT):
        async with (
            serving(raw_app(status, body)) as url,
            open_http_link(url, token=TOKEN, address="test.me") as link,
        ):
            reply = await link.send(prepare())
            # The link keeps working after each of them.
            again = await link.send(prepare())
            # request raises instead: the status, or the transport.
            with pytest.raises(TransportError) as raised:
                await link.request(prepare())
    assert isinstance(reply, Reject)
    assert (reply.code, reply.triggered_by) == (code, "test.me")
    assert words in reply.message
    assert again == reply
    assert str(raised.value) == reply.message
    assert TOKEN not in str(raised.value)
    if status == 200:
        assert type(raised.value) is TransportError
    else:
        assert isinstance(raised.value, HttpStatusError)
        assert raised.value.status == status
        assert isinstance(raised.value, AuthError) == (status == 403)


async def test_request_raises_connect_error_and_returns_answers() -> None:
    with trio.fail_after(LIMIT):
        async with serving(IlpHttpApp(echo)) as url:
            async with open_http_link(url) as link:
                assert isinstance(await link.request(prepare()), Fulfill)
            with pytest.raises(TransportError, match="closed"):
                await link.request(prepare())
        async with open_http_link(url) as link:
            with pytest.raises(ConnectError, match="connection refused"):
                await link.request(prepare())


def test_reject_for_status_classes() -> None:
    assert reject_for_status(502, "http://h/p?x=secret").code == "T00"
    assert "secret" not in reject_for_status(502, "http://h/p?x=secret").message
    assert reject_for_status(400, "http://h/").code == "F02"
    assert reject_for_status(429, "http://h/").code == "T05"


@pytest.mark.parametrize(
    "url",
    ["ftp://h/", "btp+ws://h/", "http://user:pw@h/", "http:///nohost", "http://h:99999/", "x"],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_http_url(url)
    with pytest.raises(ValueError):
        HttpLink(url)


def test_good_urls() -> None:
    for url in ("http://127.0.0.1:80/ilp", "https://peer.example/accounts/x/ilp", "HTTP://h"):
        assert check_http_url(url) == url


# -- our server against whatever a client sends -----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        pytest.param({"method": "GET"}, 405, "POST", id="get"),
        pytest.param({"headers": {}}, 401, "Bearer", id="no-token"),
        pytest.param({"headers": {"Authorization": "Bearer nope"}}, 401, "Bearer", id="wrong"),
        pytest.param({"content": b"\x0c\x01"}, 400, "not an ILP packet", id="truncated"),
        pytest.param({"content": b""}, 400, "not an ILP packet", id="empty"),
        pytest.param(
            {"content": Fulfill(FULFILLMENT).encode()}, 400, "not a Prepare", id="fulfill"
        ),
        pytest.param({"content_type": "application/json"}, 400, "Content-Type", id="json"),
        pytest.param({"content": b"\x0c" * 70_000}, 413, "at most", id="too-large"),
    ],
)
async def test_requests_that_are_not_a_prepare_get_http_errors(
    kwargs: dict[str, Any], status: int, words: str
) -> None:
    method = kwargs.get("method", "POST")
    headers = kwargs.get(
        "headers",
        {
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": kwargs.get("content_type", CONTENT_TYPE),
        },
    )
    content = kwargs.get("content", prepare().encode())
    with trio.fail_after(LIMIT):
        async with serving(IlpHttpApp(echo, token=TOKEN)) as url, httpx.AsyncClient() as http:
            response = await http.request(method, url, content=content, headers=headers)
            # The server still answers a good request afterwards.
            good = await http.post(
                url, content=prepare().encode(), headers={"Authorization": f"Bearer {TOKEN}"}
            )
    assert response.status_code == status
    assert words in response.text or words in response.headers.get("www-authenticate", "") + (
        response.headers.get("allow", "")
    )
    assert TOKEN not in response.text
    assert good.status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN}", f"bearer {TOKEN}", TOKEN],
    ids=["bearer", "lowercase", "bare-token-as-ilp-plugin-http-accepts"],
)
async def test_token_forms_accepted(authorization: str) -> None:
    with trio.fail_after(LIMIT):
        async with serving(IlpHttpApp(echo, token=TOKEN)) as url, httpx.AsyncClient() as http:
            response = await http.post(
                url,
                content=prepare(data=b"x").encode(),
                headers={
                    "Authorization": authorization,
                    "Content-Type": "application/ilp+octet-stream",
                },
            )
    assert response.status_code == 200
    assert decode_packet(response.content) == Fulfill(FULFILLMENT, b"x")


async def test_resolver_picks_the_peer_by_path_and_token() -> None:
    seen: list[IlpHttpRequest] = []

    def handler_for(name: str) -> PrepareHandler:
        async def handler(p: Prepare) -> Reply:
            return Fulfill(FULFILLMENT, name.encode())

        return handler

    async def resolve(request: IlpHttpRequest) -> PrepareHandler | None:
        seen.append(request)
        name = request.path.removeprefix("/accounts/").removesuffix("/ilp")
        return handler_for(name) if request.token == f"{name}-token" else None

    with trio.fail_after(LIMIT):
        async with serving(IlpHttpApp(resolve=resolve)) as url:
            base = url.removesuffix("/ilp")
            async with open_http_link(
                f"{base}/accounts/alice/ilp", token="alice-token", peer_name="alice-node"
            ) as alice:
                assert await alice.send(prepare()) == Fulfill(FULFILLMENT, b"alice")
            async with open_http_link(f"{base}/accounts/bob/ilp", token="alice-token") as bad:
                refused = await bad.send(prepare())
    assert isinstance(refused, Reject)
    assert refused.code == "F02"
    assert seen[0].peer_name == "alice-node"
    assert seen[0].path == "/accounts/alice/ilp"
    assert "alice-token" not in repr(seen[0])


def test_app_needs_one_handler_or_a_resolver() -> None:
    with pytest.raises(ValueError, match="not both"):
        IlpHttpApp()
    with pytest.raises(ValueError, match="not both"):
        IlpHttpApp(echo, resolve=lambda r: echo)


# -- the application never fails, whatever it is sent (no sockets) ------------------------------


async def call_app(app: IlpHttpApp, body: bytes, headers: list[tuple[bytes, bytes]]) -> Message:
    sent: list[Message] = []
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)] or [b""]

    async def receive() -> Message:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    return {"status": sent[0]["status"], "body": sent[1]["body"]}


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.binary(min_size=1, max_size=200).map(lambda b: prepare().encode()[: len(b)]),
        st.builds(
            lambda b, i: bytes(x ^ b if n == i else x for n, x in enumerate(prepare().encode())),
            st.integers(0, 255),
            st.integers(0, 60),
        ),
    ),
    authorization=st.sampled_from([None, b"Bearer " + TOKEN.encode(), b"Bearer \xff", b"\x00"]),
)
def test_arbitrary_requests_get_a_packet_or_a_4xx(body: bytes, authorization: bytes | None) -> None:
    app = IlpHttpApp(echo, token=TOKEN)
    headers = [] if authorization is None else [(b"authorization", authorization)]
    logging.disable(logging.CRITICAL)
    try:
        answer = trio.run(call_app, app, body, headers)
    finally:
        logging.disable(logging.NOTSET)
    if answer["status"] == 200:
        assert isinstance(decode_packet(answer["body"]), Fulfill | Reject)
        assert authorization == b"Bearer " + TOKEN.encode()
    else:
        assert 400 <= answer["status"] < 500
