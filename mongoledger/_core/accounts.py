"""Accounts: references (an ``_id`` or an attribute set), how MongoDB compares attribute values,
the digest behind atomic get-or-create, the filters that find an account, the document a new
account starts as, and the ``Account`` model."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import bson
from bson import ObjectId
from bson.errors import InvalidDocument

from mongoledger._core import clock
from mongoledger._core.config import LedgerConfig
from mongoledger._core.dates import deep_utc, utc
from mongoledger._core.schema import (
    ATTRIBUTES_KEY,
    CODEC,
    CREATED_AT,
    HELD,
    INT64_MAX,
    INT64_MIN,
    MAX_DOCUMENT_SIZE,
    MIN_BALANCE,
    SEQ,
    preview,
)
from mongoledger.errors import InvalidAccount, InvalidData
from mongoledger.models import Account

__all__ = [
    "AccountRef",
    "account_creation",
    "account_filter",
    "account_lookup_filter",
    "account_to_model",
    "attributes_key",
    "check_distinct",
    "equality_key",
    "new_account_fields",
    "same_value",
    "validate_account",
    "validate_attributes",
]

# The attribute values a lookup matches exactly: never a mapping (an operator) or an array.
_SCALARS = (str, int, float, bool, ObjectId, datetime, bytes, bson.Binary, bson.Decimal128)


class AccountRef(NamedTuple):  # made for every account of every call: a tuple is cheapest
    """A validated account reference: an ``_id`` or an attribute set."""

    id: Any = None
    attributes: dict[str, Any] | None = None
    key: str | None = None

    @property
    def is_id(self) -> bool:
        return self.attributes is None

    def describe(self) -> Any:
        return self.id if self.attributes is None else self.attributes

    def same_account(self, other: AccountRef) -> bool:
        """Whether both references name one account, as MongoDB compares them (``{"a": 1}``
        and ``{"a": 1.0}`` do; ``1`` and ``True`` do not)."""
        if self.attributes is None or other.attributes is None:
            return (
                self.attributes is None
                and other.attributes is None
                and same_value(self.id, other.id)
            )
        return self.key == other.key


def same_value(a: Any, b: Any) -> bool:
    """Equality as MongoDB applies it to ``_id`` values: numbers by value, whatever their type;
    booleans apart from numbers."""
    if type(a) is type(b) and type(a) in (str, ObjectId):  # the common case, checked often
        return bool(a == b)
    return bool(equality_key(a) == equality_key(b))


def equality_key(value: Any) -> Any:
    """A stand-in for ``value`` that is equal exactly when MongoDB finds the two equal.

    MongoDB compares int32, int64, double and decimal128 by their exact value (``1``,
    ``1.0``, ``Int64(1)`` and ``Decimal128("1.0")`` are equal; ``0.1`` and
    ``Decimal128("0.1")`` are not, nor are ``2**53 + 1`` and ``float(2**53 + 1)``; ``-0.0`` is
    ``0``); booleans are not numbers. A number becomes ``["num", "<p>/<q>"]``, its exact value
    in lowest terms (a list: attribute values never are, so it cannot collide with one); any
    other value stays itself.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return ["num", f"{int(value)}/1"]
    if isinstance(value, float) and math.isfinite(value):
        p, q = value.as_integer_ratio()
        return ["num", f"{p}/{q}"]
    if isinstance(value, bson.Decimal128):
        exact = value.to_decimal()
        if exact.is_finite():
            p, q = exact.as_integer_ratio()
            return ["num", f"{p}/{q}"]
    return value


def check_distinct(
    kind: str, source: AccountRef, target: AccountRef, ids: tuple[Any, Any] = (None, None)
) -> None:
    """Refuse a ``kind`` (transfer, hold) from an account to itself: two references to one
    account (as MongoDB compares them), or, once resolved, two ``ids`` that are equal."""
    if source.same_account(target):
        raise InvalidAccount(f"{kind} from account {source.describe()!r} to itself")
    source_id, target_id = ids
    if source_id is not None and target_id is not None and same_value(source_id, target_id):
        raise InvalidAccount(
            f"{kind} from account {source.describe()!r} to {target.describe()!r}: both are "
            f"account {source_id!r}"
        )


def validate_account(value: object, owned: Iterable[str] = ()) -> AccountRef:
    """Validate an account reference (Decision 1 and 5) without touching the database."""
    if value is None:
        raise InvalidAccount("account None is not a reference; pass an _id or an attribute mapping")
    if type(value) is ObjectId or type(value) is str:  # the common cases, always storable
        return AccountRef(id=value)
    if isinstance(value, Mapping):
        return AccountRef(attributes=validate_attributes(value, owned), key=attributes_key(value))
    if isinstance(value, list | tuple | set | frozenset | dict):
        raise InvalidAccount(
            f"account {value!r} is a {type(value).__name__}, not an _id or mapping"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidAccount(f"account {value!r} is not a usable _id")
    if isinstance(value, bson.Regex | re.Pattern):
        raise InvalidAccount(f"account {value!r} is a regular expression: it would match many ids")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not INT64_MIN <= value <= INT64_MAX
    ):
        raise InvalidAccount(f"account {value!r} is outside the signed 64-bit range")
    try:
        bson.encode({"_id": value})
    except (InvalidDocument, TypeError, OverflowError) as exc:
        raise InvalidAccount(f"account {value!r} cannot be stored as an _id: {exc}") from None
    return AccountRef(id=value)


