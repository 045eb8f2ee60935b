"""``db.command(...)``: the same dispatcher in process and over the wire, with the server's
reply shapes, inside and outside transactions; cursors, sessions, retries, fail points,
change streams and explain through real PyMongo.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import bson
import pytest
from bson.int64 import Int64
from pymongo import MongoClient, monitoring
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure

from mongoledger.memory import MemoryClient, MemoryServer


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:  # type: ignore[override]
        self.names.append(event.command_name)

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


@pytest.fixture(scope="module")
def wire() -> Iterator[tuple[MemoryServer, str]]:
    memory = MemoryServer()
    uri = memory.listen()
    try:
        yield memory, uri
    finally:
        memory.close()


@pytest.fixture(params=["memory", "wire"])
def client(request: pytest.FixtureRequest, wire: Any) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryClient()
        return
    c: Any = MongoClient(wire[1], serverSelectionTimeoutMS=5000)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def db(client: Any) -> Iterator[Any]:
    name = f"cmd_{uuid.uuid4().hex[:10]}"
    yield client[name]
    client.drop_database(name)


def test_insert_update_delete_reply_shapes(db: Any) -> None:
    assert db.command("insert", "c", documents=[{"_id": 1, "a": 1}, {"_id": 2, "a": 2}]) == {
        "n": 2,
        "ok": 1.0,
        **_gossip(db),
    }
    dup = db.command("insert", "c", documents=[{"_id": 3}, {"_id": 1}, {"_id": 4}], ordered=False)
    assert dup["n"] == 2
    [error] = dup["writeErrors"]
    assert error["index"] == 1
    assert error["code"] == 11000
    assert "E11000 duplicate key error" in error["errmsg"]
    ordered = db.command("insert", "c", documents=[{"_id": 1}, {"_id": 5}])
    assert ordered["n"] == 0  # ordered: stops at the first error
    assert [e["index"] for e in ordered["writeErrors"]] == [0]

    updated = db.command(
        "update",
        "c",
        updates=[
            {"q": {"a": {"$exists": True}}, "u": {"$inc": {"a": 10}}, "multi": True},
            {"q": {"_id": 9}, "u": {"$set": {"a": 9}}, "upsert": True},
            {"q": {"_id": 3}, "u": {"b": 1}},  # a replacement
        ],
    )
    assert updated["n"] == 4
    assert updated["nModified"] == 3
    assert updated["upserted"] == [{"index": 1, "_id": 9}]
    assert db.c.find_one({"_id": 3}) == {"_id": 3, "b": 1}

    refused = db.command("update", "c", updates=[{"q": {"_id": 1}, "u": {"$set": {"_id": 2}}}])
    assert refused["n"] == 0
    assert refused["writeErrors"][0]["code"] == 66

    deleted = db.command("delete", "c", deletes=[{"q": {"a": {"$gte": 11}}, "limit": 0}])
    assert deleted["n"] == 2
    assert db.command("delete", "c", deletes=[{"q": {}, "limit": 1}])["n"] == 1


def _gossip(db: Any) -> dict[str, Any]:
    """The fields a replica set adds to every reply (only over the wire)."""
    if isinstance(db.client, MemoryClient):
        return {}
    reply = db.command("ping")
    return {"$clusterTime": reply["$clusterTime"], "operationTime": reply["operationTime"]}


def test_insert_reply_shape_over_the_wire_matches_in_process(db: Any) -> None:
    reply = db.command("insert", "c", documents=[{"_id": 1}])
    assert {k: v for k, v in reply.items() if k not in ("$clusterTime", "operationTime")} == {
        "n": 1,
        "ok": 1.0,
    }


def test_find_and_modify_count_distinct(db: Any) -> None:
    db.c.insert_many([{"_id": i, "k": i % 2} for i in range(5)])
    fam = db.command("findAndModify", "c", query={"_id": 2}, update={"$set": {"x": 1}}, new=True)
    assert fam["value"] == {"_id": 2, "k": 0, "x": 1}
    assert fam["lastErrorObject"] == {"n": 1, "updatedExisting": True}
    up = db.command("findAndModify", "c", query={"_id": 7}, update={"$set": {"k": 1}}, upsert=True)
    assert up["value"] is None
    assert up["lastErrorObject"] == {"n": 1, "updatedExisting": False, "upserted": 7}
    gone = db.command("findAndModify", "c", query={"_id": 0}, remove=True)
    assert gone["value"] == {"_id": 0, "k": 0}
    assert gone["lastErrorObject"] == {"n": 1}
    missing = db.command("findAndModify", "c", query={"_id": 99}, update={"$set": {"a": 1}})
    assert missing["value"] is None
    assert missing["lastErrorObject"] == {"n": 0, "updatedExisting": False}
    assert db.command("count", "c", query={"k": 1})["n"] == 3
    assert db.command("count", "c", query={}, skip=1, limit=2)["n"] == 2
    assert sorted(db.command("distinct", "c", key="k")["values"]) == [0, 1]


def test_an_upsert_refuses_expr_in_its_query(db: Any) -> None:
    query = {"$expr": {"$eq": ["$_id", 1]}}
    with pytest.raises(OperationFailure, match=r"\$expr is not allowed") as fam:
        db.command("findAndModify", "c", query=query, update={"$set": {"a": 1}}, upsert=True)
    assert fam.value.code == 224
    statement = {"q": query, "u": {"$set": {"a": 1}}, "upsert": True}
    [error] = db.command("update", "c", updates=[statement])["writeErrors"]
    assert (error["index"], error["code"]) == (0, 224)
    assert "$expr is not allowed" in error["errmsg"]
    assert db.c.count_documents({}) == 0


def test_find_cursor_batches_get_more_and_kill(db: Any) -> None:
    db.c.insert_many([{"_id": i} for i in range(7)])
    first = db.command("find", "c", sort={"_id": 1}, batchSize=3)
    cursor = first["cursor"]
    assert [d["_id"] for d in cursor["firstBatch"]] == [0, 1, 2]
    assert cursor["ns"] == f"{db.name}.c"
    assert cursor["id"] != 0
    more = db.command("getMore", Int64(cursor["id"]), collection="c", batchSize=3)
    assert [d["_id"] for d in more["cursor"]["nextBatch"]] == [3, 4, 5]
    assert more["cursor"]["id"] == cursor["id"]
    last = db.command("getMore", Int64(cursor["id"]), collection="c", batchSize=3)
    assert [d["_id"] for d in last["cursor"]["nextBatch"]] == [6]
    assert last["cursor"]["id"] == 0
    with pytest.raises(OperationFailure) as info:
        db.command("getMore", Int64(cursor["id"]), collection="c")
    assert info.value.code == 43

    again = db.command("find", "c", batchSize=1)["cursor"]["id"]
    killed = db.command("killCursors", "c", cursors=[Int64(again), Int64(12345)])
    assert killed["cursorsKilled"] == [again]
    assert killed["cursorsNotFound"] == [12345]
    single = db.command("find", "c", batchSize=2, singleBatch=True)["cursor"]
    assert (len(single["firstBatch"]), single["id"]) == (2, 0)
    limited = db.command("find", "c", limit=2)["cursor"]
    assert (len(limited["firstBatch"]), limited["id"]) == (2, 0)


def test_aggregate_cursor(db: Any) -> None:
    db.c.insert_many([{"g": i % 3, "v": i} for i in range(9)])
    reply = db.command(
        "aggregate",
        "c",
        pipeline=[{"$group": {"_id": "$g", "t": {"$sum": "$v"}}}, {"$sort": {"_id": 1}}],
        cursor={"batchSize": 2},
    )
    assert reply["cursor"]["firstBatch"] == [{"_id": 0, "t": 9}, {"_id": 1, "t": 12}]
    rest = db.command("getMore", Int64(reply["cursor"]["id"]), collection="c")
    assert rest["cursor"]["nextBatch"] == [{"_id": 2, "t": 15}]
    assert rest["cursor"]["id"] == 0
    with pytest.raises(OperationFailure) as info:
        db.command("aggregate", "c", pipeline=[])  # no cursor option
    assert info.value.code == 9


def test_create_coll_mod_rename_drop(db: Any) -> None:
    assert db.command("create", "c")["ok"] == 1.0
    assert db.command("create", "c")["ok"] == 1.0  # the same options again: ok (7.0)
    with pytest.raises(OperationFailure) as info:  # other options
        db.command("create", "c", changeStreamPreAndPostImages={"enabled": True})
    assert (info.value.code, info.value.details["codeName"]) == (48, "NamespaceExists")
    mod = db.command("collMod", "c", changeStreamPreAndPostImages={"enabled": True})
    assert mod["ok"] == 1.0
    listed = db.command("listCollections", filter={"name": "c"})["cursor"]["firstBatch"]
    assert listed[0]["options"] == {"changeStreamPreAndPostImages": {"enabled": True}}
    assert listed[0]["type"] == "collection"
    with pytest.raises(OperationFailure) as info:
        db.command("collMod", "nope", changeStreamPreAndPostImages={"enabled": False})
    assert info.value.code == 26
    with pytest.raises(OperationFailure) as info:  # known to a server, not enforced here
        db.command("collMod", "c", validator={"a": {"$exists": True}})
    assert info.value.code == 2
    assert "validator" in str(info.value)
    with pytest.raises(OperationFailure) as info:
        db.command("collMod", "c", bogus=1)
    assert info.value.code == 40415
    db.c.insert_one({"_id": 1})
    admin = db.client.admin
    admin.command("renameCollection", f"{db.name}.c", to=f"{db.name}.d")
    assert db.list_collection_names() == ["d"]
    assert db.d.find_one() == {"_id": 1}
    with pytest.raises(OperationFailure) as info:
        admin.command("renameCollection", f"{db.name}.c", to=f"{db.name}.e")
    assert info.value.code == 26
    db.command("create", "e")
    with pytest.raises(OperationFailure) as info:
        admin.command("renameCollection", f"{db.name}.d", to=f"{db.name}.e")
    assert info.value.code == 48
    admin.command("renameCollection", f"{db.name}.d", to=f"{db.name}.e", dropTarget=True)
    assert db.e.find_one() == {"_id": 1}
    dropped = db.command("drop", "e")
    assert dropped["nIndexesWas"] == 1
    assert dropped["ns"] == f"{db.name}.e"
    assert db.command("drop", "e")["ok"] == 1.0  # dropping what is not there succeeds (7.0)


def test_indexes(db: Any) -> None:
    created = db.command(
        "createIndexes", "c", indexes=[{"key": {"a": 1}, "name": "a_1", "unique": True}]
    )
    assert created["numIndexesAfter"] == 2
    assert created["createdCollectionAutomatically"] is True
    names = [ix["name"] for ix in db.command("listIndexes", "c")["cursor"]["firstBatch"]]
    assert names == ["_id_", "a_1"]
    db.c.insert_one({"a": 1})
    with pytest.raises(DuplicateKeyError):
        db.c.insert_one({"a": 1})
    assert db.command("dropIndexes", "c", index="a_1")["nIndexesWas"] == 2
    with pytest.raises(OperationFailure) as info:
        db.command("dropIndexes", "c", index="a_1")
    assert info.value.code == 27
    with pytest.raises(OperationFailure) as info:
        db.command("listIndexes", "nope")
    assert info.value.code == 26


def test_commands_join_a_transaction(db: Any) -> None:
    db.command("create", "c")
    with db.client.start_session() as session:
        session.start_transaction()
        db.command("insert", "c", documents=[{"_id": 1}], session=session)
        inside = db.command("find", "c", session=session)["cursor"]["firstBatch"]
        assert inside == [{"_id": 1}]
        assert db.command("count", "c")["n"] == 0  # outside: not committed yet
        session.abort_transaction()
    assert db.command("count", "c")["n"] == 0
    with db.client.start_session() as session:
        session.start_transaction()
        db.command(
            "update",
            "c",
            updates=[{"q": {"_id": 2}, "u": {"$set": {"a": 1}}, "upsert": True}],
            session=session,
        )
        session.commit_transaction()
    assert db.command("find", "c")["cursor"]["firstBatch"] == [{"_id": 2, "a": 1}]


def test_write_error_in_a_transaction_aborts_it(db: Any) -> None:
    db.c.insert_one({"_id": 1})
    with db.client.start_session() as session:
        session.start_transaction()
        db.c.insert_one({"_id": 2}, session=session)
        with pytest.raises(DuplicateKeyError):
            db.c.insert_one({"_id": 1}, session=session)
        with pytest.raises(OperationFailure) as info:
            session.commit_transaction()
        assert info.value.code == 251
    assert db.c.count_documents({}) == 1


def test_unknown_command(db: Any) -> None:
    with pytest.raises(OperationFailure) as info:
        db.command("frobnicate")
    assert (info.value.code, info.value.details["codeName"]) == (59, "CommandNotFound")
    assert "frobnicate" in str(info.value)
    bad = db.command("frobnicate", check=False)
    assert bad["ok"] == 0.0
    assert bad["code"] == 59


# -- over the wire only ----------------------------------------------------------------------


@pytest.fixture
def wire_client(wire: Any) -> Iterator[tuple[MemoryServer, Any, Recorder]]:
    recorder = Recorder()
    c: Any = MongoClient(wire[1], serverSelectionTimeoutMS=5000, event_listeners=[recorder])
    try:
        yield wire[0], c, recorder
    finally:
        c.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        c.close()


def test_driver_cursor_uses_get_more(wire_client: Any) -> None:
    _, c, recorder = wire_client
    coll = c[f"w_{uuid.uuid4().hex[:8]}"].c
    coll.insert_many([{"_id": i} for i in range(10)])
    recorder.names.clear()
    assert [d["_id"] for d in coll.find().sort("_id", 1).batch_size(4)] == list(range(10))
    assert recorder.names == ["find", "getMore", "getMore"]
    cursor = coll.find().batch_size(2)
    next(cursor)
    cursor.close()
    assert recorder.names[-1] == "killCursors"


def test_retried_write_is_not_applied_twice(wire_client: Any) -> None:
    _memory, c, _ = wire_client
    name = f"r_{uuid.uuid4().hex[:8]}"
    lsid = {"id": bson.Binary(uuid.uuid4().bytes, 4)}
    body = {
        "update": "c",
        "updates": [{"q": {"_id": 1}, "u": {"$inc": {"n": 1}}, "upsert": True}],
        "lsid": lsid,
        "txnNumber": Int64(1),
    }
    first = c[name].command(dict(body))
    second = c[name].command(dict(body))  # a retry: the same lsid and txnNumber
    assert first["n"] == second["n"] == 1
    assert c[name].c.find_one() == {"_id": 1, "n": 1}
    third = c[name].command({**body, "txnNumber": Int64(2)})
    assert third["nModified"] == 1
    assert c[name].c.find_one() == {"_id": 1, "n": 2}
    with pytest.raises(OperationFailure) as info:
        c[name].command({**body, "txnNumber": Int64(1)})
    assert info.value.code == 225


def test_fail_point_over_the_wire(wire_client: Any) -> None:
    _, c, recorder = wire_client
    coll = c[f"f_{uuid.uuid4().hex[:8]}"].c
    c.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["find"], "errorCode": 2, "errorLabels": ["Custom"]},
        }
    )
    with pytest.raises(OperationFailure) as info:
        coll.find_one()
    assert info.value.code == 2
    assert info.value.has_error_label("Custom")
    assert coll.find_one() is None  # times: 1

    # A dropped connection: PyMongo retries the write once, and it is applied once.
    c.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["insert"], "closeConnection": True},
        }
    )
    recorder.names.clear()
    coll.insert_one({"_id": "once"})
    assert recorder.names == ["insert", "insert"]
    assert coll.count_documents({}) == 1

    # A retryable error code: the server labels it RetryableWriteError, the driver retries.
    c.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["update"], "errorCode": 91},
        }
    )
    coll.update_one({"_id": "once"}, {"$set": {"x": 1}})
    assert coll.find_one() == {"_id": "once", "x": 1}

    c.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {"failCommands": ["insert"], "closeConnection": True},
        }
    )
    with pytest.raises(AutoReconnect):
        coll.insert_one({"_id": "never"})
    c.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert coll.count_documents({"_id": "never"}) == 0


def test_change_stream_is_a_tailable_await_cursor(wire_client: Any) -> None:
    _, c, recorder = wire_client
    coll = c[f"s_{uuid.uuid4().hex[:8]}"].c
    with coll.watch(max_await_time_ms=50) as stream:
        assert stream.try_next() is None  # waited ~50 ms server-side, then an empty batch
        token = stream.resume_token
        assert token is not None  # the post-batch resume token
        coll.insert_one({"_id": 1})
        event = stream.next()
        assert event["operationType"] == "insert"
        assert event["fullDocument"] == {"_id": 1}
        assert stream.resume_token == event["_id"]
    assert "getMore" in recorder.names
    with coll.watch(resume_after=token) as resumed:
        assert resumed.next()["documentKey"] == {"_id": 1}


def test_transaction_over_the_wire_commits_once(wire_client: Any) -> None:
    _, c, recorder = wire_client
    coll = c[f"t_{uuid.uuid4().hex[:8]}"].c
    coll.insert_one({"_id": 1, "n": 0})
    recorder.names.clear()
    with c.start_session() as session:
        session.with_transaction(
            lambda s: coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=s)
        )
    assert recorder.names == ["update", "commitTransaction"]
    assert coll.find_one() == {"_id": 1, "n": 1}


def test_explain_names_the_index(wire_client: Any) -> None:
    _, c, _ = wire_client
    coll = c[f"e_{uuid.uuid4().hex[:8]}"].c
    coll.create_index([("account_id", 1), ("seq", -1)], name="by_account")
    coll.insert_one({"account_id": 1, "seq": 1})
    plan = coll.find({"account_id": 1}).sort("seq", -1).explain()["queryPlanner"]["winningPlan"]
    assert plan["stage"] == "FETCH"
    assert plan["inputStage"]["indexName"] == "by_account"
    scan = coll.find({"other": 1}).explain()["queryPlanner"]["winningPlan"]
    assert scan["stage"] == "COLLSCAN"
    sorted_scan = coll.find({"account_id": 1}).sort("other", 1).explain()
    assert sorted_scan["queryPlanner"]["winningPlan"]["stage"] == "SORT"


def test_unsatisfiable_write_concern(db: Any) -> None:
    """A one-member set applies the write and says the concern cannot be met (100, or 79 for
    an unknown mode); a malformed ``w`` fails the command."""
    reply = db.command("insert", "c", documents=[{"_id": 1}], writeConcern={"w": 2})
    assert reply["n"] == 1
    assert reply["writeConcernError"]["code"] == 100
    assert reply["writeConcernError"]["codeName"] == "UnsatisfiableWriteConcern"
    tagged = db.command("delete", "c", deletes=[{"q": {}, "limit": 0}], writeConcern={"w": "dc"})
    assert tagged["n"] == 1
    assert tagged["writeConcernError"]["code"] == 79
    fine = db.command("insert", "c", documents=[{"_id": 2}], writeConcern={"w": "majority"})
    assert "writeConcernError" not in fine
    with pytest.raises(OperationFailure) as info:
        db.command("insert", "c", documents=[{"_id": 3}], writeConcern={"w": -1})
    assert info.value.code == 9
    assert db.c.count_documents({}) == 1


def test_unsatisfiable_write_concern_through_the_driver(wire_client: Any) -> None:
    from pymongo.errors import WriteConcernError
    from pymongo.write_concern import WriteConcern

    _, c, _ = wire_client
    name = f"wc_{uuid.uuid4().hex[:8]}"
    strict = c[name].get_collection("c", write_concern=WriteConcern(w=3))
    with pytest.raises(WriteConcernError) as info:
        strict.insert_one({"_id": 1})
    assert info.value.code == 100
    with c.start_session() as session, pytest.raises(WriteConcernError) as commit:
        session.with_transaction(
            lambda s: c[name].c.insert_one({"_id": 2}, session=s),
            write_concern=WriteConcern(w=3),
        )
    assert not commit.value.has_error_label("UnknownTransactionCommitResult")
    assert c[name].c.count_documents({}) == 2  # applied, as on a server


def test_an_abandoned_transaction_is_aborted_at_its_lifetime() -> None:
    """A transaction its client never ends is aborted when its lifetime runs out (as the
    server's transactionLifetimeLimitSeconds), releasing what it held."""
    memory = MemoryServer()
    uri = memory.listen()
    c: Any = MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        before = c.admin.command("setParameter", 1, transactionLifetimeLimitSeconds=1)
        assert before["was"] == 60
        assert (
            c.admin.command("getParameter", 1, transactionLifetimeLimitSeconds=1)[
                "transactionLifetimeLimitSeconds"
            ]
            == 1
        )
        coll = c.t.c
        coll.insert_one({"_id": 1, "n": 0})
        session = c.start_session()
        session.start_transaction()
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)
        # Another client's write waits for the abandoned transaction, then goes through.
        other: Any = MongoClient(uri, serverSelectionTimeoutMS=5000)
        try:
            other.t.c.update_one({"_id": 1}, {"$inc": {"n": 10}})
        finally:
            other.close()
        with pytest.raises(OperationFailure) as info:
            session.commit_transaction()
        assert info.value.code == 251  # NoSuchTransaction: the server aborted it
        session.end_session()
        assert coll.find_one() == {"_id": 1, "n": 10}
        with pytest.raises(OperationFailure) as bad:
            c.admin.command("setParameter", 1, transactionLifetimeLimitSeconds=0)
        assert bad.value.code == 2
    finally:
        c.close()
        memory.close()


