"""kill -9 of a writer process at random moments: every acknowledged operation survives.

Each round starts ``tests/memory/store_writer.py`` on the same store (a sync writer, then 16
async tasks, alternately), lets it write for a random time, kills it with SIGKILL (no cleanup
runs: whatever the kernel had not written is gone, the lock goes with the process) and opens
the store here: every operation the writer printed as returned must be there, the ledger must
still sum to zero and ``verify()`` must find nothing. Compaction runs often in the writer, so
kills land inside compactions too. ``MONGOLEDGER_CRASH_ROUNDS`` sets the number of rounds
(default 4).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from mongoledger import Ledger
from mongoledger.memory import MemoryClient, StoreRecoveryWarning

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("MONGOLEDGER_CRASH_ROUNDS", "4"))

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def run_and_kill(path: Path, mode: str, round_number: int, after: float) -> list[str]:
    """Start a writer, kill it ``after`` seconds after it is ready; its acknowledged ids."""
    command = [sys.executable, "-m", "tests.memory.store_writer", str(path), mode]
    with subprocess.Popen(
        [*command, str(round_number)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as writer:
        assert writer.stdout is not None
        ready = writer.stdout.readline().strip()
        if ready != "ready":
            writer.kill()
            raise AssertionError(f"the writer did not start: {ready!r} {writer.communicate()}")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(writer.stdout or ()), daemon=True)
        reader.start()
        time.sleep(after)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        reader.join(10)
        assert writer.returncode == -signal.SIGKILL
        stderr = writer.stderr.read() if writer.stderr else ""
        assert "Traceback" not in stderr, stderr
    return [line.split()[1] for line in lines if line.startswith("ok ")]


def check(path: Path, acknowledged: list[str]) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreRecoveryWarning)
        client = MemoryClient(path=path)
    try:
        ledger = Ledger(client["shop"])
        missing = []
        for tid in acknowledged:
            try:
                ledger.get_transaction(ObjectId(tid))
            except LookupError:
                missing.append(tid)
        assert not missing, f"{len(missing)} acknowledged operations lost, e.g. {missing[:3]}"
        accounts = list(client["shop"]["accounts"].find({}, {"balance": 1}))
        assert sum(a["balance"] for a in accounts) == 0
        amounts = client["shop"]["transactions"].aggregate(
            [{"$group": {"_id": None, "total": {"$sum": "$amount"}, "n": {"$sum": 1}}}]
        )
        (totals,) = list(amounts) or [{"total": 0, "n": 0}]
        assert totals["total"] == 0
        report = ledger.verify()
        assert report.ok, report
        return {
            "transactions": totals["n"],
            "torn": [str(w.message) for w in caught if w.category is StoreRecoveryWarning],
            "compacted": (path / "snapshot").exists(),
        }
    finally:
        client.close()


def test_kill_9_at_random_moments_loses_no_acknowledged_operation(tmp_path: Path) -> None:
    seed = int(os.environ.get("MONGOLEDGER_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    acknowledged: list[str] = []
    found = []
    for round_number in range(ROUNDS):
        mode = "async" if round_number % 2 else "sync"
        after = rng.uniform(0.05, 0.6)
        acknowledged += run_and_kill(tmp_path, mode, round_number, after)
        try:
            found.append(check(tmp_path, acknowledged))
        except AssertionError as exc:
            raise AssertionError(f"round {round_number} ({mode}, seed {seed}): {exc}") from exc
    # Rounds build on each other: the store held every round's writes at the end (a kill
    # may land before a round's first commit returned, but not in every round).
    assert acknowledged, f"seed {seed}: no round acknowledged anything"
    assert found[-1]["transactions"] >= len(acknowledged)
