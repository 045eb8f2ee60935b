"""Collections themselves: create (with options), createIndexes, collMod, renameCollection,
and DDL inside transactions (visible at commit, gone on abort)."""

from __future__ import annotations

import pytest
from pymongo.errors import CollectionInvalid, OperationFailure

from mongoledger.memory import AsyncMemoryClient
from tests.memory._async.helpers import Background, drain

_IS_SYNC = False


async def test_a_collection_created_in_a_transaction_appears_at_commit() -> None:
    client = AsyncMemoryClient(strict=False)
    db = client["db"]
    stream = await db.watch(show_expanded_events=True)
    async with client.start_session() as s, client.start_session() as other:
        await s.start_transaction()
        coll = await db.create_collection(
            "fresh", session=s, changeStreamPreAndPostImages={"enabled": True}
        )
        await coll.create_index("k", unique=True, session=s)
        await coll.insert_one({"_id": 1, "k": "a"}, session=s)
        assert await db.list_collection_names() == []  # not yet, for anyone else
        assert await coll.index_information() == {}
        assert await coll.find_one({}) is None
        await other.start_transaction()
        with pytest.raises(OperationFailure) as info:  # another transaction conflicts
            await coll.insert_one({"_id": 2}, session=other)
        assert info.value.code == 112
        await other.abort_transaction()

        async def insert_outside() -> object:
            return (await coll.insert_one({"_id": 3, "k": "b"})).inserted_id

        waiting = Background(insert_outside)  # a write outside waits for the commit
        assert await waiting.running_after(0.05)
        await s.commit_transaction()
        assert await waiting.result() == 3
    assert await db.list_collection_names() == ["fresh"]
    assert set(await coll.index_information()) == {"_id_", "k_1"}
    events = await drain(stream)
    assert [e["operationType"] for e in events] == ["create", "createIndexes", "insert", "insert"]
    create, indexes = events[0], events[1]
    assert create["operationDescription"]["changeStreamPreAndPostImages"] == {"enabled": True}
    assert create["operationDescription"]["idIndex"]["key"] == {"_id": 1}
    assert create["nsType"] == "collection"
    assert indexes["operationDescription"]["indexes"][0]["key"] == {"k": 1}
    assert indexes["operationDescription"]["indexes"][0]["unique"] is True
    assert create["clusterTime"] == indexes["clusterTime"] == events[2]["clusterTime"]
    assert len({e["collectionUUID"] for e in events}) == 1
    assert "lsid" in create


async def test_an_abort_drops_what_the_transaction_created() -> None:
    client = AsyncMemoryClient()
    db = client["db"]
    stream = await db.watch(show_expanded_events=True)
    async with client.start_session() as s:
        await s.start_transaction()
        coll = await db.create_collection("gone", session=s)
        await coll.create_index([("k", 1)], session=s)
        await coll.insert_one({"_id": 1}, session=s)
        await db["implicit"].insert_one({"_id": 1}, session=s)  # created by its first insert
        await s.abort_transaction()
    assert await db.list_collection_names() == []
    assert await coll.index_information() == {}
    assert await drain(stream) == []
    await coll.insert_one({"_id": 2})  # a new collection: no leftover index or document
    assert set(await coll.index_information()) == {"_id_"}
    assert [d async for d in coll.find()] == [{"_id": 2}]


async def test_indexes_in_a_transaction_only_on_a_collection_it_created() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await coll.create_index("k")
    async with client.start_session() as s:
        await s.start_transaction()
        assert await coll.create_index("k", session=s) == "k_1"  # exists already: fine
        with pytest.raises(OperationFailure) as info:
            await coll.create_index("j", session=s)
        assert info.value.code == 263
        assert "Cannot create new indexes on existing collection db.c" in str(info.value)
        with pytest.raises(OperationFailure) as info:  # the failure aborted the transaction
            await coll.insert_one({}, session=s)
        assert info.value.code == 251
        await s.abort_transaction()
    assert set(await coll.index_information()) == {"_id_", "k_1"}


