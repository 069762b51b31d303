"""Forwarding by ``ilp node``: one STREAM payment through our node beside connector.js.

``node-forward`` keeps the endpoints fixed and swaps the connector between them. The endpoints
are those of ``stream-pay-connector``'s Python side: our :func:`~ilp.stream.pay.pay` to our
:class:`~ilp.stream.server.StreamServer`, both in this process, in one ``trio.run``, each on its
own BTP link to the connector. The payment is the same too: 1,000,000 units, at most 1000 per
Prepare (about 1000 money packets).

The two connectors, each a separate process, running side by side for the whole benchmark:

* ours (the ``python`` column): ``python -m ilp_cli node --memory --no-api --json``, with a
  configuration file of its own that gives every child ``child_max_packet_amount = 1000``. The
  sender and the receiver become child accounts when they first connect (``open_children``).
  The node commits the balances of every fulfilled packet to its (in-memory) SQLite store
  before the Fulfill goes back.
* ``connector.js`` (the ``js`` column): ilp-connector with ``--max-packet-amount 1000`` on its
  mini-accounts children, exactly as in ``stream-pay-connector``.

Two rows come from the same payments:

* ``node-forward``: **forwarding throughput, in fulfilled money packets per CPU-second of the
  connector process** (all its threads, from ``/proc/<pid>/task/*/schedstat`` in nanoseconds;
  Linux only). Both connectors forward on one thread, so this is the rate each would sustain
  with a core of its own and endpoints fast enough to keep it busy.
* ``node-forward-wall``: fulfilled money packets per second of the money phase, end to end, as
  in :mod:`bench.stream`. On a two-core machine the endpoints limit it, not the connector: they
  need more CPU per packet (about 125 µs, in one process; the notes give the figure of the run)
  than either connector, so this figure says how much a connector slows a payment down, not how
  fast it forwards.

First :data:`WARM_UP_PAYMENTS` full payments through each, taking turns, warm both up:
connector.js needs them (its JIT took 3 to 4 payments to reach a steady rate in our runs: about
2.5k packets/s on the first, 5k+ from the fourth), our node hardly does. Then the two take turns,
one payment each per round (ours first), for ``min(Settings.repeat, 3)`` rounds; the best round
of each side counts (the least CPU per packet for ``node-forward``, the highest rate for
``node-forward-wall``). ``ratio = ours / connector.js``. connector.js runs its default
middleware, whose rate limit allows its mini-accounts children (all one account) 10,000 packets
a minute; warm-up and rounds stay under that (:data:`CONNECTOR_JS_RATE_LIMIT`), else its
packets would be rejected with T05 and its figure collapse.

The notes give, for each side's best round, the CPU share of the endpoint process
(``time.process_time``) and of the connector process, both over the wall time of the whole
``pay()`` call (100% is one core), and the connector's CPU per fulfilled money packet (over
the whole call, so the few probes and the close are in it).

Without the JS harness the rows still show our node, with the JS column ``n/a``.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from ilp.link import IlpLink
from ilp.stream.server import StreamServer

from .runner import ROOT, Benchmark, Measurement, Settings
from .stream import (
    AMOUNT,
    MAX_PACKET_AMOUNT,
    MAX_ROUNDS,
    PACKETS,
    MoneyPhase,
    describe,
    free_port,
    harness_problem,
    pay_once,
    python_endpoints,
    run_json_process,
    run_trio,
)

__all__ = [
    "BENCHMARKS",
    "CAPACITY",
    "NODE_CONFIG",
    "Round",
    "Rounds",
    "forward_rounds",
    "process_cpu_seconds",
]

NODE_CONFIG: Final = f"child_max_packet_amount = {MAX_PACKET_AMOUNT}\n"
"""The node's configuration file: the same per-packet limit on children as connector.js gets."""
NODE_ADDRESS: Final = "test.node"
WARM_UP_PAYMENTS: Final = 4
"""Full payments through each connector before the measured rounds."""
CONNECTOR_JS_RATE_LIMIT: Final = 10_000
"""Packets a minute ilp-connector's default rate limit allows one account."""

