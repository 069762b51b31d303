"""The examples in docs/ run, and the `ilp` console examples print what the docs say."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from ilp_cli.main import cli

DOCS = Path(__file__).resolve().parent.parent / "docs"


def blocks(kind: str) -> list[tuple[str, int, str]]:
    out = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        for match in re.finditer(rf"```{kind}\n(.*?)```", text, re.S):
            line = text[: match.start()].count("\n") + 1
            out.append((page.name, line, match.group(1)))
    return out


@pytest.mark.parametrize(
    ("page", "line", "code"),
    [pytest.param(*b, id=f"{b[0]}:{b[1]}") for b in blocks("python")],
)
def test_python_example_runs(page: str, line: int, code: str) -> None:
    exec(compile(code, f"{page}:{line}", "exec"), {"__name__": "docs_example"})


@pytest.mark.parametrize(
    ("page", "line", "session"),
    [
        pytest.param(*b, id=f"{b[0]}:{b[1]}")
        for b in blocks("console")
        if b[2].startswith("$ ilp decode")  # the others need a running connector
    ],
)
def test_console_example(page: str, line: int, session: str) -> None:
    lines = session.strip().splitlines()
    command = lines[0].removeprefix("$ ")
    args = shlex.split(command)
    result = CliRunner().invoke(cli, args[1:])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "\n".join(lines[1:]).strip()
