"""Collection operations as engine calls: what each PyMongo method does, flavour-neutral.

Each builder returns a ``Call`` (the command name MongoDB would receive, the namespace it
reads, plus a function the server runs under its mutex); the sync and async collections only
differ in how they run it. Query and update semantics are mongomock's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import bson
from bson import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import ReturnDocument
from pymongo.collation import validate_collation_or_none
from pymongo.common import validate_ok_for_replace, validate_ok_for_update
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure
from pymongo.operations import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)
from pymongo.write_concern import WriteConcern

from ._bson import Document, encoded, roundtrip
from ._engine import Engine, Op
from ._errors import not_in_transaction, operation_failure
from ._oplog import Entry
from ._options import write_concern_error
from ._storage import mongomock
from ._transactions import Ns

S = TypeVar("S")
E = TypeVar("E", bound=Exception)


@dataclass
class Call:
    """One command for the engine: its MongoDB name, body, and retry/event properties.

    ``read`` marks a read, which a transaction refuses unless its read preference is primary
    (and which, over the wire and outside a transaction, never waits for one).
    """

    cmd: str
    fn: Callable[[Op], Any]
    what: str
    kind: str = ""
    retryable: bool = True
    read: bool = False


def sort_list(sort: Any, direction: Any = None) -> list[tuple[str, Any]] | None:
    """Normalise PyMongo's sort spellings to a list of (key, direction)."""
    if sort is None:
        return None
    if isinstance(sort, str):
        return [(sort, 1 if direction is None else direction)]
    if isinstance(sort, Mapping):
        return list(sort.items())
    return [(item, 1) if isinstance(item, str) else (item[0], item[1]) for item in sort]


def _dup_key(ns: str, exc: DuplicateKeyError) -> DuplicateKeyError:
    msg = f"E11000 duplicate key error collection: {ns}"
    return DuplicateKeyError(msg, 11000, {"index": 0, "code": 11000, "errmsg": msg})


_BULK_COUNTS = ("nInserted", "nUpserted", "nMatched", "nModified", "nRemoved")


def _bulk_result() -> Document:
    """An empty bulk write result, in the server's shape."""
    result: Document = {"writeErrors": [], "writeConcernErrors": []}
    result.update(dict.fromkeys(_BULK_COUNTS, 0))
    result["upserted"] = []
    return result


def each_statement(
    statements: Iterable[S],
    ordered: bool,
    apply: Callable[[int, S], object],
    catch: type[E] | tuple[type[E], ...],
    error: Callable[[int, S, E], Document],
) -> list[Document]:
    """Run ``apply(index, statement)`` for each statement of a multi-statement write (a bulk
    write, an ``insert`` or ``delete`` command): a statement that fails with a ``catch`` error
    gets the entry ``error(index, statement, exc)`` in the write errors returned, and an
    ordered write stops at its first. An error marked to roll the operation back (a write
    conflict) fails the whole write instead."""
    errors: list[Document] = []
    for index, statement in enumerate(statements):
        try:
            apply(index, statement)
        except catch as exc:
            if getattr(exc, "_memory_rollback", False):
                raise  # the command fails (a write conflict: TransientTransactionError)
            errors.append(error(index, statement, exc))
            if ordered:
                break
    return errors


def errmsg(exc: OperationFailure) -> str:
    """The server's message of a statement's error."""
    return (exc.details or {}).get("errmsg") or str(exc)


def request_kind(req: Any) -> tuple[str, str]:
    """Validate a bulk write request (PyMongo's ``InsertOne`` ... ``DeleteMany``): its
    command and the kind of write (an ``_id`` is added to a document to insert, as PyMongo
    does)."""
    if isinstance(req, InsertOne):
        _ensure_id(req._doc)
        return "insert", "insert"
    if isinstance(req, ReplaceOne):
        validate_ok_for_replace(req._doc)
        return "update", "replace"
    if isinstance(req, (UpdateOne, UpdateMany)):
        validate_ok_for_update(req._doc)
        return "update", "pipeline" if isinstance(req._doc, list) else "update"
    if isinstance(req, (DeleteOne, DeleteMany)):
        return "delete", "delete"
    raise TypeError(f"{req!r} is not a valid request")


