"""Concurrency: many writers on one ledger lose nothing, double-count nothing, overdraw nothing.

The sync twin runs its workers as threads sharing one ``Ledger`` over one ``MemoryClient``;
the async source runs them as asyncio tasks sharing one ``AsyncLedger``. Every worker draws a
random mix of increases, decreases, transfers, three-leg posts and reverts (some with
idempotency keys, some retried with the same key, some keys shared by all workers) and records
what succeeded. Afterwards the database must agree with that record to the cent.

The default tier runs 1,000 operations per test (a few seconds on the memory engine, where the
workers' transactions overlap and conflict); the full size (8 threads x 500 operations, 200
tasks x 20 operations) is marked ``slow``.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from bson import ObjectId

from mongoledger import AlreadyReverted, AsyncLedger, IdempotencyConflict, InsufficientFunds
from mongoledger._async._io import aggregate, to_list
from tests._async.racing import run_concurrently, yield_point
from tests.conftest import REAL_URI, SKIP_REAL, WIRE_SERVER

_IS_SYNC = False

ACCOUNTS = 20
GUARDED = frozenset(range(6))  # opened with min_balance=0; the others are auto-created
SHARED_KEYS = 12  # keys every worker may use, always with the same arguments
EXPECTED = (InsufficientFunds, AlreadyReverted)

# (workers, operations per worker): threads in the sync twin, tasks in the async source.
DEFAULT_SIZE = (8, 125) if _IS_SYNC else (200, 5)
FULL_SIZE = (8, 500) if _IS_SYNC else (200, 20)


def account(i: int) -> dict[str, Any]:
    return {"user_id": i, "type": "wallet"}


def slow_enabled(config: pytest.Config) -> bool:
    return bool(os.environ.get("MONGOLEDGER_SLOW")) or "slow" in str(
        config.getoption("markexpr") or ""
    )


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("real", id="real", marks=pytest.mark.skipif(not REAL_URI, reason=SKIP_REAL)),
    ]
)
async def async_shared_db(request: pytest.FixtureRequest) -> Any:
    """One client shared by every worker: the memory engine, or the real replica set."""
    if request.param == "memory":
        from mongoledger.memory import AsyncMemoryClient

        yield AsyncMemoryClient()["test"]
        return
    import uuid

    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(REAL_URI)
    name = f"mongoledger_test_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


@dataclass
class Op:
    """One operation that succeeded: its ids, its legs and its effect on the outside world."""

    ids: list[ObjectId]
    legs: list[tuple[int, int]]  # (account index, signed amount)
    external: int  # increase/decrease move money in or out; transfers and posts do not


@dataclass
class Record:
    """What the workers saw. The lock is never held across an ``await``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ops: list[Op] = field(default_factory=list)
    by_id: dict[ObjectId, Op] = field(default_factory=dict)
    keys: dict[str, list[ObjectId]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    expected_failures: int = 0
    attempts: int = 0

    def add(self, op: Op, key: str | None = None) -> None:
        with self.lock:
            if key is not None and key in self.keys:
                if self.keys[key] != op.ids:
                    self.errors.append(f"key {key!r} returned {op.ids}, first {self.keys[key]}")
                return  # a replay of the same key: nothing new was written
            if key is not None:
                self.keys[key] = op.ids
            self.ops.append(op)
            for tid in op.ids:
                self.by_id[tid] = op

    def pick(self, rng: random.Random) -> tuple[ObjectId, Op] | None:
        with self.lock:
            if not self.ops:
                return None
            op = rng.choice(self.ops)
            return rng.choice(op.ids), op


def _ids(result: Any) -> list[ObjectId]:
    return list(result) if isinstance(result, list) else [result]


def shared_call(k: int) -> tuple[str, list[tuple[int, int]], int]:
    """The fixed operation behind shared key ``k``: (kind, legs, external)."""
    a, b = (k * 7) % ACCOUNTS, (k * 7 + 3) % ACCOUNTS
    if k % 2 == 0:
        return "increase", [(a, 10 + k)], 10 + k
    return "transfer", [(a, -(5 + k)), (b, 5 + k)], 0


async def call(
    ledger: AsyncLedger, kind: str, legs: list[tuple[int, int]], key: str | None
) -> list[ObjectId]:
    if kind == "increase":
        ((i, amount),) = legs
        return [await ledger.increase(account(i), amount, {"n": 1}, idempotency_key=key)]
    if kind == "decrease":
        ((i, amount),) = legs
        return [await ledger.decrease(account(i), -amount, idempotency_key=key)]
    if kind == "transfer":
        (i, amount), (j, _) = legs
        return await ledger.transfer(account(i), account(j), -amount, idempotency_key=key)
    return await ledger.post([(account(i), amount) for i, amount in legs], idempotency_key=key)


async def step(ledger: AsyncLedger, record: Record, rng: random.Random, name: str) -> None:
    """One random operation; failures other than the expected ones are recorded as errors."""
    roll = rng.random()
    key = name if rng.random() < 0.5 else None
    a, b, c = rng.sample(range(ACCOUNTS), 3)
    amount, other = rng.randint(1, 100), rng.randint(1, 100)
    with record.lock:
        record.attempts += 1
    try:
        if roll < 0.12:
            k = rng.randrange(SHARED_KEYS)
            kind, legs, external = shared_call(k)
            ids = await call(ledger, kind, legs, f"shared-{k}")
            record.add(Op(ids, legs, external), f"shared-{k}")
            return
        if roll < 0.27:
            picked = record.pick(rng)
            if picked is None:
                return
            tid, original = picked
            result = _ids(await ledger.revert(tid, idempotency_key=key))
            op = Op(result, [(i, -amt) for i, amt in original.legs], -original.external)
            record.add(op, key)
            if key is not None and rng.random() < 0.3:
                again = _ids(await ledger.revert(tid, idempotency_key=key))
                record.add(Op(again, op.legs, op.external), key)
            return
        if roll < 0.47:
            kind, legs, external = "increase", [(a, amount)], amount
        elif roll < 0.57:
            kind, legs, external = "decrease", [(a, -amount)], -amount
        elif roll < 0.82:
            kind, legs, external = "transfer", [(a, -amount), (b, amount)], 0
        else:
            kind, legs, external = "post", [(a, -amount - other), (b, amount), (c, other)], 0
        ids = await call(ledger, kind, legs, key)
        record.add(Op(ids, legs, external), key)
        if key is not None and rng.random() < 0.3:  # the caller retries: same ids, no write
            record.add(Op(await call(ledger, kind, legs, key), legs, external), key)
    except EXPECTED:
        with record.lock:
            record.expected_failures += 1
    except Exception as exc:  # anything else is a bug
        with record.lock:
            record.errors.append(f"{name}: {type(exc).__name__}: {exc}")


async def check_ledger(ledger: AsyncLedger, record: Record) -> None:
    """The database against the record: balances, sums, floors, keys, histories, verify()."""
    assert not record.errors, record.errors[:10]
    report = await ledger.verify()
    assert report.ok, report

    expected = dict.fromkeys(range(ACCOUNTS), 0)
    for op in record.ops:
        for i, amount in op.legs:
            expected[i] += amount
    docs = {}
    for i in range(ACCOUNTS):
        found = await to_list(ledger.accounts.find(account(i)))
        assert len(found) <= 1, f"account {i} exists {len(found)} times"
        if found:
            docs[i] = found[0]
    actual = {i: int(docs[i]["balance"]) if i in docs else 0 for i in range(ACCOUNTS)}
    assert actual == expected
    assert await ledger.accounts.count_documents({}) == len(docs)

    # Money only enters or leaves through increase/decrease (and their reverts).
    assert sum(actual.values()) == sum(op.external for op in record.ops)

    for i in GUARDED:
        assert actual[i] >= 0, f"guarded account {i} is at {actual[i]}"
        rows = await ledger.history(account(i))
        assert all(row.balance_after is not None and row.balance_after >= 0 for row in rows)

    # Exactly the recorded operations were written, each once.
    operation_ids = await ledger.transactions.distinct("operation_id")
    assert len(operation_ids) == len(record.ops)
    assert await ledger.transactions.count_documents({}) == sum(len(op.ids) for op in record.ops)
    assert await ledger.transactions.count_documents({"_id": {"$in": list(record.by_id)}}) == len(
        record.by_id
    )

    # Each idempotency key belongs to exactly one operation.
    rows = await aggregate(
        ledger.transactions,
        [
            {"$match": {"idempotency_key": {"$exists": True}}},
            {"$group": {"_id": "$idempotency_key", "ops": {"$addToSet": "$operation_id"}}},
        ],
    )
    assert {row["_id"] for row in rows} == set(record.keys)
    assert all(len(row["ops"]) == 1 for row in rows), [r for r in rows if len(r["ops"]) > 1]

    # Every account's history is one unbroken chain: seq 1..n, running balance, cached total.
    for i, doc in docs.items():
        chain = await to_list(
            ledger.transactions.find({"account_id": doc["_id"]}).sort("account_seq", 1)
        )
        assert [t["account_seq"] for t in chain] == list(range(1, len(chain) + 1))
        running = 0
        for t in chain:
            running += t["amount"]
            assert t["balance_after"] == running, (i, t)
        assert running == doc["balance"]
        assert doc["seq"] == len(chain)


async def hammer(db: Any, workers: int, per_worker: int, seed: int) -> tuple[AsyncLedger, Record]:
    ledger = AsyncLedger(db)
    for i in GUARDED:
        await ledger.open_account(account(i), min_balance=0)
    ledger.before_write(yield_point)
    record = Record()

    def worker(w: int) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            rng = random.Random(seed * 1000 + w)
            for n in range(per_worker):
                await step(ledger, record, rng, f"w{w}-{n}")

        return work

    await run_concurrently([worker(w) for w in range(workers)])
    return ledger, record


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(DEFAULT_SIZE, id="default"),
        pytest.param(FULL_SIZE, id="full", marks=pytest.mark.slow),
    ],
)
async def test_random_operations_concurrently(
    async_shared_db: Any, size: tuple[int, int], request: pytest.FixtureRequest
) -> None:
    if size == FULL_SIZE and not slow_enabled(request.config):
        pytest.skip("full size: set MONGOLEDGER_SLOW=1 or select -m slow")
    workers, per_worker = size
    ledger, record = await hammer(async_shared_db, workers, per_worker, seed=6)
    assert record.attempts == workers * per_worker
    # The mix must actually exercise the interesting outcomes.
    assert len(record.ops) > record.attempts // 3
    assert record.expected_failures > 0
    assert any(op.external == 0 and len(op.legs) == 3 for op in record.ops)
    await check_ledger(ledger, record)


