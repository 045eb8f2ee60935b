"""The in-memory engine: CRUD surface, sessions, rollback of every write kind, isolation."""

from __future__ import annotations

import threading
import types

import bson
import mongomock
import pytest
from bson import Int64, ObjectId
from bson.errors import InvalidDocument
from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, InsertOne, ReplaceOne, ReturnDocument, UpdateMany, UpdateOne
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidOperation,
    OperationFailure,
    WriteError,
)
from pymongo.results import InsertManyResult, InsertOneResult, UpdateResult

from mongoledger.memory import MemoryClient, MemoryServer, StrictModeError, _session


@pytest.fixture
def client() -> MemoryClient:
    return MemoryClient()


@pytest.fixture
def coll(client: MemoryClient):
    return client["db"]["c"]


def docs(coll) -> list[dict]:
    return list(coll.find({}, {"_id": 0}).sort("k", 1))


# -- surface -------------------------------------------------------------------------------


def test_hello_answers_as_replica_set_primary(client: MemoryClient) -> None:
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True
    assert hello["setName"] == "memory"
    assert hello["logicalSessionTimeoutMinutes"] == 30
    assert hello["maxWireVersion"] == 21
    assert client["x"].command("ping") == {"ok": 1.0}
    # plain mongomock stays what it is: no hello, no sessions
    with pytest.raises(NotImplementedError):
        mongomock.MongoClient().admin.command("hello")


def test_names_and_links(client: MemoryClient, coll) -> None:
    assert coll.name == "c"
    assert coll.full_name == "db.c"
    assert coll.database.client is client
    assert client.get_database("db").get_collection("c") == coll
    coll.insert_one({"k": 1})
    assert client["db"].list_collection_names() == ["c"]
    client["db"].drop_collection("c")
    assert client["db"].list_collection_names() == []


def test_crud_basics(coll) -> None:
    res = coll.insert_one({"k": 1, "v": "a"})
    assert isinstance(res, InsertOneResult)
    many = coll.insert_many([{"k": 2}, {"k": 3}, {"k": 4}])
    assert isinstance(many, InsertManyResult)
    assert len(many.inserted_ids) == 3
    upd = coll.update_one({"k": 2}, {"$set": {"v": "b"}})
    assert isinstance(upd, UpdateResult)
    assert (upd.matched_count, upd.modified_count) == (1, 1)
    up = coll.update_one({"k": 9}, {"$set": {"v": "z"}}, upsert=True)
    assert up.upserted_id is not None
    assert up.matched_count == 0
    assert coll.update_many({"k": {"$gte": 3}}, {"$inc": {"n": 1}}).modified_count == 3
    assert coll.replace_one({"k": 4}, {"k": 4, "r": True}).modified_count == 1
    after = coll.find_one_and_update(
        {"k": 1}, {"$inc": {"n": 5}}, return_document=ReturnDocument.AFTER, projection={"_id": 0}
    )
    assert after == {"k": 1, "v": "a", "n": 5}
    before = coll.find_one_and_replace({"k": 3}, {"k": 3}, projection={"_id": 0})
    assert before == {"k": 3, "n": 1}
    assert coll.find_one_and_delete({"k": 9}, projection={"_id": 0}) == {"k": 9, "v": "z", "n": 1}
    assert [d["k"] for d in coll.find(sort=[("k", -1)], skip=1, limit=2)] == [3, 2]
    assert [d["k"] for d in coll.find().sort("k", 1).skip(1).limit(2)] == [2, 3]
    assert coll.count_documents({"k": {"$gt": 1}}) == 3
    assert coll.estimated_document_count() == 4
    assert sorted(coll.distinct("k")) == [1, 2, 3, 4]
    total = list(coll.aggregate([{"$group": {"_id": None, "s": {"$sum": "$k"}}}]))
    assert total[0]["s"] == 10
    assert coll.delete_one({"k": 1}).deleted_count == 1
    assert coll.delete_many({}).deleted_count == 3
    assert coll.find_one({}) is None


