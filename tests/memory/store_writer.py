"""A writer process for ``test_store_crash.py``: ledger operations on a store until killed.

``python -m tests.memory.store_writer DIR sync|async ROUND`` opens the store in ``DIR``, prints
``ready``, then runs zero-sum operations (transfers, three-leg posts, reverts) forever, printing
``ok <transaction id>`` after each one returns: that line is the acknowledgement the test holds
the store to after it kills this process with SIGKILL. Compaction runs often (a small
threshold), so kills also land inside compactions.
"""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

from mongoledger import AlreadyReverted, AsyncLedger, Ledger
from mongoledger.memory import AsyncMemoryClient, MemoryClient, _store

ACCOUNTS = 8
TASKS = 16


def operation(rng: random.Random, written: list[Any]) -> tuple[str, tuple[Any, ...]]:
    a, b, c = rng.sample(range(ACCOUNTS), 3)
    roll = rng.random()
    if roll < 0.1 and written:
        return "revert", (rng.choice(written),)
    if roll < 0.3:
        return "post", ([({"n": a}, -3), ({"n": b}, 2), ({"n": c}, 1)],)
    return "transfer", ({"n": a}, {"n": b}, rng.randint(1, 50))


def acknowledge(result: Any, written: list[Any]) -> None:
    tid = result[0] if isinstance(result, list) else result
    written.append(tid)
    print(f"ok {tid}", flush=True)


def run_sync(path: str, seed: int) -> None:
    client = MemoryClient(path=path)
    ledger = Ledger(client["shop"])
    ledger.ensure_indexes()
    rng = random.Random(seed)
    written: list[Any] = []
    print("ready", flush=True)
    while True:
        name, args = operation(rng, written)
        try:
            result = getattr(ledger, name)(*args)
        except AlreadyReverted:
            continue
        acknowledge(result, written)


async def run_async(path: str, seed: int) -> None:
    client = AsyncMemoryClient(path=path)
    ledger = AsyncLedger(client["shop"])
    await ledger.ensure_indexes()
    written: list[Any] = []

    async def worker(w: int) -> None:
        rng = random.Random(seed * 100 + w)
        while True:
            name, args = operation(rng, written)
            try:
                result = await getattr(ledger, name)(*args)
            except AlreadyReverted:
                continue
            acknowledge(result, written)

    print("ready", flush=True)
    await asyncio.gather(*(worker(w) for w in range(TASKS)))


def main() -> None:
    path, mode, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _store.COMPACT_MIN_BYTES = 48 * 1024
    if mode == "sync":
        run_sync(path, seed)
    else:
        asyncio.run(run_async(path, seed))


if __name__ == "__main__":
    main()
