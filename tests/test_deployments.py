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
