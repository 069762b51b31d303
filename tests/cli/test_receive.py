"""`ilp receive` pieces in-process (the whole command runs against connector.js and sender.js in
tests/interop/test_cli_receive_interop.py) and `ilp ledger` through click's runner."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trio
from click.testing import CliRunner
from ilp_cli.exit_codes import ExitCode
from ilp_cli.ledger_cmd import default_ledger_path
from ilp_cli.main import cli
from ilp_cli.receive import GroupCommitter, ReceiverApp, ilp_url, payment_pointer, spsp_url

from ilp._http_server import serve_asgi
from ilp.http import IlpHttpApp, open_http_link
from ilp.ledger import Credit, Ledger, LedgerError
from ilp.link import Reply
from ilp.node.config import NodeConfig
from ilp.node.node import open_node
from ilp.packet import Fulfill, Prepare
from ilp.spsp import SpspApp
from ilp.spsp.pointer import resolve_payment_pointer
from tests.spsp.test_server import FakeCredentials

WHEN = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
ILP_RECEIVE = [sys.executable, "-m", "ilp_cli", "receive"]


def credit(amount: int, connection: str = "c1") -> Credit:
    return Credit(WHEN, "test.bob", connection, 1, amount, "XRP", 9)


def test_urls_and_pointers() -> None:
    assert spsp_url("127.0.0.1", 7780) == "http://127.0.0.1:7780/.well-known/pay"
    assert spsp_url("0.0.0.0", 80) == "http://127.0.0.1:80/.well-known/pay"
    assert spsp_url("::", 81) == "http://[::1]:81/.well-known/pay"
    assert payment_pointer("127.0.0.1") is None
    assert payment_pointer("localhost") is None
    assert payment_pointer("0.0.0.0") is None
    assert payment_pointer("::1") is None
    assert payment_pointer("pay.example") == "$pay.example"
    # No port: a payment pointer cannot have one (ilp pay refuses it), it means port 443.
    assert payment_pointer("192.0.2.7") == "$192.0.2.7"
    assert payment_pointer("2001:db8::7") == "$[2001:db8::7]"
    for pointer in ("$pay.example", "$192.0.2.7", "$[2001:db8::7]"):
        assert resolve_payment_pointer(pointer) == f"https://{pointer[1:]}/.well-known/pay"
    assert ilp_url("0.0.0.0", 7780) == "http://127.0.0.1:7780/ilp"
    assert ilp_url("::", 81) == "http://[::1]:81/ilp"


async def test_receiver_app_sends_posts_to_ilp_and_the_rest_to_spsp() -> None:
    """One port: GET is SPSP, POST is ILP over HTTP with the incoming token."""
    fulfillment = b"\x07" * 32
    prepares: list[Prepare] = []

    async def handler(prepare: Prepare) -> Reply:
        prepares.append(prepare)
        return Fulfill(fulfillment)

    app = ReceiverApp(SpspApp(FakeCredentials()), IlpHttpApp(handler, token="incoming"))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_asgi, app, "127.0.0.1", 0)
            async with httpx.AsyncClient() as http:
                spsp = await http.get(f"http://127.0.0.1:{port}/.well-known/pay")
                refused = await http.post(f"http://127.0.0.1:{port}/ilp", content=b"x")
            url = f"http://127.0.0.1:{port}/ilp"
            async with open_http_link(url, token="incoming") as link:
                reply = await link.send(
                    Prepare(
                        5,
                        datetime.now(UTC) + timedelta(seconds=10),
                        hashlib.sha256(fulfillment).digest(),
                        "test.bob.x",
                    )
                )
            nursery.cancel_scope.cancel()
    assert spsp.status_code == 200
    assert spsp.json()["destination_account"].startswith("test.bob.")
    assert refused.status_code == 401
    assert reply == Fulfill(fulfillment)
    assert [p.amount for p in prepares] == [5]


def test_default_ledger_path() -> None:
    assert default_ledger_path({"XDG_DATA_HOME": "/x"}) == Path("/x/trio-ilp/ledger.sqlite3")
    assert default_ledger_path({"HOME": "/h"}) == Path("/h/.local/share/trio-ilp/ledger.sqlite3")


async def test_group_commit_returns_after_the_commit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        committer = GroupCommitter(ledger)
        seen: list[int] = []

        async def record(amount: int) -> None:
            await committer.record(credit(amount))
            # Committed by the time record() returns: a fresh reader sees it.
            with Ledger(path) as reader:
                seen.append(sum(s.credit.amount for s in reader.credits()))
            assert seen[-1] >= amount

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(committer.run)
                async with trio.open_nursery() as writers:
                    for amount in range(1, 21):
                        writers.start_soon(record, amount)
                nursery.cancel_scope.cancel()
        assert sum(s.credit.amount for s in ledger.credits()) == sum(range(1, 21))
        assert 1 <= committer.commits < 20  # they were grouped


async def test_group_commit_failure_reaches_every_waiter(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.close()  # every write now fails
    committer = GroupCommitter(ledger)
    failures: list[str] = []

    async def record() -> None:
        try:
            await committer.record(credit(1))
        except LedgerError as exc:
            failures.append(str(exc))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            async with trio.open_nursery() as writers:
                writers.start_soon(record)
                writers.start_soon(record)
            nursery.cancel_scope.cancel()
    assert len(failures) == 2 and all("cannot write" in f for f in failures)


def test_ledger_command(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    runner = CliRunner()
    missing = runner.invoke(cli, ["ledger", "--ledger", str(path)])
    assert missing.exit_code == ExitCode.INVALID_INPUT
    assert "no ledger at" in missing.output
    assert not path.exists()
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).close()  # an empty database: no credits table
    foreign = runner.invoke(cli, ["ledger", "--ledger", str(other)])
    assert foreign.exit_code == ExitCode.INVALID_INPUT
    assert "is not a ledger" in foreign.output
    assert other.stat().st_size == 0  # nothing written

    with Ledger(path) as ledger:
        empty = runner.invoke(cli, ["ledger", "--ledger", str(path)])
        assert empty.exit_code == 0 and "(no credits yet)" in empty.output
        ledger.record([credit(1000), credit(2500, "c2")])

    text = runner.invoke(cli, ["ledger"], env={"ILP_LEDGER": str(path)})
    assert text.exit_code == 0, text.output
    assert "1000 (0.000001 XRP)  connection c1 stream 1  to test.bob" in text.output
    assert "total 3500 (0.0000035 XRP) in 2 credits" in text.output

    out = runner.invoke(cli, ["ledger", "--ledger", str(path), "--json", "--limit", "1"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert [c["amount"] for c in data["credits"]] == ["2500"]
    assert data["credits"][0]["connection"] == "c2"
    # The JSON timestamp rule of docs/cli.md: ISO 8601 UTC, milliseconds, Z.
    assert data["credits"][0]["received_at"] == "2024-05-01T12:00:00.123Z"
    assert data["totals"] == [{"asset_code": "XRP", "asset_scale": 9, "total": "3500", "count": 2}]


def test_receive_bad_port_and_help() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["receive", "--help"])
    assert result.exit_code == 0
    assert "ILP_RECEIVE_PORT" in result.output and "130" in result.output
    bad = runner.invoke(cli, ["receive", "--port", "70000"])
    assert bad.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("amount", ["1.5", "abc"])
def test_receive_rejects_a_bare_decimal(amount: str) -> None:
    result = CliRunner().invoke(cli, ["receive", "--amount", amount])
    assert result.exit_code == ExitCode.USAGE


def test_receive_without_a_connector_exits_5(tmp_path: Path) -> None:
    """The CliError raised inside the command's nursery keeps its exit code."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    ledger = str(tmp_path / "ledger.sqlite3")
    uplink = f"btp+ws://bob:secret-token@127.0.0.1:{port}"
    result = CliRunner().invoke(cli, ["receive", "--port", "0", "--ledger", ledger, "-u", uplink])
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert "cannot reach the connector" in result.stderr
    assert "secret-token" not in result.stderr


async def test_receive_on_a_busy_port_is_a_usage_error(tmp_path: Path) -> None:
    """Connected, then the SPSP port cannot be bound: exit 2 with the reason, not a link
    failure (the error passes out of the BTP client's nursery unchanged)."""
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with trio.fail_after(30):
            async with open_node(NodeConfig(address="test.n", btp_port=0, api_port=None)) as node:
                uplink = f"btp+ws://bob:tok@127.0.0.1:{node.btp_port}"
                ledger = str(tmp_path / "ledger.sqlite3")
                done = await trio.run_process(
                    [*ILP_RECEIVE, "--port", str(port), "--ledger", ledger, "-u", uplink],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert f"cannot serve SPSP on 127.0.0.1:{port}" in done.stderr.decode()
