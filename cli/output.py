"""Output helpers: results on stdout, people-facing messages on stderr, errors as `Error: ...`."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from rich.console import Console

from .exit_codes import ExitCode


def sentence(text: object) -> str:
    """``text`` ending with one period (exception texts may already have one)."""
    text = str(text).rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


class CliError(Exception):
    """A failure a command reports as ``Error: <message>`` with an exit code, no traceback."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def fail(message: str, exit_code: ExitCode) -> NoReturn:
    raise CliError(message, exit_code)


def stdout_console() -> Console:
    return Console(file=sys.stdout, highlight=False)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, indent=None, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


def print_error(message: str) -> None:
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
