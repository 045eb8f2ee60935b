"""Hostile and malformed input: the named error, a message naming the value, nothing written."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal
from typing import Any

import pytest
from bson import ObjectId

from mongoledger import (
    AccountNotFound,
    AlreadyReverted,
    AsyncLedger,
    IdempotencyConflict,
    InvalidAccount,
    InvalidAmount,
    InvalidArgument,
    InvalidData,
    LedgerError,
    TransactionNotFound,
)
from tests._async.stored import snapshot

_IS_SYNC = False

INT64_MAX = 2**63 - 1
BAD_AMOUNTS = [
    (0, "0"),
    (True, "True"),
    (1.5, "1.5"),
    (math.nan, "nan"),
    (math.inf, "inf"),
    (Decimal("1"), "Decimal('1')"),
    ("10", "'10'"),
    (None, "None"),
    (2**63, str(2**63)),
    (-(2**63) - 1, str(-(2**63) - 1)),
    (-(2**63), str(-(2**63))),  # its negation (a decrease, a revert) is not an int64
]
BAD_ACCOUNTS = [
    ({"$where": "1"}, "$where"),
    ({"user_id": {"$gt": 0}}, "$gt"),
    ({"a.b": 1}, "a.b"),
    ({}, "{}"),
    (None, "None"),
    ([1, 2], "[1, 2]"),
    ({"user_id": [1, 2]}, "[1, 2]"),
    ({"user_id": None}, "None"),
    ({"balance": 5}, "balance"),
    ({1: "x"}, "1"),
    (2**64, str(2**64)),
]
BAD_DATA = [
    ({"amount": 5}, "amount"),
    ({"account_id": 5}, "account_id"),
    ({"operation_id": 1}, "operation_id"),
    ({"reverted_by": 1}, "reverted_by"),
    ({"$set": {"balance": 0}}, "$set"),
    ({"a.b": 1}, "a.b"),
    ({"nested": {"$gt": 1}}, "$gt"),
    ({"nested": [{"deep": {"x.y": 1}}]}, "x.y"),
    ({1: "x"}, "1"),
    ({"nested": {"deeper": {2: "x"}}}, "2"),
    ({"nested": [1, {"deeper": [{"$inc": 1}]}]}, "$inc"),
    ({"value": object()}, "object"),
    ({"value": 2**64}, "value"),
    ("not a mapping", "not a mapping"),
]


@pytest.fixture
async def ledger(async_db: Any) -> AsyncLedger:
    ledger = AsyncLedger(async_db)
    await ledger.increase({"user_id": 1}, 100)
    await ledger.increase({"user_id": 2}, 100)
    return ledger


@pytest.mark.parametrize(("amount", "shown"), BAD_AMOUNTS)
async def test_bad_amounts(ledger: AsyncLedger, amount: Any, shown: str) -> None:
    before = await snapshot(ledger)
    calls = [
        lambda: ledger.increase({"user_id": 1}, amount),
        lambda: ledger.decrease({"user_id": 1}, amount),
        lambda: ledger.transfer({"user_id": 1}, {"user_id": 2}, amount),
        lambda: ledger.post([({"user_id": 1}, amount), ({"user_id": 2}, 1)]),
    ]
    for call in calls:
        with pytest.raises(InvalidAmount) as info:
            await call()
        assert shown in str(info.value)
        assert isinstance(info.value, ValueError)
    assert await snapshot(ledger) == before


async def test_negative_transfer(ledger: AsyncLedger) -> None:
    before = await snapshot(ledger)
    with pytest.raises(InvalidAmount, match="-5"):
        await ledger.transfer({"user_id": 1}, {"user_id": 2}, -5)
    assert await snapshot(ledger) == before


async def test_balance_overflow(ledger: AsyncLedger) -> None:
    await ledger.increase("rich", INT64_MAX)
    before = await snapshot(ledger)
    with pytest.raises(InvalidAmount, match="overflow"):
        await ledger.increase("rich", 1)
    with pytest.raises(InvalidAmount, match="overflow"):
        await ledger.transfer({"user_id": 1}, "rich", 1)
    assert await snapshot(ledger) == before
    await ledger.increase("poor", -INT64_MAX)
    await ledger.increase("poor", -1)
    with pytest.raises(InvalidAmount, match="overflow"):
        await ledger.increase("poor", -1)


@pytest.mark.parametrize(("account", "shown"), BAD_ACCOUNTS)
async def test_bad_accounts(ledger: AsyncLedger, account: Any, shown: str) -> None:
    before = await snapshot(ledger)
    for call in (
        lambda: ledger.increase(account, 5),
        lambda: ledger.transfer(account, {"user_id": 2}, 5),
        lambda: ledger.balance(account),
    ):
        with pytest.raises(InvalidAccount) as info:
            await call()
        assert shown in str(info.value)
        assert isinstance(info.value, ValueError)
    assert await snapshot(ledger) == before


async def test_ambiguous_account(ledger: AsyncLedger) -> None:
    await ledger.increase({"user_id": 1, "type": "bonus"}, 5)
    before = await snapshot(ledger)
    with pytest.raises(InvalidAccount, match="ambiguous"):
        await ledger.transfer({"user_id": 1}, {"user_id": 2}, 5)
    assert await snapshot(ledger) == before


@pytest.mark.parametrize(("data", "shown"), BAD_DATA)
async def test_bad_data(ledger: AsyncLedger, data: Any, shown: str) -> None:
    before = await snapshot(ledger)
    tid = (await ledger.transactions.find_one({}))["_id"]
    for call in (
        lambda: ledger.increase({"user_id": 1}, 5, data),
        lambda: ledger.transfer({"user_id": 1}, {"user_id": 2}, 5, data),
        lambda: ledger.post([({"user_id": 1}, -5), ({"user_id": 2}, 5)], data),
        lambda: ledger.revert(tid, data),
    ):
        with pytest.raises(InvalidData) as info:
            await call()
        assert shown in str(info.value)
    assert await snapshot(ledger) == before


async def test_oversize_document(ledger: AsyncLedger) -> None:
    before = await snapshot(ledger)
    with pytest.raises(InvalidData, match="16711680-byte limit"):
        await ledger.increase({"user_id": 1}, 5, {"blob": "x" * (16 * 1024 * 1024)})
    assert await snapshot(ledger) == before


async def test_unknown_and_malformed_transaction_ids(ledger: AsyncLedger) -> None:
    before = await snapshot(ledger)
    for bad in (ObjectId(), "nope", 42, None, {"$gt": ""}, uuid.uuid4()):
        with pytest.raises(TransactionNotFound) as info:
            await ledger.revert(bad)
        assert isinstance(info.value, LookupError)
        with pytest.raises(TransactionNotFound):
            await ledger.get_transaction(bad)
    assert await snapshot(ledger) == before


async def test_same_account_transfer(ledger: AsyncLedger) -> None:
    before = await snapshot(ledger)
    with pytest.raises(InvalidAccount, match="user_id"):
        await ledger.transfer({"user_id": 1}, {"user_id": 1}, 5)
    with pytest.raises(InvalidAccount, match="'x'"):
        await ledger.transfer("x", "x", 5)
    assert await snapshot(ledger) == before


async def test_revert_twice(ledger: AsyncLedger) -> None:
    ids = await ledger.transfer({"user_id": 1}, {"user_id": 2}, 5)
    await ledger.revert(ids[0])
    before = await snapshot(ledger)
    for tid in ids:
        with pytest.raises(AlreadyReverted, match=str(tid)):
            await ledger.revert(tid)
    assert await snapshot(ledger) == before


async def test_idempotency_key_reuse(ledger: AsyncLedger) -> None:
    await ledger.increase({"user_id": 1}, 5, idempotency_key="k")
    before = await snapshot(ledger)
    with pytest.raises(IdempotencyConflict, match="'k'"):
        await ledger.increase({"user_id": 2}, 5, idempotency_key="k")
    with pytest.raises(IdempotencyConflict, match="'k'"):
        await ledger.transfer({"user_id": 1}, {"user_id": 2}, 5, idempotency_key="k")
    for bad in ("", 5, b"k"):
        with pytest.raises(InvalidData):
            await ledger.increase({"user_id": 1}, 5, idempotency_key=bad)
    assert await snapshot(ledger) == before


async def test_hook_that_raises_vetoes(ledger: AsyncLedger) -> None:
    class Veto(Exception):
        pass

    def veto(ctx: Any) -> None:
        if ctx.leg == 1:
            raise Veto(ctx.account)

    ledger.before_write(veto)
    before = await snapshot(ledger)
    with pytest.raises(Veto):
        await ledger.transfer({"user_id": 1}, {"user_id": 3}, 5)
    assert await snapshot(ledger) == before


async def test_hook_that_unbalances_is_refused(ledger: AsyncLedger) -> None:
    def skim(ctx: Any) -> None:
        if ctx.amount > 0:
            ctx.amount -= 1

    ledger.before_write(skim)
    before = await snapshot(ledger)
    with pytest.raises(InvalidAmount, match="sum to"):
        await ledger.transfer({"user_id": 1}, {"user_id": 2}, 5)
    with pytest.raises(InvalidAmount, match="before_write"):
        await ledger.increase({"user_id": 1}, 1)
    assert await snapshot(ledger) == before


async def test_hook_that_breaks_data_is_refused(ledger: AsyncLedger) -> None:
    ledger.before_write(lambda ctx: ctx.data.update({"$bad": 1}))
    before = await snapshot(ledger)
    with pytest.raises(InvalidData, match=r"\$bad"):
        await ledger.increase({"user_id": 1}, 1)
    assert await snapshot(ledger) == before


async def test_auto_create_off_unknown_id(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, auto_create_account=False)
    await ledger.open_account({"user_id": 1})
    before = await snapshot(ledger)
    with pytest.raises(AccountNotFound, match="'ghost'"):
        await ledger.transfer({"user_id": 1}, "ghost", 5)
    assert await snapshot(ledger) == before


async def test_errors_share_the_root(ledger: AsyncLedger) -> None:
    with pytest.raises(LedgerError):
        await ledger.increase({"user_id": 1}, 0)


async def test_same_account_by_attributes_and_id(ledger: AsyncLedger) -> None:
    account_id = (await ledger.get_account({"user_id": 1})).id
    before = await snapshot(ledger)
    with pytest.raises(InvalidAccount, match="both are account"):
        await ledger.transfer({"user_id": 1}, account_id, 5)
    assert await snapshot(ledger) == before


async def test_bad_query_arguments(ledger: AsyncLedger) -> None:
    for call, shown in (
        (lambda: ledger.history({"user_id": 1}, limit=0), "limit 0"),
        (lambda: ledger.report(sort="name"), "'name'"),
        (lambda: ledger.statistics(period="week"), "'week'"),
        (lambda: ledger.watch(kinds=["refund"]), "refund"),
    ):
        with pytest.raises(InvalidArgument, match=shown):
            await call()


async def test_regex_account_ids_are_refused(ledger: AsyncLedger) -> None:
    import re

    from bson import Regex

    before = await snapshot(ledger)
    for pattern in (re.compile(".*"), Regex(".*")):
        with pytest.raises(InvalidAccount, match="regular expression"):
            await ledger.increase(pattern, 5)
        with pytest.raises(InvalidAccount, match="regular expression"):
            await ledger.balance(pattern)
    assert await snapshot(ledger) == before
