"""Configuration mistakes are refused when the ledger is constructed, naming what was given
(SPEC, errors): two roles sharing a collection, something other than a database."""

from __future__ import annotations

from typing import Any

import mongomock
import pytest
from pymongo import AsyncMongoClient, MongoClient

from mongoledger import AsyncLedger, InvalidConfiguration, Ledger
from mongoledger.memory import AsyncMemoryClient, MemoryClient

ROLES = [
    ({"accounts_collection": "transactions"}, "'transactions'"),
    ({"transactions_collection": "accounts"}, "'accounts'"),
    ({"idempotency_collection": "accounts"}, "'accounts'"),
    ({"checkpoints_collection": "transactions"}, "'transactions'"),
    ({"checkpoints_collection": "ledger_idempotency"}, "'ledger_idempotency'"),
    ({"accounts_collection": "x", "transactions_collection": "x"}, "'x'"),
]


@pytest.mark.parametrize(("options", "shown"), ROLES)
def test_two_roles_never_share_a_collection(options: dict[str, Any], shown: str) -> None:
    db = MemoryClient()["shop"]
    with pytest.raises(InvalidConfiguration, match="each role needs its own collection") as info:
        Ledger(db, **options)
    assert shown in str(info.value)
    assert db.list_collection_names() == []  # nothing was created


@pytest.mark.parametrize(("options", "shown"), ROLES)
async def test_two_roles_never_share_a_collection_async(
    options: dict[str, Any], shown: str
) -> None:
    db = AsyncMemoryClient()["shop"]
    with pytest.raises(InvalidConfiguration, match="each role needs its own collection") as info:
        AsyncLedger(db, **options)
    assert shown in str(info.value)
    assert await db.list_collection_names() == []  # nothing was created


@pytest.mark.parametrize("name", ["", "a$b", "a\x00b", None, 5])
def test_unusable_collection_names(name: Any) -> None:
    with pytest.raises(InvalidConfiguration, match="collection name"):
        Ledger(MemoryClient()["shop"], accounts_collection=name)


def _clients() -> list[tuple[Any, str]]:
    return [
        (MongoClient("mongodb://localhost:1/", connect=False), "MongoClient"),
        (mongomock.MongoClient(), "MongoClient"),
        (MemoryClient(), "MemoryClient"),
    ]


@pytest.mark.parametrize("index", range(3))
def test_a_client_instead_of_a_database(index: int) -> None:
    client, name = _clients()[index]
    with pytest.raises(InvalidConfiguration, match="a client") as info:
        Ledger(client)
    assert name in str(info.value)
    assert "client['shop']" in str(info.value)


async def test_an_async_client_instead_of_a_database() -> None:
    for client in (AsyncMongoClient("mongodb://localhost:1/", connect=False), AsyncMemoryClient()):
        with pytest.raises(InvalidConfiguration, match="a client"):
            AsyncLedger(client)


@pytest.mark.parametrize("value", ["shop", None, 42, {"name": "shop"}])
def test_not_a_database_at_all(value: Any) -> None:
    for ledger_class in (Ledger, AsyncLedger):
        with pytest.raises(InvalidConfiguration) as info:
            ledger_class(value)
        assert repr(value) in str(info.value)
        assert "database" in str(info.value)


def test_sync_and_async_databases_go_to_their_own_ledger() -> None:
    with pytest.raises(InvalidConfiguration, match=r"an async database .* use AsyncLedger"):
        Ledger(AsyncMemoryClient()["shop"])
    with pytest.raises(InvalidConfiguration, match=r"a sync database .* use Ledger"):
        AsyncLedger(MemoryClient()["shop"])
    with pytest.raises(InvalidConfiguration, match="use Ledger"):
        AsyncLedger(mongomock.MongoClient()["shop"])
    with pytest.raises(InvalidConfiguration, match="use AsyncLedger"):
        Ledger(AsyncMongoClient("mongodb://localhost:1/", connect=False)["shop"])


def test_real_driver_databases_are_accepted_without_connecting() -> None:
    Ledger(MongoClient("mongodb://localhost:1/", connect=False)["shop"])
    AsyncLedger(AsyncMongoClient("mongodb://localhost:1/", connect=False)["shop"])


def test_default_min_balance_is_validated() -> None:
    db = MemoryClient()["shop"]
    for bad in ("0", True, 1.5, 2**63):
        with pytest.raises(InvalidConfiguration, match="default_min_balance"):
            Ledger(db, default_min_balance=bad)
    with pytest.raises(InvalidConfiguration, match="balance_field"):
        Ledger(db, balance_field=None, default_min_balance=0)
