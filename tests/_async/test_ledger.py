"""The ledger's behaviour: yii2tech/balance's suite ported, Drupal Balance Tracker's, SPEC rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId

from mongoledger import (
    AccountNotFound,
    AfterWriteError,
    AlreadyReverted,
    AsyncLedger,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidAmount,
    TransactionNotFound,
)

_IS_SYNC = False

ALICE = {"user_id": 1, "type": "wallet"}
BOB = {"user_id": 2, "type": "wallet"}


class Clock:
    """A settable ``date_value``."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def ledger(async_db: Any) -> AsyncLedger:
    return AsyncLedger(async_db)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dated(async_db: Any, clock: Clock) -> AsyncLedger:
    return AsyncLedger(async_db, date_value=clock)


async def _tx(ledger: AsyncLedger, tid: Any) -> dict[str, Any]:
    doc = await ledger.transactions.find_one({"_id": tid})
    assert doc is not None
    return dict(doc)


async def _account(ledger: AsyncLedger, attributes: dict[str, Any]) -> dict[str, Any]:
    doc = await ledger.accounts.find_one(attributes)
    assert doc is not None
    return dict(doc)


# yii2tech/balance ManagerTestCase, ported


async def test_increase(ledger: AsyncLedger) -> None:
    tid = await ledger.increase(ALICE, 50)
    doc = await _tx(ledger, tid)
    assert doc["amount"] == 50
    assert doc["kind"] == "increase"
    assert doc["account_id"] == (await _account(ledger, ALICE))["_id"]


async def test_increase_with_extra_data(ledger: AsyncLedger) -> None:
    tid = await ledger.increase(ALICE, 50, {"extra": "custom"})
    assert (await _tx(ledger, tid))["extra"] == "custom"
    assert (await ledger.get_transaction(tid)).data == {"extra": "custom"}


async def test_decrease(ledger: AsyncLedger) -> None:
    tid = await ledger.decrease(ALICE, 50)
    doc = await _tx(ledger, tid)
    assert doc["amount"] == -50
    assert doc["kind"] == "decrease"
    assert await ledger.balance(ALICE) == -50


async def test_transfer(ledger: AsyncLedger) -> None:
    from_id, to_id = await ledger.transfer(ALICE, BOB, 100)
    assert (await _tx(ledger, from_id))["amount"] == -100
    assert (await _tx(ledger, to_id))["amount"] == 100
    assert await ledger.balance(ALICE) == -100
    assert await ledger.balance(BOB) == 100
    from_doc, to_doc = await _tx(ledger, from_id), await _tx(ledger, to_id)
    assert from_doc["operation_id"] == to_doc["operation_id"]
    assert (from_doc["leg"], to_doc["leg"], from_doc["legs"]) == (0, 1, 2)


async def test_transfer_extra_data_on_both_legs(ledger: AsyncLedger) -> None:
    ids = await ledger.transfer(ALICE, BOB, 100, {"extra": "custom"})
    for tid in ids:
        assert (await _tx(ledger, tid))["extra"] == "custom"


async def test_date_value_default_is_now_utc(ledger: AsyncLedger) -> None:
    before = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=1)
    tid = await ledger.increase(ALICE, 10)
    date = (await _tx(ledger, tid))["date"]
    assert before <= date.replace(tzinfo=None) <= before + timedelta(seconds=61)


async def test_date_value_callable_evaluated_once_per_operation(async_db: Any) -> None:
    calls = []

    def stamp() -> datetime:
        calls.append(1)
        return datetime(2020, 1, 1, 0, 0, len(calls))

    ledger = AsyncLedger(async_db, date_value=stamp)
    ids = await ledger.transfer(ALICE, BOB, 5)
    dates = {(await _tx(ledger, tid))["date"].replace(tzinfo=None) for tid in ids}
    assert dates == {datetime(2020, 1, 1, 0, 0, 1)}
    assert len(calls) == 1


