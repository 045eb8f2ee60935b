"""Equality indexes for the engine's collections, so indexed lookups stop scanning.

mongomock answers every query by testing every document. The engine keeps a collection's
documents in ``IndexedDocuments`` instead of a plain ``OrderedDict``: a lookup by ``_id`` is a
dict access, and an equality (``{f: v}``, ``{f: {"$eq": v}}``, ``{f: {"$in": [...]}}``) on a
top-level field that leads an index (or any top-level field under a wildcard index) reads a
hash bucket. The candidates are still checked with mongomock's matcher, so an index only ever
narrows the scan; it never decides a match.

What stays O(n), as a collection scan would on a server without a suitable index: queries with
no accelerable equality (ranges, ``$or``, ``$exists``, ``$expr``, dotted paths, ``null``),
equality on a value type outside ``_KEY_TYPES`` (documents holding such a value in an indexed
field are candidates of every lookup on it), sorts (over the matching documents), aggregation
stages after a leading ``$match``, and building a field's index (once, on its first query).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping
from typing import Any

from bson import ObjectId

from ._bson import store_key

# Values whose Python equality and hash agree with the query matcher's equality (1 == 1.0 ==
# Int64(1) on a server too; True == 1 only widens a bucket, the matcher decides).
_KEY_TYPES = (str, int, float, ObjectId)
_WILD = ("wild",)  # a document whose value cannot be bucketed: a candidate for every lookup


def _key(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isnan(value)  # NaN is not a bucket key
    return isinstance(value, _KEY_TYPES)


def _doc_keys(doc: Mapping[str, Any], name: str) -> tuple[Any, ...]:
    """The bucket keys of ``doc`` for field ``name`` (array elements count, as on a server)."""
    value = doc.get(name)
    if value is None:
        return ()  # never returned by a lookup: null queries are not accelerated
    if _key(value):
        return (value,)
    if isinstance(value, list):
        if all(_key(v) or v is None for v in value):
            return tuple({v for v in value if v is not None})
        return _WILD
    return _WILD


def _query_keys(value: Any) -> list[Any] | None:
    """The bucket keys a filter value selects, or None when it cannot use an index."""
    if _key(value):
        return [value]
    if isinstance(value, Mapping) and len(value) == 1:
        ((op, arg),) = value.items()
        if op == "$eq" and _key(arg):
            return [arg]
        if op == "$in" and isinstance(arg, list | tuple) and all(_key(v) for v in arg):
            return list(arg)
    return None


def _id_query_keys(value: Any) -> list[Any] | None:
    """The store keys an ``_id`` filter selects: scalars as for any field, and documents
    (``{"ledger": ..., "key": ...}``), which a server finds through its ``_id`` index too."""
    if isinstance(value, Mapping) and value and not any(str(k).startswith("$") for k in value):
        return [value]  # its store key: _bson.store_key
    if isinstance(value, Mapping) and len(value) == 1:
        ((op, arg),) = value.items()
        literals = [arg] if op == "$eq" else arg if op == "$in" else None
        if isinstance(literals, list | tuple):
            keys = [_id_query_keys(v) if isinstance(v, Mapping) else [v] for v in literals]
            if all(
                k is not None and (isinstance(v, Mapping) or _key(v))
                for k, v in zip(keys, literals, strict=True)
            ):
                return [k for found in keys if found is not None for k in found]
    return _query_keys(value)


class _FieldIndex:
    """value -> keys (in natural order unless marked), for one top-level field."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.buckets: dict[Any, dict[Any, None]] = {}
        self.unordered: set[Any] = set()
        self.entries: dict[Any, tuple[Any, ...]] = {}
        self.wild: dict[Any, None] = {}

    def add(self, key: Any, doc: Mapping[str, Any], *, appended: bool) -> None:
        new = _doc_keys(doc, self.name)
        old = self.entries.get(key, ())
        if new == old:
            return
        if old:
            self.remove(key)
        if not new:
            return
        self.entries[key] = new
        if new is _WILD:
            self.wild[key] = None
            return
        for value in new:
            bucket = self.buckets.setdefault(value, {})
            if bucket and not appended:
                self.unordered.add(value)  # an update moved the key into a non-empty bucket
            bucket[key] = None

    def remove(self, key: Any) -> None:
        old = self.entries.pop(key, ())
        if old is _WILD:
            del self.wild[key]
            return
        for value in old:
            bucket = self.buckets[value]
            del bucket[key]
            if not bucket:
                del self.buckets[value]
                self.unordered.discard(value)


