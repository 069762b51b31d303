"""The SPSP server: SpspApp served by our HTTP/1.1 server on trio, queried with httpx over 127.0.0.1."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from ilp.spsp import SpspApp, parse_spsp_response, query_spsp, serve_spsp
from ilp.spsp.server import AccountResolver
from ilp.stream.pay import PaymentStatus, pay
from ilp.stream.receipt import verify_receipt
from ilp.stream.server import StreamServer
from ilp.testing import FakeConnector

SERVER_SECRET = b"\x07" * 32


class FakeCredentials:
    """Records what SpspApp asks for; hands out numbered credentials."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, bytes | None, bytes | None]] = []

    def generate_credentials(
        self,
        *,
        tag: str | None = None,
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> tuple[str, bytes]:
        self.calls.append((tag, receipt_nonce, receipt_secret))
        n = len(self.calls)
        return f"test.bob.c{n}", bytes([n]) * 32


@asynccontextmanager
async def served(
    app: SpspApp,
) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` on 127.0.0.1 at a port the kernel picked; a client whose base URL points at it."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_spsp, app, "127.0.0.1", 0)
        assert isinstance(port, int) and port > 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
        nursery.cancel_scope.cancel()


async def test_get_answers_fresh_credentials_with_spsp_headers() -> None:
    source = FakeCredentials()
    async with served(SpspApp(source)) as client:
        first = await client.get("/.well-known/pay", headers={"Accept": "application/spsp4+json"})
        second = await client.get("/alice")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/spsp4+json"
    assert first.headers["cache-control"] == "no-cache"
    assert first.headers["access-control-allow-origin"] == "*"
    assert first.headers["access-control-allow-headers"] == "web-monetization-id"
    assert first.json() == {
        "destination_account": "test.bob.c1",
        "shared_secret": base64.b64encode(b"\x01" * 32).decode(),
        "receipts_enabled": False,
    }
    assert parse_spsp_response(second.content).destination_account == "test.bob.c2"
    assert source.calls == [(None, None, None), (None, None, None)]


async def test_options_is_a_cors_preflight_and_other_methods_are_refused() -> None:
    source = FakeCredentials()
    async with served(SpspApp(source)) as client:
        options = await client.options("/.well-known/pay")
        post = await client.post("/.well-known/pay", content=b"{}")
    assert options.status_code == 204
    assert options.headers["access-control-allow-origin"] == "*"
    assert options.headers["access-control-allow-headers"] == "web-monetization-id"
    assert "GET" in options.headers["access-control-allow-methods"]
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, OPTIONS"
    assert source.calls == []  # no credentials handed out for either


async def test_receipt_headers_go_into_the_credentials() -> None:
    source = FakeCredentials()
    nonce, secret = b"\x01" * 16, b"\x02" * 32
    async with served(SpspApp(source)) as client:
        ok = await client.get(
            "/",
            headers={
                "Receipt-Nonce": base64.b64encode(nonce).decode(),
                "Receipt-Secret": base64.urlsafe_b64encode(secret).decode().rstrip("="),
            },
        )
        short = await client.get(
            "/",
            headers={
                "Receipt-Nonce": base64.b64encode(b"\x01" * 15).decode(),
                "Receipt-Secret": base64.b64encode(secret).decode(),
            },
        )
        alone = await client.get("/", headers={"Receipt-Nonce": base64.b64encode(nonce).decode()})
        garbage = await client.get("/", headers={"Receipt-Nonce": "%%%", "Receipt-Secret": "%%%"})
    assert ok.status_code == 200 and ok.json()["receipts_enabled"] is True
    assert parse_spsp_response(ok.content).receipts_enabled
    assert source.calls == [(None, nonce, secret)]
    assert short.status_code == 400
    assert short.json()["id"] == "InvalidRequestError"
    assert short.json()["message"] == "the Receipt-Nonce header must be 16 bytes, got 15"
    assert alone.status_code == 400 and "both" in alone.json()["message"]
    assert garbage.status_code == 400 and "base64" in garbage.json()["message"]


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_account_resolver_tags_known_paths_and_404s_the_rest(asynchronous: bool) -> None:
    accounts = {"/alice": "alice", "/.well-known/pay": "default"}

    def sync_resolve(path: str) -> str | None:
        return accounts.get(path)

    async def async_resolve(path: str) -> str | None:
        await trio.sleep(0)
        return accounts.get(path)

    resolve: AccountResolver = async_resolve if asynchronous else sync_resolve
    source = FakeCredentials()
    async with served(SpspApp(source, resolve_account=resolve)) as client:
        alice = await client.get("/alice")
        missing = await client.get("/mallory")
    assert alice.status_code == 200
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.headers["access-control-allow-origin"] == "*"
    assert missing.json() == {"id": "InvalidReceiverError", "message": "no receiver at /mallory"}
    assert source.calls == [("alice", None, None)]


async def test_cache_control_is_configurable() -> None:
    async with served(SpspApp(FakeCredentials(), cache_control="max-age=60")) as client:
        response = await client.get("/")
    assert response.headers["cache-control"] == "max-age=60"


async def test_cancelling_stops_the_server() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_spsp, SpspApp(FakeCredentials()), "127.0.0.1", 0)
            nursery.cancel_scope.cancel()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_a_busy_port_fails_to_start() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        async with trio.open_nursery() as nursery:
            with pytest.raises(OSError, match="in use"):
                await nursery.start(serve_spsp, SpspApp(FakeCredentials()), "127.0.0.1", port)
    finally:
        await listeners[0].aclose()


async def test_credentials_from_a_stream_server_receive_a_payment_with_receipts() -> None:
    connector = FakeConnector("test.connector")
    bob_link = connector.add_child("bob")
    alice_link = connector.add_child("alice")
    stream_server = StreamServer(SERVER_SECRET, connector.child_address("bob"), "XRP", 9)
    bob_link.handler = stream_server
    receipt_secret = b"\x09" * 32
    async with stream_server, served(SpspApp(stream_server)) as client:
        endpoint = f"{client.base_url}/.well-known/pay"
        plain = await query_spsp(endpoint, client=client)
        response = await client.get(
            endpoint,
            headers={
                "Receipt-Nonce": base64.b64encode(b"\x05" * 16).decode(),
                "Receipt-Secret": base64.b64encode(receipt_secret).decode(),
            },
        )
        with_receipts = parse_spsp_response(response.content)
        assert plain.destination_account.startswith("test.connector.bob.")
        assert plain.destination_account != with_receipts.destination_account
        assert not plain.receipts_enabled and with_receipts.receipts_enabled
        result = await pay(
            alice_link,
            with_receipts.destination_account,
            with_receipts.shared_secret,
            source_amount=12_345,
        )
    assert result.status is PaymentStatus.COMPLETE, result.error
    assert result.amount_delivered == 12_345
    assert result.destination_asset == ("XRP", 9)
    assert result.receipt is not None
    receipt = verify_receipt(result.receipt, receipt_secret)
    assert receipt.nonce == b"\x05" * 16
    assert receipt.total_received == 12_345


async def test_the_secret_is_standard_base64_with_padding() -> None:
    # SPEC §11.2: base64 with padding, whatever bytes the secret has.
    class Awkward(FakeCredentials):
        def generate_credentials(
            self,
            *,
            tag: str | None = None,
            receipt_nonce: bytes | None = None,
            receipt_secret: bytes | None = None,
        ) -> tuple[str, bytes]:
            return "test.x", b"\xfb\xff" * 15 + b"\xfb\xf0"

    async with served(SpspApp(Awkward())) as client:
        response = await client.get("/")
    secret = response.json()["shared_secret"]
    assert secret == base64.b64encode(b"\xfb\xff" * 15 + b"\xfb\xf0").decode()
    assert "/" in secret and secret.endswith("=")
