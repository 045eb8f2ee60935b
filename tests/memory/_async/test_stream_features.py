"""Change-stream features of MongoDB 6-8: pre- and post-images, expanded events, rename and
invalidate, update descriptions of arrays, and the fatal error of a modified resume token."""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure

from mongoledger.memory import AsyncMemoryClient
from tests.memory._async.helpers import drain

_IS_SYNC = False


async def test_pre_and_post_images_follow_the_collection_option() -> None:
    client = AsyncMemoryClient()
    db = client["db"]
    coll = db["c"]
    await coll.insert_one({"_id": 1, "x": 1})
    options = {"full_document": "whenAvailable", "full_document_before_change": "whenAvailable"}
    stream = await coll.watch(**options)
    plain = await coll.watch()
    await coll.update_one({"_id": 1}, {"$inc": {"x": 2}})  # images not recorded yet
    await db.command("collMod", "c", changeStreamPreAndPostImages={"enabled": True})
    await coll.update_one({"_id": 1}, {"$inc": {"x": 2}})
    await coll.replace_one({"_id": 1}, {"z": 1})
    await coll.delete_one({"_id": 1})
    await coll.insert_one({"_id": 2})
    before, update, replace, delete, insert = await drain(stream)
    assert (before["fullDocumentBeforeChange"], before["fullDocument"]) == (None, None)
    assert update["fullDocumentBeforeChange"] == {"_id": 1, "x": 3}
    assert update["fullDocument"] == {"_id": 1, "x": 5}
    assert replace["fullDocumentBeforeChange"] == {"_id": 1, "x": 5}
    assert replace["fullDocument"] == {"_id": 1, "z": 1}
    assert delete["fullDocumentBeforeChange"] == {"_id": 1, "z": 1}
    assert "fullDocument" not in delete
    assert "fullDocumentBeforeChange" not in insert
    for event in await drain(plain):
        assert "fullDocumentBeforeChange" not in event
        if event["operationType"] == "update":
            assert "fullDocument" not in event


@pytest.mark.parametrize(
    ("option", "value", "which"),
    [
        ("full_document_before_change", "required", "pre-image"),
        ("full_document", "required", "post-image"),
    ],
)
async def test_a_required_image_that_was_not_recorded_ends_the_stream(
    option: str, value: str, which: str
) -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1, "x": 1})
    stream = await coll.watch(**{option: value})
    await coll.update_one({"_id": 1}, {"$inc": {"x": 1}})
    with pytest.raises(OperationFailure) as info:
        await stream.try_next()
    assert info.value.code == 47
    assert f"configured to require a {which}" in str(info.value)
    assert not stream.alive
    with pytest.raises(OperationFailure):
        await coll.watch(full_document_before_change="sometimes")


async def test_expanded_events_describe_collection_changes() -> None:
    client = AsyncMemoryClient()
    db = client["db"]
    expanded = await db.watch(show_expanded_events=True)
    plain = await db.watch()
    coll = await db.create_collection("c")
    await coll.create_index([("k", -1)], name="k_desc", unique=True)
    await coll.insert_one({"_id": 1, "k": 1})
    await db.command("collMod", "c", changeStreamPreAndPostImages={"enabled": True})
    await coll.drop_index("k_desc")
    await coll.rename("d")
    events = await drain(expanded)
    kinds = [e["operationType"] for e in events]
    assert kinds == ["create", "createIndexes", "insert", "modify", "dropIndexes", "rename"]
    assert [e["operationType"] for e in await drain(plain)] == ["insert", "rename"]
    uuid = events[0]["collectionUUID"]
    assert all(e["collectionUUID"] == uuid for e in events)
    assert events[1]["operationDescription"] == {
        "indexes": [{"v": 2, "key": {"k": -1}, "name": "k_desc", "unique": True}]
    }
    assert events[4]["operationDescription"]["indexes"][0]["name"] == "k_desc"
    rename = events[5]
    assert rename["ns"] == {"db": "db", "coll": "c"}
    assert rename["to"] == {"db": "db", "coll": "d"}
    assert rename["operationDescription"] == {"to": {"db": "db", "coll": "d"}}
    assert "documentKey" not in rename
    assert "collectionUUID" not in events[2] or events[2]["collectionUUID"] == uuid


