"""A durable record of money received: an embedded SQLite ledger (stdlib ``sqlite3``).

::

    with Ledger("ledger.sqlite3") as ledger:
        ledger.record([Credit(received_at, address, "c-1f2e", 1, 1000, "XRP", 9)])
        for row in ledger.credits():
            ...

:meth:`Ledger.record` returns only after its transaction is committed and synced (WAL journal,
``synchronous=FULL``): a receiver that fulfills a Prepare after ``record`` returned never loses
that credit in a crash. Several credits in one call share one commit (group commit).

The calls block (a commit waits for the disk): trio code runs them in a worker thread
(``trio.to_thread.run_sync``). One :class:`Ledger` may be used from one thread at a time; the
module has no trio and reads no clock (the caller gives ``received_at``).

Amounts are stored as decimal text: SQLite's INTEGER is signed 64-bit, ILP amounts are u64.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from os import PathLike
from pathlib import Path
from types import TracebackType

from .errors import IlpError
from .oer import MAX_UINT64

__all__ = ["Credit", "Ledger", "LedgerError", "LedgerTotal", "StoredCredit"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS credits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    address TEXT NOT NULL,
    connection TEXT NOT NULL,
    stream INTEGER NOT NULL,
    amount TEXT NOT NULL,
    asset_code TEXT NOT NULL,
    asset_scale INTEGER NOT NULL
)
"""
_COLUMNS = "received_at, address, connection, stream, amount, asset_code, asset_scale"
_COLUMN_SET = frozenset(("id", *_COLUMNS.split(", ")))
_INSERT = f"INSERT INTO credits ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 (constant)
_SELECT = f"SELECT id, {_COLUMNS} FROM credits WHERE id > ? ORDER BY id"  # noqa: S608 (constant)


class LedgerError(IlpError):
    """The ledger cannot be opened, read or written (the message names the file)."""


@dataclass(frozen=True, slots=True)
class Credit:
    """Money fulfilled to us: ``amount`` base units of ``asset_code``/``asset_scale`` that
    arrived at ``address`` on ``stream`` of ``connection`` (a tag or id) at ``received_at``."""

    received_at: datetime
    address: str
    connection: str
    stream: int
    amount: int
    asset_code: str
    asset_scale: int


@dataclass(frozen=True, slots=True)
class StoredCredit:
    """A :class:`Credit` as read back, with its row ``id`` (increasing in commit order)."""

    id: int
    credit: Credit


@dataclass(frozen=True, slots=True)
class LedgerTotal:
    """The sum of the credits in one asset."""

    asset_code: str
    asset_scale: int
    total: int
    count: int


class Ledger:
    """An SQLite ledger file at ``path`` (created with its parent directories if missing).

    With ``read_only``, the file must exist and hold a ledger (:class:`LedgerError` otherwise),
    and nothing is written to it: no table, no journal mode (``ilp ledger`` lists this way).
    """

    def __init__(self, path: str | PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(path)
        if read_only:
            self._db = self._open_read_only()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False:
            # trio's worker threads differ between calls; callers serialize the calls.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            self._db.close()
            raise LedgerError(f"cannot use the ledger {self.path}: {exc}") from None

    def _open_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise LedgerError(f"there is no ledger at {self.path}")
        try:
            db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from None
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(credits)")}
        except sqlite3.Error as exc:
            db.close()
            raise LedgerError(f"cannot use the ledger {self.path}: {exc}") from None
        if not _COLUMN_SET.issubset(columns):
            db.close()
            raise LedgerError(f"{self.path} is not a ledger of `ilp receive` (no credits table)")
        return db

    def record(self, credits: Iterable[Credit]) -> None:
        """Store ``credits`` in one transaction; returns once it is committed to disk.

        On failure nothing of the call is stored and :class:`LedgerError` is raised.
        """
        rows = []
        for c in credits:
            if not 0 <= c.amount <= MAX_UINT64:
                raise ValueError(f"amount {c.amount} is not a u64")
            rows.append(
                (
                    c.received_at.isoformat(),
                    c.address,
                    c.connection,
                    c.stream,
                    str(c.amount),
                    c.asset_code,
                    c.asset_scale,
                )
            )
        if not rows:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(_INSERT, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write to the ledger {self.path}: {exc}") from None

    def credits(self, *, after: int = 0, limit: int | None = None) -> list[StoredCredit]:
        """The credits with an id above ``after``, oldest first, at most ``limit``."""
        query = _SELECT
        params: tuple[int, ...] = (after,)
        if limit is not None:
            query += " LIMIT ?"
            params = (after, limit)
        try:
            rows = self._db.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the ledger {self.path}: {exc}") from None
        try:
            return [
                StoredCredit(
                    row[0],
                    Credit(
                        datetime.fromisoformat(row[1]),
                        str(row[2]),
                        str(row[3]),
                        int(row[4]),
                        int(row[5]),
                        str(row[6]),
                        int(row[7]),
                    ),
                )
                for row in rows
            ]
        except (TypeError, ValueError) as exc:
            raise LedgerError(f"the ledger {self.path} holds a row we cannot read: {exc}") from None

    def totals(self) -> list[LedgerTotal]:
        """The sum and count of the credits per asset (code, scale), sorted."""
        sums: dict[tuple[str, int], list[int]] = {}
        try:
            rows = self._db.execute("SELECT asset_code, asset_scale, amount FROM credits")
            for code, scale, amount in rows:
                entry = sums.setdefault((str(code), int(scale)), [0, 0])
                entry[0] += int(amount)
                entry[1] += 1
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the ledger {self.path}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise LedgerError(f"the ledger {self.path} holds a row we cannot read: {exc}") from None
        return [LedgerTotal(code, scale, s, n) for (code, scale), (s, n) in sorted(sums.items())]

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
