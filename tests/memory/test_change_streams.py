"""Change streams of the in-memory engine: shapes, commit order, resume, invalidate."""

from __future__ import annotations

import datetime

import pytest
from bson import Int64, Timestamp
from pymongo.errors import OperationFailure

from mongoledger.memory import MemoryClient, MemoryServer


@pytest.fixture
def client() -> MemoryClient:
    return MemoryClient()


def drain(stream) -> list[dict]:
    out = []
    while (ev := stream.try_next()) is not None:
        out.append(ev)
    return out


def test_event_shapes_match_the_manual(client: MemoryClient) -> None:
    coll = client["db"]["c"]
    stream = coll.watch()
    coll.insert_one({"_id": 1, "a": 1, "n": {"x": 1, "y": 2}})
    coll.update_one({"_id": 1}, {"$set": {"a": 2, "n.x": 5}, "$unset": {"n.y": ""}})
    coll.replace_one({"_id": 1}, {"b": 1})
    coll.delete_one({"_id": 1})
    ins, upd, rep, dele = drain(stream)
    for ev in (ins, upd, rep, dele):
        assert set(ev["_id"]) == {"_data"}
        assert isinstance(ev["_id"]["_data"], str)
        assert isinstance(ev["clusterTime"], Timestamp)
        assert isinstance(ev["wallTime"], datetime.datetime)
        assert ev["ns"] == {"db": "db", "coll": "c"}
        assert ev["documentKey"] == {"_id": 1}
        assert "lsid" not in ev
    assert ins["operationType"] == "insert"
    assert ins["fullDocument"] == {"_id": 1, "a": 1, "n": {"x": 1, "y": 2}}
    assert upd["operationType"] == "update"
    assert "fullDocument" not in upd
    assert upd["updateDescription"] == {
        "updatedFields": {"a": 2, "n.x": 5},
        "removedFields": ["n.y"],
        "truncatedArrays": [],
    }
    assert rep["operationType"] == "replace"
    assert rep["fullDocument"] == {"_id": 1, "b": 1}
    assert dele["operationType"] == "delete"
    assert "fullDocument" not in dele


def test_update_lookup_and_transaction_fields(client: MemoryClient) -> None:
    coll = client["db"]["c"]
    coll.insert_one({"_id": 1, "n": 0})
    stream = coll.watch(full_document="updateLookup")
    with client.start_session() as s:
        with s.start_transaction():
            coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=s)
            coll.insert_one({"_id": 2}, session=s)
            assert stream.try_next() is None  # nothing before commit
        events = drain(stream)
        assert [e["operationType"] for e in events] == ["update", "insert"]
        assert events[0]["fullDocument"] == {"_id": 1, "n": 1}
        assert events[0]["clusterTime"] == events[1]["clusterTime"]
        for ev in events:
            assert ev["lsid"]["id"] == s.session_id["id"]
            assert ev["txnNumber"] == Int64(1)


def test_aborted_transactions_emit_nothing_and_commit_order_is_kept() -> None:
    client = MemoryClient()
    coll = client["db"].create_collection("c")  # two transactions creating it would conflict
    stream = coll.watch()
    with client.start_session() as a, client.start_session() as b:
        a.start_transaction()
        b.start_transaction()
        coll.insert_one({"_id": "a"}, session=a)
        coll.insert_one({"_id": "b"}, session=b)
        b.commit_transaction()
        a.commit_transaction()
        a.start_transaction()
        coll.insert_one({"_id": "aborted"}, session=a)
        a.abort_transaction()
    assert [e["documentKey"]["_id"] for e in drain(stream)] == ["b", "a"]


def test_resume_after_gives_exactly_the_rest(client: MemoryClient) -> None:
    coll = client["db"]["c"]
    stream = coll.watch()
    coll.insert_many([{"_id": i} for i in range(5)])
    first_two = [stream.next(), stream.next()]
    token = stream.resume_token
    assert token == first_two[1]["_id"]
    rest = drain(coll.watch(resume_after=token))
    assert [e["documentKey"]["_id"] for e in rest] == [2, 3, 4]
    at = coll.watch(start_at_operation_time=first_two[0]["clusterTime"])
    assert len(drain(at)) == 5


