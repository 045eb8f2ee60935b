"""Account identity: one account per attribute set, however its numbers are spelled.

MongoDB compares numbers by value across int32, int64, double and decimal128, so a query for
``{"user_id": 7}`` finds an account created with ``Int64(7)`` (what PyMongo returns for int64
values) or ``7.0``: the ledger's unique attribute digest must agree, or concurrent callers
mixing spellings create twin accounts that are ambiguous forever after.
"""

from __future__ import annotations

from typing import Any

import pytest
from bson import Decimal128, Int64

from mongoledger import AsyncLedger, InvalidAccount
from mongoledger._async._io import to_list
from tests._async.racing import hold_writes_until_all_looked_up, race

_IS_SYNC = False
SEVEN = [7, Int64(7), 7.0]


@pytest.fixture
async def ledger(async_db: Any) -> AsyncLedger:
    return AsyncLedger(async_db)


async def test_transfer_between_two_spellings_is_a_same_account_transfer(
    ledger: AsyncLedger,
) -> None:
    for a, b in ((1, 1.0), (1, Int64(1)), (Int64(1), 1.0), (0, -0.0)):
        with pytest.raises(InvalidAccount, match="to itself"):
            await ledger.transfer({"a": a}, {"a": b}, 5)
        with pytest.raises(InvalidAccount, match="to itself"):
            await ledger.transfer(a, b, 5)
    assert await to_list(ledger.accounts.find({})) == []
    assert await to_list(ledger.transactions.find({})) == []


async def test_hold_to_itself_is_refused_as_a_transfer_to_itself_is(ledger: AsyncLedger) -> None:
    """Transfers and holds name one account by the same rule: numbers by value, booleans
    apart from numbers."""
    for a, b in ((1, 1.0), (1, Int64(1)), (Int64(1), 1.0), (0, -0.0)):
        with pytest.raises(InvalidAccount, match="to itself"):
            await ledger.hold({"a": a}, {"a": b}, 5)
        with pytest.raises(InvalidAccount, match="to itself"):
            await ledger.hold(a, b, 5)
    assert await to_list(ledger.accounts.find({})) == []
    # True and 1 are two accounts to MongoDB: a hold between them is no hold to itself.
    await ledger.increase(1, 10)
    hold_id = await ledger.hold(1, True, 5)
    hold = await ledger.get_hold(hold_id)
    assert hold.from_account_id == 1
    assert hold.to_account_id is True
    assert await ledger.transfer(1, True, 1)


async def test_spellings_of_one_attribute_set_are_one_account(ledger: AsyncLedger) -> None:
    for spelling in [*SEVEN, Decimal128("7")]:
        await ledger.increase({"user_id": spelling, "type": "wallet"}, 1)
    accounts = await to_list(ledger.accounts.find({}))
    assert len(accounts) == 1
    assert accounts[0]["balance"] == 4
    assert await ledger.balance({"user_id": 7, "type": "wallet"}) == 4


async def test_post_legs_spelling_one_new_account_differently(ledger: AsyncLedger) -> None:
    ids = await ledger.post([({"u": 1}, 5), ({"u": 1.0}, 5), ("bank", -10)])
    accounts = await to_list(ledger.accounts.find({"u": {"$exists": True}}))
    assert len(accounts) == 1
    legs = [await ledger.get_transaction(i) for i in ids]
    assert legs[0].account_id == legs[1].account_id
    assert [leg.balance_after for leg in legs[:2]] == [5, 10]


async def test_concurrent_creators_mixing_spellings_make_one_account(
    ledger: AsyncLedger,
) -> None:
    """Every caller looks the account up (and misses) before any of them creates it."""
    await ledger.ensure_indexes()
    callers = 6
    hold_writes_until_all_looked_up(ledger, callers)

    async def credit(n: int) -> None:
        await ledger.increase({"user_id": SEVEN[n % len(SEVEN)]}, 1)

    await race(credit, callers)
    accounts = await to_list(ledger.accounts.find({}))
    assert len(accounts) == 1
    assert accounts[0]["balance"] == callers