async def test_create_answers_as_the_server() -> None:
    client = AsyncMemoryClient()
    db = client["db"]
    await db.create_collection("c", changeStreamPreAndPostImages={"enabled": True})
    with pytest.raises(CollectionInvalid, match="collection c already exists"):
        await db.create_collection("c")
    await db.create_collection(
        "c", check_exists=False, changeStreamPreAndPostImages={"enabled": True}
    )  # the same options: nothing to do
    with pytest.raises(OperationFailure) as info:
        await db.command("create", "c")
    assert info.value.code == 48
    with pytest.raises(OperationFailure, match="'capped' is not emulated") as info:
        await db.create_collection("d", capped=True, size=1000)
    with pytest.raises(OperationFailure, match="changeStreamPreAndPostImages must be"):
        await db.create_collection("d", changeStreamPreAndPostImages=True)
    assert await db.list_collection_names() == ["c"]
    async with client.start_session() as s:
        await s.start_transaction()
        with pytest.raises(OperationFailure) as info:
            await db.create_collection("c", session=s)  # exists: in a transaction too
        assert info.value.code == 48
        await s.abort_transaction()


async def test_coll_mod_sets_pre_and_post_images() -> None:
    client = AsyncMemoryClient()
    db = client["db"]
    with pytest.raises(OperationFailure) as info:
        await db.command("collMod", "c", changeStreamPreAndPostImages={"enabled": True})
    assert info.value.code == 26
    await db["c"].insert_one({"_id": 1})
    stream = await db.watch(show_expanded_events=True)
    reply = await db.command("collMod", "c", changeStreamPreAndPostImages={"enabled": True})
    assert reply == {"ok": 1.0}
    (event,) = await drain(stream)
    assert event["operationType"] == "modify"
    assert event["operationDescription"] == {"changeStreamPreAndPostImages": {"enabled": True}}
    assert event["stateBeforeChange"]["collectionOptions"]["uuid"] == event["collectionUUID"]
    with pytest.raises(OperationFailure, match="'validator' is not emulated"):
        await db.command("collMod", "c", validator={})


async def test_rename_moves_documents_indexes_and_options() -> None:
    client = AsyncMemoryClient()
    db = client["db"]
    coll = await db.create_collection("a", changeStreamPreAndPostImages={"enabled": True})
    await coll.create_index("k", unique=True)
    await coll.insert_many([{"_id": 1, "k": 1}, {"_id": 2, "k": 2}])
    await db["b"].insert_one({"_id": 9})
    with pytest.raises(OperationFailure) as info:
        await coll.rename("b")
    assert info.value.code == 48
    assert await coll.rename("b", dropTarget=True) == {"ok": 1.0}
    assert await db.list_collection_names() == ["b"]
    renamed = db["b"]
    assert [d["_id"] async for d in renamed.find()] == [1, 2]
    assert set(await renamed.index_information()) == {"_id_", "k_1"}
    with pytest.raises(OperationFailure):
        await renamed.insert_one({"_id": 3, "k": 1})  # the unique index came along
    with pytest.raises(OperationFailure) as info:
        await db["a"].rename("c")
    assert info.value.code == 26
    reply = await client.admin.command({"renameCollection": "db.b", "to": "other.b"})
    assert reply == {"ok": 1.0}
    assert await client["other"]["b"].count_documents({}) == 2
    with pytest.raises(OperationFailure) as info:
        await db.command({"renameCollection": "db.b", "to": "db.c"})
    assert info.value.code == 13  # only against the admin database


async def test_ddl_waits_for_transactions_writing_to_the_collection() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1})
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.insert_one({"_id": 2}, session=s)

        async def drop() -> None:
            await coll.drop()

        dropping = Background(drop)
        assert await dropping.running_after(0.05)
        await s.commit_transaction()
        await dropping.result()
    assert await client["db"].list_collection_names() == []


async def test_drop_database_ends_its_streams() -> None:
    client = AsyncMemoryClient()
    await client["db"]["a"].insert_one({})
    await client["db"]["b"].insert_one({})
    stream = await client["db"].watch()
    await client.drop_database("db")
    events = await drain(stream)
    assert [e["operationType"] for e in events] == ["drop", "drop", "dropDatabase", "invalidate"]
    assert events[2]["ns"] == {"db": "db"}
    assert await client.list_database_names() == []
