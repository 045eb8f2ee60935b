"""Two-phase transfers (holds) and currencies: SPEC's "Two-phase transfers" and "Currencies".

Every test runs on every engine (the sync twin adds plain mongomock, without DB transactions).
A hold's expiry is tested against a settable clock (``mongoledger._core.clock``), so no test
waits for time to pass.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from bson import Int64, ObjectId
from pymongo.errors import AutoReconnect

from mongoledger import (
    AccountNotFound,
    AfterWriteError,
    AlreadyReverted,
    AsyncLedger,
    CurrencyMismatch,
    Hold,
    HoldClosed,
    HoldExpired,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidAmount,
    InvalidArgument,
    InvalidConfiguration,
    InvalidData,
    LedgerError,
)
from mongoledger._async._io import sleep
from mongoledger._core import clock as ledger_clock
from mongoledger._core.config import LedgerConfig
from tests._async.stored import account_doc, hold_doc, holds_of, snapshot
from tests._async.test_watch import Recorder, drain, start_listener, stop_listener, wait_for

_IS_SYNC = False

WALLET = {"user_id": 1, "type": "wallet"}  # min_balance 0, funded with 100
SHOP = {"shop_id": 9}
OTHER = {"user_id": 2, "type": "wallet"}
BAD_AMOUNTS = [0, -5, True, 1.5, "10", None, 2**63]


class Clock:
    """The ledger's notion of now, settable (it replaces ``mongoledger._core.clock.utcnow``)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(ledger_clock, "utcnow", clock)
    return clock


@pytest.fixture
async def ledger(async_db: Any) -> AsyncLedger:
    ledger = AsyncLedger(async_db)
    await ledger.open_account(WALLET, min_balance=0)
    await ledger.increase(WALLET, 100)
    return ledger


# hold


async def test_hold_reserves_the_available_balance(ledger: AsyncLedger, engine: str) -> None:
    transactions = await ledger.transactions.count_documents({})
    hold_id = await ledger.hold(WALLET, SHOP, 60, {"order": 7})
    assert isinstance(hold_id, ObjectId)
    assert await ledger.balance(WALLET) == 100
    assert await ledger.available_balance(WALLET) == 40
    account = await ledger.get_account(WALLET)
    assert (account.balance, account.held, account.available) == (100, 60, 40)
    wallet = await account_doc(ledger, WALLET)
    assert wallet["held"] == 60
    if engine != "mongomock":  # plain mongomock's $inc stores a small result as a 32-bit int
        assert isinstance(wallet["held"], Int64)
    shop = await account_doc(ledger, SHOP)  # a new attribute set: the hold creates it
    doc = await hold_doc(ledger, hold_id)
    assert doc["from_account_id"] == wallet["_id"]
    assert doc["to_account_id"] == shop["_id"]
    assert (doc["amount"], doc["status"], doc["order"]) == (60, "pending", 7)
    assert "expires_at" not in doc
    assert await ledger.transactions.count_documents({}) == transactions  # nothing moved
    hold = await ledger.get_hold(hold_id)
    assert isinstance(hold, Hold)
    assert (hold.amount, hold.status, hold.data, hold.captured_amount) == (
        60,
        "pending",
        {"order": 7},
        None,
    )
    assert hold.created_at is not None
    assert hold.created_at.tzinfo is not None
    assert (await ledger.verify()).ok


async def test_balance_and_held_answer_from_one_read(ledger: AsyncLedger, async_db: Any) -> None:
    assert await ledger.balance_and_held(WALLET) == (100, 0)
    hold_id = await ledger.hold(WALLET, SHOP, 60)
    assert await ledger.balance_and_held(WALLET) == (100, 60)
    await ledger.capture(hold_id, 25)
    account = await ledger.get_account(WALLET)
    assert await ledger.balance_and_held(WALLET) == (account.balance, account.held) == (75, 0)
    assert await ledger.balance_and_held(SHOP) == (25, 0)
    with pytest.raises(AccountNotFound):
        await ledger.balance_and_held({"user_id": 404})
    # Without cached balances the balance is the sum of the amounts.
    summed = AsyncLedger(
        async_db,
        balance_field=None,
        accounts_collection="summed_accounts",
        transactions_collection="summed_transactions",
        idempotency_collection="summed_keys",
        holds_collection="summed_holds",
    )
    await summed.increase(WALLET, 50)
    await summed.hold(WALLET, SHOP, 20)
    assert await summed.balance_and_held(WALLET) == (50, 20)
    assert await summed.available_balance(WALLET) == 30


async def test_datetimes_in_a_holds_data_come_back_aware(ledger: AsyncLedger) -> None:
    """Decision 8: every datetime the library returns is timezone-aware UTC, extra data
    included (as a transaction's is)."""
    naive = datetime(2026, 6, 1, 9, 30)
    hold_id = await ledger.hold(WALLET, SHOP, 10, {"ordered_at": naive})
    await ledger.void(hold_id, {"cancelled_at": naive})
    hold = await ledger.get_hold(hold_id)
    expected = naive.replace(tzinfo=timezone.utc)
    assert hold.data["ordered_at"] == expected
    assert hold.data["ordered_at"].tzinfo is not None
    assert hold.void_data["cancelled_at"] == expected
    assert hold.void_data["cancelled_at"].tzinfo is not None


