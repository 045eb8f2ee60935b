"""The shared, I/O-free core of the in-memory engine: storage hooks, locking, transactions.

Both client flavours (sync and async) drive one ``MemoryServer``. Every operation runs
synchronously under ``MemoryServer._mutex``; what differs between the flavours is only how an
operation waits for its turn (a thread blocks on a condition, a task awaits a future).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import hashlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import bson
import mongomock as _mongomock
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument
from bson.int64 import Int64
from bson.timestamp import Timestamp
from mongomock import store as _mm_store
from pymongo import ReturnDocument
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidOperation,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    WriteError,
)
from pymongo.helpers_shared import _RETRYABLE_ERROR_CODES

from ._index import IndexedDocuments, index_fields, wildcard_covers
from ._match import match as fast_match
from ._native import native_group, native_sort

if TYPE_CHECKING:
    from ._store import Store

# mongomock is untyped: reach it through Any.
mongomock: Any = _mongomock
mm_store: Any = _mm_store

T = TypeVar("T")
Ctx = tuple[int, int]
DocKey = tuple[str, str, Any]
Document = dict[str, Any]

MAX_BSON_SIZE = 16 * 1024 * 1024
_CODEC = CodecOptions(document_class=dict, tz_aware=False)

__all__ = ["MemoryServer", "StrictModeError"]


class StrictModeError(InvalidOperation):
    """An operation ran without ``session=`` while its thread/task has a transaction open."""


def current_ctx() -> Ctx:
    """The owner context: the thread, plus the asyncio task when there is one."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return (threading.get_ident(), id(task) if task is not None else 0)


def _describe_ctx(ctx: Ctx) -> str:
    return "task" if ctx[1] else "thread"


def roundtrip(document: Mapping[str, Any]) -> Document:
    """Encode and decode like a server would store it (validates keys, ints, size)."""
    return encoded(document)[0]


def encoded(document: Mapping[str, Any]) -> tuple[Document, bytes]:
    """``roundtrip``, with the BSON it decoded."""
    raw = bson.encode(document, codec_options=_CODEC)
    if len(raw) > MAX_BSON_SIZE:
        raise DocumentTooLarge(
            f"BSON document too large ({len(raw)} bytes) - the connected server supports "
            f"BSON document sizes up to {MAX_BSON_SIZE} bytes."
        )
    return bson.decode(raw, codec_options=_CODEC), raw


def operation_failure(
    code: int, code_name: str, message: str, labels: tuple[str, ...] | list[str] = ()
) -> OperationFailure:
    details: Document = {"ok": 0.0, "errmsg": message, "code": code, "codeName": code_name}
    if labels:
        details["errorLabels"] = list(labels)
    return OperationFailure(message, code, details)


def no_such_transaction(number: int) -> OperationFailure:
    return operation_failure(
        251,
        "NoSuchTransaction",
        f"Transaction with {{ txnNumber: {number} }} has been aborted.",
        labels=("TransientTransactionError",),
    )


def write_conflict() -> OperationFailure:
    exc = operation_failure(
        112,
        "WriteConflict",
        "Caused by :: Write conflict during plan execution and yielding is disabled. :: "
        "Please retry your operation or multi-document transaction.",
        ["TransientTransactionError"],
    )
    return _rollback_marked(exc)


E = TypeVar("E", bound=BaseException)


def _rollback_marked(exc: E) -> E:
    """Mark an error raised mid-operation: the engine undoes the operation's partial writes."""
    exc._memory_rollback = True  # type: ignore[attr-defined]
    return exc


# --------------------------------------------------------------------------- storage hooks


class _ServerStore(mm_store.ServerStore):  # type: ignore[misc]
    def __init__(self, server: MemoryServer) -> None:
        super().__init__()
        self._server = server

    def __getitem__(self, db_name: str) -> _DatabaseStore:
        try:
            return self._databases[db_name]  # type: ignore[no-any-return]
        except KeyError:
            db = self._databases[db_name] = _DatabaseStore(self._server, db_name)
            return db


class _DatabaseStore(mm_store.DatabaseStore):  # type: ignore[misc]
    def __init__(self, server: MemoryServer, db_name: str) -> None:
        super().__init__()
        self._server = server
        self._db_name = db_name

    def __getitem__(self, col_name: str) -> _CollectionStore:
        try:
            return self._collections[col_name]  # type: ignore[no-any-return]
        except KeyError:
            col = self._collections[col_name] = _CollectionStore(
                self._server, self._db_name, col_name
            )
            return col

    def rename(self, name: str, new_name: str) -> None:
        super().rename(name, new_name)
        self._server._renamed(self._db_name, name, new_name)


class _CollectionStore(mm_store.CollectionStore):  # type: ignore[misc]
    """Records each key's pre-image before a write, in the running operation's write log."""

    def __init__(self, server: MemoryServer, db_name: str, name: str) -> None:
        super().__init__(name)
        self._server = server
        self.db_name = db_name
        self._documents: IndexedDocuments = IndexedDocuments()

    def drop(self) -> None:
        super().drop()
        self._documents = IndexedDocuments()
        self._server._catalog_changed(self)

    def create(self) -> None:
        super().create()
        self._server._catalog_changed(self)

    # What the index definitions imply, computed once per change of them: every change
    # goes through create_index, drop_index or a new ``indexes`` mapping (drop_indexes).
    _index_cache: tuple[set[str], Any] | None = None
    _unique_cache: (
        tuple[list[tuple[Document, tuple[str, ...] | None]], frozenset[str] | None] | None
    ) = None

    @property
    def indexes(self) -> dict[str, Any]:
        return self._indexes

    @indexes.setter
    def indexes(self, value: dict[str, Any]) -> None:
        self._indexes = value
        self._index_cache = self._unique_cache = None
        if hasattr(self, "_server"):  # mongomock's __init__ sets indexes before _server
            self._server._catalog_changed(self)

    def create_index(self, index_name: str, index_dict: Any) -> None:
        super().create_index(index_name, index_dict)
        self._index_cache = self._unique_cache = None
        self._server._catalog_changed(self)

    def drop_index(self, index_name: str) -> None:
        super().drop_index(index_name)
        self._index_cache = self._unique_cache = None
        self._server._catalog_changed(self)

    def indexed(self, name: str) -> bool:
        """Whether an index serves equality on the top-level field ``name``."""
        cache = self._index_cache
        if cache is None:
            cache = self._index_cache = index_fields(self.indexes)
        leading, wildcard = cache
        return name in leading or (wildcard is not None and wildcard_covers(wildcard, name))

    def unique_indexes(
        self,
    ) -> tuple[list[tuple[Document, tuple[str, ...] | None]], frozenset[str] | None]:
        """The unique indexes, each with the top-level fields its entry depends on (key and
        partial-filter fields; None when a path or operator makes that unknowable), and the
        union of those fields (None: unknowable)."""
        if self._unique_cache is None:
            found = []
            every: set[str] | None = set()
            for index in self.indexes.values():
                if index.get("unique"):
                    names = [key for key, _ in index.get("key", ())]
                    names += list(index.get("partialFilterExpression") or {})
                    plain = all(not n.startswith("$") and "." not in n for n in names)
                    found.append((index, tuple(names) if plain else None))
                    every = every | set(names) if plain and every is not None else None
            self._unique_cache = (found, None if every is None else frozenset(every))
        return self._unique_cache

    def __setitem__(self, key: Any, val: Any) -> None:
        self._server._before_write(self, key, self._documents.get(key))
        super().__setitem__(key, val)

    def __delitem__(self, key: Any) -> None:
        self._server._before_write(self, key, self._documents.get(key))
        super().__delitem__(key)


