"""The rules PyMongo enforces on sessions and transactions, and write concerns, as a
one-member replica set answers them (messages as PyMongo 4.x words them)."""

from __future__ import annotations

import pytest
from pymongo.client_session import TransactionOptions
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    InvalidOperation,
    OperationFailure,
    WriteConcernError,
)
from pymongo.operations import InsertOne
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from mongoledger.memory import AsyncMemoryClient

_IS_SYNC = False


async def docs(coll) -> list:
    return [d["_id"] async for d in coll.find({})]


# -- the state machine -------------------------------------------------------------------


async def test_state_transitions_answer_as_pymongo() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    s = client.start_session()
    with pytest.raises(InvalidOperation, match=r"^No transaction started$"):
        await s.commit_transaction()
    with pytest.raises(InvalidOperation, match=r"^No transaction started$"):
        await s.abort_transaction()
    await s.start_transaction()
    with pytest.raises(InvalidOperation, match=r"^Transaction already in progress$"):
        await s.start_transaction()
    await s.abort_transaction()  # never started on the server: nothing sent
    with pytest.raises(InvalidOperation, match=r"^Cannot call abortTransaction twice$"):
        await s.abort_transaction()
    with pytest.raises(
        InvalidOperation, match=r"^Cannot call commitTransaction after calling abortTransaction$"
    ):
        await s.commit_transaction()
    await s.start_transaction()
    await coll.insert_one({"_id": 1}, session=s)
    await s.commit_transaction()
    await s.commit_transaction()  # a retried commit succeeds
    with pytest.raises(
        InvalidOperation, match=r"^Cannot call abortTransaction after calling commitTransaction$"
    ):
        await s.abort_transaction()
    await s.end_session()
    with pytest.raises(InvalidOperation, match=r"^Cannot use ended session$"):
        await s.start_transaction()
    assert await docs(coll) == [1]


async def test_an_operation_after_the_transaction_resets_the_session() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.insert_one({"_id": 1}, session=s)
        await s.commit_transaction()
        await coll.find_one({}, session=s)  # not in a transaction: resets the session
        with pytest.raises(InvalidOperation, match=r"^No transaction started$"):
            await s.commit_transaction()
        await s.start_transaction()
        await coll.insert_one({"_id": 2}, session=s)
        await s.abort_transaction()
        await coll.insert_one({"_id": 3}, session=s)
        with pytest.raises(InvalidOperation, match=r"^No transaction started$"):
            await s.abort_transaction()
    assert await docs(coll) == [1, 3]


async def test_snapshot_sessions_refuse_transactions() -> None:
    client = AsyncMemoryClient()
    s = client.start_session(snapshot=True)
    with pytest.raises(InvalidOperation, match="not supported in snapshot sessions"):
        await s.start_transaction()
    with pytest.raises(ConfigurationError):
        client.start_session(snapshot=True, causal_consistency=True)


# -- read preferences ----------------------------------------------------------------------


async def test_a_read_in_a_transaction_needs_a_primary_read_preference() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    async with client.start_session() as s:
        await s.start_transaction(read_preference=ReadPreference.SECONDARY)
        with pytest.raises(
            InvalidOperation, match=r"^read preference in a transaction must be primary, not: Sec"
        ):
            await coll.find_one({}, session=s)
        for read in (
            lambda: coll.count_documents({}, session=s),
            lambda: coll.aggregate([], session=s),
            lambda: coll.distinct("x", session=s),
        ):
            with pytest.raises(InvalidOperation, match="must be primary"):
                await read()
        await coll.insert_one({"_id": 1}, session=s)  # writes are always sent to the primary
        await s.commit_transaction()
    assert await docs(coll) == [1]


async def test_the_transaction_read_preference_is_inherited() -> None:
    client = AsyncMemoryClient(readPreference="secondaryPreferred")
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1})
    assert await docs(coll) == [1]  # outside a transaction the one member answers
    async with client.start_session() as s:
        await s.start_transaction()  # inherits the client's
        with pytest.raises(InvalidOperation, match="not: SecondaryPreferred"):
            await coll.find_one({}, session=s)
        await s.abort_transaction()
        await s.start_transaction(read_preference=ReadPreference.PRIMARY)
        assert await coll.find_one({}, session=s) == {"_id": 1}
        await s.commit_transaction()
    options = TransactionOptions(read_preference=ReadPreference.NEAREST)
    async with AsyncMemoryClient().start_session(default_transaction_options=options) as s:
        await s.start_transaction()
        with pytest.raises(InvalidOperation, match="not: Nearest"):
            await s.client["db"]["c"].find_one({}, session=s)


