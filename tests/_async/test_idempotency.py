"""Idempotency keys belong to their ledger, however many ledgers share a database."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Int64

from mongoledger import AsyncLedger, IdempotencyConflict
from mongoledger._async._io import to_list
from mongoledger._core.accounts import validate_account
from mongoledger._core.idempotency import fingerprint

_IS_SYNC = False


@pytest.fixture
async def pair(async_db: Any) -> tuple[AsyncLedger, AsyncLedger]:
    """Two ledgers in one database with their own collections, sharing the key collection."""
    shop = AsyncLedger(async_db)
    games = AsyncLedger(async_db, accounts_collection="players", transactions_collection="moves")
    return shop, games


async def test_one_key_on_two_ledgers_posts_on_each(pair: tuple[AsyncLedger, AsyncLedger]) -> None:
    shop, games = pair
    first = await shop.increase("a", 5, idempotency_key="k")
    other = await games.increase("a", 5, idempotency_key="k")
    assert other != first
    assert await shop.balance("a") == 5
    assert await games.balance("a") == 5
    assert (await games.get_transaction(other)).amount == 5
    # Each ledger's retry answers with its own first ids, and writes nothing.
    assert await shop.increase("a", 5, idempotency_key="k") == first
    assert await games.increase("a", 5, idempotency_key="k") == other
    assert await games.balance("a") == 5
    # The same key with other arguments conflicts only within its ledger.
    with pytest.raises(IdempotencyConflict):
        await games.increase("a", 6, idempotency_key="k")
    records = await to_list(shop.database["ledger_idempotency"].find({}))
    assert sorted(r["_id"]["ledger"] for r in records) == ["moves", "transactions"]
    assert {r["_id"]["key"] for r in records} == {"k"}


async def test_verify_repair_leaves_other_ledgers_keys(
    pair: tuple[AsyncLedger, AsyncLedger],
) -> None:
    """Without DB transactions verify checks for orphaned key records: only its own."""
    shop, games = pair
    first = await shop.increase("a", 5, idempotency_key="k")
    report = await games.verify(repair=True)
    assert report.ok, report
    assert await shop.increase("a", 5, idempotency_key="k") == first
    assert await shop.balance("a") == 5  # credited once


async def test_key_records_of_an_earlier_version_count_for_their_ledger(
    pair: tuple[AsyncLedger, AsyncLedger],
) -> None:
    """A record whose ``_id`` is the bare key (before scoping) still answers its own ledger's
    retry, and no other ledger's."""
    shop, games = pair
    first = await shop.increase("a", 5, idempotency_key="k")
    store = shop.database["ledger_idempotency"]
    record = await store.find_one({})
    await store.delete_one({"_id": record["_id"]})
    await store.insert_one({**record, "_id": "k"})
    assert await shop.increase("a", 5, idempotency_key="k") == first
    assert await shop.balance("a") == 5
    other = await games.increase("a", 5, idempotency_key="k")
    assert other != first
    assert await games.balance("a") == 5


async def test_a_key_the_previous_version_recorded_answers_a_retry_of_its_call(
    async_db: Any,
) -> None:
    """Its record has the bare key as ``_id`` and that version's fingerprint, which differs
    from this one's wherever an account reference holds a number: a retry after the upgrade
    gets the first result, and another call with the key is still a conflict."""
    ledger = AsyncLedger(async_db)
    wallet, shop = {"user_id": 7, "type": "wallet"}, {"shop_id": 3}
    first = await ledger.transfer(wallet, shop, 5, {"order": 1}, idempotency_key="pay-1")
    args = [
        (validate_account(wallet), -5, {"order": 1}),
        (validate_account(shop), 5, {"order": 1}),
    ]
    assert fingerprint("transfer", args, earlier=True) != fingerprint("transfer", args)
    store = ledger.database["ledger_idempotency"]
    record = await store.find_one({})
    await store.delete_one({"_id": record["_id"]})
    earlier = {**record, "_id": "pay-1", "hash": fingerprint("transfer", args, earlier=True)}
    await store.insert_one(earlier)
    again = await ledger.transfer(wallet, shop, 5, {"order": 1}, idempotency_key="pay-1")
    assert again == first
    assert await ledger.transactions.count_documents({}) == 2
    with pytest.raises(IdempotencyConflict):
        await ledger.transfer(wallet, shop, 6, {"order": 1}, idempotency_key="pay-1")
    assert await ledger.balance(shop) == 5


async def test_a_retry_may_spell_numbers_differently(async_db: Any) -> None:
    """PyMongo returns int64 values as Int64: a retry passing that back is the same call."""
    ledger = AsyncLedger(async_db)
    first = await ledger.increase({"user_id": 7}, 5, idempotency_key="k")
    again = await ledger.increase({"user_id": Int64(7)}, 5, idempotency_key="k")
    assert again == first
    assert await ledger.increase({"user_id": 7.0}, 5, idempotency_key="k") == first
    with pytest.raises(IdempotencyConflict):
        await ledger.increase({"user_id": True}, 5, idempotency_key="k")
    assert await ledger.balance({"user_id": 7}) == 5