# Types mongomock's datetime patching passes through unchanged (exact types: a subclass may
# be a Mapping or a tuple).
_UNPATCHED = frozenset({str, int, bool, float, type(None), bson.ObjectId, bson.Int64, bytes})
# Values no update changes in place (exact types), shared between a document's versions.
_IMMUTABLE = _UNPATCHED | {datetime.datetime, bson.Binary, bson.Decimal128, Timestamp}


def _unshared(value: Any) -> Any:
    """``value`` for another document: an immutable one as it is, anything else a deep copy
    (``deepcopy`` keeps float objects, so a NaN still equals itself)."""
    return value if type(value) in _IMMUTABLE else copy.deepcopy(value)


def _needs_patching(value: Any) -> bool:
    """Whether mongomock's datetime patching would change a query (datetimes, tuples)."""
    kind = type(value)
    if kind in _UNPATCHED:
        return False
    if kind is dict or kind is list:
        # A loop, not any() over a generator: this runs on every query's every value.
        for item in value.values() if kind is dict else value:
            if type(item) not in _UNPATCHED and _needs_patching(item):
                return True
        return False
    return isinstance(value, datetime.datetime | tuple | Mapping)


def _patch_datetimes(query: Any) -> Any:
    """mongomock's datetime normalization of a query, skipped when it would change nothing
    (it rebuilds every dict and list of the query, a large share of a guarded update)."""
    if _needs_patching(query):
        return mongomock.helpers.patch_datetime_awareness_in_document(query)
    return query


def _touched_fields(update: Any) -> frozenset[str] | None:
    """The top-level fields an update document (``{"$op": {path: ...}}``) can change, or
    None when that is unknown (a replacement, an unexpected shape)."""
    if not isinstance(update, Mapping) or not update:
        return None  # an empty document replaces every field
    names: set[str] = set()
    for op, fields in update.items():
        if type(op) is not str or not op.startswith("$") or not isinstance(fields, Mapping):
            return None
        paths = list(fields)
        if op == "$rename":
            paths += list(fields.values())
        for path in paths:
            if type(path) is not str:
                return None
            names.add(path.split(".", 1)[0])
    return frozenset(names)


def _long_increments(doc: Document, update: Any) -> list[list[str]]:
    """The ``$inc`` paths whose result is a 64-bit integer on a server: an int64 operand and
    no double (mongomock adds Python ints, which would store a small result as int32)."""
    incs = update.get("$inc") if isinstance(update, Mapping) else None
    if not isinstance(incs, Mapping):
        return []
    paths = []
    for path, by in incs.items():
        if type(path) is not str or "$" in path:
            continue  # positional paths: left as mongomock computes them
        parts = path.split(".")
        current: Any = doc
        for part in parts:
            current = _child(current, part)
        integers = (int, Int64)
        operands = type(by) in integers and type(current) in (*integers, type(None))
        if operands and (_is_long(by) or _is_long(current)):
            paths.append(parts)
    return paths


def _is_long(value: Any) -> bool:
    """Whether BSON holds ``value`` as an int64 (PyMongo encodes an int beyond int32 so)."""
    return type(value) is Int64 or (type(value) is int and not -(2**31) <= value < 2**31)


def _child(parent: Any, part: str) -> Any:
    if isinstance(parent, Mapping):
        return parent.get(part)
    if isinstance(parent, list) and part.isdigit() and int(part) < len(parent):
        return parent[int(part)]
    return None


def _restore_long(doc: Document, parts: list[str]) -> None:
    parent: Any = doc
    for part in parts[:-1]:
        parent = _child(parent, part)
    last = parts[-1]
    if isinstance(parent, dict) and type(parent.get(last)) is int:
        parent[last] = Int64(parent[last])
    elif isinstance(parent, list) and type(_child(parent, last)) is int:
        parent[int(last)] = Int64(parent[int(last)])


def _store_key(doc_id: Any) -> Any:
    return mongomock.helpers.hashdict(doc_id) if isinstance(doc_id, dict) else doc_id


