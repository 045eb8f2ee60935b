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
from collections.abc import Iterator
from typing import Any

import bson

from mongoledger.memory import _catalog
from mongoledger.memory._bson import Document
from mongoledger.memory._changestream import StreamCore
from mongoledger.memory._engine import Engine, Op
from mongoledger.memory._ops import CollectionOps, collection_visible
from mongoledger.memory._session import SessionState, TxnState, current_ctx

# -- commands and fail points -------------------------------------------------------------


def count_command(server: Engine, name: str, *, fail_point: bool, in_txn: bool = False) -> None:
    """Count a command run outside an engine call; check the fail point unless told not to."""
    with server._mutex:
        server.command_counts[name] += 1
        if fail_point:
            server._check_fail_point(name, in_txn)


# -- sessions and transactions ------------------------------------------------------------

NONE = TxnState.NONE
STARTING = TxnState.STARTING
IN_PROGRESS = TxnState.IN_PROGRESS
COMMITTED = TxnState.COMMITTED
COMMITTED_EMPTY = TxnState.COMMITTED_EMPTY
ABORTED = TxnState.ABORTED


def new_session(server: Engine, lsid: bytes) -> SessionState:
    """The engine's session for a driver's logical session id."""
    state = SessionState(server, None)  # no client: transaction options are the server's
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


def start_transaction(server: Engine, state: SessionState, number: int) -> None:
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


def end_transaction(server: Engine, state: SessionState) -> None:
    """Abort what the session left open (a new txnNumber or the lifetime limit ends it)."""
    txn = state.txn
    if state.in_transaction or (txn is not None and not txn.aborted):
        if txn is not None and not txn.aborted:
            server._abort(txn, count=False)
        state.txn = None
        state.state = ABORTED
        server._session_closed(state)


def commit(server: Engine, state: SessionState) -> None:
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


def abort(server: Engine, state: SessionState) -> None:
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


def run_outside_transactions(server: Engine, cmd: str, fn: Any, kind: str) -> Any:
    """Run a read of no transaction at once: it sees committed data (snapshot isolation: a
    read never waits for a transaction, on a server neither)."""
    return server._execute(cmd, None, None, fn, kind, current_ctx())


# -- what an operation wrote --------------------------------------------------------------


def in_transaction(op: Op) -> bool:
    return op.txn is not None


def written(op: Op, db: str, coll: str) -> list[tuple[Any, Document | None]]:
    """The documents the operation wrote in ``db.coll``: (store key, pre-image or None)."""
    return [(key, pre) for (d, c, key), pre in op.log.items() if d == db and c == coll]


# -- the catalog --------------------------------------------------------------------------


def _store(server: Engine, db: str, coll: str) -> Any:
    return server._store[db][coll]


def collection_exists(server: Engine, db: str, coll: str) -> bool:
    """Whether ``db.coll`` exists outside any transaction (one an open transaction created
    does not, until it commits)."""
    return collection_visible(server, (db, coll))


def collection_names(server: Engine, db: str) -> list[str]:
    names = server._store[db].list_created_collection_names()
    return [name for name in names if collection_visible(server, (db, name))]


def database_names(server: Engine) -> list[str]:
    return list(server._mock.list_database_names())


def stored_document(server: Engine, db: str, coll: str, key: Any) -> Document | None:
    doc: Document | None = _store(server, db, coll)._documents.get(key)
    return doc


def documents(server: Engine, db: str, coll: str) -> Iterator[Document]:
    return iter(list(_store(server, db, coll)._documents.values()))


def document_count(server: Engine, db: str, coll: str) -> int:
    return len(_store(server, db, coll)._documents)


def index_specs(server: Engine, db: str, coll: str) -> dict[str, Document]:
    """The collection's indexes other than ``_id_``, by name (key as a list of pairs)."""
    if not collection_exists(server, db, coll):
        return {}
    return dict(_store(server, db, coll).indexes)


def list_indexes(server: Engine, db: str, coll: str) -> list[Document]:
    return [dict(ix) for ix in server.mock_collection(db, coll).list_indexes()]


# The catalog's commands are the engine's (``_catalog``, ``_ops``): run inside the running
# operation, they leave their change events and keep a transaction's DDL to its commit.


def create_collection(server: Engine, op: Op, db: str, coll: str, options: Document) -> Document:
    reply: Document = _catalog.create_collection(server, db, coll, options).fn(op)
    return reply


def coll_mod(server: Engine, op: Op, db: str, coll: str, changes: Document) -> Document:
    reply: Document = _catalog.coll_mod(server, db, coll, changes).fn(op)
    return reply


def rename_collection(
    server: Engine, op: Op, source: tuple[str, str], target: tuple[str, str], drop: bool
) -> Document:
    call = _catalog.rename_collection(server, *source, *target, drop_target=drop)
    reply: Document = call.fn(op)
    return reply


def drop_collection(server: Engine, op: Op, db: str, coll: str) -> None:
    """Drop ``db.coll`` inside the running operation (its drop event included)."""
    CollectionOps(server, db, coll).drop().fn(op)


def drop_database(server: Engine, op: Op, db: str) -> None:
    _catalog.drop_database(server, db).fn(op)


def create_indexes(
    server: Engine, op: Op, db: str, coll: str, indexes: list[tuple[Any, Document]]
) -> list[str]:
    names: list[str] = CollectionOps(server, db, coll).create_indexes(indexes, "x").fn(op)
    return names


def drop_index(server: Engine, op: Op, db: str, coll: str, name: str) -> None:
    CollectionOps(server, db, coll).drop_index(name).fn(op)


def collection_options(server: Engine, db: str, coll: str) -> Document:
    return dict(_store(server, db, coll).options)


def collection_uuid(server: Engine, db: str, coll: str) -> bson.Binary:
    uuid_: bson.Binary | None = _store(server, db, coll).uuid
    assert uuid_ is not None, "a collection that exists has a UUID"
    return uuid_


# -- change streams -----------------------------------------------------------------------


def poll_events(server: Engine, core: StreamCore, limit: int) -> list[Document]:
    """Up to ``limit`` events the stream has now (none waited for)."""
    events: list[Document] = []
    with server._mutex:
        while len(events) < limit:
            event = core.poll()
            if event is None:
                break
            events.append(event)
    return events


def locked(server: Engine) -> Any:
    """The engine's mutex (a context manager): reads of the catalog outside an engine call."""
    return server._mutex
