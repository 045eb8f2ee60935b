"""The engine's native update (``memory._update``) gives exactly what mongomock's update path
gives: the stored document (BSON types included), the write result, and the error."""

from __future__ import annotations

import datetime
import math

import bson
import pytest
from bson import Decimal128, Int64, ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import ReturnDocument, UpdateOne

from mongoledger.memory import MemoryClient, _storage
from mongoledger.memory._update import plan

UTC = datetime.UTC
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))

FIELDS = ["a", "b", "c"]
VALUES = st.one_of(
    st.integers(-(2**31) - 2, -(2**31) + 2),
    st.integers(-3, 3),
    st.integers(2**31 - 2, 2**31 + 2),
    st.integers(2**63 - 2, 2**63 + 1),  # beyond int64 refused by the encoding check
    st.builds(Int64, st.integers(-(2**40), 2**40)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.builds(ObjectId),
    st.datetimes(
        min_value=datetime.datetime(1999, 1, 1),
        max_value=datetime.datetime(2100, 1, 1),
        timezones=st.sampled_from([None, UTC, PLUS_TWO]),
    ),
    st.builds(Decimal128, st.sampled_from(["1", "-2.5", "NaN"])),
    st.lists(st.integers(-2, 2), max_size=2),
    st.fixed_dictionaries({"x": st.integers(-2, 2)}),
)
DOCUMENTS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3)
OPERATORS = st.dictionaries(
    st.sampled_from(["$inc", "$set", "$max", "$min", "$unset"]),
    st.dictionaries(st.sampled_from([*FIELDS, "_id", "a.b"]), VALUES, max_size=2),
    min_size=1,
    max_size=3,
)
# Pipelines: one or two $set stages of literals and field paths (a capture's shape), and
# values the native path leaves to mongomock (plain strings, expressions).
STAGE_VALUES = st.one_of(
    st.builds(lambda v: {"$literal": v}, VALUES),
    st.sampled_from(["$a", "$b", "$c", "$_id", "$missing", "$$ROOT", "plain"]),
    st.just({"$add": ["$a", 1]}),
)
STAGES = st.builds(
    lambda stage, fields: {stage: fields},
    st.sampled_from(["$set", "$addFields"]),
    st.dictionaries(st.sampled_from([*FIELDS, "d"]), STAGE_VALUES, min_size=1, max_size=3),
)
UPDATES = st.one_of(OPERATORS, st.lists(STAGES, min_size=1, max_size=2))


def outcome(fn):
    """What ``fn`` returned, or the type and message of what it raised."""
    try:
        return ("ok", fn())
    except Exception as exc:  # every error must be the same one, whatever it is
        return ("error", type(exc).__name__, str(exc))


def stored(coll) -> list[bytes]:
    """The stored documents as BSON: the types count, not only Python equality."""
    return [bson.encode(doc) for doc in coll.find({}).sort("_id", 1)]


def run_both(scenario):
    """``scenario(coll)`` on the engine with its native path and with mongomock's alone."""
    native = MemoryClient()["db"]["c"]
    got = (outcome(lambda: scenario(native)), stored(native))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_storage, "update_plan", lambda update: None)
        reference = MemoryClient()["db"]["c"]
        want = (outcome(lambda: scenario(reference)), stored(reference))
    return got, want


def same(got, want) -> bool:
    """Equal down to the types (``Int64(1)`` is not ``1``), a NaN equal to a NaN."""
    return repr(got) == repr(want)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=DOCUMENTS, update=UPDATES, inside=st.booleans(), many=st.booleans())
def test_native_updates_match_mongomocks_path(doc, update, inside, many):
    def scenario(coll):
        coll.insert_one({"_id": 1, **doc})
        coll.insert_one({"_id": 2, **doc})
        client = coll.database.client
        if not inside:
            result = (coll.update_many if many else coll.update_one)({}, update)
            return result.matched_count, result.modified_count
        with client.start_session() as session, session.start_transaction():
            result = (coll.update_many if many else coll.update_one)({}, update, session=session)
            return result.matched_count, result.modified_count

    got, want = run_both(scenario)
    assert same(got, want), (doc, update)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=DOCUMENTS, update=UPDATES, after=st.booleans())
def test_native_find_one_and_update_matches_mongomocks_path(doc, update, after):
    def scenario(coll):
        coll.insert_one({"_id": 1, **doc})
        return coll.find_one_and_update(
            {"_id": 1},
            update,
            projection={"a": 1, "b": 1},
            return_document=ReturnDocument.AFTER if after else ReturnDocument.BEFORE,
        )

    got, want = run_both(scenario)
    assert same(got, want), (doc, update)


def test_the_ledgers_update_takes_the_native_path():
    """A leg's update (``$inc`` of ints, ``$max`` of an aware datetime) and a capture's close
    (a ``$set`` stage of literals and a field) are planned natively; paths, operators it does
    not reproduce, and a field named twice are not."""
    now = datetime.datetime.now(UTC)
    steps = plan({"$inc": {"seq": 1, "balance": Int64(-5)}, "$max": {"last_date": now}})
    assert steps is not None
    ((_, _, when),) = [s for s in steps if s[0] == "$max"]
    assert when.tzinfo is None  # stored as the server does: naive UTC, to the millisecond
    assert when.microsecond % 1000 == 0
    close = [{"$set": {"status": {"$literal": "captured"}, "captured_amount": "$amount"}}]
    assert plan(close) == (("$set", "status", "captured"), ("$copy", "captured_amount", "amount"))
    for update in (
        [{"$set": {"a": "$b.c"}}],
        [{"$set": {"a": "b"}}],
        [{"$set": {"a": {"$literal": 1}}}, {"$set": {"b": 1}}],
        [{"$unset": "a"}],
        {"$inc": {"a.b": 1}},
        {"$push": {"a": 1}},
        {"$set": {"a": [1]}},
        {"$inc": {"a": 1}, "$set": {"a": 2}},
        {"$set": {"_id": 2}},
        {"$inc": {"a": True}},
        {"$set": {"a": 2**63}},
        {},
        {"$set": {}},
    ):
        assert plan(update) is None, update


def test_a_unique_index_refuses_a_native_update_and_keeps_the_document():
    coll = MemoryClient()["db"]["c"]
    coll.create_index("k", unique=True)
    coll.insert_many([{"_id": 1, "k": 1}, {"_id": 2, "k": 2}])
    with pytest.raises(Exception, match="E11000"):
        coll.update_one({"_id": 2}, {"$set": {"k": 1}})
    assert list(coll.find({}, {"_id": 0}).sort("k", 1)) == [{"k": 1}, {"k": 2}]
    result = coll.bulk_write([UpdateOne({"_id": 2}, {"$inc": {"k": 10}})])
    assert result.modified_count == 1
    assert coll.find_one({"_id": 2})["k"] == 12


def test_a_pipeline_reads_the_document_as_it_was_before_the_stage():
    coll = MemoryClient()["db"]["c"]
    coll.insert_one({"_id": 1, "a": 1, "b": 2})
    coll.update_one({"_id": 1}, [{"$set": {"a": "$b", "b": "$a"}}])
    assert coll.find_one({}) == {"_id": 1, "a": 2, "b": 1}


def test_nan_increments_are_modifications():
    coll = MemoryClient()["db"]["c"]
    coll.insert_one({"_id": 1, "x": math.nan})
    result = coll.update_one({"_id": 1}, {"$inc": {"x": 1}})
    assert result.modified_count == 1
    assert math.isnan(coll.find_one({})["x"])
