"""The exit codes of the `ilp` command, defined once for every subcommand."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """How an `ilp` command ended. Listed in `ilp --help` and docs/cli.md."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    FAILED = 4
    UNREACHABLE = 5
    TIMEOUT = 6
    INVALID_INPUT = 7
    AUTH_REFUSED = 8
    INTERRUPTED = 130

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "success (a payment: complete)",
    ExitCode.ERROR: "unexpected failure, a bug: run again with --debug for the traceback",
    ExitCode.USAGE: "bad command line",
    ExitCode.PARTIAL: "a payment delivered only part of the amount",
    ExitCode.FAILED: "a payment failed with nothing delivered",
    ExitCode.UNREACHABLE: "the receiver or the connector could not be reached",
    ExitCode.TIMEOUT: "timed out",
    ExitCode.INVALID_INPUT: "input could not be read or decoded (bad hex, malformed packet, wrong secret)",
    ExitCode.AUTH_REFUSED: "the connector refused our credentials",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def describe_exit_codes() -> str:
    """One line per exit code, for --help texts."""
    return "\n".join(f"{int(code):>3}  {code.meaning}" for code in ExitCode)
