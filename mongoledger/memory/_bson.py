"""BSON value semantics the engine needs: encoding checks, private copies, and equality.

A server compares values as BSON does: ``1``, ``1.0`` and ``Int64(1)`` are one number, but
``True`` is a boolean and never equals ``1`` (Python says it does). ``store_key`` and
``canonical`` give keys under which exactly the values a server treats as equal coincide;
``BsonBool`` lets mongomock's matcher (which compares with Python's ``==``) tell them apart.
"""

from __future__ import annotations

import copy
import datetime
import math
from collections.abc import Mapping
from typing import Any

import bson
import mongomock.helpers as _mm_helpers
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.timestamp import Timestamp
from pymongo.errors import DocumentTooLarge

Document = dict[str, Any]

_patch_in_document: Any = _mm_helpers.patch_datetime_awareness_in_document

MAX_BSON_SIZE = 16 * 1024 * 1024
CODEC = CodecOptions(document_class=dict, tz_aware=False)

# Types mongomock's datetime patching passes through unchanged (exact types: a subclass may
# be a Mapping or a tuple).
UNPATCHED = frozenset({str, int, bool, float, type(None), bson.ObjectId, Int64, bytes})
# Values no update changes in place (exact types), shared between a document's versions.
IMMUTABLE = UNPATCHED | {datetime.datetime, bson.Binary, Decimal128, Timestamp}


def stored_datetime(value: datetime.datetime) -> datetime.datetime:
    """A datetime as mongomock's patching (``patch_datetime_awareness_in_document``) leaves it,
    and as BSON stores it: naive UTC, to the millisecond."""
    millis = value.microsecond // 1000 * 1000
    offset = value.utcoffset()
    if offset:  # None (naive) and zero (UTC) need no arithmetic
        value = value - offset
    return value.replace(tzinfo=None, microsecond=millis)


def _needs_patching(value: Any) -> bool:
    """Whether mongomock's datetime patching would change a query (datetimes, tuples)."""
    kind = type(value)
    if kind in UNPATCHED:
        return False
    if kind is not dict and kind is not list:
        return isinstance(value, datetime.datetime | tuple | Mapping)
    # A loop over a stack, not recursion: this runs on every query's every value.
    stack = [value]
    while stack:
        node = stack.pop()
        for item in node.values() if type(node) is dict else node:
            kind = type(item)
            if kind in UNPATCHED:
                continue
            if kind is dict or kind is list:
                stack.append(item)
            elif isinstance(item, datetime.datetime | tuple | Mapping):
                return True
    return False


def patched(query: Any) -> Any:
    """mongomock's datetime normalization of a query, skipped when it would change nothing
    (it rebuilds every dict and list of the query). Only mongomock's own matcher needs it:
    the engine's fast matcher normalises the datetimes it compares (``_match``)."""
    if _needs_patching(query):
        return _patch_in_document(query)
    return query


def roundtrip(document: Mapping[str, Any]) -> Document:
    """Encode and decode like a server would store it (validates keys, ints, size)."""
    return encoded(document)[0]


def encoded(document: Mapping[str, Any]) -> tuple[Document, bytes]:
    """``roundtrip``, with the BSON it decoded."""
    raw = bson.encode(document, codec_options=CODEC)
    if len(raw) > MAX_BSON_SIZE:
        raise too_large(len(raw))
    return bson.decode(raw, codec_options=CODEC), raw


def too_large(size: int) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"BSON document too large ({size} bytes) - the connected server supports "
        f"BSON document sizes up to {MAX_BSON_SIZE} bytes."
    )


def private_copy(doc: Document) -> Document:
    """A deep copy of a stored document (stored documents are BSON-clean: decoding their
    encoding is the same copy, several times faster than ``deepcopy``)."""
    try:
        return bson.decode(bson.encode(doc, codec_options=CODEC), codec_options=CODEC)
    except Exception:
        return copy.deepcopy(doc)


def unshared(value: Any) -> Any:
    """``value`` for another document: an immutable one as it is, anything else a deep copy
    (``deepcopy`` keeps float objects, so a NaN still equals itself)."""
    return value if type(value) in IMMUTABLE else copy.deepcopy(value)


def same(a: Any, b: Any) -> bool:
    """Equal as stored BSON (so ``1``, ``True`` and ``1.0`` differ: an update from one to
    another changes the document)."""
    return bson.encode({"v": a}) == bson.encode({"v": b})


