"""The benchmark runner behind ``make bench``: our codecs and the JavaScript reference, side by side.

A benchmark is one declarative :class:`Benchmark` entry in a suite module's ``BENCHMARKS``
(suites are listed in :data:`SUITES`)::

    Benchmark("ilp-prepare-encode", OPS, python=make_prepare_encode, js="ilp-prepare-encode")
    Benchmark("btp-round-trip", OPS, measure=measure_btp_round_trips)

``python`` makes the operation to time (setup happens in the maker, outside the timed loop);
``js`` is a benchmark id of ``bench/js/<js_script>``, which times the JS side the same way.
``measure`` replaces both for benchmarks that need their own processes and returns a
:class:`Measurement`. Units are rates ("ops/s"), so ``ratio = python / js`` and higher is better.

Timing (both sides): grow the loop count until one run takes at least ``time`` seconds (aiming
at 1.5 times that), then report the best of ``repeat`` runs. The garbage collector stays on,
as it must in node. All JS benchmarks of one script run in one node process, after the Python
side, so the two never compete for cores.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

__all__ = [
    "OPS",
    "SUITES",
    "Benchmark",
    "Measurement",
    "Row",
    "Settings",
    "grow",
    "load_benchmarks",
    "main",
    "render_table",
    "run",
    "select",
    "time_op",
]

OPS: Final = "ops/s"
ROOT: Final = Path(__file__).resolve().parent.parent
JS_DIR: Final = Path(__file__).resolve().parent / "js"
#: Suite modules, each with a ``BENCHMARKS`` sequence; later suites are added here.
SUITES: Final[tuple[str, ...]] = (
    "bench.codecs",
    "bench.btp",
    "bench.http",
    "bench.stream",
    "bench.node",
)

Op = Callable[[], object]
OpMaker = Callable[[], Op]


def default_interop_dir() -> Path:
    """``$ILP_INTEROP_DIR``, else ``../shared/interop`` beside the repository."""
    return Path(os.environ.get("ILP_INTEROP_DIR") or ROOT.parent / "shared" / "interop").resolve()


@dataclass(frozen=True, slots=True)
class Settings:
    """How long to measure, and where the JS side lives."""

    time: float = 0.5
    """Minimum seconds per measurement (calibration aims at 1.5 times this)."""
    repeat: int = 5
    """Measurements per benchmark; the best one counts."""
    number: int = 0
    """Fixed loop count per measurement; 0 calibrates."""
    interop: Path = field(default_factory=default_interop_dir)
    """The JS interop harness, whose ``node_modules`` provide the reference packages."""
    node: str | None = field(default_factory=lambda: shutil.which("node"))
    """The node executable, or None when it is not installed."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """Both numbers of one benchmark (None for a side that did not run) and why not."""

    python: float | None
    js: float | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Benchmark:
    """One row of the table: either ``python`` (+ optional ``js`` id) or ``measure``."""

    name: str
    unit: str
    python: OpMaker | None = None
    js: str | None = None
    js_script: str = "codecs.js"
    measure: Callable[[Settings], Measurement] | None = None

    def __post_init__(self) -> None:
        if (self.python is None) == (self.measure is None):
            raise ValueError(f"benchmark {self.name!r}: give exactly one of python= and measure=")
        if self.measure is not None and self.js is not None:
            raise ValueError(f"benchmark {self.name!r}: measure= produces the JS number itself")


@dataclass(frozen=True, slots=True)
class Row:
    """A result: ops/s on each side (None if that side did not run) and notes on why."""

    name: str
    unit: str
    python: float | None
    js: float | None
    notes: tuple[str, ...] = ()
    failed: bool = False
    """True when the Python side raised (a JS side that is missing is not a failure)."""

    @property
    def ratio(self) -> float | None:
        """``python / js``: above 1 means we are faster."""
        if self.python is None or not self.js:
            return None
        return self.python / self.js

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form of this row."""
        ratio = self.ratio
        return {
            "name": self.name,
            "unit": self.unit,
            "python": None if self.python is None else round(self.python, 1),
            "js": None if self.js is None else round(self.js, 1),
            "ratio": None if ratio is None else round(ratio, 3),
            "note": "; ".join(self.notes) or None,
        }


