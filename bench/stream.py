"""STREAM payments per second of packets: our pay() and StreamServer beside ilp-protocol-stream.

Both benchmarks pay 1,000,000 units through a path that carries at most 1000 per Prepare, so a
payment is about 1000 money packets. The figure is **fulfilled money packets / seconds of the
money phase**:

* Python: the sender's link is wrapped to stamp every Prepare as it leaves and its reply as it
  comes back. The money phase runs from the moment the first fulfillable Prepare with an amount
  leaves (probing is over by then) to the moment the last Fulfill of a Prepare with an amount
  comes back; the packets counted are the Fulfills of Prepares with an amount. Probes, the
  ConnectionClose packet, BTP connection set-up and ILDCP are outside it. A note gives this
  process's CPU time (``time.process_time``, read before and after the whole ``pay()`` call,
  never per packet) as a share of that call's wall time: well under 100% means we wait on the
  connector.
* JS: ``sender.js``'s ``packets_per_s``: fulfilled Prepares with an amount divided by the
  duration of ``stream.sendTotal()``, which starts after ``createConnection()`` (where
  ilp-protocol-stream probes the rate and learns the packet limit) and ends when the total is
  fulfilled. So both sides time the same span of a payment.

``stream-pay-connector``: one ``connector.js`` (ilp-connector, ``--max-packet-amount 1000``)
carries both payments, each side on its own BTP child accounts: our :func:`~ilp.stream.pay.pay`
to our :class:`~ilp.stream.server.StreamServer` (sender and receiver in this process, in one
``trio.run``), and ``sender.js`` to ``receiver.js`` (two more node processes; the receiver's
per-packet log lines are off). First one small payment on each side warms the connector's and
the receiver's JIT (and our caches); then the two sides take turns, one payment each per round,
for ``min(Settings.repeat, 3)`` rounds, and the best round of each side counts. Each JS payment
is a fresh ``sender.js`` process (with its own warm-up only inside that payment). Each side
runs its defaults: ilp-protocol-stream 2.7.1 sends one Prepare at a time, pay() keeps up to 20
in flight under its congestion window. On a small machine the three node processes of the JS
side compete for cores, as do our process and the connector on ours.

``stream-pay-memory``: the same payment over :mod:`ilp.testing` memory links through a
:class:`~ilp.testing.FakeConnector` (``max_packet_amount=1000``), best of ``Settings.repeat``.
Every hop still encodes and decodes the ILP packets. There is no JS counterpart.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import trio

from ilp.btp import open_btp_client
from ilp.ildcp import fetch_config
from ilp.link import IlpLink, Reply, ReplyCallback
from ilp.packet import Fulfill, Prepare
from ilp.stream.connection import Connection, DataStream
from ilp.stream.crypto import StreamCrypto
from ilp.stream.pay import PaymentStatus, pay
from ilp.stream.server import StreamServer
from ilp.testing import FakeConnector

from .runner import Benchmark, Measurement, Settings

__all__ = [
    "AMOUNT",
    "BENCHMARKS",
    "MAX_PACKET_AMOUNT",
    "PACKETS",
    "MoneyPhase",
    "TimingLink",
    "describe",
    "free_port",
    "harness_problem",
    "pay_once",
    "python_endpoints",
    "run_json_process",
    "run_trio",
    "serve_payments",
]

PACKETS: Final = "packets/s"
AMOUNT: Final = 1_000_000
MAX_PACKET_AMOUNT: Final = 1000
WARM_UP_AMOUNT: Final = 50_000
"""About 50 packets: enough to get the node JIT and our caches past their first packets."""
MAX_ROUNDS: Final = 3
PAYMENT_LIMIT: Final = 120.0
"""Seconds any one payment (either side) may take before the benchmark gives up."""
START_LIMIT: Final = 30.0
SERVER_SECRET: Final = bytes(range(64, 96))

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MoneyPhase:
    """One payment: its money phase (packets, wall seconds) and this process's CPU share."""

    packets: int
    seconds: float
    cpu_share: float
    """This process's CPU seconds over the wall seconds of the whole pay() call (1.0 = one core)."""
    cpu_us_per_packet: float
    """This process's CPU over the whole pay() call (probes and close too), in µs per money
    packet fulfilled: what sender and receiver cost together."""

    @property
    def rate(self) -> float:
        """Fulfilled money packets per second of the money phase."""
        return self.packets / max(self.seconds, 1e-9)


