"""`make demo`: a real payment end to end on this machine, with our own node.

Runs in a temporary directory, with free ports, nothing but this package:

1. ``ilp node`` (the embedded defaults: open children, XRP scale 9) with its store there;
2. ``ilp receive`` as a child of the node (BTP), with its ledger there;
3. ``ilp pay`` from a second child to the receiver's SPSP URL;
4. shows the receiver's ledger (``ilp ledger``) and the node's accounts (its HTTP API);
5. stops everything it started, and removes the directory.

Exits 0 only if the payment completed and the ledger holds it. ``python -m ilp_cli.demo``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

AMOUNT = 1000
READY_TIMEOUT = 30.0


class _Process:
    """A child process whose stdout JSON lines are read in a thread; stderr passes through."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "ilp_cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.events: list[dict[str, Any]] = []
        self.stopping = False
        self._ready = threading.Event()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._relay, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            if event.get("event") == "ready":
                self._ready.set()

    def _relay(self, stream: IO[str]) -> None:
        for line in stream:
            if not self.stopping:  # what it says about being stopped is no news here
                sys.stderr.write(f"  [{self.name}] {line}")

    def wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"demo: {self.name} did not start (exit {self.proc.poll()})")
        return next(e for e in self.events if e.get("event") == "ready")

    def stop(self, sig: int) -> None:
        self.stopping = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "ilp_cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ilp-demo-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ILP_", "XDG_DATA"))}
    env["XDG_DATA_HOME"] = str(workdir / "data")
    started: list[tuple[_Process, int]] = []
    try:
        _say(f"ilp node (embedded defaults, store in {workdir / 'node'})")
        node = _Process(
            "node",
            [
                "node",
                "--json",
                "--data-dir",
                str(workdir / "node"),
                "--btp-port",
                "0",
                "--api-port",
                "0",
            ],
            env,
        )
        started.append((node, signal.SIGTERM))
        ready = node.wait_ready()
        print(f"node {ready['address']}: BTP {ready['btp_url']}, API {ready['api_url']}")
        # Ports picked by the system and read back: a port chosen here first could be taken
        # (or chosen twice) before the process that needs it binds it.
        btp_port = urlsplit(ready["btp_url"]).port

        _say("ilp receive, a child of the node")
        ledger = workdir / "ledger.sqlite3"
        receiver = _Process(
            "receive",
            [
                "receive",
                "--json",
                "--port",
                "0",
                "--ledger",
                str(ledger),
                "--uplink",
                f"btp+ws://receiver:{secrets.token_urlsafe(12)}@127.0.0.1:{btp_port}",
            ],
            env,
        )
        started.append((receiver, signal.SIGINT))
        receiving = receiver.wait_ready()
        print(f"receiver {receiving['address']}, SPSP {receiving['spsp_url']}")

        _say(f"ilp pay {receiving['spsp_url']} {AMOUNT}, from another child of the node")
        payer_uplink = f"btp+ws://payer:{secrets.token_urlsafe(12)}@127.0.0.1:{btp_port}"
        paid = _run(["pay", receiving["spsp_url"], str(AMOUNT), "--uplink", payer_uplink], env)
        sys.stdout.write(paid.stdout)
        sys.stderr.write(paid.stderr)
        if paid.returncode != 0:
            print(f"demo: the payment failed (exit {paid.returncode})", file=sys.stderr)
            return 1

        _say("the receiver's ledger (ilp ledger)")
        book = _run(["ledger", "--ledger", str(ledger)], env)
        sys.stdout.write(book.stdout)
        sys.stderr.write(book.stderr)
        listed = _run(["ledger", "--ledger", str(ledger), "--json"], env)
        totals = json.loads(listed.stdout).get("totals", []) if listed.returncode == 0 else []
        received = sum(int(t["total"]) for t in totals)

        _say("the node's accounts (GET /accounts on its API)")
        token = Path(ready["admin_token_file"]).read_text(encoding="utf-8").strip()
        accounts = httpx.get(
            f"{ready['api_url']}/accounts",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        for account in accounts:
            print(
                f"  {account['name']:<10} {account['relation']:<6} balance {account['balance']:>6}"
                f" {account['asset_code']} (scale {account['asset_scale']})"
            )
        if received != AMOUNT:
            print(f"demo: the ledger holds {received}, expected {AMOUNT}", file=sys.stderr)
            return 1
        _say(f"done: {AMOUNT} base units paid through our node and recorded by the receiver")
        return 0
    finally:
        for process, sig in reversed(started):
            process.stop(sig)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