_SCALARS = (str, int, bson.ObjectId, datetime.datetime, bytes)
ABSENT = object()


def same_value(a: Any, b: Any) -> bool:
    """``same``, quicker for two scalars of one type."""
    if a is b:
        return True
    if a is ABSENT or b is ABSENT:
        return False
    if type(a) is type(b) and isinstance(a, _SCALARS):
        return bool(a == b)
    return same(a, b)


# -- keys that keep booleans apart from numbers ------------------------------------------------


class _BoolKey:
    """The store key of a boolean ``_id`` (a plain ``True`` would collide with ``1``)."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"_BoolKey({self.value})"


_BOOL_KEYS = {True: _BoolKey(True), False: _BoolKey(False)}
_PLAIN_IDS = frozenset({bson.ObjectId, str, int, Int64, float, bytes, datetime.datetime})


def store_key(doc_id: Any) -> Any:
    """The key a document with this ``_id`` is stored under: equal for the ``_id`` values a
    server's ``_id`` index treats as one (``1``, ``1.0``, ``Int64(1)``), different for the
    others (``True`` and ``1``; a sub-document holding either)."""
    kind = type(doc_id)
    if kind in _PLAIN_IDS:
        return doc_id
    if kind is bool:
        return _BOOL_KEYS[doc_id]
    if isinstance(doc_id, Mapping):
        return ("$doc", canonical(doc_id))
    return doc_id


_NULL, _NUMBER, _STRING, _DOC, _ARRAY, _BOOL, _OTHER = range(7)


def canonical(value: Any) -> Any:
    """A hashable key of ``value`` under which the values a query's equality treats as
    equal coincide: numbers by value, booleans apart from them, documents by field order."""
    kind = type(value)
    if kind is bool:
        return (_BOOL, value)
    if kind is int or kind is Int64:
        return (_NUMBER, int(value))
    if kind is float:
        return (_NUMBER, "nan") if math.isnan(value) else (_NUMBER, value)
    if kind is Decimal128:
        number = value.to_decimal()
        return (_NUMBER, "nan") if number.is_nan() else (_NUMBER, number)
    if kind is str:
        return (_STRING, value)
    if value is None:
        return (_NULL,)
    if isinstance(value, Mapping):
        return (_DOC, tuple((k, canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (_ARRAY, tuple(canonical(v) for v in value))
    try:
        return (_OTHER, bson.encode({"v": value}))
    except Exception:
        return (_OTHER, repr(value))


class BsonBool:
    """A boolean as mongomock's matcher must see it: equal only to the same boolean, never to
    ``1`` or ``0``, still a ``bool`` to ``isinstance`` (so ``$type`` and BSON ordering know
    it)."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return bool

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BsonBool) and other.value is self.value

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(("bool", self.value))

    def __lt__(self, other: Any) -> bool:
        return bool(self.value < _bool(other))

    def __le__(self, other: Any) -> bool:
        return bool(self.value <= _bool(other))

    def __gt__(self, other: Any) -> bool:
        return bool(self.value > _bool(other))

    def __ge__(self, other: Any) -> bool:
        return bool(self.value >= _bool(other))

    def __bool__(self) -> bool:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)


def _bool(other: Any) -> Any:
    return other.value if isinstance(other, BsonBool) else other


_TRUE, _FALSE = BsonBool(True), BsonBool(False)


def mixes_bools(flt: Any) -> bool:
    """Whether a filter holds a boolean, or a number a boolean could be mistaken for (0 or
    1): the only filters Python's ``True == 1`` can mislead."""
    kind = type(flt)
    if kind is bool:
        return True
    if kind is int or kind is float or kind is Int64:
        return flt in (0, 1)
    if kind is Decimal128:
        return flt.to_decimal() in (0, 1)
    if isinstance(flt, Mapping):
        return any(mixes_bools(v) for v in flt.values())
    if isinstance(flt, list | tuple):
        return any(mixes_bools(v) for v in flt)
    return False


def with_bson_bools(value: Any) -> Any:
    """``value`` with every boolean replaced by a ``BsonBool`` (containers rebuilt)."""
    kind = type(value)
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is dict or isinstance(value, Mapping):
        return {k: with_bson_bools(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [with_bson_bools(v) for v in value]
    return value
