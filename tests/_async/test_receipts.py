"""Receipts (``mongoledger._core.receipts``): inside ``recording()`` the transactions a write
inserted are kept exactly as a read returns them, so a caller can answer without reading."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from mongoledger import AsyncLedger
from mongoledger._core import receipts

_IS_SYNC = False


async def _as_read(ledger: AsyncLedger, ids: list[Any]) -> list[Any]:
    return [await ledger.get_transaction(i) for i in ids]


async def test_each_write_is_kept_as_a_read_returns_it(async_db: Any) -> None:
    ledger = AsyncLedger(async_db)
    shop = await ledger.open_account({"name": "shop"})
    when = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    data = {"order": ("A", 7), "at": when, "nested": {"n": 2**40}}
    writes = [
        lambda: ledger.increase("alice", 5_000, data),
        lambda: ledger.decrease("alice", 100, {"why": "fee"}),
        lambda: ledger.transfer("alice", shop, 700, {"note": "tea"}),
        lambda: ledger.post([("alice", -3), (shop, 1), ("bob", 2)]),
    ]
    for write in writes:
        with receipts.recording() as receipt:
            result = await write()
        ids = result if isinstance(result, list) else [result]
        assert receipt.transactions(ids) == await _as_read(ledger, ids)
    with receipts.recording() as receipt:
        reverted = await ledger.revert(ids[0])
        hold = await ledger.hold("alice", shop, 50)
        captured = await ledger.capture(hold, 20)
    written = [*reverted, *captured]
    assert receipt.transactions(written) == await _as_read(ledger, written)
    assert receipt.transactions([*written, ids[0]]) is None  # not written in this block


async def test_a_date_value_is_kept_as_stored(async_db: Any) -> None:
    fine = datetime(2026, 3, 1, 12, 0, 0, 999999)  # BSON keeps milliseconds
    ledger = AsyncLedger(async_db, date_value=lambda: fine)
    with receipts.recording() as receipt:
        tid = await ledger.increase("a", 1)
    (row,) = receipt.transactions([tid]) or []
    assert row == await ledger.get_transaction(tid)
    assert row.date.microsecond == 999000


async def test_nothing_is_kept_for_a_retry_or_outside_a_block(async_db: Any) -> None:
    ledger = AsyncLedger(async_db)
    first = await ledger.increase("a", 5, idempotency_key="k")  # outside: nothing kept
    with receipts.recording() as receipt:
        again = await ledger.increase("a", 5, idempotency_key="k")  # answered, not written
        assert again == first
        assert receipt.transactions([first]) is None
        assert receipt.transactions([]) is None
    with receipts.recording() as outer:
        tid = await ledger.increase("b", 1)
        with receipts.recording() as inner:
            pass
    assert outer.transactions([tid]) is not None
    assert inner.transactions([tid]) is None
