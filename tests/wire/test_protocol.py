"""The wire endpoint's framing and robustness: real sockets against ``MemoryServer.listen()``.

A malformed, truncated, oversize or unknown message closes that connection only; the server
keeps serving everyone else.
"""

from __future__ import annotations

import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import bson
import pytest
from bson.int64 import Int64
from pymongo import MongoClient

from mongoledger.memory import MemoryServer
from mongoledger.memory._wire import NoAuthenticationWarning
from mongoledger.memory._wire._protocol import (
    HEADER,
    MAX_MESSAGE_SIZE,
    OP_MSG,
    OP_QUERY,
    OP_REPLY,
    encode_request,
)


@pytest.fixture
def server() -> Iterator[tuple[MemoryServer, str, int]]:
    memory = MemoryServer()
    uri = memory.listen()
    host, port = uri.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    try:
        yield memory, host, int(port)
    finally:
        memory.close()


def connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(10)
    return sock


def read_message(sock: socket.socket) -> tuple[int, bytes]:
    head = _read(sock, 16)
    length, _request_id, _response_to, op_code = HEADER.unpack(head)
    return op_code, _read(sock, length - 16)


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def command(sock: socket.socket, doc: dict[str, Any], **sequences: list[Any]) -> dict[str, Any]:
    sock.sendall(encode_request(1, doc, sequences or None))
    op_code, body = read_message(sock)
    assert op_code == OP_MSG
    assert body[4] == 0  # one body section
    return bson.decode(body[5:])


def closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (reads EOF or a reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def still_serves(host: str, port: int) -> bool:
    with connect(host, port) as sock:
        return command(sock, {"ping": 1, "$db": "admin"})["ok"] == 1.0


def test_op_msg_round_trip_and_document_sequences(server: Any) -> None:
    _, host, port = server
    with connect(host, port) as sock:
        reply = command(
            sock, {"insert": "c", "$db": "t"}, documents=[{"_id": 1}, {"_id": 2, "x": "y"}]
        )
        assert reply["n"] == 2
        assert reply["ok"] == 1.0
        found = command(sock, {"find": "c", "filter": {}, "$db": "t"})
        assert found["cursor"]["firstBatch"] == [{"_id": 1}, {"_id": 2, "x": "y"}]
        assert found["cursor"]["id"] == 0
        assert found["cursor"]["ns"] == "t.c"


def test_legacy_op_query_handshake(server: Any) -> None:
    _, host, port = server
    query = bson.encode({"isMaster": 1, "helloOk": True})
    payload = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    with connect(host, port) as sock:
        sock.sendall(HEADER.pack(16 + len(payload), 7, 0, OP_QUERY) + payload)
        op_code, body = read_message(sock)
        assert op_code == OP_REPLY
        flags, cursor_id, start, count = struct.unpack_from("<iqii", body)
        assert (flags, cursor_id, start, count) == (0, 0, 0, 1)
        reply = bson.decode(body[20:])
        assert reply["ismaster"] is True
        assert reply["setName"] == "memory"
        assert reply["helloOk"] is True
        assert reply["hosts"] == [f"{host}:{port}"]
        assert reply["maxWireVersion"] >= 21
        assert "compression" not in reply


def test_op_query_is_refused_beyond_the_handshake(server: Any) -> None:
    _, host, port = server
    query = bson.encode({"find": "c"})
    payload = struct.pack("<i", 0) + b"t.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    with connect(host, port) as sock:
        sock.sendall(HEADER.pack(16 + len(payload), 7, 0, OP_QUERY) + payload)
        op_code, body = read_message(sock)
        assert op_code == OP_REPLY
        reply = bson.decode(body[20:])
        assert reply["ok"] == 0.0
        assert reply["code"] == 352


def test_a_message_without_db_gets_an_error_reply(server: Any) -> None:
    _, host, port = server
    with connect(host, port) as sock:
        reply = command(sock, {"ping": 1})
        assert reply["ok"] == 0.0
        assert reply["code"] == 40571
        assert command(sock, {"ping": 1, "$db": "admin"})["ok"] == 1.0  # the connection lives


def test_unacknowledged_write_gets_no_reply(server: Any) -> None:
    _, host, port = server
    with connect(host, port) as sock:
        message = bytearray(encode_request(3, {"insert": "c", "documents": [{"a": 1}], "$db": "t"}))
        struct.pack_into("<I", message, 16, 2)  # moreToCome
        sock.sendall(bytes(message))
        found = command(sock, {"find": "c", "$db": "t"})  # the next reply is the find's
        assert [d["a"] for d in found["cursor"]["firstBatch"]] == [1]


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(HEADER.pack(8, 1, 0, OP_MSG), id="length-below-header"),
        pytest.param(HEADER.pack(MAX_MESSAGE_SIZE + 1, 1, 0, OP_MSG), id="oversize"),
        pytest.param(HEADER.pack(16 + 4, 1, 0, 9999) + b"\x00" * 4, id="unknown-opcode"),
        pytest.param(HEADER.pack(16 + 5, 1, 0, 2012) + b"\x00" * 5, id="compressed"),
        pytest.param(
            HEADER.pack(16 + 4 + 1 + 5, 1, 0, OP_MSG) + b"\x00" * 4 + b"\x00" + b"\xff" * 5,
            id="invalid-bson",
        ),
        pytest.param(
            HEADER.pack(16 + 4 + 1 + 5, 1, 0, OP_MSG) + b"\x00" * 4 + b"\x07" + b"\x05" * 5,
            id="unknown-section-kind",
        ),
        pytest.param(
            HEADER.pack(16 + 4 + 1 + 5, 1, 0, OP_MSG)
            + struct.pack("<I", 1 << 5)
            + b"\x00"
            + bson.encode({}),
            id="unknown-required-flag",
        ),
        pytest.param(
            HEADER.pack(16 + 4 + 1 + 8, 1, 0, OP_MSG)
            + b"\x00" * 4
            + b"\x00"
            + struct.pack("<i", 100)
            + b"\x00" * 4,
            id="document-overruns-message",
        ),
        pytest.param(HEADER.pack(16 + 4, 1, 0, OP_MSG) + b"\x00" * 4, id="no-body-section"),
    ],
)
def test_malformed_message_closes_only_that_connection(server: Any, message: bytes) -> None:
    _, host, port = server
    with connect(host, port) as bystander, connect(host, port) as sock:
        assert command(bystander, {"ping": 1, "$db": "admin"})["ok"] == 1.0
        sock.sendall(message)
        assert closed(sock)
        assert command(bystander, {"ping": 1, "$db": "admin"})["ok"] == 1.0
    assert still_serves(host, port)


