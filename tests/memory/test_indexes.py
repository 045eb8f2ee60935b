"""The engine's equality indexes narrow scans but never change an answer."""

from __future__ import annotations

import datetime
import random

import mongomock
import pytest
from bson import Int64, ObjectId
from pymongo.errors import DuplicateKeyError

from mongoledger.memory import MemoryClient, _native, _storage
from mongoledger.memory._bson import patched, with_bson_bools
from mongoledger.memory._match import match

VALUES = [1, 1.0, Int64(1), True, 2, "1", "a", None, [1, "a"], [[1]], {"x": 1}, float("nan")]

QUERIES = [
    {"k": 1},
    {"k": "a"},
    {"k": True},
    {"k": 2.0},
    {"k": {"$eq": 1}},
    {"k": {"$in": [2, "a"]}},
    {"k": None},
    {"k": [1, "a"]},
    {"k": 1, "j": 2},
    {"$and": [{"k": 1}, {"j": {"$gte": 0}}]},
    {"_id": 3},
    {"_id": {"$in": [5, 1, 3]}},
    {"w": "x"},
]


def bson_applies(query: dict, doc: dict) -> bool:
    """mongomock's matcher with booleans kept apart from numbers, as a server keeps them."""
    return bool(mongomock.filtering.filter_applies(with_bson_bools(query), with_bson_bools(doc)))


def brute(client: MemoryClient, query: dict) -> list:
    docs = client.server._store["db"]["c"]._documents
    return [d["_id"] for d in docs.values() if bson_applies(query, d)]


def check(client: MemoryClient, coll) -> None:
    for query in QUERIES:
        found = [d["_id"] for d in coll.find(query)]
        assert found == brute(client, query), query


@pytest.mark.parametrize("seed", range(6))
def test_indexed_finds_equal_a_scan(seed: int) -> None:
    rng = random.Random(seed)
    client = MemoryClient()
    coll = client["db"]["c"]
    coll.create_index("k")
    coll.create_index([("j", 1), ("k", 1)])
    for i in range(30):
        coll.insert_one({"_id": i, "k": rng.choice(VALUES), "j": rng.randrange(3)})
    check(client, coll)
    for _ in range(60):
        action = rng.randrange(9)
        i = rng.randrange(40)
        if action == 0:
            coll.update_one({"_id": i}, {"$set": {"k": rng.choice(VALUES)}})
        elif action == 5:  # fields no index reads: the indexes keep their entries
            coll.update_one({"_id": i}, {"$inc": {"n": 1}, "$set": {"x.y": 1}})
        elif action == 6:
            coll.update_one({"_id": i}, {"$inc": {"j": 1}})
        elif action == 7:
            coll.update_many(
                {}, {"$rename": {"k": "z"}} if rng.random() < 0.5 else {"$rename": {"z": "k"}}
            )
        elif action == 8:
            coll.update_one({"_id": i}, [{"$set": {"k": "$j"}}])  # a pipeline: fields unknown
        elif action == 1:
            coll.update_many({"j": rng.randrange(3)}, {"$set": {"k": rng.choice(VALUES)}})
        elif action == 2:
            coll.delete_one({"_id": i})
        elif action == 3:
            coll.replace_one({"_id": i}, {"k": rng.choice(VALUES), "j": 1}, upsert=True)
        else:
            with client.start_session() as s:
                s.start_transaction()
                coll.update_one({"_id": i}, {"$set": {"k": rng.choice(VALUES)}}, session=s)
                coll.insert_one({"k": rng.choice(VALUES)}, session=s)
                if rng.random() < 0.5:
                    s.abort_transaction()
                else:
                    s.commit_transaction()
        check(client, coll)


def test_natural_order_survives_an_update_into_a_bucket() -> None:
    client = MemoryClient()
    coll = client["db"]["c"]
    coll.create_index("k")
    coll.insert_many([{"_id": 1, "k": "a"}, {"_id": 2, "k": "b"}, {"_id": 3, "k": "b"}])
    assert [d["_id"] for d in coll.find({"k": "b"})] == [2, 3]
    coll.update_one({"_id": 1}, {"$set": {"k": "b"}})
    assert [d["_id"] for d in coll.find({"k": "b"})] == [1, 2, 3]
    assert list(coll.find({"k": "a"})) == []