class TimingLink:
    """An :class:`~ilp.link.IlpLink` that stamps each Prepare as it leaves and its reply."""

    def __init__(self, link: IlpLink) -> None:
        self._link = link
        self.records: list[tuple[float, float, Prepare, Reply]] = []
        """(sent, replied, prepare, reply) per answered Prepare, ``time.perf_counter`` seconds."""
        # Offer send_nowait only over a link that has it, as pay() takes whichever path the
        # link offers.
        nowait = getattr(link, "send_nowait", None)
        if callable(nowait):
            self._nowait: Callable[[Prepare, ReplyCallback], bool] = nowait
            self.send_nowait = self._send_nowait
            self.bounds_expiry = getattr(link, "bounds_expiry", False)

    async def send(self, prepare: Prepare) -> Reply:
        """Send through the wrapped link, recording the times."""
        sent = time.perf_counter()
        reply = await self._link.send(prepare)
        self.records.append((sent, time.perf_counter(), prepare, reply))
        return reply

    def _send_nowait(self, prepare: Prepare, on_reply: ReplyCallback) -> bool:
        """``send_nowait`` through the wrapped link, recording the same times as :meth:`send`."""
        sent = time.perf_counter()
        records = self.records

        def record(reply: Reply) -> None:
            records.append((sent, time.perf_counter(), prepare, reply))
            on_reply(reply)

        return self._nowait(prepare, record)

    def money_phase(self, shared_secret: bytes) -> tuple[int, float]:
        """(money packets fulfilled, seconds from the first money Prepare sent to the last one
        fulfilled); money Prepares are the fulfillable ones with an amount."""
        crypto = StreamCrypto(shared_secret)
        starts = [
            sent
            for sent, _, prepare, _ in self.records
            if prepare.amount > 0 and prepare.execution_condition == crypto.condition(prepare.data)
        ]
        ends = [
            replied
            for _, replied, prepare, reply in self.records
            if prepare.amount > 0 and type(reply) is Fulfill
        ]
        if not starts or not ends:
            raise RuntimeError("the payment sent no fulfilled money packet")
        return len(ends), max(ends) - min(starts)


async def pay_once(link: IlpLink, server: StreamServer, amount: int = AMOUNT) -> MoneyPhase:
    """Pay ``amount`` to a fresh connection of ``server`` over ``link``; its money phase.

    Raises RuntimeError unless the whole amount was sent and delivered (same asset, no fees).
    """
    destination, secret = server.generate_credentials()
    timing = TimingLink(link)
    with trio.fail_after(PAYMENT_LIMIT):
        wall, cpu = time.perf_counter(), time.process_time()
        result = await pay(timing, destination, secret, source_amount=amount)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if (
        result.status is not PaymentStatus.COMPLETE
        or result.amount_sent != amount
        or result.amount_delivered != amount
    ):
        raise RuntimeError(
            f"pay() ended {result.status.value} after sending {result.amount_sent} of {amount} "
            f"(delivered {result.amount_delivered}): {result.error}"
        )
    packets, seconds = timing.money_phase(secret)
    return MoneyPhase(packets, seconds, cpu / max(wall, 1e-9), cpu * 1e6 / packets)


async def _drain_money(stream: DataStream) -> None:
    async for _ in stream.money():
        pass


async def _serve_connection(conn: Connection) -> None:
    async with trio.open_nursery() as nursery:
        async for stream in conn.streams():
            nursery.start_soon(_drain_money, stream)


@asynccontextmanager
async def serve_payments(server: StreamServer) -> AsyncIterator[StreamServer]:
    """Run ``server`` with an application that takes every connection and reads its money."""
    async with server, trio.open_nursery() as nursery:

        async def accept() -> None:
            async for conn in server.connections():
                nursery.start_soon(_serve_connection, conn)

        nursery.start_soon(accept)
        yield server
        nursery.cancel_scope.cancel()


# -- stream-pay-memory ---------------------------------------------------------------------------


