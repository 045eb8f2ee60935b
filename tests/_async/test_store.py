"""The embedded store under the ledger: restarts keep everything, listen resumes across them.

Each test opens ``AsyncMemoryClient(path=...)`` (the sync twin: ``MemoryClient``), closes it
and opens the directory again, as a process restart would (the lock, crashes and damaged files
are in ``tests/memory/test_store*.py``).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from mongoledger import AlreadyReverted, AsyncLedger, ChangeStreamHistoryLost
from mongoledger.memory import AsyncMemoryClient
from tests._async.test_watch import Recorder, start_listener, stop_listener, wait_for

_IS_SYNC = False


async def open_ledger(path: Path, **options: Any) -> tuple[AsyncMemoryClient, AsyncLedger]:
    client = AsyncMemoryClient(path=path, **options)
    ledger = AsyncLedger(client["shop"])
    await ledger.ensure_indexes()
    return client, ledger


async def snapshot_of(ledger: AsyncLedger) -> dict[str, Any]:
    """Everything a restart must keep: every document of every collection, and the indexes."""
    db = ledger.database
    out: dict[str, Any] = {}
    for name in sorted(await db.list_collection_names()):
        coll = db[name]
        out[name] = {
            "docs": await coll.find({}).sort("_id", 1).to_list(),
            "indexes": await coll.index_information(),
        }
    return out


async def test_a_restart_keeps_documents_indexes_and_idempotency(tmp_path: Path) -> None:
    client, ledger = await open_ledger(tmp_path)
    wallet = await ledger.open_account({"user_id": 7}, min_balance=0)
    topup = await ledger.increase(wallet, 10_00, {"source": "card"}, idempotency_key="t-1")
    legs = await ledger.transfer(wallet, {"merchant": 42}, 2_50, {"order": 991})
    posted = await ledger.post([({"user_id": 7}, -1_00), ({"fees": 1}, 40), ({"tax": 1}, 60)])
    await ledger.revert(legs[0])
    before = await snapshot_of(ledger)
    await client.close()

    client, ledger = await open_ledger(tmp_path)
    assert await snapshot_of(ledger) == before
    assert await ledger.balance(wallet) == 10_00 - 1_00
    assert (await ledger.get_account(wallet)).min_balance == 0
    assert (await ledger.verify()).ok
    assert await ledger.increase(wallet, 10_00, {"source": "card"}, idempotency_key="t-1") == topup
    with pytest.raises(AlreadyReverted):
        await ledger.revert(legs[1])
    assert [t.id for t in await ledger.history({"fees": 1})] == [posted[1]]
    await client.close()


async def test_a_restart_keeps_what_concurrent_writers_acknowledged(tmp_path: Path) -> None:
    client, ledger = await open_ledger(tmp_path)
    workers, per = 16, 12
    acknowledged: list[Any] = []

    async def work(w: int) -> None:
        for i in range(per):
            legs = await ledger.transfer({"w": w}, {"w": (w + 1) % workers}, i + 1)
            acknowledged.append(legs[0])

    if _IS_SYNC:
        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        await asyncio.gather(*(work(w) for w in range(workers)))
    stats = client.server.store.stats
    await client.close()
    # Concurrent committers shared fsyncs (group commit): fewer syncs than commits.
    assert stats["fsyncs"] < workers * per

    client, ledger = await open_ledger(tmp_path)
    assert len(acknowledged) == workers * per
    for tid in acknowledged:
        await ledger.get_transaction(tid)
    balances = [await ledger.balance({"w": w}) for w in range(workers)]
    assert sum(balances) == 0
    assert (await ledger.verify()).ok
    await client.close()


async def listen_until(ledger: AsyncLedger, recorder: Recorder, count: int) -> None:
    """Resume "mail" from its checkpoint until ``recorder`` has ``count`` events."""
    stop, runner = await start_listener(ledger, recorder, checkpoint="mail")
    try:
        await wait_for(lambda: len(recorder.seen) >= count or not _running(runner))
    finally:
        await stop_listener(stop, runner)


def _running(runner: Any) -> bool:
    if _IS_SYNC:
        thread, errors = runner
        return bool(thread.is_alive() and not errors)
    return not runner.done()


async def operation_of(ledger: AsyncLedger, tid: Any) -> Any:
    return (await ledger.get_transaction(tid)).operation_id


async def test_a_listen_checkpoint_resumes_across_two_restarts(tmp_path: Path) -> None:
    client, ledger = await open_ledger(tmp_path)
    recorder = Recorder()
    stop, runner = await start_listener(ledger, recorder, checkpoint="mail")
    first = [await operation_of(ledger, await ledger.increase("a", n + 1)) for n in range(2)]
    await wait_for(lambda: len(recorder.seen) >= 2)
    await stop_listener(stop, runner)
    assert recorder.seen == first
    await client.close()

    client, ledger = await open_ledger(tmp_path)  # restart 1: writes while nobody listens
    written = [
        await operation_of(ledger, (await ledger.transfer("a", "b", n + 1))[0]) for n in range(3)
    ]
    await client.close()
    client, ledger = await open_ledger(tmp_path)  # restart 2: more writes
    written.append(await operation_of(ledger, await ledger.increase("b", 5)))
    await client.close()

    client, ledger = await open_ledger(tmp_path)
    resumed = Recorder()
    await listen_until(ledger, resumed, len(written))
    assert resumed.seen == written  # exactly the events written while down, in commit order
    await client.close()


async def test_a_checkpoint_older_than_the_kept_history_is_lost_after_a_restart(
    tmp_path: Path,
) -> None:
    client, ledger = await open_ledger(tmp_path, oplog_size=5)
    recorder = Recorder()
    stop, runner = await start_listener(ledger, recorder, checkpoint="mail")
    await ledger.increase("a", 1)
    await wait_for(lambda: len(recorder.seen) >= 1)
    await stop_listener(stop, runner)
    for n in range(4):
        await ledger.transfer("a", "b", n + 1)  # each writes more events than the store keeps
    await client.close()

    client, ledger = await open_ledger(tmp_path, oplog_size=5)
    with pytest.raises(ChangeStreamHistoryLost, match="no longer in the oplog"):
        await listen_until(ledger, Recorder(), 1)
    await client.close()
