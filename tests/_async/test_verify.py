"""verify() and its repair under concurrent writes: no false drift, no drift introduced."""

from __future__ import annotations

import asyncio
import random
import threading

from mongoledger import AsyncLedger
from mongoledger._async._io import sleep
from mongoledger.memory import AsyncMemoryClient

_IS_SYNC = False
ACCOUNTS = [f"acct-{i}" for i in range(6)]


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
