"""Sorts and ``$group`` stages over plain values, evaluated with Python's own comparisons.

mongomock orders values through a Python comparison object (``BsonComparable``), one call
per comparison, and groups by sorting on it: most of the time of a report or a ``verify()``
over many documents. When every value involved is of a type whose Python ordering is BSON's
within its type (numbers, strings, ObjectIds, booleans, naive datetimes, null), a plain tuple
key orders the same way: these functions use it, and return None for anything else (arrays,
documents, NaN, aware datetimes, dotted paths, operators they do not know) so the caller
falls back to mongomock. Differential tests hold the two paths equal.

``run_pipeline`` is mongomock's pipeline loop with one change: ``$group`` keys compare as BSON
values (mongomock's Python ``==`` would merge the groups of ``true`` and ``1``).
"""

from __future__ import annotations

import datetime
import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bson import Int64, ObjectId
from mongomock import aggregate as _mm_aggregate
from mongomock import command_cursor as _mm_command_cursor
from mongomock import filtering as _mm_filtering

from ._bson import canonical
from ._match import _nan

mm_aggregate: Any = _mm_aggregate
mm_command_cursor: Any = _mm_command_cursor
mm_filtering: Any = _mm_filtering

Document = dict[str, Any]

# BSON's sort order of the types handled here (a missing field sorts as null).
_TYPE_RANK = {
    type(None): 1,
    int: 2,
    Int64: 2,
    float: 2,
    str: 3,
    ObjectId: 7,
    bool: 8,
    datetime.datetime: 9,
}
_NUMBERS = (int, Int64, float)


def _key(value: Any) -> tuple[int, Any] | None:
    """The plain sort key of ``value``, or None when it needs BSON's comparison."""
    rank = _TYPE_RANK.get(type(value))
    if rank is None:
        return None
    if _nan(value):  # NaN sorts below every number in BSON
        return None
    if rank == 9 and value.tzinfo is not None:
        return None
    if rank == 7:
        return rank, value.binary
    return rank, value


def _field(path: Any) -> str | None:
    """The top-level field a ``"$name"`` expression reads, or None for anything else."""
    if type(path) is not str or not path.startswith("$") or path.startswith("$$"):
        return None
    name = path[1:]
    return name if name and "." not in name else None


def native_sort(docs: list[Document], sort: Any, stop: int | None) -> list[Document] | None:
    """``docs`` in ``sort`` order, or None when mongomock must order them. Equal keys keep
    natural order, as mongomock's stable sorts do; with ``stop``, only the first ``stop`` are
    ordered (a bounded heap, not a full sort)."""
    fields = list(sort)
    directions = {direction for _, direction in fields}
    if len(directions) != 1 or not all(
        type(name) is str and name[:1] != "$" and "." not in name for name, _ in fields
    ):
        return None
    names = [name for name, _ in fields]
    keys = []
    for doc in docs:
        key = []
        for name in names:
            part = _key(doc.get(name))
            if part is None:
                return None
            key.append(part)
        keys.append(tuple(key))
    reverse = directions.pop() < 0
    positions: Iterable[int] = range(len(docs))
    if stop is not None and stop < len(docs):
        pick = heapq.nlargest if reverse else heapq.nsmallest
        chosen = pick(stop, positions, key=keys.__getitem__)  # sorted()[:stop], stably
    else:
        chosen = sorted(positions, key=keys.__getitem__, reverse=reverse)
    return [docs[i] for i in chosen]


def native_group(docs: Sequence[Document], spec: Any) -> list[Document] | None:
    """A ``$group`` stage of ``_id: null | "$field"`` with ``$sum`` (of a field or a number),
    ``$min``/``$max`` (of a numeric field) and ``$first`` accumulators, in mongomock's output
    order (by group key) and field order, or None when mongomock must run it."""
    if not docs or not isinstance(spec, Mapping) or "_id" not in spec:
        return None  # (mongomock answers an empty input with one group: leave it that)
    by = spec["_id"]
    key_field = None if by is None else _field(by)
    if by is not None and key_field is None:
        return None
    plan: list[tuple[str, str, Any]] = []
    for out, accumulator in spec.items():
        if out == "_id":
            continue
        if type(accumulator) is not dict or len(accumulator) != 1:
            return None
        ((op, arg),) = accumulator.items()
        if op == "$sum" and type(arg) in (int, float):
            plan.append((out, "count", arg))
        elif op in ("$sum", "$min", "$max", "$first") and _field(arg) is not None:
            plan.append((out, op, _field(arg)))
        else:
            return None
    groups: dict[tuple[int, Any], list[Any]] = {}
    for doc in docs:
        value = None if key_field is None else doc.get(key_field)
        key = _key(value)
        if key is None:
            return None
        state = groups.get(key)
        first = state is None
        if state is None:
            state = groups[key] = [value] + [
                0 if op in ("count", "$sum") else None for _, op, _ in plan
            ]
        for i, (_, op, arg) in enumerate(plan, start=1):
            if op == "count":
                state[i] += arg
                continue
            item = doc.get(arg)
            if op == "$first":
                if first:
                    if arg not in doc or _key(item) is None:
                        return None  # mongomock skips a missing first value; leave it that
                    state[i] = item
                continue
            if item is None:
                continue  # null and missing: ignored by $sum, $min and $max
            if type(item) not in _NUMBERS or _nan(item):
                return None
            if op == "$sum":
                state[i] += item
            elif state[i] is None or (item < state[i] if op == "$min" else item > state[i]):
                state[i] = item
    # mongomock's field order: the accumulators, then _id (a server puts _id first).
    names = [out for out, _, _ in plan]
    return [
        {**dict(zip(names, groups[key][1:], strict=True)), "_id": groups[key][0]}
        for key in sorted(groups)
    ]


def run_pipeline(docs: list[Document], database: Any, stages: Sequence[Any]) -> Any:
    """mongomock's ``process_pipeline``, its ``$group`` replaced by ``bson_group``."""
    handlers = mm_aggregate._PIPELINE_HANDLERS
    collection: Any = docs
    for stage in stages:
        for operator, options in stage.items():
            if operator == "$group":
                collection = bson_group(list(collection), options)
                continue
            try:
                handler = handlers[operator]
            except KeyError as err:
                raise NotImplementedError(
                    f"{operator} is not a valid operator for the aggregation pipeline."
                ) from err
            if not handler:
                raise NotImplementedError(
                    f"Although '{operator}' is a valid operator for the aggregation pipeline, "
                    "it is currently not implemented in Mongomock."
                )
            collection = handler(collection, database, options)
    return mm_command_cursor.CommandCursor(collection)


def bson_group(docs: list[Document], spec: Any) -> list[Document]:
    """mongomock's ``$group`` stage, its groups keyed by BSON equality (``canonical``)."""
    by = spec["_id"]
    if not by:
        groups: list[tuple[Any, list[Document]]] = [(None, docs)]
    else:
        parse = mm_aggregate._parse_expression

        def key_of(doc: Document) -> Any:
            try:
                return parse(by, doc, ignore_missing_keys=True)
            except KeyError:
                return None

        keyed = [(key_of(doc), doc) for doc in docs]
        keyed.sort(key=lambda pair: mm_filtering.BsonComparable(pair[0]))
        found: dict[Any, tuple[Any, list[Document]]] = {}
        for key, doc in keyed:
            found.setdefault(canonical(key), (key, []))[1].append(doc)
        groups = list(found.values())
    out = []
    for key, members in groups:
        row = mm_aggregate._accumulate_group(spec, members)
        row["_id"] = key
        out.append(row)
    return out