class _MockCollection(mongomock.Collection):  # type: ignore[misc]
    """A mongomock collection whose in-place updates report their pre-images first."""

    def __init__(self, server: MemoryServer, database: Any, name: str) -> None:
        super().__init__(database, name, _db_store=database._store)
        self._server = server

    def _capture_in_place(
        self, existing_document: Document, touched: frozenset[str] | None
    ) -> Document | None:
        """Log the pre-image of a document about to change in place, and the top-level
        fields the change can reach (``touched``; None: unknown).

        A ``_WorkingCopy`` takes its original's place in the store, and the original,
        never changed, is the pre-image; a stored document changed in place is copied."""
        store = self._store
        docs = store._documents
        key = _store_key(existing_document.get("_id"))
        stored = docs.get(key)
        working = existing_document if isinstance(existing_document, _WorkingCopy) else None
        if stored is None or stored is not (
            existing_document if working is None else working.original
        ):
            return None
        server = self._server
        server._before_write(store, key, stored, snapshot=working is None)
        if working is not None:
            working.original = None
            docs.swap(key, working)
        # Changed in place: a candidate of every lookup until re-indexed.
        docs.dirty.add(key)
        server._dirty_stores.add(store)
        op = server._op
        if op is not None:
            dk = (store.db_name, store.name, key)
            before = op.touched.get(dk, frozenset())
            op.touched[dk] = None if before is None or touched is None else before | touched
        return None if working is None else stored

    def create_index(
        self, key_or_list: Any, cache_for: int = 300, session: Any = None, **kwargs: Any
    ) -> Any:
        """mongomock checks a new unique index against every document, ignoring its
        ``partialFilterExpression``; the server checks only the documents the filter selects."""
        partial = kwargs.get("partialFilterExpression")
        if not kwargs.get("unique") or partial is None:
            try:
                return super().create_index(key_or_list, cache_for, session, **kwargs)
            except OperationFailure as exc:
                if exc.code is None and "already exists with different options" in str(exc):
                    raise operation_failure(85, "IndexOptionsConflict", str(exc)) from None
                raise
        helpers = mongomock.helpers
        index_list = helpers.create_index_list(key_or_list)
        name = kwargs.get("name") or helpers.gen_index_name(index_list)
        spec: Document = {"key": index_list, "unique": True, "partialFilterExpression": partial}
        existing = self._store.indexes.get(name)
        if existing is not None:
            if existing != spec:
                raise operation_failure(
                    85,
                    "IndexOptionsConflict",
                    f"Index with name: {name} already exists with different options",
                )
            return name
        seen: set[bytes] = set()
        for doc in list(self._store.documents):
            if not mongomock.filtering.filter_applies(partial, doc):
                continue
            key = []
            for field_name, _ in index_list:
                try:
                    key.append(helpers.get_value_by_dot(doc, field_name))
                except KeyError:
                    key.append(None)
            encoded = bson.encode({"k": key})
            if encoded in seen:
                raise DuplicateKeyError(
                    f"E11000 duplicate key error collection: {self.full_name} index: {name}", 11000
                )
            seen.add(encoded)
        self._store.create_index(name, spec)
        return name

    # -- index-served reads (see _index) ---------------------------------------------------

    _selected: Document | None = None
    _updating = False

    def _update(self, *args: Any, **kwargs: Any) -> Any:
        """mongomock's update loop, handed working copies to change (see _WorkingCopy)."""
        self._updating = True
        try:
            return super()._update(*args, **kwargs)
        except WriteError as exc:
            if exc.code is None and "the (immutable) field '_id'" in str(exc):
                raise _immutable_id(str(exc)) from None
            raise
        finally:
            self._updating = False

    def _iter_documents(self, filter: Any) -> Iterator[Document]:
        found = self._matching(filter)
        if self._updating:
            self._updating = False  # only the loop's own lookup
            return (_WorkingCopy(doc) for doc in found)
        return found

    def _matching(self, filter: Any) -> Iterator[Document]:
        selected = self._selected
        if selected is not None:
            self._selected = None
            return iter((selected,))
        store = self._store
        docs: IndexedDocuments = store._documents
        if store._ttl_indexes or not isinstance(filter, Mapping):
            return super()._iter_documents(filter)  # type: ignore[no-any-return]
        keys = docs.candidates(filter, store.indexed)
        if not docs:
            mongomock.filtering.filter_applies(filter, {})  # validates the filter, as mongomock
        found = list(docs.values()) if keys is None else [docs[k] for k in keys if k in docs]
        return (doc for doc in found if _applies(filter, doc))

    def insert_encoded(
        self, items: list[tuple[Document, bytes]], *, many: bool, ordered: bool
    ) -> None:
        """mongomock's ``insert_one``/``insert_many`` for documents ``encoded`` already made:
        BSON-valid, datetimes naive to the millisecond, lists not tuples, so mongomock's
        re-encoding and datetime patching would change nothing. The engine keeps each
        document's BSON for its change event instead of encoding it again."""
        if not many:
            self._insert_encoded(*items[0])
            return
        write_errors: list[Document] = []
        inserted = 0
        for index, (doc, raw) in enumerate(items):
            try:
                self._insert_encoded(doc, raw)
            except WriteError as error:  # as mongomock's insert_many reports them
                write_errors.append(
                    {"index": index, "code": error.code, "errmsg": str(error), "op": doc}
                )
                if ordered:
                    break
                continue
            inserted += 1
        if write_errors:
            raise BulkWriteError({"writeErrors": write_errors, "nInserted": inserted})

    def _insert_encoded(self, doc: Document, raw: bytes) -> None:
        # mongomock's _validate_data_fields, less its recursive search for NUL in field
        # names: BSON encoding (which made ``doc``) refuses those at any depth.
        for name in doc:
            if name.startswith("$"):
                raise InvalidDocument(
                    f'Top-level field names cannot start with the "$" sign (found: {name})'
                )
        key = _store_key(doc["_id"])
        store = self._store
        if key in store._documents:
            raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)
        store[key] = doc
        try:
            self._ensure_uniques(doc)
        except DuplicateKeyError:
            del store[key]
            raise
        op = self._server._op
        if op is not None:
            op.encoded[(store.db_name, store.name, key)] = raw

    def _ensure_uniques(self, new_data: Document) -> None:
        """mongomock's check, served by the indexes: a document outside a partial index's
        filter is not in that index, so it cannot collide."""
        helpers, applies = mongomock.helpers, _applies
        store = self._store
        own = _store_key(new_data.get("_id"))
        uniques, fields = store.unique_indexes()
        pre = self._pre_image(own) if uniques else None
        if pre is not None and fields is not None:
            op = self._server._op
            touched = None if op is None else op.touched.get((store.db_name, store.name, own))
            if touched is not None and touched.isdisjoint(fields):
                return  # an update that cannot reach any unique index's fields
        for index, names in uniques:
            partial = index.get("partialFilterExpression")
            if pre is not None and names is not None and _unchanged(names, pre, new_data):
                continue  # an update that leaves the index entry as it was
            if partial is not None and not applies(partial, new_data):
                continue
            query: Document = {}
            for key, _ in index.get("key"):
                try:
                    query[key] = helpers.get_value_by_dot(new_data, key)
                except KeyError:
                    query[key] = None
            if index.get("sparse") and set(query.values()) == {None}:
                continue
            if partial is not None:
                query = {"$and": [partial, query]}
            docs: IndexedDocuments = store._documents
            keys = docs.candidates(query, store.indexed, ordered=False)
            if keys is None:
                keys = list(docs)
            for k in keys:
                doc = docs.get(k)
                if doc is not None and k != own and applies(query, doc):
                    raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)

    def _pre_image(self, key: Any) -> Document | None:
        """The document as the running operation found it, when it is the only document of
        this collection the operation changed (so no other index entry moved meanwhile)."""
        op = self._server._op
        if op is None:
            return None
        db, name = self._store.db_name, self._store.name
        pre = op.log.get((db, name, key))
        if pre is None or op.per_collection[db, name] != 1:
            return None
        return pre

    def _select(self, spec: Any, sort: Any, stop: int | None = None) -> Iterator[Document]:
        """The stored documents matching ``spec`` in ``sort`` order (mongomock's
        ``_get_dataset`` without copying each one); only the first ``stop`` are needed."""
        dataset: Iterator[Document] = iter(self._iter_documents(spec))
        if sort:
            docs = list(dataset)
            ordered = native_sort(docs, sort, stop)
            if ordered is not None:
                return iter(ordered)
            dataset = iter(docs)
        for sort_key, sort_direction in reversed(list(sort or ())):
            if sort_key == "$natural":
                if sort_direction < 0:
                    dataset = iter(list(dataset)[::-1])
                continue
            if sort_key.startswith("$"):
                raise NotImplementedError(
                    f"Sorting by {sort_key} is not implemented in mongomock yet"
                )
            dataset = iter(sorted(dataset, key=_sort_key(sort_key), reverse=sort_direction < 0))
        return dataset

    def find_list(
        self,
        filter: Any,
        projection: Any,
        sort: list[tuple[str, Any]] | None,
        skip: int,
        limit: int,
    ) -> list[Document]:
        """``list(find(...).sort().skip().limit())`` copying only the documents returned."""
        spec = {} if filter is None else filter
        mongomock.collection.validate_is_mapping("filter", spec)
        spec = _patch_datetimes(spec)
        stop = skip + abs(limit) if limit else None
        found = itertools.islice(self._select(spec, sort, stop), skip, stop)
        return [self._copy_only_fields(d, projection, dict) for d in found]

    def _find_and_modify(
        self,
        query: Any,
        projection: Any = None,
        update: Any = None,
        upsert: bool = False,
        sort: Any = None,
        return_document: Any = False,
        session: Any = None,
        **kwargs: Any,
    ) -> Any:
        """mongomock's, reading the matched document once instead of through two cursors."""
        remove = kwargs.get("remove", False)
        if not (remove or update):
            raise ValueError("Must either update or remove")
        spec = _patch_datetimes(query)
        found = self._iter_documents(spec) if sort is None else self._select(spec, sort)
        stored = next(iter(found), None)
        if stored is None and not upsert:
            return None
        after = return_document is ReturnDocument.AFTER or kwargs.get("new")
        old = None
        if stored is not None:
            if not after:
                old = self._copy_only_fields(stored, projection, dict)
            query = {"_id": stored["_id"]}
        if remove:
            self.delete_one(query)
        else:
            self._selected = stored  # _update's lookup of {"_id": ...} is this document
            try:
                updated = self._update(query, update, upsert)
            finally:
                self._selected = None
            if updated["upserted"]:
                query = {"_id": updated["upserted"]}
        if after:
            doc = self._store._documents.get(_store_key(query.get("_id")))
            if doc is None or "_id" not in query:
                return self.find_one(query, projection)
            if projection is None:
                return _private_copy(doc)  # what the next read returns once it is stored
            fast = _project(doc, projection)
            return fast if fast is not None else self._copy_only_fields(doc, projection, dict)
        return old

    def aggregate(self, pipeline: Any, session: Any = None, **kwargs: Any) -> Any:
        """A leading ``$match`` selects through the indexes instead of copying every document."""
        stages = list(pipeline)
        if session or self.codec_options.tz_aware:  # pragma: no cover - mongomock's own errors
            return super().aggregate(stages, session=session, **kwargs)
        selected: Iterator[Document]
        if stages and isinstance(stages[0], Mapping) and list(stages[0]) == ["$match"]:
            spec = stages.pop(0)["$match"]
            mongomock.collection.validate_is_mapping("filter", spec)
            selected = self._select(_patch_datetimes(spec), None)
        else:
            selected = iter(list(self._store._documents.values()))
        if stages and isinstance(stages[0], Mapping) and list(stages[0]) == ["$group"]:
            found = list(selected)
            grouped = native_group(found, stages[0]["$group"])
            if grouped is not None:  # new documents of immutable values: no copies needed
                return mongomock.aggregate.process_pipeline(
                    grouped, self.database, stages[1:], session
                )
            selected = iter(found)
        # Private copies (stages may change them); BSON copies are several times cheaper.
        docs = [_private_copy(d) for d in selected]
        return mongomock.aggregate.process_pipeline(docs, self.database, stages, session)

    def _apply_update_document(
        self, existing_document: Document, spec: Any, document: Any, was_insert: bool
    ) -> Any:
        replaced = None
        if not was_insert:
            replaced = self._capture_in_place(existing_document, _touched_fields(document))
        longs = _long_increments(existing_document, document)
        try:
            result = super()._apply_update_document(existing_document, spec, document, was_insert)
        except OperationFailure as exc:
            if replaced is not None:  # a document's failed update leaves it as it was
                self._store._documents.swap(_store_key(replaced.get("_id")), replaced)
            if "_id field cannot be changed" in str(exc):  # mongomock's replacement check
                raise _immutable_id(_altered_id(document.get("_id"))) from None
            raise
        for path in longs:
            _restore_long(existing_document, path)
        return result

    def _apply_update_pipeline(
        self, existing_document: Document, pipeline: Any, session: Any
    ) -> Any:
        self._capture_in_place(existing_document, None)
        return super()._apply_update_pipeline(existing_document, pipeline, session)


