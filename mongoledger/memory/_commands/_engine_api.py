"""What the command dispatcher asks of the engine beyond the clients' surface, in one place.

The clients drive the engine through ``run_sync``/``run_async`` with the calls ``_ops`` builds;
so does the dispatcher. It also needs what only a server does: move a session's transaction
when the wire says so (start, commit and abort arrive as separate commands), count a command
and check the fail point outside an engine call, read and change the catalog (collections,
their options and indexes), and tell what an operation wrote. Every such touch of the
engine's internals is a function here, so a change of those internals is adapted in this one
module.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Iterator
from typing import Any

import bson

from mongoledger.memory._changestream import StreamCore
from mongoledger.memory._engine import Document, MemoryServer, SessionState, _Op, _TxnState

# -- commands and fail points -------------------------------------------------------------


def count_command(
    server: MemoryServer, name: str, *, fail_point: bool, in_txn: bool = False
) -> None:
    """Count a command run outside an engine call; check the fail point unless told not to."""
    with server._mutex:
        server.command_counts[name] += 1
        if fail_point:
            server._check_fail_point(name, in_txn)


# -- sessions and transactions ------------------------------------------------------------

NONE = _TxnState.NONE
STARTING = _TxnState.STARTING
IN_PROGRESS = _TxnState.IN_PROGRESS
COMMITTED = _TxnState.COMMITTED
COMMITTED_EMPTY = _TxnState.COMMITTED_EMPTY
ABORTED = _TxnState.ABORTED


def new_session(server: MemoryServer, lsid: bytes) -> SessionState:
    """The engine's session for a driver's logical session id."""
    state = SessionState(server)
    state.session_id = {"id": bson.Binary(lsid, 4)}
    return state


def session_key(state: SessionState) -> bytes:
    return bytes(state.session_id["id"])


def lsid_text(state: SessionState) -> str:
    raw = state.session_id.get("id")
    return str(uuid.UUID(bytes=bytes(raw))) if isinstance(raw, bytes) and len(raw) == 16 else "?"


def phase(state: SessionState) -> str:
    """Where the session's transaction is: one of the constants above."""
    return str(state.state)


def start_transaction(server: MemoryServer, state: SessionState, number: int) -> None:
    """Start transaction ``number`` (what the session left open is aborted first)."""
    end_transaction(server, state)
    state.txn = None
    state.txn_number = number - 1
    state.start_transaction()  # numbers it ``number``
    # The transaction belongs to the session, not to the connection (or task) its first
    # command came on: drivers do not pin a replica set's transactions to a connection, and
    # two sessions' transactions sharing a connection must not pass for one owner's (the
    # engine would let them interleave unchecked). Thread ident 0 is no real thread's.
    state.txn_ctx = (0, id(state))


def end_transaction(server: MemoryServer, state: SessionState) -> None:
    """Abort what the session left open (a new txnNumber or the lifetime limit ends it)."""
    txn = state.txn
    if state.in_transaction or (txn is not None and not txn.aborted):
        if txn is not None and not txn.aborted:
            server._abort(txn, count=False)
        state.txn = None
        state.state = ABORTED
        server._session_closed(state)


def commit(server: MemoryServer, state: SessionState) -> None:
    """``commitTransaction``: once, as the server does it (the driver retries, not this)."""
    if state.state in (STARTING, COMMITTED_EMPTY):
        count_command(server, "commitTransaction", fail_point=True)
        state.state = COMMITTED_EMPTY
        server._session_closed(state)
        return
    try:
        server._commit(state)  # a commit retried after success finds no transaction: ok
    except Exception as exc:
        if getattr(exc, "code", None) == 251:
            state.state = ABORTED
            server._session_closed(state)
        raise
    state.state = COMMITTED
    server._session_closed(state)


def abort(server: MemoryServer, state: SessionState) -> None:
    """``abortTransaction``: restore what the transaction wrote."""
    if state.state == STARTING:
        count_command(server, "abortTransaction", fail_point=True)
    else:
        server._abort_session(state)
    state.state = ABORTED
    server._session_closed(state)


def transaction_touches(state: SessionState, db: str, coll: str | None) -> bool:
    """Whether the session's open transaction wrote in ``db`` (``coll``; None: any)."""
    txn = state.txn
    if txn is None or txn.aborted:
        return False
    return any(k[0] == db and (coll is None or k[1] == coll) for k in txn.log)


# -- running a command outside any transaction ---------------------------------------------


def run_outside_transactions(server: MemoryServer, cmd: str, fn: Any, kind: str) -> Any:
    """Run a read of no transaction without waiting for open transactions: it sees committed
    data, as the engine runs a thread's own reads beside its transaction (decision 13). A
    server never makes a read wait for a transaction; the engine's lock would (until
    snapshot isolation replaces it, when this becomes ``run_async``). Writes still wait."""
    return server._execute(cmd, None, None, fn, kind)