_JS_PACKETS: Final = (WARM_UP_PAYMENTS + MAX_ROUNDS) * (AMOUNT // MAX_PACKET_AMOUNT + 20)
"""The most packets one run sends through connector.js (with a few probes per payment)."""
assert _JS_PACKETS < CONNECTOR_JS_RATE_LIMIT, "the warm-up and rounds exceed the rate limit"

CAPACITY: Final = "packets/CPU-s"
"""The unit of ``node-forward``: fulfilled money packets per CPU-second of the connector."""

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds process ``pid`` has used so far, all its threads (None where /proc cannot
    tell): from each thread's ``schedstat`` (nanoseconds), else from ``stat`` (clock ticks,
    10 ms: too coarse for one payment, hence the first)."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
        # Fields after "pid (comm)": state is the first, utime the 12th, stime the 13th.
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


def _node_env() -> dict[str, str]:
    """This environment without ``ILP_NODE_*``: the node gets its settings from the bench only."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ILP_NODE_")}


@asynccontextmanager
async def _our_node(config_file: Path) -> AsyncIterator[tuple[str, int]]:
    """Our node as a separate process: (``host:port`` of its BTP server, pid)."""
    args = [sys.executable, "-m", "ilp_cli", "node", "--config", str(config_file), "--memory"]
    args += ["--address", NODE_ADDRESS, "--btp-port", "0", "--no-api", "--json"]
    async with run_json_process("ilp node", args, ROOT, _node_env()) as (ready, pid):
        yield str(ready["btp_url"]).removeprefix("btp+ws://"), pid


@asynccontextmanager
async def _connector_js(settings: Settings) -> AsyncIterator[tuple[str, int]]:
    """connector.js, as ``stream-pay-connector`` runs it: (``host:port``, pid)."""
    assert settings.node is not None
    port = free_port()
    args = [settings.node, str(settings.interop / "connector.js"), "--btp-port", str(port)]
    args += ["--max-packet-amount", str(MAX_PACKET_AMOUNT), "--log-level", "warn"]
    async with run_json_process("connector.js", args, settings.interop) as (_, pid):
        yield f"127.0.0.1:{port}", pid


@dataclass(frozen=True, slots=True)
class _Hop:
    """One connector under test and the endpoints' links through it."""

    pid: int
    sender: IlpLink
    server: StreamServer


@dataclass(frozen=True, slots=True)
class Round:
    """One payment through one connector: its money phase and the connector's CPU time."""

    phase: MoneyPhase
    wall: float
    """Wall seconds of the whole pay() call."""
    connector_cpu: float | None
    """CPU seconds the connector process used during the pay() call (None: unknown)."""

    @property
    def connector_share(self) -> float | None:
        """The connector's CPU seconds over the pay() call's wall seconds (1.0 = one core)."""
        return None if self.connector_cpu is None else self.connector_cpu / max(self.wall, 1e-9)

    @property
    def connector_us_per_packet(self) -> float | None:
        """The connector's CPU microseconds per fulfilled money packet (over the whole call)."""
        if self.connector_cpu is None:
            return None
        return self.connector_cpu / max(self.phase.packets, 1) * 1e6

    @property
    def capacity(self) -> float | None:
        """Fulfilled money packets per CPU-second of the connector (None: CPU unknown)."""
        if not self.connector_cpu:
            return None
        return self.phase.packets / self.connector_cpu


@asynccontextmanager
async def _endpoints(base: str, pid: int) -> AsyncIterator[_Hop]:
    """The shared Python endpoints (see :func:`bench.stream.python_endpoints`) through the
    connector at ``base``, whose process is ``pid``."""
    async with python_endpoints(base) as (sender, server):
        yield _Hop(pid, sender, server)


async def _pay_through(hop: _Hop) -> Round:
    before = process_cpu_seconds(hop.pid)
    wall = time.perf_counter()
    phase = await pay_once(hop.sender, hop.server)
    wall = time.perf_counter() - wall
    after = process_cpu_seconds(hop.pid)
    return Round(phase, wall, None if before is None or after is None else after - before)