def test_bulk_write_and_indexes(coll) -> None:
    name = coll.create_index("k", unique=True, name="k_unique")
    assert name == "k_unique"
    coll.create_index([("p", 1)], partialFilterExpression={"p": {"$exists": True}})
    assert {ix["name"] for ix in coll.list_indexes()} >= {"_id_", "k_unique"}
    assert "k_unique" in coll.index_information()
    res = coll.bulk_write(
        [
            InsertOne({"k": 1}),
            InsertOne({"k": 2}),
            UpdateOne({"k": 1}, {"$set": {"a": 1}}),
            UpdateMany({}, {"$inc": {"n": 1}}),
            ReplaceOne({"k": 3}, {"k": 3}, upsert=True),
            DeleteOne({"k": 2}),
        ]
    )
    assert (res.inserted_count, res.matched_count, res.upserted_count) == (2, 3, 1)
    assert res.deleted_count == 1
    with pytest.raises(DuplicateKeyError) as info:
        coll.insert_one({"k": 1})
    assert info.value.code == 11000
    coll.drop_index("k_unique")
    coll.insert_one({"k": 1})


def test_an_ordered_bulk_write_stops_at_its_first_write_error(coll) -> None:
    coll.insert_one({"_id": 1})
    requests = [
        InsertOne({"_id": 2}),
        InsertOne({"_id": 1}),
        InsertOne({"_id": 3}),
        UpdateOne({"_id": 2}, {"$set": {"a": 1}}),
    ]
    with pytest.raises(BulkWriteError) as info:
        coll.bulk_write(requests)
    details = info.value.details
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000)]
    assert (details["nInserted"], details["nMatched"], details["nModified"]) == (1, 0, 0)
    assert list(coll.find().sort("_id", 1)) == [{"_id": 1}, {"_id": 2}]


def test_stored_documents_are_bson_copies(coll) -> None:
    doc = {"k": 1, "nested": {"a": [1, 2]}}
    coll.insert_one(doc)
    doc["nested"]["a"].append(3)
    assert coll.find_one({"k": 1})["nested"]["a"] == [1, 2]
    with pytest.raises(OverflowError):
        coll.insert_one({"k": 2**63})
    with pytest.raises(DocumentTooLarge):
        coll.insert_one({"k": 3, "blob": "x" * (16 * 1024 * 1024)})
    assert coll.count_documents({}) == 1


def test_inc_overflow_and_too_large_update_fail_like_the_server(coll) -> None:
    coll.insert_one({"_id": 1, "n": Int64(2**63 - 1), "s": ""})
    with pytest.raises(WriteError):
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
    assert coll.find_one({"_id": 1})["n"] == 2**63 - 1
    with pytest.raises(WriteError) as info:
        coll.update_one({"_id": 1}, {"$set": {"s": "x" * (16 * 1024 * 1024)}})
    assert info.value.code == 17419
    assert coll.find_one({"_id": 1})["s"] == ""


# -- sessions ------------------------------------------------------------------------------


def test_session_state_machine(client: MemoryClient, coll) -> None:
    s = client.start_session()
    assert s.client is client
    assert isinstance(s.session_id["id"].subtype, int)
    assert s.session_id["id"].subtype == 4
    with pytest.raises(InvalidOperation, match="No transaction started"):
        s.commit_transaction()
    s.start_transaction()
    assert s.in_transaction
    with pytest.raises(InvalidOperation, match="already in progress"):
        s.start_transaction()
    coll.insert_one({"k": 1}, session=s)
    s.abort_transaction()
    with pytest.raises(InvalidOperation, match="after calling abortTransaction"):
        s.commit_transaction()
    s.start_transaction()
    coll.insert_one({"k": 2}, session=s)
    s.end_session()  # ends with an open transaction: aborted
    assert s.has_ended
    assert docs(coll) == []