class IndexedDocuments(collections.OrderedDict[Any, Any]):
    """A collection's documents (key -> document) with equality indexes kept in step.

    Documents a write changed in place are ``dirty`` until the engine re-indexes them (at the
    end of the operation); until then they are candidates of every lookup.

    While transactions overlap, ``overlay`` holds the other versions of the documents some
    operation must see instead of the stored one (``_transactions.Overlay``), and ``shadow``
    indexes them (each key under every value its versions hold), so lookups find them too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, _FieldIndex] = {}
        self.dirty: set[Any] = set()
        self.position: dict[Any, int] = {}  # natural order, without walking the collection
        self._next = 0
        self.overlay: dict[Any, Any] = {}
        self.shadow: IndexedDocuments | None = None

    # -- mutation (every path keeps the indexes current) ----------------------------------

    def __setitem__(self, key: Any, doc: Any) -> None:
        appended = key not in self
        super().__setitem__(key, doc)
        if appended:
            self.position[key] = self._next
            self._next += 1
        for index in self.fields.values():
            index.add(key, doc, appended=appended)
        self.dirty.discard(key)

    def load(self, items: Iterable[tuple[Any, Any]]) -> None:
        """Store documents in bulk (opening the embedded store): ``self[key] = doc`` for each,
        without the per-document index upkeep while no field index is built yet."""
        if self.fields:
            for key, doc in items:
                self[key] = doc
            return
        put = super().__setitem__
        position, n = self.position, self._next
        for key, doc in items:
            if key not in position:
                position[key] = n
                n += 1
            put(key, doc)
            self.dirty.discard(key)
        self._next = n

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        del self.position[key]
        for index in self.fields.values():
            index.remove(key)
        self.dirty.discard(key)

    _MARKER = object()

    def pop(self, key: Any, default: Any = _MARKER) -> Any:
        if key in self:
            doc = self[key]
            del self[key]
            return doc
        if default is self._MARKER:
            raise KeyError(key)
        return default

    def popitem(self, last: bool = True) -> tuple[Any, Any]:
        key = next(reversed(self)) if last else next(iter(self))
        return key, self.pop(key)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def clear(self) -> None:
        super().clear()
        self.fields.clear()
        self.dirty.clear()
        self.position.clear()

    def move_to_end(self, key: Any, last: bool = True) -> None:
        raise NotImplementedError("the engine never reorders documents")

    def replace(self, key: Any, doc: Any, fields: frozenset[str] | None) -> None:
        """Store a new version of a document whose changes are confined to the top-level
        ``fields`` (None: unknown, re-index everything): the other indexes keep its entry."""
        if fields is None or key not in self:
            self[key] = doc
            return
        super().__setitem__(key, doc)  # an existing key keeps its place
        for index in self.fields.values():
            if index.name in fields:
                index.add(key, doc, appended=False)
        self.dirty.discard(key)

    def swap(self, key: Any, doc: Any) -> None:
        """Put another object under an existing key, in its place, without re-indexing: the
        caller marks the key dirty (re-indexed when the write ends)."""
        super().__setitem__(key, doc)

    def reindex(self, key: Any) -> None:
        """Re-read a document that was changed in place."""
        self.dirty.discard(key)
        doc = self.get(key)
        for index in self.fields.values():
            if doc is None:
                index.remove(key)
            else:
                index.add(key, doc, appended=False)

    # -- lookups ----------------------------------------------------------------------------

    def candidates(
        self, flt: Mapping[str, Any], indexed: Any, *, ordered: bool = True
    ) -> list[Any] | None:
        """Keys of the documents that may match ``flt`` (in natural order when ``ordered``),
        or None when no index applies (scan everything). ``indexed(field)`` says whether a
        field has an index."""
        best: list[Any] | None = None
        for name, value in _clauses(flt):
            keys = self._lookup(name, value, indexed, ordered=ordered)
            if keys is not None and (best is None or len(keys) < len(best)):
                best = keys
                if len(best) <= 1:
                    break
        return best

    def _lookup(self, name: str, value: Any, indexed: Any, *, ordered: bool) -> list[Any] | None:
        # _id: the store's own keys (a document _id is kept under its canonical form)
        wanted = _id_query_keys(value) if name == "_id" else _query_keys(value)
        if wanted is None:
            return None
        if name == "_id":
            found = [k for k in dict.fromkeys(map(store_key, wanted)) if k in self]
            if ordered and len(found) > 1:
                found = self._natural(set(found))
            return found
        if "." in name or name.startswith("$") or not indexed(name):
            return None
        index = self.fields.get(name)
        if index is None:
            index = self.fields[name] = _FieldIndex(name)
            for key, doc in self.items():
                index.add(key, doc, appended=True)
        for value_key in wanted:
            if value_key in index.unordered:
                bucket = index.buckets[value_key]
                index.buckets[value_key] = dict.fromkeys(self._natural(set(bucket)))
                index.unordered.discard(value_key)
        buckets = [index.buckets.get(v, {}) for v in dict.fromkeys(wanted)]
        extra = [k for k in self.dirty if all(k not in b for b in buckets)]
        if not ordered:
            return [k for b in buckets for k in b] + list(index.wild) + extra
        if len(buckets) == 1 and not extra and not index.wild:
            return list(buckets[0])
        return self._natural({k for b in buckets for k in b} | set(extra) | set(index.wild))

    def _natural(self, keys: set[Any]) -> list[Any]:
        return sorted(keys, key=self.position.__getitem__)


def _clauses(flt: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """The (field, value) clauses every match must satisfy (top level and ``$and``)."""
    for name, value in flt.items():
        if name == "$and" and isinstance(value, list):
            for sub in value:
                if isinstance(sub, Mapping):
                    yield from _clauses(sub)
        elif isinstance(name, str) and not name.startswith("$"):
            yield name, value


def index_fields(indexes: Mapping[str, Mapping[str, Any]]) -> tuple[set[str], Any]:
    """The fields that lead an index, and the wildcard projection (None: no wildcard index)."""
    leading: set[str] = set()
    wildcard: Any = None
    for spec in indexes.values():
        keys = spec.get("key") or []
        if not keys:
            continue
        first = keys[0][0]
        if first == "$**":
            wildcard = spec.get("wildcardProjection") or {}
        else:
            leading.add(first)
    return leading, wildcard


def wildcard_covers(projection: Mapping[str, Any], name: str) -> bool:
    if not projection:
        return True
    if any(projection.values()):  # an inclusion projection
        return bool(projection.get(name))
    return name not in projection
