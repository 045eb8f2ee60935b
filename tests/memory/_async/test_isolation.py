"""Snapshot isolation between concurrent transactions, as on a replica set.

Transactions overlap (no server-wide lock): each reads the snapshot taken at its first
operation plus its own writes; the second writer of a document, or the writer of a document
a commit changed after its snapshot, gets WriteConflict (112, TransientTransactionError) at
once; a write outside any transaction waits for the transaction holding its document.
"""

from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError, OperationFailure

from mongoledger.memory import AsyncMemoryClient, MemoryServer
from tests.memory._async.helpers import Background

_IS_SYNC = False


@pytest.fixture
async def client() -> AsyncMemoryClient:
    return AsyncMemoryClient(strict=False)  # operations without a session are deliberate


def conflict(info: pytest.ExceptionInfo[OperationFailure]) -> bool:
    return info.value.code == 112 and info.value.has_error_label("TransientTransactionError")


async def values(coll, session=None) -> dict:
    return {d["_id"]: d.get("n") async for d in coll.find({}, session=session)}


async def test_a_transaction_commits_while_another_is_open(client: AsyncMemoryClient) -> None:
    coll = client["db"]["c"]
    await coll.insert_many([{"_id": 1, "n": 0}, {"_id": 2, "n": 0}])
    async with client.start_session() as a, client.start_session() as b:
        await a.start_transaction()
        await coll.update_one({"_id": 1}, {"$set": {"n": 1}}, session=a)
        await b.start_transaction()
        await coll.update_one({"_id": 2}, {"$set": {"n": 2}}, session=b)
        await b.commit_transaction()  # while a is still open
        assert await values(coll) == {1: 0, 2: 2}
        await a.commit_transaction()
    assert await values(coll) == {1: 1, 2: 2}


async def test_reads_see_the_snapshot_of_the_first_operation(client: AsyncMemoryClient) -> None:
    coll = client["db"]["c"]
    await coll.create_index("k")
    await coll.insert_many([{"_id": 1, "n": 1, "k": "a"}, {"_id": 2, "n": 2, "k": "a"}])
    async with client.start_session() as s:
        await s.start_transaction()
        assert await values(coll, s) == {1: 1, 2: 2}  # the snapshot is taken here
        await coll.update_one({"_id": 1}, {"$set": {"n": 10, "k": "b"}})  # committed later
        await coll.delete_one({"_id": 2})
        await coll.insert_one({"_id": 3, "n": 3, "k": "a"})
        assert await values(coll, s) == {1: 1, 2: 2}
        assert [d["_id"] async for d in coll.find({"k": "a"}, session=s)] == [1, 2]  # index
        assert await coll.count_documents({}, session=s) == 2
        total = await (
            await coll.aggregate([{"$group": {"_id": None, "t": {"$sum": "$n"}}}], session=s)
        ).to_list()
        assert total[0]["t"] == 3
        assert await coll.distinct("n", session=s) == [1, 2]
        await coll.insert_one({"_id": 4, "n": 4}, session=s)  # its own writes are visible
        assert await values(coll, s) == {1: 1, 2: 2, 4: 4}
        await s.commit_transaction()
    assert await values(coll) == {1: 10, 3: 3, 4: 4}


async def test_the_snapshot_is_taken_at_the_first_operation_not_at_start(
    client: AsyncMemoryClient,
) -> None:
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1, "n": 1})
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.update_one({"_id": 1}, {"$set": {"n": 2}})  # before the first operation
        assert (await coll.find_one({"_id": 1}, session=s))["n"] == 2
        await coll.update_one({"_id": 1}, {"$set": {"n": 5}}, session=s)
        await s.commit_transaction()
    assert (await coll.find_one({"_id": 1}))["n"] == 5


async def test_second_writer_conflicts_at_once_and_its_abort_restores_nothing_of_the_first(
    client: AsyncMemoryClient,
) -> None:
    coll = client["db"]["c"]
    await coll.insert_many([{"_id": 1, "n": 0}, {"_id": 2, "n": 0}])
    async with client.start_session() as a, client.start_session() as b:
        await a.start_transaction()
        await b.start_transaction()
        await coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=a)
        await coll.update_one({"_id": 2}, {"$inc": {"n": 1}}, session=b)
        with pytest.raises(OperationFailure) as info:
            await coll.update_one({"_id": 1}, {"$inc": {"n": 100}}, session=b)
        assert conflict(info)
        await b.abort_transaction()
        assert await values(coll, a) == {1: 1, 2: 0}
        await a.commit_transaction()
    assert await values(coll) == {1: 1, 2: 0}
    assert client.server.write_conflicts == 1


