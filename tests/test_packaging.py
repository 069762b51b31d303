"""The distribution ships every package of the SDK and the CLI.

``pyproject.toml`` lists the packages by hand (``ilp_cli`` lives in ``cli/``); an editable
install, as the tests run, imports from the source tree and would not notice one left out of
the list, but a built wheel would lack it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_in_the_distribution() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    on_disk = set()
    for name, directory in setuptools["package-dir"].items():
        for init in (ROOT / directory).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / directory)
            on_disk.add(".".join((name, *relative.parts)))
    assert on_disk - listed == set(), "packages missing from [tool.setuptools] packages"
    assert listed - on_disk == set(), "packages listed that do not exist"