WRITE_KINDS = {
    "insert_one": lambda c, s: c.insert_one({"k": 9}, session=s),
    "insert_many": lambda c, s: c.insert_many([{"k": 8}, {"k": 9}], session=s),
    "update_one": lambda c, s: c.update_one({"k": 1}, {"$set": {"v": "new"}}, session=s),
    "update_many": lambda c, s: c.update_many({}, {"$unset": {"v": ""}}, session=s),
    "upsert": lambda c, s: c.update_one({"k": 7}, {"$set": {"v": 1}}, upsert=True, session=s),
    "replace_one": lambda c, s: c.replace_one({"k": 2}, {"k": 2, "x": 1}, session=s),
    "delete_one": lambda c, s: c.delete_one({"k": 1}, session=s),
    "delete_many": lambda c, s: c.delete_many({}, session=s),
    "find_one_and_update": lambda c, s: c.find_one_and_update(
        {"k": 5}, {"$set": {"v": 1}}, upsert=True, session=s
    ),
    "find_one_and_replace": lambda c, s: c.find_one_and_replace({"k": 1}, {"k": 1}, session=s),
    "find_one_and_delete": lambda c, s: c.find_one_and_delete({"k": 2}, session=s),
    "bulk_write": lambda c, s: c.bulk_write(
        [InsertOne({"k": 6}), UpdateOne({"k": 1}, {"$inc": {"n": 1}}), DeleteOne({"k": 2})],
        session=s,
    ),
}


@pytest.mark.parametrize("kind", list(WRITE_KINDS))
def test_abort_rolls_back_and_commit_keeps(client: MemoryClient, coll, kind: str) -> None:
    coll.insert_many([{"k": 1, "v": "old"}, {"k": 2, "v": "old"}])
    before = docs(coll)
    with client.start_session() as s:
        s.start_transaction()
        WRITE_KINDS[kind](coll, s)
        outside = MemoryClient(strict=False, server=client.server)["db"]["c"]
        changed = docs(outside)  # the committed view is unchanged while the txn is open
        s.abort_transaction()
    assert changed == before
    assert docs(coll) == before
    with client.start_session() as s, s.start_transaction():
        WRITE_KINDS[kind](coll, s)
    assert docs(coll) != before


def test_updates_change_private_copies_and_keep_the_original_as_pre_image(
    client: MemoryClient, coll
) -> None:
    """Updates work on a copy of each stored document (the original is the pre-image), so
    nested values are never shared between versions, documents, or the caller's arguments."""
    tags = ["x"]
    coll.insert_many([{"_id": i, "a": [1], "s": {"n": 1}} for i in range(3)])
    before = docs(coll)
    with client.start_session() as s:
        s.start_transaction()
        coll.update_many({}, {"$push": {"a": 2}, "$set": {"s.n": 2}}, session=s)
        coll.update_one({"_id": 0}, {"$set": {"tags": tags}}, session=s)
        assert coll.find_one({"_id": 0}, session=s)["a"] == [1, 2]
        s.abort_transaction()
    assert docs(coll) == before
    coll.update_many({}, {"$push": {"a": 2}})
    coll.update_one({"_id": 0}, {"$set": {"tags": tags}})
    tags.append("y")  # the caller's list was copied, not stored
    coll.update_one({"_id": 1}, {"$push": {"a": 3}})
    assert [d["a"] for d in docs(coll)] == [[1, 2], [1, 2, 3], [1, 2]]
    assert coll.find_one({"_id": 0})["tags"] == ["x"]
    same = coll.update_one({"_id": 2}, {"$set": {"s.n": 1}})
    assert (same.matched_count, same.modified_count) == (1, 0)
    changed = coll.find_one_and_update(
        {"_id": 2}, {"$inc": {"s.n": 1}}, return_document=ReturnDocument.AFTER
    )
    assert changed == {"_id": 2, "a": [1, 2], "s": {"n": 2}}
    assert type(coll.find_one({"_id": 2})) is dict


def test_a_no_op_update_of_a_document_holding_nan_modifies_nothing(coll) -> None:
    coll.insert_one({"_id": 1, "x": float("nan"), "n": {"y": float("nan")}, "a": 1})
    assert coll.update_one({"_id": 1}, {"$set": {"a": 1}}).modified_count == 0
    assert coll.update_many({}, [{"$set": {"a": 1}}]).modified_count == 0
    assert coll.bulk_write([UpdateOne({"_id": 1}, {"$set": {"a": 1}})]).modified_count == 0
    assert coll.update_one({"_id": 1}, {"$set": {"a": 2}}).modified_count == 1