async def test_rename_invalidates_streams_on_either_name() -> None:
    client = AsyncMemoryClient()
    db = client["db"]
    await db["a"].insert_one({"_id": 1})
    await db["b"].insert_one({"_id": 2})
    source, target, whole = await db["a"].watch(), await db["b"].watch(), await db.watch()
    await db["a"].rename("b", dropTarget=True)
    for stream in (source, target):
        rename, invalidate = await drain(stream)
        assert rename["operationType"] == "rename"
        assert invalidate["operationType"] == "invalidate"
        assert not stream.alive
    (event,) = await drain(whole)  # a database stream goes on
    assert event["operationType"] == "rename"
    assert whole.alive
    await db["b"].insert_one({"_id": 3})
    assert [e["operationType"] for e in await drain(whole)] == ["insert"]


async def test_update_descriptions_of_arrays() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1, "array": ["foo", {"a": "bar"}, 1, 2, 3], "p": [1]})
    stream = await coll.watch()
    # By pipeline, a shorter array is a truncation (the drivers' "Test array truncation").
    await coll.update_one({"_id": 1}, [{"$set": {"array": ["foo", {"a": "bar"}]}}])
    await coll.update_one({"_id": 1}, {"$push": {"p": 2}})  # appended elements, one by one
    await coll.update_one({"_id": 1}, {"$set": {"p": [9]}})  # set by operator: the whole array
    await coll.update_one({"_id": 1}, [{"$set": {"array": ["foo", {"a": "baz"}, 7]}}])
    truncated, pushed, replaced, changed = [e["updateDescription"] for e in await drain(stream)]
    assert truncated == {
        "updatedFields": {},
        "removedFields": [],
        "truncatedArrays": [{"field": "array", "newSize": 2}],
    }
    assert pushed["updatedFields"] == {"p.1": 2}
    assert replaced["updatedFields"] == {"p": [9]}
    assert changed["updatedFields"] == {"array.1.a": "baz", "array.2": 7}
    assert changed["truncatedArrays"] == []
    assert "disambiguatedPaths" not in changed


async def test_disambiguated_paths_name_numeric_and_dotted_fields() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    await coll.insert_one({"_id": 1, "m": {"0": {"x": 1}}, "arr": [{"x": 1}], "a.b": {"x": 1}})
    stream = await coll.watch(show_expanded_events=True)
    plain = await coll.watch()
    await coll.update_one({"_id": 1}, {"$set": {"m.0.x": 2, "arr.0.x": 2}})
    replacement = {"_id": 1, "m": {"0": {"x": 2}}, "arr": [{"x": 2}], "a.b": {"x": 2}}
    await coll.update_one({"_id": 1}, [{"$replaceRoot": {"newRoot": {"$literal": replacement}}}])
    first, second = [e["updateDescription"] for e in await drain(stream)]
    assert first["updatedFields"] == {"m.0.x": 2, "arr.0.x": 2}
    assert first["disambiguatedPaths"] == {"m.0.x": ["m", "0", "x"]}  # "0" is a field name
    assert second["updatedFields"] == {"a.b.x": 2}
    assert second["disambiguatedPaths"] == {"a.b.x": ["a.b", "x"]}  # "a.b" is one field
    for event in await drain(plain):
        assert "disambiguatedPaths" not in event["updateDescription"]


async def test_projecting_out_the_resume_token_is_fatal() -> None:
    client = AsyncMemoryClient()
    coll = client["db"]["c"]
    stream = await coll.watch([{"$project": {"_id": 0}}])
    await coll.insert_one({"_id": 1})
    with pytest.raises(OperationFailure) as info:
        await stream.try_next()
    assert info.value.code == 280
    assert info.value.has_error_label("NonResumableChangeStreamError")
    assert not stream.alive
