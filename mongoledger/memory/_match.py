"""A fast path for mongomock's matcher on the filters an application sends most.

``match(filter, doc)`` decides filters made of top-level fields compared with plain scalars
(equality, ``$eq``/``$ne``/``$gt``/``$gte``/``$lt``/``$lte``/``$exists``/``$in``, ``$type:
"number"``) joined by ``$and``/``$or``, exactly as ``mongomock.filtering.filter_applies``
would after the datetime normalization of the filter (``_bson.patched``: naive UTC, to the
millisecond), several times faster. It normalizes the datetimes it compares itself, so a
filter it decides is never patched. Anything else (arrays or sub-documents in the document,
dotted paths, ``$expr`` beyond numbers, regexes, mixed-type comparisons, ...) returns None,
and the caller asks mongomock.
Booleans equal only booleans, as in BSON (Python's ``True == 1`` does not apply).
"""

from __future__ import annotations

import datetime
import math
import operator
from collections.abc import Callable
from typing import Any

from bson import Int64, ObjectId

from ._bson import stored_datetime

_ABSENT = object()
# Types whose Python equality/ordering is what mongomock applies to them.
_EQ_TYPES = (str, int, float, ObjectId, datetime.datetime, type(None))
_DATETIME = datetime.datetime
_NUMBERS = (int, float)
_NUMBER_TYPES = frozenset({int, Int64, float})  # the plain values $type "number" matches
_INTS = frozenset({int, Int64})  # exact types: bool is an int too, and sorts apart
# Exact types _plain accepts without asking (a float may be NaN).
_PLAIN_TYPES = frozenset({str, int, Int64, bool, ObjectId, datetime.datetime, type(None)})
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
_EXPR_COMPARE = {**_COMPARE, "$eq": operator.eq, "$ne": operator.ne}
# Exact types whose Python equality is BSON's between two values of that same type.
_SAME_TYPE_EQUAL = frozenset({str, int, Int64, ObjectId})


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _plain(value: Any) -> bool:
    return isinstance(value, _EQ_TYPES) and not _nan(value)  # mongomock compares NaN by identity


def _equal(value: Any, wanted: Any) -> bool | None:
    if type(wanted) is _DATETIME:
        wanted = stored_datetime(wanted)  # as the patched filter holds it
    elif not _plain(wanted) or isinstance(wanted, _DATETIME):  # a subclass: mongomock's path
        return None
    if value is _ABSENT:
        return wanted is None
    if (type(value) is bool) is not (type(wanted) is bool):
        return False  # BSON keeps booleans apart from numbers (Python's True == 1)
    return bool(value == wanted)


def _compare(op: Callable[[Any, Any], bool], value: Any, bound: Any) -> bool | None:
    if value is _ABSENT:
        return False
    if isinstance(bound, _DATETIME):
        if type(bound) is not _DATETIME:
            return None
        bound = stored_datetime(bound)
    if isinstance(value, bool) or isinstance(bound, bool):
        return None
    if isinstance(value, _NUMBERS) and isinstance(bound, _NUMBERS):
        if _nan(value) or _nan(bound):  # NaN sorts below every number in BSON
            return None
        return bool(op(value, bound))
    if type(value) is type(bound) is str:
        return bool(op(value, bound))
    if type(value) is type(bound) is datetime.datetime and (value.tzinfo is None) == (
        bound.tzinfo is None
    ):
        return bool(op(value, bound))
    return None


def _operator(op: str, arg: Any, value: Any) -> bool | None:
    if op == "$eq":
        return _equal(value, arg)
    if op == "$ne":
        result = _equal(value, arg)
        return None if result is None else not result
    if op in _COMPARE:
        return _compare(_COMPARE[op], value, arg)
    if op == "$exists":
        return bool(arg) == (value is not _ABSENT)
    if op == "$type" and type(arg) is str and arg == "number":  # a plain value, or missing
        return type(value) in _NUMBER_TYPES
    if op == "$in" and isinstance(arg, list) and value is not _ABSENT:
        results = [_equal(value, item) for item in arg]
        return None if None in results else any(results)
    return None