def test_truncated_message_and_client_killed_mid_message(server: Any) -> None:
    _memory, host, port = server
    whole = encode_request(1, {"insert": "c", "documents": [{"_id": 1}], "$db": "t"})
    for cut in (3, 16, len(whole) - 1):
        sock = connect(host, port)
        sock.sendall(whole[:cut])
        sock.close()  # the client dies with its message half sent
    assert still_serves(host, port)
    with connect(host, port) as sock:
        assert command(sock, {"count": "c", "$db": "t"})["n"] == 0  # nothing half-applied


def test_client_killed_while_its_change_stream_waits(server: Any) -> None:
    _, host, port = server
    sock = connect(host, port)
    opened = command(
        sock, {"aggregate": 1, "pipeline": [{"$changeStream": {}}], "cursor": {}, "$db": "t"}
    )
    cursor_id = opened["cursor"]["id"]
    assert cursor_id != 0
    sock.sendall(
        encode_request(
            2,
            {
                "getMore": Int64(cursor_id),
                "collection": "$cmd.aggregate",
                "maxTimeMS": 5000,
                "$db": "t",
            },
        )
    )
    sock.close()
    assert still_serves(host, port)


def test_a_hundred_concurrent_connections(server: Any) -> None:
    _, host, port = server
    errors: list[BaseException] = []
    counts: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(100)

    def worker(i: int) -> None:
        try:
            with connect(host, port) as sock:
                start.wait()
                for j in range(5):
                    reply = command(
                        sock, {"insert": "c", "documents": [{"w": i, "j": j}], "$db": "t"}
                    )
                    assert reply["n"] == 1
                with lock:
                    counts.append(i)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(counts) == 100
    with connect(host, port) as sock:
        assert command(sock, {"count": "c", "$db": "t"})["n"] == 500


def test_connections_beyond_the_limit_are_closed() -> None:
    memory = MemoryServer()
    uri = memory.listen(max_connections=3)
    host, port = uri.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    try:
        held = [connect(host, int(port)) for _ in range(3)]
        for sock in held:
            assert command(sock, {"ping": 1, "$db": "admin"})["ok"] == 1.0
        extra = connect(host, int(port))
        assert closed(extra)
        extra.close()
        held.pop().close()
        for _ in range(50):  # the server notices the close on its next loop turn
            with connect(host, int(port)) as again:
                try:
                    if command(again, {"ping": 1, "$db": "admin"})["ok"] == 1.0:
                        break
                except ConnectionError:
                    continue
        else:
            pytest.fail("a freed connection slot was never reused")
        for sock in held:
            sock.close()
    finally:
        memory.close()


