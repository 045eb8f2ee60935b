"""The embedded store as an engine column of ``scripts/bench``.

* **Throughput**: ledger transfers on ``MemoryServer(path=tmp)`` against the plain in-memory
  engine, in the same run, the two sides taking turns going first; sync and async (x1, x16,
  x64 tasks), with the fsyncs each operation cost on the store (group commit shares one fsync
  among concurrent committers).
* **One fsync** on the disk the store is on: ``write`` of a record-sized block plus
  ``fdatasync``, the cost a commit that waits alone pays.
* **Opening** a store of N ledger transactions (100,000; ``--quick``: 10,000): as its writer
  left it (snapshot plus journal tail), and right after a compaction; and a whole
  ``mongoledger balance`` command on it (process start included).
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._data import load
from benchmarks._timing import alternate, time_async, time_sync
from mongoledger import AsyncLedger, Ledger
from mongoledger.memory import AsyncMemoryClient, MemoryClient, MemoryServer

MODES = (("sync", 0), ("async x1", 1), ("async x16", 16), ("async x64", 64))
POOL = 128  # accounts: two per async worker at x64


def fsync_cost(directory: Path, samples: int = 200) -> dict[str, float]:
    """Median and 90th percentile microseconds of a 512-byte append plus its sync."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    block = b"x" * 512
    times = []
    sync = getattr(os, "fdatasync", os.fsync)
    try:
        for _ in range(samples):
            start = time.perf_counter()
            os.write(fd, block)
            sync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {
        "median_us": round(statistics.median(times) * 1e6, 1),
        "p90_us": round(times[int(len(times) * 0.9)] * 1e6, 1),
        "samples": samples,
    }


class _Side:
    """One engine: a sync and an async ledger over one server, with its account pool."""

    def __init__(self, name: str, server: MemoryServer) -> None:
        self.name = name
        self.server = server
        self.ledger = Ledger(MemoryClient(server=server)["bench"])
        self.aledger = AsyncLedger(AsyncMemoryClient(server=server)["bench"])
        self.pool = [self.ledger.open_account({"pool": n}) for n in range(POOL)]
        self.ledger.transfer(self.pool[0], self.pool[1], 1)  # warm: indexes, detection

    def fsyncs(self) -> tuple[int, int]:
        store = self.server.store
        if store is None:
            return 0, 0
        stats = store.stats
        return stats["fsyncs"], stats["records"]


