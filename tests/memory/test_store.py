"""The embedded store at the engine level: what persists, recovery, damage, the lock, compaction.

Crashes of a real writer process (kill -9 at random moments) are in ``test_store_crash.py``;
the ledger on a store (sync and async twins) in ``tests/_async/test_store.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Decimal128, Int64, ObjectId
from pymongo.errors import DuplicateKeyError, InvalidOperation

from mongoledger import Ledger
from mongoledger.memory import (
    AsyncMemoryClient,
    MemoryClient,
    MemoryServer,
    StoreCorrupted,
    StoreError,
    StoreLocked,
    StoreRecoveryWarning,
    _journal,
    _store,
)
from mongoledger.memory._oplog import Entry

ROOT = Path(__file__).resolve().parents[2]


def everything(client: Any) -> dict[str, Any]:
    """Every document and index of every collection of every database."""
    out: dict[str, Any] = {}
    for db_name in sorted(client.list_database_names()):
        db = client[db_name]
        for name in sorted(db.list_collection_names()):
            coll = db[name]
            out[f"{db_name}.{name}"] = (
                # By _id: natural order is not kept (a restart replays commits in commit
                # order, while overlapping transactions placed documents in write order).
                list(coll.find({}).sort("_id", 1)),
                coll.index_information(),
            )
    return out


def history(server: MemoryServer) -> list[dict[str, Any]]:
    """Every field of every oplog entry."""
    fields = [f.name for f in dataclasses.fields(Entry)]
    return [{name: getattr(e, name) for name in fields} for e in server.oplog_entries(0)]


# --------------------------------------------------------------------------- round trips


def test_documents_indexes_and_history_survive_a_restart(tmp_path: Path) -> None:
    client = MemoryClient(path=tmp_path)
    db = client["app"]
    odd = {
        "_id": {"compound": 1, "key": "x"},
        "long": Int64(5),
        "small": 5,
        "when": datetime.datetime(2026, 11, 25, 10, 30, 0, 123000),
        "money": Decimal128("12.34"),
        "nested": {"list": [1, "two", {"three": 3.5}], "none": None},
        "oid": ObjectId(),
        "bin": bson.Binary(b"\x00\x01", 0),
    }
    db.things.insert_one(odd)
    db.things.insert_many([{"_id": i, "n": i} for i in range(5)])
    db.things.update_one({"_id": 1}, {"$inc": {"n": Int64(10)}, "$set": {"tag": "x"}})
    db.things.replace_one({"_id": 2}, {"whole": "new"})
    db.things.delete_one({"_id": 3})
    db.users.create_index("email", unique=True)
    db.users.create_index(
        [("team", 1), ("name", 1)],
        unique=True,
        partialFilterExpression={"active": True},
        name="active_names",
    )
    db.users.insert_many([{"email": "a@x", "team": 1, "name": "n", "active": True}])
    db.create_collection("empty")
    db.gone.insert_one({"_id": 1})
    db.gone.drop()
    db.dropped_index.create_index("k")
    db.dropped_index.drop_index("k_1")
    before = everything(client)
    events = history(client.server)
    last_time = client.server.cluster_time
    server_id = client.server.server_id
    client.close()

    client = MemoryClient(path=tmp_path)
    assert everything(client) == before
    assert "empty" in client["app"].list_collection_names()
    assert "gone" not in client["app"].list_collection_names()
    assert history(client.server) == events
    assert client.server.server_id == server_id  # resume tokens stay valid
    assert client.server.cluster_time == last_time
    assert type(client["app"].things.find_one({"_id": 1})["n"]) is Int64
    # The indexes work, unique and partial included.
    users = client["app"].users
    with pytest.raises(DuplicateKeyError):
        users.insert_one({"email": "a@x"})
    with pytest.raises(DuplicateKeyError):
        users.insert_one({"email": "b@x", "team": 1, "name": "n", "active": True})
    users.insert_one({"email": "c@x", "team": 1, "name": "n", "active": False})
    # New writes continue the history and the clock.
    client["app"].things.insert_one({"_id": 9})
    assert client.server.cluster_time > last_time
    positions = [event["pos"] for event in history(client.server)]
    assert positions == list(range(len(events) + 2))  # the insert above and this one
    client.close()


async def test_the_async_client_round_trips_and_commits_durably(tmp_path: Path) -> None:
    client = AsyncMemoryClient(path=tmp_path)
    coll = client["app"]["c"]
    await coll.create_index("k", unique=True)
    async with client.start_session() as s, await s.start_transaction():
        await coll.insert_one({"_id": 1, "k": "a"}, session=s)
        await coll.insert_one({"_id": 2, "k": "b"}, session=s)
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.insert_one({"_id": 3, "k": "c"}, session=s)
        await s.abort_transaction()  # never journaled
    await coll.update_one({"_id": 2}, {"$set": {"x": 1}})
    await client.close()

    client = AsyncMemoryClient(path=tmp_path)
    coll = client["app"]["c"]
    assert await coll.find({}).sort("_id", 1).to_list() == [
        {"_id": 1, "k": "a"},
        {"_id": 2, "k": "b", "x": 1},
    ]
    assert "k_1" in await coll.index_information()
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"k": "a"})
    await client.close()


def test_a_change_stream_resumes_after_a_restart(tmp_path: Path) -> None:
    client = MemoryClient(path=tmp_path)
    coll = client["app"]["c"]
    with coll.watch(max_await_time_ms=50) as stream:
        coll.insert_one({"_id": 1})
        token = stream.next()["_id"]
    coll.insert_one({"_id": 2})
    client.close()

    client = MemoryClient(path=tmp_path)
    coll = client["app"]["c"]
    coll.update_one({"_id": 2}, {"$set": {"x": 1}})
    with coll.watch(resume_after=token, max_await_time_ms=50) as stream:
        seen = [
            (e["operationType"], e["documentKey"]["_id"]) for e in (stream.next(), stream.next())
        ]
    assert seen == [("insert", 2), ("update", 2)]
    client.close()


def test_without_path_nothing_changes(tmp_path: Path) -> None:
    server = MemoryServer()
    assert server.path is None
    assert server.store is None
    client = MemoryClient(server=server)
    client["app"]["c"].insert_one({"_id": 1})
    server.compact()
    client.close()
    server.close()  # no-ops: an in-memory server keeps working
    assert client["app"]["c"].count_documents({}) == 1
    assert os.listdir(tmp_path) == []


def test_a_closed_store_refuses_operations_and_releases_its_lock(tmp_path: Path) -> None:
    client = MemoryClient(path=tmp_path)
    client["app"]["c"].insert_one({"_id": 1})
    client.close()
    with pytest.raises(InvalidOperation, match="closed"):
        client["app"]["c"].find_one({})
    with MemoryClient(path=tmp_path) as again:  # the lock was released
        assert again["app"]["c"].find_one({}) == {"_id": 1}
    assert repr(again) == f"MemoryClient(strict=True, path={str(tmp_path)!r})"


def test_path_and_server_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        MemoryClient(server=MemoryServer(), path=tmp_path)


def test_a_directory_of_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a mongoledger store"):
        MemoryClient(path=tmp_path)
    with pytest.raises(StoreError, match="not a directory"):
        MemoryClient(path=tmp_path / "notes.txt")
    assert os.listdir(tmp_path) == ["notes.txt"]


# --------------------------------------------------------------------------- the lock


def test_a_second_open_in_this_process_is_refused(tmp_path: Path) -> None:
    client = MemoryClient(path=tmp_path)
    with pytest.raises(StoreLocked, match="in use by this process") as info:
        MemoryClient(path=tmp_path)
    assert str(tmp_path) in str(info.value)
    assert info.value.holder_pid == os.getpid()
    client.close()


HOLDER = """
import sys, time
from mongoledger.memory import MemoryClient
client = MemoryClient(path=sys.argv[1])
client["app"]["c"].insert_one({"_id": 1})
print("ready", flush=True)
time.sleep(60)
"""


def test_another_process_is_refused_until_its_holder_dies(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "ready"
            with pytest.raises(StoreLocked) as info:
                MemoryClient(path=tmp_path)
            message = str(info.value)
            assert str(tmp_path) in message
            assert f"process {holder.pid}" in message
            assert info.value.holder_pid == holder.pid
        finally:
            holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
            holder.wait()
    client = MemoryClient(path=tmp_path)
    assert client["app"]["c"].find_one({}) == {"_id": 1}
    client.close()


# --------------------------------------------------------------------------- damage


def journal_file(path: Path) -> Path:
    (found,) = sorted(path.glob("journal.*"))
    return found


def write_some(path: Path, n: int) -> None:
    client = MemoryClient(path=path)
    for i in range(n):
        client["app"]["c"].insert_one({"_id": i, "payload": "x" * 50})
    client.close()


def ids(path: Path) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreRecoveryWarning)
        client = MemoryClient(path=path)
    try:
        return [d["_id"] for d in client["app"]["c"].find({})]
    finally:
        client.close()


def test_a_torn_tail_record_is_dropped_with_a_warning(tmp_path: Path) -> None:
    write_some(tmp_path, 5)
    journal = journal_file(tmp_path)
    data = journal.read_bytes()
    records, end, _ = _journal.scan(data)
    assert end == len(data)
    assert len(records) == 7  # header, settings, five inserts
    journal.write_bytes(data[: records[-1].offset + 11])  # the last insert cut short

    with pytest.warns(StoreRecoveryWarning, match=r"dropped 11 bytes at the end of journal\."):
        client = MemoryClient(path=tmp_path)
    assert [d["_id"] for d in client["app"]["c"].find({})] == [0, 1, 2, 3]
    client["app"]["c"].insert_one({"_id": 4, "again": True})  # appended after the cut
    client.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean open now
        client = MemoryClient(path=tmp_path)
    assert client["app"]["c"].find_one({"_id": 4}) == {"_id": 4, "again": True}
    client.close()


def test_garbage_after_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    write_some(tmp_path, 3)
    journal = journal_file(tmp_path)
    with open(journal, "ab") as fh:
        fh.write(b"\x00" * 37)  # a crash that extended the file with zeros
    with pytest.warns(StoreRecoveryWarning, match="37 bytes"):
        client = MemoryClient(path=tmp_path)
    assert client["app"]["c"].count_documents({}) == 3
    client.close()


def test_a_damaged_middle_record_refuses_to_open(tmp_path: Path) -> None:
    write_some(tmp_path, 5)
    journal = journal_file(tmp_path)
    data = bytearray(journal.read_bytes())
    records, _, _ = _journal.scan(bytes(data))
    victim = records[3]
    data[victim.offset + _journal.HEADER_SIZE + 20] ^= 0x01  # one flipped bit
    journal.write_bytes(bytes(data))

    with pytest.raises(StoreCorrupted) as info:
        MemoryClient(path=tmp_path)
    message = str(info.value)
    assert journal.name in message
    assert f"byte {victim.offset}" in message
    assert "checksum mismatch" in message
    assert "refusing to open" in message
    assert journal.read_bytes() == bytes(data)  # nothing was truncated or rewritten
    with pytest.raises(StoreCorrupted):  # the failed open released the lock
        MemoryClient(path=tmp_path)
    # The advice works: truncated where the damage starts, the store opens with what preceded.
    assert f"truncate {journal.name} to {victim.offset} bytes" in message
    journal.write_bytes(bytes(data[: victim.offset]))
    assert ids(tmp_path) == [0]  # record 3, the damaged one, was the second insert


def test_a_damaged_snapshot_refuses_to_open(tmp_path: Path) -> None:
    client = MemoryClient(path=tmp_path)
    client["app"]["c"].insert_many([{"_id": i} for i in range(10)])
    client.server.compact()
    client.close()
    snapshot = tmp_path / "snapshot"
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupted, match="snapshot is damaged"):
        MemoryClient(path=tmp_path)
    snapshot.write_bytes(bytes(data[: len(data) - 3]))
    with pytest.raises(StoreCorrupted, match="snapshot is damaged"):
        MemoryClient(path=tmp_path)


def test_a_missing_journal_file_refuses_to_open(tmp_path: Path) -> None:
    write_some(tmp_path, 2)
    journal_file(tmp_path).rename(tmp_path / "journal.000002")  # generation 1 is gone
    with pytest.raises(StoreCorrupted, match=r"journal\.000001 is missing"):
        MemoryClient(path=tmp_path)


def test_a_record_from_a_newer_format_is_refused(tmp_path: Path) -> None:
    write_some(tmp_path, 1)
    journal = journal_file(tmp_path)
    records, _, _ = _journal.scan(journal.read_bytes())
    with open(journal, "ab") as fh:  # the next sequence number, a record this version lacks
        fh.write(_journal.frame({"seq": Int64(len(records)), "vector_index": {}}))
    with pytest.raises(StoreCorrupted, match="newer mongoledger"):
        MemoryClient(path=tmp_path)


def test_a_failed_fsync_fails_the_write_and_every_later_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MemoryClient(path=tmp_path)
    coll = client["app"]["c"]
    coll.insert_one({"_id": 1})

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_journal, "sync_file", broken)
    with pytest.raises(StoreError, match=r"writing the journal failed .*Input/output error"):
        coll.insert_one({"_id": 2})
    with pytest.raises(StoreError, match="refuses further operations"):
        coll.find_one({})
    client.close()
    monkeypatch.undo()
    client = MemoryClient(path=tmp_path)
    assert client["app"]["c"].find_one({"_id": 1}) == {"_id": 1}
    client.close()


# --------------------------------------------------------------------------- durability order


def test_change_streams_see_only_what_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MemoryClient(path=tmp_path)
    coll = client["app"]["c"]
    coll.insert_one({"_id": 0})
    release = threading.Event()
    syncing = threading.Event()
    real = _journal.sync_file

    def slow(fd: int) -> None:
        syncing.set()
        release.wait(10)
        real(fd)

    with coll.watch(max_await_time_ms=20) as stream:
        monkeypatch.setattr(_journal, "sync_file", slow)
        writer = threading.Thread(target=coll.insert_one, args=({"_id": 1},))
        writer.start()
        assert syncing.wait(10)
        assert coll.find_one({"_id": 1}) == {"_id": 1}  # visible to reads (read concern local)
        assert stream.try_next() is None  # not to change streams: not durable yet
        release.set()
        writer.join(10)
        event = stream.next()
    assert event["documentKey"] == {"_id": 1}
    client.close()


def test_a_commit_over_the_wire_is_on_disk_before_its_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pymongo import MongoClient as WireClient

    server = MemoryServer(path=tmp_path)
    uri = server.listen()
    client: Any = WireClient(uri, serverSelectionTimeoutMS=10_000)
    try:
        coll = client["app"]["c"]
        coll.insert_one({"_id": 0})
        release = threading.Event()
        syncing = threading.Event()
        real = _journal.sync_file

        def slow(fd: int) -> None:
            syncing.set()
            release.wait(10)
            real(fd)

        monkeypatch.setattr(_journal, "sync_file", slow)
        committed = threading.Event()

        def commit() -> None:
            with client.start_session() as session:
                session.with_transaction(lambda s: coll.insert_one({"_id": 1}, session=s))
            committed.set()

        writer = threading.Thread(target=commit)
        writer.start()
        assert syncing.wait(10)
        assert not committed.wait(0.2)  # the reply waits for the fsync
        release.set()
        writer.join(10)
        assert committed.is_set()
    finally:
        client.close()
        server.close()
    with MemoryClient(path=tmp_path) as again:
        assert again["app"]["c"].count_documents({}) == 2


async def test_async_committers_share_fsyncs(tmp_path: Path) -> None:
    client = AsyncMemoryClient(path=tmp_path)
    coll = client["app"]["c"]
    await coll.insert_one({"_id": "warm"})
    before = client.server.store.stats

    async def commit(i: int) -> None:
        async with client.start_session() as s:
            await s.with_transaction(lambda s: coll.insert_one({"_id": i}, session=s))

    await asyncio.gather(*(commit(i) for i in range(64)))
    after = client.server.store.stats
    assert after["records"] - before["records"] == 64
    assert after["fsyncs"] - before["fsyncs"] < 64
    await client.close()


# --------------------------------------------------------------------------- compaction


def test_compaction_under_concurrent_writes_loses_nothing(tmp_path: Path) -> None:
    client = MemoryClient(path=tmp_path)
    ledger = Ledger(client["shop"])
    ledger.ensure_indexes()
    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0] * 4

    def writer(w: int) -> None:
        try:
            while not stop.is_set():
                ledger.transfer({"w": w}, {"w": (w + 1) % 4}, 1)
                done[w] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        while sum(done) < 40:
            threading.Event().wait(0.005)
        client.server.compact()
        done[:] = [0] * 4
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors
    assert client.server.store.stats["compactions"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.000006", "lock", "snapshot"]
    before = everything(client)
    events = history(client.server)
    client.close()

    client = MemoryClient(path=tmp_path)
    assert everything(client) == before
    assert history(client.server) == events
    assert Ledger(client["shop"]).verify().ok
    client.close()


def test_the_store_compacts_itself_as_the_journal_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store, "COMPACT_MIN_BYTES", 4096)
    client = MemoryClient(path=tmp_path, oplog_size=20)
    coll = client["app"]["c"]
    for i in range(300):
        coll.insert_one({"_id": i, "pad": "y" * 100})
        coll.delete_one({"_id": i - 1})
    client.close()  # waits for a compaction in progress
    stats = client.server.store.stats
    assert stats["compactions"] >= 3
    # The size follows the live data (one document, 20 events), not the 600 writes.
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 3 * 4096 + 20 * 400
    client = MemoryClient(path=tmp_path)  # the store remembers its bound
    assert client.server.oplog_size == 20
    assert list(client["app"]["c"].find({})) == [{"_id": 299, "pad": "y" * 100}]
    assert len(history(client.server)) == 20
    client.close()
    client = MemoryClient(path=tmp_path, oplog_size=5)  # until told otherwise
    assert len(history(client.server)) == 5
    client.close()
    client = MemoryClient(path=tmp_path)
    assert (client.server.oplog_size, len(history(client.server))) == (5, 5)
    client.close()


def test_a_failed_background_compaction_loses_nothing_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store, "COMPACT_MIN_BYTES", 4096)
    real_replace = os.replace
    failures = []

    def full_disk(src: Any, dst: Any) -> None:
        if str(src).endswith("snapshot.tmp") and not failures:
            failures.append(src)
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(_store.os, "replace", full_disk)
    client = MemoryClient(path=tmp_path)
    store = client.server.store
    coll = client["app"]["c"]
    i = 0

    def write_until(done: Any) -> None:
        nonlocal i
        for _ in range(20_000):
            if done():
                return
            coll.insert_one({"_id": i, "pad": "z" * 200})
            i += 1
        raise AssertionError(f"not after {i} writes: {store.stats}")

    write_until(lambda: store.compaction_error is not None)
    assert "No space left" in str(store.compaction_error)
    assert not (tmp_path / "snapshot.tmp").exists()
    write_until(lambda: store.stats["compactions"] > 0)  # retried once the journal doubled
    client.close()
    assert store.compaction_error is None
    client = MemoryClient(path=tmp_path)
    assert client["app"]["c"].count_documents({}) == i
    client.close()


def test_a_compaction_that_died_before_its_rename_leaves_the_store_as_it_was(
    tmp_path: Path,
) -> None:
    write_some(tmp_path, 3)
    (tmp_path / "snapshot.tmp").write_bytes(b"half a snapshot")
    assert ids(tmp_path) == [0, 1, 2]
    assert not (tmp_path / "snapshot.tmp").exists()


def test_collection_ddl_survives_restarts_and_compaction(tmp_path: Path) -> None:
    """Every DDL event type replays without touching the wrong documents, and collection
    UUIDs and options (pre- and post-images) survive: from the journal, then the snapshot."""
    client = MemoryClient(path=tmp_path)
    app, other = client["app"], client["other"]
    app.create_collection("imaged", changeStreamPreAndPostImages={"enabled": True})
    app.imaged.insert_many([{"_id": i, "n": i} for i in range(3)])
    app.imaged.update_one({"_id": 0}, {"$set": {"n": 10}})
    app.imaged.delete_one({"_id": 1})
    app.imaged.create_index("n", unique=True, partialFilterExpression={"n": {"$gt": 5}})
    app.command("collMod", "imaged", changeStreamPreAndPostImages={"enabled": False})
    app.imaged.update_one({"_id": 2}, {"$set": {"n": 20}})  # no pre-image recorded
    app.plain.insert_many([{"_id": i} for i in range(4)])
    app.plain.create_index("x")
    app.plain.drop_index("x_1")
    app.plain.rename("moved")  # documents, indexes, options and UUID move
    other.target.insert_one({"_id": "old target"})
    app.moved.create_index("y")
    client.admin.command("renameCollection", "app.moved", to="other.target", dropTarget=True)
    app.gone.insert_one({"_id": 1})
    app.gone.drop()
    app.gone.insert_one({"_id": 2})  # the same name again: a new collection
    client["scratch"].c.insert_one({"_id": 1})
    client.drop_database("scratch")

    def state(client: MemoryClient) -> Any:
        server = client.server
        catalog = {
            (db, name): (store.uuid, store.options, store.is_created)
            for db, names in server._store._databases.items()
            for name, store in names._collections.items()
            if store.is_created
        }
        return everything(client), catalog, history(server)

    before = state(client)
    assert before[0]["other.target"][0] == [{"_id": i} for i in range(4)]
    assert "y_1" in before[0]["other.target"][1]
    client.close()
    for compact in (False, True):
        client = MemoryClient(path=tmp_path)
        assert state(client) == before
        if compact:
            client.server.compact()
        client.close()
    client = MemoryClient(path=tmp_path)
    assert state(client) == before
    # A stream resumed from before the restarts: the same UUIDs, and the pre-image recorded.
    with client["app"].imaged.watch(
        start_at_operation_time=bson.Timestamp(0, 0),
        full_document_before_change="whenAvailable",
        show_expanded_events=True,
    ) as stream:
        events = [stream.next() for _ in range(9)]
    uuid = client.server.store_for("app", "imaged").uuid
    assert {e["collectionUUID"] for e in events} == {uuid}
    kinds = ["create", *["insert"] * 3, "update", "delete", "createIndexes", "modify", "update"]
    assert [e["operationType"] for e in events] == kinds
    assert events[0]["operationDescription"]["changeStreamPreAndPostImages"] == {"enabled": True}
    events = [e for e in events if e["operationType"] in ("update", "delete")]
    assert events[0]["fullDocumentBeforeChange"] == {"_id": 0, "n": 0}
    assert events[1]["fullDocumentBeforeChange"] == {"_id": 1, "n": 1}
    assert events[2]["fullDocumentBeforeChange"] is None  # images were off by then
    client.close()


def copy_of_files(src: Path, dst: Path) -> Path:
    """The store's files as a crash would leave them now (the copy has no holder)."""
    dst.mkdir()
    for path in src.iterdir():
        if path.name != "lock":
            dst.joinpath(path.name).write_bytes(path.read_bytes())
    return dst


