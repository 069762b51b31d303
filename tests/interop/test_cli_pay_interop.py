"""`ilp pay` / `ilp quote` as a subprocess, through connector.js to receiver.js.

Every amount the command reports is checked against the receiver's own ``money`` lines, and
every exit code the docs promise is produced by a real failure: an unreachable receiver or
connector, a bad pointer, a connector fee above the slippage, Ctrl-C in the middle of a payment.
One run goes through a pseudo-terminal so that the progress display is drawn.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from ilp_cli.exit_codes import ExitCode

from tests.interop.harness import JsProcess, free_port, receiver_js, run_js

pytestmark = pytest.mark.interop

LIMIT = 120  # seconds: the bound of every test
ILP = [sys.executable, "-m", "ilp_cli"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("ILP_")}


@asynccontextmanager
async def network(
    interop: Path, *connector_args: str, money_events: bool = True
) -> AsyncIterator[tuple[JsProcess, JsProcess]]:
    """connector.js with receiver.js as its child ``receiver``."""
    port = free_port()
    async with (
        run_js(
            interop,
            "connector.js",
            "--btp-port",
            str(port),
            "--max-lifetime-s",
            "240",
            *connector_args,
        ) as connector,
        receiver_js(
            interop,
            port,
            "--money-events",
            "true" if money_events else "false",
            "--max-lifetime-s",
            "240",
        ) as receiver,
    ):
        yield connector, receiver


def uplink(connector: JsProcess, user: str, port: int | None = None) -> str:
    port = connector.ready["btp_port"] if port is None else port
    return f"btp+ws://{user}:{user}-token@127.0.0.1:{port}"


def received(receiver: JsProcess) -> int:
    """What receiver.js says it received in all, from its ``money`` lines."""
    return max((int(line["total"]) for line in receiver.events("money")), default=0)


async def wait_received(receiver: JsProcess, amount: int) -> None:
    await receiver.wait_for("money", where=lambda line: int(line["total"]) >= amount)


async def ilp(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [*ILP, *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env=ENV,
    )


async def ilp_json(*args: str) -> tuple[subprocess.CompletedProcess[bytes], dict[str, Any]]:
    done = await ilp(*args, "--json")
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, (done.stdout, done.stderr)
    return done, json.loads(lines[0])


async def test_same_asset_payments(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with network(interop) as (connector, receiver):
            url = receiver.ready["spsp_url"]
            me = uplink(connector, "clipay")

            done, out = await ilp_json("pay", url, "1000", "-u", me)
            assert done.returncode == 0, done.stderr
            await wait_received(receiver, 1000)
            assert out["status"] == "complete"
            assert out["source"] == {
                "address": "test.harness.local.clipay",
                "asset_code": "XRP",
                "asset_scale": 9,
                "amount": "1000",
            }
            assert out["destination"]["address"].startswith("test.harness.local.receiver.")
            assert out["destination"]["amount"] == "1000" == str(received(receiver))
            assert out["exchange_rate"]["probed"] == "1"

            # Asset units, converted with the scale from ILDCP (XRP, 9).
            done, out = await ilp_json("pay", url, "0.001XRP", "-u", me)
            assert done.returncode == 0, done.stderr
            assert out["requested_amount"] == "1000000"
            await wait_received(receiver, 1_001_000)
            assert received(receiver) == 1_001_000

            # Fixed delivery in the receiver's units.
            done, out = await ilp_json("pay", url, "--deliver", "0.000002XRP", "-u", me)
            assert done.returncode == 0, done.stderr
            assert out["fixed"] == "delivery"
            assert int(out["destination"]["amount"]) >= 2000
            await wait_received(receiver, 1_001_000 + int(out["destination"]["amount"]))
            assert received(receiver) == 1_001_000 + int(out["destination"]["amount"])

            # The summary for people, in both forms.
            done = await ilp("pay", url, "5000", "-u", me)
            assert done.returncode == 0, done.stderr
            assert b"  delivered  5000 (0.000005 XRP)" in done.stdout.splitlines()

            # A quote moves nothing.
            before = received(receiver)
            done, out = await ilp_json("quote", url, "0.5XRP", "-u", me)
            assert done.returncode == 0, done.stderr
            assert out["destination"]["amount"] == "500000000"
            assert out["destination"]["min_amount"] == "495000000"
            assert received(receiver) == before

            # The receiver is not there: its SPSP server refuses the connection.
            gone = free_port()
            done, out = await ilp_json("pay", f"http://127.0.0.1:{gone}/", "1000", "-u", me)
            assert done.returncode == ExitCode.UNREACHABLE
            assert done.stderr.decode() == (
                f"Error: cannot reach the SPSP server at http://127.0.0.1:{gone}/.well-known/pay"
                " (connection refused). Check the payment pointer and that the receiver is up."
                " Nothing was sent.\n"
            )
            assert out["status"] == "failed" and out["error"]["kind"] == "unreachable"


async def test_bad_input_and_an_unreachable_connector() -> None:
    with trio.fail_after(LIMIT):
        done = await ilp("pay", "$127.0.0.1:7770", "1000")
        assert done.returncode == ExitCode.USAGE
        assert b"payment pointers cannot have a port" in done.stderr
        done = await ilp("pay", "$example.com", "1.5")
        assert done.returncode == ExitCode.USAGE
        assert b"no asset code" in done.stderr
        port = free_port()
        done, out = await ilp_json(
            "pay", "$example.com", "1000", "-u", f"btp+ws://me:hidden@127.0.0.1:{port}"
        )
        assert done.returncode == ExitCode.UNREACHABLE
        assert done.stderr.decode() == (
            f"Error: cannot reach the connector at ws://127.0.0.1:{port} (connection refused)."
            " Start one, or set --uplink / ILP_UPLINK. Nothing was sent.\n"
        )
        assert b"hidden" not in done.stderr + done.stdout
        assert out["error"]["kind"] == "unreachable"


async def test_cross_asset_through_the_fx_listener(interop: Path) -> None:
    fx_port = free_port()
    with trio.fail_after(LIMIT):
        async with network(interop, "--fx-btp-port", str(fx_port)) as (connector, receiver):
            url = receiver.ready["spsp_url"]
            me = uplink(connector, "clifx", fx_port)
            done, out = await ilp_json("pay", url, "12.34USD", "-u", me)
            assert done.returncode == 0, done.stderr
            # 1 USD = 2 XRP: a cent is 2 x 10^7 XRP drops of 10^-9.
            assert out["source"]["asset_code"] == "USD" and out["source"]["amount"] == "1234"
            assert out["destination"]["asset_code"] == "XRP"
            assert out["destination"]["amount"] == str(1234 * 2 * 10**7)
            assert out["exchange_rate"]["probed"] == "20000000"
            await wait_received(receiver, 1234 * 2 * 10**7)

            done = await ilp("pay", url, "--deliver", "1XRP", "-u", me)
            assert done.returncode == 0, done.stderr
            lines = done.stdout.decode().splitlines()
            assert "  requested  1000000000 (1 XRP) (fixed delivery)" in lines
            assert "  sent       50 (0.5 USD)" in lines
            await wait_received(receiver, 1234 * 2 * 10**7 + 10**9)
            assert received(receiver) == 1234 * 2 * 10**7 + 10**9


async def test_a_connector_fee_above_the_slippage_fails(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with network(interop, "--spread", "0.05") as (connector, receiver):
            url = receiver.ready["spsp_url"]
            me = uplink(connector, "clislip")
            done, out = await ilp_json("pay", url, "100000", "--slippage", "0.01", "-u", me)
            assert done.returncode == ExitCode.FAILED, done.stderr
            assert out["status"] == "failed"
            assert out["error"]["kind"] == "insufficient_exchange_rate"
            assert out["exchange_rate"]["probed"] == "0.95"
            assert done.stderr.decode().endswith(
                "Nothing was delivered. Allow more with --slippage.\n"
            )
            done = await ilp("quote", url, "100000", "--slippage", "0.01", "-u", me)
            assert done.returncode == ExitCode.FAILED
            assert receiver.events("money") == []


async def test_interrupted_payment_reports_what_arrived(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with network(interop, "--max-packet-amount", "10") as (connector, receiver):
            url = receiver.ready["spsp_url"]
            process = await trio.lowlevel.open_process(
                [*ILP, "pay", url, "10000000", "--json", "-u", uplink(connector, "cliint")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=ENV,
            )
            try:
                await receiver.wait_for("money")  # the payment is under way
                process.send_signal(signal.SIGINT)
                assert process.stdout is not None and process.stderr is not None
                stdout = await process.stdout.receive_some(1 << 20)
                stderr = await process.stderr.receive_some(1 << 20)
                code = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            assert code == ExitCode.INTERRUPTED, stderr
            out = json.loads(stdout)
            delivered = int(out["destination"]["amount"])
            await wait_received(receiver, delivered)
            assert out["status"] == "partial"
            assert out["error"]["kind"] == "interrupted"
            assert 0 < delivered < 10_000_000
            assert delivered == int(out["source"]["amount"]) == received(receiver)
            assert stderr.decode().startswith("Error: interrupted. Sent ")


async def _read_terminal(master: int, into: bytearray) -> None:
    stream = trio.lowlevel.FdStream(os.dup(master))
    async with stream:
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except (OSError, trio.BrokenResourceError):
                return  # EIO: the other side of the pseudo-terminal closed
            if not chunk:
                return
            into += chunk


async def test_progress_on_a_terminal(interop: Path) -> None:
    with trio.fail_after(LIMIT):
        async with network(interop, "--max-packet-amount", "1000", money_events=False) as (
            connector,
            receiver,
        ):
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
            screen = bytearray()
            try:
                process = await trio.lowlevel.open_process(
                    [
                        *ILP,
                        "pay",
                        receiver.ready["spsp_url"],
                        "2000000",
                        "-u",
                        uplink(connector, "clitty"),
                    ],
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    env={**ENV, "TERM": "xterm-256color", "COLUMNS": "160"},
                )
                os.close(slave)
                slave = -1
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_read_terminal, master, screen)
                    code = await process.wait()
            finally:
                if slave >= 0:
                    os.close(slave)
                os.close(master)
    text = screen.decode("utf-8", "replace")
    assert code == 0, text[-2000:]
    # The progress display was drawn on the terminal: a bar, the running totals, then the
    # summary (on the same terminal, as stdout is one too).
    assert "━" in text
    assert "paying" in text
    assert "packets" in text and "in flight" in text and "rate" in text
    assert "sent 0.002 XRP" in text
    assert "payment complete" in text
    assert "2000 fulfilled" in text
