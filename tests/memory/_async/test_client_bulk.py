"""``MongoClient.bulk_write``: one command writing to several namespaces, inside and outside
transactions, with PyMongo's own result and exception types."""

from __future__ import annotations

import pytest
from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.errors import ClientBulkWriteException, InvalidOperation, OperationFailure
from pymongo.write_concern import WriteConcern

from mongoledger.memory import AsyncMemoryClient

_IS_SYNC = False


async def ids(coll) -> list:
    return [d["_id"] async for d in coll.find({})]


async def test_writes_across_namespaces() -> None:
    client = AsyncMemoryClient()
    await client["db"]["a"].insert_one({"_id": 0, "n": 0})
    document = {"x": 1}
    stream = await client.watch()
    result = await client.bulk_write(
        [
            InsertOne(document, namespace="db.a"),
            InsertOne({"_id": "b1"}, namespace="db.b"),
            UpdateOne({"_id": 0}, {"$inc": {"n": 1}}, namespace="db.a"),
            UpdateMany({}, {"$set": {"m": 1}}, namespace="db.b"),
            ReplaceOne({"_id": "b2"}, {"r": 1}, upsert=True, namespace="db.b"),
            DeleteOne({"x": 1}, namespace="db.a"),
            DeleteMany({"nothing": 1}, namespace="other.c"),
        ],
        verbose_results=True,
    )
    assert "_id" in document  # PyMongo gives the document its _id, as for insert_one
    assert (result.inserted_count, result.matched_count, result.modified_count) == (2, 2, 2)
    assert (result.upserted_count, result.deleted_count) == (1, 1)
    assert result.insert_results[0].inserted_id == document["_id"]
    assert result.update_results[4].upserted_id == "b2"
    assert result.update_results[2].modified_count == 1
    assert result.delete_results[5].deleted_count == 1
    assert await ids(client["db"]["a"]) == [0]
    assert await ids(client["db"]["b"]) == ["b1", "b2"]
    events = []
    while (event := await stream.try_next()) is not None:
        events.append(event["operationType"])
    assert events == [
        "insert",
        "insert",
        "update",
        "update",
        "insert",
        "delete",
    ]  # an upsert inserts


async def test_write_errors_raise_pymongos_exception() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1})
    models = [
        InsertOne({"_id": 2}, namespace="db.c"),
        InsertOne({"_id": 1}, namespace="db.c"),
        InsertOne({"_id": 3}, namespace="db.c"),
    ]
    with pytest.raises(ClientBulkWriteException) as ordered:
        await client.bulk_write(models)
    (error,) = ordered.value.write_errors
    assert (error["idx"], error["code"]) == (1, 11000)
    assert ordered.value.partial_result.inserted_count == 1
    assert await ids(coll) == [1, 2]
    with pytest.raises(ClientBulkWriteException) as unordered:
        await client.bulk_write(
            [InsertOne({"_id": 1}, namespace="db.c"), InsertOne({"_id": 4}, namespace="db.c")],
            ordered=False,
        )
    assert [e["idx"] for e in unordered.value.write_errors] == [0]
    assert await ids(coll) == [1, 2, 4]


async def test_a_write_conflict_fails_the_whole_write_and_its_transaction() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["a"]
    await coll.insert_one({"_id": 1, "n": 0})
    models = [
        InsertOne({"_id": 2}, namespace="db.a"),
        UpdateOne({"_id": 1}, {"$inc": {"n": 10}}, namespace="db.a"),
    ]
    async with client.start_session() as first, client.start_session() as second:
        await first.start_transaction()
        await coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=first)
        await second.start_transaction()
        with pytest.raises(OperationFailure) as info:
            await client.bulk_write(models, session=second)
        assert info.value.code == 112
        assert info.value.has_error_label("TransientTransactionError")
        with pytest.raises(OperationFailure) as aborted:
            await second.commit_transaction()
        assert aborted.value.code == 251  # the conflict aborted it
        await first.commit_transaction()
    assert [d async for d in coll.find({})] == [{"_id": 1, "n": 1}]


async def test_in_a_transaction_commit_keeps_and_abort_undoes() -> None:
    client = AsyncMemoryClient(strict=False)
    models = [InsertOne({"_id": 1}, namespace="db.a"), InsertOne({"_id": 2}, namespace="db.b")]
    async with client.start_session() as s:
        await s.start_transaction()
        await client.bulk_write(models, session=s)
        await s.abort_transaction()
        assert await ids(client["db"]["a"]) == []
        await s.start_transaction()
        await client.bulk_write(models, session=s)
        assert await ids(client["db"]["b"]) == []  # not before the commit
        await s.commit_transaction()
    assert await ids(client["db"]["a"]) == [1]
    assert await ids(client["db"]["b"]) == [2]


async def test_a_write_error_in_a_transaction_aborts_it() -> None:
    client = AsyncMemoryClient()
    await client["db"]["a"].insert_one({"_id": 1})
    async with client.start_session() as s:
        await s.start_transaction()
        with pytest.raises(ClientBulkWriteException):
            await client.bulk_write(
                [
                    InsertOne({"_id": 5}, namespace="db.b"),
                    InsertOne({"_id": 1}, namespace="db.a"),
                ],
                session=s,
            )
        with pytest.raises(OperationFailure) as info:
            await s.commit_transaction()
        assert info.value.code == 251
    assert await ids(client["db"]["b"]) == []
    async with client.start_session() as s:
        await s.start_transaction()
        models = [InsertOne({}, namespace="db.a")]
        with pytest.raises(InvalidOperation, match="Cannot set write concern"):
            await client.bulk_write(models, session=s, write_concern=WriteConcern(w=1))


async def test_what_pymongo_refuses_before_sending() -> None:
    client = AsyncMemoryClient()
    with pytest.raises(InvalidOperation, match="requires a namespace"):
        await client.bulk_write([InsertOne({})])
    with pytest.raises(TypeError, match="is not a valid request"):
        await client.bulk_write([{"insertOne": {}}])
    with pytest.raises(InvalidOperation, match="No operations to execute"):
        await client.bulk_write([])
    with pytest.raises(InvalidOperation, match="unacknowledged write concern and ordered"):
        await client.bulk_write([InsertOne({}, namespace="db.a")], write_concern=WriteConcern(w=0))
    result = await client.bulk_write(
        [InsertOne({"_id": 1}, namespace="db.a")], ordered=False, write_concern=WriteConcern(w=0)
    )
    assert result.acknowledged is False
    assert await ids(client["db"]["a"]) == [1]
