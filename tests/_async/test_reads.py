"""Reads: argument validation shared by both modes (cached balances or not), the same report
in both, default page sizes, and sums past int64 refused instead of truncated."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from bson import ObjectId

from mongoledger import AsyncLedger, InvalidAmount, InvalidArgument
from mongoledger._async import _reads as reads
from mongoledger._core.reads import HISTORY_PAGE, REPORT_PAGE

_IS_SYNC = False

INT64_MAX = 2**63 - 1


@pytest.fixture(params=["balance", None], ids=["cached", "no-balance-field"])
def ledger(async_db: Any, request: pytest.FixtureRequest) -> AsyncLedger:
    return AsyncLedger(async_db, balance_field=request.param)


BAD_PAGES = [
    ({"limit": 0}, "limit 0"),
    ({"limit": -2}, "limit -2"),
    ({"limit": True}, "limit True"),
    ({"limit": "3"}, "limit '3'"),
    ({"limit": 2.0}, "limit 2.0"),
]


@pytest.mark.parametrize(("kwargs", "shown"), BAD_PAGES)
async def test_bad_page_sizes(ledger: AsyncLedger, kwargs: dict[str, Any], shown: str) -> None:
    await ledger.increase("a", 5)
    with pytest.raises(InvalidArgument, match=shown):
        await ledger.history("a", **kwargs)
    with pytest.raises(InvalidArgument, match=shown):
        await ledger.report(**kwargs)


@pytest.mark.parametrize("before_seq", ["3", 0, -1, True, 1.5, ObjectId()])
async def test_bad_before_seq(ledger: AsyncLedger, before_seq: Any) -> None:
    await ledger.increase("a", 5)
    with pytest.raises(InvalidArgument, match="before_seq") as info:
        await ledger.history("a", before_seq=before_seq)
    assert repr(before_seq) in str(info.value)


@pytest.mark.parametrize("skip", [-1, "1", True, 1.0])
async def test_bad_skip(ledger: AsyncLedger, skip: Any) -> None:
    with pytest.raises(InvalidArgument, match="skip") as info:
        await ledger.report(skip=skip)
    assert repr(skip) in str(info.value)


@pytest.mark.parametrize("sort", ["name", "--id", "", 5, None, "-"])
async def test_bad_sorts(ledger: AsyncLedger, sort: Any) -> None:
    with pytest.raises(InvalidArgument, match="sort") as info:
        await ledger.report(sort=sort)
    assert repr(sort) in str(info.value)


async def test_history_and_report_return_one_page_by_default(
    ledger: AsyncLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (HISTORY_PAGE, REPORT_PAGE) == (100, 100)
    monkeypatch.setattr(reads, "HISTORY_PAGE", 3)
    monkeypatch.setattr(reads, "REPORT_PAGE", 2)
    for i in range(5):
        await ledger.increase("a", i + 1)
    await ledger.increase("b", 1)
    await ledger.increase("c", 1)
    rows = await ledger.history("a")
    assert [r.amount for r in rows] == [5, 4, 3]
    rest = await ledger.history("a", before_seq=rows[-1].account_seq)
    assert [r.amount for r in rest] == [2, 1]
    assert len(await ledger.report()) == 2
    assert len(await ledger.report(limit=10)) == 3


async def _populate(ledger: AsyncLedger) -> None:
    # _ids of several types: MongoDB orders numbers, then strings, then ObjectIds.
    for account, amount in ((7, 5), ("x", 5), (ObjectId(), 9), (-3, 2), ("a", -4), (2.5, 5)):
        await ledger.increase(account, amount)
    await ledger.open_account({"user_id": 1})  # no transactions: balance 0


SORTS = ["balance", "-balance", "id", "-id", "created_at", "-created_at"]


async def test_both_modes_give_the_same_report(async_db: Any) -> None:
    cached = AsyncLedger(async_db, accounts_collection="a1", transactions_collection="t1")
    computed = AsyncLedger(
        async_db, accounts_collection="a2", transactions_collection="t2", balance_field=None
    )
    for ledger in (cached, computed):
        await _populate(ledger)
    # The ObjectId account differs between the two: compare by position of its type.

    def shape(rows: list[Any]) -> list[tuple[Any, int]]:
        return [("oid" if isinstance(r.id, ObjectId) else r.id, r.balance) for r in rows]

    for sort in SORTS:
        if "created_at" in sort:  # creation times differ between the two ledgers
            continue
        for limit, skip in ((None, 0), (2, 0), (2, 2), (3, 5), (1, 7)):
            a = await cached.report(sort=sort, limit=limit, skip=skip)
            b = await computed.report(sort=sort, limit=limit, skip=skip)
            assert shape(a) == shape(b), (sort, limit, skip)
    ids = [r.id for r in await computed.report(sort="id")]
    assert ids[:5] == [-3, 2.5, 7, "a", "x"]
    assert isinstance(ids[5], ObjectId)
    by_balance = await computed.report(sort="-balance")
    assert [r.balance for r in by_balance] == [9, 5, 5, 5, 2, 0, -4]
    assert [r.id for r in by_balance][1:4] == [2.5, 7, "x"][::-1]  # ties: _id descending
    dated = await computed.report(sort="-created_at", limit=3)
    stamps = [r.created_at for r in dated]
    assert len(dated) == 3
    assert stamps == sorted(stamps, reverse=True)


async def test_sums_past_int64_are_refused_not_truncated(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, balance_field=None)  # no cached balance guards the sum
    await ledger.increase("a", INT64_MAX)
    await ledger.increase("a", INT64_MAX)
    for call in (
        lambda: ledger.balance("a"),
        lambda: ledger.calculate_balance("a"),
        lambda: ledger.balance_at("a", datetime(2100, 1, 1)),
        lambda: ledger.history("a"),
        lambda: ledger.get_account("a"),
        ledger.report,
        ledger.statistics,
    ):
        with pytest.raises(InvalidAmount, match="int64") as info:
            await call()
        assert str(2 * INT64_MAX) in str(info.value) or "e+19" in str(info.value)