def request_op(req: Any) -> Any:
    """The operation a bulk write error names (``writeErrors[i]["op"]``), as PyMongo builds
    it from the request it sent (``bulk_shared``): the document of an insert, the statement
    of an update, a replacement or a delete."""
    if isinstance(req, InsertOne):
        return req._doc
    statement: dict[str, Any] = {"q": req._filter}
    if isinstance(req, (DeleteOne, DeleteMany)):
        statement["limit"] = 0 if isinstance(req, DeleteMany) else 1
    else:
        statement["u"] = req._doc
        if not isinstance(req, ReplaceOne):
            statement["multi"] = isinstance(req, UpdateMany)
        upsert = bool(req._upsert) if isinstance(req, UpdateOne) else req._upsert
        if upsert is not None:
            statement["upsert"] = upsert
    options = {
        "collation": validate_collation_or_none(getattr(req, "_collation", None)),
        "arrayFilters": getattr(req, "_array_filters", None),
        "hint": getattr(req, "_hint", None),
        "sort": getattr(req, "_sort", None),
    }
    statement.update((name, value) for name, value in options.items() if value is not None)
    return statement


def _ensure_id(document: Any) -> Any:
    """PyMongo's rule: give a mutable document an ``_id``; a ``RawBSONDocument`` is sent as
    it is (the server adds one; the result's ``inserted_id`` is then None)."""
    if isinstance(document, RawBSONDocument):
        return document.get("_id")
    if not isinstance(document, MutableMapping):
        raise TypeError(
            "document must be an instance of dict, bson.son.SON, "
            "bson.raw_bson.RawBSONDocument, or a type that inherits from "
            f"collections.MutableMapping, not {type(document).__name__}"
        )
    if "_id" not in document:
        document["_id"] = ObjectId()
    return document["_id"]


def _to_store(document: Any) -> tuple[dict[str, Any], bytes]:
    """The stored form of a document to insert, with its BSON (an ``_id`` added where the
    server would add one)."""
    doc, raw = encoded(document)
    if "_id" not in doc:
        doc = {"_id": ObjectId(), **doc}
        raw = bson.encode(doc)
    return doc, raw