async def test_writing_a_document_committed_after_the_snapshot_conflicts(
    client: AsyncMemoryClient,
) -> None:
    coll = client["db"]["c"]
    await coll.insert_many([{"_id": 1, "n": 0}, {"_id": 2, "n": 0}])
    async with client.start_session() as a, client.start_session() as b:
        await a.start_transaction()
        assert await values(coll, a) == {1: 0, 2: 0}
        await b.start_transaction()
        await coll.update_one({"_id": 1}, {"$inc": {"n": 5}}, session=b)
        await b.commit_transaction()  # first committer wins
        await coll.update_one({"_id": 2}, {"$inc": {"n": 1}}, session=a)  # untouched: fine
        with pytest.raises(OperationFailure) as info:
            await coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=a)
        assert conflict(info)
        # The failed statement aborted a, as on a server.
        with pytest.raises(OperationFailure) as info:
            await a.commit_transaction()
        assert info.value.code == 251
    assert await values(coll) == {1: 5, 2: 0}


async def test_a_lost_update_is_impossible_but_write_skew_is_allowed(
    client: AsyncMemoryClient,
) -> None:
    """Snapshot isolation, not serializability: two transactions that read both documents
    and each write a different one both commit (write skew), exactly as on MongoDB."""
    coll = client["db"]["c"]
    await coll.insert_many([{"_id": 1, "n": 50}, {"_id": 2, "n": 50}])
    async with client.start_session() as a, client.start_session() as b:
        await a.start_transaction()
        await b.start_transaction()
        assert sum((await values(coll, a)).values()) == 100
        assert sum((await values(coll, b)).values()) == 100
        await coll.update_one({"_id": 1}, {"$inc": {"n": -100}}, session=a)
        await coll.update_one({"_id": 2}, {"$inc": {"n": -100}}, session=b)
        await a.commit_transaction()
        await b.commit_transaction()
    assert await values(coll) == {1: -50, 2: -50}


async def test_unique_checks_see_committed_data_and_the_transactions_own(
    client: AsyncMemoryClient,
) -> None:
    coll = client["db"]["c"]
    await coll.create_index("k", unique=True)
    await coll.insert_one({"_id": 1, "k": "taken"})
    async with client.start_session() as a, client.start_session() as b:
        await a.start_transaction()
        await coll.insert_one({"_id": 2, "k": "new"}, session=a)
        with pytest.raises(DuplicateKeyError):  # its own write
            await coll.insert_one({"_id": 3, "k": "new"}, session=a)
        await a.abort_transaction()  # the failure aborted a on the server: begin again
        await a.start_transaction()
        await coll.insert_one({"_id": 2, "k": "new"}, session=a)
        await b.start_transaction()
        with pytest.raises(DuplicateKeyError):  # committed data
            await coll.insert_one({"_id": 4, "k": "taken"}, session=b)
        await b.abort_transaction()
        await b.start_transaction()
        with pytest.raises(OperationFailure) as info:  # a's uncommitted key
            await coll.insert_one({"_id": 4, "k": "new"}, session=b)
        assert conflict(info)
        await b.abort_transaction()
        await a.commit_transaction()
    assert await coll.count_documents({"k": "new"}) == 1


async def test_a_key_committed_after_the_snapshot_is_a_conflict_not_a_duplicate(
    client: AsyncMemoryClient,
) -> None:
    coll = client["db"]["c"]
    await coll.create_index("k", unique=True)
    async with client.start_session() as a:
        await a.start_transaction()
        assert await coll.count_documents({}, session=a) == 0
        await coll.insert_one({"_id": 1, "k": "x"})  # committed after a's snapshot
        with pytest.raises(OperationFailure) as info:
            await coll.insert_one({"_id": 2, "k": "x"}, session=a)
        assert conflict(info)
        await a.abort_transaction()
        await coll.insert_one({"_id": 3, "k": "y"})
        await a.start_transaction()
        assert await coll.count_documents({}, session=a) == 2
        await coll.insert_one({"_id": 4, "k": "z"})  # committed after a's new snapshot
        with pytest.raises(OperationFailure) as info:  # an _id committed later: the same
            await coll.insert_one({"_id": 4, "k": "w"}, session=a)
        assert conflict(info)


async def test_a_write_outside_transactions_waits_for_the_holder(client: AsyncMemoryClient) -> None:
    coll = client["db"]["c"]
    await coll.create_index("k", unique=True)
    await coll.insert_one({"_id": 1, "n": 0})
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=s)
        await coll.insert_one({"_id": 2, "k": "held"}, session=s)

        async def bump() -> int:
            return (await coll.update_one({"_id": 1}, {"$inc": {"n": 10}})).modified_count

        async def duplicate() -> str:
            try:
                await coll.insert_one({"_id": 3, "k": "held"})
            except DuplicateKeyError:
                return "duplicate"
            return "inserted"

        writer, inserter = Background(bump), Background(duplicate)
        assert await writer.running_after(0.05)
        assert await inserter.running_after(0)
        assert (await coll.find_one({"_id": 1}))["n"] == 0  # reads do not wait
        await s.commit_transaction()
        assert await writer.result() == 1
        assert await inserter.result() == "duplicate"  # decided on the committed key
    assert (await coll.find_one({"_id": 1}))["n"] == 11