async def test_every_debit_checks_the_available_balance(ledger: AsyncLedger) -> None:
    topup = await ledger.increase(WALLET, 30)  # balance 130
    await ledger.hold(WALLET, SHOP, 60)
    await ledger.hold(WALLET, SHOP, 40)  # available 30
    before = await snapshot(ledger)
    refused = [
        lambda: ledger.decrease(WALLET, 31),
        lambda: ledger.increase(WALLET, -31),
        lambda: ledger.transfer(WALLET, OTHER, 31),
        lambda: ledger.post([(WALLET, -31), (OTHER, 31)]),
        lambda: ledger.hold(WALLET, OTHER, 31),
        lambda: ledger.revert(topup),  # takes 30 back: fine; see below
    ]
    for call in refused[:-1]:
        with pytest.raises(InsufficientFunds, match="available balance 30") as info:
            await call()
        assert (info.value.balance, info.value.held, info.value.available) == (130, 100, 30)
    assert await snapshot(ledger) == before
    await ledger.hold(WALLET, OTHER, 1)  # available 29: the revert of 30 is refused now
    with pytest.raises(InsufficientFunds):
        await refused[-1]()
    await ledger.decrease(WALLET, 29)  # exactly down to the floor
    assert await ledger.available_balance(WALLET) == 0
    assert (await ledger.verify()).ok


async def test_unguarded_accounts_may_hold_into_the_negative(ledger: AsyncLedger) -> None:
    await ledger.hold(OTHER, SHOP, 500)
    assert await ledger.available_balance(OTHER) == -500
    assert await ledger.balance(OTHER) == 0


async def test_hold_to_an_unknown_id_creates_nothing_until_the_capture(ledger: AsyncLedger) -> None:
    hold_id = await ledger.hold(WALLET, "shop-17", 10)
    assert await ledger.accounts.count_documents({"_id": "shop-17"}) == 0
    await ledger.capture(hold_id)
    assert await ledger.balance("shop-17") == 10


async def test_auto_create_off_refuses_unknown_targets(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, auto_create_account=False)
    wallet = await ledger.open_account(WALLET)
    await ledger.increase(wallet, 10)
    with pytest.raises(AccountNotFound, match="nobody"):
        await ledger.hold(wallet, "nobody", 5)
    with pytest.raises(AccountNotFound, match="shop_id"):
        await ledger.hold(wallet, SHOP, 5)
    with pytest.raises(AccountNotFound, match="ghost"):
        await ledger.hold("ghost", wallet, 5)
    assert await holds_of(ledger).count_documents({}) == 0


async def test_holds_without_a_cached_balance(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, balance_field=None)
    await ledger.increase(WALLET, 100)
    hold_id = await ledger.hold(WALLET, SHOP, 30)
    assert await ledger.available_balance(WALLET) == 70
    await ledger.capture(hold_id, 20)
    assert await ledger.balance(WALLET) == 80
    assert await ledger.available_balance(WALLET) == 80
    assert await ledger.balance(SHOP) == 20


# capture


async def test_capture_moves_the_whole_hold_by_default(ledger: AsyncLedger) -> None:
    hold_id = await ledger.hold(WALLET, SHOP, 60)
    ids = await ledger.capture(hold_id, data={"shipment": "S-1"})
    legs = [await ledger.get_transaction(i) for i in ids]
    wallet, shop = await account_doc(ledger, WALLET), await account_doc(ledger, SHOP)
    assert [t.amount for t in legs] == [-60, 60]
    assert [t.account_id for t in legs] == [wallet["_id"], shop["_id"]]
    assert [t.kind for t in legs] == ["capture", "capture"]
    assert [t.hold_id for t in legs] == [hold_id, hold_id]
    assert legs[0].extra_account_id == shop["_id"]
    assert legs[0].data == {"shipment": "S-1"}
    assert (wallet["balance"], wallet["held"], shop["balance"]) == (40, 0, 60)
    hold = await ledger.get_hold(hold_id)
    assert (hold.status, hold.captured_amount) == ("captured", 60)
    assert hold.operation_id == legs[0].operation_id
    assert hold.closed_at is not None
    assert (await ledger.verify()).ok


async def test_partial_capture_releases_the_rest(ledger: AsyncLedger) -> None:
    hold_id = await ledger.hold(WALLET, SHOP, 60)
    await ledger.capture(hold_id, 25)
    assert await ledger.balance(WALLET) == 75
    assert await ledger.available_balance(WALLET) == 75
    assert (await account_doc(ledger, WALLET))["held"] == 0
    assert (await ledger.get_hold(hold_id)).captured_amount == 25
    assert (await ledger.verify()).ok


async def test_capture_amount_must_be_within_the_hold(ledger: AsyncLedger) -> None:
    hold_id = await ledger.hold(WALLET, SHOP, 60)
    before = await snapshot(ledger)
    with pytest.raises(InvalidAmount, match=r"61 exceeds hold .* of 60"):
        await ledger.capture(hold_id, 61)
    for bad in BAD_AMOUNTS[:-2]:
        with pytest.raises(InvalidAmount, match=str(bad).replace(".", r"\.")):
            await ledger.capture(hold_id, bad)
    assert await snapshot(ledger) == before
    assert len(await ledger.capture(hold_id, 60)) == 2


