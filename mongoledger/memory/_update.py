"""The common update, applied natively: ``$inc``, ``$set``, ``$max`` and ``$min`` of top-level
fields to plain values (what a ledger's every write sends), and a one-stage ``$set`` pipeline
of literals and fields (a ledger's capture), with exactly mongomock's results.

mongomock applies an update through generic machinery: it rebuilds the update and the filter
to normalise their datetimes, walks each path part by part, BSON-encodes every ``$set`` value
to validate it, and deep-compares the whole document. For the shape above, all of that comes
down to a few dictionary operations; :func:`plan` recognises the shape (None: mongomock's path
serves) and :func:`apply` performs it on one document, refusing (False, nothing changed) when
that document's current values are outside what it reproduces exactly (then mongomock's path
serves that document).
"""

from __future__ import annotations

import datetime
from typing import Any

import bson
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from ._bson import ABSENT, Document, stored_datetime

__all__ = ["Plan", "apply", "fields", "is_long", "plan"]

# (operator, field, value), in the order the update document gives them; a pipeline's field
# path is ("$copy", field, the field it names).
Plan = tuple[tuple[str, str, Any], ...]

_NUMBERS = frozenset({int, Int64, float})
_ORDERED = frozenset({int, Int64, float, datetime.datetime})  # $max/$min: Python's order is BSON's
_SETTABLE = frozenset(
    {str, int, Int64, float, bool, type(None), bson.ObjectId, datetime.datetime, Decimal128}
)
_INT64 = range(-(2**63), 2**63)


def plan(update: Any) -> Plan | None:
    """The native plan of an update document, or None when mongomock's path must serve it."""
    if type(update) is list:
        return _pipeline_plan(update)
    if type(update) is not dict or not update:
        return None
    steps: list[tuple[str, str, Any]] = []
    seen: set[str] = set()
    for op, fields in update.items():
        if op not in ("$inc", "$set", "$max", "$min") or type(fields) is not dict or not fields:
            return None
        for name, given in fields.items():
            # Top-level names only (no paths, positional operators, NUL, or the _id), each
            # once: a name twice is a conflict the server refuses, left to mongomock's path.
            if type(name) is not str or not _top_level(name) or name in seen:
                return None
            if op == "$set":
                value = _stored(given)
                if value is ABSENT:
                    return None
            elif type(given) not in (_NUMBERS if op == "$inc" else _ORDERED):
                return None
            else:  # $max/$min of a datetime compare it as stored
                value = stored_datetime(given) if type(given) is datetime.datetime else given
            seen.add(name)
            steps.append((op, name, value))
    return tuple(steps)


def _pipeline_plan(pipeline: list[Any]) -> Plan | None:
    """The plan of an update pipeline of one ``$set`` (``$addFields``) stage whose values are
    ``$literal`` plain values or top-level field paths (a ledger's capture closes its hold
    so): ``$set`` steps, and ``$copy`` steps naming the field to copy."""
    if len(pipeline) != 1 or type(pipeline[0]) is not dict or len(pipeline[0]) != 1:
        return None
    ((stage, fields),) = pipeline[0].items()
    if stage not in ("$set", "$addFields") or type(fields) is not dict or not fields:
        return None
    steps: list[tuple[str, str, Any]] = []
    for name, value in fields.items():
        if type(name) is not str or not _top_level(name):
            return None
        if type(value) is str:
            source = value[1:]
            if value[:1] != "$" or (not _top_level(source) and source != "_id"):
                return None
            steps.append(("$copy", name, source))
            continue
        if type(value) is not dict or len(value) != 1 or "$literal" not in value:
            return None
        literal = _stored(value["$literal"])
        if literal is ABSENT:
            return None
        steps.append(("$set", name, literal))
    return tuple(steps)


def _stored(value: Any) -> Any:
    """A value to set as the document will store it (a datetime naive UTC to the
    millisecond), or ABSENT when it is not one the native path sets (a container, an int
    beyond int64, which mongomock's encoding check refuses, ...)."""
    kind = type(value)
    if kind not in _SETTABLE or (kind is int and value not in _INT64):
        return ABSENT
    return stored_datetime(value) if kind is datetime.datetime else value


def _top_level(name: str) -> bool:
    """A top-level field name an update may set (not ``_id``, no path, operator or NUL)."""
    return bool(name) and name != "_id" and not ("." in name or "$" in name or "\0" in name)


def fields(steps: Plan) -> frozenset[str]:
    """The top-level fields a plan can change."""
    return frozenset(name for _, name, _ in steps)


def apply(doc: Document, steps: Plan) -> bool:
    """Apply ``steps`` to ``doc`` as mongomock would, or return False having changed nothing
    when one of ``doc``'s values is outside what this reproduces exactly (a non-numeric
    ``$inc`` target, ``$max`` across types, ...)."""
    copies = None  # a pipeline stage reads every field as the document was before it
    for op, name, value in steps:
        if op == "$set":
            continue
        if op == "$copy":
            found = doc.get(value, ABSENT)
            if type(found) not in _SETTABLE:  # missing, or a value to deep-copy
                return False
            if copies is None:
                copies = {}
            copies[name] = found
            continue
        current = doc.get(name, ABSENT)
        if current is ABSENT:
            continue
        kind = type(current)
        if op == "$inc":
            if kind not in _NUMBERS:
                return False
        elif kind is not type(value) and not (kind in _NUMBERS and type(value) in _NUMBERS):
            return False  # $max/$min across types: BSON's type order, mongomock's path
    for op, name, value in steps:
        if op == "$set":
            doc[name] = value
        elif op == "$copy":
            assert copies is not None
            doc[name] = copies[name]
        elif op == "$inc":
            current = doc.get(name, 0)
            result = current + value
            # mongomock adds Python ints: an int64 operand keeps the result an int64.
            if type(result) is int and (is_long(value) or is_long(current)):
                result = Int64(result)
            doc[name] = result
        elif op == "$max":
            doc[name] = max(doc.get(name, value), value)
        else:
            doc[name] = min(doc.get(name, value), value)
    return True


def is_long(value: Any) -> bool:
    """Whether BSON holds ``value`` as an int64 (PyMongo encodes an int beyond int32 so)."""
    return type(value) is Int64 or (type(value) is int and not -(2**31) <= value < 2**31)
