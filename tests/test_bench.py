"""The benchmark runner (``python -m bench``): JSON mode, selection, error rows, the JS side.

Smoke tests on tiny loop counts; no assertion here depends on how fast anything is.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest

from bench import btp, codecs, http, node, stream
from bench.runner import (
    OPS,
    Benchmark,
    Measurement,
    Row,
    Settings,
    main,
    render_table,
    run,
    time_op,
)
from bench.runner import select as select_benchmarks
from ilp.node.config import parse_config
from ilp.packet import is_fulfillment_valid
from ilp.stream.server import StreamServer
from ilp.testing import FakeConnector

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"name", "unit", "python", "js", "ratio"}
TINY = ["--number", "20", "--repeat", "1"]


def run_bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_row(row: dict[str, Any]) -> None:
    assert row.keys() >= KEYS
    assert row["unit"] == OPS
    assert isinstance(row["python"], float) and row["python"] > 0
    if row["js"] is None:
        assert row["ratio"] is None
        assert row["note"]
    else:
        assert row["js"] > 0
        assert row["ratio"] == pytest.approx(row["python"] / row["js"], rel=1e-2)


def test_json_mode_on_prepare_benchmarks() -> None:
    proc = run_bench("--json", *TINY, "ilp-prepare")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == ["ilp-prepare-encode", "ilp-prepare-decode"]
    for row in rows:
        check_row(row)


def test_json_mode_with_js_side(interop: Path) -> None:
    proc = run_bench("--json", *TINY, "prepare", env={"ILP_INTEROP_DIR": str(interop)})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 2
    for row in rows:
        check_row(row)
        assert row["js"] is not None, row["note"]


def test_missing_harness_gives_na_js_column(tmp_path: Path) -> None:
    settings = Settings(number=5, repeat=1, interop=tmp_path)
    benchmarks = select_benchmarks(codecs.BENCHMARKS, ["prepare-encode"])
    rows, node_version = run(benchmarks, settings, io.StringIO())
    (row,) = rows
    assert node_version is None
    assert row.python is not None and row.python > 0
    assert row.js is None and row.ratio is None
    assert not row.failed
    assert "js n/a" in row.notes[0] and str(tmp_path) in row.notes[0]
    assert row.to_json()["ratio"] is None
    table = render_table(rows, node_version)
    assert "n/a" in table and "higher is better" in table and "[1] js n/a" in table


def test_missing_node_gives_na_js_column() -> None:
    settings = Settings(number=5, repeat=1, node=None)
    rows, _ = run(select_benchmarks(codecs.BENCHMARKS, ["prepare-decode"]), settings, io.StringIO())
    assert rows[0].js is None
    assert rows[0].notes == ("js n/a: node is not installed",)


def test_failing_benchmark_is_an_error_row() -> None:
    def broken() -> Any:
        raise ImportError("no module named ilp.nothing")

    log = io.StringIO()
    benchmarks = [
        Benchmark("broken", OPS, python=broken),
        Benchmark("fine", OPS, python=lambda: lambda: None),
        Benchmark("custom", OPS, measure=lambda s: Measurement(30.0, 10.0, ("by hand",))),
    ]
    rows, _ = run(benchmarks, Settings(number=3, repeat=1, node=None), log)
    broken_row, fine_row, custom_row = rows
    assert broken_row.failed and broken_row.python is None
    assert "python error: ImportError: no module named ilp.nothing" in broken_row.notes
    assert "broken: python error: ImportError" in log.getvalue()
    assert not fine_row.failed and fine_row.python is not None
    assert fine_row.notes == ("no JS counterpart",)
    assert custom_row.ratio == 3.0 and custom_row.notes == ("by hand",)
    assert "error" in render_table(rows, None)


def test_failed_measure_is_an_error_row() -> None:
    def measure(settings: Settings) -> Measurement:
        raise RuntimeError("connector did not start")

    rows, _ = run([Benchmark("proc", OPS, measure=measure)], Settings(), io.StringIO())
    assert rows[0].failed and rows[0].notes == (
        "python error: RuntimeError: connector did not start",
    )


def test_main_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "no-such-benchmark"]) == 2
    assert "no benchmark name contains no-such-benchmark" in capsys.readouterr().err


def test_main_exit_code_1_when_python_side_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> Any:
        raise ValueError("boom")

    module = types.ModuleType("bench_fake_suite")
    module.BENCHMARKS = [Benchmark("boom", OPS, python=broken)]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench_fake_suite", module)
    assert main(["--json", "--number", "1", "--repeat", "1"], suites=["bench_fake_suite"]) == 1
    (row,) = json.loads(capsys.readouterr().out)
    assert row["python"] is None and row["ratio"] is None and "boom" in row["note"]


def test_selection_by_substring() -> None:
    names = [b.name for b in select_benchmarks(codecs.BENCHMARKS, ["decode", "decrypt"])]
    assert names == ["ilp-prepare-decode", "stream-packet-decrypt"]
    assert len(select_benchmarks(codecs.BENCHMARKS, [])) == len(codecs.BENCHMARKS)


def test_benchmark_needs_exactly_one_way_to_run() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Benchmark("none", OPS)
    with pytest.raises(ValueError, match="measure="):
        Benchmark("both", OPS, js="x", measure=lambda s: Measurement(None, None))


def test_time_op_runs_the_fixed_count() -> None:
    calls = 0

    def op() -> None:
        nonlocal calls
        calls += 1

    assert time_op(op, Settings(number=7, repeat=3)) > 0
    assert calls == 21
    calls = 0
    assert time_op(op, Settings(time=0.001, repeat=2)) > 0
    assert calls >= 3  # calibration ran, then two measurements


def test_row_ratio() -> None:
    assert Row("x", OPS, 200.0, 100.0).ratio == 2.0
    assert Row("x", OPS, 200.0, None).ratio is None
    assert Row("x", OPS, None, 100.0).ratio is None


def emit(interop: Path, *ids: str) -> dict[str, str]:
    proc = subprocess.run(
        [
            "node",
            str(ROOT / "bench" / "js" / "codecs.js"),
            "--interop",
            str(interop),
            "--emit",
            *ids,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, str] = json.loads(proc.stdout)["emit"]
    return result


def test_js_prepare_input_matches_python(interop: Path) -> None:
    out = emit(interop, "ilp-prepare-encode", "ilp-prepare-decode")
    expected = codecs.prepare().encode().hex()
    assert out == {"ilp-prepare-encode": expected, "ilp-prepare-decode": expected}


def test_js_stream_input_matches_python(interop: Path) -> None:
    crypto_module = pytest.importorskip("ilp.stream.crypto")
    out = emit(interop, "stream-packet-encrypt", "stream-packet-decrypt")
    crypto = crypto_module.StreamCrypto(codecs.SHARED_SECRET)
    for hex_data in out.values():
        assert crypto.decrypt_packet(bytes.fromhex(hex_data)) == codecs.stream_packet()


@pytest.mark.parametrize("kind", ["btp", "http"])
def test_round_trips_both_sides(interop: Path, kind: str) -> None:
    proc = run_bench("--json", *TINY, f"{kind}-roundtrip", env={"ILP_INTEROP_DIR": str(interop)})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == [f"{kind}-roundtrip-1", f"{kind}-roundtrip-50"]
    for row in rows:
        assert row["unit"] == btp.ROUND_TRIPS
        assert row["python"] > 0 and row["js"] > 0, row["note"]
        assert row["ratio"] == pytest.approx(row["python"] / row["js"], rel=1e-2)


@pytest.mark.parametrize("suite", [btp, http], ids=["btp", "http"])
def test_round_trips_without_harness(tmp_path: Path, suite: types.ModuleType) -> None:
    settings = Settings(number=60, repeat=1, interop=tmp_path)
    rows, _ = run(suite.BENCHMARKS, settings, io.StringIO())
    for row in rows:
        assert not row.failed, row.notes
        assert row.python is not None and row.python > 0
        assert row.js is None and row.ratio is None
        assert "js n/a" in row.notes[0] and str(tmp_path) in row.notes[0]


@pytest.mark.parametrize("script", ["btp.js", "http.js"])
def test_js_round_trip_scripts_reject_unknown_ids(interop: Path, script: str) -> None:
    proc = subprocess.run(
        ["node", str(ROOT / "bench" / "js" / script), "--interop", str(interop), "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (result,) = json.loads(proc.stdout)["results"]
    assert result["ops_per_s"] is None and "unknown benchmark id" in result["error"]


def test_btp_prepare_and_fulfillment() -> None:
    packet = btp.prepare()
    assert packet.amount == 100 and len(packet.data) == 32
    assert is_fulfillment_valid(btp.FULFILLMENT, packet.execution_condition)


async def test_stream_money_phase_counts_money_packets_only() -> None:
    connector = FakeConnector("test.bench", max_packet_amount=stream.MAX_PACKET_AMOUNT)
    sender = connector.add_child("sender")
    receiver = connector.add_child("receiver")
    server = StreamServer(bytes(32), connector.child_address("receiver"), "XRP", 9, link=receiver)
    receiver.handler = server
    async with stream.serve_payments(server):
        phase = await stream.pay_once(sender, server, 20_500)
    assert phase.packets == 21  # 20 full packets and one of 500; probes and the close excluded
    assert len(sender.sent) > phase.packets
    assert phase.seconds > 0 and phase.rate == phase.packets / phase.seconds
    assert phase.cpu_share > 0 and phase.cpu_us_per_packet > 0


def test_stream_pay_memory_row() -> None:
    rows, _ = run(
        select_benchmarks(stream.BENCHMARKS, ["memory"]), Settings(repeat=1), io.StringIO()
    )
    (row,) = rows
    assert row.unit == stream.PACKETS and not row.failed, row.notes
    assert row.python is not None and row.python > 0
    assert row.js is None and row.ratio is None
    assert "js n/a" in row.notes[0]


def test_stream_pay_connector_without_harness(tmp_path: Path) -> None:
    settings = Settings(repeat=1, interop=tmp_path)
    rows, _ = run(select_benchmarks(stream.BENCHMARKS, ["connector"]), settings, io.StringIO())
    (row,) = rows
    assert not row.failed and row.python is None and row.js is None
    assert str(tmp_path) in row.notes[0]


def test_stream_pay_connector_both_sides(interop: Path) -> None:
    proc = run_bench(
        "--json", "--repeat", "1", "stream-pay-connector", env={"ILP_INTEROP_DIR": str(interop)}
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["name"] == "stream-pay-connector" and row["unit"] == stream.PACKETS
    assert row["python"] > 0 and row["js"] > 0, row["note"]
    assert row["ratio"] == pytest.approx(row["python"] / row["js"], rel=1e-2)


def test_node_forward_config_limits_children_as_connector_js() -> None:
    config = parse_config(tomllib.loads(node.NODE_CONFIG))
    assert config.child_max_packet_amount == stream.MAX_PACKET_AMOUNT


def test_process_cpu_seconds() -> None:
    if sys.platform.startswith("linux"):
        used = node.process_cpu_seconds(os.getpid())
        assert used is not None and used > 0  # this process has imported pytest, at least
        sum(range(2_000_000))  # some CPU, far less than a clock tick would hide
        more = node.process_cpu_seconds(os.getpid())
        assert more is not None and more > used
    assert node.process_cpu_seconds(-1) is None


async def test_node_forward_rounds_through_our_node(tmp_path: Path) -> None:
    config_file = tmp_path / "node.toml"
    config_file.write_text(node.NODE_CONFIG)
    result = await node.forward_rounds(Settings(repeat=1, interop=tmp_path), 1, config_file)
    (ours,) = result.ours
    # The node applied the per-packet limit: without it pay() would need far fewer packets.
    assert ours.phase.packets >= stream.AMOUNT // stream.MAX_PACKET_AMOUNT
    assert ours.phase.rate > 0 and ours.wall >= ours.phase.seconds
    if sys.platform.startswith("linux"):
        assert ours.connector_cpu is not None and ours.connector_cpu > 0
        assert ours.connector_us_per_packet is not None
        assert ours.capacity == pytest.approx(ours.phase.packets / ours.connector_cpu)
    assert result.js == []
    assert result.js_error is not None and str(tmp_path) in result.js_error


def test_node_forward_rows_without_harness(tmp_path: Path) -> None:
    settings = Settings(repeat=1, interop=tmp_path)
    rows, _ = run(node.BENCHMARKS, settings, io.StringIO())
    assert [(r.name, r.unit) for r in rows] == [
        ("node-forward", node.CAPACITY),
        ("node-forward-wall", stream.PACKETS),
    ]
    capacity, wall = rows
    for row in rows:
        assert not row.failed, row.notes
        assert row.python is not None and row.python > 0
        assert row.js is None and row.ratio is None
        assert any(n.startswith("ilp node: CPU") for n in row.notes)
        assert any("js n/a" in n and str(tmp_path) in n for n in row.notes)
    # Both rows come from the same payments, measured once.
    assert capacity.notes[0] == f"end to end {wall.python:,.0f}"


def test_node_forward_both_sides(interop: Path) -> None:
    proc = run_bench(
        "--json", "--repeat", "1", "node-forward", env={"ILP_INTEROP_DIR": str(interop)}
    )
    assert proc.returncode == 0, proc.stderr
    capacity, wall = json.loads(proc.stdout)
    assert (capacity["name"], capacity["unit"]) == ("node-forward", node.CAPACITY)
    assert (wall["name"], wall["unit"]) == ("node-forward-wall", stream.PACKETS)
    for row in (capacity, wall):
        assert row["python"] > 0 and row["js"] > 0, row["note"]
        assert row["ratio"] == pytest.approx(row["python"] / row["js"], rel=1e-2)
        assert "ilp node: CPU" in row["note"] and "connector.js: CPU" in row["note"]
    assert "node-forward-wall" in capacity["note"]