class CollectionOps:
    """Builds the engine calls for one namespace."""

    def __init__(self, server: Engine, db: str, name: str) -> None:
        self.server = server
        self.db = db
        self.name = name
        self.ns = f"{db}.{name}"
        self.key: Ns = (db, name)

    @property
    def _mc(self) -> Any:
        return self.server.mock_collection(self.db, self.name)

    def _what(self, method: str) -> str:
        return f"{method} on {self.ns}"

    def _call(
        self, cmd: str, fn: Callable[[Op], Any], method: str, kind: str = "", **kw: Any
    ) -> Call:
        return Call(cmd, fn, self._what(method), kind, **kw)

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        """Give mongomock's duplicate-key errors the server's message."""
        try:
            yield
        except DuplicateKeyError as exc:
            if isinstance(exc, BulkWriteError):
                raise
            raise _dup_key(self.ns, exc) from None

    # -- writes ---------------------------------------------------------------------------

    def insert_one(self, document: Any) -> Call:
        doc_id = _ensure_id(document)
        stored = [_to_store(document)]

        def fn(_op: Op) -> InsertOneResult:
            with self._translate():
                self._mc.insert_encoded(stored, many=False, ordered=True)
            return InsertOneResult(doc_id, True)

        return self._call("insert", fn, "insert_one", "insert")

    def insert_many(self, documents: Any, ordered: bool = True) -> Call:
        if not isinstance(documents, Sequence) or isinstance(documents, Mapping) or not documents:
            raise TypeError("documents must be a non-empty list")
        ids = [_ensure_id(d) for d in documents]
        stored = [_to_store(d) for d in documents]

        def fn(_op: Op) -> InsertManyResult:
            with self._translate():
                self._mc.insert_encoded(stored, many=True, ordered=ordered)
            return InsertManyResult(ids, True)

        return self._call("insert", fn, "insert_many", "insert")

    @staticmethod
    def _check_upsert(filter: Any, upsert: bool) -> None:
        if upsert and _mentions(filter, "$expr"):
            raise operation_failure(
                224,
                "QueryFeatureNotAllowed",
                "$expr is not allowed in the query predicate for an upsert",
            )

    def _by_sort(self, filter: Any, sort: Any) -> Any:
        if sort is None:
            return filter
        doc = self._mc.find_one(filter, {"_id": 1}, sort=sort_list(sort))
        return {"_id": doc["_id"]} if doc is not None else filter

    def update(
        self,
        filter: Any,
        update: Any,
        *,
        multi: bool,
        upsert: bool = False,
        array_filters: Any = None,
        sort: Any = None,
    ) -> Call:
        validate_ok_for_update(update)
        method = "update_many" if multi else "update_one"

        def fn(_op: Op) -> UpdateResult:
            self._check_upsert(filter, upsert)
            flt = self._by_sort(filter, sort) if not multi else filter
            kwargs: dict[str, Any] = {"upsert": upsert}
            if array_filters:
                kwargs["array_filters"] = array_filters
            call = self._mc.update_many if multi else self._mc.update_one
            with self._translate():
                res = call(flt, update, **kwargs)
            return UpdateResult(dict(res.raw_result), True)

        kind = "pipeline" if isinstance(update, list) else "update"
        return self._call("update", fn, method, kind, retryable=not multi)

    def replace_one(
        self, filter: Any, replacement: Any, upsert: bool = False, sort: Any = None
    ) -> Call:
        validate_ok_for_replace(replacement)
        stored = roundtrip(replacement)

        def fn(_op: Op) -> UpdateResult:
            self._check_upsert(filter, upsert)
            flt = self._by_sort(filter, sort)
            with self._translate():
                res = self._mc.replace_one(flt, stored, upsert=upsert)
            return UpdateResult(dict(res.raw_result), True)

        return self._call("update", fn, "replace_one", "replace")

    def delete(self, filter: Any, *, multi: bool) -> Call:
        def fn(_op: Op) -> DeleteResult:
            res = (self._mc.delete_many if multi else self._mc.delete_one)(filter)
            return DeleteResult(dict(res.raw_result), True)

        method = "delete_many" if multi else "delete_one"
        return self._call("delete", fn, method, "delete", retryable=not multi)

    def find_one_and(
        self,
        method: str,
        filter: Any,
        update: Any = None,
        *,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        array_filters: Any = None,
    ) -> Call:
        if method == "update":
            validate_ok_for_update(update)
        elif method == "replace":
            validate_ok_for_replace(update)
            update = roundtrip(update)
            # PyMongo's check skips a RawBSONDocument; the decoded replacement gets it here.
            mongomock.collection.validate_ok_for_replace(update)
        if array_filters:
            raise NotImplementedError("array_filters are not supported by mongomock")

        after = ReturnDocument.AFTER if return_document else ReturnDocument.BEFORE

        def fn(_op: Op) -> Any:
            mc = self._mc
            order = sort_list(sort)
            if method == "delete":
                return mc.find_one_and_delete(filter, projection=projection, sort=order)
            self._check_upsert(filter, upsert)
            # mongomock's find_one_and_update/_replace check the filter, then the update or
            # replacement again (validated above), then run this.
            mongomock.collection.validate_is_mapping("filter", filter)
            with self._translate():
                return mc._find_and_modify(filter, projection, update, upsert, order, after)

        kind = "replace" if method == "replace" else "update"
        if isinstance(update, list):
            kind = "pipeline"
        return self._call("findAndModify", fn, f"find_one_and_{method}", kind)

    def bulk_write(self, requests: Sequence[Any], ordered: bool = True) -> list[Call]:
        """One call per run of same-kind requests, like the driver's batches."""
        if not isinstance(requests, Sequence) or not requests:
            raise TypeError("requests must be a non-empty list")
        runs: list[tuple[str, str, list[tuple[int, Any]]]] = []
        for i, req in enumerate(requests):
            cmd, kind = request_kind(req)
            if runs and runs[-1][1] == kind:
                runs[-1][2].append((i, req))
            else:
                runs.append((cmd, kind, [(i, req)]))
        return [self._bulk_run(cmd, kind, items, ordered) for cmd, kind, items in runs]

    def apply(self, req: Any) -> Document:
        """Run one write request of a bulk write (validated by ``request_kind``); its reply
        as a server's statement reply: ``n``, ``nModified``, ``upserted`` (an ``_id``)."""
        mc = self._mc
        if isinstance(req, InsertOne):
            with self._translate():
                mc.insert_one(roundtrip(req._doc))
            return {"n": 1}
        if isinstance(req, (DeleteOne, DeleteMany)):
            many = isinstance(req, DeleteMany)
            return {"n": (mc.delete_many if many else mc.delete_one)(req._filter).deleted_count}
        upsert = bool(req._upsert)
        self._check_upsert(req._filter, upsert)
        with self._translate():
            if isinstance(req, ReplaceOne):
                raw = mc.replace_one(req._filter, roundtrip(req._doc), upsert=upsert).raw_result
            else:  # mongomock's loop, no result object
                many = isinstance(req, UpdateMany)
                raw = mc._update(req._filter, req._doc, upsert, multi=many)
        upserted = raw.get("upserted")
        if upserted is not None:
            return {"n": 1, "nModified": 0, "upserted": upserted}
        return {"n": raw.get("n", 0), "nModified": raw.get("nModified", 0)}

    def _bulk_run(self, cmd: str, kind: str, items: list[tuple[int, Any]], ordered: bool) -> Call:
        def fn(op: Op) -> Document:
            result = _bulk_result()

            def run(_position: int, item: tuple[int, Any]) -> None:
                index, req = item
                reply = self.apply(req)
                self.server._statement_done(op)  # each request its own events
                if isinstance(req, InsertOne):
                    result["nInserted"] += 1
                elif isinstance(req, (DeleteOne, DeleteMany)):
                    result["nRemoved"] += reply["n"]
                elif "upserted" in reply:
                    result["nUpserted"] += 1
                    result["upserted"].append({"index": index, "_id": reply["upserted"]})
                else:
                    result["nMatched"] += reply["n"]
                    result["nModified"] += reply["nModified"]

            def error(_position: int, item: tuple[int, Any], exc: OperationFailure) -> Document:
                index, req = item
                sent = request_op(req)  # not ``op``: that is the engine's operation
                return {"index": index, "code": exc.code, "errmsg": errmsg(exc), "op": sent}

            result["writeErrors"] = each_statement(items, ordered, run, OperationFailure, error)
            if result["writeErrors"]:
                op.failed = True
            return result

        return self._call(cmd, fn, "bulk_write", kind, retryable=False)

    @staticmethod
    def merge_bulk(results: list[Document]) -> Document:
        if len(results) == 1:
            return results[0]
        total = _bulk_result()
        for r in results:
            for k in _BULK_COUNTS:
                total[k] += r[k]
            total["writeErrors"].extend(r["writeErrors"])
            total["upserted"].extend(r["upserted"])
        return total

    @staticmethod
    def bulk_result(total: Document, wc: WriteConcern | None = None) -> BulkWriteResult:
        """The driver's answer to a bulk write: its result, or ``BulkWriteError`` with the
        write errors and the write concern's (``wc``: None inside a transaction)."""
        if total["writeErrors"]:
            raise BulkWriteError(total)
        error = write_concern_error(wc)
        if error is not None:
            total["writeConcernErrors"].append(error)
            raise BulkWriteError(total)
        return BulkWriteResult(total, True)

    def drop(self) -> Call:
        def fn(op: Op) -> None:
            if op.txn is not None:
                raise not_in_transaction("drop")
            store = self.server.store_for(self.db, self.name)
            if not store.is_created:
                return
            check_ddl(self.server, op, self.key)
            entry = Entry("drop", self.db, self.name, uuid=store.uuid)
            self._mc.drop()
            op.ddl.append(entry)

        return self._call("drop", fn, "drop", retryable=False)

    # -- reads ----------------------------------------------------------------------------

    def find(
        self,
        filter: Any,
        projection: Any,
        sort: list[tuple[str, Any]] | None,
        skip: int,
        limit: int,
    ) -> Call:
        def fn(_op: Op) -> list[Document]:
            order = mongomock.helpers.create_index_list(sort) if sort else None
            return self._mc.find_list(filter, projection, order, skip, limit)  # type: ignore[no-any-return]

        return self._call("find", fn, "find", read=True)

    def aggregate(self, pipeline: Any, what: str = "aggregate") -> Call:
        stages = list(pipeline)

        def fn(_op: Op) -> list[Document]:
            return list(self._mc.aggregate(stages))

        return Call("aggregate", fn, self._what(what), "insert", read=True)

    def count_documents(self, filter: Any, **kwargs: Any) -> Call:
        def fn(_op: Op) -> int:
            return int(self._mc.count_documents(filter, **kwargs))

        return self._call("aggregate", fn, "count_documents", read=True)

    def estimated_document_count(self) -> Call:
        def fn(op: Op) -> int:
            if op.txn is not None:
                raise not_in_transaction("count")
            return int(self._mc.estimated_document_count())

        return self._call("count", fn, "estimated_document_count", read=True)

    def distinct(self, key: str, filter: Any = None) -> Call:
        def fn(_op: Op) -> list[Any]:
            return list(self._mc.distinct(key, filter))

        return self._call("distinct", fn, "distinct", read=True)

    # -- indexes --------------------------------------------------------------------------

    def create_indexes(self, indexes: list[tuple[Any, Document]], method: str) -> Call:
        """``createIndexes`` of ``(keys, options)`` pairs: the names, in order. Inside a
        transaction only on a collection it created (or creates now), or for indexes that
        exist already, as on a server."""

        def fn(op: Op) -> list[str]:
            store = self.server.store_for(self.db, self.name)
            before = dict(store.indexes)
            if store.is_created:
                self.server.transactions.check_namespace(op.txn, self.key, op.ctx)
                if op.txn is not None and self.key not in op.txn.created:
                    helpers = mongomock.helpers
                    for keys, options in indexes:
                        name = options.get("name") or helpers.gen_index_name(
                            helpers.create_index_list(keys)
                        )
                        if name != "_id_" and name not in before:
                            raise operation_failure(
                                263,
                                "OperationNotSupportedInTransaction",
                                f"Cannot create new indexes on existing collection {self.ns} "
                                "in a multi-document transaction.",
                            )
            names = [str(self._mc.create_index(keys, **options)) for keys, options in indexes]
            built = [name for name in names if name not in before]
            if built:
                specs = [_index_spec(name, store.indexes[name]) for name in built]
                op.ddl.append(self._indexes_event("createIndexes", store.uuid, specs))
            return names

        return self._call("createIndexes", fn, method, retryable=False)

    def list_indexes(self, method: str = "list_indexes") -> Call:
        def fn(op: Op) -> list[Document]:
            if op.txn is not None:
                raise not_in_transaction("listIndexes")
            if not collection_visible(self.server, self.key):
                return []
            return [dict(ix) for ix in self._mc.list_indexes()]

        return self._call("listIndexes", fn, method, read=True)

    def drop_index(self, index_or_name: Any) -> Call:
        def fn(op: Op) -> None:
            if op.txn is not None:
                raise not_in_transaction("dropIndexes")
            store = self.server.store_for(self.db, self.name)
            before = dict(store.indexes)
            try:
                self._mc.drop_index(index_or_name)
            except OperationFailure as exc:
                raise operation_failure(27, "IndexNotFound", str(exc)) from None
            gone = [_index_spec(name, spec) for name, spec in before.items()]
            gone = [spec for spec in gone if spec["name"] not in store.indexes]
            op.ddl.append(self._indexes_event("dropIndexes", store.uuid, gone))

        return self._call("dropIndexes", fn, "drop_index", retryable=False)

    def _indexes_event(self, op_type: str, uuid: Any, specs: list[Document]) -> Entry:
        """The ``createIndexes`` or ``dropIndexes`` event of ``specs``."""
        return Entry(op_type, self.db, self.name, uuid=uuid, description={"indexes": specs})