def test_reads_outside_a_transaction_use_committed_values() -> None:
    client = MemoryClient(strict=False)
    coll = client["db"]["c"]
    coll.create_index("k")
    coll.insert_one({"_id": 1, "k": "old"})
    with client.start_session() as s:
        s.start_transaction()
        coll.update_one({"_id": 1}, {"$set": {"k": "new"}}, session=s)
        assert coll.count_documents({"k": "new"}) == 0
        assert coll.count_documents({"k": "old"}) == 1
        assert coll.count_documents({"k": "new"}, session=s) == 1
        s.abort_transaction()
    assert coll.count_documents({"k": "old"}) == 1


def test_unique_checks_see_documents_changed_in_the_same_command() -> None:
    client = MemoryClient()
    coll = client["db"]["c"]
    coll.create_index("u", unique=True)
    coll.insert_many([{"_id": 1, "u": 1, "g": 0}, {"_id": 2, "u": 2, "g": 0}])
    with pytest.raises(DuplicateKeyError):
        coll.update_many({"g": 0}, {"$set": {"u": 3}})
    # Like a server: the first document stays updated, the second collides.
    assert [d["_id"] for d in coll.find({"u": 3})] == [1]
    assert [d["_id"] for d in coll.find({"u": 2})] == [2]
    stored = client.server._store["db"]["c"]._documents
    assert {type(doc) for doc in stored.values()} == {dict}  # no update's working copy left


def test_unique_checks_follow_every_way_an_update_reaches_the_key() -> None:
    client = MemoryClient()
    coll = client["db"]["c"]
    coll.create_index("u", unique=True, partialFilterExpression={"u": {"$exists": True}})
    coll.insert_many([{"_id": 1, "u": 1, "v": 2, "n": 0}, {"_id": 2, "u": 2, "n": 0}])
    coll.update_one({"_id": 1}, {"$inc": {"n": 1}})  # cannot reach "u": no check needed
    for update in (
        {"$inc": {"u": 1}},
        {"$rename": {"v": "u"}},
        {"$set": {"u": 2}},
        [{"$set": {"u": 2}}],
    ):
        with pytest.raises(DuplicateKeyError):
            coll.update_one({"_id": 1}, update)
        assert coll.find_one({"_id": 1}) == {"_id": 1, "u": 1, "v": 2, "n": 1}, update
    with client.start_session() as s:  # one transaction: two updates of one document
        s.start_transaction()
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=s)
        with pytest.raises(DuplicateKeyError):
            coll.update_one({"_id": 1}, {"$inc": {"u": 1}}, session=s)
        s.abort_transaction()
    assert coll.find_one({"_id": 1}) == {"_id": 1, "u": 1, "v": 2, "n": 1}
    coll.insert_many([{"_id": 3, "u": {"a": 1}}, {"_id": 4, "u": {"a": 2}}])
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"_id": 3}, {"$set": {"u.a": 2}})  # a path inside the key field


def test_index_changes_of_every_kind_reach_the_checks() -> None:
    client = MemoryClient()
    coll = client["db"]["c"]
    coll.create_index("u", unique=True)
    coll.insert_one({"_id": 1, "u": 1})
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": 2, "u": 1})
    coll.drop()  # replaces the index mapping instead of dropping one by one
    coll.insert_many([{"_id": 1, "u": 1}, {"_id": 2, "u": 1}])
    other = client["db"]["d"]
    other.create_index("v", unique=True)
    other.insert_one({"_id": 3, "v": 1})
    with pytest.raises(DuplicateKeyError):
        other.insert_one({"_id": 4, "v": 1})
    other.drop_index("v_1")
    other.insert_one({"_id": 4, "v": 1})


def test_an_empty_replacement_still_meets_the_unique_index() -> None:
    client = MemoryClient()
    coll = client["db"]["c"]
    coll.create_index("u", unique=True)
    coll.insert_many([{"_id": 1, "x": 0}, {"_id": 2, "u": 5}])  # _id 1 is in it as u: null
    with pytest.raises(DuplicateKeyError):
        coll.replace_one({"_id": 2}, {})  # would make _id 2 u: null too
    assert coll.find_one({"_id": 2}) == {"_id": 2, "u": 5}


def test_partial_unique_index_ignores_documents_outside_its_filter() -> None:
    client = MemoryClient()
    coll = client["db"]["c"]
    coll.create_index(
        [("key", 1), ("leg", 1)], unique=True, partialFilterExpression={"key": {"$exists": True}}
    )
    coll.insert_many([{"leg": 0}, {"leg": 0}, {"key": "a", "leg": 0}])
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"key": "a", "leg": 0})
    coll.insert_one({"key": "a", "leg": 1})


