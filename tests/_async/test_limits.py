"""The edges of what MongoDB can store: int64 amounts and balances, the 16 MiB document.

Whatever the ledger accepts it can also revert and deliver on the change stream; whatever it
refuses is refused with the ledger's own error, before anything is written, on every engine.
"""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson import Int64, ObjectId

from mongoledger import AsyncLedger, InvalidAmount, InvalidData
from mongoledger._core.schema import HEADROOM, MAX_BSON_SIZE, MAX_DOCUMENT_SIZE
from tests._async.stored import snapshot

_IS_SYNC = False
INT64_MIN = -(2**63)


@pytest.fixture
async def ledger(async_db: Any) -> AsyncLedger:
    ledger = AsyncLedger(async_db)
    await ledger.increase("a", 100)
    return ledger


async def test_int64_min_is_not_an_amount(ledger: AsyncLedger) -> None:
    """-2**63 has no negation in int64: accepted, it could never be reverted (nor decreased)."""
    before = await snapshot(ledger)
    for call in (
        lambda: ledger.increase("a", INT64_MIN),
        lambda: ledger.decrease("a", INT64_MIN),
        lambda: ledger.post([("a", INT64_MIN), ("b", INT64_MIN)]),
    ):
        with pytest.raises(InvalidAmount, match=str(INT64_MIN)):
            await call()
    assert await snapshot(ledger) == before
    await ledger.increase("b", INT64_MIN + 1)  # the most negative amount there is
    await ledger.decrease("c", INT64_MIN + 1)
    assert await ledger.balance("c") == 2**63 - 1


async def test_revert_of_an_unnegatable_amount_is_invalid(ledger: AsyncLedger) -> None:
    """A transaction of -2**63 written by hand (or by an earlier version) cannot be reverted."""
    await ledger.accounts.update_one({"_id": "a"}, {"$set": {"balance": Int64(INT64_MIN)}})
    tid = ObjectId()
    await ledger.transactions.insert_one(
        {
            "_id": tid,
            "account_id": "a",
            "amount": Int64(INT64_MIN),
            "operation_id": ObjectId(),
            "kind": "increase",
            "leg": 0,
            "legs": 1,
        }
    )
    before = await snapshot(ledger)
    with pytest.raises(InvalidAmount, match="negation"):
        await ledger.revert(tid)
    assert await snapshot(ledger) == before


async def test_largest_transaction_can_be_reverted(ledger: AsyncLedger) -> None:
    """The ledger keeps room in every document it writes for its revert mark."""
    probe = await ledger.increase("big", 1, {"blob": ""})
    base = len(bson.encode(await ledger.transactions.find_one({"_id": probe})))
    blob = "x" * (MAX_DOCUMENT_SIZE - base)  # a document of exactly the ledger's limit
    before = await snapshot(ledger)
    with pytest.raises(InvalidData, match=f"{MAX_DOCUMENT_SIZE}-byte limit"):
        await ledger.increase("big", 1, {"blob": blob + "x"})
    assert await snapshot(ledger) == before
    tid = await ledger.increase("big", 1, {"blob": blob})
    doc = await ledger.transactions.find_one({"_id": tid})
    assert len(bson.encode(doc)) == MAX_DOCUMENT_SIZE
    reversal = await ledger.revert(tid)
    marked = await ledger.transactions.find_one({"_id": tid})
    assert marked["reverted_by"] == reversal
    assert len(bson.encode(marked)) < MAX_BSON_SIZE - HEADROOM + 64
    assert await ledger.balance("big") == 1


async def test_revert_of_a_document_with_no_room_is_invalid(ledger: AsyncLedger) -> None:
    """A transaction stored at the server's limit (written before the headroom) is refused
    with the ledger's error: marking it would take it over 16 MiB."""
    tid = ObjectId()
    doc = {
        "_id": tid,
        "account_id": "a",
        "amount": Int64(1),
        "operation_id": ObjectId(),
        "kind": "increase",
        "leg": 0,
        "legs": 1,
        "blob": "",
    }
    doc["blob"] = "x" * (MAX_BSON_SIZE - len(bson.encode(doc)) - 8)
    await ledger.transactions.insert_one(doc)
    before = await snapshot(ledger)
    with pytest.raises(InvalidData, match="reverted_by"):
        await ledger.revert(tid)
    assert await snapshot(ledger) == before


async def test_oversize_attribute_set(ledger: AsyncLedger) -> None:
    """Checked by the ledger, so every engine refuses it the same way."""
    before = await snapshot(ledger)
    huge = {"name": "x" * MAX_BSON_SIZE}
    for call in (
        lambda: ledger.increase(huge, 5),
        lambda: ledger.transfer("a", huge, 5),
        lambda: ledger.open_account(huge),
        lambda: ledger.balance(huge),
    ):
        with pytest.raises(InvalidData, match="attribute set"):
            await call()
    assert await snapshot(ledger) == before
