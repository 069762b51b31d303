"""`ilp receive` as a subprocess, paid by sender.js through connector.js.

The ledger must then hold exactly what sender.js reports delivered, and `--amount` must end the
command with exit 0. Every wait is on a JSON line of a process, bounded by ``LIMIT``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from ilp_cli.exit_codes import ExitCode

from ilp.ledger import Ledger
from tests.interop.harness import JsProcess, free_port, run_js, run_program

pytestmark = pytest.mark.interop

LIMIT = 90
ENV = {k: v for k, v in os.environ.items() if not k.startswith("ILP_")}


@asynccontextmanager
async def ilp_receive(*args: str) -> AsyncIterator[JsProcess]:
    """``python -m ilp_cli receive --json ARGS``; yields once its ``ready`` line came."""
    async with run_program(
        "ilp receive",
        [sys.executable, "-m", "ilp_cli", "receive", "--json", "--port", "0", *args],
    ) as proc:
        yield proc


async def pay_with_sender(interop: Path, btp_port: int, url: str, amount: int) -> JsProcess:
    uplink = f"btp+ws://jssender:jssender-token@127.0.0.1:{btp_port}"
    args = ["--btp", uplink, "--to", url, "--amount", str(amount)]
    async with run_js(interop, "sender.js", *args, ready_event="done", ready_timeout=60) as s:
        return s


async def test_sender_js_pays_ilp_receive(interop: Path, tmp_path: Path) -> None:
    ledger_file = tmp_path / "ledger.sqlite3"
    btp_port = free_port()
    with trio.fail_after(LIMIT):
        async with (
            run_js(interop, "connector.js", "--btp-port", str(btp_port)),
            ilp_receive(
                "--uplink",
                f"btp+ws://bob:bob-token@127.0.0.1:{btp_port}",
                "--ledger",
                str(ledger_file),
                "--amount",
                "0.000003XRP",
            ) as receiver,
        ):
            ready = receiver.ready
            assert ready["address"] == "test.harness.local.bob"
            assert ready["asset"] == {"code": "XRP", "scale": 9}
            assert ready["payment_pointer"] is None  # a loopback host has no pointer
            assert ready["amount"] == "3000"
            url = ready["spsp_url"]

            first = await pay_with_sender(interop, btp_port, url, 1000)
            done = first.events("done")[0]
            assert done["ok"] is True, done
            assert int(done["delivered"]) == 1000
            await receiver.wait_for("money", where=lambda line: line["total"] == "1000")
            assert receiver.process.returncode is None  # 1000 < 3000: still receiving

            second = await pay_with_sender(interop, btp_port, url, 2500)
            done2 = second.events("done")[0]
            assert done2["ok"] is True, done2
            delivered = int(done["delivered"]) + int(done2["delivered"])
            end = await receiver.wait_for("done")
            assert end["total"] == str(delivered) == "3500"
            await receiver.exited.wait()
            assert receiver.process.returncode == ExitCode.OK, receiver.stderr_tail()

    money = receiver.events("money")
    assert sum(int(line["amount"]) for line in money) == delivered
    with Ledger(ledger_file) as book:
        credits = book.credits()
        totals = book.totals()
    assert sum(c.credit.amount for c in credits) == delivered
    assert [str(c.credit.amount) for c in credits] == [line["amount"] for line in money]
    assert {c.credit.address for c in credits} == {"test.harness.local.bob"}
    assert len({c.credit.connection for c in credits}) == 2  # one tag per SPSP query
    assert [(t.asset_code, t.asset_scale, t.total) for t in totals] == [("XRP", 9, delivered)]

    # `ilp ledger --json` lists the same.
    listed = await trio.run_process(
        [sys.executable, "-m", "ilp_cli", "ledger", "--ledger", str(ledger_file), "--json"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=ENV,
    )
    assert listed.returncode == 0, listed.stderr
    out = json.loads(listed.stdout)
    assert out["totals"] == [
        {"asset_code": "XRP", "asset_scale": 9, "total": str(delivered), "count": len(credits)}
    ]
    assert [c["amount"] for c in out["credits"]] == [line["amount"] for line in money]


async def test_interrupt_reports_what_arrived(interop: Path, tmp_path: Path) -> None:
    ledger_file = tmp_path / "ledger.sqlite3"
    btp_port = free_port()
    with trio.fail_after(LIMIT):
        async with (
            run_js(interop, "connector.js", "--btp-port", str(btp_port)),
            ilp_receive(
                "--uplink",
                f"btp+ws://carol:carol-token@127.0.0.1:{btp_port}",
                "--ledger",
                str(ledger_file),
            ) as receiver,
        ):
            sender = await pay_with_sender(interop, btp_port, receiver.ready["spsp_url"], 700)
            assert sender.events("done")[0]["ok"] is True
            await receiver.wait_for("money", where=lambda line: line["total"] == "700")
            receiver.process.send_signal(signal.SIGINT)
            await receiver.exited.wait()
            assert receiver.process.returncode == ExitCode.INTERRUPTED
            assert "Received 700 (0.0000007 XRP)" in receiver.stderr_tail()
    with Ledger(ledger_file) as book:
        assert sum(c.credit.amount for c in book.credits()) == 700


async def test_sender_js_pays_ilp_receive_over_http(interop: Path, tmp_path: Path) -> None:
    """`ilp receive` as connector.js's ILP-over-HTTP child: ILDCP is a POST to connector.js,
    whose ilp-plugin-http then POSTs our incoming Prepares to ``/ilp`` on our SPSP port."""
    ledger_file = tmp_path / "ledger.sqlite3"
    btp_port, http_port, our_port = free_port(), free_port(), free_port()
    connector_args = ["--btp-port", str(btp_port), "--http-port", str(http_port)]
    connector_args += ["--http-url", f"http://127.0.0.1:{our_port}/ilp"]
    connector_args += ["--http-relation", "child", "--http-incoming-token", "to-connector"]
    connector_args += ["--http-outgoing-token", "to-receiver"]
    with trio.fail_after(LIMIT):
        async with run_js(interop, "connector.js", *connector_args):
            async with run_program(
                "ilp receive",
                [
                    *(sys.executable, "-m", "ilp_cli", "receive", "--json"),
                    *("--port", str(our_port), "--ledger", str(ledger_file)),
                    *("--uplink", f"http://harness:to-connector@127.0.0.1:{http_port}/"),
                    *("--incoming-token", "to-receiver", "--amount", "2500"),
                ],
            ) as receiver:
                ready = receiver.ready
                assert ready["address"] == "test.harness.http"
                assert ready["ilp_url"] == f"http://127.0.0.1:{our_port}/ilp"
                done = await pay_with_sender(interop, btp_port, ready["spsp_url"], 2500)
                assert done.events("done")[0]["ok"] is True, done.events("done")
                end = await receiver.wait_for("done")
                await receiver.exited.wait()
            assert receiver.process.returncode == ExitCode.OK, receiver.stderr_tail()
    assert end["total"] == "2500"
    assert "to-receiver" not in receiver.stderr_tail() and "to-connector" not in str(ready)
    with Ledger(ledger_file) as book:
        assert sum(c.credit.amount for c in book.credits()) == 2500
        assert {c.credit.address for c in book.credits()} == {"test.harness.http"}