def list_collection_names(server: Engine, db: str) -> Call:
    def fn(op: Op) -> list[str]:
        if op.txn is not None:
            raise not_in_transaction("listCollections")
        names = server._store[db].list_created_collection_names()
        return [name for name in names if collection_visible(server, (db, name))]

    return Call("listCollections", fn, f"list_collection_names on {db}", read=True)


def collection_visible(server: Engine, ns: Ns) -> bool:
    """Whether collection ``ns`` exists for an operation outside a transaction (a
    collection an open transaction created does not, until it commits)."""
    return server.store_for(*ns).is_created and ns not in server.transactions.created


def check_ddl(server: Engine, op: Op, ns: Ns) -> None:
    """A DDL command on ``ns`` waits for the open transactions that wrote to it (or fails
    with WriteConflict when one of them is the caller's own)."""
    server.transactions.check_ddl(op.txn, ns, op.ctx)


def _index_spec(name: str, spec: Document) -> Document:
    """An index as ``listIndexes`` and change events describe it."""
    out: Document = {"v": 2, "key": dict(spec.get("key") or {}), "name": name}
    for option, value in spec.items():
        if option not in ("key", "v", "name", "ns"):
            out[option] = value
    return out


def _mentions(value: Any, key: str) -> bool:
    """Whether ``key`` appears as a field name anywhere in a query document."""
    if type(value) is dict or isinstance(value, Mapping):
        for k, v in value.items():
            if k == key or (type(v) in (dict, list, tuple) and _mentions(v, key)):
                return True
        return False
    if type(value) in (list, tuple):
        return any(_mentions(v, key) for v in value)
    return False
