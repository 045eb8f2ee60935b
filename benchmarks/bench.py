"""Benchmark: commands per operation, throughput against a hand-written PyMongo baseline, the
cost of contention on hot accounts, and growth with collection size.

    scripts/bench [--uri URI | --wire] [--quick] [--large] [--only OPS|web] [--cpu] [--json PATH]

Without ``--uri`` everything runs on the in-memory engine (``mongoledger.memory``) and commands
are counted by the engine; with ``--uri`` (a replica set: the ledger needs DB transactions) on
that server, counted with PyMongo's command monitoring, in a throw-away database.

* **Commands per operation** in steady state: the accounts exist, the indexes are built and
  the ledger instance has written once, so one-time ``hello``/``createIndexes`` are excluded.
* **Throughput**: the same operations on the ledger and on a baseline written by hand the way a
  careful user would without the library (one ``with_transaction`` per operation: ``$inc`` per
  account with ``update_one`` and one ``insert``), on the same engine in the same run. Each
  async worker writes to its own accounts, so concurrency measures the engine, not conflicts.
* **Contention**: transfers among 3 hot accounts by 8 threads and by 64 tasks at once:
  transfers/s, WriteConflicts per committed transfer (the engine counts them; on a server,
  command monitoring's failed commands with code 112) and p50/p99 latency of a transfer
  (``benchmarks/contention.py``).
* **Growth**: the first ``history`` page, ``balance_at``, the first ``report`` page and
  ``verify`` on collections of N transactions (about 100 per account), loaded in bulk in the
  ledger's own document shapes; the growth exponent is the least-squares slope of
  log(time) against log(N) (0: independent of size, 1: linear).
* **The embedded store** (without ``--uri``): transfers on ``MemoryClient(path=...)`` against
  the plain engine, fsyncs per operation, one fsync's cost, opening a store of 100,000
  transactions (``benchmarks/store.py``; ``--store-only`` runs just this part).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import inspect
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import bson
import pymongo
from bson import Int64, ObjectId
from pymongo import monitoring
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from benchmarks import contention
from benchmarks._data import BASE_DATE, load

# (timed_block is contention's now; tests/test_bench.py still reaches it as bench.timed_block)
from benchmarks._timing import alternate, time_async, time_sync, timed_block  # noqa: F401
from mongoledger import AsyncLedger, Ledger
from mongoledger._core import schema

T = TypeVar("T")

WRITES = ("increase", "transfer", "post", "revert", "hold", "capture")
CONCURRENCY = (1, 16, 64)
LEGS = 5  # accounts per worker: a 5-leg post touches all of them
PAGE = 20

# The fewest commands each operation can take (see the AsyncLedger module docstring).
FLOORS: dict[str, dict[str, int]] = {
    "increase": {"findAndModify": 1, "insert": 1, "commitTransaction": 1},
    "decrease": {"findAndModify": 1, "insert": 1, "commitTransaction": 1},
    "transfer": {"findAndModify": 2, "insert": 1, "commitTransaction": 1},
    "post (5 legs)": {"findAndModify": 5, "insert": 1, "commitTransaction": 1},
    # Reading the leg, then its operation's legs, precedes the DB transaction.
    "revert (transfer)": {
        "find": 2,
        "update": 1,
        "findAndModify": 2,
        "insert": 1,
        "commitTransaction": 1,
    },
    # The guarded $inc of the source's held sum, then the hold.
    "hold": {"findAndModify": 1, "insert": 1, "commitTransaction": 1},
    # Closing the hold returns it (nothing is read first), then both accounts, then both legs.
    "capture": {"findAndModify": 3, "insert": 1, "commitTransaction": 1},
    "void": {"findAndModify": 1, "update": 1, "commitTransaction": 1},
    "balance": {"find": 1},
    "history page": {"find": 2},
    "balance_at": {"find": 2},
}
WRITE_ROWS = {
    "increase",
    "decrease",
    "transfer",
    "post (5 legs)",
    "revert (transfer)",
    "hold",
    "capture",
    "void",
}


@dataclass
class Settings:
    quick: bool
    large: bool
    ops: int  # operations per throughput measurement
    rounds: int  # per cell and side: ops/s is the best round, the ratio the median
    sizes: list[int]
    samples: int  # query repetitions per growth point
    collector: bool = False  # keep the cyclic garbage collector on in timed throughput blocks
    writes: tuple[str, ...] = WRITES  # the operations whose throughput is measured
    web: bool = True  # the web app's rows (benchmarks/web.py)
    # The clock of the throughput blocks: wall time, or (--cpu, in-memory engine only) this
    # process's CPU time, which other processes on a shared machine do not move.
    clock: Callable[[], float] = time.perf_counter


def settings(
    quick: bool, large: bool, collector: bool = False, only: Sequence[str] | None = None
) -> Settings:
    """``only``: measure the throughput of these operations (``web``: the web app's rows)
    alone, and skip the growth (and, for ``web`` alone, the contention rows)."""
    writes = WRITES if only is None else tuple(op for op in only if op != "web")
    web = only is None or "web" in only
    if quick:
        sizes = [] if only else [1_000, 4_000]
        return Settings(quick, large, 128, 1, sizes, 5, collector, writes, web)
    sizes = [] if only else [10_000, 100_000] + ([1_000_000] if large else [])
    return Settings(quick, large, 1024, 6, sizes, 20, collector, writes, web)


# --------------------------------------------------------------------------- targets


class _Listener(monitoring.CommandListener):
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.captured: list[tuple[str, dict[str, Any]]] | None = None  # (database, command)
        self.conflicts = 0  # commands that failed with WriteConflict (112)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counts[event.command_name] += 1
        if self.captured is not None and event.command_name in ("find", "aggregate"):
            self.captured.append((event.database_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if (event.failure or {}).get("code") == 112:
            self.conflicts += 1


@dataclass
class Target:
    """Where the benchmark runs: a sync and an async client on one deployment."""

    name: str
    sync: Any
    async_: Any
    counts: Callable[[], Counter[str]]
    reset: Callable[[], None]
    conflicts: Callable[[], int]  # WriteConflict answers so far
    databases: list[str] = field(default_factory=list)
    listener: _Listener | None = None  # a real server's command monitoring
    uri: str | None = None  # a real server's (an async client of it serves one event loop)

    def database(self, label: str) -> tuple[Any, Any]:
        name = f"mongoledger_bench_{label}_{os.getpid()}_{len(self.databases)}"
        self.databases.append(name)
        return self.sync[name], self.async_[name]

    def drop(self) -> None:
        for name in self.databases:
            self.sync.drop_database(name)
        self.databases.clear()


def memory_target(oplog_size: int | None = None) -> Target:
    from mongoledger.memory import AsyncMemoryClient, MemoryClient, MemoryServer

    server = MemoryServer(oplog_size=oplog_size)
    return Target(
        "memory engine",
        MemoryClient(server=server),
        AsyncMemoryClient(server=server),
        lambda: Counter(server.command_counts),
        server.reset_command_counts,
        lambda: server.write_conflicts,
    )


def uri_target(uri: str) -> Target:
    listener = _Listener()
    sync = pymongo.MongoClient(uri, event_listeners=[listener])
    async_ = pymongo.AsyncMongoClient(uri, event_listeners=[listener])
    nodes = ",".join(f"{h}:{p}" for h, p in pymongo.uri_parser.parse_uri(uri)["nodelist"])
    return Target(
        f"MongoDB at {nodes}",
        sync,
        async_,
        lambda: Counter(listener.counts),
        listener.counts.clear,
        lambda: listener.conflicts,
        listener=listener,
        uri=uri,
    )


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


TXN_OPTIONS: dict[str, Any] = {
    "read_concern": ReadConcern("snapshot"),
    "write_concern": WriteConcern("majority"),
    "read_preference": ReadPreference.PRIMARY,
}


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# --------------------------------------------------------------------------- workloads
#
# A workload is fn(worker, i) -> result; "prepare" writes what a revert needs (untimed).


def leg_documents(legs: Sequence[tuple[Any, int]], kind: str) -> list[dict[str, Any]]:
    """The baseline's transaction documents of one operation, as a careful user writes them."""
    op, date = ObjectId(), now()
    return [
        {
            "_id": ObjectId(),
            "account_id": account,
            "amount": Int64(amount),
            "date": date,
            "operation_id": op,
            "kind": kind,
            "leg": n,
        }
        for n, (account, amount) in enumerate(legs)
    ]


def hold_document(a: Any, b: Any, amount: int) -> dict[str, Any]:
    """The baseline's hold, as a careful user writes it."""
    return {
        "_id": ObjectId(),
        "from_account_id": a,
        "to_account_id": b,
        "amount": Int64(amount),
        "status": "pending",
        "created_at": now(),
    }


def capture_updates(
    hold: dict[str, Any], docs: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Fill a capture's two legs from its hold; the two account updates that move it (the
    source also releases its reservation)."""
    amount = hold["amount"]
    docs[0]["account_id"], docs[0]["amount"] = hold["from_account_id"], Int64(-amount)
    docs[1]["account_id"], docs[1]["amount"] = hold["to_account_id"], Int64(amount)
    return [
        (
            {"_id": hold["from_account_id"]},
            {"$inc": {"balance": Int64(-amount), "held": Int64(-amount)}},
        ),
        ({"_id": hold["to_account_id"]}, {"$inc": {"balance": Int64(amount)}}),
    ]


class SyncBaseline:
    """The hand-written alternative: with_transaction, insert + $inc, no library."""

    def __init__(self, db: Any) -> None:
        self.client = db.client
        self.accounts = db["base_accounts"]
        self.transactions = db["base_transactions"]
        self.holds = db["base_holds"]

    def setup(self, ledger: Ledger, ids: Sequence[Any]) -> None:
        """The same accounts (the user's attributes), without the ledger's bookkeeping."""
        docs = []
        for doc in ledger.accounts.find({"_id": {"$in": list(ids)}}):
            for owned in (schema.ATTRIBUTES_KEY, schema.SEQ, schema.HELD):
                doc.pop(owned, None)
            doc["balance"] = Int64(0)
            docs.append(doc)
        self.accounts.insert_many(docs)
        self.transactions.create_index([("account_id", 1), ("date", -1)])
        self.transactions.create_index([("operation_id", 1)])
        self.holds.create_index([("status", 1), ("expires_at", 1)])

    def _write(self, legs: Sequence[tuple[Any, int]], kind: str, extra: Any = None) -> list[Any]:
        docs = leg_documents(legs, kind)

        def body(session: Any) -> None:
            if extra is not None:
                extra(session, docs)
            for account, amount in legs:
                self.accounts.update_one(
                    {"_id": account}, {"$inc": {"balance": Int64(amount)}}, session=session
                )
            self.transactions.insert_many(docs, session=session)

        with self.client.start_session() as session:
            session.with_transaction(body, **TXN_OPTIONS)
        return [d["_id"] for d in docs]

    def hold(self, a: Any, b: Any, amount: int) -> Any:
        doc = hold_document(a, b, amount)

        def body(session: Any) -> None:
            self.accounts.update_one({"_id": a}, {"$inc": {"held": Int64(amount)}}, session=session)
            self.holds.insert_one(doc, session=session)

        with self.client.start_session() as session:
            session.with_transaction(body, **TXN_OPTIONS)
        return doc["_id"]

    def capture(self, hold_id: Any) -> list[Any]:
        """Close the hold (the update returns what to move), then move it like a transfer."""
        docs = leg_documents([(None, 0), (None, 0)], "capture")

        def body(session: Any) -> None:
            hold = self.holds.find_one_and_update(
                {"_id": hold_id, "status": "pending"},
                {"$set": {"status": "captured", "operation_id": docs[0]["operation_id"]}},
                session=session,
            )
            for call in capture_updates(hold, docs):
                self.accounts.update_one(*call, session=session)
            self.transactions.insert_many(docs, session=session)

        with self.client.start_session() as session:
            session.with_transaction(body, **TXN_OPTIONS)
        return [d["_id"] for d in docs]

    def increase(self, account: Any, amount: int) -> Any:
        return self._write([(account, amount)], "increase")[0]

    def transfer(self, a: Any, b: Any, amount: int) -> list[Any]:
        return self._write([(a, -amount), (b, amount)], "transfer")

    def post(self, legs: Sequence[tuple[Any, int]]) -> list[Any]:
        return self._write(legs, "post")

    def revert(self, transaction_id: Any) -> list[Any]:
        leg = self.transactions.find_one({"_id": transaction_id})
        legs = list(self.transactions.find({"operation_id": leg["operation_id"]}).sort("leg", 1))
        ids = [d["_id"] for d in legs]

        def mark(session: Any, docs: list[dict[str, Any]]) -> None:
            result = self.transactions.update_many(
                {"_id": {"$in": ids}, "reverted_by": {"$exists": False}},
                {"$set": {"reverted_by": docs[0]["operation_id"]}},
                session=session,
            )
            if result.modified_count != len(ids):
                raise RuntimeError(f"{transaction_id} is already reverted")

        return self._write([(d["account_id"], -d["amount"]) for d in legs], "revert", mark)


class AsyncBaseline:
    """``SyncBaseline`` on the async client."""

    def __init__(self, db: Any) -> None:
        self.client = db.client
        self.accounts = db["base_accounts"]
        self.transactions = db["base_transactions"]
        self.holds = db["base_holds"]

    async def _write(
        self, legs: Sequence[tuple[Any, int]], kind: str, extra: Any = None
    ) -> list[Any]:
        docs = leg_documents(legs, kind)

        async def body(session: Any) -> None:
            if extra is not None:
                await extra(session, docs)
            for account, amount in legs:
                await self.accounts.update_one(
                    {"_id": account}, {"$inc": {"balance": Int64(amount)}}, session=session
                )
            await self.transactions.insert_many(docs, session=session)

        session = await maybe_await(self.client.start_session())
        async with session:
            await session.with_transaction(body, **TXN_OPTIONS)
        return [d["_id"] for d in docs]

    async def hold(self, a: Any, b: Any, amount: int) -> Any:
        doc = hold_document(a, b, amount)

        async def body(session: Any) -> None:
            await self.accounts.update_one(
                {"_id": a}, {"$inc": {"held": Int64(amount)}}, session=session
            )
            await self.holds.insert_one(doc, session=session)

        session = await maybe_await(self.client.start_session())
        async with session:
            await session.with_transaction(body, **TXN_OPTIONS)
        return doc["_id"]

    async def capture(self, hold_id: Any) -> list[Any]:
        docs = leg_documents([(None, 0), (None, 0)], "capture")

        async def body(session: Any) -> None:
            hold = await self.holds.find_one_and_update(
                {"_id": hold_id, "status": "pending"},
                {"$set": {"status": "captured", "operation_id": docs[0]["operation_id"]}},
                session=session,
            )
            for call in capture_updates(hold, docs):
                await self.accounts.update_one(*call, session=session)
            await self.transactions.insert_many(docs, session=session)

        session = await maybe_await(self.client.start_session())
        async with session:
            await session.with_transaction(body, **TXN_OPTIONS)
        return [d["_id"] for d in docs]

    async def increase(self, account: Any, amount: int) -> Any:
        return (await self._write([(account, amount)], "increase"))[0]

    async def transfer(self, a: Any, b: Any, amount: int) -> list[Any]:
        return await self._write([(a, -amount), (b, amount)], "transfer")

    async def post(self, legs: Sequence[tuple[Any, int]]) -> list[Any]:
        return await self._write(legs, "post")

    async def revert(self, transaction_id: Any) -> list[Any]:
        leg = await self.transactions.find_one({"_id": transaction_id})
        cursor = self.transactions.find({"operation_id": leg["operation_id"]}).sort("leg", 1)
        legs = await cursor.to_list(None)
        ids = [d["_id"] for d in legs]

        async def mark(session: Any, docs: list[dict[str, Any]]) -> None:
            result = await self.transactions.update_many(
                {"_id": {"$in": ids}, "reverted_by": {"$exists": False}},
                {"$set": {"reverted_by": docs[0]["operation_id"]}},
                session=session,
            )
            if result.modified_count != len(ids):
                raise RuntimeError(f"{transaction_id} is already reverted")

        return await self._write([(d["account_id"], -d["amount"]) for d in legs], "revert", mark)


def post_legs(accounts: Sequence[Any]) -> list[tuple[Any, int]]:
    return [(accounts[0], -(LEGS - 1))] + [(a, 1) for a in accounts[1:LEGS]]


def sync_workload(api: Any, kind: str, pool: list[Any]) -> Callable[[int, Any], Any]:
    def accounts(worker: int) -> list[Any]:
        return pool[worker * LEGS : (worker + 1) * LEGS]

    if kind == "increase":
        return lambda w, _: api.increase(accounts(w)[0], 5)
    if kind == "transfer":
        return lambda w, _: api.transfer(accounts(w)[0], accounts(w)[1], 1)
    if kind == "post":
        return lambda w, _: api.post(post_legs(accounts(w)))
    if kind == "hold":
        return lambda w, _: api.hold(accounts(w)[0], accounts(w)[1], 1)
    if kind == "capture":
        return lambda _w, hold_id: api.capture(hold_id)
    return lambda _w, tid: api.revert(tid)


def async_workload(api: Any, kind: str, pool: list[Any]) -> Callable[[int, Any], Awaitable[Any]]:
    return sync_workload(api, kind, pool)  # the same calls; they return coroutines


# --------------------------------------------------------------------------- commands


def count_commands(target: Target, ledger: Ledger, pool: list[Any]) -> list[dict[str, Any]]:
    a, b = pool[0], pool[1]
    when = now()
    ops: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("increase", lambda: None, lambda: ledger.increase(a, 5)),
        ("decrease", lambda: None, lambda: ledger.decrease(a, 1)),
        ("transfer", lambda: None, lambda: ledger.transfer(a, b, 1)),
        ("post (5 legs)", lambda: None, lambda: ledger.post(post_legs(pool))),
        ("revert (transfer)", lambda: ledger.transfer(a, b, 1)[0], ledger.revert),
        ("hold", lambda: None, lambda: ledger.hold(a, b, 1)),
        ("capture", lambda: ledger.hold(a, b, 1), ledger.capture),
        ("void", lambda: ledger.hold(a, b, 1), ledger.void),
        ("balance", lambda: None, lambda: ledger.balance(a)),
        ("history page", lambda: None, lambda: ledger.history(a, limit=PAGE)),
        ("balance_at", lambda: None, lambda: ledger.balance_at(a, when)),
    ]
    rows = []
    for name, prepare, run in ops:
        counts: Counter[str] = Counter()
        for _ in range(2):  # the second run is the steady state
            arg = prepare()
            target.reset()
            if arg is None:
                run()  # type: ignore[call-arg]
            else:
                run(arg)  # type: ignore[call-arg]
            counts = target.counts()
        floor = FLOORS[name]
        rows.append(
            {
                "operation": name,
                "commands": dict(sorted(counts.items())),
                "total": sum(counts.values()),
                "floor": floor,
                "floor_total": sum(floor.values()),
                "write": name in WRITE_ROWS,
                "meets_floor": Counter(counts) == Counter(floor),
            }
        )
    return rows


# --------------------------------------------------------------------------- throughput


def open_pool(ledger: Ledger, size: int) -> list[Any]:
    return [ledger.open_account({"bench": "pool", "n": n}) for n in range(size)]


def throughput(target: Target, cfg: Settings, log: Callable[[str], None]) -> list[dict[str, Any]]:
    sync_db, async_db = target.database("throughput")
    ledger = Ledger(sync_db)
    pool = open_pool(ledger, LEGS * max(CONCURRENCY))
    baseline = SyncBaseline(sync_db)
    baseline.setup(ledger, pool)
    abase = AsyncBaseline(async_db)
    rows: list[dict[str, Any]] = []

    async def run_async() -> None:
        aledger = AsyncLedger(async_db)
        await aledger.ensure_indexes()
        for kind in cfg.writes:
            for c in CONCURRENCY:
                per = max(cfg.ops // c, 2)
                rates: dict[str, list[float]] = {"ledger": [], "baseline": []}
                sides = [("ledger", aledger, ledger), ("baseline", abase, baseline)]
                for n in range(cfg.rounds):
                    for label, api, sapi in alternate(sides, n):
                        args = prepare_args(sapi, kind, pool, c, per)
                        rate = await time_async(
                            async_workload(api, kind, pool), args, cfg.collector, cfg.clock
                        )
                        rates[label].append(rate)
                rows.append(row(kind, f"async x{c}", rates))
                log(f"  {kind:9s} async x{c:<3d} {fmt_rate(rows[-1])}")

    for kind in cfg.writes:
        rates = {"ledger": [], "baseline": []}
        for n in range(cfg.rounds):
            for label, api in alternate([("ledger", ledger), ("baseline", baseline)], n):
                args = prepare_args(api, kind, pool, 1, cfg.ops)[0]
                fn = sync_workload(api, kind, pool)
                for arg in args[:3]:  # warm-up, not timed
                    fn(0, arg)
                rates[label].append(time_sync(fn, args[3:], cfg.collector, cfg.clock))
        rows.append(row(kind, "sync", rates))
        log(f"  {kind:9s} sync       {fmt_rate(rows[-1])}")
    try:
        asyncio.run(run_async())
    finally:
        gc.unfreeze()
    return rows


def web_rows(target: Target, cfg: Settings, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """JSON balance reads and increases through ``mongoledger.web`` (benchmarks/web.py); none
    without the web extra."""
    try:
        import mongoledger.web  # noqa: F401 - the web extra is there
        from benchmarks.web import web_throughput
    except ImportError as exc:  # pragma: no cover - the dev install has the web extra
        log(f"  skipped: {exc} (pip install 'mongoledger[web]')")
        return []
    _, async_db = target.database("web")

    async def run() -> list[dict[str, Any]]:
        if target.uri is None:
            return await web_throughput(async_db, cfg.ops, cfg.rounds, cfg.collector, log)
        # PyMongo binds an async client to the event loop it first ran on: this one gets its own.
        client: Any = pymongo.AsyncMongoClient(target.uri)
        try:
            db = client[async_db.name]
            return await web_throughput(db, cfg.ops, cfg.rounds, cfg.collector, log)
        finally:
            await client.close()

    try:
        return asyncio.run(run())
    finally:
        gc.unfreeze()


def prepare_args(api: Any, kind: str, pool: list[Any], workers: int, per: int) -> list[list[Any]]:
    """Per worker, the argument of each call: a fresh transfer's leg for a revert, a fresh
    hold for a capture."""
    if kind not in ("revert", "capture"):
        return [list(range(per + 3)) for _ in range(workers)]
    out = []
    for w in range(workers):
        a, b = pool[w * LEGS], pool[w * LEGS + 1]
        if kind == "revert":
            out.append([api.transfer(a, b, 1)[0] for _ in range(per + 3)])
        else:
            out.append([api.hold(a, b, 1) for _ in range(per + 3)])
    return out


def row(kind: str, mode: str, rates: dict[str, list[float]]) -> dict[str, Any]:
    """One cell: each side's best round, and the ledger/baseline time ratio as the median over
    the rounds of the two sides measured back to back (one side's lucky or unlucky block, on a
    shared machine, moves the ratio of best rounds; it barely moves this median)."""
    paired = [b / led for led, b in zip(rates["ledger"], rates["baseline"], strict=True)]
    return {
        "operation": kind,
        "mode": mode,
        "ledger_ops_s": round(max(rates["ledger"]), 1),
        "baseline_ops_s": round(max(rates["baseline"]), 1),
        "ratio": round(statistics.median(paired), 3),  # time per operation, ledger/baseline
        "round_ratios": [round(r, 3) for r in paired],
    }


def fmt_rate(cell: dict[str, Any]) -> str:
    return (
        f"ledger {cell['ledger_ops_s']:8.0f}/s  baseline {cell['baseline_ops_s']:8.0f}/s  "
        f"ratio {cell['ratio']:.2f} (rounds {', '.join(f'{r:.2f}' for r in cell['round_ratios'])})"
    )


# --------------------------------------------------------------------------- growth


def median_time(fn: Callable[[], Any], samples: int) -> float:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / den, 2) if den else None


def growth(
    uri: str | None, cfg: Settings, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    seconds: dict[str, list[float]] = {q: [] for q in GROWTH_QUERIES}
    plans: dict[str, Any] = {}
    load_seconds = []
    for n in cfg.sizes:
        # A capped oplog: the bulk load should not keep a million change events around.
        target = uri_target(uri) if uri else memory_target(oplog_size=10_000)
        try:
            loaded, times, explained = measure_size(target, n, cfg, explain=bool(uri))
        finally:
            target.drop()
            gc.unfreeze()
        load_seconds.append(loaded)
        plans = explained or plans
        for q in GROWTH_QUERIES:
            seconds[q].append(times[q])
        log(
            f"  {n:>9,d} transactions: loaded in {loaded}s; "
            + ", ".join(f"{q} {times[q] * 1000:.2f} ms" for q in GROWTH_QUERIES)
        )
    result = {
        "sizes": cfg.sizes,
        "load_seconds": load_seconds,
        "queries": {
            q: {
                "seconds": [round(s, 6) for s in seconds[q]],
                "exponent": slope(cfg.sizes, seconds[q]),
            }
            for q in GROWTH_QUERIES
        },
    }
    return result, plans


GROWTH_QUERIES = ("history page", "balance_at", "report page", "verify")


def measure_size(
    target: Target, n: int, cfg: Settings, *, explain: bool
) -> tuple[float, dict[str, float], dict[str, Any]]:
    db, _ = target.database(f"growth{n}")
    ledger = Ledger(db)
    start = time.perf_counter()
    accounts, last = load(ledger, n)
    loaded = round(time.perf_counter() - start, 2)
    rng = random.Random(n)
    picks = [rng.choice(accounts)["_id"] for _ in range(cfg.samples)]
    middle = BASE_DATE + (last - BASE_DATE) / 2
    ledger.history(picks[0], limit=PAGE)  # warm: the engine builds an index on first use
    ledger.balance_at(picks[0], middle)
    histories = iter(picks)
    balances = iter(picks)
    times = {
        "history page": median_time(
            lambda: ledger.history(next(histories), limit=PAGE), cfg.samples
        ),
        "balance_at": median_time(lambda: ledger.balance_at(next(balances), middle), cfg.samples),
        "report page": median_time(lambda: ledger.report(limit=PAGE), max(cfg.samples // 4, 1)),
    }
    start = time.perf_counter()
    report = ledger.verify()
    times["verify"] = time.perf_counter() - start
    if not report.ok:
        raise RuntimeError(f"the loaded data does not verify: {report}")
    plans = explain_plans(target, ledger, picks[0], middle) if explain else {}
    return loaded, times, plans


def explain_plans(target: Target, ledger: Ledger, account: Any, when: Any) -> dict[str, Any]:
    """The winning plan of every query the ledger sends for each read (a real server only):
    the ``find`` and ``aggregate`` commands are captured by command monitoring as sent, then
    explained, so the plans are those of the ledger's own queries, not of copies of them."""
    listener = target.listener
    assert listener is not None, "explain needs a server's command monitoring"
    doc = ledger.accounts.find_one({"_id": account})
    attrs = {"user_id": doc["user_id"], "type": doc["type"]}
    reads: dict[str, Callable[[], Any]] = {
        "history page": lambda: ledger.history(account, limit=PAGE),
        "history by date": lambda: ledger.history(account, start=BASE_DATE, end=when, limit=PAGE),
        "balance_at": lambda: ledger.balance_at(account, when),
        "calculate_balance": lambda: ledger.calculate_balance(account),
        "account statistics": lambda: ledger.statistics(account, period="month"),
        "account by attributes": lambda: ledger.balance(attrs),
        "report by balance": lambda: ledger.report(limit=PAGE),
        "report by creation": lambda: ledger.report(sort="-created_at", limit=PAGE),
        "verify (its link checks included)": ledger.verify,
        "idempotency key lookup": lambda: ledger.increase(
            account, 1, idempotency_key="bench-explain"
        ),
        "revert (reads the operation's legs)": lambda: ledger.revert(
            ledger.history(account, limit=1)[0].id
        ),
    }
    plans: dict[str, Any] = {}
    for name, read in reads.items():
        listener.captured = []
        try:
            read()
        finally:
            captured, listener.captured = listener.captured, None
        for n, (database, command) in enumerate(captured, start=1):
            label = name if len(captured) == 1 else f"{name} ({n})"
            plans[label] = plan_summary(explain_command(target.sync[database], command))
    return plans


# What a captured command carries besides the query itself: session, transaction, cluster
# time and read concern fields, which an explain must not repeat.
_NOT_EXPLAINED = frozenset(
    {"lsid", "$db", "$clusterTime", "$readPreference", "txnNumber", "autocommit"}
    | {"startTransaction", "readConcern", "writeConcern", "apiVersion", "apiStrict"}
)


def explain_command(db: Any, command: dict[str, Any]) -> Any:
    """``explain`` of a captured ``find``/``aggregate`` command (queryPlanner verbosity)."""
    query = {k: v for k, v in command.items() if k not in _NOT_EXPLAINED}
    return db.command({"explain": query, "verbosity": "queryPlanner"})


# Where explain output nests plans (find, aggregate, sharded).
PLAN_KEYS = frozenset(
    {"winningPlan", "inputStage", "inputStages", "queryPlan", "queryPlanner", "$cursor"}
    | {"stages", "shards"}
)


def plan_summary(explained: dict[str, Any]) -> dict[str, Any]:
    stages: list[str] = []
    indexes: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "stage" in node:
                stages.append(node["stage"])
                if "indexName" in node:
                    indexes.append(node["indexName"])
            for key, value in node.items():
                if key in PLAN_KEYS:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(explained)
    scans = [s for s in stages if "SCAN" in s or s in ("IDHACK", "EXPRESS_IXSCAN")]
    collscan = any(s == "COLLSCAN" for s in stages)
    return {
        "stages": stages,
        "indexes": indexes,
        "access": "COLLSCAN" if collscan else ("IXSCAN" if scans else "?"),
    }


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "pymongo": pymongo.version,
        "bson_c_extension": bson.has_c(),
    }


def markdown(results: dict[str, Any]) -> str:
    out = []
    meta = results["meta"]
    if "commands" not in results:  # --store-only
        from benchmarks import store

        return "\n".join(store.markdown(results["store"])) + "\n"
    m = meta["machine"]
    out.append(
        f"Target: {meta['target']}. Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, "
        f"Python {m['python']}, PyMongo {m['pymongo']}."
        + (" Quick run (small counts)." if meta["quick"] else "")
    )
    out.append("")
    out.append("### Commands per operation (steady state)")
    out.append("")
    out.append("| operation | commands | total | floor | meets floor |")
    out.append("|---|---|---:|---:|---|")
    for r in results["commands"]:
        cmds = " + ".join(f"{k}×{v}" if v > 1 else k for k, v in r["commands"].items())
        meets = ("yes" if r["meets_floor"] else "**no**") if r["write"] else "(read)"
        out.append(f"| {r['operation']} | {cmds} | {r['total']} | {r['floor_total']} | {meets} |")
    out.append("")
    out.append("### Throughput: ledger vs hand-written PyMongo baseline (same engine, same run)")
    out.append("")
    collector = "on" if meta.get("collector_in_timed_blocks") else "off (`--gc`: on)"
    out.append(
        f"{meta['rounds']} rounds of {meta['ops_per_measurement']:,} operations per cell and "
        "side, the sides alternating which goes first; ops/s: the best round; ledger/baseline "
        "time: the median over the rounds of the two sides measured back to back; cyclic "
        f"garbage collector in timed blocks: {collector}; clock: "
        + ("this process's CPU time (`--cpu`)." if meta.get("cpu_clock") else "wall time.")
    )
    out.append("")
    out.append("| operation | mode | ledger ops/s | baseline ops/s | ledger/baseline time |")
    out.append("|---|---|---:|---:|---:|")
    for r in results["throughput"]:
        ratio = r["ratio"]
        mark = "" if ratio is None or ratio <= 1.3 else f" (**{ratio:.3f} > 1.3**)"
        out.append(
            f"| {r['operation']} | {r['mode']} | {r['ledger_ops_s']:,.0f} | "
            f"{r['baseline_ops_s']:,.0f} | {ratio:.2f}{mark} |"
        )
    if results.get("contention"):
        out.append("")
        out.extend(contention.markdown_rows(results["contention"]))
    if results.get("web"):
        from benchmarks.web import markdown_rows

        out.append("")
        out.extend(markdown_rows(results["web"]))
    g = results["growth"]
    if not g["sizes"]:  # --only: throughput alone
        return "\n".join(out) + "\n"
    out.append("")
    out.append("### Growth with collection size (median time per call)")
    out.append("")
    sizes = g["sizes"]
    out.append("| query | " + " | ".join(f"{n:,} txns" for n in sizes) + " | growth exponent |")
    out.append("|---|" + "---:|" * (len(sizes) + 1))
    for q, data in g["queries"].items():
        cells = " | ".join(f"{s * 1000:,.2f} ms" for s in data["seconds"])
        exp = "n/a" if data["exponent"] is None else f"{data['exponent']:.2f}"
        out.append(f"| {q} | {cells} | {exp} |")
    if results.get("explain"):
        out.append("")
        out.append("### Winning plans (explain)")
        out.append("")
        out.append("| query shape | access | indexes | stages |")
        out.append("|---|---|---|---|")
        for name, plan in results["explain"].items():
            out.append(
                f"| {name} | {plan['access']} | {', '.join(plan['indexes']) or '-'} | "
                f"{' → '.join(reversed(plan['stages']))} |"
            )
    w = results.get("wire")
    if w:
        out.append("")
        out.append("### Wire overhead: the same transfers in process and over loopback")
        out.append("")
        out.append(
            f"`transfer`, {w['rounds']} alternating rounds of {w['ops']:,}; ops/s: the best "
            "round; ratio: the median over rounds of loopback time / in-process time (target "
            "≤ 2). In process: `MemoryClient`/`AsyncMemoryClient`; over loopback: real PyMongo "
            "(`MongoClient`/`AsyncMongoClient`) to `mongoledger serve-db --memory` in its own "
            "process."
        )
        out.append("")
        out.append(
            "| operation | mode | in process ops/s | over loopback ops/s | "
            "loopback/in-process time |"
        )
        out.append("|---|---|---:|---:|---:|")
        for r in w["rows"]:
            mark = "" if r["ratio"] <= 2 else f" (**{r['ratio']:.2f} > 2**)"
            out.append(
                f"| {r['operation']} | {r['mode']} | {r['in_process_ops_s']:,.0f} | "
                f"{r['loopback_ops_s']:,.0f} | {r['ratio']:.2f}{mark} |"
            )
        out.append("")
        out.append(
            f"Idle server CPU with a connected client: {w['idle_cpu_percent']:.2f}% of one core "
            f"over {w['idle_seconds']:.0f} s."
        )
    for name, peer in (results.get("peers") or {}).items():
        out.append("")
        out.append(f"### Peer: {name} and mongoledger through the same serve-db")
        out.append("")
        if "medici" not in peer:
            out.append(f"Not measured: {peer.get('skipped') or peer.get('error')}")
            continue
        out.append(
            "| ledger | transfers/s (sequential) | round trips per transfer | "
            "transfers/s (concurrent) | failed | balances sum to 0 |"
        )
        out.append("|---|---:|---:|---:|---:|---|")
        for label, r in (("medici", peer["medici"]), ("mongoledger", peer["mongoledger"])):
            out.append(
                f"| {label} | {r['sequential_ops_s']:,.0f} | {r['commands_per_transfer']:.1f} | "
                f"{r['concurrent_ops_s']:,.0f} (x{r['workers']}) | {r['failed']} | "
                f"{'yes' if r['balance_sum'] == 0 else 'NO: ' + str(r['balance_sum'])} |"
            )
        names = peer["medici"].get("commands")
        if names:
            listed = ", ".join(f"{k} {v:g}" for k, v in sorted(names.items()))
            out.append("")
            out.append(f"medici's commands per transfer: {listed}.")
    if results.get("store"):
        from benchmarks import store

        out += store.markdown(results["store"])
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if args.wire:
            from benchmarks.wire import serve_db

            args.uri, _pid = stack.enter_context(serve_db())
        return _run(args)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import wire

    only = None if args.only is None else [op.strip() for op in args.only.split(",") if op.strip()]
    cfg = settings(args.quick, args.large, args.gc, only)
    if args.cpu:
        cfg.clock = time.process_time

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    target = uri_target(args.uri) if args.uri else memory_target()
    if args.wire:
        target.name = f"memory engine's wire endpoint (serve-db at {target.name[11:]})"
    started = time.perf_counter()
    if getattr(args, "store_only", False):
        from benchmarks import store

        return {
            "meta": _meta(target, cfg, started),
            "store": store.run(cfg.quick, cfg.ops, cfg.rounds, log),
        }
    try:
        log(f"commands per operation on the {target.name}")
        db, _ = target.database("commands")
        ledger = Ledger(db)
        pool = open_pool(ledger, LEGS)
        ledger.increase(pool[0], 1)  # warm: transaction detection and indexes
        commands = count_commands(target, ledger, pool)
        log(f"throughput (best of {cfg.rounds}, {cfg.ops} operations each)")
        rates = throughput(target, cfg, log)
        hot: list[dict[str, Any]] = []
        if cfg.writes:  # (--only web: the web app's rows alone)
            log(f"contention: transfers among {contention.HOT} hot accounts")
            hot = contention.run(target, cfg.ops, cfg.collector, log)
        web = []
        if cfg.web:
            log("the web app (mongoledger.web) vs the library")
            web = web_rows(target, cfg, log)
    finally:
        target.drop()
    log("growth")
    grown, plans = growth(args.uri, cfg, log)
    overhead = None
    if not only:  # --only measures the throughput alone
        log("wire overhead: transfers in process vs over loopback (serve-db), same run")
        overhead = wire.overhead(
            64 if cfg.quick else 512, 2 if cfg.quick else 6, 1.0 if cfg.quick else 5.0, log
        )
    peers: dict[str, Any] = {}
    for peer in args.peer or ():
        log(f"peer: {peer} through the same serve-db")
        peers[peer] = wire.medici(64 if cfg.quick else 1000, 8, log)
    results = {
        "commands": commands,
        "throughput": rates,
        "contention": hot,
        "web": web,
        "growth": grown,
        "explain": plans,
        "wire": overhead,
        "peers": peers,
    }
    if not args.uri and not args.wire and only is None:
        from benchmarks import store

        results["store"] = store.run(cfg.quick, cfg.ops, cfg.rounds, log)
    return {"meta": _meta(target, cfg, started), **results}


def _meta(target: Target, cfg: Settings, started: float) -> dict[str, Any]:
    return {
        "target": target.name,
        "quick": cfg.quick,
        "large": cfg.large,
        "date": now().isoformat(timespec="seconds"),
        "machine": machine(),
        "ops_per_measurement": cfg.ops,
        "rounds": cfg.rounds,
        "collector_in_timed_blocks": cfg.collector,
        "cpu_clock": cfg.clock is time.process_time,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument("--uri", help="a MongoDB replica set (default: the in-memory engine)")
    parser.add_argument(
        "--wire",
        action="store_true",
        help="run against the engine's own wire endpoint (a serve-db subprocess), as --uri",
    )
    parser.add_argument(
        "--peer",
        action="append",
        choices=["medici"],
        help="also run a peer ledger's transfers through the same serve-db (Node, npm)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts (under a minute)")
    parser.add_argument("--large", action="store_true", help="add the 1M-transaction point")
    parser.add_argument(
        "--only",
        metavar="OPS",
        help=f"measure the throughput of these alone, no growth (of {','.join(WRITES)}; "
        "web: the web app's rows)",
    )
    parser.add_argument("--json", default="bench-results.json", help="where to write the JSON")
    parser.add_argument(
        "--store-only",
        action="store_true",
        help="run only the embedded store's part (benchmarks/store.py)",
    )
    parser.add_argument(
        "--gc",
        action="store_true",
        help="keep the cyclic garbage collector on while throughput is timed (default: off)",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time throughput by this process's CPU time (in-memory engine only): a shared, "
        "busy machine then moves the ratios far less than wall time",
    )
    args = parser.parse_args(argv)
    if args.cpu and (args.uri or args.wire):
        parser.error(
            "--cpu times the in-memory engine only (a server's work is not this process's)"
        )
    unknown = set((args.only or "").replace(" ", "").split(",")) - {"", *WRITES, "web"}
    if unknown:
        parser.error(f"--only {args.only!r}: unknown operations {sorted(unknown)}")
    results = run(args)
    print(markdown(results))
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