def load_benchmarks(suites: Iterable[str] = SUITES) -> list[Benchmark]:
    """Every benchmark of the suite modules, in order; names must be unique."""
    benchmarks: list[Benchmark] = []
    for suite in suites:
        benchmarks.extend(importlib.import_module(suite).BENCHMARKS)
    names = [b.name for b in benchmarks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate benchmark names: {', '.join(duplicates)}")
    return benchmarks


def select(benchmarks: Sequence[Benchmark], patterns: Sequence[str]) -> list[Benchmark]:
    """The benchmarks whose name contains any of ``patterns`` (all of them if none given)."""
    if not patterns:
        return list(benchmarks)
    return [b for b in benchmarks if any(p in b.name for p in patterns)]


def _loop(op: Op, number: int) -> float:
    repeat = itertools.repeat(None, number)
    start = time.perf_counter_ns()
    for _ in repeat:
        op()
    return (time.perf_counter_ns() - start) / 1e9


def grow(number: int, elapsed: float, settings: Settings) -> int:
    """The calibration's next loop count after ``number`` took ``elapsed`` seconds, less than
    ``settings.time``: aim at 1.5 times that (a run still too short rescales), or ten times
    more while a run is too short to scale from."""
    if elapsed >= settings.time / 100:
        return math.ceil(number * 1.5 * settings.time / elapsed)
    return number * 10


def time_op(op: Op, settings: Settings) -> float:
    """Operations per second of ``op()``: calibrated loop count, best of ``settings.repeat``."""
    number = settings.number
    if number <= 0:
        number = 1
        while (elapsed := _loop(op, number)) < settings.time:
            number = grow(number, elapsed, settings)
    best = min(_loop(op, number) for _ in range(settings.repeat))
    return number / max(best, 1e-9)


def _js_problem(settings: Settings) -> str | None:
    if settings.node is None:
        return "node is not installed"
    if not (settings.interop / "node_modules").is_dir():
        return f"no JS harness at {settings.interop} (set ILP_INTEROP_DIR; `make install`)"
    return None


def run_js(
    script: str, ids: Sequence[str], settings: Settings
) -> tuple[dict[str, float], dict[str, str], str | None]:
    """Run ``bench/js/<script>`` for ``ids``: (ops/s by id, error by id, node version)."""
    problem = _js_problem(settings)
    if problem is not None:
        return {}, dict.fromkeys(ids, f"js n/a: {problem}"), None
    assert settings.node is not None
    args = [settings.node, str(JS_DIR / script), "--interop", str(settings.interop)]
    args += ["--time", str(settings.time), "--repeat", str(settings.repeat)]
    args += ["--number", str(max(settings.number, 0)), *ids]
    # Generous bound: calibration plus the repeats, several times over, per benchmark.
    timeout = 60 + len(ids) * (settings.repeat + 10) * settings.time * 4
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {}, dict.fromkeys(ids, f"js n/a: {script} did not run ({exc})"), None
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {}, dict.fromkeys(ids, f"js n/a: {script} exited {proc.returncode}: {tail}"), None
    version = out.get("node")
    if out.get("error"):
        first = str(out["error"]).splitlines()[0]
        return {}, dict.fromkeys(ids, f"js n/a: {first}"), version
    rates: dict[str, float] = {}
    errors: dict[str, str] = {}
    for result in out.get("results", []):
        if result.get("error") or result.get("ops_per_s") is None:
            errors[result["id"]] = f"js error: {result.get('error')}"
        else:
            rates[result["id"]] = float(result["ops_per_s"])
    for missing in set(ids) - rates.keys() - errors.keys():
        errors[missing] = "js error: no result"
    return rates, errors, version


def _node_version(node: str) -> str | None:
    try:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def run(
    benchmarks: Sequence[Benchmark],
    settings: Settings,
    log: TextIO = sys.stderr,
    *,
    debug: bool = False,
) -> tuple[list[Row], str | None]:
    """Run the benchmarks (Python side first, then JS); the rows and the node version.

    Progress and errors go to ``log`` (with tracebacks if ``debug``).
    """
    python: dict[str, float] = {}
    notes: dict[str, list[str]] = {b.name: [] for b in benchmarks}
    failed: set[str] = set()
    measured: dict[str, Measurement] = {}
    for b in benchmarks:
        print(f"python  {b.name} ...", file=log, flush=True)
        try:
            if b.measure is not None:
                measured[b.name] = b.measure(settings)
            else:
                assert b.python is not None
                python[b.name] = time_op(b.python(), settings)
        except Exception as exc:
            failed.add(b.name)
            notes[b.name].append(f"python error: {_describe(exc)}")
            if debug:
                traceback.print_exc(file=log)
            else:
                print(
                    f"{b.name}: python error: {_describe(exc)} (--debug for the traceback)",
                    file=log,
                )
    node_version = None
    js: dict[str, float] = {}
    scripts: dict[str, list[Benchmark]] = {}
    for b in benchmarks:
        if b.js is not None:
            scripts.setdefault(b.js_script, []).append(b)
    for script, group in scripts.items():
        ids = [b.js for b in group if b.js is not None]
        print(f"node    {script} {' '.join(ids)} ...", file=log, flush=True)
        rates, errors, version = run_js(script, ids, settings)
        node_version = node_version or version
        for b in group:
            assert b.js is not None
            if b.js in rates:
                js[b.name] = rates[b.js]
            else:
                notes[b.name].append(errors[b.js])
                print(f"{b.name}: {errors[b.js]}", file=log)
    if node_version is None and settings.node is not None and measured:
        # Measured rows (the node benchmarks) start connector.js themselves, not a bench script.
        node_version = _node_version(settings.node)
    rows = []
    for b in benchmarks:
        row_notes = notes[b.name]
        m = measured.get(b.name)
        if m is not None:
            rows.append(Row(b.name, b.unit, m.python, m.js, (*row_notes, *m.notes)))
            continue
        if b.python is not None and b.js is None:
            row_notes.append("no JS counterpart")
        rows.append(
            Row(
                b.name,
                b.unit,
                python.get(b.name),
                js.get(b.name),
                tuple(row_notes),
                b.name in failed,
            )
        )
    return rows, node_version


def machine_line(node_version: str | None) -> str:
    """One line about the machine: OS, CPU, cores, Python and node versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; node {node_version or 'n/a'}"
    )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def render_table(rows: Sequence[Row], node_version: str | None) -> str:
    """The human table: a header line, the rows, then numbered notes."""
    header = ("name", "unit", "python", "js", "ratio")
    cells: list[tuple[str, ...]] = []
    footnotes: list[str] = []
    for row in rows:
        mark = ""
        if row.notes:
            footnotes.append("; ".join(row.notes))
            mark = f" [{len(footnotes)}]"
        ratio = row.ratio
        cells.append(
            (
                row.name + mark,
                row.unit,
                "error" if row.failed else _number(row.python),
                _number(row.js),
                "n/a" if ratio is None else f"{ratio:.2f}",
            )
        )
    widths = [max(len(r[i]) for r in (header, *cells)) for i in range(len(header))]

    def line(r: tuple[str, ...]) -> str:
        left = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        return "  ".join(left + [c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True)])

    out = [
        f"# {machine_line(node_version)}",
        "# ratio = python / js: above 1 means Python is faster (higher is better)",
        "",
        line(header),
        line(tuple("-" * w for w in widths)),
        *(line(c) for c in cells),
    ]
    if footnotes:
        out.append("")
        out.extend(f"[{i}] {text}" for i, text in enumerate(footnotes, 1))
    return "\n".join(out)


def _positive(kind: type[float] | type[int]) -> Callable[[str], Any]:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def main(argv: Sequence[str] | None = None, suites: Iterable[str] = SUITES) -> int:
    """``python -m bench``: exit 0, 1 if a Python benchmark failed, 2 on bad usage."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time our codecs against the JavaScript reference (ILP_INTEROP_DIR).",
    )
    parser.add_argument("names", nargs="*", help="run only benchmarks whose name contains one")
    parser.add_argument("--json", action="store_true", help="print JSON results on stdout")
    parser.add_argument(
        "--time", type=_positive(float), default=0.5, help="min seconds per run (0.5)"
    )
    parser.add_argument("--repeat", type=_positive(int), default=5, help="runs, best counts (5)")
    parser.add_argument(
        "--number", type=_positive(int), default=0, help="fixed loop count (no calibration)"
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks of failed benchmarks")
    args = parser.parse_args(argv)
    benchmarks = select(load_benchmarks(suites), args.names)
    if not benchmarks:
        print(f"Error: no benchmark name contains {' or '.join(args.names)}.", file=sys.stderr)
        return 2
    settings = Settings(time=args.time, repeat=args.repeat, number=args.number)
    rows, node_version = run(benchmarks, settings, debug=args.debug)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        print(render_table(rows, node_version))
    return 1 if any(r.failed for r in rows) else 0