def test_post_batch_resume_token_advances_past_filtered_events(client: MemoryClient) -> None:
    coll = client["db"]["c"]
    other = client["db"]["other"]
    stream = coll.watch([{"$match": {"operationType": "delete"}}])
    coll.insert_one({"_id": 1})
    other.insert_one({"_id": 1})
    assert stream.try_next() is None
    token = stream.resume_token
    coll.delete_one({"_id": 1})
    resumed = coll.watch(resume_after=token)
    assert [e["operationType"] for e in drain(resumed)] == ["delete"]


def test_pipeline_stages_apply(client: MemoryClient) -> None:
    coll = client["db"]["c"]
    stream = coll.watch(
        [
            {"$match": {"fullDocument.k": {"$gt": 1}}},
            {"$project": {"operationType": 1, "fullDocument.k": 1}},
            {"$addFields": {"tag": "x"}},
        ]
    )
    coll.insert_many([{"k": 1}, {"k": 2}])
    (ev,) = drain(stream)
    assert set(ev) == {"_id", "operationType", "fullDocument", "tag"}
    assert ev["fullDocument"] == {"k": 2}


@pytest.mark.parametrize(
    ("pipeline", "code"),
    [
        ([{"$group": {"_id": None}}], 20),
        ([{"$bogus": {}}], 40324),
        ([{"$match": {"a": {"$nope": 1}}}], None),
    ],
)
def test_invalid_pipeline_raises_at_watch(client: MemoryClient, pipeline, code) -> None:
    with pytest.raises(OperationFailure) as info:
        client["db"]["c"].watch(pipeline)
    if code is not None:
        assert info.value.code == code


def test_bad_tokens(client: MemoryClient) -> None:
    coll = client["db"]["c"]
    with pytest.raises(OperationFailure) as info:
        coll.watch(resume_after={"_data": "zz"})
    assert info.value.code == 9
    foreign = MemoryClient()["db"]["c"].watch().resume_token
    with pytest.raises(OperationFailure) as info:
        coll.watch(resume_after=foreign)
    assert info.value.code == 280


def test_drop_invalidates_the_stream() -> None:
    client = MemoryClient()
    coll = client["db"]["c"]
    stream = coll.watch()
    coll.insert_one({"_id": 1})
    coll.drop()
    events = list(stream)
    assert [e["operationType"] for e in events] == ["insert", "drop", "invalidate"]
    assert not stream.alive
    with pytest.raises(OperationFailure) as info:
        coll.watch(resume_after=events[-1]["_id"])
    assert info.value.code == 260
    after = coll.watch(start_after=events[-1]["_id"])
    coll.insert_one({"_id": 2})
    assert after.next()["documentKey"] == {"_id": 2}


def test_history_lost_with_a_capped_oplog() -> None:
    client = MemoryClient(server=MemoryServer(oplog_size=3))
    coll = client["db"]["c"]
    stream = coll.watch()
    coll.insert_one({"_id": 0})
    token = stream.next()["_id"]
    coll.insert_many([{"_id": i} for i in range(1, 6)])
    with pytest.raises(OperationFailure) as info:
        coll.watch(resume_after=token)
    assert info.value.code == 286


def test_another_client_writes_this_one_watches() -> None:
    watcher = MemoryClient()
    writer = MemoryClient(server=watcher.server)
    stream = watcher["db"].watch()
    writer["db"]["c"].insert_one({"_id": 1})
    ev = stream.next()
    assert ev["ns"] == {"db": "db", "coll": "c"}
    client_stream = watcher.watch(start_at_operation_time=ev["clusterTime"])
    assert client_stream.next()["documentKey"] == {"_id": 1}