async def test_date_value_fixed(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, date_value="2020-01-01")
    tid = await ledger.increase(ALICE, 5)
    assert (await _tx(ledger, tid))["date"] == "2020-01-01"


async def test_auto_create_account(ledger: AsyncLedger) -> None:
    await ledger.increase({"user_id": 9}, 5)
    doc = await _account(ledger, {"user_id": 9})
    assert doc["balance"] == 5
    assert ledger.accounts is not None
    assert await ledger.accounts.count_documents({}) == 1


async def test_auto_create_off_raises_and_writes_nothing(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, auto_create_account=False)
    with pytest.raises(AccountNotFound, match="user_id"):
        await ledger.increase({"user_id": 9}, 5)
    with pytest.raises(AccountNotFound, match="'nope'"):
        await ledger.increase("nope", 5)
    assert await ledger.accounts.count_documents({}) == 0
    assert await ledger.transactions.count_documents({}) == 0
    account = await ledger.open_account({"user_id": 9})
    await ledger.increase({"user_id": 9}, 5)
    assert await ledger.balance(account) == 5


async def test_balance_attribute_updated(ledger: AsyncLedger) -> None:
    await ledger.increase(ALICE, 50)
    await ledger.increase(ALICE, 25)
    assert (await _account(ledger, ALICE))["balance"] == 75


async def test_balance_attribute_off(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, balance_field=None)
    await ledger.increase(ALICE, 50)
    await ledger.decrease(ALICE, 20)
    assert "balance" not in await _account(ledger, ALICE)
    assert await ledger.balance(ALICE) == 30
    rows = await ledger.history(ALICE)
    assert [r.balance_after for r in rows] == [30, 50]
    assert [a.balance for a in await ledger.report()] == [30]


async def test_extra_account_link_on_both_legs(ledger: AsyncLedger) -> None:
    from_id, to_id = await ledger.transfer(ALICE, BOB, 10)
    alice = (await _account(ledger, ALICE))["_id"]
    bob = (await _account(ledger, BOB))["_id"]
    assert (await _tx(ledger, from_id))["extra_account_id"] == bob
    assert (await _tx(ledger, to_id))["extra_account_id"] == alice


async def test_extra_account_link_off(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, extra_account_link_field=None)
    from_id, _ = await ledger.transfer(ALICE, BOB, 10)
    assert "extra_account_id" not in await _tx(ledger, from_id)


async def test_revert_increase(ledger: AsyncLedger) -> None:
    tid = await ledger.increase(ALICE, 50)
    rid = await ledger.revert(tid)
    assert isinstance(rid, ObjectId)
    assert await ledger.balance(ALICE) == 0
    reversal = await _tx(ledger, rid)
    assert reversal["amount"] == -50
    assert reversal["reverts"] == tid
    assert reversal["kind"] == "revert"
    assert (await _tx(ledger, tid))["reverted_by"] == rid


async def test_revert_transfer_leg_restores_both_balances(ledger: AsyncLedger) -> None:
    await ledger.increase(ALICE, 100)
    from_id, to_id = await ledger.transfer(ALICE, BOB, 30)
    ids = await ledger.revert(to_id)
    assert isinstance(ids, list)
    assert len(ids) == 2
    assert await ledger.balance(ALICE) == 100
    assert await ledger.balance(BOB) == 0
    assert (await _tx(ledger, from_id))["reverted_by"] == ids[0]
    assert (await _tx(ledger, to_id))["reverted_by"] == ids[1]
    assert (await _tx(ledger, ids[0]))["amount"] == 30
    assert (await _tx(ledger, ids[1]))["amount"] == -30


async def test_calculate_balance(ledger: AsyncLedger) -> None:
    await ledger.increase(ALICE, 50)
    await ledger.increase(ALICE, 25)
    await ledger.decrease(ALICE, 5)
    assert await ledger.calculate_balance(ALICE) == 70


async def test_before_write_changes_data(ledger: AsyncLedger) -> None:
    @ledger.before_write
    def tag(ctx: Any) -> None:
        ctx.data["extra"] = "event"

    tid = await ledger.increase(ALICE, 5)
    assert (await _tx(ledger, tid))["extra"] == "event"