# --------------------------------------------------------------------------- state


class _TxnState:
    NONE = "none"
    STARTING = "starting"
    IN_PROGRESS = "in_progress"
    COMMITTED = "committed"
    COMMITTED_EMPTY = "committed_empty"
    ABORTED = "aborted"


@dataclass(eq=False)
class _Txn:
    """One server-side transaction: its undo log and its buffered change events."""

    session: SessionState
    number: int
    ctx: Ctx
    log: dict[DocKey, Document | None] = field(default_factory=dict)
    events: list[_Entry] = field(default_factory=list)
    holds: bool = False
    aborted: bool = False  # by the server, after a statement failed (as MongoDB does)


@dataclass(eq=False)
class _Op:
    """The write log of the single operation now running (first pre-image per key)."""

    txn: _Txn | None
    kind: str
    log: dict[DocKey, Document | None] = field(default_factory=dict)
    per_collection: collections.Counter[tuple[str, str]] = field(
        default_factory=collections.Counter
    )
    new_in_txn: set[DocKey] = field(default_factory=set)
    others: list[_Txn] = field(default_factory=list)
    swapped: bool = False
    encoded: dict[DocKey, bytes] = field(default_factory=dict)  # BSON of inserted documents
    # Per document updated in place: the top-level fields its update can change (None: any).
    touched: dict[DocKey, frozenset[str] | None] = field(default_factory=dict)


@dataclass
class _Entry:
    """One oplog entry (a change event before it is shaped for a stream)."""

    op_type: str
    db: str
    coll: str
    doc_id: Any = None
    full_document: Document | None = None
    update_description: Document | None = None
    pos: int = 0
    cluster_time: Timestamp | None = None
    wall_time: datetime.datetime | None = None
    lsid: Document | None = None
    txn_number: int | None = None


class SessionState:
    """PyMongo's client-session state machine, shared by the sync and async sessions."""

    def __init__(self, server: MemoryServer) -> None:
        self.server = server
        self.session_id: Document = {"id": bson.Binary(uuid.uuid4().bytes, 4)}
        self.txn_number = 0
        self.state = _TxnState.NONE
        self.txn: _Txn | None = None
        self.txn_ctx: Ctx = current_ctx()
        self.ended = False
        self.operation_time: Timestamp | None = None

    @property
    def in_transaction(self) -> bool:
        return self.state in (_TxnState.STARTING, _TxnState.IN_PROGRESS)

    def check_ended(self) -> None:
        if self.ended:
            raise InvalidOperation("Cannot use ended session")

    def start_transaction(self) -> None:
        self.check_ended()
        if self.in_transaction:
            raise InvalidOperation("Transaction already in progress")
        if self.txn is not None and not self.txn.aborted:
            # A new txnNumber aborts the server-side transaction left open (e.g. failed commit).
            self.server._abort(self.txn, count=False)
        self.txn = None
        self.txn_number += 1
        self.state = _TxnState.STARTING
        self.txn_ctx = current_ctx()
        self.server._session_opened(self)

    def txn_for_op(self) -> _Txn | None:
        """The server transaction an operation on this session joins (started lazily)."""
        self.check_ended()
        if self.state == _TxnState.STARTING:
            self.txn = _Txn(self, self.txn_number, self.txn_ctx)
            self.state = _TxnState.IN_PROGRESS
        if self.state == _TxnState.IN_PROGRESS:
            if self.txn is not None and self.txn.aborted:
                raise no_such_transaction(self.txn_number)
            return self.txn
        return None

    def commit_transaction(self) -> None:
        self.check_ended()
        state = self.state
        if state == _TxnState.NONE:
            raise InvalidOperation("No transaction started")
        if state in (_TxnState.STARTING, _TxnState.COMMITTED_EMPTY):
            self.state = _TxnState.COMMITTED_EMPTY
            self.server._session_closed(self)
            return
        if state == _TxnState.ABORTED:
            raise InvalidOperation("Cannot call commitTransaction after calling abortTransaction")
        self.state = _TxnState.IN_PROGRESS
        try:
            self._finish_with_retry(commit=True)
        except AutoReconnect as exc:
            exc._remove_error_label("TransientTransactionError")
            exc._add_error_label("UnknownTransactionCommitResult")
            raise
        except OperationFailure as exc:
            if exc.code in _UNKNOWN_COMMIT_ERROR_CODES:
                exc._add_error_label("UnknownTransactionCommitResult")
            raise
        finally:
            self.state = _TxnState.COMMITTED
            self.server._session_closed(self)

    def abort_transaction(self) -> None:
        self.check_ended()
        state = self.state
        if state == _TxnState.NONE:
            raise InvalidOperation("No transaction started")
        if state == _TxnState.STARTING:
            self.state = _TxnState.ABORTED
            self.server._session_closed(self)
            return
        if state == _TxnState.ABORTED:
            raise InvalidOperation("Cannot call abortTransaction twice")
        if state in (_TxnState.COMMITTED, _TxnState.COMMITTED_EMPTY):
            raise InvalidOperation("Cannot call abortTransaction after calling commitTransaction")
        try:
            self._finish_with_retry(commit=False)
        except (OperationFailure, AutoReconnect):
            pass  # the transactions spec says to ignore abortTransaction errors
        finally:
            self.state = _TxnState.ABORTED
            self.server._session_closed(self)

    def _finish_with_retry(self, *, commit: bool) -> None:
        # PyMongo retries commitTransaction/abortTransaction once after a retryable error.
        for attempt in range(2):
            try:
                if commit:
                    self.server._commit(self)
                else:
                    self.server._abort_session(self)
            except PyMongoError as exc:
                if attempt == 0 and _is_retryable(exc):
                    continue
                raise
            return

    def end_session(self) -> None:
        if self.ended:
            return
        if self.in_transaction:
            self.abort_transaction()
        elif self.txn is not None and not self.txn.aborted:
            self.server._abort(self.txn, count=False)
        self.ended = True