def test_find_one_and_replace_refuses_operators_in_raw_bson(coll) -> None:
    coll.insert_one({"_id": 2, "a": 0})
    raw = RawBSONDocument(bson.encode({"$set": {"z": 1}}))
    for replace in (
        lambda: coll.find_one_and_replace({"_id": 2}, raw),
        lambda: coll.replace_one({"_id": 2}, raw),
    ):
        with pytest.raises(ValueError, match=r"\$ operators"):
            replace()
    assert coll.find_one({"_id": 2}) == {"_id": 2, "a": 0}


def test_changing_id_is_refused_and_leaves_the_document_as_it_was(
    client: MemoryClient, coll
) -> None:
    coll.insert_many([{"_id": 1, "a": 1}, {"_id": 2, "a": 1}])
    for change in (
        lambda: coll.replace_one({"_id": 1}, {"_id": 9, "a": 2}),
        lambda: coll.find_one_and_replace({"_id": 1}, {"_id": 9, "a": 2}),
        lambda: coll.update_one({"_id": 1}, {"$set": {"_id": 9, "a": 2}}),
    ):
        with pytest.raises(WriteError, match=r"immutable\) field '_id'.*_id: 9") as info:
            change()
        assert info.value.code == 66
        assert list(coll.find().sort("_id", 1)) == [{"_id": 1, "a": 1}, {"_id": 2, "a": 1}]
    with pytest.raises(BulkWriteError) as bulk:
        coll.bulk_write(
            [ReplaceOne({"_id": 1}, {"_id": 9}), UpdateOne({"_id": 2}, {"$set": {"a": 5}})],
            ordered=False,
        )
    (error,) = bulk.value.details["writeErrors"]
    assert (error["index"], error["code"]) == (0, 66)
    assert error["errmsg"].startswith("After applying the update")
    assert list(coll.find().sort("_id", 1)) == [{"_id": 1, "a": 1}, {"_id": 2, "a": 5}]
    with client.start_session() as s, pytest.raises(WriteError), s.start_transaction():
        coll.replace_one({"_id": 2}, {"_id": 8}, session=s)
    assert list(coll.find().sort("_id", 1)) == [{"_id": 1, "a": 1}, {"_id": 2, "a": 5}]


def test_unique_violation_inside_transaction(client: MemoryClient, coll) -> None:
    coll.create_index("k", unique=True)
    coll.insert_one({"k": 1})
    with client.start_session() as s:
        s.start_transaction()
        coll.insert_one({"k": 2}, session=s)
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"k": 1}, session=s)
        # As on a server, the failed statement aborted the whole transaction.
        with pytest.raises(OperationFailure) as info:
            coll.update_one({"k": 2}, {"$set": {"k": 3}}, session=s)
        assert info.value.code == 251
        assert info.value.has_error_label("TransientTransactionError")
        with pytest.raises(OperationFailure) as info:
            s.commit_transaction()
        assert info.value.code == 251
    assert docs(coll) == [{"k": 1}]
    coll.insert_one({"k": 2})  # the aborted insert left no index entry behind


def test_failed_statement_then_abort(client: MemoryClient, coll) -> None:
    coll.create_index("k", unique=True)
    coll.insert_one({"k": 1})
    with client.start_session() as s:
        s.start_transaction()
        coll.insert_one({"k": 2}, session=s)
        with pytest.raises(DuplicateKeyError):
            coll.update_one({"k": 2}, {"$set": {"k": 1}}, session=s)
        s.abort_transaction()  # succeeds: the server already aborted it
        s.start_transaction()
        coll.insert_one({"k": 5}, session=s)
        s.commit_transaction()
    assert docs(coll) == [{"k": 1}, {"k": 5}]


def test_abort_cost_is_proportional_to_touched_documents(client: MemoryClient, coll) -> None:
    coll.insert_many([{"k": i} for i in range(50_000)])
    with client.start_session() as s:
        s.start_transaction()
        coll.update_one({"k": 25_000}, {"$set": {"x": 1}}, session=s)
        s.abort_transaction()
    assert client.server.last_abort_restored == 1
    assert coll.count_documents({"x": 1}) == 0


def test_drop_inside_a_transaction_is_refused(client: MemoryClient, coll) -> None:
    with client.start_session() as s:
        s.start_transaction()
        with pytest.raises(OperationFailure) as info:
            coll.drop(session=s)
        assert info.value.code == 263
        s.abort_transaction()


# -- strict mode and Decision 13 ----------------------------------------------------------