async def test_after_write_receives_new_id(ledger: AsyncLedger) -> None:
    seen: list[Any] = []
    ledger.after_write(lambda ctx: seen.append((ctx.transaction_id, ctx.balance_after)))
    tid = await ledger.increase(ALICE, 5)
    assert seen == [(tid, 5)]


# Drupal Balance Tracker


async def test_credit_and_debit_with_message(ledger: AsyncLedger) -> None:
    await ledger.increase({"uid": 3}, 1000, {"message": "Initial credit"})
    await ledger.decrease({"uid": 3}, 250, {"message": "Bought a widget"})
    rows = await ledger.history({"uid": 3})
    assert [(r.amount, r.data["message"]) for r in rows] == [
        (-250, "Bought a widget"),
        (1000, "Initial credit"),
    ]


async def test_balance_sheet_running_balance(ledger: AsyncLedger) -> None:
    for amount in (100, -30, 50, -20):
        await ledger.increase(ALICE, amount)
    rows = await ledger.history(ALICE)
    assert [r.amount for r in rows] == [-20, 50, -30, 100]
    assert [r.balance_after for r in rows] == [100, 120, 70, 100]
    assert [r.account_seq for r in rows] == [4, 3, 2, 1]
    page = await ledger.history(ALICE, limit=2)
    rest = await ledger.history(ALICE, limit=2, before_seq=page[-1].account_seq)
    assert [r.id for r in page + rest] == [r.id for r in rows]


async def test_all_balances_report(ledger: AsyncLedger) -> None:
    await ledger.increase(ALICE, 10)
    await ledger.increase(BOB, 30)
    await ledger.increase({"user_id": 3}, 20)
    report = await ledger.report()
    assert [(a.attributes, a.balance) for a in report] == [
        (BOB, 30),
        ({"user_id": 3}, 20),
        (ALICE, 10),
    ]
    ascending = await ledger.report(sort="balance", limit=2)
    assert [a.balance for a in ascending] == [10, 20]
    wallets = await ledger.report(attributes={"type": "wallet"})
    assert {a.balance for a in wallets} == {10, 30}


# SPEC rows


async def test_post_multi_leg(ledger: AsyncLedger) -> None:
    legs = [(ALICE, -100), (BOB, 70), ({"user_id": 3}, 20), ({"user_id": 4}, 10)]
    ids = await ledger.post(legs, {"memo": "split"})
    assert len(ids) == 4
    docs = [await _tx(ledger, tid) for tid in ids]
    assert [d["amount"] for d in docs] == [-100, 70, 20, 10]
    assert len({d["operation_id"] for d in docs}) == 1
    assert all("extra_account_id" not in d for d in docs)  # Decision 11
    assert all(d["memo"] == "split" for d in docs)
    assert await ledger.balance({"user_id": 3}) == 20


async def test_post_unbalanced_writes_nothing(ledger: AsyncLedger) -> None:
    with pytest.raises(InvalidAmount, match="sum to 5"):
        await ledger.post([(ALICE, -10), (BOB, 15)])
    assert await ledger.transactions.count_documents({}) == 0


async def test_two_leg_post_links_counterparts(ledger: AsyncLedger) -> None:
    a, b = await ledger.post([(ALICE, -5), (BOB, 5)])
    assert (await _tx(ledger, a))["extra_account_id"] == (await _tx(ledger, b))["account_id"]


async def test_post_leg_data(ledger: AsyncLedger) -> None:
    a, b = await ledger.post([(ALICE, -5, {"side": "out"}), (BOB, 5)], {"memo": "m"})
    assert (await ledger.get_transaction(a)).data == {"memo": "m", "side": "out"}
    assert (await ledger.get_transaction(b)).data == {"memo": "m"}


