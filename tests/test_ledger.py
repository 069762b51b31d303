"""The SQLite ledger: what record() returns is committed, survives a reopen, sums exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ilp.ledger import Credit, Ledger, LedgerError, LedgerTotal
from ilp.oer import MAX_UINT64

WHEN = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def credit(amount: int, *, connection: str = "c1", code: str = "XRP", scale: int = 9) -> Credit:
    return Credit(WHEN, "test.bob", connection, 1, amount, code, scale)


def test_record_is_committed_before_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "ledger.sqlite3"
    writer = Ledger(path)
    writer.record([credit(1000), credit(MAX_UINT64, connection="c2")])
    # Another connection sees it while the writer is still open: it is committed, not pending.
    with Ledger(path) as reader:
        stored = reader.credits()
    assert [s.credit for s in stored] == [credit(1000), credit(MAX_UINT64, connection="c2")]
    assert stored[0].id < stored[1].id
    writer.close()


def test_reopen_reads_everything_and_totals_per_asset(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        ledger.record([credit(5)])
        ledger.record([credit(7), credit(3, code="USD", scale=2)])
        ledger.record([])
    with Ledger(path) as ledger:
        assert [s.credit.amount for s in ledger.credits()] == [5, 7, 3]
        assert [s.credit.amount for s in ledger.credits(after=1, limit=1)] == [7]
        assert ledger.totals() == [LedgerTotal("USD", 2, 3, 1), LedgerTotal("XRP", 9, 12, 2)]
        # Sums beyond 64 bits stay exact.
        ledger.record([credit(MAX_UINT64), credit(MAX_UINT64)])
        assert ledger.totals()[1].total == 12 + 2 * MAX_UINT64
        assert ledger.credits()[0].credit.received_at == WHEN


def test_a_failed_call_stores_nothing(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        with pytest.raises(ValueError, match="u64"):
            ledger.record([credit(1), credit(MAX_UINT64 + 1)])
        with pytest.raises(ValueError, match="u64"):
            ledger.record([credit(-1)])
        assert ledger.credits() == []


def test_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"this is not an SQLite database, not at all" * 10)
    with pytest.raises(LedgerError, match="junk"):
        Ledger(path)
    with pytest.raises(LedgerError, match="cannot open"):
        Ledger(path / "below-a-file.sqlite3")
