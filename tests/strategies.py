"""Hypothesis strategies shared by the codec tests."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import strategies as st

from ilp.address import SCHEMES
from ilp.oer import MAX_UINT64

u64 = st.integers(min_value=0, max_value=MAX_UINT64)
segments = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_~-",
    min_size=1,
    max_size=20,
)
addresses = st.builds(
    lambda scheme, segs: ".".join([scheme, *segs]),
    st.sampled_from(SCHEMES),
    st.lists(segments, min_size=1, max_size=6),
)
# ILP timestamps have millisecond precision.
timestamps = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC))
payloads = st.binary(max_size=300) | st.binary(min_size=32000, max_size=32767)
b32 = st.binary(min_size=32, max_size=32)