@pytest.mark.parametrize("overlapping", [False, True])
def test_a_compaction_copies_committed_versions_only(tmp_path: Path, overlapping: bool) -> None:
    """An open transaction's writes sit in the store's documents: the snapshot holds the
    versions they replaced, alone (no overlays) or beside another transaction (overlays)."""
    store_dir = tmp_path / "store"
    client = MemoryClient(path=store_dir, strict=False)  # reads beside open transactions
    coll = client["app"]["c"]
    coll.insert_many([{"_id": i, "v": "committed"} for i in range(3)])
    session = client.start_session()
    session.start_transaction()
    coll.update_one({"_id": 0}, {"$set": {"v": "uncommitted"}}, session=session)
    coll.delete_one({"_id": 1}, session=session)
    coll.insert_one({"_id": 9, "v": "uncommitted"}, session=session)
    client["app"].create_collection("new", session=session)
    client["app"]["new"].insert_one({"_id": 1}, session=session)
    if overlapping:  # another transaction beside it: versions kept in overlays
        other = client.start_session()
        other.start_transaction()
        coll.update_one({"_id": 2}, {"$set": {"v": "other, uncommitted"}}, session=other)
    client.server.compact()
    crashed = copy_of_files(store_dir, tmp_path / "crashed")
    session.commit_transaction()
    after_commit = everything(client)
    if overlapping:
        other.abort_transaction()
        other.end_session()
    session.end_session()
    client.close()

    with MemoryClient(path=crashed) as copy:  # the snapshot and the journal after it
        assert everything(copy)["app.c"][0] == [{"_id": i, "v": "committed"} for i in range(3)]
        assert copy["app"].list_collection_names() == ["c"]
    with MemoryClient(path=store_dir) as again:
        assert everything(again) == after_commit
        assert again["app"]["c"].find_one({"_id": 0}) == {"_id": 0, "v": "uncommitted"}
        assert again["app"]["new"].find_one({}) == {"_id": 1}


