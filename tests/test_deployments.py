"""Deployments without DB transactions: a one-time warning, or a refusal when required."""

from __future__ import annotations

import warnings

import mongomock
import pytest

from mongoledger import (
    ChangeStreamsUnsupported,
    Ledger,
    NoTransactionsWarning,
    TransactionsUnsupported,
)
from mongoledger.memory import MemoryClient


def test_no_transactions_warns_once_per_ledger() -> None:
    ledger = Ledger(mongomock.MongoClient()["test"])
    with pytest.warns(NoTransactionsWarning, match="no multi-document transactions"):
        ledger.increase("a", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ledger.increase("a", 1)
        ledger.transfer("a", "b", 1)
    assert ledger.balance("a") == 1


def test_require_transactions_refuses_at_first_write() -> None:
    db = mongomock.MongoClient()["test"]
    ledger = Ledger(db, require_transactions=True)
    with pytest.raises(TransactionsUnsupported, match="'test'"):
        ledger.increase("a", 1)
    with pytest.raises(TransactionsUnsupported):
        ledger.increase("a", 1)
    assert db["transactions"].count_documents({}) == 0
    assert db["accounts"].count_documents({}) == 0


def test_memory_engine_is_transactional() -> None:
    ledger = Ledger(MemoryClient()["test"], require_transactions=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ledger.increase("a", 1)
    assert ledger.balance("a") == 1


def test_mongomock_has_no_change_streams() -> None:
    ledger = Ledger(mongomock.MongoClient()["test"])
    with pytest.raises(ChangeStreamsUnsupported, match="no change streams"):
        ledger.watch()
    with pytest.raises(ChangeStreamsUnsupported):
        ledger.listen(print, checkpoint="x")


class _Handshake:
    """A database whose handshake answers as told (to test detection alone)."""

    def __init__(self, inner: object, replies: list[object]) -> None:
        self._inner = inner
        self._replies = replies
        self.name = "test"

    def __getitem__(self, name: str) -> object:
        return self._inner[name]  # type: ignore[index]

    def command(self, name: str) -> object:
        reply = self._replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_a_network_error_during_detection_is_not_taken_for_no_transactions() -> None:
    from pymongo.errors import AutoReconnect

    inner = MemoryClient()["test"]
    db = _Handshake(inner, [AutoReconnect("connection reset"), inner.command("hello")])
    ledger = Ledger(db, require_transactions=True)
    with pytest.raises(AutoReconnect):
        ledger.increase("a", 1)
    ledger.increase("a", 1)  # detected on the next call, with transactions
    assert ledger.balance("a") == 1


def test_servers_without_hello_are_asked_is_master() -> None:
    from pymongo.errors import OperationFailure

    inner = MemoryClient()["test"]
    missing = OperationFailure("no such command: 'hello'", 59)
    db = _Handshake(inner, [missing, inner.command("hello")])
    ledger = Ledger(db, require_transactions=True)
    ledger.increase("a", 1)
    assert ledger.balance("a") == 1


@pytest.mark.filterwarnings("ignore::mongoledger.errors.NoTransactionsWarning")
def test_without_transactions_an_orphaned_key_is_reported_and_repaired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pymongo.errors import AutoReconnect

    ledger = Ledger(mongomock.MongoClient()["test"])
    ledger.increase("a", 10)

    def down(*args: object, **kwargs: object) -> None:
        raise AutoReconnect("connection lost")

    # The crash: the key's record is written, the transactions are not, and nothing can be
    # cleaned up (the server is gone).
    monkeypatch.setattr(ledger.transactions, "insert_many", down)
    monkeypatch.setattr(ledger._idempotency, "delete_one", down)
    monkeypatch.setattr(ledger.accounts, "update_one", down)
    with pytest.raises(AutoReconnect):
        ledger.increase("a", 5, idempotency_key="pay-1")
    monkeypatch.undo()
    report = ledger.verify()
    assert [link.problem for link in report.broken_links] == [
        "idempotency key 'pay-1' records transactions that were never written"
    ]
    assert ledger.verify(repair=True).broken_links  # reported, then repaired
    assert ledger.verify().ok
    tid = ledger.increase("a", 5, idempotency_key="pay-1")
    assert ledger.increase("a", 5, idempotency_key="pay-1") == tid
    assert ledger.balance("a") == 15


def test_ensure_indexes_names_a_conflicting_index() -> None:
    from mongoledger import InvalidConfiguration

    db = MemoryClient()["test"]
    db["ledger_idempotency"].create_index(
        "x", name="ledger_idempotency_created", unique=True, partialFilterExpression={"x": 1}
    )
    with pytest.raises(InvalidConfiguration, match="ledger_idempotency_created"):
        Ledger(db).ensure_indexes()


@pytest.mark.filterwarnings("ignore::mongoledger.errors.NoTransactionsWarning")
def test_without_transactions_a_concurrent_creator_wins_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pymongo.errors import DuplicateKeyError

    ledger = Ledger(mongomock.MongoClient()["test"])
    ledger.ensure_indexes()
    original = ledger.accounts.update_one

    def racing(flt: dict, update: dict, upsert: bool = False, **kwargs: object) -> object:
        if upsert:  # another process creates the account first; ours hits the unique key
            original(flt, update, upsert=True)
            raise DuplicateKeyError("E11000 duplicate key error", 11000)
        return original(flt, update, upsert=upsert, **kwargs)

    monkeypatch.setattr(ledger.accounts, "update_one", racing)
    ledger.increase({"user_id": 1}, 5)
    monkeypatch.undo()
    assert ledger.accounts.count_documents({"user_id": 1}) == 1
    assert ledger.balance({"user_id": 1}) == 5
    assert ledger.verify().ok
