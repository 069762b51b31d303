"""Fixtures of the STREAM tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .nowait import PATH


@pytest.fixture(params=["await", "handle_nowait"])
def receiver_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test twice: Prepares reach the receiver by awaiting it, or as a BTP connection
    sends them, through ``handle_nowait`` first (see tests/stream/nowait.py)."""
    PATH.nowait = request.param == "handle_nowait"
    yield request.param
    PATH.nowait = False