async def test_a_hold_closes_exactly_once(ledger: AsyncLedger) -> None:
    captured = await ledger.hold(WALLET, SHOP, 10)
    voided = await ledger.hold(WALLET, SHOP, 10)
    await ledger.capture(captured)
    await ledger.void(voided)
    before = await snapshot(ledger)
    for hold_id, status in ((captured, "captured"), (voided, "voided")):
        for call in (lambda h=hold_id: ledger.capture(h), lambda h=hold_id: ledger.void(h)):
            with pytest.raises(HoldClosed, match=f"already {status}") as info:
                await call()
            assert info.value.status == status
            assert info.value.hold_id == hold_id
            assert not isinstance(info.value, HoldExpired)
    assert await snapshot(ledger) == before


async def test_revert_of_a_capture_leaves_the_hold_captured(ledger: AsyncLedger) -> None:
    hold_id = await ledger.hold(WALLET, SHOP, 60)
    ids = await ledger.capture(hold_id, 50)
    reversal = await ledger.revert(ids[1])
    assert isinstance(reversal, list)
    assert await ledger.balance(WALLET) == 100
    assert await ledger.balance(SHOP) == 0
    assert await ledger.available_balance(WALLET) == 100
    assert (await ledger.get_hold(hold_id)).status == "captured"
    assert [(await ledger.get_transaction(t)).hold_id for t in reversal] == [None, None]
    with pytest.raises(AlreadyReverted):
        await ledger.revert(ids[0])
    with pytest.raises(HoldClosed):
        await ledger.capture(hold_id)
    assert (await ledger.verify()).ok


# void


async def test_void_releases_the_whole_hold(ledger: AsyncLedger) -> None:
    hold_id = await ledger.hold(WALLET, SHOP, 60, {"order": 8})
    transactions = await ledger.transactions.count_documents({})
    assert await ledger.void(hold_id, {"reason": "cancelled"}) is None
    assert await ledger.available_balance(WALLET) == 100
    assert (await account_doc(ledger, WALLET))["held"] == 0
    hold = await ledger.get_hold(hold_id)
    assert (hold.status, hold.void_data, hold.data) == (
        "voided",
        {"reason": "cancelled"},
        {"order": 8},
    )
    assert await ledger.transactions.count_documents({}) == transactions
    assert (await ledger.verify()).ok


# expiry


async def test_an_expired_hold_cannot_close_even_before_the_sweep(
    ledger: AsyncLedger, clock: Clock
) -> None:
    hold_id = await ledger.hold(WALLET, SHOP, 60, expires_at=timedelta(minutes=10))
    assert (await ledger.get_hold(hold_id)).expires_at == clock.now + timedelta(minutes=10)
    clock.advance(minutes=9, seconds=59)
    await ledger.capture(hold_id, 1)  # still in time
    second = await ledger.hold(WALLET, SHOP, 60, expires_at=timedelta(minutes=10))
    clock.advance(minutes=10)  # at expires_at: expired
    before = await snapshot(ledger)
    for call in (lambda: ledger.capture(second), lambda: ledger.void(second)):
        with pytest.raises(HoldExpired, match="expired") as info:
            await call()
        assert isinstance(info.value, HoldClosed)
        assert info.value.expires_at == clock.now
    assert await snapshot(ledger) == before
    assert await ledger.available_balance(WALLET) == 39  # reserved until the sweep releases it
    assert await ledger.expire_holds() == 1
    assert await ledger.available_balance(WALLET) == 99
    hold = await ledger.get_hold(second)
    assert (hold.status, hold.closed_at) == ("expired", clock.now)
    with pytest.raises(HoldExpired):
        await ledger.capture(second)
    assert await ledger.expire_holds() == 0  # idempotent
    assert (await ledger.verify()).ok


async def test_expire_holds_works_in_batches(ledger: AsyncLedger, clock: Clock) -> None:
    start = clock.now
    await ledger.increase(WALLET, 900)
    for minutes in (1, 2, 3, 4, 5, 6, 7):
        await ledger.hold(WALLET, SHOP, 10, expires_at=timedelta(minutes=minutes))
    keep = await ledger.hold(WALLET, SHOP, 10)  # never expires
    assert await ledger.expire_holds(start + timedelta(minutes=5), batch_size=2) == 5
    assert await ledger.available_balance(WALLET) == 1000 - 30
    assert await ledger.expire_holds(start + timedelta(minutes=5), batch_size=2) == 0
    assert await ledger.expire_holds(start + timedelta(days=365), batch_size=1) == 2
    pending = await ledger.holds(WALLET)
    assert [h.id for h in pending] == [keep]
    assert len(await ledger.holds(WALLET, status="expired")) == 7
    assert (await ledger.verify()).ok