async def test_revert_twice_raises(ledger: AsyncLedger) -> None:
    tid = await ledger.increase(ALICE, 5)
    await ledger.revert(tid)
    with pytest.raises(AlreadyReverted, match=str(tid)):
        await ledger.revert(tid)
    assert await ledger.balance(ALICE) == 0


async def test_revert_of_reversal_reapplies(ledger: AsyncLedger) -> None:
    tid = await ledger.increase(ALICE, 5)
    rid = await ledger.revert(tid)
    again = await ledger.revert(rid)
    assert await ledger.balance(ALICE) == 5
    assert (await _tx(ledger, again))["reverts"] == rid
    assert (await ledger.verify()).ok


async def test_revert_unknown_raises(ledger: AsyncLedger) -> None:
    missing = ObjectId()
    with pytest.raises(TransactionNotFound, match=str(missing)):
        await ledger.revert(missing)
    with pytest.raises(TransactionNotFound, match="xyz"):
        await ledger.revert("xyz")


async def test_revert_respects_min_balance(ledger: AsyncLedger) -> None:
    account = await ledger.open_account({"user_id": 5}, min_balance=0)
    tid = await ledger.increase(account, 100)
    await ledger.decrease(account, 60)
    with pytest.raises(InsufficientFunds):
        await ledger.revert(tid)
    assert await ledger.balance(account) == 40
    assert (await ledger.get_transaction(tid)).reverted_by is None


async def test_min_balance_guard(ledger: AsyncLedger) -> None:
    account = await ledger.open_account({"user_id": 5}, min_balance=0)
    await ledger.increase(account, 100)
    with pytest.raises(InsufficientFunds, match="below its min_balance 0"):
        await ledger.transfer(account, BOB, 101)
    assert await ledger.balance(account) == 100
    assert await ledger.accounts.count_documents({"user_id": 2}) == 0  # Decision 2
    assert await ledger.transactions.count_documents({}) == 1
    await ledger.transfer(account, BOB, 100)
    assert await ledger.balance(account) == 0


async def test_min_balance_guard_on_post_with_repeated_account(ledger: AsyncLedger) -> None:
    account = await ledger.open_account({"user_id": 5}, min_balance=0)
    await ledger.increase(account, 10)
    with pytest.raises(InsufficientFunds):
        await ledger.post([(account, -6), (account, -6), (BOB, 12)])
    assert await ledger.balance(account) == 10


async def test_open_account_is_get_or_create(ledger: AsyncLedger) -> None:
    first = await ledger.open_account(ALICE, min_balance=0)
    assert await ledger.open_account(ALICE, min_balance=0) == first
    # Decision 5: without min_balance it returns the account, whatever its floor; only a
    # different explicit floor is an error.
    assert await ledger.open_account(ALICE) == first
    with pytest.raises(InvalidAccount, match="min_balance 0, not 5"):
        await ledger.open_account(ALICE, min_balance=5)
    model = await ledger.get_account(first)
    assert model.attributes == ALICE
    assert model.min_balance == 0
    assert model.balance == 0
    assert model.created_at is not None
    assert await ledger.open_account() != await ledger.open_account()


async def test_account_by_id_used_as_is(ledger: AsyncLedger) -> None:
    await ledger.increase("acct-1", 5)
    await ledger.increase(7, 6)
    assert await ledger.balance("acct-1") == 5
    assert await ledger.balance(7) == 6
    with pytest.raises(AccountNotFound):
        await ledger.balance("7")


async def test_attribute_lookup_ignores_other_fields_and_detects_ambiguity(
    ledger: AsyncLedger,
) -> None:
    await ledger.increase({"user_id": 1, "type": "wallet"}, 5)
    assert await ledger.balance({"user_id": 1}) == 5
    await ledger.increase({"user_id": 1, "type": "bonus"}, 5)
    with pytest.raises(InvalidAccount, match="ambiguous"):
        await ledger.balance({"user_id": 1})
    with pytest.raises(InvalidAccount, match="ambiguous"):
        await ledger.increase({"user_id": 1}, 1)


