"""The wire endpoint in the benchmark: its overhead, its idle cost, and a peer ledger beside ours.

* ``serve_db()`` starts ``mongoledger serve-db --memory`` in a subprocess (the server gets a
  process and a core of its own, as a deployed one would) and yields its URI and pid.
* ``overhead()``: the same transfers through the same ledger code, in process
  (``MemoryClient``) and over loopback (real PyMongo to ``serve-db``), in alternating rounds of
  one run; and the server's CPU while a connected client sits idle.
* ``medici()``: medici (Node + Mongoose, npm) posts the same transfers through the same server
  as the ledger, sequentially and concurrently; ops/s, round trips per transfer (command
  monitoring on both sides) and a correctness check after the concurrent run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymongo
from pymongo import monitoring

ROOT = Path(__file__).resolve().parents[1]
NODE_TOOLS = ROOT / "tools" / "node"


@contextlib.contextmanager
def serve_db(*options: str) -> Iterator[tuple[str, int]]:
    """``mongoledger serve-db --port 0`` in a subprocess (``options``: default ``--memory``):
    (URI, pid)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mongoledger",
            "serve-db",
            *(options or ["--memory"]),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        uri = proc.stdout.readline().strip()
        if not uri.startswith("mongodb://"):
            raise RuntimeError(f"serve-db did not print a URI (got {uri!r})")
        yield uri, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


