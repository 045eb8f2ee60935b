"""Where documents live: mongomock's store and collection, with the hooks the engine needs.

mongomock keeps each collection's documents in a ``CollectionStore``; the engine's store keeps
them in ``IndexedDocuments`` (equality indexes, see ``_index``) under keys that keep booleans
apart from numbers (``_bson.store_key``), and reports every write to the running operation
before it happens (``Server._before_write``: write sets, conflicts, pre-images). The
collection subclass serves reads through the indexes, changes private working copies instead
of stored documents, and checks unique indexes against what the operation sees plus what it
cannot see but would collide with (documents of open transactions and later commits).

Every method here runs under the engine's mutex, inside one operation.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import bson
import mongomock as _mongomock
from bson.errors import InvalidDocument
from bson.int64 import Int64
from mongomock import store as _mm_store
from pymongo import ReturnDocument
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    WriteError,
)

from ._bson import (
    ABSENT,
    IMMUTABLE,
    Document,
    canonical,
    mixes_bools,
    patched,
    private_copy,
    same_value,
    store_key,
    unshared,
    with_bson_bools,
)
from ._errors import operation_failure
from ._index import IndexedDocuments, index_fields, wildcard_covers
from ._match import match as fast_match
from ._native import native_group, native_sort, run_pipeline
from ._transactions import View
from ._update import Plan, is_long
from ._update import apply as update_apply
from ._update import fields as update_fields
from ._update import plan as update_plan


class Server(Protocol):
    """What the storage asks of the server that runs the operation (``_engine``)."""

    _op: Any  # the operation now running (None between operations)
    _dirty_stores: set[CollectionStore]

    def _before_write(
        self, store: CollectionStore, key: Any, pre: Document | None, *, snapshot: bool = False
    ) -> None: ...

    def _check_write(self, store: CollectionStore, key: Any) -> None: ...

    def _created(self, store: CollectionStore) -> None: ...

    def _view(self, store: CollectionStore) -> View | None: ...

    def _collision(self, store: CollectionStore, key: Any) -> None: ...


# mongomock is untyped: reach it through Any.
mongomock: Any = _mongomock
mm_store: Any = _mm_store

__all__ = ["CollectionStore", "MockCollection", "ServerStore", "applies", "mongomock", "put"]
# --------------------------------------------------------------------------- storage hooks


class ServerStore(mm_store.ServerStore):  # type: ignore[misc]
    def __init__(self, server: Server) -> None:
        super().__init__()
        self._server = server

    def __getitem__(self, db_name: str) -> DatabaseStore:
        try:
            return self._databases[db_name]  # type: ignore[no-any-return]
        except KeyError:
            db = self._databases[db_name] = DatabaseStore(self._server, db_name)
            return db


class DatabaseStore(mm_store.DatabaseStore):  # type: ignore[misc]
    def __init__(self, server: Server, db_name: str) -> None:
        super().__init__()
        self._server = server
        self._db_name = db_name

    def __getitem__(self, col_name: str) -> CollectionStore:
        try:
            return self._collections[col_name]  # type: ignore[no-any-return]
        except KeyError:
            col = self._collections[col_name] = CollectionStore(
                self._server, self._db_name, col_name
            )
            return col


class CollectionStore(mm_store.CollectionStore):  # type: ignore[misc]
    """A collection's documents, indexes and options; reports each write before it happens.

    A collection exists once created, explicitly or by its first insert or index, as on a
    server (mongomock forgets an emptied collection); ``uuid`` names each incarnation.
    """

    def __init__(self, server: Server, db_name: str, name: str) -> None:
        super().__init__(name)
        self._server = server
        self.db_name = db_name
        self.ns = (db_name, name)
        self._documents: IndexedDocuments = IndexedDocuments()
        self.uuid: bson.Binary | None = None
        self.options: Document = {}

    _is_force_created: bool
    _ttl_indexes: dict[str, Any]

    @property
    def is_created(self) -> bool:
        return self._is_force_created

    def create(self) -> None:
        """Create the collection (a no-op once it exists)."""
        if not self._is_force_created:
            self._is_force_created = True
            self.uuid = bson.Binary(uuid.uuid4().bytes, 4)
            self._server._created(self)

    def drop(self) -> None:
        super().drop()
        self._documents = IndexedDocuments()
        self.uuid = None
        self.options = {}

    def move_to(self, dst: CollectionStore) -> None:
        """Rename: documents, indexes, options and UUID move to ``dst`` (not created, or
        dropped first), and this namespace is left without a collection."""
        dst._documents, self._documents = self._documents, IndexedDocuments()
        dst.indexes, self.indexes = self.indexes, {}
        dst._ttl_indexes, self._ttl_indexes = self._ttl_indexes, {}
        dst.options, self.options = self.options, {}
        dst.uuid, self.uuid = self.uuid, None
        dst._is_force_created, self._is_force_created = True, False

    def __contains__(self, key: Any) -> bool:
        """Whether an insert of ``_id`` ``key`` is a duplicate (mongomock's own check): one
        that open transactions or later commits make a conflict raises it instead."""
        if self._ttl_indexes:
            self._remove_expired_documents()
        key = store_key(key)
        if self._documents.overlay and key in self._documents.overlay:
            self._server._check_write(self, key)
        return key in self._documents

    def __getitem__(self, key: Any) -> Any:
        if self._ttl_indexes:
            self._remove_expired_documents()
        return self._documents[store_key(key)]

    def __setitem__(self, key: Any, val: Any) -> None:
        key = store_key(key)
        self._server._before_write(self, key, self._documents.get(key))
        if not self._is_force_created:
            self.create()
        self._documents[key] = val

    def __delitem__(self, key: Any) -> None:
        key = store_key(key)
        self._server._before_write(self, key, self._documents.get(key))
        del self._documents[key]

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

    def create_index(self, index_name: str, index_dict: Any) -> None:
        self.create()
        super().create_index(index_name, index_dict)
        self._index_cache = self._unique_cache = None

    def drop_index(self, index_name: str) -> None:
        super().drop_index(index_name)
        self._index_cache = self._unique_cache = None

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


def _update_paths(update: Any) -> tuple[frozenset[str] | None, tuple[str, ...]]:
    """The top-level fields an update document (``{"$op": {path: ...}}``) can change (None
    when that is unknown: a replacement, an unexpected shape), and its dotted paths."""
    if not isinstance(update, Mapping) or not update:
        return None, ()  # an empty document replaces every field
    names: set[str] = set()
    dotted: list[str] = []
    for op, fields in update.items():
        if type(op) is not str or not op.startswith("$") or not isinstance(fields, Mapping):
            return None, ()
        paths = list(fields)
        if op == "$rename":
            paths += list(fields.values())
        for path in paths:
            if type(path) is not str:
                return None, ()
            top, dot, _ = path.partition(".")
            names.add(top)
            if dot:
                dotted.append(path)
    return frozenset(names), tuple(dotted)


def _prefixes(paths: tuple[str, ...]) -> set[str]:
    """The paths an update reaches inside of (every proper prefix of a dotted path)."""
    out: set[str] = set()
    for path in paths:
        parts = path.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


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
        if operands and (is_long(by) or is_long(current)):
            paths.append(parts)
    return paths


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


class MockCollection(mongomock.Collection):  # type: ignore[misc]
    """A mongomock collection whose in-place updates report their pre-images first."""

    def __init__(self, server: Server, database: Any, name: str) -> None:
        super().__init__(database, name, _db_store=database._store)
        self._server = server

    def _capture_in_place(
        self,
        existing_document: Document,
        touched: frozenset[str] | None,
        dotted: tuple[str, ...] = (),
    ) -> Document | None:
        """Log the pre-image of a document about to change in place, the top-level fields
        the change can reach (``touched``; None: unknown) and its dotted paths.

        A ``WorkingCopy`` takes its original's place in the store, and the original,
        never changed, is the pre-image; a stored document changed in place is copied."""
        store = self._store
        docs = store._documents
        key = store_key(existing_document.get("_id"))
        if docs.overlay and key in docs.overlay:  # another version than the stored one
            self._server._check_write(store, key)
        stored = docs.get(key)
        working = existing_document if isinstance(existing_document, WorkingCopy) else None
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
            if dotted:  # which arrays the change event describes element by element
                if op.inside is None:
                    op.inside = {}
                op.inside.setdefault(dk, set()).update(_prefixes(dotted))
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

    def _update(
        self,
        spec: Any,
        document: Any,
        upsert: bool = False,
        manipulate: bool = False,
        multi: bool = False,
        check_keys: bool = False,
        **kwargs: Any,
    ) -> Any:
        """mongomock's update loop, handed working copies to change (see WorkingCopy); the
        common update shape (``memory._update``) applied natively."""
        steps = None if upsert or any(kwargs.values()) else update_plan(document)
        if steps is not None:
            return self._update_natively(spec, document, steps, multi)
        self._updating = True
        try:
            return super()._update(spec, document, upsert, manipulate, multi, check_keys, **kwargs)
        except WriteError as exc:
            if exc.code is None and "the (immutable) field '_id'" in str(exc):
                raise _immutable_id(str(exc)) from None
            raise
        finally:
            self._updating = False

    def _update_natively(self, spec: Any, document: Any, steps: Plan, multi: bool) -> Any:
        """mongomock's update loop (less the upsert, which ``_update`` leaves to it) for an
        update ``update_plan`` recognised: the same results, writes and checks, without
        rebuilding the update and the filter, encoding each value, or walking paths."""
        mongomock.collection.validate_is_mapping("spec", spec)
        matched = modified = 0
        for stored in self._matching(spec):
            matched += 1
            modified += self._update_one_natively(stored, spec, document, steps)
            if not multi:
                break
        return {
            "connectionId": self.database.client._id,
            "err": None,
            "n": matched,
            "nModified": modified,
            "ok": 1,
            "upserted": None,
            "updatedExisting": matched > 0,
        }

    def _update_one_natively(self, stored: Document, spec: Any, document: Any, steps: Plan) -> bool:
        """One document of ``_update_natively``; whether the update modified it."""
        working = WorkingCopy(stored)
        if update_apply(working, steps):
            self._capture_in_place(working, update_fields(steps))
        else:  # a value apply leaves to mongomock's path, which takes both patched
            helpers = mongomock.helpers
            update = helpers.patch_datetime_awareness_in_document(document)
            if isinstance(document, list):
                self._apply_update_pipeline(working, update, None)
            else:
                self._apply_update_document(working, patched(spec), update, False)
        if working == stored:  # as mongomock tells a modified document
            return False
        try:
            self._ensure_uniques(working)
        except DuplicateKeyError:
            self._store[stored["_id"]] = stored  # mongomock's rollback
            raise
        return True

    def _iter_documents(self, filter: Any) -> Iterator[Document]:
        found = self._matching(filter)
        if self._updating:
            self._updating = False  # only the loop's own lookup
            return (WorkingCopy(doc) for doc in found)
        return found

    def _matching(self, filter: Any) -> Iterator[Document]:
        selected = self._selected
        if selected is not None:
            self._selected = None
            return iter((selected,))
        store = self._store
        docs: IndexedDocuments = store._documents
        if store._ttl_indexes or not isinstance(filter, Mapping):
            return super()._iter_documents(patched(filter))  # type: ignore[no-any-return]
        keys = docs.candidates(filter, store.indexed)
        if not docs:  # validates the filter, as mongomock
            mongomock.filtering.filter_applies(patched(filter), {})
        view = self._server._view(store) if docs.overlay else None
        if view is not None:  # versions the operation sees instead of the stored ones
            found = view.documents(view.keys(filter, keys, store.indexed))
        elif keys is None:
            found = list(docs.values())
        else:
            found = [docs[k] for k in keys if k in docs]
        return (doc for doc in found if applies(filter, doc))

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
        key = store_key(doc["_id"])
        store = self._store
        docs = store._documents
        if docs.overlay and key in docs.overlay:  # another version: a conflict, if any
            self._server._check_write(store, key)
        if key in docs:
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
        helpers = mongomock.helpers
        store = self._store
        own = store_key(new_data.get("_id"))
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
            view = self._server._view(store) if docs.overlay else None
            if view is not None:
                keys = view.keys(query, keys, store.indexed)
            if keys is None:
                keys = [*docs, *docs.overlay]
            for k in keys:
                if k == own:
                    continue
                doc = docs.get(k)
                if view is not None and k in docs.overlay:
                    # A version the operation does not see collides: a conflict, as with
                    # another transaction's uncommitted key or a key committed later.
                    if any(applies(query, v) for v in view.unseen(k)):
                        self._server._collision(store, k)
                    doc = view.version(k)
                if doc is not None and applies(query, doc):
                    raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)

    def _pre_image(self, key: Any) -> Document | None:
        """The document as the running operation found it, when it is the only document of
        this collection the operation changed (so no other index entry moved meanwhile)."""
        op = self._server._op
        if op is None:
            return None
        db, name = self._store.db_name, self._store.name
        pre: Document | None = op.log.get((db, name, key))
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
        found = self._iter_documents(query) if sort is None else self._select(query, sort)
        stored = next(iter(found), None)
        if stored is None and not upsert:
            return None
        after = return_document is ReturnDocument.AFTER or kwargs.get("new")
        old = None
        if stored is not None:
            if not after:
                old = self._copy_only_fields(stored, projection, dict)
            query = {"_id": stored["_id"]}
        steps = None if remove or stored is None else update_plan(update)
        if steps is not None and stored is not None:  # the common update, without the loop
            self._update_one_natively(stored, query, update, steps)
        elif remove:
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
            doc = self._store._documents.get(store_key(query.get("_id")))
            if doc is None or "_id" not in query:
                return self.find_one(query, projection)
            if projection is None:
                return private_copy(doc)  # what the next read returns once it is stored
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
            selected = self._select(spec, None)
        else:
            view = self._server._view(self._store)
            docs = self._store._documents
            selected = iter(view.documents(None) if view is not None else list(docs.values()))
        if stages and isinstance(stages[0], Mapping) and list(stages[0]) == ["$group"]:
            found = list(selected)
            grouped = native_group(found, stages[0]["$group"])
            if grouped is not None:  # new documents of immutable values: no copies needed
                return run_pipeline(grouped, self.database, stages[1:])
            selected = iter(found)
        # Private copies (stages may change them); BSON copies are several times cheaper.
        docs = [private_copy(d) for d in selected]
        return run_pipeline(docs, self.database, stages)

    def distinct(self, key: str, filter: Any = None, session: Any = None) -> list[Any]:
        """mongomock's, its values told apart as BSON values (``true`` is not ``1``), in the
        order first met."""
        if not isinstance(key, str):
            raise TypeError("key must be an instance of str")
        spec = {} if filter is None else filter
        mongomock.collection.validate_is_mapping("filter", spec)
        found: dict[Any, Any] = {}
        for doc in self._iter_documents(spec):
            for values in mongomock.filtering.iter_key_candidates(key, doc):
                if values is mongomock.filtering.NOTHING:
                    continue
                for value in values if isinstance(values, list) else [values]:
                    found.setdefault(canonical(value), value)
        return [unshared(value) for value in found.values()]

    def _apply_update_document(
        self, existing_document: Document, spec: Any, document: Any, was_insert: bool
    ) -> Any:
        replaced = None
        if not was_insert:
            replaced = self._capture_in_place(existing_document, *_update_paths(document))
        longs = _long_increments(existing_document, document)
        try:
            result = super()._apply_update_document(existing_document, spec, document, was_insert)
        except OperationFailure as exc:
            if replaced is not None:  # a document's failed update leaves it as it was
                self._store._documents.swap(store_key(replaced.get("_id")), replaced)
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


def applies(flt: Any, doc: Document) -> bool:
    """mongomock's ``filter_applies``, through the fast path when it can decide; booleans
    never equal numbers (mongomock compares with Python's ``==``, where ``True == 1``)."""
    result = fast_match(flt, doc)
    if result is not None:
        return result
    flt = patched(flt)
    filter_applies = mongomock.filtering.filter_applies
    if mixes_bools(flt):
        try:
            return bool(filter_applies(with_bson_bools(flt), with_bson_bools(doc)))
        except Exception:
            pass
    return bool(filter_applies(flt, doc))


def _sort_key(name: str) -> Callable[[Document], Any]:
    resolve = mongomock.filtering.resolve_sort_key
    return lambda doc: resolve(name, doc)


def _unchanged(names: tuple[str, ...], pre: Document, post: Document) -> bool:
    """Whether ``post`` has the same entry as ``pre`` in a unique index whose entry depends
    on the top-level fields ``names``."""
    return all(same_value(pre.get(name, ABSENT), post.get(name, ABSENT)) for name in names)


def _project(doc: Document, projection: Any) -> Document | None:
    """A private copy of ``doc`` cut to a plain inclusion projection of top-level fields
    (``{"a": 1, "b": 1}``), or None for any other projection (mongomock's path handles it).
    Its fields come ``_id`` first, then in the projection's order (a server keeps the
    document's: equal as dicts, different when listed)."""
    if type(projection) is not dict or not projection:
        return None
    # _id first, as a server returns it; dropped at the end if the projection excludes it.
    out: Document = {"_id": doc["_id"]} if "_id" in doc else {}
    keep_id = True
    immutable = True
    for name, flag in projection.items():
        kind = type(flag)
        if type(name) is not str or (kind is not int and kind is not bool):
            return None
        if name == "_id":
            keep_id = bool(flag)
            continue
        if flag != 1 or name[:1] == "$" or "." in name:
            return None
        value = doc.get(name, ABSENT)
        if value is not ABSENT:
            out[name] = value
            if type(value) not in IMMUTABLE:
                immutable = False
    if not keep_id:
        if len(projection) == 1:
            return None  # {"_id": 0} alone is an exclusion projection
        out.pop("_id", None)
    return out if immutable else private_copy(out)  # immutable values: already a copy


def _immutable_id(msg: str) -> WriteError:
    """The server's error (code 66) for an update or replacement that would change ``_id``."""
    return WriteError(msg, 66, {"code": 66, "codeName": "ImmutableField", "errmsg": msg})


def _altered_id(new_id: Any) -> str:
    """mongomock's message for a changed ``_id``, which is the server's."""
    return (
        "After applying the update, the (immutable) field '_id' was found to have been "
        f"altered to _id: {new_id}"
    )


class WorkingCopy(dict):  # type: ignore[type-arg]
    """A private copy of a stored document, handed to mongomock's update loop in its place.

    mongomock deep-copies each document it updates (to compare the result with, and to
    restore on a failed unique check) and then changes the stored one in place. The update
    changes this copy instead, which ``_capture_in_place`` puts in the store; the original,
    never changed, is the deep copy mongomock asks for and the operation's pre-image. The
    copy shares the immutable values (a flat document is one dict copy) and deep-copies the
    rest (``unshared``), so a NaN still equals itself in mongomock's "was it modified"
    comparison.
    """

    __slots__ = ("original",)

    def __init__(self, original: Document) -> None:
        super().__init__(original)
        for name, value in original.items():
            if type(value) not in IMMUTABLE:
                self[name] = copy.deepcopy(value)
        self.original: Document | None = original

    def __deepcopy__(self, memo: dict[int, Any]) -> Document:
        if self.original is not None:
            return self.original
        return copy.deepcopy(dict(self), memo)


def put(docs: IndexedDocuments, key: Any, value: Document | None) -> None:
    """Store ``value`` under ``key`` (None: remove the document)."""
    if value is None:
        docs.pop(key, None)
    else:
        docs[key] = value
