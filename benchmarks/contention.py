"""Contention: transfers among ``HOT`` (3) hot accounts by 8 threads and by 64 tasks at once,
a section of ``scripts/bench``: transfers/s, WriteConflicts per committed transfer (the engine
counts them; on a server, command monitoring's failed commands with code 112) and p50/p99
latency of a transfer.
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pymongo

from benchmarks._timing import timed_block
from mongoledger import AsyncLedger, Ledger

__all__ = ["CONTENDERS", "HOT", "Contenders", "Deployment", "markdown_rows", "run"]


class Deployment(Protocol):
    """What the contention rows need of where the benchmark runs (``bench.Target``)."""

    uri: str | None  # a server's (an async client of it serves one event loop)
    listener: Any  # a server's command monitoring, or None

    def database(self, label: str) -> tuple[Any, Any]: ...  # (sync, async) of a new database

    def conflicts(self) -> int: ...  # WriteConflict answers so far


HOT = 3  # accounts every worker transfers among
CONTENDERS = (("threads", 8), ("tasks", 64))


def run(
    target: Deployment, ops: int, collector: bool, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Transfers among ``HOT`` hot accounts by 8 threads, then by 64 tasks (about ``ops``
    transfers by each): what hot accounts cost when transactions overlap and conflict (each
    conflict is a WriteConflict that with_transaction retried). ``collector``: as
    ``timed_block``'s."""
    sync_db, async_db = target.database("contention")
    ledger = Ledger(sync_db)
    hot = [ledger.open_account({"bench": "hot", "n": n}) for n in range(HOT)]
    for account in hot:
        ledger.increase(account, 10**12)  # never short of funds
    rows = []
    for kind, workers in CONTENDERS:
        contenders = Contenders(hot, workers, max(ops // workers, 2), collector)
        before = target.conflicts()
        if kind == "threads":
            elapsed = contend_threads(ledger, contenders)
        else:
            elapsed = asyncio.run(contend_in_a_loop(target, async_db, contenders))
        conflicts = target.conflicts() - before
        rows.append(contention_row(kind, workers, contenders.latencies, elapsed, conflicts))
        r = rows[-1]
        log(
            f"  {workers:3d} {kind:7s} {r['ops_s']:8.0f} transfers/s  {r['conflicts_per_op']:.2f} "
            f"conflicts per transfer  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
        )
    gc.unfreeze()
    return rows


@dataclass
class Contenders:
    """``workers`` threads or tasks, each making ``per_worker`` transfers among ``hot``."""

    hot: list[Any]
    workers: int
    per_worker: int
    collector: bool  # keep the cyclic garbage collector on while timed (timed_block)
    latencies: list[float] = field(default_factory=list)  # seconds, one per transfer

    def pairs(self, w: int) -> Iterator[list[Any]]:
        """Worker ``w``'s transfers: two of the hot accounts each, a seeded random draw."""
        rng = random.Random(w)
        for _ in range(self.per_worker):
            yield rng.sample(self.hot, 2)


def contend_threads(ledger: Ledger, contenders: Contenders) -> float:
    latencies = contenders.latencies

    def work(w: int) -> None:
        for a, b in contenders.pairs(w):
            start = time.perf_counter()
            ledger.transfer(a, b, 1)
            latencies.append(time.perf_counter() - start)

    workers = contenders.workers
    barrier = threading.Barrier(workers + 1)

    def target(w: int) -> None:
        barrier.wait()
        work(w)

    threads = [threading.Thread(target=target, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    with timed_block(contenders.collector):
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start


async def contend_in_a_loop(target: Deployment, async_db: Any, contenders: Contenders) -> float:
    """``contend_tasks`` on the target's async database; on a server through a client of this
    event loop (PyMongo binds an async client to the loop it first ran on), counting its
    conflicts with the target's listener."""
    if target.uri is None:
        return await contend_tasks(AsyncLedger(async_db), contenders)
    listeners = [target.listener] if target.listener is not None else []
    client: Any = pymongo.AsyncMongoClient(target.uri, event_listeners=listeners)
    try:
        ledger = AsyncLedger(client[async_db.name])
        return await contend_tasks(ledger, contenders)
    finally:
        await client.close()


async def contend_tasks(ledger: AsyncLedger, contenders: Contenders) -> float:
    latencies = contenders.latencies

    async def work(w: int) -> None:
        for a, b in contenders.pairs(w):
            start = time.perf_counter()
            await ledger.transfer(a, b, 1)
            latencies.append(time.perf_counter() - start)

    hot = contenders.hot
    await ledger.transfer(hot[0], hot[1], 1)  # warm: transaction detection
    with timed_block(contenders.collector):
        start = time.perf_counter()
        await asyncio.gather(*(work(w) for w in range(contenders.workers)))
        return time.perf_counter() - start


def contention_row(
    kind: str, workers: int, latencies: list[float], elapsed: float, conflicts: int
) -> dict[str, Any]:
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "mode": f"{workers} {kind}",
        "transfers": len(latencies),
        "ops_s": round(len(latencies) / elapsed, 1),
        "conflicts": conflicts,
        "conflicts_per_op": round(conflicts / len(latencies), 3),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
    }


def markdown_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The section of ``scripts/bench``'s table: one row per contender."""
    out = [
        f"### Contention: transfers among {HOT} hot accounts",
        "",
        "Every transfer moves two of the three accounts, so concurrent transactions "
        "conflict (WriteConflict, retried by with_transaction after a backoff): the cost "
        "of hot accounts.",
        "",
        "| workers | transfers | transfers/s | conflicts per transfer | p50 | p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    out.extend(
        f"| {r['mode']} | {r['transfers']:,} | {r['ops_s']:,.0f} | "
        f"{r['conflicts_per_op']:.2f} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms |"
        for r in rows
    )
    return out