def match(flt: Any, doc: dict[str, Any]) -> bool | None:
    """Whether ``doc`` matches ``flt``; None when this fast path cannot tell."""
    if type(flt) is not dict:
        return None
    get = doc.get
    for name, cond in flt.items():
        if type(name) is not str:
            return None
        if name[:1] == "$":
            if name in ("$and", "$or"):
                if type(cond) is not list or not cond:
                    return None
                want_all = name == "$and"
                for sub in cond:
                    result = match(sub, doc)
                    if result is None:
                        return None
                    if result is not want_all:
                        break
                else:
                    result = want_all
            elif name == "$expr":
                result = _expr(cond, doc)
                if result is None:
                    return None
            else:
                return None
            if not result:
                return False
            continue
        if "." in name:
            return None
        value = get(name, _ABSENT)
        kind = type(value)
        if kind is type(cond) and kind in _SAME_TYPE_EQUAL:  # {field: value}, the commonest
            if value != cond:
                return False
            continue
        if value is not _ABSENT and kind not in _PLAIN_TYPES and not _plain(value):
            return None  # arrays and sub-documents have their own matching rules
        if cond is None:  # {field: None}: missing or null
            if value is not _ABSENT and value is not None:
                return False
            continue
        if type(cond) is dict:
            if len(cond) == 1:  # the common {field: {"$gte": 5}} and {field: {"$exists": b}}
                ((op, arg),) = cond.items()
                if op == "$exists":
                    if bool(arg) != (value is not _ABSENT):
                        return False
                    continue
                if op == "$type" and type(arg) is str and arg == "number":
                    if kind not in _NUMBER_TYPES:
                        return False
                    continue
                compare = _COMPARE.get(op)
                if compare is not None and kind in _INTS and type(arg) in _INTS:
                    if not compare(value, arg):
                        return False
                    continue
            if not cond:
                return None
            for op in cond:
                if not (isinstance(op, str) and op.startswith("$")):
                    return None
            for op, arg in cond.items():
                result = _operator(op, arg, value)
                if result is None:
                    return None
                if not result:
                    return False
        elif isinstance(cond, dict):
            return None  # a dict subclass: mongomock's path
        else:
            result = _equal(value, cond)
            if result is None:
                return None
            if not result:
                return False
    return True


def _expr_value(arg: Any, doc: dict[str, Any]) -> Any:
    """A number an aggregation expression evaluates to, or _ABSENT when this path can't tell."""
    kind = type(arg)
    if kind is str:
        if arg[:1] != "$" or arg[1:2] == "$" or "." in arg:
            return _ABSENT
        value = doc.get(arg[1:], _ABSENT)
        if type(value) in _INTS or _number(value):
            return value
        return _ABSENT
    if kind in _INTS:
        return arg
    if kind is dict:
        if len(arg) != 1:
            return _ABSENT
        terms = arg.get("$add")
        if type(terms) is not list:
            return _ABSENT
        total: Any = 0
        for item in terms:
            value = _expr_value(item, doc)
            if value is _ABSENT:
                return _ABSENT
            total += value
        return total
    return arg if _number(arg) else _ABSENT


def _number(value: Any) -> bool:
    return isinstance(value, _NUMBERS) and not isinstance(value, bool) and not _nan(value)


def _expr(expr: Any, doc: dict[str, Any]) -> bool | None:
    """``$expr`` comparisons of numbers, fields holding numbers and ``$add`` (else None)."""
    if type(expr) is not dict or len(expr) != 1:
        return None
    ((op, args),) = expr.items()
    compare = _EXPR_COMPARE.get(op)
    if compare is None or type(args) is not list or len(args) != 2:
        return None
    left = _expr_value(args[0], doc)
    right = _expr_value(args[1], doc)
    if left is _ABSENT or right is _ABSENT:
        return None
    return bool(compare(left, right))
