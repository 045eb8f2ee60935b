"""Booleans are not numbers: ``true`` never equals ``1`` (nor ``false`` ``0``) in ``_id``s,
queries, unique indexes, ``distinct`` or ``$group`` keys; ``1``, ``1.0`` and ``Int64(1)``
are one number."""

from __future__ import annotations

import pytest
from bson import Int64
from pymongo.errors import DuplicateKeyError

from mongoledger.memory import AsyncMemoryClient

_IS_SYNC = False


@pytest.fixture
async def coll():
    coll = AsyncMemoryClient()["db"]["c"]
    await coll.insert_many(
        [
            {"_id": 1, "flag": True, "tags": [True]},
            {"_id": 2, "flag": 1, "tags": [1]},
            {"_id": 3, "flag": 1.0, "tags": [0]},
            {"_id": 4, "flag": False, "n": {"v": True}},
            {"_id": 5, "flag": 0, "n": {"v": 1}},
        ]
    )
    return coll


async def found(coll, query: dict) -> list:
    return [d["_id"] async for d in coll.find(query)]


async def test_ids_true_and_1_are_different_documents() -> None:
    coll = AsyncMemoryClient()["db"]["c"]
    await coll.insert_one({"_id": True, "v": "bool"})
    await coll.insert_one({"_id": 1, "v": "int"})
    await coll.insert_one({"_id": {"k": True}, "v": "doc"})
    await coll.insert_one({"_id": {"k": 1}, "v": "doc int"})
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"_id": 1.0})  # the same number
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"_id": Int64(1)})
    assert (await coll.find_one({"_id": True}))["v"] == "bool"
    assert (await coll.find_one({"_id": 1}))["v"] == "int"
    assert (await coll.find_one({"_id": {"k": 1}}))["v"] == "doc int"
    await coll.update_one({"_id": True}, {"$set": {"v": "still bool"}})
    assert (await coll.find_one({"_id": 1}))["v"] == "int"
    await coll.delete_one({"_id": 1})
    assert await found(coll, {}) == [True, {"k": True}, {"k": 1}]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"flag": True}, [1]),
        ({"flag": 1}, [2, 3]),
        ({"flag": {"$eq": False}}, [4]),
        ({"flag": {"$ne": 1}}, [1, 4, 5]),
        ({"flag": {"$in": [True, 0]}}, [1, 5]),
        ({"flag": {"$nin": [1]}}, [1, 4, 5]),
        ({"flag": {"$gte": 1}}, [2, 3]),
        ({"flag": {"$type": "bool"}}, [1, 4]),
        ({"tags": 1}, [2]),  # array elements: the slow matcher
        ({"tags": True}, [1]),
        ({"n.v": True}, [4]),  # dotted paths: the slow matcher
        ({"n": {"v": 1}}, [5]),
        ({"$or": [{"flag": True}, {"n.v": 1}]}, [1, 5]),
    ],
)
async def test_queries_keep_booleans_apart(coll, query: dict, expected: list) -> None:
    assert await found(coll, query) == expected
    assert await coll.count_documents(query) == len(expected)


async def test_indexes_keep_booleans_apart(coll) -> None:
    await coll.create_index("flag")
    assert await found(coll, {"flag": True}) == [1]
    assert await found(coll, {"flag": 1}) == [2, 3]
    unique = AsyncMemoryClient()["db"]["u"]
    await unique.create_index("k", unique=True)
    await unique.insert_many([{"k": True}, {"k": 1}, {"k": False}, {"k": 0}])
    with pytest.raises(DuplicateKeyError):
        await unique.insert_one({"k": 1.0})
    with pytest.raises(DuplicateKeyError):
        await unique.insert_one({"k": True})


async def test_distinct_and_group_keep_booleans_apart(coll) -> None:
    values = await coll.distinct("flag")
    assert [(type(v), v) for v in values] == [(bool, True), (int, 1), (bool, False), (int, 0)]
    rows = await (await coll.aggregate([{"$group": {"_id": "$flag", "n": {"$sum": 1}}}])).to_list()
    assert {(type(r["_id"]), r["_id"], r["n"]) for r in rows} == {
        (int, 0, 1),
        (int, 1, 2),  # 1 and 1.0: one number
        (bool, False, 1),
        (bool, True, 1),
    }
    nested = await (
        await coll.aggregate([{"$group": {"_id": "$n.v", "n": {"$sum": 1}}}])
    ).to_list()  # a dotted key: mongomock's $group, keyed as BSON values
    assert {(type(r["_id"]), r["_id"], r["n"]) for r in nested} == {
        (type(None), None, 3),
        (bool, True, 1),
        (int, 1, 1),
    }


async def test_sorts_order_booleans_after_numbers(coll) -> None:
    ordered = [d["flag"] async for d in coll.find({}, sort=[("flag", 1), ("_id", 1)])]
    assert [(type(v), v) for v in ordered] == [
        (int, 0),
        (int, 1),
        (float, 1.0),
        (bool, False),
        (bool, True),
    ]