_UNKNOWN_COMMIT_ERROR_CODES = _RETRYABLE_ERROR_CODES | frozenset([64, 50])

# with_transaction's constants, as in PyMongo's client_session_shared.
WITH_TRANSACTION_RETRY_TIME_LIMIT = 120
BACKOFF_MAX = 0.500
BACKOFF_INITIAL = 0.005


def within_time_limit(start_time: float, backoff: float = 0) -> bool:
    return time.monotonic() + backoff - start_time < WITH_TRANSACTION_RETRY_TIME_LIMIT


def max_time_expired_error(exc: PyMongoError) -> bool:
    return isinstance(exc, OperationFailure) and exc.code == 50


def make_timeout_error(error: BaseException) -> PyMongoError:
    timeout_error = NetworkTimeout(str(error))
    if isinstance(error, PyMongoError):
        for label in error._error_labels:
            timeout_error._add_error_label(label)
    return timeout_error


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, AutoReconnect):
        return True
    if isinstance(exc, OperationFailure):
        return exc.code in _RETRYABLE_ERROR_CODES or exc.has_error_label("RetryableWriteError")
    return False


# --------------------------------------------------------------------------- the server


class _Waiters:
    """Wakes sync waiters (a Condition) and async waiters (futures on their loops)."""

    def __init__(self, mutex: threading.RLock) -> None:
        self.cond = threading.Condition(mutex)
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def future(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._futures.append((loop, fut))
        return fut

    def notify_all(self) -> None:
        self.cond.notify_all()
        futures, self._futures = self._futures, []
        for loop, fut in futures:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class MemoryServer:
    """One in-process MongoDB "deployment": data, sessions, oplog, fail points, counters.

    Clients created with ``server=`` share it (and therefore their data, transactions and
    change streams). ``oplog_size`` caps the number of change events kept for resuming.
    ``path`` keeps everything in that directory (the embedded store, see ``_store``): the
    server loads it now and holds it (one process at a time) until ``close()``; the store
    keeps ``oplog_size`` events (default 100,000).
    """

    def __init__(
        self, *, oplog_size: int | None = None, path: str | os.PathLike[str] | None = None
    ) -> None:
        self._mutex = threading.RLock()
        self._lock_waiters = _Waiters(self._mutex)
        self._oplog_waiters = _Waiters(self._mutex)
        self._store = _ServerStore(self)
        self._mock: Any = mongomock.MongoClient(_store=self._store)
        self._mock_collections: dict[tuple[str, str], _MockCollection] = {}
        # The server-wide lock: held by a context (its open transactions and single ops).
        self._holder: Ctx | None = None
        self._holding: list[_Txn] = []
        self._single_ops = 0
        self._open_sessions: set[SessionState] = set()
        self._op: _Op | None = None
        self._dirty_stores: set[_CollectionStore] = set()
        # Oplog.
        self.oplog_size = oplog_size
        self._oplog: list[_Entry] = []
        self._oplog_base = 0
        self._last_time = (0, 0)
        self.server_id = os.urandom(8).hex().upper()
        # Fault injection and statistics.
        self._fail_point: Document | None = None
        self._fail_times: int | None = None
        self.command_counts: collections.Counter[str] = collections.Counter()
        self.last_abort_restored = 0
        # The embedded store (path=): journals what becomes visible; change streams see the
        # oplog only up to what is durable (_oplog_visible, an absolute position).
        self._oplog_visible: int | None = None
        self._durable: Store | None = None
        if path is not None:
            from ._store import Store

            self._durable = Store.open(self, path)

    # -- the embedded store (path=) -------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The store's directory, or None for a server that keeps nothing."""
        return None if self._durable is None else self._durable.directory

    @property
    def store(self) -> Store | None:
        """The open embedded store (counters in ``store.stats``), or None."""
        return self._durable

    def compact(self) -> None:
        """Snapshot the store now and drop the journal it replaces (the store also does
        this by itself as the journal grows); a no-op without ``path``."""
        if self._durable is not None:
            self._durable.compact()

    def close(self) -> None:
        """Stop the wire endpoint (if listening) and close its connections; then flush and
        close the store, releasing its lock (with ``path``: the server refuses operations
        afterwards). Idempotent."""
        self._close_wire()
        if self._durable is not None:
            self._durable.close()

    def wait_durable(self) -> None:
        """Return once what this thread wrote (a commit) is on disk."""
        if self._durable is not None:
            self._durable.wait()

    async def async_wait_durable(self) -> None:
        """Return once what this task wrote (a commit) is on disk."""
        if self._durable is not None:
            await self._durable.async_wait()

    def _catalog_changed(self, store: _CollectionStore) -> None:
        if self._durable is not None:
            with self._mutex:
                self._durable.catalog_changed(store.db_name, store.name, store)

    def _renamed(self, db: str, name: str, new_name: str) -> None:
        if self._durable is not None:
            with self._mutex:
                self._durable.renamed(db, name, new_name)

    # -- statistics ---------------------------------------------------------------------

    def reset_command_counts(self) -> None:
        """Forget every command counted so far."""
        with self._mutex:
            self.command_counts.clear()

    # -- fail points --------------------------------------------------------------------

    def configure_fail_point(self, command: Mapping[str, Any]) -> Document:
        """Apply ``{"configureFailPoint": "failCommand", "mode": ..., "data": {...}}``."""
        name = command.get("configureFailPoint")
        if name != "failCommand":
            raise operation_failure(
                2, "BadValue", f"memory engine: unsupported fail point {name!r} (failCommand only)"
            )
        mode = command.get("mode")
        with self._mutex:
            if mode == "off":
                self._fail_point, self._fail_times = None, None
            elif mode == "alwaysOn":
                self._fail_point, self._fail_times = dict(command.get("data") or {}), None
            elif isinstance(mode, Mapping) and "times" in mode:
                self._fail_point = dict(command.get("data") or {})
                self._fail_times = int(mode["times"])
            else:
                raise operation_failure(2, "BadValue", f"invalid fail point mode: {mode!r}")
        return {"count": 0, "ok": 1.0}

    def _check_fail_point(self, cmd: str, in_txn: bool) -> None:
        fp = self._fail_point
        if fp is None or cmd not in fp.get("failCommands", ()):
            return
        if self._fail_times is not None:
            self._fail_times -= 1
            if self._fail_times <= 0:
                self._fail_point, self._fail_times = None, None
        labels = list(fp.get("errorLabels", ()))
        if fp.get("closeConnection"):
            exc: PyMongoError = AutoReconnect(
                f"memory engine: connection closed by failCommand fail point ({cmd})"
            )
            if in_txn and cmd not in ("commitTransaction", "abortTransaction"):
                exc._add_error_label("TransientTransactionError")
            for label in labels:
                exc._add_error_label(label)
            raise exc
        code = fp.get("errorCode")
        if code is not None:
            msg = f"Failing command {cmd!r} via 'failCommand' failpoint"
            raise operation_failure(int(code), _CODE_NAMES.get(int(code), ""), msg, labels)

    # -- the lock -----------------------------------------------------------------------

    def _try_admit(self, ctx: Ctx, txn: _Txn | None) -> str | None:
        if txn is not None:
            if txn.holds:
                return "txn"
            if self._holder is None or self._holder == txn.ctx:
                self._holder = txn.ctx
                self._holding.append(txn)
                txn.holds = True
                return "txn"
            return None
        if self._holder is None or self._holder == ctx:
            self._holder = ctx
            self._single_ops += 1
            return "single"
        return None

    def _release_single(self) -> None:
        with self._mutex:
            self._single_ops -= 1
            self._maybe_free()

    def _release_txn(self, txn: _Txn) -> None:
        if txn.holds:
            txn.holds = False
            self._holding.remove(txn)
            self._maybe_free()

    def _maybe_free(self) -> None:
        if not self._holding and self._single_ops == 0:
            self._holder = None
            self._lock_waiters.notify_all()

    def _session_opened(self, session: SessionState) -> None:
        with self._mutex:
            self._open_sessions.add(session)

    def _session_closed(self, session: SessionState) -> None:
        with self._mutex:
            self._open_sessions.discard(session)

    def _check_strict(
        self, strict: bool, session: SessionState | None, ctx: Ctx, what: str
    ) -> None:
        if not strict or session is not None:
            return
        with self._mutex:
            for other in self._open_sessions:
                if other.txn_ctx == ctx and other.in_transaction:
                    raise StrictModeError(
                        f"{what} ran without session= while a transaction is open on this "
                        f"{_describe_ctx(ctx)}; pass session= so the operation joins the "
                        "transaction (or use strict=False to read committed data outside it)"
                    )

    # -- running operations ---------------------------------------------------------------

    def run_sync(
        self,
        cmd: str,
        session: SessionState | None,
        fn: Callable[[_Op], T],
        *,
        strict: bool,
        what: str,
        kind: str = "",
        retryable: bool = True,
    ) -> T:
        ctx = current_ctx()
        self._check_strict(strict, session, ctx, what)
        txn = session.txn_for_op() if session is not None else None
        attempts = 2 if retryable and txn is None else 1
        for attempt in range(attempts):
            with self._lock_waiters.cond:
                admitted = self._try_admit(ctx, txn)
                while admitted is None:
                    self._lock_waiters.cond.wait()
                    admitted = self._try_admit(ctx, txn)
            try:
                result = self._execute(cmd, session, txn, fn, kind)
            except PyMongoError as exc:
                if attempt + 1 < attempts and _is_retryable(exc):
                    continue
                raise
            finally:
                if admitted == "single":
                    self._release_single()
            if self._durable is not None:
                self._durable.wait()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def run_async(
        self,
        cmd: str,
        session: SessionState | None,
        fn: Callable[[_Op], T],
        *,
        strict: bool,
        what: str,
        kind: str = "",
        retryable: bool = True,
    ) -> T:
        ctx = current_ctx()
        self._check_strict(strict, session, ctx, what)
        txn = session.txn_for_op() if session is not None else None
        attempts = 2 if retryable and txn is None else 1
        for attempt in range(attempts):
            while True:
                with self._mutex:
                    admitted = self._try_admit(ctx, txn)
                    if admitted is not None:
                        break
                    fut = self._lock_waiters.future()
                await fut
            try:
                result = self._execute(cmd, session, txn, fn, kind)
            except PyMongoError as exc:
                if attempt + 1 < attempts and _is_retryable(exc):
                    continue
                raise
            finally:
                if admitted == "single":
                    self._release_single()
            if self._durable is not None:
                await self._durable.async_wait()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(
        self,
        cmd: str,
        session: SessionState | None,
        txn: _Txn | None,
        fn: Callable[[_Op], T],
        kind: str,
    ) -> T:
        with self._mutex:
            if self._durable is not None:
                self._durable.check()
            if cmd:
                self.command_counts[cmd] += 1
                self._check_fail_point(cmd, txn is not None)
            op = _Op(txn, kind, others=[t for t in self._holding if t is not txn])
            saved = self._swap_out(op.others)
            op.swapped = bool(op.others)
            self._op = op
            try:
                result = fn(op)
                if op.log:
                    self._finish_writes(op)
            except BaseException as exc:
                if op.log and (
                    not isinstance(exc, PyMongoError) or getattr(exc, "_memory_rollback", False)
                ):
                    self._rollback_op(op)
                if txn is not None and isinstance(exc, OperationFailure):
                    # A failed statement aborts the whole transaction on the server: later
                    # statements and the commit get NoSuchTransaction (251).
                    self._rollback_op(op)
                    self._abort(txn, count=False)
                    txn.aborted = True
                    txn.session.txn = txn
                raise
            finally:
                self._op = None
                self._swap_back(saved)
                self._reindex_dirty()
            if session is not None:
                session.operation_time = self.cluster_time
            return result

    def _reindex_dirty(self) -> None:
        """Re-index the documents the operation changed in place (and store a plain dict for
        a working copy a write left behind when it failed part-way without a rollback)."""
        while self._dirty_stores:
            docs = self._dirty_stores.pop()._documents
            for key in list(docs.dirty):
                doc = docs.get(key)
                if type(doc) is _WorkingCopy:
                    docs.swap(key, dict(doc))
                docs.reindex(key)

    def _store_for(self, db: str, coll: str) -> _CollectionStore:
        return self._store[db][coll]

    def mock_collection(self, db: str, coll: str) -> _MockCollection:
        key = (db, coll)
        mc = self._mock_collections.get(key)
        if mc is None:
            mc = self._mock_collections[key] = _MockCollection(self, self._mock[db], coll)
        return mc

    # Decision 13: an operation that is not part of an open transaction sees committed data.
    def _swap_out(self, others: list[_Txn]) -> list[tuple[_CollectionStore, Any, Any]]:
        saved: list[tuple[_CollectionStore, Any, Any]] = []
        for txn in others:
            for (db, coll, key), pre in txn.log.items():
                docs = self._store_for(db, coll)._documents
                saved.append((self._store_for(db, coll), key, docs.get(key)))
                _put(docs, key, pre)
        return saved

    def _swap_back(self, saved: list[tuple[_CollectionStore, Any, Any]]) -> None:
        for store, key, current in reversed(saved):
            _put(store._documents, key, current)

    def _before_write(
        self, store: _CollectionStore, key: Any, pre: Document | None, *, snapshot: bool = False
    ) -> None:
        """Record ``pre`` (copied when ``snapshot``: it is about to change in place)."""
        op = self._op
        if op is None:
            return
        dk: DocKey = (store.db_name, store.name, key)
        for other in op.others:
            if dk in other.log:
                raise write_conflict()
        if dk not in op.log:
            if snapshot and pre is not None:
                pre = _private_copy(pre)
            op.log[dk] = pre
            op.per_collection[dk[:2]] += 1
            txn = op.txn
            if txn is not None and dk not in txn.log:
                txn.log[dk] = pre
                op.new_in_txn.add(dk)

    def _rollback_op(self, op: _Op) -> None:
        for (db, coll, key), pre in reversed(list(op.log.items())):
            _put(self._store_for(db, coll)._documents, key, pre)
        if op.txn is not None:
            for dk in op.new_in_txn:
                op.txn.log.pop(dk, None)
        op.log.clear()
        op.per_collection.clear()

    def _finish_writes(self, op: _Op) -> None:
        entries: list[_Entry] = []
        for dk, pre in op.log.items():
            db, coll, key = dk
            docs = self._store_for(db, coll)._documents
            post = docs.get(key)
            raw = op.encoded.get(dk) if pre is None else None
            if raw is not None:
                pass  # inserted as encoded: checked and already a private copy
            elif post is not None:
                try:
                    raw = bson.encode(post, codec_options=_CODEC)
                except OverflowError as exc:
                    err: Exception = WriteError(
                        "Failed to apply $inc operations to current value for document "
                        f"{{_id: {post.get('_id')!r}}}: the result overflows a 64-bit integer",
                        2,
                        {"code": 2, "codeName": "BadValue"},
                    )
                    raise _rollback_marked(err) from exc
                if len(raw) > MAX_BSON_SIZE:
                    if pre is None and op.kind != "update":
                        err = DocumentTooLarge(
                            f"BSON document too large ({len(raw)} bytes) - the connected server "
                            f"supports BSON document sizes up to {MAX_BSON_SIZE} bytes."
                        )
                    else:
                        msg = f"Resulting document after update is larger than {MAX_BSON_SIZE}"
                        err = WriteError(msg, 17419, {"code": 17419, "errmsg": msg})
                    raise _rollback_marked(err)
                post = bson.decode(raw, codec_options=_CODEC)
                if pre is None:
                    docs[key] = post
                else:  # indexes on fields the update cannot reach keep their entries
                    docs.replace(key, post, op.touched.get(dk))
            entry = _change_entry(op.kind, db, coll, pre, post, raw)
            if entry is not None:
                entries.append(entry)
        if not entries:
            return
        if op.txn is not None:
            op.txn.events.extend(entries)
        else:
            self._publish(entries)

    # -- transactions ---------------------------------------------------------------------

    def _commit(self, session: SessionState) -> None:
        with self._mutex:
            self.command_counts["commitTransaction"] += 1
            txn = session.txn
            self._check_fail_point("commitTransaction", txn is not None)
            if txn is None:
                return  # already committed: a retried commit succeeds
            if txn.aborted:
                raise no_such_transaction(txn.number)
            self._publish(
                txn.events,
                lsid={
                    "id": session.session_id["id"],
                    "uid": bson.Binary(hashlib.sha256(b"").digest(), 0),
                },
                txn_number=txn.number,
            )
            txn.log.clear()
            txn.events = []
            session.txn = None
            self._release_txn(txn)

    def _abort_session(self, session: SessionState) -> None:
        with self._mutex:
            self.command_counts["abortTransaction"] += 1
            self._check_fail_point("abortTransaction", session.txn is not None)
            if session.txn is not None and not session.txn.aborted:
                self._abort(session.txn, count=False)
            session.txn = None

    def _abort(self, txn: _Txn, *, count: bool = True) -> None:
        with self._mutex:
            if count:
                self.command_counts["abortTransaction"] += 1
            for (db, coll, key), pre in reversed(list(txn.log.items())):
                _put(self._store_for(db, coll)._documents, key, pre)
            self.last_abort_restored = len(txn.log)
            txn.log.clear()
            txn.events = []
            if txn.session.txn is txn:
                txn.session.txn = None
            self._release_txn(txn)

    def touched_by_open_transactions(self, db: str, coll: str) -> bool:
        return any(k[0] == db and k[1] == coll for t in self._holding for k in t.log)

    # -- oplog ----------------------------------------------------------------------------

    @property
    def cluster_time(self) -> Timestamp:
        """The cluster time of the latest write (``Timestamp(0, 0)`` before any)."""
        return Timestamp(*self._last_time)

    def _next_cluster_time(self) -> Timestamp:
        secs = int(time.time())
        last_secs, last_inc = self._last_time
        self._last_time = (secs, 1) if secs > last_secs else (last_secs, last_inc + 1)
        return Timestamp(*self._last_time)

    def _publish(
        self, entries: list[_Entry], *, lsid: Document | None = None, txn_number: int | None = None
    ) -> None:
        if not entries:
            return
        ct = self._next_cluster_time()
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        wall = now.replace(microsecond=now.microsecond // 1000 * 1000)
        for entry in entries:
            entry.pos = self._oplog_base + len(self._oplog)
            entry.cluster_time = ct
            entry.wall_time = wall
            entry.lsid = lsid
            entry.txn_number = txn_number
            self._oplog.append(entry)
        if self._durable is not None:
            self._durable.published(entries)
        if self.oplog_size is not None and len(self._oplog) > self.oplog_size:
            drop = len(self._oplog) - self.oplog_size
            del self._oplog[:drop]
            self._oplog_base += drop
        self._oplog_waiters.notify_all()

    @property
    def oplog_end(self) -> int:
        end = self._oplog_base + len(self._oplog)
        return end if self._oplog_visible is None else min(end, self._oplog_visible)

    def oplog_entries(self, start: int) -> Iterator[_Entry]:
        for i in range(max(start - self._oplog_base, 0), self.oplog_end - self._oplog_base):
            yield self._oplog[i]

    def publish_drop(self, db: str, coll: str) -> None:
        self._publish([_Entry("drop", db, coll)])

    # -- commands -------------------------------------------------------------------------

    def hello(self, legacy: bool = False) -> Document:
        me = "memory:27017"
        reply: Document = {
            "topologyVersion": {
                "processId": bson.ObjectId(self.server_id[:24].ljust(24, "0")),
                "counter": Int64(0),
            },
            "hosts": [me],
            "setName": "memory",
            "setVersion": 1,
            "isWritablePrimary": True,
            "secondary": False,
            "primary": me,
            "me": me,
            "electionId": bson.ObjectId("7fffffff0000000000000001"),
            "lastWrite": {"opTime": {"ts": self.cluster_time, "t": Int64(1)}},
            "maxBsonObjectSize": MAX_BSON_SIZE,
            "maxMessageSizeBytes": 48000000,
            "maxWriteBatchSize": 100000,
            "localTime": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": False,
            "ok": 1.0,
        }
        if legacy:
            reply["ismaster"] = reply.pop("isWritablePrimary")
        return reply

    def command(self, db: str, command: Mapping[str, Any]) -> Document:
        """Run a database command outside any session (the dispatcher in ``_commands``)."""
        from ._commands import commands_for
        from ._sync.commands import run_command  # the dispatcher imports this module

        return run_command(commands_for(self), db, command)

    # -- the wire endpoint (``_wire``; owned by the wire protocol work) ---------------------

    def listen(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        max_connections: int = 1000,
    ) -> str:
        """Serve this engine over the MongoDB wire protocol; returns the ``mongodb://`` URI.

        ``port=0`` picks a free port. Only loopback addresses are accepted unless
        ``allow_remote=True`` (there is no authentication: a warning says so). Real drivers
        (PyMongo sync and async, Motor, mongosh) connect to the URI, which names a one-member
        replica set. ``close()`` stops it.
        """
        from ._wire import WireServer

        with self._mutex:
            if getattr(self, "_wire", None) is not None:
                raise RuntimeError("this MemoryServer is already listening; close() it first")
            wire = WireServer(
                self, host, port, allow_remote=allow_remote, max_connections=max_connections
            )
            self._wire: Any = wire
        try:
            return wire.start()
        except BaseException:
            self._wire = None
            raise

    def _close_wire(self) -> None:
        """Stop the wire endpoint (if listening) and close its connections; idempotent."""
        wire = getattr(self, "_wire", None)
        self._wire = None
        if wire is not None:
            wire.close()


def _applies(flt: Any, doc: Document) -> bool:
    """mongomock's ``filter_applies``, through the fast path when it can decide."""
    result = fast_match(flt, doc)
    if result is None:
        return bool(mongomock.filtering.filter_applies(flt, doc))
    return result


def _sort_key(name: str) -> Callable[[Document], Any]:
    resolve = mongomock.filtering.resolve_sort_key
    return lambda doc: resolve(name, doc)


_SCALARS = (str, int, bson.ObjectId, datetime.datetime, bytes)


_ABSENT = object()


def _same_value(a: Any, b: Any) -> bool:
    """``_same``, quicker for two scalars of one type."""
    if a is b:
        return True
    if a is _ABSENT or b is _ABSENT:
        return False
    if type(a) is type(b) and isinstance(a, _SCALARS):
        return bool(a == b)
    return _same(a, b)


def _unchanged(names: tuple[str, ...], pre: Document, post: Document) -> bool:
    """Whether ``post`` has the same entry as ``pre`` in a unique index whose entry depends
    on the top-level fields ``names``."""
    return all(_same_value(pre.get(name, _ABSENT), post.get(name, _ABSENT)) for name in names)


def _project(doc: Document, projection: Any) -> Document | None:
    """A private copy of ``doc`` cut to a plain inclusion projection of top-level fields
    (``{"a": 1, "b": 1}``), or None for any other projection (mongomock's path handles it)."""
    if type(projection) is not dict or not projection:
        return None
    keep_id = True
    out: Document = {}
    immutable = True
    for name, flag in projection.items():
        kind = type(flag)
        if type(name) is not str or name[:1] == "$" or "." in name:
            return None
        if kind is not int and kind is not bool:
            return None
        if name == "_id":
            keep_id = bool(flag)
            continue
        if flag != 1:
            return None
        if name in doc:
            value = out[name] = doc[name]
            immutable = immutable and type(value) in _IMMUTABLE
    if len(projection) == 1 and not keep_id:
        return None  # {"_id": 0} alone is an exclusion projection
    if keep_id and "_id" in doc:
        out = {"_id": doc["_id"], **out}
    return out if immutable else _private_copy(out)  # immutable values: already a copy


def _immutable_id(msg: str) -> WriteError:
    """The server's error (code 66) for an update or replacement that would change ``_id``."""
    return WriteError(msg, 66, {"code": 66, "codeName": "ImmutableField", "errmsg": msg})


def _altered_id(new_id: Any) -> str:
    """mongomock's message for a changed ``_id``, which is the server's."""
    return (
        "After applying the update, the (immutable) field '_id' was found to have been "
        f"altered to _id: {new_id}"
    )


class _WorkingCopy(dict):  # type: ignore[type-arg]
    """A private copy of a stored document, handed to mongomock's update loop in its place.

    mongomock deep-copies each document it updates (to compare the result with, and to
    restore on a failed unique check) and then changes the stored one in place. The update
    changes this copy instead, which ``_capture_in_place`` puts in the store; the original,
    never changed, is the deep copy mongomock asks for and the operation's pre-image. The
    copy shares the immutable values (a flat document is one dict copy) and deep-copies the
    rest (``_unshared``), so a NaN still equals itself in mongomock's "was it modified"
    comparison.
    """

    __slots__ = ("original",)

    def __init__(self, original: Document) -> None:
        super().__init__({k: _unshared(v) for k, v in original.items()})
        self.original: Document | None = original

    def __deepcopy__(self, memo: dict[int, Any]) -> Document:
        if self.original is not None:
            return self.original
        return copy.deepcopy(dict(self), memo)


def _private_copy(doc: Document) -> Document:
    """A deep copy of a stored document (stored documents are BSON-clean: decoding their
    encoding is the same copy, several times faster than ``deepcopy``)."""
    try:
        return bson.decode(bson.encode(doc, codec_options=_CODEC), codec_options=_CODEC)
    except Exception:
        return copy.deepcopy(doc)


def _put(docs: collections.OrderedDict[Any, Any], key: Any, value: Document | None) -> None:
    if value is None:
        docs.pop(key, None)
    else:
        docs[key] = value


_CODE_NAMES = {
    2: "BadValue",
    6: "HostUnreachable",
    7: "HostNotFound",
    11: "UserNotFound",
    50: "MaxTimeMSExpired",
    64: "WriteConcernFailed",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    112: "WriteConflict",
    189: "PrimarySteppedDown",
    251: "NoSuchTransaction",
    262: "ExceededTimeLimit",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
}


def _same(a: Any, b: Any) -> bool:
    """Equal as BSON (so ``1`` and ``True`` and ``1.0`` differ, as they do on a server)."""
    return bson.encode({"v": a}) == bson.encode({"v": b})


def _diff(
    pre: Document, post: Document, prefix: str, updated: Document, removed: list[str]
) -> None:
    for k, v in post.items():
        if k not in pre:
            updated[prefix + k] = _unshared(v)
        elif not _same_value(pre[k], v):
            old = pre[k]
            if isinstance(old, dict) and isinstance(v, dict) and v:
                _diff(old, v, f"{prefix}{k}.", updated, removed)
            else:
                updated[prefix + k] = _unshared(v)
    removed.extend(prefix + k for k in pre if k not in post)


def _change_entry(
    kind: str,
    db: str,
    coll: str,
    pre: Document | None,
    post: Document | None,
    raw: bytes | None = None,
) -> _Entry | None:
    """The change event of one write; ``raw`` is ``post`` encoded (decoding it is a cheaper
    private copy than ``deepcopy``)."""
    if pre is None and post is None:
        return None

    def snapshot(doc: Document) -> Document:
        return copy.deepcopy(doc) if raw is None else bson.decode(raw, codec_options=_CODEC)

    if pre is None:
        assert post is not None
        return _Entry("insert", db, coll, post["_id"], snapshot(post))
    if post is None:
        return _Entry("delete", db, coll, pre["_id"])
    updated: Document = {}
    removed: list[str] = []
    if kind != "replace":
        _diff(pre, post, "", updated, removed)  # BSON-exact, so usually decides alone
    if not updated and not removed:
        same = _same(pre, post) if raw is None else bson.encode(pre, codec_options=_CODEC) == raw
        if same:
            return None  # a no-op update writes nothing and emits nothing
    if kind == "replace":
        return _Entry("replace", db, coll, post["_id"], snapshot(post))
    desc = {"updatedFields": updated, "removedFields": removed, "truncatedArrays": []}
    return _Entry("update", db, coll, post["_id"], snapshot(post), desc)