async def test_expire_holds_arguments(ledger: AsyncLedger) -> None:
    for now in ("2026-01-01", 1_700_000_000, date(2026, 1, 1)):
        with pytest.raises(InvalidArgument, match="now"):
            await ledger.expire_holds(now)  # type: ignore[arg-type]
    for size in (0, -1, True, 1.5):
        with pytest.raises(InvalidArgument, match="batch_size"):
            await ledger.expire_holds(batch_size=size)  # type: ignore[arg-type]
    for interval in (0, -1, math.nan, math.inf, True, "10"):
        # nan would loop without sleeping, inf never run a second round
        with pytest.raises(InvalidArgument, match="interval"):
            await ledger.sweep_holds(interval=interval)  # type: ignore[arg-type]


async def test_sweep_holds_releases_in_the_background_until_stopped(
    ledger: AsyncLedger, clock: Clock
) -> None:
    await ledger.hold(WALLET, SHOP, 60, expires_at=timedelta(seconds=30))
    clock.advance(seconds=31)
    if _IS_SYNC:
        stop: Any = threading.Event()
        runner = threading.Thread(
            target=ledger.sweep_holds, kwargs={"interval": 0.01, "stop": stop}
        )
        runner.start()
    else:
        stop = asyncio.Event()
        task = asyncio.ensure_future(ledger.sweep_holds(interval=0.01, stop=stop))
    deadline = time.monotonic() + 10
    while await ledger.available_balance(WALLET) != 100:
        assert time.monotonic() < deadline, "the sweep did not release the hold"
        await sleep(0.01)
    stop.set()
    if _IS_SYNC:
        runner.join(10)
        assert not runner.is_alive()
    else:
        await asyncio.wait_for(task, 10)
    assert (await ledger.holds(WALLET, status="expired"))[0].amount == 60