def memory_server(db: Any) -> Any:
    """The memory engine ``db`` lives on: the client's, or the wire endpoint's the real
    tier talks to (None: a real server)."""
    from mongoledger.memory import AsyncMemoryClient

    if isinstance(db.client, AsyncMemoryClient):
        return db.client.server
    return WIRE_SERVER


HOT = 3  # accounts every worker transfers among
HOT_SIZE = (8, 60) if _IS_SYNC else (64, 8)  # (workers, transfers per worker)


async def test_hot_accounts_conflict_for_real_and_keep_every_invariant(
    async_shared_db: Any, request: pytest.FixtureRequest
) -> None:
    """Transfers among three hot accounts by many workers at once: on the memory engine,
    as on a replica set, transactions overlap and really conflict (WriteConflict, retried
    by with_transaction); the ledger must still agree with what the workers saw, to the
    cent. The conflicts counted are reported among the test's user properties."""
    ledger = AsyncLedger(async_shared_db)
    record = Record()
    for i in GUARDED:  # what check_ledger expects; the hot ones among them
        await ledger.open_account(account(i), min_balance=0)
    for i in range(HOT):
        ids = [await ledger.increase(account(i), 1_000_000)]
        record.add(Op(ids, [(i, 1_000_000)], 1_000_000))
    server = memory_server(async_shared_db)
    before = 0 if server is None else server.write_conflicts
    workers, per_worker = HOT_SIZE

    def worker(w: int) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            rng = random.Random(w)
            for _ in range(per_worker):
                a, b = rng.sample(range(HOT), 2)
                amount = rng.randint(1, 100)
                ids = await ledger.transfer(account(a), account(b), amount)
                record.add(Op(ids, [(a, -amount), (b, amount)], 0))

        return work

    await run_concurrently([worker(w) for w in range(workers)])
    assert len(record.ops) == HOT + workers * per_worker
    await check_ledger(ledger, record)
    if server is not None:
        conflicts = server.write_conflicts - before
        per_transfer = round(conflicts / (workers * per_worker), 3)
        request.node.user_properties += [
            ("write_conflicts", conflicts),
            ("per_transfer", per_transfer),
        ]
        assert conflicts > 0, "the workers never overlapped"