def test_strict_mode_names_the_operation(client: MemoryClient, coll) -> None:
    with client.start_session() as s, s.start_transaction():
        coll.insert_one({"k": 1}, session=s)
        with pytest.raises(StrictModeError, match=r"update_one on db\.c ran without session="):
            coll.update_one({"k": 1}, {"$set": {"v": 1}})
        assert isinstance(StrictModeError("x"), InvalidOperation)


def test_other_session_reads_committed_data_and_conflicts_on_writes(
    client: MemoryClient, coll
) -> None:
    coll.insert_many([{"k": 1, "v": 0}, {"k": 2, "v": 0}])
    with client.start_session() as s, client.start_session() as other:
        s.start_transaction()
        coll.update_one({"k": 1}, {"$set": {"v": 1}}, session=s)
        coll.insert_one({"k": 3}, session=s)
        coll.delete_one({"k": 2}, session=s)
        committed = list(coll.find({}, {"_id": 0}, session=other).sort("k", 1))
        assert committed == [{"k": 1, "v": 0}, {"k": 2, "v": 0}]
        with pytest.raises(OperationFailure) as info:
            coll.update_one({"k": 1}, {"$set": {"v": 2}}, session=other)
        assert info.value.code == 112
        assert info.value.has_error_label("TransientTransactionError")
        coll.insert_one({"k": 4}, session=other)  # untouched documents are writable
        s.commit_transaction()
    assert docs(coll) == [{"k": 1, "v": 1}, {"k": 3}, {"k": 4}]


def test_strict_off_reads_committed_data_without_session(coll) -> None:
    client = MemoryClient(strict=False)
    coll = client["db"]["c"]
    coll.insert_one({"k": 1})
    with client.start_session() as s, s.start_transaction():
        coll.insert_one({"k": 2}, session=s)
        assert coll.count_documents({}) == 1
        assert coll.count_documents({}, session=s) == 2


def test_two_transactions_in_one_thread_do_not_deadlock(client: MemoryClient, coll) -> None:
    coll.insert_many([{"k": 1}, {"k": 2}])
    with client.start_session() as a, client.start_session() as b:
        a.start_transaction()
        b.start_transaction()
        coll.update_one({"k": 1}, {"$set": {"a": 1}}, session=a)
        coll.update_one({"k": 2}, {"$set": {"b": 1}}, session=b)
        with pytest.raises(OperationFailure) as info:
            coll.update_one({"k": 1}, {"$set": {"b": 1}}, session=b)
        assert info.value.code == 112
        b.abort_transaction()
        a.commit_transaction()
    assert docs(coll) == [{"k": 1, "a": 1}, {"k": 2}]


def test_other_threads_read_committed_data_and_their_writes_wait(
    client: MemoryClient, coll
) -> None:
    """A read outside the transaction answers at once with committed data; a write outside it
    to a document the transaction wrote waits for the transaction to end, then applies."""
    coll.insert_one({"k": 1, "n": 0})
    seen: list[int] = []
    with client.start_session() as s:
        s.start_transaction()
        coll.update_one({"k": 1}, {"$inc": {"n": 1}}, session=s)
        reader = threading.Thread(target=lambda: seen.append(coll.find_one({"k": 1})["n"]))
        reader.start()
        reader.join(5)
        assert seen == [0]  # snapshot isolation: the uncommitted $inc is invisible
        writer = threading.Thread(target=lambda: coll.update_one({"k": 1}, {"$inc": {"n": 10}}))
        writer.start()
        writer.join(0.05)
        assert writer.is_alive()  # blocked on the transaction's document
        s.commit_transaction()
        writer.join(5)
        assert not writer.is_alive()
    assert coll.find_one({"k": 1})["n"] == 11


def test_threads_with_transactions_keep_exact_totals() -> None:
    client = MemoryClient()
    coll = client["db"]["acc"]
    coll.insert_many([{"_id": i, "n": 0} for i in range(3)])

    def work(tid: int) -> None:
        with client.start_session() as s:
            for i in range(200):

                def cb(s, i=i):
                    coll.update_one({"_id": i % 3}, {"$inc": {"n": 1}}, session=s)
                    coll.update_one({"_id": (i + tid) % 3}, {"$inc": {"n": 1}}, session=s)

                s.with_transaction(cb)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(d["n"] for d in coll.find()) == 8 * 200 * 2