def test_overlapping_transactions_journal_in_commit_order(tmp_path: Path) -> None:
    client = MemoryClient(path=tmp_path, strict=False)  # writes beside open transactions
    coll = client["app"]["c"]
    coll.insert_many([{"_id": i, "n": 0} for i in range(4)])
    first, second = client.start_session(), client.start_session()
    first.start_transaction()
    second.start_transaction()
    coll.update_one({"_id": 0}, {"$inc": {"n": 1}}, session=first)  # first writes first
    coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=second)
    coll.insert_one({"_id": 5}, session=first)
    coll.update_one({"_id": 2}, {"$inc": {"n": 1}}, session=second)
    second.commit_transaction()  # ... and commits first
    coll.update_one({"_id": 3}, {"$inc": {"n": 1}})
    first.commit_transaction()
    first.end_session()
    second.end_session()
    before, events = everything(client), history(client.server)
    assert [e["doc_id"] for e in events[5:]] == [1, 2, 3, 0, 5]  # create, 4 inserts, commits
    client.close()
    with MemoryClient(path=tmp_path) as again:
        assert everything(again) == before
        assert history(again.server) == events


def test_a_version_1_store_opens_and_is_rewritten_in_this_version(tmp_path: Path) -> None:
    """``data/store-v1`` was written by the store's first format (before collections had
    UUIDs and options; a snapshot, then a journal): it opens with its data and history, and
    is compacted into this version's files at once."""
    store_dir = tmp_path / "store"
    shutil.copytree(Path(__file__).parent / "data" / "store-v1", store_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no recovery: nothing was torn
        client = MemoryClient(path=store_dir)
    ledger = Ledger(client["shop"])
    assert ledger.balance({"user_id": 1}) == 350
    assert ledger.balance({"user_id": 2}) == 150
    assert ledger.verify().ok
    app = client["app"]
    assert app.list_collection_names() == ["b"]
    assert list(app.b.find({}).sort("_id", 1)) == [{"_id": 1, "k": 10}, {"_id": 2, "k": 2}]
    assert app.b.index_information()["k_1"]["unique"]
    with pytest.raises(DuplicateKeyError):
        app.b.insert_one({"k": 2})
    server = client.server
    uuids = {name: server.store_for("app", name).uuid for name in ("b",)}
    assert uuids["b"] is not None
    before, events = everything(client), history(server)
    assert events
    assert events[0]["pos"] == 0
    client.close()
    headers = {}
    for path in store_dir.iterdir():
        if path.name != "lock":
            records = list(_journal.RecordReader(path))
            headers[path.name] = records[0].decode()["version"]
    assert set(headers.values()) == {_store.FORMAT_VERSION}
    assert "snapshot" in headers
    assert len(headers) == 2  # and one journal file
    with MemoryClient(path=store_dir) as again:
        assert everything(again) == before
        assert history(again.server) == events
        assert again.server.store_for("app", "b").uuid == uuids["b"]
