"""BTP round trips per second on loopback: our client and server beside ilp-plugin-btp's.

Each round trip is one Prepare from the client to the server over a real WebSocket on
127.0.0.1 and the server's Fulfill back. Both sides do the same work per round trip, the same
as in ``bench/js/roundtrips.js``: the client builds a Prepare (amount 100, 32 bytes of data,
expiry now + 30 s, computed per packet) and encodes it; the server decodes it and answers with the
fulfillment of its condition, encoded; the client decodes the reply and checks the fulfillment
against the condition (our client does that itself; the JS side does it after ``sendData``,
as ilp-plugin-btp leaves it to its caller).

``btp-roundtrip-K`` keeps K Prepares in flight: K tasks (JS: K async loops) each send one
after the other until N round trips are done. N is calibrated as the runner does for ops
(until one run lasts ``Settings.time``, aiming at 1.5 times that), then the best of
``Settings.repeat`` runs counts. The loop is shared with ``bench/http.py``
(:func:`link_rate`, :func:`round_trip_benchmarks`).

Fairness: client and server run in one process on each side (here in one ``trio.run``, there
in one node process), so each side's single thread carries both ends. The Python side runs
first, then node, so they never compete for cores. Node may still use more than one thread:
ilp-plugin-btp draws each request id with the asynchronous ``crypto.randomBytes`` (libuv's
thread pool), and V8 collects garbage on helper threads.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Final

import trio

from ilp.btp import BtpRequest, open_btp_client, serve_btp
from ilp.link import IlpLink, Reply
from ilp.packet import Fulfill, Prepare

from .runner import Benchmark, Measurement, Settings, grow, run_js

__all__ = [
    "BENCHMARKS",
    "CONDITION",
    "FULFILLMENT",
    "ROUND_TRIPS",
    "fulfill",
    "link_rate",
    "prepare",
    "round_trip_benchmarks",
]

ROUND_TRIPS: Final = "round trips/s"
FULFILLMENT: Final = bytes(range(200, 232))
CONDITION: Final = hashlib.sha256(FULFILLMENT).digest()
DATA: Final = bytes(range(32))
DESTINATION: Final = "example.server"
AMOUNT: Final = 100
EXPIRY: Final = timedelta(seconds=30)
TOKEN: Final = "bench-secret"
JS_SCRIPT: Final = "btp.js"

_FULFILL: Final = Fulfill(FULFILLMENT)


def prepare() -> Prepare:
    """The Prepare of one round trip (the same on the JS side), expiring 30 s from now."""
    return Prepare(AMOUNT, datetime.now(UTC) + EXPIRY, CONDITION, DESTINATION, DATA)


async def fulfill(packet: Prepare) -> Reply:
    """The server's handler: the Fulfill of the condition, whatever the Prepare."""
    return _FULFILL


async def _on_client(request: BtpRequest) -> None:
    if request.token != TOKEN:
        await request.refuse()
        return
    link = await request.accept(fulfill)
    await link.wait_closed()


async def _round_trips(link: IlpLink, count: int, in_flight: int) -> float:
    """Seconds for ``count`` round trips with ``in_flight`` senders."""
    remaining = count
    wrong: list[Reply] = []

    async def sender() -> None:
        nonlocal remaining
        while remaining > 0 and not wrong:
            remaining -= 1
            reply = await link.send(prepare())
            if not isinstance(reply, Fulfill):
                wrong.append(reply)

    start = time.perf_counter_ns()
    async with trio.open_nursery() as nursery:
        for _ in range(min(in_flight, count)):
            nursery.start_soon(sender)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    if wrong:
        raise RuntimeError(f"the server answered {wrong[0]!r} instead of a Fulfill")
    return elapsed


async def link_rate(link: IlpLink, in_flight: int, settings: Settings) -> float:
    """Round trips per second over ``link`` with ``in_flight`` senders: one checked round trip,
    the calibration, then the best of ``settings.repeat`` runs."""
    reply = await link.send(prepare())
    if reply != _FULFILL:
        raise RuntimeError(f"the server answered {reply!r} instead of the Fulfill")
    number = settings.number
    if number <= 0:
        number = in_flight
        while (elapsed := await _round_trips(link, number, in_flight)) < settings.time:
            number = grow(number, elapsed, settings)
    best = math.inf
    for _ in range(settings.repeat):
        best = min(best, await _round_trips(link, number, in_flight))
    return number / max(best, 1e-9)


async def _rate(in_flight: int, settings: Settings) -> float:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_btp, _on_client))
        async with open_btp_client(f"btp+ws://bench:{TOKEN}@127.0.0.1:{port}") as link:
            rate = await link_rate(link, in_flight, settings)
        nursery.cancel_scope.cancel()
    return rate


def round_trip_benchmarks(
    kind: str, js_script: str, rate: Callable[[int, Settings], Awaitable[float]]
) -> tuple[Benchmark, ...]:
    """``<kind>-roundtrip-1`` and ``-50``: ``rate(in_flight, settings)`` in a ``trio.run``
    beside ``bench/js/<js_script>`` for the same ids."""

    def measure_for(name: str, in_flight: int) -> Callable[[Settings], Measurement]:
        def measure(settings: Settings) -> Measurement:
            python = trio.run(rate, in_flight, settings)
            rates, errors, _ = run_js(js_script, [name], settings)
            note = errors.get(name)
            return Measurement(python, rates.get(name), () if note is None else (note,))

        return measure

    return tuple(
        Benchmark(name, ROUND_TRIPS, measure=measure_for(name, k))
        for name, k in ((f"{kind}-roundtrip-1", 1), (f"{kind}-roundtrip-50", 50))
    )


BENCHMARKS = round_trip_benchmarks("btp", JS_SCRIPT, _rate)
