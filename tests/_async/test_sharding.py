"""What a sharded cluster needs of the ledger's writes, checked on every engine.

No sharded cluster runs here: these tests record what the ledger sends and hold it to what
mongos needs (a write inside a DB transaction that names the shard key goes to one shard).
"""

from __future__ import annotations

from typing import Any

import pytest
from bson import Int64

from mongoledger import AsyncLedger, InsufficientFunds, InvalidAccount
from mongoledger._core.accounts import attributes_key
from tests._async.racing import hold_writes_until_all_looked_up, race

_IS_SYNC = False


class Spy:
    """Records the filters of the update commands sent to a collection."""

    def __init__(self, collection: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.filters: list[dict[str, Any]] = []
        update_one, bulk_write = collection.update_one, collection.bulk_write

        async def spied_update_one(flt: Any, *args: Any, **kwargs: Any) -> Any:
            self.filters.append(dict(flt))
            return await update_one(flt, *args, **kwargs)

        async def spied_bulk_write(requests: Any, *args: Any, **kwargs: Any) -> Any:
            self.filters += [dict(r._filter) for r in requests]
            return await bulk_write(requests, *args, **kwargs)

        monkeypatch.setattr(collection, "update_one", spied_update_one)
        monkeypatch.setattr(collection, "bulk_write", spied_bulk_write)


@pytest.mark.parametrize("legs", [1, 2, 3])
async def test_revert_marks_name_the_shard_key(
    async_db: Any, monkeypatch: pytest.MonkeyPatch, legs: int
) -> None:
    """transactions sharded on account_id: the mark inside the DB transaction is targeted."""
    ledger = AsyncLedger(async_db)
    if legs == 1:
        ids = [await ledger.increase("a", 5)]
    elif legs == 2:
        ids = await ledger.transfer("a", "b", 5)
    else:
        ids = await ledger.post([("a", -5), ("b", 2), ("c", 3)])
    spy = Spy(ledger.transactions, monkeypatch)
    await ledger.revert(ids[0])
    assert len(spy.filters) == legs
    accounts = [(await ledger.get_transaction(tid)).account_id for tid in ids]
    assert [(f["_id"], f["account_id"]) for f in spy.filters] == list(
        zip(ids, accounts, strict=True)
    )


# sharded_accounts=True: accounts sharded on {_id: "hashed"}


@pytest.fixture
async def sharded(async_db: Any) -> AsyncLedger:
    ledger = AsyncLedger(async_db, sharded_accounts=True)
    await ledger.ensure_indexes()
    return ledger


async def test_sharded_accounts_have_no_unique_index_but_id(sharded: AsyncLedger) -> None:
    """A sharded collection refuses a unique index its shard key (_id) does not lead."""
    indexes = await sharded.accounts.index_information()
    unique = [name for name, spec in indexes.items() if spec.get("unique")]
    assert unique == []  # the implicit _id index aside
    assert "ledger_attributes_key" not in indexes


async def test_sharded_accounts_are_created_once_by_digest_id(sharded: AsyncLedger) -> None:
    ids = await sharded.transfer({"user_id": 7, "type": "wallet"}, {"type": "revenue"}, 5)
    wallet = await sharded.get_transaction(ids[0])
    key = attributes_key({"type": "wallet", "user_id": 7})
    assert wallet.account_id == key
    doc = await sharded.accounts.find_one({"_id": key})
    assert doc["user_id"] == 7
    assert "attributes_key" not in doc
    # Any spelling, a subset lookup, open_account: the same account.
    await sharded.increase({"user_id": Int64(7), "type": "wallet"}, 1)
    assert await sharded.balance({"user_id": 7.0, "type": "wallet"}) == -4
    assert await sharded.open_account({"user_id": 7}) == key
    with pytest.raises(InvalidAccount, match="min_balance"):
        await sharded.open_account({"user_id": 7, "type": "wallet"}, min_balance=0)
    assert await sharded.accounts.count_documents({}) == 2
    guarded = await sharded.open_account({"user_id": 8}, min_balance=0)
    assert guarded == attributes_key({"user_id": 8})
    with pytest.raises(InsufficientFunds):
        await sharded.decrease({"user_id": 8}, 1)
    assert (await sharded.verify()).ok


async def test_sharded_accounts_concurrent_creators_make_one(sharded: AsyncLedger) -> None:
    callers = 6
    hold_writes_until_all_looked_up(sharded, callers)  # every caller missed the lookup

    async def credit(n: int) -> None:
        await sharded.increase({"user_id": 9}, 1)

    await race(credit, callers)
    assert await sharded.accounts.count_documents({}) == 1
    assert await sharded.balance({"user_id": 9}) == callers
