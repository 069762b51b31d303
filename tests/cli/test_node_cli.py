"""`ilp node` as a process: its command line, its events, and restarts in the middle of a payment.

The restart tests pay from one BTP child of the node to a STREAM receiver on another child (both
in this process; their BTP clients reconnect by themselves), stop the node while packets are held
at the receiver, start it again on the same store, and let the payment finish. After a SIGTERM
(the node drains) the store, the sender and the receiver agree exactly. After a SIGKILL the store
holds at least every balance change whose Fulfill reached the sender, and debits and credits match;
Fulfills lost with the process were fulfilled downstream, so the store rightly keeps them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from ilp.btp.client import open_btp_client
from ilp.ildcp import fetch_config
from ilp.node.store import NodeStore
from ilp.stream.connection import Connection, DataStream
from ilp.stream.pay import PaymentProgress, PaymentStatus, pay
from ilp.stream.server import StreamServer
from tests.interop.harness import JsProcess, free_port, run_program

ILP = [sys.executable, "-m", "ilp_cli"]
PAYER_TOKEN = "payer-secret-0123456789"
RECEIVER_TOKEN = "receiver-secret-0123456789"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ILP, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_help_names_the_environment_variables() -> None:
    result = _run("node", "--help")
    assert result.returncode == 0
    for name in ("ILP_NODE_CONFIG", "ILP_NODE_ADDRESS", "ILP_NODE_BTP_PORT", "ILP_NODE_DATA_DIR"):
        assert name in result.stdout


def test_a_bad_config_file_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('address = "test.ok"\n[accounts.alice]\nrelation = "cousin"\n')
    result = _run("node", "--config", str(config), "--memory")
    assert result.returncode == 2
    assert "accounts.alice" in result.stderr and "relation" in result.stderr

    config.write_text("address = [")
    result = _run("node", "--config", str(config), "--memory")
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr


def test_a_busy_port_is_a_usage_error() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run("node", "--memory", "--no-api", "--btp-port", str(port))
    assert result.returncode == 2
    assert "cannot listen" in result.stderr


def _write_config(tmp_path: Path) -> Path:
    config = tmp_path / "node.toml"
    config.write_text(
        f"""
address = "test.restart"
data_dir = "store"

[accounts.payer]
token = "{PAYER_TOKEN}"
max_packet_amount = 100
credit_limit = 1000000

[accounts.receiver]
token = "{RECEIVER_TOKEN}"
"""
    )
    return config


def _node_argv(config: Path, port: int) -> list[str]:
    return [*ILP, "node", "--json", "--config", str(config), "--btp-port", str(port), "--no-api"]


async def _start_node(stack: AsyncExitStack, config: Path, port: int) -> JsProcess:
    return await stack.enter_async_context(
        run_program("ilp node", _node_argv(config, port), ready_timeout=60)
    )


async def _node_until(
    config: Path, port: int, done: trio.Event, *, task_status: trio.TaskStatus[JsProcess]
) -> None:
    """Run the node until ``done``, then stop it with SIGTERM (for ``nursery.start``)."""
    async with run_program("ilp node", _node_argv(config, port), ready_timeout=60) as node:
        task_status.started(node)
        await done.wait()
        assert await node.stop() == 0


def _balances(config: Path) -> dict[str, int]:
    with NodeStore(config.parent / "store" / "node.sqlite3") as store:
        return {record.name: record.balance for record in store.accounts()}


async def _restart_mid_payment(tmp_path: Path, stop_signal: signal.Signals) -> None:
    config = _write_config(tmp_path)
    port = free_port()
    amount = 20_000
    accepted = 0  # what the receiver accepted (should_fulfill said yes)
    progress: list[PaymentProgress] = []
    gate = trio.Event()
    held = trio.Event()

    async def should_fulfill(_conn: Connection, _stream: DataStream, value: int) -> bool:
        nonlocal accepted
        if accepted >= amount // 4 and not gate.is_set():
            held.set()
            await gate.wait()  # hold packets here while the node stops
        accepted += value
        return True

    async with AsyncExitStack() as stack:
        node = await _start_node(stack, config, port)
        url = f"btp+ws://{{}}:{{}}@127.0.0.1:{port}"
        receiver_link = await stack.enter_async_context(
            open_btp_client(url.format("receiver", RECEIVER_TOKEN))
        )
        payer_link = await stack.enter_async_context(
            open_btp_client(url.format("payer", PAYER_TOKEN))
        )
        with trio.fail_after(10):
            receiver_config = await fetch_config(receiver_link)
            payer_config = await fetch_config(payer_link)
        server = StreamServer(
            b"s" * 32,
            receiver_config.client_address,
            "XRP",
            9,
            link=receiver_link,
            should_fulfill=should_fulfill,
            backlog=0,
        )
        receiver_link.handler = server
        await stack.enter_async_context(server)
        destination, secret = server.generate_credentials()
        results = []
        paid = trio.Event()

        async def paying() -> None:
            results.append(
                await pay(
                    payer_link,
                    destination,
                    secret,
                    source_amount=amount,
                    source_address=payer_config.client_address,
                    source_asset=("XRP", 9),
                    on_progress=progress.append,
                    idle_timeout=60,
                )
            )
            paid.set()

        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(paying)
                await held.wait()
                sent_before = progress[-1].amount_sent if progress else 0
                assert 0 < sent_before < amount
                node.process.send_signal(stop_signal)
                if stop_signal == signal.SIGTERM:
                    # The node drains: it waits for the held packets, so release them.
                    await node.wait_for("stopping")
                    gate.set()
                    await node.wait_for("stopped")
                    await node.exited.wait()
                    assert node.process.returncode == 0
                else:
                    await node.exited.wait()
                    stored = _balances(config)
                    # Every Fulfill the sender has seen was stored before it left the node. The
                    # store may hold more: Fulfills still on their way back when the node died.
                    assert -stored["payer"] >= progress[-1].amount_sent
                    assert stored["receiver"] == -stored["payer"]
                    gate.set()  # these Fulfills go nowhere: the node is gone
                await nursery.start(_node_until, config, port, paid)
        [result] = results
        assert result.status is PaymentStatus.COMPLETE, result.error
        assert result.amount_sent == amount
        assert result.amount_delivered == amount
    balances = _balances(config)
    if stop_signal == signal.SIGTERM:
        # A drained stop loses nothing: the store, the sender and the receiver agree exactly.
        assert balances["payer"] == -amount
        assert balances["receiver"] == amount
        assert accepted == amount
    else:
        # Packets whose Fulfill died with the node were sent again: the receiver got them all,
        # and the store charged the payer for every one the receiver fulfilled through it.
        assert balances["receiver"] == -balances["payer"] >= amount
        assert accepted >= balances["receiver"]


async def test_restart_with_sigterm_mid_payment(tmp_path: Path) -> None:
    await _restart_mid_payment(tmp_path, signal.SIGTERM)


async def test_restart_after_sigkill_mid_payment(tmp_path: Path) -> None:
    await _restart_mid_payment(tmp_path, signal.SIGKILL)
