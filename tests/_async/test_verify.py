"""verify() and its repair under concurrent writes: no false drift, no drift introduced."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest
from bson import Int64, ObjectId

from mongoledger import AsyncLedger
from mongoledger._async._io import maybe_await, sleep, to_list
from mongoledger.memory import AsyncMemoryClient
from tests._async.stored import snapshot

_IS_SYNC = False
ACCOUNTS = [f"acct-{i}" for i in range(6)]
INT64_MAX = 2**63 - 1


async def test_verify_and_repair_while_writers_run() -> None:
    ledger = AsyncLedger(AsyncMemoryClient()["test"])
    for account in ACCOUNTS:
        await ledger.increase(account, 1_000)
    done = []

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            a, b = rng.sample(ACCOUNTS, 2)
            await ledger.transfer(a, b, rng.randint(1, 50))
            await sleep(0)  # let the checker interleave
        done.append(seed)

    reports = []

    async def checker() -> None:
        while len(done) < 3:
            reports.append(await ledger.verify(repair=True))
            await sleep(0)

    if _IS_SYNC:
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        threads.append(threading.Thread(target=checker))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        await asyncio.gather(writer(0), writer(1), writer(2), checker())
    assert len(reports) > 3, "the checker did not run alongside the writers"
    assert all(r.balance_mismatches == [] for r in reports), [
        r.balance_mismatches for r in reports if r.balance_mismatches
    ]
    final = await ledger.verify()
    assert final.ok
    total = 0
    for account in ACCOUNTS:
        balance = await ledger.balance(account)
        assert balance == await ledger.calculate_balance(account)
        total += balance
    assert total == 1_000 * len(ACCOUNTS)


async def test_repair_fixes_a_drifted_account_and_its_sequence() -> None:
    ledger = AsyncLedger(AsyncMemoryClient()["test"])
    await ledger.increase("a", 10)
    await ledger.increase("a", 5)
    await ledger.accounts.update_one({"_id": "a"}, {"$inc": {"balance": 7, "seq": 3}})
    report = await ledger.verify()
    assert [(m.cached, m.calculated) for m in report.balance_mismatches] == [(22, 15)]
    repaired = await ledger.verify(repair=True)
    assert repaired.repaired == ["a"]
    assert (await ledger.verify()).ok
    await ledger.increase("a", 1)
    rows = await ledger.history("a")
    assert [(r.account_seq, r.balance_after) for r in rows] == [(3, 16), (2, 15), (1, 10)]


# Running balances: every leg's balance_after is the sum of its account's amounts so far


async def drift_a_history(ledger: AsyncLedger) -> None:
    """What a compensated leg leaves without DB transactions: the account moved (seq 2) by a
    leg that is then undone (balance only, as its number was taken), and a leg written in
    between counted the undone amount."""
    await ledger.increase("a", 10)  # seq 1, balance_after 10
    await ledger.accounts.update_one({"_id": "a"}, {"$inc": {"balance": 100, "seq": 1}})
    await ledger.increase("a", 5)  # seq 3, balance_after 115: counts the 100
    await ledger.accounts.update_one({"_id": "a"}, {"$inc": {"balance": -100}})
    await ledger.increase("a", 1)  # seq 4, balance_after 16


async def test_verify_finds_and_repairs_wrong_running_balances(async_db: Any) -> None:
    ledger = AsyncLedger(async_db)
    await ledger.increase("b", 3)
    await drift_a_history(ledger)
    assert [r.balance_after for r in await ledger.history("a")] == [16, 115, 10]
    report = await ledger.verify()
    assert not report.ok
    assert report.balance_mismatches == []  # the cached balance is right: 16
    assert [(m.account_seq, m.expected_seq) for m in report.running_balance_mismatches] == [
        (3, 2),
        (4, 3),
    ]
    assert [
        (m.balance_after, m.expected_balance_after) for m in report.running_balance_mismatches
    ] == [(115, 15), (16, 16)]
    assert {m.account_id for m in report.running_balance_mismatches} == {"a"}

    fixed = await ledger.verify(repair=True)
    assert fixed.repaired_histories == ["a"]
    assert fixed.ok, fixed
    rows = await ledger.history("a")
    assert [(r.account_seq, r.balance_after) for r in rows] == [(3, 16), (2, 15), (1, 10)]
    assert (await ledger.verify()).ok
    # The ledger goes on from the rewritten history.
    await ledger.increase("a", 4)
    assert [(r.account_seq, r.balance_after) for r in await ledger.history("a", limit=1)] == [
        (4, 20)
    ]
    assert (await ledger.verify()).ok


async def test_verify_reports_a_balance_below_its_floor(async_db: Any) -> None:
    ledger = AsyncLedger(async_db)
    guarded = await ledger.open_account({"user": 1}, min_balance=0)
    await ledger.increase(guarded, 5)
    await ledger.open_account({"user": 2}, min_balance=100)  # above its balance: allowed
    # A debit around the guard (by hand here; by racing threads on plain mongomock before).
    await ledger.accounts.update_one({"_id": guarded}, {"$set": {"min_balance": -100}})
    await ledger.decrease(guarded, 7)
    await ledger.accounts.update_one({"_id": guarded}, {"$set": {"min_balance": 0}})
    report = await ledger.verify(repair=True)
    assert [(f.account_id, f.balance, f.min_balance) for f in report.floor_violations] == [
        (guarded, -2, 0)
    ]
    assert not report.ok  # money below a floor is a decision for a person, never repaired


async def test_verify_checks_floors_on_the_available_balance(async_db: Any) -> None:
    """The guards keep balance minus held at or above the floor; so does verify's check: a
    debit around the guard that left the balance above the floor but spent held money is a
    violation, and a held sum that merely drifted is a held mismatch, not a violation."""
    ledger = AsyncLedger(async_db)
    spent = await ledger.open_account({"user": 1}, min_balance=0)
    await ledger.increase(spent, 100)
    await ledger.hold(spent, {"shop": 1}, 60)  # available 40
    drifted = await ledger.open_account({"user": 2}, min_balance=0)
    await ledger.increase(drifted, 100)
    await ledger.hold(drifted, {"shop": 1}, 60)
    # A debit of 70 around the guard: the balance (30) stays above the floor, the available
    # balance (-30) does not.
    await ledger.accounts.update_one({"_id": spent}, {"$set": {"min_balance": -1000}})
    await ledger.decrease(spent, 70)
    await ledger.accounts.update_one({"_id": spent}, {"$set": {"min_balance": 0}})
    # A held sum 50 too high (what a failed void leaves without DB transactions).
    await ledger.accounts.update_one({"_id": drifted}, {"$inc": {"held": 50}})
    report = await ledger.verify()
    assert [(f.account_id, f.balance, f.held, f.available) for f in report.floor_violations] == [
        (spent, 30, 60, -30)
    ]
    assert [(m.account_id, m.cached, m.calculated) for m in report.held_mismatches] == [
        (drifted, 110, 60)
    ]
    repaired = await ledger.verify(repair=True)
    assert repaired.repaired_held == [drifted]
    assert [f.account_id for f in repaired.floor_violations] == [spent]  # for a person
    await ledger.void(await ledger.hold(drifted, {"shop": 1}, 40))  # the guard agrees
    assert [f.account_id for f in (await ledger.verify()).floor_violations] == [spent]


class ServerSums:
    """Makes a collection's ``aggregate`` answer as a server does when a ``$sum`` of int64
    values overflows: a double (the engines give an integer past int64)."""

    def __init__(self, collection: Any, monkeypatch: Any) -> None:
        aggregate = collection.aggregate

        async def as_a_server(pipeline: Any, *args: Any, **kwargs: Any) -> Any:
            rows = await to_list(await maybe_await(aggregate(pipeline, *args, **kwargs)))
            return FakeCursor([self.doubled(row) for row in rows])

        monkeypatch.setattr(collection, "aggregate", as_a_server)

    @staticmethod
    def doubled(row: dict[str, Any]) -> dict[str, Any]:
        past = [k for k, v in row.items() if isinstance(v, int) and abs(v) > INT64_MAX]
        return {k: float(v) if k in past else v for k, v in row.items()}


@pytest.mark.parametrize("server", [False, True], ids=["engine", "server-double"])
async def test_verify_reports_sums_past_int64_and_repairs_nothing_with_them(
    async_db: Any, monkeypatch: Any, server: bool
) -> None:
    """Documents written around the ledger can sum past int64 (a server's $sum then gives a
    double): verify reports the sums as unknown, never a truncated number, and its repair
    writes neither a balance nor running balances nor a held sum it cannot store."""
    ledger = AsyncLedger(async_db)
    await ledger.increase("x", 1)
    await ledger.hold("x", "y", 1)
    operation = ObjectId()
    await ledger.transactions.insert_many(
        [
            {
                "_id": ObjectId(),
                "account_id": "x",
                "amount": Int64(2**62),
                "date": None,
                "operation_id": operation,
                "kind": "increase",
                "leg": i,
                "legs": 2,
            }
            for i in range(2)
        ]
    )
    holds = ledger.database[ledger.config.holds_collection]
    await holds.insert_many(
        [
            {
                "from_account_id": "x",
                "to_account_id": "y",
                "amount": Int64(2**62),
                "status": "pending",
            }
            for _ in range(2)
        ]
    )
    if server:
        ServerSums(ledger.transactions, monkeypatch)
        ServerSums(holds, monkeypatch)
    before = await snapshot(ledger)
    for repair in (False, True):
        report = await ledger.verify(repair=repair)
        assert [(m.account_id, m.cached, m.calculated) for m in report.balance_mismatches] == [
            ("x", 1, None)
        ]
        assert [(m.account_id, m.cached, m.calculated) for m in report.held_mismatches] == [
            ("x", 1, None)
        ]
        assert {m.account_id for m in report.running_balance_mismatches} == {"x"}
        assert report.repaired == report.repaired_held == report.repaired_histories == []
        assert not report.ok
    assert await snapshot(ledger) == before


async def test_verify_finds_a_reversal_that_does_not_negate_its_original(async_db: Any) -> None:
    """Everything else made consistent: only the reversal's amount gives the tampering away."""
    ledger = AsyncLedger(async_db)
    original = await ledger.increase("a", 10)
    reversal = await ledger.revert(original)
    await ledger.transactions.update_one(
        {"_id": reversal}, {"$inc": {"amount": 1, "balance_after": 1}}
    )
    await ledger.accounts.update_one({"_id": "a"}, {"$inc": {"balance": 1}})
    report = await ledger.verify(repair=True)
    assert [(b.transaction_id, b.problem) for b in report.broken_links] == [
        (reversal, "amount -9 does not negate 10")
    ]
    assert report.balance_mismatches == report.running_balance_mismatches == []
    assert report.unbalanced_operations == []
    assert not report.ok