class Counting(monitoring.CommandListener):
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counts[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _transfers(ledger: Any, a: Any, b: Any, n: int) -> float:
    """Seconds for ``n`` transfers back and forth between ``a`` and ``b``."""
    started = time.perf_counter()
    for i in range(n):
        if i % 2:
            ledger.transfer(b, a, 1)
        else:
            ledger.transfer(a, b, 1)
    return time.perf_counter() - started


async def _async_transfers(pairs: list[tuple[Any, Any, Any]], per: int) -> float:
    """Seconds for ``per`` transfers by each of ``len(pairs)`` tasks (own accounts each)."""

    async def worker(ledger: Any, a: Any, b: Any) -> None:
        for i in range(per):
            if i % 2:
                await ledger.transfer(b, a, 1)
            else:
                await ledger.transfer(a, b, 1)

    started = time.perf_counter()
    await asyncio.gather(*(worker(*pair) for pair in pairs))
    return time.perf_counter() - started


def _row(mode: str, ops: int, times: dict[str, list[float]]) -> dict[str, Any]:
    ratios = [w / m for m, w in zip(times["in process"], times["over loopback"], strict=True)]
    return {
        "operation": "transfer",
        "mode": mode,
        "in_process_ops_s": round(ops / min(times["in process"]), 1),
        "loopback_ops_s": round(ops / min(times["over loopback"]), 1),
        "ratio": round(statistics.median(ratios), 3),
        "round_ratios": [round(x, 3) for x in ratios],
    }


def overhead(
    ops: int, rounds: int, idle_seconds: float, log: Callable[[str], None]
) -> dict[str, Any]:
    """Transfer ops/s in process vs over loopback (sync, and async with 16 tasks; alternating
    rounds of one run), and the idle server's CPU with a client connected."""
    from mongoledger import Ledger
    from mongoledger.memory import MemoryClient

    def log_row(row: dict[str, Any]) -> None:
        log(
            f"  transfer {row['mode']:9s} in process {row['in_process_ops_s']:8.0f}/s  over "
            f"loopback {row['loopback_ops_s']:8.0f}/s  ratio {row['ratio']:.2f}"
        )

    rows: list[dict[str, Any]] = []
    with serve_db() as (uri, pid):
        client: Any = pymongo.MongoClient(uri)
        try:
            sides: dict[str, Any] = {}
            for label, source in (("in process", MemoryClient()), ("over loopback", client)):
                ledger = Ledger(source[f"bench_wire_{uuid.uuid4().hex[:8]}"])
                a = ledger.open_account({"bench": "wire", "n": 0})
                b = ledger.open_account({"bench": "wire", "n": 1})
                _transfers(ledger, a, b, 10)  # warm: indexes, transaction detection, pools
                sides[label] = (ledger, a, b)
            times: dict[str, list[float]] = {label: [] for label in sides}
            for r in range(rounds):
                for label in list(sides) if r % 2 == 0 else list(sides)[::-1]:
                    times[label].append(_transfers(*sides[label], ops))
            rows.append(_row("sync", ops, times))
            log_row(rows[-1])
            rows.append(asyncio.run(_async_overhead(uri, ops, rounds)))
            log_row(rows[-1])
            # Idle: the client stays connected (its monitor's awaitable hello included).
            before = cpu_seconds(pid)
            time.sleep(idle_seconds)
            used = cpu_seconds(pid) - before
        finally:
            client.close()
    result: dict[str, Any] = {"ops": ops, "rounds": rounds, "rows": rows}
    result["idle_seconds"] = idle_seconds
    result["idle_cpu_percent"] = round(100 * used / idle_seconds, 2)
    log(f"  idle server CPU {result['idle_cpu_percent']:.2f}% over {idle_seconds:.0f} s")
    return result


async def _async_overhead(uri: str, ops: int, rounds: int) -> dict[str, Any]:
    from mongoledger import AsyncLedger
    from mongoledger.memory import AsyncMemoryClient

    tasks = 16
    per = max(ops // tasks, 2)
    client: Any = pymongo.AsyncMongoClient(uri)
    try:
        sides: dict[str, list[tuple[Any, Any, Any]]] = {}
        for label, source in (("in process", AsyncMemoryClient()), ("over loopback", client)):
            ledger = AsyncLedger(source[f"bench_wire_{uuid.uuid4().hex[:8]}"])
            pairs = []
            for t in range(tasks):
                a = await ledger.open_account({"bench": "wire", "n": 2 * t})
                b = await ledger.open_account({"bench": "wire", "n": 2 * t + 1})
                pairs.append((ledger, a, b))
            await _async_transfers(pairs, 2)  # warm
            sides[label] = pairs
        times: dict[str, list[float]] = {label: [] for label in sides}
        for r in range(rounds):
            for label in list(sides) if r % 2 == 0 else list(sides)[::-1]:
                times[label].append(await _async_transfers(sides[label], per))
        return _row(f"async x{tasks}", per * tasks, times)
    finally:
        await client.close()


# --------------------------------------------------------------------------- medici

MEDICI_SCRIPT = NODE_TOOLS / "medici-bench.js"  # medici posting transfers (see the file)


def node_tools(log: Callable[[str], None]) -> Path | None:
    """``tools/node`` with its packages installed (``npm install`` once), or None when npm
    cannot install them (unreachable registry, no npm)."""
    if (NODE_TOOLS / "node_modules" / "medici").is_dir() and (
        NODE_TOOLS / "node_modules" / ".bin" / "mongosh"
    ).exists():
        return NODE_TOOLS
    npm = shutil.which("npm")
    if npm is None:
        log("  npm is not installed")
        return None
    log("  installing tools/node (npm install) ...")
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_TOOLS,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        log(f"  npm install failed: {done.stderr.strip()[-500:]}")
        return None
    return NODE_TOOLS


def medici(ops: int, workers: int, log: Callable[[str], None]) -> dict[str, Any]:
    """medici and mongoledger posting the same transfers through one ``serve-db``."""
    from mongoledger import Ledger

    tools = node_tools(log)
    if tools is None:
        return {"skipped": "npm could not install medici (see the log)"}
    script = MEDICI_SCRIPT
    with serve_db() as (uri, _pid):
        done = subprocess.run(
            ["node", str(script), uri, str(ops), str(workers), f"medici_{uuid.uuid4().hex[:8]}"],
            cwd=tools,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if done.returncode != 0:
            return {"error": done.stderr.strip()[-2000:]}
        peer = json.loads(done.stdout.strip().splitlines()[-1])
        log(f"  medici: {peer}")

        counting = Counting()
        client: Any = pymongo.MongoClient(uri, event_listeners=[counting])
        try:
            ledger = Ledger(client[f"ours_{uuid.uuid4().hex[:8]}"])
            a = ledger.open_account({"bench": "peer", "n": 0})
            b = ledger.open_account({"bench": "peer", "n": 1})
            _transfers(ledger, a, b, 10)
            counting.counts.clear()
            seconds = _transfers(ledger, a, b, ops)
            per = (
                sum(v for k, v in counting.counts.items() if k not in ("hello", "isMaster", "ping"))
                / ops
            )
            per_worker = max(ops // workers, 1)
            failed: list[BaseException] = []

            def worker(w: int) -> None:
                try:
                    for i in range(per_worker):
                        if (w + i) % 2:
                            ledger.transfer(b, a, 1)
                        else:
                            ledger.transfer(a, b, 1)
                except BaseException as exc:
                    failed.append(exc)

            threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            concurrent = time.perf_counter() - started
            ours = {
                "sequential_ops_s": ops / seconds,
                "commands_per_transfer": per,
                "concurrent_ops_s": (workers * per_worker) / concurrent,
                "workers": workers,
                "failed": len(failed),
                "balance_sum": ledger.balance(a) + ledger.balance(b),
                "verify_ok": ledger.verify().ok,
            }
        finally:
            client.close()
    log(f"  mongoledger: {ours}")
    return {"ops": ops, "medici": peer, "mongoledger": ours}