async def test_a_transaction_overrides_database_and_collection_read_preferences() -> None:
    """PyMongo reads in a transaction with the transaction's read preference: a secondary
    preference set on the database or the collection does not apply there."""
    client = AsyncMemoryClient()
    db = client.get_database("db", read_preference=ReadPreference.SECONDARY_PREFERRED)
    coll = db.get_collection("c").with_options(read_preference=ReadPreference.NEAREST)
    assert coll.read_preference == ReadPreference.NEAREST
    await coll.insert_one({"_id": 1})
    async with client.start_session() as s:
        await s.start_transaction()
        assert await coll.find_one({}, session=s) == {"_id": 1}
        await s.commit_transaction()


# -- write concerns ------------------------------------------------------------------------


async def test_transactions_refuse_an_unacknowledged_write_concern() -> None:
    client = AsyncMemoryClient()
    async with client.start_session() as s:
        with pytest.raises(ConfigurationError, match="do not support unacknowledged"):
            await s.start_transaction(write_concern=WriteConcern(w=0))
    async with AsyncMemoryClient(w=0).start_session() as s:
        with pytest.raises(ConfigurationError, match="do not support unacknowledged"):
            await s.start_transaction()  # inherited from the client


async def test_a_write_concern_the_set_cannot_satisfy_fails_after_the_write() -> None:
    client = AsyncMemoryClient(w=2)
    coll = client["db"]["c"]
    with pytest.raises(WriteConcernError) as info:
        await coll.insert_one({"_id": 1})
    error = info.value
    assert error.code == 100
    assert error.details["codeName"] == "UnsatisfiableWriteConcern"
    assert error.details["errInfo"]["writeConcern"]["w"] == 2
    assert not error._error_labels  # nothing that would make a driver retry
    for write in (
        lambda: coll.update_one({"_id": 1}, {"$set": {"a": 1}}),
        lambda: coll.find_one_and_update({"_id": 1}, {"$set": {"b": 1}}),
        lambda: coll.replace_one({"_id": 1}, {"c": 1}),
    ):
        with pytest.raises(WriteConcernError):
            await write()
    with pytest.raises(BulkWriteError) as bulk:
        await coll.insert_many([{"_id": 2}, {"_id": 3}])
    assert bulk.value.details["nInserted"] == 2
    assert [e["code"] for e in bulk.value.details["writeConcernErrors"]] == [100]
    assert await docs(coll) == [1, 2, 3]  # every write was applied
    assert (await coll.find_one({"_id": 1})) == {"_id": 1, "c": 1}
    fine = coll.with_options(write_concern=WriteConcern("majority"))
    await fine.delete_one({"_id": 3})
    tagged = coll.with_options(write_concern=WriteConcern(w="east"))
    with pytest.raises(WriteConcernError) as info:
        await tagged.delete_one({"_id": 2})
    assert info.value.code == 79
    assert "'east'" in str(info.value)


async def test_a_commit_with_an_unsatisfiable_write_concern_commits_and_fails() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    async with client.start_session() as s:
        await s.start_transaction(write_concern=WriteConcern(w=3))
        await coll.insert_one({"_id": 1}, session=s)
        with pytest.raises(WriteConcernError) as info:
            await s.commit_transaction()
        assert info.value.code == 100
        assert not info.value.has_error_label("UnknownTransactionCommitResult")
        assert not info.value.has_error_label("TransientTransactionError")
    assert await docs(coll) == [1]
    calls = 0

    async def body(session) -> None:
        nonlocal calls
        calls += 1
        await coll.insert_one({"_id": 2}, session=session)

    async with AsyncMemoryClient(w=2, server=client.server).start_session() as s:
        with pytest.raises(WriteConcernError):
            await s.with_transaction(body)  # inherits w:2; not retried
    assert calls == 1
    assert await docs(coll) == [1, 2]


async def test_statements_in_a_transaction_ignore_the_collection_write_concern() -> None:
    client = AsyncMemoryClient()
    coll = client["db"].get_collection("c", write_concern=WriteConcern(w=5))
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.insert_one({"_id": 1}, session=s)
        await coll.insert_many([{"_id": 2}], session=s)
        await s.commit_transaction()  # the client's default write concern
    assert await docs(coll) == [1, 2]


async def test_find_and_modify_in_a_transaction_ignores_the_collection_write_concern() -> None:
    client = AsyncMemoryClient()
    coll = client["db"].get_collection("c", write_concern=WriteConcern(w=5))
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.insert_one({"_id": 1, "n": 0}, session=s)
        before = await coll.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}}, session=s)
        assert before == {"_id": 1, "n": 0}
        await s.commit_transaction()
    assert await client["db"]["c"].find_one() == {"_id": 1, "n": 1}