async def test_a_waiting_write_proceeds_when_the_holder_aborts(client: AsyncMemoryClient) -> None:
    coll = client["db"]["c"]
    await coll.create_index("k", unique=True)
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.insert_one({"_id": 1, "k": "held"}, session=s)

        async def insert() -> object:
            return (await coll.insert_one({"_id": 2, "k": "held"})).inserted_id

        waiter = Background(insert)
        assert await waiter.running_after(0.05)
        await s.abort_transaction()
        assert await waiter.result() == 2
    assert [d["_id"] async for d in coll.find()] == [2]


async def test_the_wait_is_bounded_by_the_transaction_lifetime() -> None:
    """A transaction older than transactionLifetimeLimitSeconds is aborted by the server
    when a write waits for it; its next statement gets NoSuchTransaction."""
    client = AsyncMemoryClient(server=MemoryServer(transaction_lifetime_limit=0.2))
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1, "n": 0})
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=s)

        async def bump() -> int:
            return (await coll.update_one({"_id": 1}, {"$inc": {"n": 10}})).modified_count

        waiter = Background(bump)
        assert await waiter.result(5) == 1
        with pytest.raises(OperationFailure) as info:
            await coll.find_one({}, session=s)
        assert info.value.code == 251
        assert info.value.has_error_label("TransientTransactionError")
    assert (await coll.find_one({"_id": 1}))["n"] == 10


async def test_the_same_thread_gets_a_conflict_instead_of_a_deadlock() -> None:
    """Decision 13: a write outside the transaction, from the thread or task that holds it,
    cannot wait for it."""
    client = AsyncMemoryClient(strict=False)
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1, "n": 0})
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=s)
        with pytest.raises(OperationFailure) as info:
            await coll.update_one({"_id": 1}, {"$inc": {"n": 10}})
        assert conflict(info)
        assert (await coll.find_one({"_id": 1}))["n"] == 0
        await s.commit_transaction()
    assert (await coll.find_one({"_id": 1}))["n"] == 1


async def test_events_follow_commit_order_with_one_cluster_time_per_commit(
    client: AsyncMemoryClient,
) -> None:
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 0})
    stream = await coll.watch()
    async with client.start_session() as a, client.start_session() as b:
        await a.start_transaction()
        await coll.insert_one({"_id": "a1"}, session=a)
        await b.start_transaction()
        await coll.insert_one({"_id": "b1"}, session=b)
        await coll.insert_one({"_id": "a2"}, session=a)
        await coll.insert_one({"_id": "b2"}, session=b)
        assert await stream.try_next() is None  # nothing before a commit
        await b.commit_transaction()
        await coll.insert_one({"_id": "single"})
        await a.commit_transaction()
    events = []
    while (event := await stream.try_next()) is not None:
        events.append(event)
    assert [e["documentKey"]["_id"] for e in events] == ["b1", "b2", "single", "a1", "a2"]
    times = [e["clusterTime"] for e in events]
    assert times[0] == times[1] < times[2] < times[3] == times[4]


async def test_an_abort_under_concurrency_restores_only_its_own_writes(
    client: AsyncMemoryClient,
) -> None:
    coll = client["db"]["c"]
    await coll.create_index("k")
    await coll.insert_many([{"_id": i, "k": "x", "n": 0} for i in range(4)])
    async with client.start_session() as a, client.start_session() as b:
        await a.start_transaction()
        await b.start_transaction()
        await coll.update_one({"_id": 0}, {"$set": {"k": "a"}}, session=a)
        await coll.delete_one({"_id": 1}, session=a)
        await coll.insert_one({"_id": 9, "k": "a"}, session=a)
        await coll.update_one({"_id": 2}, {"$set": {"k": "b"}}, session=b)
        await coll.insert_one({"_id": 8, "k": "b"}, session=b)
        await a.abort_transaction()
        assert [d["_id"] async for d in coll.find({"k": "b"}, session=b)] == [2, 8]
        await b.commit_transaction()
    assert sorted([d["_id"] async for d in coll.find({"k": "x"})]) == [0, 1, 3]
    assert [d["_id"] async for d in coll.find({"k": "b"})] == [2, 8]
    assert await coll.count_documents({"k": "a"}) == 0