class Recorder:
    """Wraps a collection's ``aggregate`` to record each pipeline, its options and its rows."""

    def __init__(self, collection: Any, monkeypatch: Any) -> None:
        self.calls: list[tuple[list[Any], dict[str, Any], int]] = []
        aggregate = collection.aggregate

        async def recording(pipeline: Any, *args: Any, **kwargs: Any) -> Any:
            rows = await to_list(await maybe_await(aggregate(pipeline, *args, **kwargs)))
            self.calls.append((list(pipeline), kwargs, len(rows)))
            return FakeCursor(rows)

        monkeypatch.setattr(collection, "aggregate", recording)


class FakeCursor:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    async def to_list(self, length: Any = None) -> list[Any]:
        return self.rows


async def test_whole_collection_aggregations_spill_and_return_only_anomalies(
    async_db: Any, monkeypatch: Any
) -> None:
    """On a server (mongos never spills by default) every whole-collection aggregation allows
    disk use, and verify brings back one row per account, never one per operation."""
    ledger = AsyncLedger(async_db, balance_field=None)
    for n in range(30):
        await ledger.transfer(f"a{n % 3}", f"a{(n + 1) % 3}", n + 1)
    recorder = Recorder(ledger.transactions, monkeypatch)
    report = await ledger.verify()
    assert report.ok
    assert report.operations_checked == 30
    await ledger.report()
    await ledger.statistics()
    whole = [(p, kw, rows) for p, kw, rows in recorder.calls if not p[0].get("$match")]
    assert len(whole) == 5  # verify: totals, broken operations, count; report; statistics
    assert all(kw.get("allowDiskUse") is True for _, kw, _ in whole)
    assert max(rows for _, _, rows in whole) == 3  # a row per account at most
