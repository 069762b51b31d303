"""Run the JavaScript reference peers of ``../shared/interop`` as subprocesses under trio.

Each script prints one JSON object per line on stdout; the first significant one is
``{"event": "ready", ...}``. :func:`run_js` starts a script, waits for ``ready`` and yields a
:class:`JsProcess` that collects every line and lets a test wait for the next event it expects
(never by sleeping). Leaving the block stops the process (SIGTERM, then SIGKILL)::

    async with run_js(interop, "connector.js", "--btp-port", str(port)) as connector:
        assert connector.ready["address"] == "test.harness"
        line = await connector.wait_for("child_connected", where=lambda e: e["account"] == "local")

Use it with the ``interop`` fixture of ``tests/conftest.py`` (it skips, or fails under CI, when
node or the harness is missing) and bound every wait with ``trio.fail_after``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

__all__ = ["HarnessError", "JsProcess", "free_port", "run_js", "run_program"]

Line = dict[str, Any]


class HarnessError(Exception):
    """A harness script failed: it exited early or printed ``fatal``."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class JsProcess:
    """A running harness script and the JSON lines it printed so far."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[Line] = []
        """Every stdout line, parsed (non-JSON lines as ``{"event": "_text", "text": ...}``)."""
        self.stderr = bytearray()
        self.exited = trio.Event()
        self._changed = trio.Event()

    @property
    def ready(self) -> Line:
        """The ``ready`` line (run_js only yields once it came)."""
        for line in self.lines:
            if line.get("event") == "ready":
                return line
        raise HarnessError(f"{self.name} has not printed its ready line")

    def mark(self) -> int:
        """A position in :attr:`lines`: pass it as ``after`` to wait only for newer lines."""
        return len(self.lines)

    def events(self, event: str, *, after: int = 0) -> list[Line]:
        """The lines of ``event`` seen so far (from position ``after``)."""
        return [line for line in self.lines[after:] if line.get("event") == event]

    async def wait_for(
        self,
        event: str,
        *,
        where: Callable[[Line], bool] | None = None,
        after: int = 0,
    ) -> Line:
        """The first line of ``event`` (matching ``where``) at position ``after`` or later.

        Raises :class:`HarnessError` if the process exits or prints ``fatal`` first. Bound the
        wait with ``trio.fail_after``.
        """
        index = after
        while True:
            while index < len(self.lines):
                line = self.lines[index]
                index += 1
                if line.get("event") == event and (where is None or where(line)):
                    return line
                if line.get("event") == "fatal" and event != "fatal":
                    raise HarnessError(f"{self.name} failed: {line.get('error')}")
            if self.exited.is_set():
                raise HarnessError(
                    f"{self.name} exited with {self.process.returncode} before printing "
                    f"{event!r}; stderr: {self.stderr_tail()}"
                )
            changed = self._changed
            await changed.wait()

    def stderr_tail(self, size: int = 2000) -> str:
        return bytes(self.stderr[-size:]).decode("utf-8", "replace")

    async def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(timeout):
                await self.exited.wait()
            if self.process.returncode is None:
                self.process.kill()
        with trio.move_on_after(timeout):
            await self.process.wait()
        return self.process.returncode

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _read_stdout(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        buffer = b""
        try:
            async for chunk in stream:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    self._add(raw)
            if buffer.strip():
                self._add(buffer)
        finally:
            await self.process.wait()
            self.exited.set()
            self._notify()

    def _add(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        self.lines.append(line if isinstance(line, dict) else {"event": "_text", "text": text})
        self._notify()

    async def _read_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        async for chunk in stream:
            self.stderr += chunk
            del self.stderr[:-65536]


@asynccontextmanager
async def run_js(
    interop_dir: Path,
    script: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    ready_event: str = "ready",
    ready_timeout: float = 30.0,
) -> AsyncIterator[JsProcess]:
    """Start ``node <script> <args>`` in ``interop_dir``; yield once it printed ``ready_event``.

    ``env`` adds to the environment. The process is stopped when the block is left, also on
    errors and cancellation. Raises :class:`HarnessError` if it exits or prints ``fatal`` before
    being ready, or is not ready within ``ready_timeout`` seconds.
    """
    node = shutil.which("node")
    if node is None:
        raise HarnessError("node is not installed")
    async with run_program(
        script,
        [node, str(interop_dir / script), *args],
        cwd=interop_dir,
        env=env,
        ready_event=ready_event,
        ready_timeout=ready_timeout,
    ) as proc:
        yield proc


@asynccontextmanager
async def run_program(
    name: str,
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    ready_event: str = "ready",
    ready_timeout: float = 30.0,
) -> AsyncIterator[JsProcess]:
    """Like :func:`run_js` for any program printing JSON lines (our own CLI commands, too).

    ``env`` adds to the environment, except that ``ILP_*`` variables are never inherited: a
    developer's own uplink settings must not leak into a test.
    """
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ILP_")}
    full_env = {**inherited, **(env or {})}
    script = name
    process = await trio.lowlevel.open_process(
        argv,
        cwd=None if cwd is None else str(cwd),
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc = JsProcess(script, process)
    problem: HarnessError | None = None
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(proc._read_stdout)
            nursery.start_soon(proc._read_stderr)
            try:
                with trio.fail_after(ready_timeout):
                    await proc.wait_for(ready_event)
            except trio.TooSlowError:
                problem = HarnessError(
                    f"{script} printed no {ready_event!r} line within {ready_timeout:g} s; "
                    f"stderr: {proc.stderr_tail()}"
                )
            except HarnessError as exc:
                problem = exc
            if problem is None:
                try:
                    yield proc
                except BaseException as exc:
                    body_error = exc
                    raise
                finally:
                    with trio.CancelScope(shield=True):
                        await proc.stop()
            else:
                with trio.CancelScope(shield=True):
                    await proc.stop()
    except BaseExceptionGroup as group:
        # The block's own exception comes out unwrapped, so tests see their real failure.
        if body_error is None or any(exc is not body_error for exc in group.exceptions):
            raise
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await process.wait()
    if body_error is not None:
        raise body_error
    if problem is not None:
        raise problem


def receiver_js(
    interop_dir: Path, btp_port: int, *args: str
) -> AbstractAsyncContextManager[JsProcess]:
    """receiver.js as the child ``receiver`` (token ``receiver-secret``) of the BTP server on
    ``btp_port``, its SPSP endpoint on a free port; ``args`` add to its flags."""
    return run_js(
        interop_dir,
        "receiver.js",
        "--btp",
        f"btp+ws://receiver:receiver-secret@127.0.0.1:{btp_port}",
        "--spsp-port",
        "0",
        *args,
    )
