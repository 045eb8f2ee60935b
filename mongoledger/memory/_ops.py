"""Collection operations as engine calls: what each PyMongo method does, flavour-neutral.

Each builder returns a ``Call`` (the command name MongoDB would receive plus a function run
under the engine lock); the sync and async collections only differ in how they run it.
Query and update semantics are mongomock's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import ReturnDocument
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

from ._engine import (
    Document,
    MemoryServer,
    _Op,
    encoded,
    mongomock,
    operation_failure,
    roundtrip,
    write_conflict,
)


@dataclass
class Call:
    """One command for the engine: its MongoDB name, body, and retry/event properties."""

    cmd: str
    fn: Callable[[_Op], Any]
    what: str
    kind: str = ""
    retryable: bool = True


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

    def __init__(self, server: MemoryServer, db: str, name: str) -> None:
        self.server = server
        self.db = db
        self.name = name
        self.ns = f"{db}.{name}"

    @property
    def _mc(self) -> Any:
        return self.server.mock_collection(self.db, self.name)

    def _what(self, method: str) -> str:
        return f"{method} on {self.ns}"

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

        def fn(_op: _Op) -> InsertOneResult:
            with self._translate():
                self._mc.insert_encoded(stored, many=False, ordered=True)
            return InsertOneResult(doc_id, True)

        return Call("insert", fn, self._what("insert_one"), "insert")

    def insert_many(self, documents: Any, ordered: bool = True) -> Call:
        if not isinstance(documents, Sequence) or isinstance(documents, Mapping) or not documents:
            raise TypeError("documents must be a non-empty list")
        ids = [_ensure_id(d) for d in documents]
        stored = [_to_store(d) for d in documents]

        def fn(_op: _Op) -> InsertManyResult:
            with self._translate():
                self._mc.insert_encoded(stored, many=True, ordered=ordered)
            return InsertManyResult(ids, True)

        return Call("insert", fn, self._what("insert_many"), "insert")

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

        def fn(_op: _Op) -> UpdateResult:
            self._check_upsert(filter, upsert)
            flt = self._by_sort(filter, sort) if not multi else filter
            kwargs: dict[str, Any] = {"upsert": upsert}
            if array_filters:
                kwargs["array_filters"] = array_filters
            call = self._mc.update_many if multi else self._mc.update_one
            with self._translate():
                res = call(flt, update, **kwargs)
            return UpdateResult(dict(res.raw_result), True)

        return Call("update", fn, self._what(method), "update", retryable=not multi)

    def replace_one(
        self, filter: Any, replacement: Any, upsert: bool = False, sort: Any = None
    ) -> Call:
        validate_ok_for_replace(replacement)
        stored = roundtrip(replacement)

        def fn(_op: _Op) -> UpdateResult:
            self._check_upsert(filter, upsert)
            flt = self._by_sort(filter, sort)
            with self._translate():
                res = self._mc.replace_one(flt, stored, upsert=upsert)
            return UpdateResult(dict(res.raw_result), True)

        return Call("update", fn, self._what("replace_one"), "replace")

    def delete(self, filter: Any, *, multi: bool) -> Call:
        def fn(_op: _Op) -> DeleteResult:
            res = (self._mc.delete_many if multi else self._mc.delete_one)(filter)
            return DeleteResult(dict(res.raw_result), True)

        method = "delete_many" if multi else "delete_one"
        return Call("delete", fn, self._what(method), "delete", retryable=not multi)

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

        def fn(_op: _Op) -> Any:
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
        return Call("findAndModify", fn, self._what(f"find_one_and_{method}"), kind)

    def bulk_write(self, requests: Sequence[Any], ordered: bool = True) -> list[Call]:
        """One call per run of same-kind requests, like the driver's batches."""
        if not isinstance(requests, Sequence) or not requests:
            raise TypeError("requests must be a non-empty list")
        runs: list[tuple[str, str, list[tuple[int, Any]]]] = []
        for i, req in enumerate(requests):
            kind = "update"
            if isinstance(req, InsertOne):
                cmd = kind = "insert"
                _ensure_id(req._doc)
            elif isinstance(req, (UpdateOne, UpdateMany, ReplaceOne)):
                cmd = "update"
                if isinstance(req, ReplaceOne):
                    kind = "replace"
                    validate_ok_for_replace(req._doc)
                else:
                    validate_ok_for_update(req._doc)
            elif isinstance(req, (DeleteOne, DeleteMany)):
                cmd = kind = "delete"
            else:
                raise TypeError(f"{req!r} is not a valid request")
            if runs and runs[-1][1] == kind:
                runs[-1][2].append((i, req))
            else:
                runs.append((cmd, kind, [(i, req)]))
        return [self._bulk_run(cmd, kind, items, ordered) for cmd, kind, items in runs]

    def _bulk_run(self, cmd: str, kind: str, items: list[tuple[int, Any]], ordered: bool) -> Call:
        def fn(op: _Op) -> Document:
            result = _bulk_result()
            mc = self._mc
            for index, req in items:
                try:
                    if isinstance(req, InsertOne):
                        with self._translate():
                            mc.insert_one(roundtrip(req._doc))
                        result["nInserted"] += 1
                    elif isinstance(req, (DeleteOne, DeleteMany)):
                        many = isinstance(req, DeleteMany)
                        res = (mc.delete_many if many else mc.delete_one)(req._filter)
                        result["nRemoved"] += res.deleted_count
                    else:
                        upsert = bool(req._upsert)
                        self._check_upsert(req._filter, upsert)
                        with self._translate():
                            if isinstance(req, ReplaceOne):
                                raw = mc.replace_one(
                                    req._filter, roundtrip(req._doc), upsert=upsert
                                ).raw_result
                            else:  # validated in bulk_write; mongomock's loop, no result object
                                many = isinstance(req, UpdateMany)
                                raw = mc._update(req._filter, req._doc, upsert, multi=many)
                        if raw.get("upserted") is not None:
                            result["nUpserted"] += 1
                            result["upserted"].append({"index": index, "_id": raw["upserted"]})
                        else:
                            result["nMatched"] += raw.get("n", 0)
                            result["nModified"] += raw.get("nModified", 0)
                except OperationFailure as exc:
                    if getattr(exc, "_memory_rollback", False):
                        raise
                    errmsg = (exc.details or {}).get("errmsg") or str(exc)
                    result["writeErrors"].append(
                        {"index": index, "code": exc.code, "errmsg": errmsg, "op": req}
                    )
                    if ordered:
                        break
            return result

        return Call(cmd, fn, self._what("bulk_write"), kind, retryable=False)

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
    def bulk_result(total: Document) -> BulkWriteResult:
        if total["writeErrors"]:
            raise BulkWriteError(total)
        return BulkWriteResult(total, True)

    def drop(self) -> Call:
        def fn(op: _Op) -> None:
            if op.txn is not None:
                raise operation_failure(
                    263,
                    "OperationNotSupportedInTransaction",
                    f"Cannot run 'drop' in a multi-document transaction (namespace {self.ns})",
                )
            if any(k[0] == self.db and k[1] == self.name for t in op.others for k in t.log):
                raise write_conflict()
            store = self.server._store[self.db]
            existed = self.name in store._collections and store[self.name].is_created
            self._mc.drop()
            if existed:
                self.server.publish_drop(self.db, self.name)

        return Call("drop", fn, self._what("drop"), retryable=False)

    # -- reads ----------------------------------------------------------------------------

    def find(
        self,
        filter: Any,
        projection: Any,
        sort: list[tuple[str, Any]] | None,
        skip: int,
        limit: int,
    ) -> Call:
        def fn(_op: _Op) -> list[Document]:
            order = mongomock.helpers.create_index_list(sort) if sort else None
            return self._mc.find_list(filter, projection, order, skip, limit)  # type: ignore[no-any-return]

        return Call("find", fn, self._what("find"))

    def aggregate(self, pipeline: Any, what: str = "aggregate") -> Call:
        def fn(_op: _Op) -> list[Document]:
            return list(self._mc.aggregate(list(pipeline)))

        return Call("aggregate", fn, self._what(what), "insert")

    def count_documents(self, filter: Any, **kwargs: Any) -> Call:
        def fn(_op: _Op) -> int:
            return int(self._mc.count_documents(filter, **kwargs))

        return Call("aggregate", fn, self._what("count_documents"))

    def estimated_document_count(self) -> Call:
        def fn(_op: _Op) -> int:
            return int(self._mc.estimated_document_count())

        return Call("count", fn, self._what("estimated_document_count"))

    def distinct(self, key: str, filter: Any = None) -> Call:
        def fn(_op: _Op) -> list[Any]:
            return list(self._mc.distinct(key, filter))

        return Call("distinct", fn, self._what("distinct"))

    # -- indexes --------------------------------------------------------------------------

    def create_index(self, keys: Any, **kwargs: Any) -> Call:
        def fn(_op: _Op) -> str:
            return str(self._mc.create_index(keys, **kwargs))

        return Call("createIndexes", fn, self._what("create_index"), retryable=False)

    def create_indexes(self, indexes: Any) -> Call:
        def fn(_op: _Op) -> list[str]:
            return list(self._mc.create_indexes(indexes))

        return Call("createIndexes", fn, self._what("create_indexes"), retryable=False)

    def list_indexes(self) -> Call:
        def fn(_op: _Op) -> list[Document]:
            return [dict(ix) for ix in self._mc.list_indexes()]

        return Call("listIndexes", fn, self._what("list_indexes"))

    def index_information(self) -> Call:
        def fn(_op: _Op) -> Document:
            return dict(self._mc.index_information())

        return Call("listIndexes", fn, self._what("index_information"))

    def drop_index(self, index_or_name: Any) -> Call:
        def fn(_op: _Op) -> None:
            try:
                self._mc.drop_index(index_or_name)
            except OperationFailure as exc:
                raise operation_failure(27, "IndexNotFound", str(exc)) from None

        return Call("dropIndexes", fn, self._what("drop_index"), retryable=False)


def list_collection_names(server: MemoryServer, db: str) -> Call:
    def fn(_op: _Op) -> list[str]:
        return list(server._mock[db].list_collection_names())

    return Call("listCollections", fn, f"list_collection_names on {db}")


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