def test_binds_loopback_unless_told_otherwise() -> None:
    memory = MemoryServer()
    with pytest.raises(ValueError, match=r"refusing to listen on '0\.0\.0\.0'.*allow_remote"):
        memory.listen("0.0.0.0")
    with pytest.warns(NoAuthenticationWarning, match="WITHOUT AUTHENTICATION"):
        uri = memory.listen("0.0.0.0", allow_remote=True)
    try:
        assert uri.startswith("mongodb://0.0.0.0:")
    finally:
        memory.close()
    with pytest.raises(ValueError, match="port must be an integer"):
        memory.listen(port=70000)


def test_listen_twice_and_close_twice() -> None:
    memory = MemoryServer()
    uri = memory.listen()
    try:
        with pytest.raises(RuntimeError, match="already listening"):
            memory.listen()
    finally:
        memory.close()
        memory.close()
    assert uri.endswith("/?replicaSet=memory")
    again = memory.listen()  # a closed server can listen again
    memory.close()
    assert again.startswith("mongodb://127.0.0.1:")


def test_pymongo_sees_a_replica_set_primary(server: Any) -> None:
    _memory, host, port = server
    client: Any = MongoClient(
        f"mongodb://{host}:{port}/?replicaSet=memory", serverSelectionTimeoutMS=5000
    )
    try:
        hello = client.admin.command("hello")
        assert hello["isWritablePrimary"] is True
        assert hello["setName"] == "memory"
        assert hello["logicalSessionTimeoutMinutes"] == 30
        assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"
        info = client.server_info()
        assert info["version"].startswith("7.")
        name = f"db_{uuid.uuid4().hex[:8]}"
        client[name].c.insert_one({"a": 1})
        assert name in client.list_database_names()
    finally:
        client.close()


def test_close_stops_with_drivers_still_connected() -> None:
    """close() ends every connection and the server's thread, even while a driver is still
    connected (its monitor waiting in an awaitable hello) and never closed its client."""
    memory = MemoryServer()
    uri = memory.listen()
    client: Any = MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        client.t.c.insert_one({"a": 1})
        assert client.t.c.find_one({}, {"_id": 0}) == {"a": 1}
        port = uri.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
        [thread] = [t for t in threading.enumerate() if t.name == f"mongoledger-wire:{port}"]
        memory.close()
        assert not thread.is_alive()
    finally:
        client.close()


def test_transactions_of_two_sessions_on_one_connection_do_not_interleave(server: Any) -> None:
    """Drivers do not pin a replica set's transactions to a connection: two sessions'
    transactions arriving on the same connection are still two owners. The second one's
    write to the unique-index entry the first holds uncommitted fails at once with
    WriteConflict (112, TransientTransactionError), as on MongoDB; retried after the first
    committed, it meets the committed entry (11000). One document holds the key at the end."""
    _, host, port = server
    with connect(host, port) as setup:
        command(
            setup,
            {
                "createIndexes": "c",
                "indexes": [{"key": {"k": 1}, "name": "k", "unique": True}],
                "$db": "t",
            },
        )

    def txn_fields(lsid: bytes, number: int, **extra: Any) -> dict[str, Any]:
        return {
            "lsid": {"id": bson.Binary(lsid, 4)},
            "txnNumber": Int64(number),
            "autocommit": False,
            **extra,
            "$db": "t",
        }

    a, b = uuid.uuid4().bytes, uuid.uuid4().bytes
    shared, other = connect(host, port), connect(host, port)
    try:
        first = command(
            shared,
            {
                "insert": "c",
                "documents": [{"_id": 1, "k": 1}],
                **txn_fields(a, 1, startTransaction=True),
            },
        )
        assert first["n"] == 1
        conflict = command(
            shared,
            {
                "insert": "c",
                "documents": [{"_id": 2, "k": 1}],
                **txn_fields(b, 1, startTransaction=True),
            },
        )
        assert conflict["ok"] == 0.0, conflict
        assert conflict["code"] == 112, conflict
        assert "TransientTransactionError" in conflict["errorLabels"]
        committed = command(other, {"commitTransaction": 1, **txn_fields(a, 1), "$db": "admin"})
        assert committed["ok"] == 1.0
        retried = command(
            shared,
            {
                "insert": "c",
                "documents": [{"_id": 2, "k": 1}],
                **txn_fields(b, 2, startTransaction=True),
            },
        )
        assert [e["code"] for e in retried.get("writeErrors", [])] == [11000], retried
        command(other, {"abortTransaction": 1, **txn_fields(b, 2), "$db": "admin"})
        assert command(other, {"count": "c", "query": {"k": 1}, "$db": "t"})["n"] == 1
    finally:
        shared.close()
        other.close()
