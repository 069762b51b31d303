"""ILP-over-HTTP round trips per second on loopback: our link and server beside ilp-plugin-http.

Each round trip is one ``POST`` of a Prepare from our :class:`~ilp.http.HttpLink` (its own
HTTP/1.1 client, :mod:`ilp.http._http11`, with pooled keep-alive connections) to our
:class:`~ilp.http.IlpHttpApp` (on our HTTP/1.1 server, :mod:`ilp._http_server`) on 127.0.0.1,
with the Fulfill as the answer's body; the JS side is two ilp-plugin-http instances (node-fetch
with Node's keep-alive agent, Koa). The work per round trip, the in-flight counts
(``http-roundtrip-1`` and ``-50``), the calibration and the fairness rules are those of
``bench/btp.py``: the same loop (:func:`bench.btp.link_rate`) and ``bench/js/roundtrips.js``.
"""

from __future__ import annotations

from typing import Final

import trio

from ilp.http import IlpHttpApp, open_http_link, serve_ilp_http

from .btp import fulfill, link_rate, round_trip_benchmarks
from .runner import Settings

__all__ = ["BENCHMARKS"]

TOKEN: Final = "bench-secret"
JS_SCRIPT: Final = "http.js"


async def _rate(in_flight: int, settings: Settings) -> float:
    app = IlpHttpApp(fulfill, token=TOKEN)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_ilp_http, app, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/"
        async with open_http_link(url, token=TOKEN, peer_name="bench") as link:
            rate = await link_rate(link, in_flight, settings)
        nursery.cancel_scope.cancel()
    return rate


BENCHMARKS = round_trip_benchmarks("http", JS_SCRIPT, _rate)