def test_wildcard_index_serves_any_top_level_field() -> None:
    client = MemoryClient()
    coll = client["db"]["c"]
    coll.create_index([("$**", 1)])
    ids = coll.insert_many([{"user": i % 7, "t": "w"} for i in range(50)]).inserted_ids
    assert [d["_id"] for d in coll.find({"user": 3, "t": "w"})] == ids[3::7]
    docs = client.server._store["db"]["c"]._documents
    assert "user" in docs.fields


def test_id_lookups_do_not_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    client = MemoryClient()
    coll = client["db"]["c"]
    coll.insert_many([{"_id": ObjectId(), "n": i} for i in range(200)])
    target = coll.find_one({"n": 150})
    calls = count_matches(monkeypatch)
    assert coll.find_one({"_id": target["_id"]})["n"] == 150
    coll.update_one({"_id": target["_id"]}, {"$inc": {"n": 1}})
    assert len(calls) <= 4


def count_matches(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """Record every document the engine tests against a filter (one entry each)."""
    calls: list[None] = []
    original = mongomock.filtering.filter_applies

    def counting(*args, **kwargs):
        calls.append(None)
        return original(*args, **kwargs)

    monkeypatch.setattr(mongomock.filtering, "filter_applies", counting)
    monkeypatch.setattr(mongomock.collection, "filter_applies", counting)
    monkeypatch.setattr(_storage, "fast_match", counting)
    return calls


HOUR = datetime.timedelta(hours=1)
SCALARS = [
    0,
    1,
    -1,
    2.5,
    1.0,
    Int64(1),
    True,
    False,
    None,
    "",
    "a",
    "b",
    float("nan"),
    ObjectId("5f0000000000000000000001"),
    datetime.datetime(2024, 1, 1),
    datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    # Datetimes a filter gives that the store never holds: microseconds, other offsets.
    datetime.datetime(2024, 1, 1, 0, 0, 0, 1500),
    datetime.datetime(2024, 1, 1, 1, 0, 0, 999, tzinfo=datetime.timezone(HOUR)),
    datetime.datetime(2023, 12, 31, 23, 0, 0, 1200, tzinfo=datetime.timezone(-HOUR)),
]
STORED_DATETIMES = [datetime.datetime(2024, 1, 1, 0, 0, 0, 1000), datetime.datetime(2023, 1, 1)]
DOC_VALUES = [*SCALARS, *STORED_DATETIMES, [1, 2], {"x": 1}, b"a"]


def random_filter(rng: random.Random, depth: int = 0) -> dict:
    flt: dict = {}
    for _ in range(rng.randrange(1, 3)):
        roll = rng.random()
        if roll < 0.15 and depth < 2:
            flt[rng.choice(["$and", "$or"])] = [
                random_filter(rng, depth + 1) for _ in range(rng.randrange(1, 3))
            ]
            continue
        if roll < 0.25:
            flt["$expr"] = random_expr(rng)
            continue
        name = rng.choice(["a", "b", "c"])
        if roll < 0.5:
            flt[name] = rng.choice(SCALARS)
        else:
            op = rng.choice(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$exists", "$in", "$type"])
            if op == "$type":
                arg = rng.choice(["number", "string", 1])
            elif op == "$exists":
                arg = rng.choice([True, False])
            elif op == "$in":
                arg = rng.sample(SCALARS, 2)
            else:
                arg = rng.choice(SCALARS)
            flt[name] = {op: arg}
    return flt


def random_operand(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if roll < 0.4:
        return "$" + rng.choice(["a", "b", "c"])
    if roll < 0.6 and depth < 2:
        return {"$add": [random_operand(rng, depth + 1) for _ in range(rng.randrange(1, 3))]}
    return rng.choice([0, 1, -1, 2.5, Int64(7), -(2**62), True, None, "a"])


def random_expr(rng: random.Random) -> dict:
    op = rng.choice(["$gt", "$gte", "$lt", "$lte", "$eq", "$ne"])
    return {op: [random_operand(rng), random_operand(rng)]}


def test_fast_matcher_agrees_with_mongomock() -> None:
    """The fast matcher takes a filter as given; mongomock's, as the engine hands it over
    (its datetimes patched: naive UTC, to the millisecond)."""
    rng = random.Random(1)
    decided = 0
    for _ in range(20_000):
        doc = {k: rng.choice(DOC_VALUES) for k in ("a", "b", "c") if rng.random() < 0.8}
        flt = random_filter(rng)
        fast = match(flt, doc)
        if fast is None:
            continue
        decided += 1
        assert fast == bson_applies(patched(flt), doc), (flt, doc)
    assert decided > 10_000


SORT_VALUES = [
    None,
    0,
    1,
    -3,
    2.5,
    Int64(2),
    "",
    "a",
    "B",
    ObjectId("5f0000000000000000000001"),
    ObjectId("5f0000000000000000000002"),
    True,
    False,
    datetime.datetime(2024, 1, 1),
    datetime.datetime(2023, 1, 1),
]


def test_native_sort_agrees_with_mongomock() -> None:
    rng = random.Random(3)
    decided = 0
    for _ in range(3_000):
        docs = [
            {"_id": i, **{k: rng.choice(SORT_VALUES) for k in ("a", "b") if rng.random() < 0.9}}
            for i in range(rng.randrange(0, 12))
        ]
        direction = rng.choice([1, -1])
        sort = [(name, direction) for name in rng.sample(["a", "b", "_id"], rng.randrange(1, 3))]
        stop = rng.choice([None, 1, 3, 20])
        native = _native.native_sort(list(docs), sort, stop)
        if native is None:
            continue
        decided += 1
        expected = list(docs)
        for name, way in reversed(sort):  # mongomock's own order: one stable sort per key
            expected.sort(key=_storage._sort_key(name), reverse=way < 0)
        assert [d["_id"] for d in native][:stop] == [d["_id"] for d in expected][:stop], sort
    assert decided > 2_500


def test_native_sort_leaves_what_it_cannot_order_to_mongomock() -> None:
    docs = [{"_id": 1, "a": [2, 1]}, {"_id": 2, "a": 1}]
    assert _native.native_sort(docs, [("a", 1)], None) is None  # arrays
    assert _native.native_sort(docs, [("a", 1), ("_id", -1)], None) is None  # mixed ways
    assert _native.native_sort([{"a": float("nan")}], [("a", 1)], None) is None
    assert _native.native_sort(docs, [("a.b", 1)], None) is None


NUMBERS = [None, 0, 1, 1.0, -3, 2.5, Int64(2), Int64(-(2**40))]
GROUP_KEYS = [*NUMBERS, -0.0, "a", "b", ObjectId("5f0000000000000000000001"), True, False]


def random_group(rng: random.Random) -> dict:
    spec: dict = {"_id": rng.choice([None, "$k", "$n"])}
    for i in range(rng.randrange(1, 4)):
        op = rng.choice(["$sum", "$min", "$max", "$first"])
        arg = rng.choice(["$n", "$m", "$k"]) if op != "$sum" or rng.random() < 0.6 else 1
        spec[f"out{i}"] = {op: arg}
    return spec


def test_native_group_agrees_with_mongomock() -> None:
    rng = random.Random(5)
    decided = 0
    for _ in range(3_000):
        docs = [
            {
                "_id": i,
                "k": rng.choice(GROUP_KEYS),
                **{f: rng.choice(NUMBERS) for f in ("n", "m") if rng.random() < 0.9},
            }
            for i in range(rng.randrange(0, 15))
        ]
        spec = random_group(rng)
        native = _native.native_group(docs, spec)
        if native is None:
            continue
        decided += 1
        expected = _native.run_pipeline([dict(d) for d in docs], None, [{"$group": spec}])
        typed = [[(k, type(v), v) for k, v in d.items()] for d in native]
        assert typed == [[(k, type(v), v) for k, v in d.items()] for d in expected], spec
    assert decided > 1_000


def test_native_group_leaves_what_it_cannot_run_to_mongomock() -> None:
    docs = [{"_id": 1, "a": 1, "b": "x"}]
    assert _native.native_group(docs, {"_id": "$a.b"}) is None  # paths
    assert _native.native_group(docs, {"_id": "$a", "n": {"$avg": "$a"}}) is None  # operators
    assert _native.native_group(docs, {"_id": "$a", "n": {"$sum": "$b"}}) is None  # strings
    assert _native.native_group([{"_id": 1, "a": [1]}], {"_id": "$a"}) is None  # arrays


def test_document_ids_are_found_without_a_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server finds ``{_id: {...}}`` and ``{_id: {$in: [{...}, "x"]}}`` through its _id index
    (the ledger's idempotency records and checkpoints have document ids)."""
    coll = MemoryClient()["db"]["c"]
    coll.insert_many([{"_id": {"ledger": "t", "key": f"k{i}"}, "n": i} for i in range(200)])
    coll.insert_one({"_id": "k7", "n": "legacy"})
    calls = count_matches(monkeypatch)
    assert coll.find_one({"_id": {"ledger": "t", "key": "k7"}})["n"] == 7
    found = list(coll.find({"_id": {"$in": [{"ledger": "t", "key": "k150"}, "k7"]}}))
    assert sorted(str(d["n"]) for d in found) == ["150", "legacy"]
    assert coll.find_one({"_id": {"$eq": {"ledger": "t", "key": "k9"}}})["n"] == 9
    assert len(calls) <= 6


def test_filter_datetimes_compare_as_stored() -> None:
    """A filter's datetimes are compared as BSON stores them (UTC, to the millisecond), in every
    read and write that takes a filter, and in a document ``_id`` found through the index."""
    coll = MemoryClient()["db"]["c"]
    paris = datetime.timezone(HOUR)
    at = datetime.datetime(2024, 5, 1, 12, 0, 0, 250_400, tzinfo=paris)  # 11:00:00.250 UTC
    coll.insert_many(
        [
            {"_id": {"day": at}, "at": at, "n": 1},
            {"_id": 2, "at": datetime.datetime(2024, 5, 1, 11, 0, 0, 251_000), "n": 2},
        ]
    )
    same = datetime.datetime(2024, 5, 1, 11, 0, 0, 250_999)  # naive UTC, other microseconds
    assert [d["n"] for d in coll.find({"at": same})] == [1]
    assert [d["n"] for d in coll.find({"at": {"$gt": same}})] == [2]
    assert [d["n"] for d in coll.find({"at": {"$lte": at}})] == [1]
    assert coll.find_one({"_id": {"day": same}})["n"] == 1
    assert coll.find_one({"_id": {"day": at}})["n"] == 1
    assert coll.distinct("n", {"at": {"$in": [same]}}) == [1]
    assert [d["n"] for d in coll.aggregate([{"$match": {"at": {"$gte": at}}}])] == [1, 2]
    assert coll.find_one_and_update(
        {"at": {"$lt": at.replace(microsecond=251_000)}}, {"$inc": {"n": 10}}
    )
    assert coll.update_one({"at": {"$gt": at}}, {"$inc": {"n": 10}}).modified_count == 1
    assert sorted(d["n"] for d in coll.find()) == [11, 12]


@pytest.mark.parametrize("held", [0, 5])
@pytest.mark.parametrize("floor", [None, 0, -100])
def test_fast_matcher_decides_the_ledgers_guards(held: int, floor: int | None) -> None:
    """Every write's guarded update and a hold's closing filter are decided without mongomock
    (its matcher is ten times slower), and as mongomock decides them."""
    from mongoledger._core.accounts import AccountRef
    from mongoledger._core.config import LedgerConfig
    from mongoledger._core.guards import leg_update
    from mongoledger._core.holds import closing_filter

    cfg, oid = LedgerConfig(), ObjectId()
    account = {"_id": oid, "balance": Int64(3), "seq": 1, "min_balance": floor}
    if held:
        account["held"] = Int64(held)
    now = datetime.datetime(2024, 5, 1, 12, 0, 0, 250_400, tzinfo=datetime.timezone.utc)
    hold = {"_id": oid, "status": "pending", "amount": Int64(7)}
    cases = [
        (leg_update(cfg, AccountRef(id=oid), amount, None, held=h).filter, account)
        for amount, h in [(1, 0), (-1, 0), (-10, 0), (0, 1), (0, 9), (-7, -7)]
    ]
    cases += [(closing_filter(oid, now, amount=a), hold) for a in (None, 7, 8)]
    stored = now.replace(tzinfo=None, microsecond=250_000)  # as the store holds it
    cases += [
        (closing_filter(oid, now), {**hold, "expires_at": at})
        for at in (stored, stored + HOUR, stored - HOUR)
    ]
    for flt, doc in cases:
        fast = match(flt, doc)
        assert fast is not None, flt
        assert fast == bson_applies(patched(flt), doc), (flt, doc)
