"""`make demo` (``python -m ilp_cli.demo``) pays through our own node and finds it in the ledger."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_pays_through_our_node() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_")}
    result = subprocess.run(
        [sys.executable, "-m", "ilp_cli.demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "payment complete" in out
    assert "total 1000 (0.000001 XRP) in 1 credits" in out  # the receiver's ledger
    # The node's own books: the payer owes what the receiver was credited.
    assert "payer      child  balance  -1000" in out
    assert "receiver   child  balance   1000" in out
    assert "done: 1000 base units" in out