async def test_collection_commands_fail_on_an_unsatisfiable_write_concern_once_done() -> None:
    client = AsyncMemoryClient(w=2)
    coll = client["db"]["c"]
    with pytest.raises(WriteConcernError) as info:
        await coll.create_index("a")
    assert info.value.code == 100
    assert "a_1" in await coll.index_information()  # the index was built
    with pytest.raises(WriteConcernError):
        await coll.drop()
    assert await client["db"].list_collection_names() == []


async def test_unacknowledged_bulk_writes() -> None:
    client = AsyncMemoryClient(w=0)
    coll = client["db"]["c"]
    requests = [InsertOne({"_id": 1}), InsertOne({"_id": 1}), InsertOne({"_id": 2})]
    result = await coll.bulk_write(requests, ordered=False)
    assert result.acknowledged is False  # the duplicate key is never reported
    models = [InsertOne({"_id": 3}, namespace="db.c"), InsertOne({"_id": 3}, namespace="db.c")]
    assert (await client.bulk_write(models, ordered=False)).acknowledged is False
    async with client.start_session() as s:
        with pytest.raises(ConfigurationError, match="Explicit sessions are incompatible"):
            await coll.bulk_write([InsertOne({"_id": 4})], session=s)
        models = [InsertOne({"_id": 5}, namespace="db.c")]
        with pytest.raises(ConfigurationError, match="Explicit sessions are incompatible"):
            await client.bulk_write(models, session=s, ordered=False)
    assert await docs(coll.with_options(write_concern=WriteConcern(w=1))) == [1, 2, 3]


async def test_unacknowledged_writes() -> None:
    client = AsyncMemoryClient(w=0)
    coll = client["db"]["c"]
    result = await coll.insert_one({"_id": 1})
    assert result.acknowledged is False
    assert result.inserted_id == 1
    await coll.insert_one({"_id": 1})  # the duplicate key is never reported
    updated = await coll.update_one({"_id": 1}, {"$set": {"a": 1}})
    assert updated.acknowledged is False
    with pytest.raises(InvalidOperation):
        updated.modified_count  # noqa: B018 - PyMongo refuses to tell
    assert not (await coll.delete_many({"_id": 5})).acknowledged
    assert not (await coll.insert_many([{"_id": 2}])).acknowledged
    async with client.start_session() as s:
        with pytest.raises(ConfigurationError, match="Explicit sessions are incompatible"):
            await coll.insert_one({"_id": 3}, session=s)
    acknowledged = coll.with_options(write_concern=WriteConcern(w=1))
    assert [d async for d in acknowledged.find({})] == [{"_id": 1, "a": 1}, {"_id": 2}]


async def test_options_travel_from_client_to_collection() -> None:
    client = AsyncMemoryClient(w="majority", readPreference="primaryPreferred")
    assert client.write_concern == WriteConcern(w="majority")
    db = client["db"]
    assert db.write_concern == client.write_concern
    assert db.read_preference == ReadPreference.PRIMARY_PREFERRED
    coll = db.with_options(write_concern=WriteConcern(w=1))["c"]
    assert coll.write_concern == WriteConcern(w=1)
    assert coll.read_preference == ReadPreference.PRIMARY_PREFERRED
    with pytest.raises(TypeError, match="write_concern"):
        db.with_options(write_concern={"w": 1})
    with pytest.raises(ConfigurationError):
        AsyncMemoryClient(wrongOption=1)


async def test_estimated_document_count_takes_no_session() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await coll.insert_one({})
    assert await coll.estimated_document_count() == 1
    async with client.start_session() as s:
        with pytest.raises(ConfigurationError):
            await coll.estimated_document_count(session=s)


async def test_commands_a_transaction_refuses() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1})
    async with client.start_session() as s:
        for command, call in (
            ("listIndexes", lambda: coll.list_indexes(session=s)),
            ("listCollections", lambda: client["db"].list_collection_names(session=s)),
            ("drop", lambda: coll.drop(session=s)),
            ("dropIndexes", lambda: coll.drop_index("x_1", session=s)),
            ("renameCollection", lambda: coll.rename("d", session=s)),
        ):
            await s.start_transaction()
            with pytest.raises(OperationFailure) as info:
                await call()
            assert info.value.code == 263
            assert f"Cannot run '{command}' in a multi-document transaction." in str(info.value)
            await s.abort_transaction()
    assert await docs(coll) == [1]
