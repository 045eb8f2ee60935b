"""``db.command(...)`` for the CRUD commands on the async client (and, generated, the sync one):
the same dispatcher and reply shapes the wire endpoint serves (``tests/wire/test_commands.py``
covers them in depth), inside and outside a transaction."""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure

from mongoledger.memory import AsyncMemoryClient

_IS_SYNC = False


async def test_crud_commands_answer_with_the_servers_reply_shapes() -> None:
    db = AsyncMemoryClient()["db"]
    inserted = await db.command("insert", "c", documents=[{"_id": 1, "a": 1}, {"_id": 2, "a": 2}])
    assert inserted == {"n": 2, "ok": 1.0}
    dup = await db.command("insert", "c", documents=[{"_id": 1}], ordered=False)
    assert dup["n"] == 0
    assert [e["code"] for e in dup["writeErrors"]] == [11000]

    updated = await db.command(
        "update", "c", updates=[{"q": {}, "u": {"$inc": {"a": 10}}, "multi": True}]
    )
    assert (updated["n"], updated["nModified"]) == (2, 2)
    found = await db.command("find", "c", filter={"a": {"$gt": 11}}, projection={"_id": 1})
    assert found["cursor"]["firstBatch"] == [{"_id": 2}]
    assert found["cursor"]["ns"] == "db.c"
    modified = await db.command(
        "findAndModify", "c", query={"_id": 1}, update={"$set": {"b": True}}, new=True
    )
    assert modified["value"] == {"_id": 1, "a": 11, "b": True}
    assert modified["lastErrorObject"]["updatedExisting"] is True
    assert (await db.command("count", "c", query={"b": True}))["n"] == 1
    assert sorted((await db.command("distinct", "c", key="a"))["values"]) == [11, 12]
    aggregated = await db.command(
        "aggregate", "c", pipeline=[{"$group": {"_id": None, "s": {"$sum": "$a"}}}], cursor={}
    )
    assert aggregated["cursor"]["firstBatch"] == [{"_id": None, "s": 23}]

    batched = await db.command("find", "c", batchSize=1)
    cursor_id = batched["cursor"]["id"]
    assert cursor_id != 0
    assert len(batched["cursor"]["firstBatch"]) == 1
    more = await db.command("getMore", cursor_id, collection="c")
    assert more["cursor"]["nextBatch"] == [{"_id": 2, "a": 12}]
    deleted = await db.command("delete", "c", deletes=[{"q": {"_id": 2}, "limit": 1}])
    assert deleted["n"] == 1
    assert await db["c"].count_documents({}) == 1


async def test_crud_commands_join_the_sessions_transaction() -> None:
    client = AsyncMemoryClient(strict=False)  # reads committed data outside the transaction
    db = client["db"]
    await db["c"].insert_one({"_id": 1, "a": 1})
    async with client.start_session() as s:
        await s.start_transaction()
        await db.command("insert", "c", documents=[{"_id": 2}], session=s)
        await db.command(
            "update", "c", updates=[{"q": {"_id": 1}, "u": {"$inc": {"a": 1}}}], session=s
        )
        seen = await db.command("find", "c", filter={}, session=s)
        assert len(seen["cursor"]["firstBatch"]) == 2
        assert await db["c"].count_documents({}) == 1  # not yet, outside it
        await s.abort_transaction()
    assert await db["c"].find_one({"_id": 1}) == {"_id": 1, "a": 1}
    assert await db["c"].count_documents({}) == 1


async def test_an_unknown_command_fails_as_the_server_answers() -> None:
    db = AsyncMemoryClient()["db"]
    with pytest.raises(OperationFailure) as info:
        await db.command("noSuchCommand", 1)
    assert info.value.code == 59