# -- with_transaction and fault injection --------------------------------------------------


def test_with_transaction_retries_transient_errors(client: MemoryClient, coll) -> None:
    client.fail_command(
        ["insert"], times=2, error_code=112, error_labels=["TransientTransactionError"]
    )
    calls = []

    def cb(s):
        calls.append(1)
        coll.insert_one({"k": len(calls)}, session=s)

    with client.start_session() as s:
        s.with_transaction(cb)
    assert len(calls) == 3
    assert docs(coll) == [{"k": 3}]


def test_with_transaction_retries_unknown_commit_result(client: MemoryClient, coll) -> None:
    with client.start_session() as s:
        client.fail_command(["commitTransaction"], times=2, close_connection=True)
        client.server.reset_command_counts()
        s.with_transaction(lambda s: coll.insert_one({"k": 1}, session=s))
    # network error twice, then success: pymongo's internal retry plus the commit retry loop
    assert client.server.command_counts["commitTransaction"] == 3
    assert client.server.command_counts["insert"] == 1
    assert docs(coll) == [{"k": 1}]


def test_commit_failure_with_transient_label_reruns_the_callback(
    client: MemoryClient, coll
) -> None:
    client.fail_command(
        "commitTransaction", times=1, error_code=112, error_labels=["TransientTransactionError"]
    )
    calls = []

    def cb(s):
        calls.append(1)
        coll.insert_one({"k": len(calls)}, session=s)

    with client.start_session() as s:
        s.with_transaction(cb)
    assert docs(coll) == [{"k": 2}]  # the first attempt's insert never committed


def test_persistent_failure_gives_up(client: MemoryClient, coll, monkeypatch) -> None:
    monkeypatch.setattr(_session, "WITH_TRANSACTION_RETRY_TIME_LIMIT", 0.05)
    client.fail_command(
        ["insert"], times=None, error_code=112, error_labels=["TransientTransactionError"]
    )
    with client.start_session() as s, pytest.raises(Exception) as info:
        s.with_transaction(lambda s: coll.insert_one({"k": 1}, session=s))
    assert info.value.has_error_label("TransientTransactionError")
    client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    client.fail_command(["update"], times=1, error_code=2)
    with client.start_session() as s, pytest.raises(OperationFailure) as info2:
        s.with_transaction(lambda s: coll.update_one({}, {"$set": {"a": 1}}, session=s))
    assert info2.value.code == 2
    assert docs(coll) == []


def test_network_error_outside_transaction_is_retried_once(client: MemoryClient, coll) -> None:
    client.fail_command("insert", times=1, close_connection=True)
    coll.insert_one({"k": 1})  # retryable write: retried, like PyMongo does
    client.fail_command("insert", times=2, close_connection=True)
    with pytest.raises(AutoReconnect):
        coll.insert_one({"k": 2})
    assert docs(coll) == [{"k": 1}]


def test_command_counts(client: MemoryClient, coll) -> None:
    client.server.reset_command_counts()
    coll.insert_one({"k": 1})
    coll.find_one({})
    coll.count_documents({})
    with client.start_session() as s, s.start_transaction():
        coll.update_one({"k": 1}, {"$set": {"a": 1}}, session=s)
        coll.find_one_and_update({"k": 1}, {"$set": {"b": 1}}, session=s)
    counts = client.server.command_counts
    assert counts == {
        "insert": 1,
        "find": 1,
        "aggregate": 1,
        "update": 1,
        "findAndModify": 1,
        "commitTransaction": 1,
    }


def test_clients_share_a_server() -> None:
    server = MemoryServer()
    a = MemoryClient(server=server)
    b = MemoryClient(server=a.server)
    a["db"]["c"].insert_one({"k": 1})
    assert b["db"]["c"].find_one({}, {"_id": 0}) == {"k": 1}