async def test_concurrent_auto_create_makes_one_account(async_shared_db: Any) -> None:
    ledger = AsyncLedger(async_shared_db)
    ledger.before_write(yield_point)
    fresh = {"user_id": 999, "type": "new"}
    results: list[ObjectId] = []

    async def deposit() -> None:
        results.append(await ledger.increase(fresh, 1))

    await run_concurrently([deposit for _ in range(20)])
    assert len(results) == 20
    docs = await to_list(ledger.accounts.find(fresh))
    assert len(docs) == 1
    assert docs[0]["balance"] == 20
    assert await ledger.transactions.count_documents({"account_id": docs[0]["_id"]}) == 20
    assert (await ledger.verify()).ok


async def test_concurrent_open_account_makes_one_account(async_shared_db: Any) -> None:
    ledger = AsyncLedger(async_shared_db)
    fresh = {"user_id": 998, "type": "new"}
    opened: list[Any] = []

    async def open_it() -> None:
        opened.append(await ledger.open_account(fresh, min_balance=0))

    async def transfer_in() -> None:
        await ledger.transfer({"user_id": 1}, fresh, 1)

    await run_concurrently([open_it for _ in range(20)])
    assert len(opened) == 20
    assert len(set(opened)) == 1
    assert await ledger.accounts.count_documents(fresh) == 1
    await run_concurrently([transfer_in for _ in range(20)])
    assert await ledger.balance(fresh) == 20
    assert await ledger.accounts.count_documents(fresh) == 1
    assert (await ledger.verify()).ok


