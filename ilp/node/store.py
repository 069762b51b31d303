"""The node's embedded store: accounts, balances, routes, rates and settings in SQLite.

One file (``node.sqlite3`` in the data directory) or ``":memory:"``. The schema is created on
open. Amounts and limits are decimal text (SQLite's INTEGER is signed 64-bit; balances are not
bounded by it), rates are exact fractions as text.

Durability: the journal is WAL with ``synchronous=NORMAL``: every commit survives the process
being killed (the test suite kills the node with SIGKILL mid-payment); a power cut may lose the
last commits before the OS wrote them out. :meth:`NodeStore.save_balances` commits at once, so a
node that returns a Fulfill upstream has already stored the balance change it made.

The calls block for as long as SQLite takes (tens of microseconds for a balance update, on the
event loop). No trio here and no clock.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..errors import IlpError

__all__ = ["AccountRecord", "NodeStore", "StoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    relation TEXT NOT NULL,
    asset_code TEXT NOT NULL,
    asset_scale INTEGER NOT NULL,
    max_packet_amount TEXT,
    credit_limit TEXT,
    token_hash TEXT,
    url TEXT,
    origin TEXT NOT NULL,
    balance TEXT NOT NULL DEFAULT '0',
    send_routes INTEGER,
    receive_routes INTEGER
);
CREATE TABLE IF NOT EXISTS routes (
    prefix TEXT PRIMARY KEY,
    account TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rates (
    asset_code TEXT PRIMARY KEY,
    rate TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_ACCOUNT_COLUMNS = (
    "name, relation, asset_code, asset_scale, max_packet_amount, credit_limit, token_hash, url, "
    "origin, balance, send_routes, receive_routes"
)
_ADDED_COLUMNS = {"send_routes": "INTEGER", "receive_routes": "INTEGER"}
"""Columns that stores made by earlier versions lack: added when such a store is opened."""


class StoreError(IlpError):
    """The store cannot be opened, read or written (the message names the file)."""


@dataclass(slots=True)
class AccountRecord:
    """One row of the accounts table. ``token_hash`` is the hex SHA-256 of the BTP token;
    ``url`` (with its credentials) is where the node dials out, for peers and parents."""

    name: str
    relation: str
    asset_code: str
    asset_scale: int
    max_packet_amount: int | None = None
    credit_limit: int | None = None
    token_hash: str | None = None
    url: str | None = None
    origin: str = "api"
    """Where the account came from: ``config``, ``api`` or ``auto`` (a child that connected)."""
    balance: int = 0
    send_routes: bool | None = None
    """Send the account our routes over CCP (None: as its relation says; see the node)."""
    receive_routes: bool | None = None
    """Take the account's routes over CCP (None: as its relation says)."""


def _opt_bool(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _opt_int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _opt_text(value: int | None) -> str | None:
    return None if value is None else str(value)


class NodeStore:
    """The node's SQLite store. Use from one thread; close it (or use ``with``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if self.path != ":memory:":
                os.chmod(self.path, 0o600)  # it holds dial-out URLs with their tokens
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(accounts)")}
            for column, kind in _ADDED_COLUMNS.items():
                if column not in have:
                    self._db.execute(f"ALTER TABLE accounts ADD COLUMN {column} {kind}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the node store {self.path}: {exc}") from None

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, params: Iterable[object] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StoreError(f"the node store {self.path} failed: {exc}") from None

    def _transaction(self, statements: Iterable[tuple[str, tuple[object, ...]]]) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    db.execute(sql, params)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"the node store {self.path} failed: {exc}") from None

    # -- accounts -------------------------------------------------------------------------

    def accounts(self) -> list[AccountRecord]:
        rows = self._run(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY name").fetchall()  # noqa: S608
        return [
            AccountRecord(
                name,
                relation,
                code,
                scale,
                _opt_int(max_packet),
                _opt_int(credit),
                token_hash,
                url,
                origin,
                int(balance),
                _opt_bool(send),
                _opt_bool(receive),
            )
            for (
                name,
                relation,
                code,
                scale,
                max_packet,
                credit,
                token_hash,
                url,
                origin,
                balance,
                send,
                receive,
            ) in rows
        ]

    def put_account(self, record: AccountRecord) -> None:
        """Insert or update an account's settings; its balance in the store is kept."""
        self._run(
            "INSERT INTO accounts (name, relation, asset_code, asset_scale, max_packet_amount, "
            "credit_limit, token_hash, url, origin, balance, send_routes, receive_routes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET relation=excluded.relation, "
            "asset_code=excluded.asset_code, asset_scale=excluded.asset_scale, "
            "max_packet_amount=excluded.max_packet_amount, credit_limit=excluded.credit_limit, "
            "token_hash=excluded.token_hash, url=excluded.url, origin=excluded.origin, "
            "send_routes=excluded.send_routes, receive_routes=excluded.receive_routes",
            (
                record.name,
                record.relation,
                record.asset_code,
                record.asset_scale,
                _opt_text(record.max_packet_amount),
                _opt_text(record.credit_limit),
                record.token_hash,
                record.url,
                record.origin,
                str(record.balance),
                record.send_routes,
                record.receive_routes,
            ),
        )

    def delete_account(self, name: str) -> None:
        """Remove the account and every route to it, in one transaction."""
        self._transaction(
            [
                ("DELETE FROM routes WHERE account = ?", (name,)),
                ("DELETE FROM accounts WHERE name = ?", (name,)),
            ]
        )

    def save_balances(self, balances: Iterable[tuple[str, int]]) -> None:
        """Store new balances ``(name, balance)`` in one committed transaction."""
        self._transaction(
            ("UPDATE accounts SET balance = ? WHERE name = ?", (str(balance), name))
            for name, balance in balances
        )

    # -- routes and rates -------------------------------------------------------------------

    def routes(self) -> dict[str, str]:
        return dict(self._run("SELECT prefix, account FROM routes").fetchall())

    def put_route(self, prefix: str, account: str) -> None:
        self._run(
            "INSERT INTO routes (prefix, account) VALUES (?, ?) "
            "ON CONFLICT(prefix) DO UPDATE SET account = excluded.account",
            (prefix, account),
        )

    def delete_route(self, prefix: str) -> None:
        self._run("DELETE FROM routes WHERE prefix = ?", (prefix,))

    def rates(self) -> dict[str, Fraction]:
        return {
            code: Fraction(rate) for code, rate in self._run("SELECT asset_code, rate FROM rates")
        }

    def put_rate(self, asset_code: str, rate: Fraction) -> None:
        self._run(
            "INSERT INTO rates (asset_code, rate) VALUES (?, ?) "
            "ON CONFLICT(asset_code) DO UPDATE SET rate = excluded.rate",
            (asset_code, str(rate)),
        )

    def delete_rate(self, asset_code: str) -> None:
        self._run("DELETE FROM rates WHERE asset_code = ?", (asset_code,))

    # -- settings ---------------------------------------------------------------------------

    def setting(self, key: str) -> str | None:
        row = self._run("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_setting(self, key: str, value: str) -> None:
        self._run(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