async def test_sweep_holds_reports_each_round_and_ends_when_the_report_raises(
    ledger: AsyncLedger, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.hold(WALLET, SHOP, 60, expires_at=timedelta(seconds=30))
    clock.advance(seconds=31)
    expire_holds = ledger.expire_holds
    failure = AutoReconnect("the database is unreachable")
    rounds: list[int] = []

    async def third_round_fails(**options: Any) -> int:
        rounds.append(1)
        if len(rounds) == 3:
            raise failure
        return await expire_holds(**options)

    monkeypatch.setattr(ledger, "expire_holds", third_round_fails)
    seen: list[Any] = []

    def report(outcome: Any) -> None:
        seen.append(outcome)
        if isinstance(outcome, Exception):
            raise outcome

    with pytest.raises(AutoReconnect):
        await ledger.sweep_holds(interval=0.01, report=report)
    assert seen == [1, 0, failure]  # what was released, then the error: not logged, not retried
    assert (await ledger.holds(WALLET, status="expired"))[0].amount == 60
    with pytest.raises(TypeError, match="report"):
        await ledger.sweep_holds(report="print")


async def test_expires_at_forms(ledger: AsyncLedger, clock: Clock) -> None:
    naive = datetime(2026, 6, 2, 8, 30, 0, 123456)
    aware = datetime(2026, 6, 2, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    expected = [
        (naive, datetime(2026, 6, 2, 8, 30, 0, 123000, tzinfo=timezone.utc)),
        (aware, datetime(2026, 6, 2, 8, 30, tzinfo=timezone.utc)),
        (timedelta(hours=1), clock.now + timedelta(hours=1)),
    ]
    for given, stored in expected:
        hold_id = await ledger.hold(WALLET, SHOP, 1, expires_at=given)
        assert (await ledger.get_hold(hold_id)).expires_at == stored


@pytest.mark.parametrize(
    ("expires_at", "shown"),
    [
        ("2030-01-01", "'2030-01-01'"),
        (1_900_000_000, "1900000000"),
        (date(2030, 1, 1), "datetime.date(2030, 1, 1)"),
        (True, "True"),
        (datetime(2020, 1, 1), "not in the future"),
        (timedelta(0), "positive"),
        (timedelta(seconds=-5), "positive"),
    ],
)
async def test_bad_expiry_values(ledger: AsyncLedger, expires_at: Any, shown: str) -> None:
    before = await snapshot(ledger)
    with pytest.raises(InvalidArgument, match="expires_at") as info:
        await ledger.hold(WALLET, SHOP, 10, expires_at=expires_at)
    assert shown in str(info.value)
    assert await snapshot(ledger) == before


# idempotency


async def test_idempotent_hold_and_capture(ledger: AsyncLedger) -> None:
    first = await ledger.hold(
        WALLET, SHOP, 20, {"order": 1}, expires_at=timedelta(hours=1), idempotency_key="auth-1"
    )
    before = await snapshot(ledger)
    again = await ledger.hold(
        WALLET, SHOP, 20, {"order": 1}, expires_at=timedelta(hours=1), idempotency_key="auth-1"
    )
    assert again == first
    assert await snapshot(ledger) == before
    assert (await ledger.get_hold(first)).idempotency_key == "auth-1"
    for other in (
        lambda: ledger.hold(WALLET, SHOP, 21, {"order": 1}, idempotency_key="auth-1"),
        lambda: ledger.hold(WALLET, OTHER, 20, {"order": 1}, idempotency_key="auth-1"),
        lambda: ledger.increase(WALLET, 20, idempotency_key="auth-1"),
        lambda: ledger.capture(first, idempotency_key="auth-1"),
    ):
        with pytest.raises(IdempotencyConflict, match="auth-1"):
            await other()
    assert await snapshot(ledger) == before

    ids = await ledger.capture(first, 15, idempotency_key="cap-1")
    settled = await snapshot(ledger)
    assert await ledger.capture(first, 15, idempotency_key="cap-1") == ids
    assert await snapshot(ledger) == settled
    with pytest.raises(IdempotencyConflict, match="cap-1"):
        await ledger.capture(first, 14, idempotency_key="cap-1")
    assert (await ledger.verify()).ok


# hooks


async def test_hooks_see_hold_capture_and_void(ledger: AsyncLedger) -> None:
    before: list[tuple[Any, ...]] = []
    after: list[tuple[Any, ...]] = []
    wallet = (await account_doc(ledger, WALLET))["_id"]

    @ledger.before_write
    def seen_before(ctx: Any) -> None:
        before.append((ctx.kind, ctx.account_id, ctx.amount, ctx.hold_id))
        if ctx.kind == "hold":
            ctx.data["checked"] = True

    @ledger.after_write
    def seen_after(ctx: Any) -> None:
        after.append((ctx.kind, ctx.account_id, ctx.amount, ctx.hold_id, ctx.transaction_id))

    first = await ledger.hold(WALLET, SHOP, 30)
    second = await ledger.hold(WALLET, SHOP, 20)
    ids = await ledger.capture(first, 25)
    await ledger.void(second)
    shop = (await account_doc(ledger, SHOP))["_id"]
    assert (await ledger.get_hold(first)).data == {"checked": True}
    assert before == [
        ("hold", wallet, 30, first),
        ("hold", wallet, 20, second),
        ("capture", wallet, -25, first),
        ("capture", shop, 25, first),
        ("void", wallet, 20, second),
    ]
    assert after == [
        ("hold", wallet, 30, first, None),
        ("hold", wallet, 20, second, None),
        ("capture", wallet, -25, first, ids[0]),
        ("capture", shop, 25, first, ids[1]),
        ("void", wallet, 20, second, None),
    ]


async def test_hooks_can_veto_or_resize_a_hold_and_not_resize_a_void(ledger: AsyncLedger) -> None:
    def rules(ctx: Any) -> None:
        if ctx.kind == "hold" and ctx.data.get("veto"):
            raise PermissionError("risk check failed")
        if ctx.kind == "hold" and ctx.data.get("half"):
            ctx.amount //= 2
        if ctx.kind == "void":
            ctx.amount = 1

    ledger.before_write(rules)
    before = await snapshot(ledger)
    with pytest.raises(PermissionError, match="risk"):
        await ledger.hold(WALLET, SHOP, 30, {"veto": True})
    assert await snapshot(ledger) == before
    halved = await ledger.hold(WALLET, SHOP, 30, {"half": True})
    assert (await ledger.get_hold(halved)).amount == 15
    assert await ledger.available_balance(WALLET) == 85
    with pytest.raises(InvalidAmount, match="void amounts are fixed"):
        await ledger.void(halved)
    assert (await ledger.get_hold(halved)).status == "pending"


async def test_a_failing_after_hook_reports_the_committed_hold(ledger: AsyncLedger) -> None:
    ledger.after_write(lambda ctx: 1 / 0)
    with pytest.raises(AfterWriteError) as info:
        await ledger.hold(WALLET, SHOP, 5)
    (hold_id,) = info.value.transaction_ids
    assert (await ledger.get_hold(hold_id)).status == "pending"


# hostile and malformed input


async def test_bad_hold_arguments_write_nothing(ledger: AsyncLedger) -> None:
    before = await snapshot(ledger)
    for amount in BAD_AMOUNTS:
        with pytest.raises(InvalidAmount, match="hold amount"):
            await ledger.hold(WALLET, SHOP, amount)
    cases: list[tuple[Any, type[Exception], str]] = [
        (lambda: ledger.hold(WALLET, WALLET, 5), InvalidAccount, "itself"),
        (lambda: ledger.hold({"user_id": {"$gt": 0}}, SHOP, 5), InvalidAccount, "$gt"),
        (lambda: ledger.hold(WALLET, {"a.b": 1}, 5), InvalidAccount, "a.b"),
        (lambda: ledger.hold(WALLET, None, 5), InvalidAccount, "None"),
        (lambda: ledger.hold(WALLET, SHOP, 5, {"status": "captured"}), InvalidData, "status"),
        (lambda: ledger.hold(WALLET, SHOP, 5, {"amount": 1}), InvalidData, "amount"),
        (lambda: ledger.hold(WALLET, SHOP, 5, {"$set": 1}), InvalidData, "$set"),
        (lambda: ledger.hold(WALLET, SHOP, 5, "note"), InvalidData, "note"),
        (lambda: ledger.hold(WALLET, SHOP, 5, idempotency_key=""), InvalidData, "idempotency_key"),
        (lambda: ledger.void(ObjectId(), {"$x": 1}), InvalidData, "$x"),
    ]
    for call, error, shown in cases:
        with pytest.raises(error) as info:
            await call()
        assert shown in str(info.value), info.value
    wallet = (await account_doc(ledger, WALLET))["_id"]
    with pytest.raises(InvalidAccount, match="both are account"):
        await ledger.hold(wallet, WALLET, 5)
    assert await snapshot(ledger) == before


async def test_unknown_malformed_and_foreign_hold_ids(ledger: AsyncLedger) -> None:
    transfer = await ledger.transfer(WALLET, OTHER, 5)
    elsewhere = AsyncLedger(ledger.database, holds_collection="other_holds")
    foreign = await elsewhere.hold(WALLET, SHOP, 5)  # someone else's ledger, same database
    before = await snapshot(ledger)
    unknown = ObjectId()
    for hold_id, shown in (
        (unknown, str(unknown)),
        (str(unknown), str(unknown)),
        (transfer[0], str(transfer[0])),
        (foreign, str(foreign)),
        ("nope", "'nope'"),
        (42, "42"),
        (None, "None"),
        ({"$ne": None}, "$ne"),
    ):
        for call in (ledger.capture, ledger.void, ledger.get_hold):
            with pytest.raises(HoldNotFound) as info:
                await call(hold_id)
            assert shown in str(info.value)
            assert isinstance(info.value, LookupError)
    assert await snapshot(ledger) == before
    assert (await elsewhere.get_hold(foreign)).status == "pending"


async def test_listing_holds(ledger: AsyncLedger, clock: Clock) -> None:
    first = await ledger.hold(WALLET, SHOP, 10)
    clock.advance(seconds=1)
    second = await ledger.hold(WALLET, OTHER, 20)
    clock.advance(seconds=1)
    incoming = await ledger.hold(OTHER, WALLET, 5)
    clock.advance(seconds=1)
    voided = await ledger.hold(WALLET, SHOP, 1)
    await ledger.void(voided)
    assert [h.id for h in await ledger.holds(WALLET)] == [incoming, second, first]
    assert [h.id for h in await ledger.holds(WALLET, limit=2)] == [incoming, second]
    assert [h.id for h in await ledger.holds(SHOP)] == [first]
    assert [h.id for h in await ledger.holds(WALLET, status="voided")] == [voided]
    assert [h.id for h in await ledger.holds(WALLET, status=None)] == [
        voided,
        incoming,
        second,
        first,
    ]
    assert [h.id for h in await ledger.holds(status=["voided", "pending"], limit=1)] == [voided]
    assert len(await ledger.holds()) == 3
    for bad in ("open", ["pending", "lost"], [], 5):
        with pytest.raises(InvalidArgument, match="status"):
            await ledger.holds(WALLET, status=bad)
    for limit in (0, -1, True, "5"):
        with pytest.raises(InvalidArgument, match="limit"):
            await ledger.holds(WALLET, limit=limit)  # type: ignore[arg-type]


async def test_listing_holds_of_an_unknown_account(ledger: AsyncLedger) -> None:
    with pytest.raises(AccountNotFound):
        await ledger.holds({"nobody": 1})
    assert await ledger.holds("no-such-id") == []


# verify


async def test_verify_finds_and_repairs_held_drift(ledger: AsyncLedger) -> None:
    await ledger.hold(WALLET, SHOP, 30)
    await ledger.hold(WALLET, SHOP, 20)
    wallet = (await account_doc(ledger, WALLET))["_id"]
    shop = (await account_doc(ledger, SHOP))["_id"]
    await ledger.accounts.update_one({"_id": wallet}, {"$inc": {"held": 7}})
    await ledger.accounts.update_one({"_id": shop}, {"$set": {"held": Int64(3)}})
    report = await ledger.verify()
    assert not report.ok
    assert report.holds_checked == 2
    found = {repr(m.account_id): (m.cached, m.calculated) for m in report.held_mismatches}
    assert found == {repr(wallet): (57, 50), repr(shop): (3, 0)}
    fixed = await ledger.verify(repair=True)
    assert sorted(map(repr, fixed.repaired_held)) == sorted([repr(wallet), repr(shop)])
    assert fixed.ok
    assert (await ledger.verify()).ok
    assert await ledger.available_balance(WALLET) == 50


@pytest.mark.parametrize("bad", [None, "30"])
async def test_a_held_changed_outside_the_ledger_is_refused_found_and_repaired(
    ledger: AsyncLedger, bad: Any
) -> None:
    """A ``held`` that is not an integer (null, a string) never lets a debit through the floor
    (null used to: the floor's sum with it is null, below every balance); the refusal names
    it, verify finds it, and its repair gives the floor back its meaning."""
    await ledger.hold(WALLET, SHOP, 30)
    wallet = (await account_doc(ledger, WALLET))["_id"]
    await ledger.accounts.update_one({"_id": wallet}, {"$set": {"held": bad}})
    before = await snapshot(ledger)
    for write in (
        lambda: ledger.decrease(WALLET, 500),
        lambda: ledger.transfer(WALLET, SHOP, 1),
        lambda: ledger.hold(WALLET, SHOP, 1),
    ):
        with pytest.raises(InvalidAccount, match=r"no integer 'held'.*verify"):
            await write()
    assert await snapshot(ledger) == before
    report = await ledger.verify()
    assert [(m.account_id, m.cached, m.calculated) for m in report.held_mismatches] == [
        (wallet, bad, 30)
    ]
    fixed = await ledger.verify(repair=True)
    assert fixed.repaired_held == [wallet]
    assert (await ledger.verify()).ok
    with pytest.raises(InsufficientFunds):
        await ledger.decrease(WALLET, 71)  # 100, 30 held: 70 available
    await ledger.decrease(WALLET, 70)


async def test_verify_reopens_a_captured_hold_whose_capture_never_posted(
    ledger: AsyncLedger,
) -> None:
    hold_id = await ledger.hold(WALLET, SHOP, 30)
    ghost = ObjectId()  # what a capture that died midway without a DB transaction leaves
    await holds_of(ledger).update_one(
        {"_id": hold_id}, {"$set": {"status": "captured", "operation_id": ghost}}
    )
    report = await ledger.verify()
    assert [b.hold_id for b in report.broken_holds] == [hold_id]
    assert report.held_mismatches  # held still reserves it, but it is no longer pending
    assert not report.ok
    fixed = await ledger.verify(repair=True)
    assert fixed.repaired_holds == [hold_id]
    assert fixed.repaired_held == []  # reopened first: held is right again
    assert fixed.ok
    assert (await ledger.get_hold(hold_id)).status == "pending"
    await ledger.capture(hold_id)
    assert (await ledger.verify()).ok


# currencies


EUR_1 = {"user_id": 1, "currency": "EUR"}
EUR_2 = {"user_id": 2, "currency": "EUR"}
USD_3 = {"user_id": 3, "currency": "USD"}


@pytest.fixture
async def fx(async_db: Any) -> AsyncLedger:
    ledger = AsyncLedger(async_db, currency_field="currency")
    for account in (EUR_1, EUR_2, USD_3):
        await ledger.increase(account, 100)
    return ledger


async def test_operations_never_mix_currencies(fx: AsyncLedger) -> None:
    before = await snapshot(fx)
    mixed = [
        lambda: fx.transfer(EUR_1, USD_3, 10),
        lambda: fx.transfer(USD_3, EUR_2, 10),
        lambda: fx.post([(EUR_1, -10), (EUR_2, 5), (USD_3, 5)]),
        lambda: fx.hold(EUR_1, USD_3, 10),
        lambda: fx.transfer(EUR_1, "house", 10),  # auto-created: no currency
        lambda: fx.hold(EUR_1, "house", 10),
        lambda: fx.transfer(EUR_1, {"user_id": 4, "currency": "GBP"}, 10),
    ]
    for call in mixed:
        with pytest.raises(CurrencyMismatch, match="currency mismatch") as info:
            await call()
        assert isinstance(info.value, InvalidAccount)
        assert "'EUR'" in str(info.value)
    assert await snapshot(fx) == before  # nothing written, no account created


async def test_same_currency_operations_carry_it(fx: AsyncLedger) -> None:
    ids = await fx.transfer(EUR_1, EUR_2, 10)
    legs = [await fx.get_transaction(i) for i in ids]
    assert [t.currency for t in legs] == ["EUR", "EUR"]
    doc = await fx.transactions.find_one({"_id": ids[0]})
    assert doc["currency"] == "EUR"
    hold_id = await fx.hold(EUR_1, EUR_2, 10)
    assert (await fx.get_hold(hold_id)).currency == "EUR"
    captured = await fx.capture(hold_id)
    assert (await fx.get_transaction(captured[0])).currency == "EUR"
    assert (await fx.get_account(USD_3)).currency == "USD"
    await fx.post([(EUR_1, -2), (EUR_2, 1), ({"user_id": 5, "currency": "EUR"}, 1)])
    assert (await fx.verify()).ok


async def test_reports_and_statistics_filter_by_currency(fx: AsyncLedger) -> None:
    await fx.transfer(EUR_1, EUR_2, 10)
    assert {a.id for a in await fx.report(currency="USD")} == {(await fx.get_account(USD_3)).id}
    assert {a.balance for a in await fx.report(currency="EUR")} == {90, 110}
    (usd,) = await fx.statistics(currency="USD")
    assert (usd.credit, usd.debit, usd.count) == (100, 0, 1)
    (eur,) = await fx.statistics(currency="EUR")
    assert (eur.credit, eur.debit, eur.count) == (210, 10, 4)
    assert await fx.statistics(currency="JPY") == []
    for bad in ({"$ne": "EUR"}, ["EUR"], True):
        with pytest.raises(InvalidArgument, match="currency"):
            await fx.report(currency=bad)
    plain = AsyncLedger(fx.database)
    with pytest.raises(InvalidArgument, match="currency_field"):
        await plain.report(currency="EUR")
    with pytest.raises(InvalidArgument, match="currency_field"):
        await plain.statistics(currency="EUR")


def test_currency_field_must_not_collide() -> None:
    for name in ("balance", "held", "min_balance", "amount", "status", "account_id", "$cur", "a.b"):
        with pytest.raises(InvalidConfiguration, match="currency_field"):
            LedgerConfig(currency_field=name)
    with pytest.raises(InvalidConfiguration, match="holds_collection"):
        LedgerConfig(holds_collection="")


async def test_errors_share_the_root(ledger: AsyncLedger) -> None:
    for error in (HoldNotFound, HoldClosed, HoldExpired, CurrencyMismatch):
        assert issubclass(error, LedgerError)
    with pytest.raises(LedgerError):
        await ledger.capture(ObjectId())


# change streams


@pytest.fixture
async def watched(ledger: AsyncLedger, engine: str) -> AsyncLedger:
    if engine == "mongomock":
        pytest.skip("plain mongomock has no change streams (see test_deployments.py)")
    await ledger.ensure_indexes()
    return ledger


async def test_every_step_of_a_hold_reaches_consumers(watched: AsyncLedger, clock: Clock) -> None:
    ledger = watched
    wallet = (await account_doc(ledger, WALLET))["_id"]
    async with await ledger.watch(max_await_time_ms=50) as stream:
        first = await ledger.hold(WALLET, SHOP, 60, {"order": 1}, expires_at=timedelta(hours=1))
        ids = await ledger.capture(first, 40, {"shipment": 2})
        second = await ledger.hold(WALLET, SHOP, 10)
        await ledger.void(second, {"reason": "cancelled"})
        third = await ledger.hold(WALLET, OTHER, 5, expires_at=timedelta(minutes=1))
        clock.advance(minutes=2)
        assert await ledger.expire_holds() == 1
        marker = await ledger.increase(WALLET, 1)
        events = await drain(stream, 7)
        assert await stream.try_next() is None
    shop = (await account_doc(ledger, SHOP))["_id"]
    assert [e.kind for e in events] == [
        "hold",
        "capture",
        "hold",
        "void",
        "hold",
        "expire",
        "increase",
    ]
    held, captured, _, voided, _, expired, increased = events
    assert (held.hold_id, held.operation_id, held.transactions) == (first, first, [])
    assert held.account_ids == [wallet, shop]
    assert held.hold is not None
    assert (held.hold.status, held.hold.amount, held.hold.data) == ("pending", 60, {"order": 1})
    assert [t.id for t in captured.transactions] == ids
    assert [t.amount for t in captured.transactions] == [-40, 40]
    assert captured.hold_id == first
    assert captured.hold is not None
    assert (captured.hold.status, captured.hold.captured_amount) == ("captured", 40)
    assert captured.operation_id == captured.hold.operation_id
    assert voided.hold is not None
    assert (voided.hold_id, voided.hold.void_data) == (second, {"reason": "cancelled"})
    assert voided.operation_id == voided.hold.operation_id
    assert expired.hold is not None
    assert (expired.hold_id, expired.hold.status) == (third, "expired")
    assert increased.transactions[0].id == marker
    assert len({e.operation_id for e in events}) == 7  # a natural key for idempotent handlers


async def test_hold_events_filter_by_kind_and_account(watched: AsyncLedger) -> None:
    ledger = watched
    await ledger.open_account(OTHER)
    by_kind = await ledger.watch(kinds=["void", "capture"], max_await_time_ms=50)
    by_account = await ledger.watch(accounts=[OTHER], max_await_time_ms=50)
    async with by_kind, by_account:
        mine = await ledger.hold(WALLET, SHOP, 10)
        theirs = await ledger.hold(WALLET, OTHER, 10)
        await ledger.void(mine)
        await ledger.capture(theirs)
        kinds = await drain(by_kind, 2)
        touching = await drain(by_account, 2)
        assert await by_kind.try_next() is None
        assert await by_account.try_next() is None
    assert [(e.kind, e.hold_id) for e in kinds] == [("void", mine), ("capture", theirs)]
    assert [(e.kind, e.hold_id) for e in touching] == [("hold", theirs), ("capture", theirs)]
    with pytest.raises(InvalidArgument, match="authorize"):
        await ledger.watch(kinds=["authorize"])


async def test_resuming_between_a_hold_and_its_capture(watched: AsyncLedger) -> None:
    ledger = watched
    async with await ledger.watch(max_await_time_ms=50) as stream:
        hold_id = await ledger.hold(WALLET, SHOP, 10)
        ids = await ledger.capture(hold_id)
        first, _ = await drain(stream, 2)
    async with await ledger.watch(resume_after=first.resume_token, max_await_time_ms=50) as again:
        (event,) = await drain(again, 1)
        assert await again.try_next() is None
    assert (event.kind, [t.id for t in event.transactions]) == ("capture", ids)
    assert event.hold is not None
    assert event.hold.status == "captured"


async def test_listen_delivers_hold_events(watched: AsyncLedger) -> None:
    ledger = watched
    recorder = Recorder()
    stop, runner = await start_listener(
        ledger, recorder, checkpoint="holds", kinds=["hold", "void"]
    )
    hold_id = await ledger.hold(WALLET, SHOP, 10)
    await ledger.void(hold_id)
    await wait_for(lambda: len(recorder.seen) == 2)
    await stop_listener(stop, runner)
    closed = (await ledger.get_hold(hold_id)).operation_id
    assert recorder.seen == [hold_id, closed]
