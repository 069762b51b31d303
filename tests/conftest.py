"""Shared fixtures: test vectors and the JavaScript interop harness."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
VECTORS = SHARED / "vectors"


def load_vectors(name: str) -> list[dict[str, Any]]:
    """The vectors of ``../shared/vectors/<name>.json``; a missing file fails, never skips."""
    path = VECTORS / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"test vectors not found at {path}: ../shared must sit beside the repo"
        )
    data: list[dict[str, Any]] = json.loads(path.read_text())
    return data


def vector_params(name: str, *, where: Any = None) -> list[Any]:
    """``pytest.param`` per vector (filtered by ``where``), with the vector name as id."""
    return [pytest.param(v, id=v["name"]) for v in load_vectors(name) if where is None or where(v)]


def interop_dir() -> Path | None:
    """Where the JS harness is, or None; under CI a missing harness is an error."""
    path = Path(os.environ.get("ILP_INTEROP_DIR", str(SHARED / "interop"))).resolve()
    problem = None
    if not (path / "connector.js").exists():
        problem = f"the interop harness is missing at {path} (set ILP_INTEROP_DIR)"
    elif not (path / "node_modules").exists():
        problem = f"the interop harness at {path} has no node_modules (run `make install`)"
    elif shutil.which("node") is None:
        problem = "node is not installed, so the interop harness cannot run"
    if problem is None:
        return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{problem}; under CI the interop tests must run", pytrace=False)
    pytest.skip(problem)
    return None


@pytest.fixture
def interop() -> Path:
    """The interop harness directory; skips (fails under CI) when it is not usable."""
    path = interop_dir()
    assert path is not None
    return path