async def test_reads_never_create(ledger: AsyncLedger) -> None:
    for call in (ledger.balance, ledger.calculate_balance, ledger.history, ledger.get_account):
        with pytest.raises(AccountNotFound):
            await call({"user_id": 404})
    assert await ledger.accounts.count_documents({}) == 0


async def test_balance_at(dated: AsyncLedger, clock: Clock) -> None:
    ledger = dated
    t1, t2, t3 = (datetime(2026, 1, d) for d in (1, 2, 3))
    for when, amount in ((t1, 10), (t2, 20), (t3, 30)):
        clock.now = when
        await ledger.increase(ALICE, amount)
    assert await ledger.balance_at(ALICE, datetime(2025, 12, 31)) == 0
    assert await ledger.balance_at(ALICE, t1) == 10
    assert await ledger.balance_at(ALICE, t2 + timedelta(hours=1)) == 30
    assert await ledger.balance_at(ALICE, t3) == 60


async def test_history_date_range(dated: AsyncLedger, clock: Clock) -> None:
    ledger = dated
    for day, amount in ((1, 10), (2, 20), (3, 30)):
        clock.now = datetime(2026, 1, day)
        await ledger.increase(ALICE, amount)
    rows = await ledger.history(ALICE, start=datetime(2026, 1, 2), end=datetime(2026, 1, 2))
    assert [(r.amount, r.balance_after) for r in rows] == [(20, 30)]


async def test_statistics_per_month_and_day(dated: AsyncLedger, clock: Clock) -> None:
    ledger = dated
    for when, amount in (
        (datetime(2026, 1, 5), 100),
        (datetime(2026, 1, 20), -30),
        (datetime(2026, 2, 1), 50),
    ):
        clock.now = when
        await ledger.increase(ALICE, amount)
    months = await ledger.statistics(ALICE)
    assert [(s.period, s.credit, s.debit, s.net, s.count) for s in months] == [
        ("2026-01", 100, 30, 70, 2),
        ("2026-02", 50, 0, 50, 1),
    ]
    days = await ledger.statistics(period="day", start=datetime(2026, 1, 10))
    assert [s.period for s in days] == ["2026-01-20", "2026-02-01"]


async def test_idempotency_key_returns_first_ids(ledger: AsyncLedger) -> None:
    first = await ledger.transfer(ALICE, BOB, 10, idempotency_key="order-1")
    again = await ledger.transfer(ALICE, BOB, 10, idempotency_key="order-1")
    assert again == first
    assert await ledger.transactions.count_documents({}) == 2
    assert await ledger.balance(BOB) == 10
    with pytest.raises(IdempotencyConflict, match="order-1"):
        await ledger.transfer(ALICE, BOB, 11, idempotency_key="order-1")
    one = await ledger.increase(ALICE, 1, idempotency_key="k2")
    assert await ledger.increase(ALICE, 1, idempotency_key="k2") == one
    with pytest.raises(IdempotencyConflict):
        await ledger.increase(ALICE, 1, {"x": 1}, idempotency_key="k2")


async def test_idempotent_retry_succeeds_even_if_it_would_now_overdraw(ledger: AsyncLedger) -> None:
    account = await ledger.open_account({"user_id": 5}, min_balance=0)
    await ledger.increase(account, 10)
    first = await ledger.decrease(account, 10, idempotency_key="pay-1")
    assert await ledger.decrease(account, 10, idempotency_key="pay-1") == first
    assert await ledger.balance(account) == 0


async def test_idempotent_revert(ledger: AsyncLedger) -> None:
    tid = await ledger.increase(ALICE, 5)
    rid = await ledger.revert(tid, idempotency_key="undo-1")
    assert await ledger.revert(tid, idempotency_key="undo-1") == rid


async def test_data_field_nested(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, data_field="data")
    tid = await ledger.increase(ALICE, 5, {"amount": "may use owned names when nested"})
    doc = await _tx(ledger, tid)
    assert doc["data"] == {"amount": "may use owned names when nested"}
    assert doc["amount"] == 5
    assert (await ledger.get_transaction(tid)).data == {"amount": "may use owned names when nested"}