def test_partial_unique_index_on_existing_documents(client: MemoryClient, coll) -> None:
    coll.insert_many([{"a": 1}, {"a": 2}, {"k": "x"}])  # two documents without "k"
    spec = {"unique": True, "partialFilterExpression": {"k": {"$exists": True}}}
    assert coll.create_index("k", **spec) == "k_1"
    assert coll.create_index("k", **spec) == "k_1"  # the same index again: a no-op
    coll.insert_one({"b": 1})
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"k": "x"})
    with pytest.raises(OperationFailure, match="different options"):
        coll.create_index("k", unique=True, partialFilterExpression={"k": {"$type": "string"}})
    coll.insert_one({"k2": 1})
    coll.insert_one({"k2": 1})
    with pytest.raises(DuplicateKeyError):
        coll.create_index("k2", unique=True, partialFilterExpression={"k2": {"$exists": True}})


def test_expr_in_an_upsert_filter_is_refused_as_by_the_server(client: MemoryClient, coll) -> None:
    flt = {"_id": 1, "$or": [{"x": 1}, {"$expr": {"$gt": ["$a", 0]}}]}
    for call in (
        lambda: coll.update_one(flt, {"$set": {"a": 1}}, upsert=True),
        lambda: coll.find_one_and_update(flt, {"$set": {"a": 1}}, upsert=True),
        lambda: coll.replace_one(flt, {"a": 1}, upsert=True),
    ):
        with pytest.raises(OperationFailure, match=r"\$expr is not allowed") as info:
            call()
        assert info.value.code == 224
    assert coll.find_one_and_update(flt, {"$set": {"a": 1}}) is None  # fine without upsert


def test_aware_datetimes_in_queries_match_stored_utc(client: MemoryClient, coll) -> None:
    import datetime as dt

    aware = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    coll.insert_one({"_id": 1, "at": aware, "n": 0})
    assert coll.find_one({"at": aware})["_id"] == 1
    assert coll.find_one({"at": {"$gte": aware}, "k": {"$in": (None,)}})["_id"] == 1
    flt = {"$or": [{"at": {"$lte": aware}}]}
    assert coll.find_one_and_update(flt, {"$inc": {"n": 1}}, return_document=True)["n"] == 1
    assert [d["_id"] for d in coll.aggregate([{"$match": {"at": aware}}])] == [1]


@pytest.mark.parametrize(
    "projection",
    [
        {"a": 1},
        {"a": 1, "b": True},
        {"a": 1, "_id": 0},
        {"_id": 0, "missing": 1},
        {"a": 0},
        {"a.x": 1},
        {"_id": 0},
        {"c": 1, "_id": False, "b": 1},
        {"b": 1, "_id": 1, "c": True},
        ["a"],
    ],
)
def test_find_one_and_update_projections_match_find(
    client: MemoryClient, coll, projection: object
) -> None:
    coll.insert_one({"_id": 1, "a": {"x": [1, 2]}, "b": 2, "c": 3})
    after = coll.find_one_and_update(
        {"_id": 1}, {"$inc": {"c": 1}}, projection=projection, return_document=True
    )
    assert after == coll.find_one({"_id": 1}, projection)
    after["b" if "b" in after else "_id"] = "changed"  # a private copy
    assert coll.find_one({"_id": 1})["c"] == 4


def test_insert_many_reports_write_errors_as_the_driver_does(coll) -> None:
    coll.insert_one({"_id": 2, "k": "old"})
    with pytest.raises(BulkWriteError) as ordered:
        coll.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3}])
    details = ordered.value.details
    assert details["nInserted"] == 1
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000)]
    assert sorted(d["_id"] for d in coll.find()) == [1, 2]  # stops at the duplicate
    with pytest.raises(BulkWriteError) as unordered:
        coll.insert_many([{"_id": 2}, {"_id": 4}, {"_id": 1}], ordered=False)
    details = unordered.value.details
    assert details["nInserted"] == 1
    assert [e["index"] for e in details["writeErrors"]] == [0, 2]
    assert sorted(d["_id"] for d in coll.find()) == [1, 2, 4]  # goes on past them
    assert coll.find_one({"_id": 2}) == {"_id": 2, "k": "old"}
    with pytest.raises(InvalidDocument, match=r"\$bad"):
        coll.insert_one({"$bad": 1})
    for nul in ({"a\0b": 1}, {"n": {"a\0": 1}}, {"n": [{"a\0": 1}]}):
        with pytest.raises(InvalidDocument, match="NULL"):
            coll.insert_many([{"_id": 9}, nul])
    assert coll.find_one({"_id": 9}) is None  # refused before anything was inserted
    with pytest.raises(TypeError, match="not mappingproxy"):
        coll.insert_one(types.MappingProxyType({"a": 1}))