# -- what an operation wrote --------------------------------------------------------------


def in_transaction(op: _Op) -> bool:
    return op.txn is not None


def written(op: _Op, db: str, coll: str) -> list[tuple[Any, Document | None]]:
    """The documents the operation wrote in ``db.coll``: (store key, pre-image or None)."""
    return [(key, pre) for (d, c, key), pre in op.log.items() if d == db and c == coll]


def other_transaction_writes(op: _Op, db: str, coll: str) -> bool:
    """Whether another open transaction wrote in ``db.coll``."""
    return any(k[0] == db and k[1] == coll for t in op.others for k in t.log)


# -- the catalog --------------------------------------------------------------------------


def _store(server: MemoryServer, db: str, coll: str) -> Any:
    return server._store[db][coll]


def collection_exists(server: MemoryServer, db: str, coll: str) -> bool:
    store = server._store[db]
    return coll in store._collections and bool(store[coll].is_created)


def collection_names(server: MemoryServer, db: str) -> list[str]:
    return list(server._mock[db].list_collection_names())


def database_names(server: MemoryServer) -> list[str]:
    return list(server._mock.list_database_names())


def stored_document(server: MemoryServer, db: str, coll: str, key: Any) -> Document | None:
    doc: Document | None = _store(server, db, coll)._documents.get(key)
    return doc


def documents(server: MemoryServer, db: str, coll: str) -> Iterator[Document]:
    return iter(list(_store(server, db, coll)._documents.values()))


def document_count(server: MemoryServer, db: str, coll: str) -> int:
    return len(_store(server, db, coll)._documents)


def index_specs(server: MemoryServer, db: str, coll: str) -> dict[str, Document]:
    """The collection's indexes other than ``_id_``, by name (key as a list of pairs)."""
    if not collection_exists(server, db, coll):
        return {}
    return dict(_store(server, db, coll).indexes)


def create_index(server: MemoryServer, db: str, coll: str, keys: Any, options: Document) -> None:
    server.mock_collection(db, coll).create_index(keys, **options)


def drop_index(server: MemoryServer, db: str, coll: str, name: str) -> None:
    server.mock_collection(db, coll).drop_index(name)


def list_indexes(server: MemoryServer, db: str, coll: str) -> list[Document]:
    return [dict(ix) for ix in server.mock_collection(db, coll).list_indexes()]


def create_collection(server: MemoryServer, db: str, coll: str) -> None:
    _store(server, db, coll).create()


def drop_collection(server: MemoryServer, op: _Op, db: str, coll: str) -> None:
    """Drop ``db.coll`` inside the running operation (its drop event included)."""
    from mongoledger.memory._ops import CollectionOps

    CollectionOps(server, db, coll).drop().fn(op)
    set_collection_options(server, db, coll, {})


def drop_database(server: MemoryServer, op: _Op, db: str) -> None:
    for coll in collection_names(server, db):
        drop_collection(server, op, db, coll)
    server._mock.drop_database(db)


def rename_collection(server: MemoryServer, db: str, source: str, target: str) -> None:
    """Move ``db.source`` to ``db.target`` (documents, indexes, options); streams on the
    source are invalidated."""
    store = server._store[db]
    moved = store._collections.pop(source)
    moved.name = target
    store._collections[target] = moved
    server._mock_collections.pop((db, source), None)
    server._mock_collections.pop((db, target), None)
    server.publish_drop(db, source)


# Collection options (``create``/``collMod``) and UUIDs, kept beside the engine's stores.
_OPTIONS: weakref.WeakKeyDictionary[Any, Document] = weakref.WeakKeyDictionary()
_UUIDS: weakref.WeakKeyDictionary[Any, bson.Binary] = weakref.WeakKeyDictionary()


def collection_options(server: MemoryServer, db: str, coll: str) -> Document:
    return dict(_OPTIONS.get(_store(server, db, coll)) or {})


def set_collection_options(server: MemoryServer, db: str, coll: str, options: Document) -> None:
    _OPTIONS[_store(server, db, coll)] = dict(options)


def collection_uuid(server: MemoryServer, db: str, coll: str) -> bson.Binary:
    store = _store(server, db, coll)
    value = _UUIDS.get(store)
    if value is None:
        value = _UUIDS[store] = bson.Binary(uuid.uuid4().bytes, 4)
    return value


# -- change streams -----------------------------------------------------------------------


def poll_events(server: MemoryServer, core: StreamCore, limit: int) -> list[Document]:
    """Up to ``limit`` events the stream has now (none waited for)."""
    events: list[Document] = []
    with server._mutex:
        while len(events) < limit:
            event = core.poll()
            if event is None:
                break
            events.append(event)
    return events


def locked(server: MemoryServer) -> Any:
    """The engine's mutex (a context manager): reads of the catalog outside an engine call."""
    return server._mutex
