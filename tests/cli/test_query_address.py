"""`ilp query-address` and the uplink rules, over BTP and over ILP over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from ilp_cli.connect import open_http_uplink
from ilp_cli.exit_codes import ExitCode
from ilp_cli.main import cli
from ilp_cli.output import CliError, sentence
from ilp_cli.uplink import Uplink, resolve_uplink

from ilp.http import IlpHttpApp, serve_ilp_http
from ilp.ildcp import IldcpError, IldcpResponse, make_ildcp_handler
from ilp.packet import Prepare
from tests.interop.harness import free_port, run_js


def test_uplink_rules_in_order() -> None:
    env = {
        "ILP_UPLINK": "btp+ws://a:1@h1:1",
        "ILP_CREDENTIALS": '{"server": "btp+ws://b:2@h2:2"}',
        "ILP_BTP_SERVER": "btp+ws://c:3@h3:3",
    }
    assert resolve_uplink("btp+ws://flag@h0:0", env).source == "--uplink"
    assert resolve_uplink(None, env).url == "btp+ws://a:1@h1:1"
    del env["ILP_UPLINK"]
    assert resolve_uplink(None, env).url == "btp+ws://b:2@h2:2"
    del env["ILP_CREDENTIALS"]
    assert resolve_uplink(None, env).url == "btp+ws://c:3@h3:3"
    default = resolve_uplink(None, {})
    assert default.source == "default"
    assert default.url.startswith("btp+ws://:") and default.url.endswith("@localhost:7768")
    assert resolve_uplink(None, {}).url != default.url  # a fresh random token per run


def test_bad_credentials_json() -> None:
    with pytest.raises(CliError, match="ILP_CREDENTIALS"):
        resolve_uplink(None, {"ILP_CREDENTIALS": "not json"})
    with pytest.raises(CliError, match='no "server"'):
        resolve_uplink(None, {"ILP_CREDENTIALS": "{}"})


@pytest.mark.parametrize(
    ("uplink", "shown"),
    [
        ("btp+ws://me:secret-token@127.0.0.1:{port}", "ws://127.0.0.1:{port}"),
        ("http://me:secret-token@127.0.0.1:{port}/ilp", "http://127.0.0.1:{port}/ilp"),
    ],
    ids=["btp", "http"],
)
def test_unreachable_connector(uplink: str, shown: str) -> None:
    port = free_port()
    result = CliRunner().invoke(cli, ["query-address", "--uplink", uplink.format(port=port)])
    assert result.exit_code == ExitCode.UNREACHABLE
    assert result.stderr == (
        f"Error: cannot reach the connector at {shown.format(port=port)} (connection refused). "
        "Start one, or set --uplink / ILP_UPLINK.\n"
    )
    assert "secret-token" not in result.stderr


def test_help_names_the_environment() -> None:
    result = CliRunner().invoke(cli, ["query-address", "--help"])
    assert "ILP_UPLINK" in result.stdout and "ILP_CREDENTIALS" in result.stdout


async def ilp(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "ilp_cli", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


@pytest.mark.interop
async def test_query_address_against_connector_js(interop: Path) -> None:
    port = free_port()
    with trio.fail_after(60):
        async with run_js(
            interop, "connector.js", "--btp-port", str(port), "--max-lifetime-s", "120"
        ):
            done = await ilp("query-address", "--json", "-u", f"btp+ws://carol:pw@127.0.0.1:{port}")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {
                "address": "test.harness.local.carol",
                "asset_code": "XRP",
                "asset_scale": 9,
            }
            # The same account with another token is refused (mini-accounts remembers the first).
            done = await ilp("query-address", "-u", f"btp+ws://carol:other-token@127.0.0.1:{port}")
            assert done.returncode == ExitCode.AUTH_REFUSED
            assert b"refused our credentials" in done.stderr
            assert b"other-token" not in done.stderr


@pytest.mark.interop
async def test_fixed_token_refuses_a_wrong_one(interop: Path) -> None:
    port = free_port()
    with trio.fail_after(60):
        async with run_js(
            interop,
            "connector.js",
            "--btp-port",
            str(port),
            "--btp-token",
            "right",
            "--max-lifetime-s",
            "120",
        ):
            # (mini-accounts remembers the first token tried per account, so a new name below.)
            env_url = f"btp+ws://dave:wrong@127.0.0.1:{port}"
            done = await ilp("query-address", "-u", env_url)
            assert done.returncode == ExitCode.AUTH_REFUSED, done.stderr
            done = await ilp(
                "query-address", "--json", "-u", f"btp+ws://erin:right@127.0.0.1:{port}"
            )
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["address"] == "test.harness.local.erin"


# -- ILP over HTTP ----------------------------------------------------------------------------


def ildcp_server(address: str = "test.up.me") -> IlpHttpApp:
    """An ILP-over-HTTP parent ``test.up`` answering ILDCP with ``address`` to the token
    ``right``; an address of ``refuse`` makes it refuse the request (F00, by the parent)."""

    def config_for(_prepare: Prepare) -> IldcpResponse:
        if address == "refuse":
            raise IldcpError("no account for you")
        return IldcpResponse(address, 9, "XRP")

    return IlpHttpApp(make_ildcp_handler(config_for, "test.up"), token="right", address="test.up")


async def test_query_address_over_http(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve_ilp_http, ildcp_server())
    done = await ilp("query-address", "--json", "-u", f"http://me:right@127.0.0.1:{port}/ilp")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "address": "test.up.me",
        "asset_code": "XRP",
        "asset_scale": 9,
    }


async def test_http_uplink_failures(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve_ilp_http, ildcp_server())
    done = await ilp("query-address", "-u", f"http://me:wrong-token@127.0.0.1:{port}/ilp")
    assert done.returncode == ExitCode.AUTH_REFUSED, done.stderr
    assert done.stderr.decode() == (
        f"Error: the connector at http://127.0.0.1:{port}/ilp refused our token "
        "(--uplink / ILP_UPLINK).\n"
    )
    # Not even --debug, with its traceback, shows the token.
    done = await ilp(
        "query-address", "--debug", "-u", f"http://me:wrong-token@127.0.0.1:{port}/ilp"
    )
    assert done.returncode == ExitCode.AUTH_REFUSED
    assert b"refused our token" in done.stderr
    assert b"wrong-token" not in done.stderr
    refusing = await nursery.start(serve_ilp_http, ildcp_server("refuse"))
    done = await ilp("query-address", "-u", f"http://me:right@127.0.0.1:{refusing}/")
    assert done.returncode == ExitCode.FAILED, done.stderr
    assert b"did not give us an address" in done.stderr
    assert b"no account for you" in done.stderr
    done = await ilp("query-address", "-u", "http://me:right@127.0.0.1:99999/")
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert b"invalid uplink URL" in done.stderr and b"right" not in done.stderr


@pytest.mark.parametrize(
    ("uplink", "extra", "words"),
    [
        (
            "https://me:secret-token@connector.example/ilp",
            [],
            "needs --incoming-token (or ILP_INCOMING_TOKEN): the bearer token the connector "
            "sends when it POSTs our incoming Prepares to http://127.0.0.1:7780/ilp.",
        ),
        (
            "btp+ws://me:secret-token@127.0.0.1:7768",
            ["--incoming-token", "secret-incoming"],
            "--incoming-token is for ILP-over-HTTP uplinks",
        ),
    ],
    ids=["http-without-token", "btp-with-token"],
)
def test_receive_takes_an_incoming_token_with_http_uplinks_only(
    tmp_path: Path, uplink: str, extra: list[str], words: str
) -> None:
    ledger = str(tmp_path / "ledger.sqlite3")
    result = CliRunner().invoke(cli, ["receive", "--ledger", ledger, "--uplink", uplink, *extra])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert words in " ".join(result.stderr.split())
    assert "secret-token" not in result.stderr and "secret-incoming" not in result.stderr


async def _answer_with(
    head: bytes, body: bytes, stream: trio.SocketStream
) -> None:  # pragma: no cover - run by the server
    async with stream:
        await stream.receive_some()
        if head:
            await stream.send_all(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await trio.sleep_forever()


@pytest.mark.parametrize(
    ("head", "body", "code", "words"),
    [
        (
            b"HTTP/1.1 404 Not Found\r\n",
            b"",
            ExitCode.UNREACHABLE,
            "the connector at http://127.0.0.1:{port}/ilp did not take our ILDCP request "
            "(HTTP 404). Check the URL in --uplink / ILP_UPLINK.",
        ),
        (
            b"HTTP/1.1 200 OK\r\n",
            b"not a packet",
            ExitCode.UNREACHABLE,
            "the ILP-over-HTTP peer at http://127.0.0.1:{port}/ilp answered with a body that is "
            "not an ILP packet",
        ),
        (
            b"",  # no answer at all
            b"",
            ExitCode.TIMEOUT,
            "the connector at http://127.0.0.1:{port}/ilp did not answer in time.",
        ),
    ],
    ids=["http-404", "not-a-packet", "no-answer"],
)
async def test_http_uplink_answers_that_are_not_ildcp(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    head: bytes,
    body: bytes,
    code: ExitCode,
    words: str,
) -> None:
    # The ILDCP request expires after 60 s: the autojump clock lets the last case get there.
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(_answer_with, head, body), 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    uplink = Uplink(f"http://me:secret-token@127.0.0.1:{port}/ilp", "--uplink")
    with pytest.raises(CliError) as raised:
        async with open_http_uplink(uplink):
            pytest.fail("the uplink gave us an address")
    assert raised.value.exit_code == code
    assert words.format(port=port) in str(raised.value)
    assert "secret-token" not in str(raised.value)


def test_messages_end_with_one_period() -> None:
    assert (
        sentence("the parent refused. Check the token.") == "the parent refused. Check the token."
    )
    assert sentence(ValueError("no address")) == "no address."


async def test_a_port_that_is_not_btp_is_not_called_refused(nursery: trio.Nursery) -> None:
    # An HTTP server where a BTP connector was expected: it answers, so say what it answered.
    port = await nursery.start(serve_ilp_http, ildcp_server())
    done = await ilp("query-address", "-u", f"btp+ws://me:secret-token@127.0.0.1:{port}")
    assert done.returncode == ExitCode.UNREACHABLE
    assert done.stderr.decode() == (
        f"Error: cannot reach the connector at ws://127.0.0.1:{port} (the WebSocket upgrade was "
        "refused with HTTP 405). Start one, or set --uplink / ILP_UPLINK.\n"
    )
