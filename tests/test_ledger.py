"""The SQLite ledger: what record() returns is committed, survives a reopen, sums exactly."""

from __future__ import annotations

import sqlite3
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


def test_read_only_reads_a_ledger_in_use_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as writer:
        writer.record([credit(5)])
        # While ilp receive still has it open (WAL), a reader sees what is committed.
        with Ledger(path, read_only=True) as reader:
            assert [c.credit.amount for c in reader.credits()] == [5]
            writer.record([credit(7)])
            assert [t.total for t in reader.totals()] == [12]
            with pytest.raises(LedgerError, match="cannot write"):
                reader.record([credit(1)])


def test_read_only_refuses_other_databases_and_leaves_them_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE foo (x INTEGER)")
    db.close()
    before = sorted(p.name for p in tmp_path.iterdir()), other.read_bytes()
    with pytest.raises(LedgerError, match="not a ledger"):
        Ledger(other, read_only=True)
    assert (sorted(p.name for p in tmp_path.iterdir()), other.read_bytes()) == before
    with pytest.raises(LedgerError, match="no ledger at"):
        Ledger(tmp_path / "missing.sqlite3", read_only=True)
    assert not (tmp_path / "missing.sqlite3").exists()


def test_rows_that_are_not_credits_raise_ledger_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO credits (received_at, address, connection, stream, amount, asset_code,"
            " asset_scale) VALUES ('yesterday', 'a', 'c', 1, 'lots', 'XRP', 9)"
        )
    db.close()
    with Ledger(path, read_only=True) as ledger:
        with pytest.raises(LedgerError, match="cannot read"):
            ledger.credits()
        with pytest.raises(LedgerError, match="cannot read"):
            ledger.totals()