@dataclass(frozen=True, slots=True)
class Rounds:
    """Every measured round of each side, and why the JS side stopped or never ran."""

    ours: list[Round]
    js: list[Round]
    js_error: str | None


async def forward_rounds(settings: Settings, rounds: int, config_file: Path) -> Rounds:
    """Start our node (with ``config_file``) and connector.js (if the harness can run), warm
    both up, then pay ``rounds`` times through each, taking turns."""
    ours: list[Round] = []
    js: list[Round] = []
    js_error = harness_problem(settings)
    if js_error is not None:
        js_error = f"js n/a: needs connector.js: {js_error}"
    async with AsyncExitStack() as stack:
        base, pid = await stack.enter_async_context(_our_node(config_file))
        our_hop = await stack.enter_async_context(_endpoints(base, pid))
        js_hop = None
        if js_error is None:
            base, pid = await stack.enter_async_context(_connector_js(settings))
            js_hop = await stack.enter_async_context(_endpoints(base, pid))
        for warm_up in (True,) * WARM_UP_PAYMENTS + (False,) * rounds:
            round_ = await _pay_through(our_hop)
            if not warm_up:
                ours.append(round_)
            if js_hop is not None and js_error is None:
                try:
                    round_ = await _pay_through(js_hop)
                except (RuntimeError, trio.TooSlowError) as exc:
                    js_error = f"js error: {describe(exc)}"
                else:
                    if not warm_up:
                        js.append(round_)
    return Rounds(ours, js, js_error)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _cpu_note(side: str, best: Round) -> str:
    per_packet = best.connector_us_per_packet
    cost = "" if per_packet is None else f" ({per_packet:.0f} µs per packet)"
    return (
        f"{side}: CPU over the payment's wall time: endpoints {_share(best.phase.cpu_share)} "
        f"({best.phase.cpu_us_per_packet:.0f} µs per packet), "
        f"connector {_share(best.connector_share)}{cost}"
    )


@functools.cache
def _forward(settings: Settings) -> Rounds:
    """The rounds of both rows: measured once per run, whichever of the two rows asks first."""
    rounds = min(settings.repeat, MAX_ROUNDS)
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        config_file = Path(tmp) / "node.toml"
        config_file.write_text(NODE_CONFIG, encoding="utf-8")
        return run_trio(forward_rounds, settings, rounds, config_file)


def _measurement(
    result: Rounds, figure: Callable[[Round], float | None], notes: Sequence[str]
) -> Measurement:
    best_ours = max(result.ours, key=lambda r: figure(r) or 0.0)
    best_js = max(result.js, key=lambda r: figure(r) or 0.0, default=None)
    all_notes = [*notes, _cpu_note("ilp node", best_ours)]
    if best_js is not None:
        all_notes.append(_cpu_note("connector.js", best_js))
    if result.js_error is not None:
        all_notes.append(result.js_error)
    ours = figure(best_ours)
    if ours is None:
        raise RuntimeError("the connector's CPU time is unknown here (needs Linux /proc)")
    return Measurement(ours, None if best_js is None else figure(best_js), tuple(all_notes))


def _measure_forward(settings: Settings) -> Measurement:
    result = _forward(settings)
    best_ours = max(result.ours, key=lambda r: r.phase.rate)
    best_js = max(result.js, key=lambda r: r.phase.rate, default=None)
    wall = f"end to end {best_ours.phase.rate:,.0f}"
    if best_js is not None:
        wall += f" vs {best_js.phase.rate:,.0f} packets/s (node-forward-wall)"
    return _measurement(result, lambda r: r.capacity, [wall])


def _measure_wall(settings: Settings) -> Measurement:
    return _measurement(
        _forward(settings),
        lambda r: r.phase.rate,
        [
            "bounded by the endpoints: one process needing more CPU per packet than either "
            "connector (see docs/benchmarks.md)"
        ],
    )


BENCHMARKS: Final[Sequence[Benchmark]] = (
    Benchmark("node-forward", CAPACITY, measure=_measure_forward),
    Benchmark("node-forward-wall", PACKETS, measure=_measure_wall),
)
