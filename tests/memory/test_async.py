"""The async client: PyMongo's native async surface, concurrency between tasks."""

from __future__ import annotations

import asyncio
import time

import pytest
from pymongo.errors import OperationFailure

from mongoledger.memory import AsyncMemoryClient, MemoryClient, StrictModeError


async def test_async_crud_and_cursors() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await coll.insert_many([{"k": i} for i in range(5)])
    cursor = coll.find({}, {"_id": 0}).sort("k", -1).skip(1).limit(3)
    assert await cursor.to_list() == [{"k": 3}, {"k": 2}, {"k": 1}]
    assert [d["k"] async for d in coll.find({"k": {"$lt": 2}})] == [0, 1]
    agg = await coll.aggregate([{"$group": {"_id": None, "s": {"$sum": "$k"}}}])
    assert (await agg.to_list())[0]["s"] == 10
    assert await coll.count_documents({}) == 5
    assert (await coll.find_one({"k": 4}, {"_id": 0})) == {"k": 4}
    hello = await client.admin.command("hello")
    assert hello["setName"] == "memory"


async def test_async_transactions_and_strict_mode() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.insert_one({"k": 1}, session=s)
        with pytest.raises(StrictModeError, match="task"):
            await coll.find_one({})
        await s.abort_transaction()
        async with await s.start_transaction():
            await coll.insert_one({"k": 2}, session=s)
    assert await coll.find({}, {"_id": 0}).to_list() == [{"k": 2}]


async def test_200_tasks_with_transaction_exact_totals_and_loop_not_blocked() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["acc"]
    await coll.insert_one({"_id": 1, "n": 0})
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    async def work() -> None:
        async def cb(s) -> None:
            doc = await coll.find_one({"_id": 1}, session=s)
            await asyncio.sleep(0)  # yield while holding the transaction
            await coll.update_one({"_id": 1}, {"$set": {"n": doc["n"] + 1}}, session=s)

        async with client.start_session() as s:
            await s.with_transaction(cb)

    tick_task = asyncio.create_task(ticker())
    await asyncio.gather(*(work() for _ in range(200)))
    stop = True
    await tick_task
    assert (await coll.find_one({"_id": 1}))["n"] == 200
    assert ticks > 200  # the loop kept running other tasks while transactions waited


async def test_async_with_transaction_retries_injected_errors() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await client.fail_command("commitTransaction", times=2, close_connection=True)
    await client.fail_command(
        "insert", times=1, error_code=112, error_labels=["TransientTransactionError"]
    )
    calls = 0

    async def cb(s) -> None:
        nonlocal calls
        calls += 1
        await coll.insert_one({"k": calls}, session=s)

    async with client.start_session() as s:
        await s.with_transaction(cb)
    assert calls == 2
    assert await coll.find({}, {"_id": 0}).to_list() == [{"k": 2}]


async def test_async_change_stream_and_shared_sync_writer() -> None:
    client = AsyncMemoryClient()
    writer = MemoryClient(server=client.server)
    coll = client["db"]["c"]
    async with await coll.watch() as stream:
        assert await stream.try_next() is None
        waiter = asyncio.create_task(stream.next())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await asyncio.to_thread(writer["db"]["c"].insert_one, {"_id": 1})
        ev = await asyncio.wait_for(waiter, 2)
        assert ev["operationType"] == "insert"
        assert stream.resume_token == ev["_id"]
    with pytest.raises(OperationFailure):
        await coll.watch([{"$group": {"_id": 1}}])


async def test_async_writer_waits_for_the_transaction_without_blocking_the_loop() -> None:
    """Snapshot isolation: a read outside the transaction sees committed data at once; a write
    outside it to a document the transaction wrote waits for it to end (a task awaits, so
    the loop keeps running), then applies on top of the commit."""
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1, "n": 0})
    holder_ready = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with client.start_session() as s:
            await s.start_transaction()
            await coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=s)
            holder_ready.set()
            await release.wait()
            await s.commit_transaction()

    task = asyncio.create_task(holder())
    await holder_ready.wait()
    assert (await coll.find_one({"_id": 1}))["n"] == 0  # committed data, no waiting
    writer = asyncio.create_task(coll.update_one({"_id": 1}, {"$inc": {"n": 10}}))
    t0 = time.monotonic()
    await asyncio.sleep(0.02)
    assert not writer.done()  # waiting, but the loop runs this coroutine
    release.set()
    assert (await writer).modified_count == 1
    await task
    assert (await coll.find_one({"_id": 1}))["n"] == 11
    assert time.monotonic() - t0 < 2