def test_insert_event_is_its_own_copy(coll) -> None:
    with coll.watch() as stream:
        coll.insert_one({"_id": 1, "n": {"a": [1]}})
        event = stream.try_next()
    assert event is not None
    event["fullDocument"]["n"]["a"].append(2)
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": {"a": [1]}}


def test_inc_keeps_the_bson_integer_type_a_server_gives(coll) -> None:
    coll.insert_one({"_id": 1, "long": Int64(5), "int": 5, "double": 1.5, "n": {"long": Int64(1)}})
    coll.update_one(
        {"_id": 1},
        {
            "$inc": {
                "long": 1,  # long + int: long
                "int": Int64(1),  # int + long: long
                "double": Int64(1),  # a double stays a double
                "n.long": 2,
                "new": Int64(3),  # missing + long: long
                "small": 1,  # missing + int: int
            }
        },
    )
    doc = coll.find_one({"_id": 1})
    assert {k: type(v) for k, v in doc.items() if k != "n"} == {
        "_id": int,
        "long": Int64,
        "int": Int64,
        "double": float,
        "new": Int64,
        "small": int,
    }
    assert type(doc["n"]["long"]) is Int64
    assert (doc["long"], doc["int"], doc["double"], doc["n"]["long"], doc["new"]) == (
        6,
        6,
        2.5,
        3,
        3,
    )
    coll.update_one({"_id": 1}, {"$inc": {"int32": 2**31 - 1}})
    coll.update_one({"_id": 1}, {"$inc": {"int32": 1}})  # an int32 overflow widens to a long
    widened = coll.find_one({"_id": 1})["int32"]
    assert (widened, type(widened)) == (2**31, Int64)
    coll.insert_one({"_id": 2, "a": [Int64(1), 2], "n": 5})
    coll.update_one({"_id": 2}, {"$inc": {"a.0": 1, "a.1": 1, "n": 2**40}})
    doc = coll.find_one({"_id": 2})
    assert [type(v) for v in doc["a"]] == [Int64, int]
    coll.update_one({"_id": 2}, {"$inc": {"n": -(2**40)}})  # int64 operand, int32-sized result
    assert type(coll.find_one({"_id": 2})["n"]) is Int64


def test_raw_bson_documents_insert_as_the_driver_sends_them(coll) -> None:
    with_id = RawBSONDocument(bson.encode({"_id": 1, "a": 1}))
    without_id = RawBSONDocument(bson.encode({"b": 2}))
    assert coll.insert_one(with_id).inserted_id == 1
    result = coll.insert_many([without_id])
    assert result.inserted_ids == [None]  # the server names it; the driver does not know
    coll.bulk_write([InsertOne(RawBSONDocument(bson.encode({"_id": 3})))])
    docs = list(coll.find({}, sort=[("_id", 1)]))  # numbers sort before ObjectIds
    assert docs[:2] == [{"_id": 1, "a": 1}, {"_id": 3}]
    assert docs[2]["b"] == 2
    assert isinstance(docs[2]["_id"], ObjectId)
    assert len(docs) == 3


def test_ledger_documents_keep_their_int64_fields(client: MemoryClient) -> None:
    """SPEC's document shapes (balance, amount, balance_after: int64) hold on the engine after
    every kind of write, as they do on a server: a data team's ``$type`` sees the same."""
    from mongoledger import Ledger

    ledger = Ledger(client["ledger"])
    a = ledger.open_account({"user_id": 1})
    b = ledger.open_account({"user_id": 2}, min_balance=0)
    ledger.increase(a, 10)
    ledger.decrease(a, 3)
    tid = ledger.transfer(a, b, 2)[0]
    ledger.revert(tid)
    for doc in ledger.accounts.find():
        assert type(doc["balance"]) is Int64, doc
    assert type(ledger.accounts.find_one({"_id": b})["min_balance"]) is Int64
    for doc in ledger.transactions.find():
        assert (type(doc["amount"]), type(doc["balance_after"])) == (Int64, Int64), doc