async def _memory_rounds(rounds: int) -> list[MoneyPhase]:
    connector = FakeConnector("test.bench", max_packet_amount=MAX_PACKET_AMOUNT)
    sender = connector.add_child("sender")
    receiver = connector.add_child("receiver")
    server = StreamServer(SERVER_SECRET, connector.child_address("receiver"), "XRP", 9)
    server.link = receiver
    receiver.handler = server
    async with serve_payments(server):
        await pay_once(sender, server, WARM_UP_AMOUNT)
        return [await pay_once(sender, server) for _ in range(rounds)]


def describe(exc: BaseException) -> str:
    """One line; RuntimeErrors (ours, already worded) without their type name."""
    lines = str(exc).splitlines()
    text = lines[0] if lines else ""
    return text if type(exc) is RuntimeError else f"{type(exc).__name__}: {text}"


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def run_trio(fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """``trio.run``, with the failures inside nurseries raised as one readable RuntimeError."""
    try:
        return trio.run(fn, *args)
    except ExceptionGroup as group:
        raise RuntimeError("; ".join(describe(e) for e in _leaves(group))) from group


def _measure_memory(settings: Settings) -> Measurement:
    phases = run_trio(_memory_rounds, settings.repeat)
    best = max(phases, key=lambda p: p.rate)
    return Measurement(
        best.rate,
        None,
        (
            "js n/a: ilp-protocol-stream has no in-memory plugin pair to compare with",
            f"python process on CPU {best.cpu_share:.0%} of the payment's wall time",
        ),
    )


# -- stream-pay-connector ------------------------------------------------------------------------


def harness_problem(settings: Settings) -> str | None:
    """Why the JS harness cannot run (None if it can)."""
    if settings.node is None:
        return "node is not installed"
    if not (settings.interop / "node_modules").is_dir():
        return f"no JS harness at {settings.interop} (set ILP_INTEROP_DIR; `make install`)"
    return None


def _error_line(stderr: bytes | bytearray) -> str:
    """The line of node's stderr that names the error (else its last line)."""
    lines = [line.strip() for line in bytes(stderr).decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    named = [line for line in lines if "Error" in line]
    return (named or lines or ["no output on stderr"])[0 if named else -1][:300]


class _NodeScript:
    """A long-running harness script: its JSON lines on stdout and the tail of its stderr."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self._changed = trio.Event()
        self._ended = False

    async def read_stdout(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        buffer = b""
        try:
            async for chunk in stream:
                *complete, buffer = (buffer + chunk).split(b"\n")
                for raw in complete:
                    try:
                        line = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(line, dict):
                        self.lines.append(line)
                self.notify()
        finally:
            self._ended = True
            self.notify()

    async def read_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        async for chunk in stream:
            self.stderr += chunk
            del self.stderr[:-4096]

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, event: str) -> dict[str, Any]:
        """The first ``event`` line; RuntimeError if the script ends or fails first."""
        while True:
            for line in self.lines:
                if line.get("event") == event:
                    return line
                if line.get("event") == "fatal":
                    raise RuntimeError(f"{self.name} failed: {line.get('error')}")
            if self._ended:
                raise RuntimeError(
                    f"{self.name} exited before {event!r}: {_error_line(self.stderr)}"
                )
            await self._changed.wait()


@asynccontextmanager
async def run_json_process(
    name: str, args: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[dict[str, Any], int]]:
    """Run a process that prints JSON lines until the block ends; yields its ``ready`` line and
    its pid. Leaving the block sends SIGTERM (SIGKILL 5 s later, by ``trio.run_process``)."""
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                list(args),
                cwd=str(cwd),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        )
        script = _NodeScript(name, process)
        nursery.start_soon(script.read_stdout)
        nursery.start_soon(script.read_stderr)
        with trio.fail_after(START_LIMIT):
            ready = await script.wait_for("ready")
        yield ready, process.pid
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _run_script(settings: Settings, script: str, *args: str) -> AsyncIterator[dict[str, Any]]:
    """Run a harness script until the block ends; yields its ``ready`` line."""
    assert settings.node is not None
    argv = [settings.node, str(settings.interop / script), *args]
    async with run_json_process(script, argv, settings.interop) as (ready, _pid):
        yield ready


@asynccontextmanager
async def python_endpoints(base: str) -> AsyncIterator[tuple[IlpLink, StreamServer]]:
    """Our sender's link and a served StreamServer, each a BTP child of the connector at
    ``base`` (``host:port``)."""
    async with (
        open_btp_client(f"btp+ws://pyreceiver:pyreceiver-token@{base}") as receiver_link,
        open_btp_client(f"btp+ws://pysender:pysender-token@{base}") as sender_link,
    ):
        config = await fetch_config(receiver_link)
        server = StreamServer(
            SERVER_SECRET,
            config.client_address,
            config.asset_code,
            config.asset_scale,
            link=receiver_link,
        )
        receiver_link.handler = server
        async with serve_payments(server):
            yield sender_link, server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _sender_js(settings: Settings, btp_url: str, spsp_url: str, amount: int) -> float:
    """One sender.js payment; its ``packets_per_s``."""
    assert settings.node is not None
    args = [settings.node, str(settings.interop / "sender.js"), "--btp", btp_url]
    args += ["--to", spsp_url, "--amount", str(amount), "--timeout-ms", "60000"]
    with trio.fail_after(PAYMENT_LIMIT):
        proc = await trio.run_process(
            args,
            cwd=str(settings.interop),
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    done = None
    for raw in proc.stdout.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("event") == "done":
            done = line
    if done is None or not done.get("ok") or done.get("packets_per_s") is None:
        detail = done.get("error") if done else _error_line(proc.stderr)
        raise RuntimeError(f"sender.js exited {proc.returncode}: {detail}")
    return float(done["packets_per_s"])


@dataclass(frozen=True, slots=True)
class _Rounds:
    python: list[MoneyPhase]
    js: list[float]
    js_error: str | None


async def _connector_rounds(settings: Settings, rounds: int) -> _Rounds:
    port = free_port()
    connector_args = ["--btp-port", str(port), "--max-packet-amount", str(MAX_PACKET_AMOUNT)]
    connector_args += ["--log-level", "warn"]
    base = f"127.0.0.1:{port}"
    async with _run_script(settings, "connector.js", *connector_args):
        receiver_args = ["--btp", f"btp+ws://jsreceiver:jsreceiver-token@{base}"]
        receiver_args += ["--spsp-port", "0", "--money-events", "false", "--echo", "false"]
        async with (
            _run_script(settings, "receiver.js", *receiver_args) as js_receiver,
            python_endpoints(base) as (sender_link, server),
        ):
            spsp_url = str(js_receiver["spsp_url"])
            js_sender = partial(
                _sender_js, settings, f"btp+ws://jssender:jssender-token@{base}", spsp_url
            )
            python: list[MoneyPhase] = []
            js: list[float] = []
            js_error = None
            await pay_once(sender_link, server, WARM_UP_AMOUNT)
            try:
                await js_sender(WARM_UP_AMOUNT)
            except (RuntimeError, trio.TooSlowError, OSError) as exc:
                js_error = f"js error: {describe(exc)}"
            for _ in range(rounds):
                python.append(await pay_once(sender_link, server))
                if js_error is None:
                    try:
                        js.append(await js_sender(AMOUNT))
                    except (RuntimeError, trio.TooSlowError, OSError) as exc:
                        js_error = f"js error: {describe(exc)}"
    return _Rounds(python, js, js_error)


def _measure_connector(settings: Settings) -> Measurement:
    problem = harness_problem(settings)
    if problem is not None:
        return Measurement(None, None, (f"n/a: needs connector.js: {problem}",))
    result = run_trio(_connector_rounds, settings, min(settings.repeat, MAX_ROUNDS))
    best = max(result.python, key=lambda p: p.rate)
    notes = [
        f"our process (sender + receiver) on CPU {best.cpu_share:.0%} of the payment's wall time"
    ]
    if result.js_error is not None:
        notes.append(result.js_error)
    return Measurement(best.rate, max(result.js, default=None), tuple(notes))


BENCHMARKS: Final[Sequence[Benchmark]] = (
    Benchmark("stream-pay-connector", PACKETS, measure=_measure_connector),
    Benchmark("stream-pay-memory", PACKETS, measure=_measure_memory),
)
