"""Codecs and protocol cores do no I/O: importing them must not pull in trio or httpx."""

from __future__ import annotations

import subprocess
import sys

import pytest

SANS_IO_MODULES = [
    "ilp.oer",
    "ilp.address",
    "ilp.packet",
    "ilp.errors",
    "ilp.amount",
    "ilp.crypto",
    "ilp.ildcp",
    "ilp.ccp.packet",
    "ilp.ccp.routing",
    "ilp.btp.packet",
    "ilp.btp.session",
    "ilp.btp.url",
    "ilp.btp",
    "ilp.stream.packet",
    "ilp.stream.pay_core",
    "ilp.stream.core",
    "ilp.stream.crypto",
    "ilp.stream.receipt",
    "ilp.spsp.pointer",
]


@pytest.mark.parametrize("module", SANS_IO_MODULES)
def test_codec_imports_no_io_library(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in ('trio', 'httpx', 'trio_websocket') if m in sys.modules); "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"