async def test_custom_field_names(async_db: Any) -> None:
    ledger = AsyncLedger(
        async_db,
        accounts_collection="acc",
        transactions_collection="txn",
        balance_field="value",
        account_link_field="acc",
        amount_field="delta",
        date_field="at",
        extra_account_link_field="other",
    )
    ids = await ledger.transfer("a", "b", 5)
    doc = await async_db["txn"].find_one({"_id": ids[0]})
    assert (doc["acc"], doc["delta"], doc["other"]) == ("a", -5, "b")
    assert "at" in doc
    assert (await async_db["acc"].find_one({"_id": "b"}))["value"] == 5
    assert (await ledger.verify()).ok


async def test_verify_detects_and_repairs_drift(ledger: AsyncLedger) -> None:
    await ledger.increase(ALICE, 10)
    await ledger.transfer(ALICE, BOB, 4)
    assert (await ledger.verify()).ok
    await ledger.accounts.update_one(ALICE, {"$inc": {"balance": 7}})
    report = await ledger.verify()
    assert not report.ok
    assert [(m.cached, m.calculated) for m in report.balance_mismatches] == [(13, 6)]
    repaired = await ledger.verify(repair=True)
    assert repaired.ok
    assert await ledger.balance(ALICE) == 6
    assert (await ledger.verify()).ok


async def test_verify_detects_broken_operations_and_links(ledger: AsyncLedger) -> None:
    from_id, _ = await ledger.transfer(ALICE, BOB, 4)
    tid = await ledger.increase(ALICE, 1)
    await ledger.revert(tid)
    await ledger.transactions.update_one({"_id": from_id}, {"$set": {"amount": -5}})
    await ledger.transactions.update_one({"_id": tid}, {"$unset": {"reverted_by": ""}})
    report = await ledger.verify()
    assert [op.problem for op in report.unbalanced_operations] == ["legs sum to -1"]
    assert len(report.broken_links) == 1
    assert "reverts" in report.broken_links[0].problem


async def test_ensure_indexes_idempotent(ledger: AsyncLedger) -> None:
    await ledger.ensure_indexes()
    await ledger.ensure_indexes()
    names = set(await ledger.transactions.index_information())
    assert {"ledger_account_seq", "ledger_operation", "ledger_reverts"} <= names
    keys = set(await ledger.database["ledger_idempotency"].index_information())
    assert "ledger_idempotency_created" in keys


async def test_get_transaction_model(ledger: AsyncLedger) -> None:
    tid = await ledger.increase(ALICE, 5, {"note": "n"}, idempotency_key="k")
    model = await ledger.get_transaction(tid)
    assert model.id == tid
    assert model.amount == 5
    assert model.balance_after == 5
    assert model.kind == "increase"
    assert model.idempotency_key == "k"
    assert model.data == {"note": "n"}
    assert (await ledger.get_transaction(str(tid))).id == tid


async def test_after_write_failure_says_the_operation_committed(ledger: AsyncLedger) -> None:
    calls: list[Any] = []

    def broken(ctx: Any) -> None:
        calls.append(ctx.transaction_id)
        raise RuntimeError("mail server down")

    ledger.after_write(broken)
    ledger.after_write(lambda ctx: calls.append("second hook ran"))
    with pytest.raises(AfterWriteError, match="do not retry") as info:
        await ledger.transfer(ALICE, BOB, 5)
    assert await ledger.balance(BOB) == 5
    assert info.value.transaction_ids == [calls[0], calls[2]]
    assert calls.count("second hook ran") == 2
    assert len(info.value.errors) == 2


async def test_account_without_a_numeric_balance_is_reported(ledger: AsyncLedger) -> None:
    await ledger.accounts.insert_one({"_id": "legacy", "balance": "12.50"})
    with pytest.raises(InvalidAccount, match="no integer 'balance'"):
        await ledger.increase("legacy", 5)
