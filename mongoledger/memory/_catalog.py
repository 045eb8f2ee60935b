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
from ._engine import MemoryServer, Op
from ._errors import not_in_transaction, operation_failure
from ._index import IndexedDocuments
from ._oplog import Entry
from ._ops import Call, _check_ddl, _visible
from ._transactions import Ns

__all__ = [
    "catalog_command",
    "coll_mod",
    "create_collection",
    "drop_database",
    "rename_collection",
]

_OPTIONS = frozenset({"changeStreamPreAndPostImages"})
_IGNORED = frozenset({"writeConcern", "comment", "lsid", "$db", "apiVersion"})


def _validate_options(command: str, options: Mapping[str, Any]) -> Document:
    """The collection options of a ``create`` or ``collMod``, checked."""
    out: Document = {}
    for name, value in options.items():
        if name in _IGNORED:
            continue
        if name not in _OPTIONS:
            raise operation_failure(
                2,
                "BadValue",
                f"memory engine: the {command} option {name!r} is not emulated "
                f"(emulated: {', '.join(sorted(_OPTIONS))})",
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


def create_collection(server: MemoryServer, db: str, name: str, options: Mapping[str, Any]) -> Call:
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


def coll_mod(server: MemoryServer, db: str, name: str, options: Mapping[str, Any]) -> Call:
    """The ``collMod`` command: change ``changeStreamPreAndPostImages`` of a collection."""
    changes = _validate_options("collMod", options)
    ns = (db, name)

    def fn(op: Op) -> Document:
        if op.txn is not None:
            raise not_in_transaction("collMod")
        store = server.store_for(db, name)
        if not _visible(server, ns):
            raise operation_failure(26, "NamespaceNotFound", f"ns does not exist: {db}.{name}")
        _check_ddl(server, op, ns)
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
    server: MemoryServer, db: str, name: str, to_db: str, to_name: str, *, drop_target: bool
) -> Call:
    """The ``renameCollection`` command: documents, indexes, options and UUID move to the
    new name; streams on either name see ``rename`` and then ``invalidate``."""
    source: Ns = (db, name)
    target: Ns = (to_db, to_name)

    def fn(op: Op) -> Document:
        if op.txn is not None:
            raise not_in_transaction("renameCollection")
        if not _visible(server, source):
            raise operation_failure(
                26, "NamespaceNotFound", f"Source collection {db}.{name} does not exist"
            )
        if source == target:
            raise operation_failure(20, "IllegalOperation", "Can't rename a collection to itself")
        _check_ddl(server, op, source)
        _check_ddl(server, op, target)
        src = server.store_for(db, name)
        dst = server.store_for(to_db, to_name)
        description: Document = {"to": {"db": to_db, "coll": to_name}}
        if dst.is_created:
            if not drop_target:
                raise operation_failure(48, "NamespaceExists", "target namespace exists")
            description["dropTarget"] = dst.uuid
            dst.drop()
        dst._documents, src._documents = src._documents, IndexedDocuments()
        dst.indexes, src.indexes = src.indexes, {}
        dst._ttl_indexes, src._ttl_indexes = src._ttl_indexes, {}
        dst.options, src.options = src.options, {}
        dst.uuid, src.uuid = src.uuid, None
        dst._is_force_created, src._is_force_created = True, False
        server._mock_collections.pop(source, None)
        server._mock_collections.pop(target, None)
        op.ddl.append(Entry("rename", db, name, uuid=dst.uuid, to=target, description=description))
        return {"ok": 1.0}

    what = f"rename of {db}.{name}"
    return Call("renameCollection", fn, what, retryable=False)


def drop_database(server: MemoryServer, db: str) -> Call:
    """The ``dropDatabase`` command: a ``drop`` event per collection, then ``dropDatabase``
    (which ends the database's streams)."""

    def fn(op: Op) -> Document:
        if op.txn is not None:
            raise not_in_transaction("dropDatabase")
        names = list(server._store[db].list_created_collection_names())
        for name in names:
            _check_ddl(server, op, (db, name))  # waits for transactions writing to it
        for name in names:
            store = server.store_for(db, name)
            entry = Entry("drop", db, name, uuid=store.uuid)
            server.mock_collection(db, name).drop()
            op.ddl.append(entry)
        op.ddl.append(Entry("dropDatabase", db, None))
        return {"ok": 1.0, "dropped": db}

    return Call("dropDatabase", fn, f"drop_database on {db}", retryable=False)


def catalog_command(server: MemoryServer, db: str, command: Mapping[str, Any]) -> Call | None:
    """The engine call of a ``create``, ``collMod``, ``renameCollection`` or ``dropDatabase``
    command document run on database ``db`` (None: another command)."""
    name = next(iter(command), None)
    rest = {k: v for k, v in command.items() if k != name}
    if name == "create":
        return create_collection(server, db, _name(command, name), rest)
    if name == "collMod":
        return coll_mod(server, db, _name(command, name), rest)
    if name == "dropDatabase":
        return drop_database(server, db)
    if name != "renameCollection":
        return None
    if db != "admin":
        raise operation_failure(
            13, "Unauthorized", "renameCollection may only be run against the admin database."
        )
    source = _namespace(command[name], "renameCollection")
    target = _namespace(command.get("to"), "to")
    drop_target = bool(command.get("dropTarget", False))
    return rename_collection(server, *source, *target, drop_target=drop_target)


def _name(command: Mapping[str, Any], key: str) -> str:
    value = command[key]
    if not isinstance(value, str) or not value:
        raise operation_failure(
            73, "InvalidNamespace", f"collection name must be a non-empty string: {value!r}"
        )
    return value


def _namespace(value: Any, field: str) -> tuple[str, str]:
    if not isinstance(value, str) or "." not in value.strip("."):
        raise operation_failure(73, "InvalidNamespace", f"Invalid {field} namespace: {value!r}")
    db, coll = value.split(".", 1)
    return db, coll