def validate_attributes(value: Mapping[Any, Any], owned: Iterable[str] = ()) -> dict[str, Any]:
    if not value:
        raise InvalidAccount("account {} is an empty attribute set; name at least one attribute")
    owned = set(owned)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidAccount(f"account attribute key {key!r} is not a non-empty string")
        if key.startswith("$") or "." in key:
            raise InvalidAccount(
                f"account attribute {key!r} is not allowed: '$' prefixes and dots would be "
                f"read as query operators or paths (in {dict(value)!r})"
            )
        if key in owned:
            raise InvalidAccount(f"account attribute {key!r} is a field the ledger owns")
        if isinstance(item, Mapping):
            raise InvalidAccount(
                f"account attribute {key!r} has a mapping value {item!r}; only plain values "
                "are allowed (a mapping could be a query operator such as $gt)"
            )
        if item is None or not isinstance(item, _SCALARS) or isinstance(item, Decimal):
            raise InvalidAccount(
                f"account attribute {key!r} has value {item!r} of type {type(item).__name__}; "
                "use a string, number, boolean, ObjectId, datetime or binary value"
            )
        if isinstance(item, float) and not math.isfinite(item):
            raise InvalidAccount(f"account attribute {key!r} has non-finite value {item!r}")
        if isinstance(item, bson.Decimal128) and not item.to_decimal().is_finite():
            raise InvalidAccount(f"account attribute {key!r} has non-finite value {item!r}")
        if isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
            raise InvalidAccount(f"account attribute {key!r} value {item!r} overflows int64")
        out[key] = item
    return out


def attributes_key(attributes: Mapping[str, Any]) -> str:
    """The canonical digest of an exact attribute set: the unique key behind atomic auto-create.

    Two sets get one digest exactly when a query by one finds an account created with the
    other: field order does not matter, numbers are compared by value (see :func:`equality_key`),
    strings, booleans, dates and the other types by their BSON encoding. Raises
    ``InvalidData`` for a set too large to be stored in an account document.
    """
    canonical = {k: equality_key(attributes[k]) for k in sorted(attributes)}
    encoded = bson.encode({"a": canonical}, codec_options=CODEC)
    if len(encoded) > MAX_DOCUMENT_SIZE:  # a number's canonical form is larger than its own
        size = len(bson.encode(dict(attributes), codec_options=CODEC))
        if size > MAX_DOCUMENT_SIZE:
            raise InvalidData(
                f"account attribute set {preview(attributes)} is {size} bytes; an account "
                f"document may hold at most {MAX_DOCUMENT_SIZE} bytes of attributes"
            )
    return hashlib.sha256(encoded).hexdigest()


def account_lookup_filter(ref: AccountRef) -> dict[str, Any]:
    """The query that finds a referenced account (Decision 1: exactly the given fields)."""
    if ref.attributes is None:
        return {"_id": ref.id}
    return dict(ref.attributes)


def account_filter(cfg: LedgerConfig, target: AccountRef) -> dict[str, Any]:
    """The exact filter of one account the ledger writes: its ``_id``, or (while the operation
    may still create it) the digest of its attribute set: the ``attributes_key`` field, or
    with ``sharded_accounts`` the ``_id`` itself."""
    if target.is_id:
        return {"_id": target.id}
    return {"_id": target.key} if cfg.sharded_accounts else {ATTRIBUTES_KEY: target.key}


def new_account_fields(
    cfg: LedgerConfig, ref: AccountRef, min_balance: int | None
) -> dict[str, Any]:
    """``$setOnInsert`` fields of an account created for ``ref``."""
    doc: dict[str, Any] = {CREATED_AT: clock.utcnow()}
    if ref.attributes is not None:
        doc.update(ref.attributes)
        if not cfg.sharded_accounts:  # there the digest is the _id
            doc[ATTRIBUTES_KEY] = ref.key
    if min_balance is not None:
        doc[MIN_BALANCE] = bson.Int64(min_balance)
    return doc


def account_creation(
    cfg: LedgerConfig, target: AccountRef, min_balance: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The filter and ``$setOnInsert`` upsert that creates an account at zero if it is missing."""
    flt = account_filter(cfg, target)
    fields = new_account_fields(cfg, target, min_balance)
    if cfg.balance_field is not None:
        fields[cfg.balance_field] = bson.Int64(0)
    fields[SEQ] = 0
    return flt, {"$setOnInsert": fields}


def account_to_model(
    cfg: LedgerConfig, doc: Mapping[str, Any], balance: int | None = None
) -> Account:
    owned = cfg.owned_account_fields
    if balance is None:
        balance = int(doc.get(cfg.balance_field, 0) or 0) if cfg.balance_field else 0
    return Account(
        id=doc["_id"],
        balance=balance,
        min_balance=doc.get(MIN_BALANCE),
        attributes=deep_utc({k: v for k, v in doc.items() if k not in owned}),
        created_at=utc(doc.get(CREATED_AT)),
        held=int(doc.get(HELD) or 0),
        currency=doc.get(cfg.currency_field) if cfg.currency_field else None,
    )