def _time_block(side: _Side, workers: int, ops: int) -> tuple[float, int, int]:
    """ops/s of ``ops`` transfers (``workers`` tasks, 0: the calling thread), and the fsyncs
    and journal records they cost. Timed as the main throughput table times its blocks
    (``_timing``: the cyclic collector off meanwhile); the store's own compactions are not."""
    before = side.fsyncs()
    pool = side.pool
    if workers == 0:
        ledger = side.ledger

        def transfer(_: int, i: int) -> None:
            ledger.transfer(pool[0], pool[1], 1 + i % 7)

        rate = time_sync(transfer, range(ops), collector=False)
    else:
        per = max(ops // workers, 1)
        aledger = side.aledger

        async def atransfer(w: int, i: int) -> None:
            await aledger.transfer(pool[2 * w], pool[2 * w + 1], 1 + i % 7)

        rate = asyncio.run(time_async(atransfer, [range(per)] * workers, collector=False))
    after = side.fsyncs()
    return rate, after[0] - before[0], after[1] - before[1]


def throughput(
    directory: Path, ops: int, rounds: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    memory = _Side("memory", MemoryServer())
    store = _Side("store", MemoryServer(path=directory / "throughput"))
    rows = []
    try:
        for mode, workers in MODES:
            rates: dict[str, list[float]] = {"memory": [], "store": []}
            fsyncs = records = done = 0
            for n in range(rounds):
                for side in alternate([memory, store], n):
                    rate, synced, written = _time_block(side, workers, ops)
                    rates[side.name].append(rate)
                    if side is store:
                        fsyncs += synced
                        records += written
                        done += ops if workers == 0 else max(ops // workers, 1) * workers
            paired = [s / m for m, s in zip(rates["memory"], rates["store"], strict=True)]
            row = {
                "operation": "transfer",
                "mode": mode,
                "memory_ops_s": round(max(rates["memory"]), 1),
                "store_ops_s": round(max(rates["store"]), 1),
                "ratio": round(statistics.median(paired), 3),
                "round_ratios": [round(r, 3) for r in paired],
                "fsyncs_per_op": round(fsyncs / done, 3),
                "commits_per_fsync": round(records / fsyncs, 2) if fsyncs else None,
            }
            rows.append(row)
            log(
                f"  transfer {mode:9s} memory {row['memory_ops_s']:7.0f}/s  store "
                f"{row['store_ops_s']:7.0f}/s  store/memory {row['ratio']:.2f}  fsyncs/op "
                f"{row['fsyncs_per_op']:.2f}"
            )
    finally:
        store.server.close()
        gc.unfreeze()
    return rows


def open_times(directory: Path, n: int, log: Callable[[str], None]) -> dict[str, Any]:

    path = directory / "open"
    client = MemoryClient(path=path)
    ledger = Ledger(client["bench"])
    start = time.perf_counter()
    accounts, _ = load(ledger, n)
    loaded = time.perf_counter() - start
    for i in range(2_000):  # real commits after the bulk load: a journal tail to replay
        ledger.transfer(accounts[i % 50]["_id"], accounts[i % 50 + 1]["_id"], 1)
    account = str(accounts[0]["_id"])
    client.close()
    as_left = _sizes(path)

    def timed_open() -> float:
        start = time.perf_counter()
        server = MemoryServer(path=path)
        elapsed = time.perf_counter() - start
        server.close()
        return elapsed

    opened = statistics.median(timed_open() for _ in range(3))
    server = MemoryServer(path=path)
    start = time.perf_counter()
    server.compact()
    compacted_in = time.perf_counter() - start
    server.close()
    compacted = statistics.median(timed_open() for _ in range(3))
    command = [sys.executable, "-m", "mongoledger", "--store", str(path), "--db", "bench"]
    command += ["balance", "--account-id", account]
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    result = {
        "transactions": n,
        "loaded_s": round(loaded, 2),
        "files_as_left": as_left,
        "open_as_left_s": round(opened, 3),
        "compact_s": round(compacted_in, 3),
        "files_compacted": _sizes(path),
        "open_compacted_s": round(compacted, 3),
        "balance_command_s": round(statistics.median(walls), 3),
    }
    log(
        f"  {n:,} transactions: open {opened:.2f}s as left ({_mib(as_left)}), "
        f"{compacted:.2f}s compacted; compaction {compacted_in:.2f}s; a whole balance "
        f"command {result['balance_command_s']:.2f}s"
    )
    return result


def _sizes(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.name != "lock"}


def _mib(sizes: dict[str, int]) -> str:
    return ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in sizes.items())


def run(quick: bool, ops: int, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="mongoledger-bench-store-", dir=os.getcwd()))
    try:
        log(f"the embedded store (in {directory})")
        cost = fsync_cost(directory)
        log(f"  one append + fdatasync: median {cost['median_us']:.0f} us")
        rows = throughput(directory, ops, rounds, log)
        opened = open_times(directory, 10_000 if quick else 100_000, log)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {"fsync": cost, "throughput": rows, "open": opened}


def markdown(results: dict[str, Any]) -> list[str]:
    out = ["", "### The embedded store (`MemoryClient(path=...)`) vs the in-memory engine", ""]
    cost = results["fsync"]
    out.append(
        f"One 512-byte append plus `fdatasync` on this disk: median {cost['median_us']:.0f} µs "
        f"(90th percentile {cost['p90_us']:.0f} µs). Transfers through the ledger, the two "
        "engines taking turns in each round; ops/s: the best round; store/memory: the median "
        "of the rounds' rate ratios."
    )
    out.append("")
    out.append("| operation | mode | memory ops/s | store ops/s | store/memory | fsyncs per op |")
    out.append("|---|---|---:|---:|---:|---:|")
    out.extend(
        f"| {r['operation']} | {r['mode']} | {r['memory_ops_s']:,.0f} | "
        f"{r['store_ops_s']:,.0f} | {r['ratio']:.2f} | {r['fsyncs_per_op']:.2f} |"
        for r in results["throughput"]
    )
    o = results["open"]
    out.append("")
    out.append(
        f"Opening a store of {o['transactions']:,} transactions: {o['open_as_left_s']:.2f} s as "
        f"its writer left it ({_mib(o['files_as_left'])}), {o['open_compacted_s']:.2f} s right "
        f"after a compaction ({_mib(o['files_compacted'])}, written in {o['compact_s']:.2f} s); "
        f"a whole `mongoledger balance` command on it: {o['balance_command_s']:.2f} s."
    )
    return out