def test_database_and_deployment_change_streams(wire_client: Any) -> None:
    """A database's (and the deployment's) stream is a cursor on ``$cmd.aggregate``, which
    getMore names instead of a collection."""
    _, c, recorder = wire_client
    db = c[f"d_{uuid.uuid4().hex[:8]}"]
    with db.watch(max_await_time_ms=50) as by_db, c.watch(max_await_time_ms=50) as everything:
        assert by_db.try_next() is None
        db.a.insert_one({"_id": 1})
        db.b.insert_one({"_id": 2})
        seen = [by_db.next()["ns"]["coll"], by_db.next()["ns"]["coll"]]
        assert seen == ["a", "b"]
        assert everything.next()["ns"] == {"db": db.name, "coll": "a"}
    assert "getMore" in recorder.names


def test_bulk_write_errors_name_the_failed_operation_as_the_driver_does(db: Any) -> None:
    """``writeErrors[i]["op"]`` is the statement PyMongo built from the request (over the wire
    the driver adds it to the server's reply; in process the engine must build the same)."""
    from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
    from pymongo.errors import BulkWriteError

    coll = db.c
    coll.create_index("u", unique=True)
    coll.insert_many([{"_id": 1, "u": 1}, {"_id": 2, "u": 2}])
    taken = {"$set": {"u": 1}}
    requests: list[Any] = [
        InsertOne({"_id": 1}),
        UpdateOne({"_id": 2}, taken),
        UpdateMany({"_id": 2}, taken),
        UpdateOne({"_id": 2}, taken, upsert=True, hint=[("_id", 1)]),
        ReplaceOne({"_id": 2}, {"u": 1}),
        ReplaceOne({"_id": 2}, {"u": 1}, upsert=False),
        DeleteOne({"_id": 9}),
    ]
    with pytest.raises(BulkWriteError) as refused:
        coll.bulk_write(requests, ordered=False)
    errors = refused.value.details["writeErrors"]
    assert [(e["index"], e["code"]) for e in errors] == [(i, 11000) for i in range(6)]
    assert [e["op"] for e in errors] == [
        {"_id": 1},
        {"q": {"_id": 2}, "u": taken, "multi": False, "upsert": False},
        {"q": {"_id": 2}, "u": taken, "multi": True},
        {"q": {"_id": 2}, "u": taken, "multi": False, "upsert": True, "hint": {"_id": 1}},
        {"q": {"_id": 2}, "u": {"u": 1}},
        {"q": {"_id": 2}, "u": {"u": 1}, "upsert": False},
    ]
