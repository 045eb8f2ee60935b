"""Collections themselves: create (with options), collMod, renameCollection, dropDatabase.

Engine calls, like ``_ops``: the clients run them (``create_collection``, ``rename``,
``drop_database``, ``command("collMod", ...)``) and so can a command dispatcher. Each answers
as the server does (``{"ok": 1.0}`` or its errors) and leaves its change event (``create``,
``modify``, ``rename``, ``drop``, ``dropDatabase``) to the commit. ``create`` is the one of
them a transaction may run (MongoDB 4.4+): the collection appears to others only when the
transaction commits, and an abort drops it again.

Of the collection options, ``changeStreamPreAndPostImages`` is emulated; others are refused
with an error naming them rather than accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._bson import Document
from ._engine import Engine, Op
from ._errors import not_in_transaction, operation_failure
from ._oplog import Entry
from ._ops import Call, CollectionOps, check_ddl, collection_visible
from ._transactions import Ns

__all__ = [
    "coll_mod",
    "create_collection",
    "drop_database",
    "rename_collection",
]

# Collection options the engine keeps and acts on. The others a server knows are refused
# by name (BadValue) rather than accepted and silently not enforced; unknown ones are
# refused as a server refuses them (40415).
_EMULATED = frozenset({"changeStreamPreAndPostImages"})
_KNOWN = {
    "create": frozenset(
        {
            "capped",
            "size",
            "max",
            "validator",
            "validationLevel",
            "validationAction",
            "viewOn",
            "pipeline",
            "timeseries",
            "clusteredIndex",
            "collation",
            "expireAfterSeconds",
            "storageEngine",
            "indexOptionDefaults",
            "encryptedFields",
            "changeStreamPreAndPostImages",
            "idIndex",
            "autoIndexId",
        }
    ),
    "collMod": frozenset(
        {
            "changeStreamPreAndPostImages",
            "validator",
            "validationLevel",
            "validationAction",
            "index",
            "expireAfterSeconds",
            "viewOn",
            "pipeline",
            "timeseries",
            "cappedSize",
            "cappedMax",
            "dryRun",
        }
    ),
}
_IGNORED = frozenset({"writeConcern", "comment", "lsid", "$db", "apiVersion", "idIndex"})


def _validate_options(command: str, options: Mapping[str, Any]) -> Document:
    """The collection options of a ``create`` or ``collMod``, checked (the clients' and the
    command dispatcher's one check)."""
    out: Document = {}
    for name, value in options.items():
        if name in _IGNORED:
            continue
        if name not in _KNOWN[command]:
            raise operation_failure(
                40415, "Location40415", f"BSON field '{command}.{name}' is an unknown field."
            )
        if name not in _EMULATED:
            raise operation_failure(
                2,
                "BadValue",
                f"memory engine: the {command} option {name!r} is not emulated "
                f"(emulated: {', '.join(sorted(_EMULATED))})",
            )
        if (
            not isinstance(value, Mapping)
            or set(value) != {"enabled"}
            or not isinstance(value["enabled"], bool)
        ):
            raise operation_failure(
                2,
                "BadValue",
                f"{command}: changeStreamPreAndPostImages must be {{enabled: <bool>}}, "
                f"not {value!r}",
            )
        out[name] = {"enabled": value["enabled"]}
    return out


def create_collection(server: Engine, db: str, name: str, options: Mapping[str, Any]) -> Call:
    """The ``create`` command: a new collection with ``options``. An existing collection
    with the same options is left as it is (as MongoDB 7 answers); with other options, or
    inside a transaction, it is ``NamespaceExists`` (48)."""
    wanted = _validate_options("create", options)
    ns = (db, name)

    def fn(op: Op) -> Document:
        store = server.store_for(db, name)
        server.transactions.check_namespace(op.txn, ns, op.ctx)
        if store.is_created:
            if op.txn is None and store.options == wanted:
                return {"ok": 1.0}
            raise operation_failure(
                48, "NamespaceExists", f"Collection {db}.{name} already exists."
            )
        store.create()
        store.options = dict(wanted)
        created = op.ddl[-1]  # the create event: it carries the options
        assert created.description is not None
        created.description.update(wanted)
        return {"ok": 1.0}

    return Call("create", fn, f"create_collection on {db}.{name}", retryable=False)


def coll_mod(server: Engine, db: str, name: str, options: Mapping[str, Any]) -> Call:
    """The ``collMod`` command: change ``changeStreamPreAndPostImages`` of a collection."""
    changes = _validate_options("collMod", options)
    ns = (db, name)

    def fn(op: Op) -> Document:
        if op.txn is not None:
            raise not_in_transaction("collMod")
        store = server.store_for(db, name)
        if not collection_visible(server, ns):
            raise operation_failure(26, "NamespaceNotFound", f"ns does not exist: {db}.{name}")
        check_ddl(server, op, ns)
        before: Document = {"uuid": store.uuid, **store.options}
        store.options = {**store.options, **changes}
        op.ddl.append(
            Entry(
                "modify",
                db,
                name,
                uuid=store.uuid,
                description=dict(changes),
                state_before={"collectionOptions": before},
            )
        )
        return {"ok": 1.0}

    return Call("collMod", fn, f"collMod on {db}.{name}", retryable=False)


def rename_collection(
    server: Engine, db: str, name: str, to_db: str, to_name: str, *, drop_target: bool
) -> Call:
    """The ``renameCollection`` command: documents, indexes, options and UUID move to the
    new name; streams on either name see ``rename`` and then ``invalidate``."""
    source: Ns = (db, name)
    target: Ns = (to_db, to_name)

    def fn(op: Op) -> Document:
        if op.txn is not None:
            raise not_in_transaction("renameCollection")
        if not collection_visible(server, source):
            raise operation_failure(
                26, "NamespaceNotFound", f"Source collection {db}.{name} does not exist"
            )
        if source == target:
            raise operation_failure(20, "IllegalOperation", "Can't rename a collection to itself")
        check_ddl(server, op, source)
        check_ddl(server, op, target)
        src = server.store_for(db, name)
        dst = server.store_for(to_db, to_name)
        description: Document = {"to": {"db": to_db, "coll": to_name}}
        if dst.is_created:
            if not drop_target:
                raise operation_failure(48, "NamespaceExists", "target namespace exists")
            description["dropTarget"] = dst.uuid
            dst.drop()
        src.move_to(dst)
        server._mock_collections.pop(source, None)
        server._mock_collections.pop(target, None)
        op.ddl.append(Entry("rename", db, name, uuid=dst.uuid, to=target, description=description))
        return {"ok": 1.0}

    what = f"rename of {db}.{name}"
    return Call("renameCollection", fn, what, retryable=False)


def drop_database(server: Engine, db: str) -> Call:
    """The ``dropDatabase`` command: a ``drop`` event per collection, then ``dropDatabase``
    (which ends the database's streams)."""

    def fn(op: Op) -> Document:
        if op.txn is not None:
            raise not_in_transaction("dropDatabase")
        names = list(server._store[db].list_created_collection_names())
        for name in names:
            check_ddl(server, op, (db, name))  # waits for transactions writing to it
        for name in names:
            CollectionOps(server, db, name).drop().fn(op)
        op.ddl.append(Entry("dropDatabase", db, None))
        return {"ok": 1.0, "dropped": db}

    return Call("dropDatabase", fn, f"drop_database on {db}", retryable=False)