async def test_concurrent_drain_never_overdraws(async_shared_db: Any) -> None:
    """Many debits race on one guarded account: exactly as many succeed as the money allows."""
    ledger = AsyncLedger(async_shared_db)
    ledger.before_write(yield_point)
    wallet = await ledger.open_account({"user_id": 1, "type": "guarded"}, min_balance=0)
    await ledger.increase(wallet, 100)
    outcomes: list[str] = []

    async def spend(i: int) -> None:
        try:
            if i % 2:
                await ledger.decrease(wallet, 10)
            else:
                await ledger.transfer(wallet, {"user_id": 2}, 10)
            outcomes.append("ok")
        except InsufficientFunds:
            outcomes.append("refused")

    def spender(i: int) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            await spend(i)

        return go

    await run_concurrently([spender(i) for i in range(20)])
    assert outcomes.count("ok") == 10
    assert outcomes.count("refused") == 10
    assert await ledger.balance(wallet) == 0
    assert (await ledger.verify()).ok


async def test_concurrent_reverts_of_one_operation(async_shared_db: Any) -> None:
    """Twenty callers revert the same transfer (through either leg): one wins."""
    ledger = AsyncLedger(async_shared_db)
    ledger.before_write(yield_point)
    ids = await ledger.transfer({"user_id": 1}, {"user_id": 2}, 10)
    outcomes: list[str] = []

    def reverter(i: int) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            try:
                await ledger.revert(ids[i % 2])
                outcomes.append("ok")
            except AlreadyReverted:
                outcomes.append("already")

        return go

    await run_concurrently([reverter(i) for i in range(20)])
    assert outcomes.count("ok") == 1
    assert await ledger.balance({"user_id": 1}) == 0
    assert await ledger.balance({"user_id": 2}) == 0
    assert await ledger.transactions.count_documents({"kind": "revert"}) == 2
    assert (await ledger.verify()).ok


async def test_concurrent_retries_of_one_key(async_shared_db: Any) -> None:
    """Twenty callers send the same keyed transfer at once: one posts, all get its ids."""
    ledger = AsyncLedger(async_shared_db)
    ledger.before_write(yield_point)
    results: list[list[ObjectId]] = []

    async def send() -> None:
        results.append(
            await ledger.transfer({"user_id": 1}, {"user_id": 2}, 7, idempotency_key="once")
        )

    await run_concurrently([send for _ in range(20)])
    assert len(results) == 20
    assert all(r == results[0] for r in results)
    assert await ledger.transactions.count_documents({}) == 2
    assert await ledger.balance({"user_id": 2}) == 7
    assert (await ledger.verify()).ok


async def test_concurrent_conflicting_uses_of_one_key(async_shared_db: Any) -> None:
    """Twenty callers send one key with twenty different amounts: one posts, the rest conflict."""
    ledger = AsyncLedger(async_shared_db)
    ledger.before_write(yield_point)
    outcomes: list[str] = []

    def sender(i: int) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            try:
                await ledger.increase({"user_id": 1}, i + 1, idempotency_key="contested")
                outcomes.append("ok")
            except IdempotencyConflict:
                outcomes.append("conflict")

        return go

    await run_concurrently([sender(i) for i in range(20)])
    assert sorted(outcomes) == ["conflict"] * 19 + ["ok"]
    docs = await to_list(ledger.transactions.find({}))
    assert len(docs) == 1
    assert await ledger.balance({"user_id": 1}) == docs[0]["amount"]
    assert (await ledger.verify()).ok
