"""The SQLite store: what goes in comes back, across reopening, exactly."""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from ilp.node.store import AccountRecord, NodeStore, StoreError

ALICE = AccountRecord(
    "alice",
    "child",
    "XRP",
    9,
    max_packet_amount=100_000,
    credit_limit=2**64 - 1,
    token_hash="ab" * 32,
    url=None,
    origin="config",
)
BOB = AccountRecord(
    "bob", "peer", "USD", 2, url="btp+ws://:s@127.0.0.1:1", origin="api", receive_routes=False
)


def _fill(store: NodeStore) -> None:
    store.put_account(ALICE)
    store.put_account(BOB)
    store.put_route("test.bob", "bob")
    store.put_route("", "bob")
    store.put_route("test.alice.x", "alice")
    store.put_rate("USD", Fraction(1))
    store.put_rate("XRP", Fraction(11, 10))
    store.put_rate("EUR", Fraction(1, 3))
    store.put_setting("node_secret", "00ff")
    store.save_balances([("alice", -(2**70)), ("bob", 2**64 + 5)])


def _check(store: NodeStore) -> None:
    alice, bob = store.accounts()
    assert alice == replace(ALICE, balance=-(2**70))
    assert bob == replace(BOB, balance=2**64 + 5)
    assert store.routes() == {"test.bob": "bob", "": "bob", "test.alice.x": "alice"}
    assert store.rates() == {"USD": 1, "XRP": Fraction(11, 10), "EUR": Fraction(1, 3)}
    assert all(type(rate) is Fraction for rate in store.rates().values())
    assert store.setting("node_secret") == "00ff"
    assert store.setting("missing") is None


def test_round_trip_in_memory() -> None:
    with NodeStore(":memory:") as store:
        assert store.accounts() == []
        assert store.routes() == {}
        assert store.rates() == {}
        _fill(store)
        _check(store)


def test_reopened_file_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "node.sqlite3"  # folders are made
    with NodeStore(path) as store:
        _fill(store)
    with NodeStore(path) as store:
        _check(store)
    # A second store open on the same file sees committed changes at once.
    with NodeStore(path) as first, NodeStore(path) as second:
        first.save_balances([("alice", 7)])
        assert second.accounts()[0].balance == 7


def test_a_store_of_an_earlier_version_gains_the_new_columns(tmp_path: Path) -> None:
    """Stores made before the CCP settings existed have no send_routes / receive_routes."""
    path = tmp_path / "node.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE accounts (name TEXT PRIMARY KEY, relation TEXT NOT NULL, "
        "asset_code TEXT NOT NULL, asset_scale INTEGER NOT NULL, max_packet_amount TEXT, "
        "credit_limit TEXT, token_hash TEXT, url TEXT, origin TEXT NOT NULL, "
        "balance TEXT NOT NULL DEFAULT '0');"
        "INSERT INTO accounts VALUES ('old', 'peer', 'XRP', 9, NULL, NULL, NULL, NULL, 'api', '-5');"
    )
    db.commit()
    db.close()
    with NodeStore(path) as store:
        assert store.accounts() == [
            AccountRecord("old", "peer", "XRP", 9, origin="api", balance=-5)
        ]
        store.put_account(replace(store.accounts()[0], send_routes=True))
    with NodeStore(path) as store:
        assert store.accounts()[0].send_routes is True
        assert store.accounts()[0].balance == -5


def test_balances_beyond_64_bits() -> None:
    with NodeStore(":memory:") as store:
        store.put_account(ALICE)
        for balance in (2**63, 2**64, 2**200, -(2**63) - 1, -(2**100), 0):
            store.save_balances([("alice", balance)])
            assert store.accounts()[0].balance == balance
        store.put_account(AccountRecord("big", "child", "XRP", 9, balance=2**65))
        assert {a.name: a.balance for a in store.accounts()} == {"alice": 0, "big": 2**65}


def test_put_account_keeps_the_stored_balance() -> None:
    with NodeStore(":memory:") as store:
        store.put_account(ALICE)
        store.save_balances([("alice", 12345)])
        changed = AccountRecord(
            "alice", "peer", "USD", 2, max_packet_amount=None, credit_limit=5, balance=0
        )
        store.put_account(changed)
        (stored,) = store.accounts()
        assert stored.balance == 12345
        assert (stored.relation, stored.asset_code, stored.asset_scale) == ("peer", "USD", 2)
        assert (stored.max_packet_amount, stored.credit_limit, stored.token_hash) == (None, 5, None)
        assert stored.origin == "api"


def test_delete_account_removes_its_routes() -> None:
    with NodeStore(":memory:") as store:
        _fill(store)
        store.delete_account("bob")
        assert [a.name for a in store.accounts()] == ["alice"]
        assert store.routes() == {"test.alice.x": "alice"}
        store.delete_account("nobody")  # nothing to do
        assert [a.name for a in store.accounts()] == ["alice"]


def test_replace_and_delete_routes_rates_settings() -> None:
    with NodeStore(":memory:") as store:
        _fill(store)
        store.put_route("test.bob", "alice")
        store.delete_route("")
        store.delete_route("test.none")
        assert store.routes() == {"test.bob": "alice", "test.alice.x": "alice"}
        store.put_rate("XRP", Fraction(1, 2))
        store.delete_rate("EUR")
        assert store.rates() == {"USD": 1, "XRP": Fraction(1, 2)}
        store.put_setting("node_secret", "11")
        assert store.setting("node_secret") == "11"


def test_balances_of_several_accounts_move_together(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    with NodeStore(path) as store:
        _fill(store)
        store.save_balances([("alice", 1), ("bob", 2)])
    with NodeStore(path) as store:
        assert [(a.name, a.balance) for a in store.accounts()] == [("alice", 1), ("bob", 2)]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    with NodeStore(path) as store:
        _fill(store)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for extra in (tmp_path / "node.sqlite3-wal", tmp_path / "node.sqlite3-shm"):
            if extra.exists():  # WAL files copy the database's mode
                assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0
    path.chmod(0o644)
    NodeStore(path).close()  # reopening makes it private again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_errors_name_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"cannot open the node store .*file"):
        NodeStore(blocker / "node.sqlite3")
    not_sqlite = tmp_path / "junk.sqlite3"
    not_sqlite.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"junk\.sqlite3"):
        NodeStore(not_sqlite)
    store = NodeStore(":memory:")
    store.close()
    with pytest.raises(StoreError, match="failed"):
        store.accounts()
    with pytest.raises(StoreError, match="failed"):
        store.save_balances([("alice", 1)])
