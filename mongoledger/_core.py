"""The I/O-free heart of the ledger, shared by ``AsyncLedger`` and ``Ledger``.

Argument validation, document building, filters, index specifications, query shapes and the
conversion of documents to models live here as pure functions, tested without a database.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from functools import cached_property
from typing import Any, NamedTuple

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument

from . import _dates
from .errors import (
    CurrencyMismatch,
    InvalidAccount,
    InvalidAmount,
    InvalidArgument,
    InvalidConfiguration,
    InvalidData,
    TransactionNotFound,
)
from .models import Account, OperationKind, Transaction

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_BSON_SIZE = 16 * 1024 * 1024
# The largest document the ledger writes: the server's limit less room for what comes later
# (``reverted_by`` when it is reverted) and for a change-stream event, which carries the whole
# document plus its metadata and fails with BSONObjectTooLarge (10334) past 16 MiB.
HEADROOM = 64 * 1024
MAX_DOCUMENT_SIZE = MAX_BSON_SIZE - HEADROOM

# Fields the ledger owns on a transaction document besides the configurable ``*_field`` ones.
OPERATION_ID = "operation_id"
KIND = "kind"
REVERTS = "reverts"
REVERTED_BY = "reverted_by"
IDEMPOTENCY_KEY = "idempotency_key"
IDEMPOTENCY_HASH = "idempotency_hash"
BALANCE_AFTER = "balance_after"
ACCOUNT_SEQ = "account_seq"
LEG = "leg"
LEGS = "legs"
HOLD_ID = "hold_id"  # on a capture's legs: the hold they settle
FIXED_TRANSACTION_FIELDS = (
    "_id",
    OPERATION_ID,
    KIND,
    REVERTS,
    REVERTED_BY,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_HASH,
    BALANCE_AFTER,
    ACCOUNT_SEQ,
    LEG,
    LEGS,
    HOLD_ID,
)

# Fields the ledger owns on an account document besides ``balance_field``.
MIN_BALANCE = "min_balance"
_MIN_BALANCE_PATH = f"${MIN_BALANCE}"
CREATED_AT = "created_at"
ATTRIBUTES_KEY = "attributes_key"
SEQ = "seq"
# The latest date of the account's transactions, and the earliest date ever written below an
# earlier transaction's date (a backdated entry): what tells balance_at its shortcut is exact.
LAST_DATE = "last_date"
BACKDATED_FROM = "backdated_from"
HELD = "held"  # the sum of the account's pending holds
FIXED_ACCOUNT_FIELDS = (
    "_id",
    MIN_BALANCE,
    CREATED_AT,
    ATTRIBUTES_KEY,
    SEQ,
    LAST_DATE,
    BACKDATED_FROM,
    HELD,
)
_HELD_PATH = f"${HELD}"

# Fields of a hold document (holds_collection); see ``mongoledger._holds``.
FROM_ACCOUNT_ID = "from_account_id"
TO_ACCOUNT_ID = "to_account_id"
AMOUNT = "amount"
STATUS = "status"
CAPTURED_AMOUNT = "captured_amount"
EXPIRES_AT = "expires_at"
CLOSED_AT = "closed_at"
VOID_DATA = "void_data"
FIXED_HOLD_FIELDS = (
    "_id",
    FROM_ACCOUNT_ID,
    TO_ACCOUNT_ID,
    AMOUNT,
    STATUS,
    CAPTURED_AMOUNT,
    EXPIRES_AT,
    CREATED_AT,
    CLOSED_AT,
    OPERATION_ID,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_HASH,
    VOID_DATA,
)

_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=False)
_SCALARS = (str, int, float, bool, ObjectId, datetime, bytes, bson.Binary, bson.Decimal128)


# Configuration


class NoFloor:
    """The type of :data:`NO_FLOOR`."""

    _instance: NoFloor | None = None

    def __new__(cls) -> NoFloor:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_FLOOR"

    def __reduce__(self) -> str:
        return "NO_FLOOR"


NO_FLOOR = NoFloor()
"""``open_account(..., min_balance=NO_FLOOR)``: an account without a floor, even where the
ledger has a ``default_min_balance`` (system accounts that go negative by design)."""

COLLECTION_OPTIONS = (
    "accounts_collection",
    "transactions_collection",
    "checkpoints_collection",
    "idempotency_collection",
    "holds_collection",
)


@dataclass(frozen=True)
class LedgerConfig:
    """The ledger's options, validated once."""

    accounts_collection: str = "accounts"
    transactions_collection: str = "transactions"
    checkpoints_collection: str = "ledger_checkpoints"
    idempotency_collection: str = "ledger_idempotency"
    auto_create_account: bool = True
    balance_field: str | None = "balance"
    extra_account_link_field: str | None = "extra_account_id"
    account_link_field: str = "account_id"
    amount_field: str = "amount"
    date_field: str = "date"
    date_value: Any = None
    data_field: str | None = None
    require_transactions: bool = False
    default_min_balance: int | None = None
    # Accounts sharded on _id: no unique attributes_key index (a sharded collection refuses a
    # unique index its shard key does not lead); an account created from an attribute set
    # gets the set's digest as its _id, so creating it once rests on _id's uniqueness.
    sharded_accounts: bool = False
    currency_field: str | None = None
    holds_collection: str = "holds"

    def __post_init__(self) -> None:
        names = {
            "account_link_field": self.account_link_field,
            "amount_field": self.amount_field,
            "date_field": self.date_field,
            "extra_account_link_field": self.extra_account_link_field,
            "data_field": self.data_field,
            # Written on transactions too, so statistics can filter by currency.
            "currency_field": self.currency_field,
        }
        seen: dict[str, str] = {}
        for option, name in names.items():
            if name is None:
                continue
            _check_field_name(option, name)
            if name in FIXED_TRANSACTION_FIELDS:
                raise InvalidConfiguration(
                    f"{option}={name!r} collides with a field the ledger owns; choose another name"
                )
            if name in seen:
                raise InvalidConfiguration(
                    f"{option}={name!r} is also used by {seen[name]}; field names must differ"
                )
            seen[name] = option
        if self.balance_field is not None:
            _check_field_name("balance_field", self.balance_field)
            if self.balance_field in FIXED_ACCOUNT_FIELDS:
                raise InvalidConfiguration(
                    f"balance_field={self.balance_field!r} collides with a field the ledger owns"
                )
        currency = self.currency_field
        if currency is not None and (
            currency in FIXED_ACCOUNT_FIELDS
            or currency == self.balance_field
            or currency in FIXED_HOLD_FIELDS
        ):
            raise InvalidConfiguration(
                f"currency_field={currency!r} collides with a field the ledger owns on accounts "
                "or holds; choose another name (e.g. 'currency')"
            )
        roles: dict[str, str] = {}
        for option in COLLECTION_OPTIONS:
            value = getattr(self, option)
            if not isinstance(value, str) or not value or "$" in value or "\x00" in value:
                raise InvalidConfiguration(f"{option}={value!r} is not a usable collection name")
            if value in roles:
                raise InvalidConfiguration(
                    f"{option}={value!r} is also {roles[value]}: each role needs its own collection"
                )
            roles[value] = option
        if self.default_min_balance is not None:
            if isinstance(self.default_min_balance, NoFloor):
                raise InvalidConfiguration(
                    "default_min_balance=NO_FLOOR: leave it None for accounts without a floor"
                )
            try:
                validate_min_balance(self.default_min_balance)
            except InvalidAmount as exc:
                raise InvalidConfiguration(f"default_min_balance: {exc}") from None
            if self.balance_field is None:
                raise InvalidConfiguration(
                    f"default_min_balance={self.default_min_balance!r} needs a cached balance "
                    "(balance_field), as min_balance does"
                )

    @cached_property
    def owned_transaction_fields(self) -> frozenset[str]:
        names = [self.account_link_field, self.amount_field, self.date_field]
        optional = (self.extra_account_link_field, self.data_field, self.currency_field)
        names += [n for n in optional if n]
        return frozenset((*FIXED_TRANSACTION_FIELDS, *names))

    @cached_property
    def owned_hold_fields(self) -> frozenset[str]:
        names = [n for n in (self.data_field, self.currency_field) if n]
        return frozenset((*FIXED_HOLD_FIELDS, *names))

    @cached_property
    def balance_path(self) -> str:
        """The balance field as an aggregation expression (``$balance``)."""
        return f"${self.balance_field}"

    @cached_property
    def owned_account_fields(self) -> frozenset[str]:
        extra = (self.balance_field,) if self.balance_field else ()
        return frozenset((*FIXED_ACCOUNT_FIELDS, *extra))

    def operation_date(self) -> Any:
        """The date of a new operation (Decision 4: evaluated once per operation).

        With ``date_value=None`` the write path takes the date inside the DB transaction
        instead (see ``leg_update``); this serves a stand-in of the same size.
        """
        if self.date_value is None:
            return utcnow()
        if callable(self.date_value):
            return self.date_value()
        return self.date_value

    def check_date(
        self, value: Any, *, what: str, written: Any = None, require: str | None = None
    ) -> Any:
        """A validated date argument ready for a query (Decision 8)."""
        return _dates.check_date_argument(
            value, what=what, date_value=self.date_value, written=written, require=require
        )


def check_database(database: object, *, sync: bool) -> None:
    """Refuse, at construction, anything but a database of the ledger's flavour (Decision
    "configuration mistakes"): a client, a name, or a sync database given to the async
    ledger (and the reverse) would fail later with an unrelated error."""
    ledger, other = ("Ledger", "AsyncLedger") if sync else ("AsyncLedger", "Ledger")
    kind = type(database)
    name = f"{kind.__module__}.{kind.__qualname__}"
    expected = (
        "a database such as MongoClient(...)['shop'] (PyMongo, mongomock or mongoledger.memory)"
        if sync
        else "an async database such as AsyncMongoClient(...)['shop'] (PyMongo async, Motor "
        "or mongoledger.memory's AsyncMemoryClient)"
    )
    module = kind.__module__.split(".", 1)[0]
    known = module in ("pymongo", "mongomock", "motor", "mongoledger")
    # A client answers any attribute with a database (PyMongo's is even "callable"): ask the
    # class. An unknown wrapper may delegate by __getattr__: ask the object.
    usable = callable(getattr(kind, "get_collection", None)) or (
        not known and callable(getattr(database, "get_collection", None))
    )
    if not usable:
        if callable(getattr(kind, "get_database", None)):
            raise InvalidConfiguration(
                f"{ledger}() was given a client ({name}), not a database; pass "
                "client['shop'] (the database that holds the ledger's collections)"
            )
        raise InvalidConfiguration(
            f"{ledger}() was given {database!r} ({name}); it needs {expected}"
        )
    is_async = kind.__name__.startswith("Async") or module == "motor"
    if known and is_async == sync:
        flavour = "an async" if is_async else "a sync"
        raise InvalidConfiguration(
            f"{ledger}() was given {flavour} database ({name}); use {other} with it, or "
            f"give {ledger} {expected}"
        )


def _check_field_name(option: str, name: object) -> None:
    if not isinstance(name, str) or not name or name.startswith("$") or "." in name:
        raise InvalidConfiguration(
            f"{option}={name!r} is not a usable field name (non-empty, no '$' prefix, no '.')"
        )


def utcnow() -> datetime:
    """Now in UTC, at the millisecond precision BSON stores."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# Amounts


def validate_amount(value: object, *, what: str = "amount") -> int:
    """Return ``value`` as a non-zero int64 whose negation is an int64 too (every movement can
    be reverted), or raise ``InvalidAmount`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        kind = type(value).__name__
        hint = ""
        if isinstance(value, float | Decimal):
            hint = "; amounts are integers in the smallest unit (cents, credits)"
        raise InvalidAmount(f"{what} {value!r} is a {kind}, not an integer{hint}")
    if value == 0:
        raise InvalidAmount(f"{what} 0 would move nothing; amounts must be non-zero")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidAmount(f"{what} {value!r} is outside the signed 64-bit range")
    if value == INT64_MIN:
        raise InvalidAmount(
            f"{what} {value!r} has no negation in the signed 64-bit range, so it could never be "
            f"reverted; amounts lie within ±{INT64_MAX}"
        )
    return int(value)


def validate_min_balance(value: object) -> int | None:
    if value is None or isinstance(value, NoFloor):
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(f"min_balance {value!r} is not an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidAmount(f"min_balance {value!r} is outside the signed 64-bit range")
    return int(value)


def check_balanced(kind: str, amounts: Sequence[int]) -> None:
    total = sum(amounts)
    if total != 0:
        raise InvalidAmount(
            f"{kind} legs must sum to zero (double entry); amounts {list(amounts)} sum to {total}"
        )


# Accounts


@dataclass(frozen=True)
class AccountRef:
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
    return bool(comparable(a) == comparable(b))


def comparable(value: Any) -> Any:
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
    other: field order does not matter, numbers are compared by value (see :func:`comparable`),
    strings, booleans, dates and the other types by their BSON encoding. Raises
    ``InvalidData`` for a set too large to be stored in an account document.
    """
    canonical = {k: comparable(attributes[k]) for k in sorted(attributes)}
    encoded = bson.encode({"a": canonical}, codec_options=_CODEC)
    if len(encoded) > MAX_DOCUMENT_SIZE:  # a number's canonical form is larger than its own
        size = len(bson.encode(dict(attributes), codec_options=_CODEC))
        if size > MAX_DOCUMENT_SIZE:
            raise InvalidData(
                f"account attribute set {_preview(attributes)} is {size} bytes; an account "
                f"document may hold at most {MAX_DOCUMENT_SIZE} bytes of attributes"
            )
    return hashlib.sha256(encoded).hexdigest()


def _preview(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut short: a message names the value without copying megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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
    doc: dict[str, Any] = {CREATED_AT: utcnow()}
    if ref.attributes is not None:
        doc.update(ref.attributes)
        if not cfg.sharded_accounts:  # there the digest is the _id
            doc[ATTRIBUTES_KEY] = ref.key
    if min_balance is not None:
        doc[MIN_BALANCE] = bson.Int64(min_balance)
    return doc


class LegUpdate(NamedTuple):  # built for every leg of every write: a tuple is cheapest
    """The single ``find_one_and_update`` that moves one account for one leg."""

    filter: dict[str, Any]
    update: dict[str, Any]
    projection: dict[str, int]  # what the leg needs back: the new balance and sequence


def leg_update(
    cfg: LedgerConfig, target: AccountRef, amount: int, date: Any, held: int = 0
) -> LegUpdate:
    """Build the guarded ``$inc`` for one leg.

    The same update raises the account's ``last_date`` to the operation's ``date`` (``$max``)
    and returns it: a value above ``date`` means the account already carries a later date (a
    leg that moves no balance, a hold's, leaves it alone).

    ``target`` is the resolved account: its ``_id``, or (when the operation creates it) its
    attribute set. ``held`` moves the sum of its pending holds (a hold adds, a capture's source
    leg releases). The filter carries the guards, so the check and the move are one atomic
    step and a failed guard simply matches nothing: the min_balance floor on the *available*
    balance (balance minus held), whenever the leg lowers it, and int64 overflow of the
    resulting balance and held sum. It never upserts (a server refuses the floor guard's
    ``$expr`` in an upsert): a missing account is first created at zero with
    :func:`account_creation`, once.
    """
    flt = account_filter(cfg, target)
    bal = cfg.balance_field
    inc: dict[str, Any] = {SEQ: 1} if amount else {}
    projection = {SEQ: 1}
    update: dict[str, Any] = {"$inc": inc}
    if amount:
        update["$max"] = {LAST_DATE: date}
        projection[LAST_DATE] = 1
    guards: list[dict[str, Any]] = []
    if held:
        inc[HELD] = bson.Int64(held)
        if held > 0:  # a missing held sum is zero
            guards.append({"$or": [{HELD: {"$exists": False}}, {HELD: {"$lte": INT64_MAX - held}}]})
    if cfg.currency_field is not None:
        projection[cfg.currency_field] = 1
    if bal is not None:
        projection[bal] = 1
        if amount > 0:
            flt[bal] = {"$lte": INT64_MAX - amount}
        elif amount < 0:
            flt[bal] = {"$gte": INT64_MIN - amount}
        if amount - held < 0:  # the available balance goes down: the floor applies
            guards.append({"$or": floor_guard(cfg, amount - held)})
        if amount:
            inc[bal] = bson.Int64(amount)
    if len(guards) == 1:
        flt.update(guards[0])
    elif guards:
        flt["$and"] = guards
    return LegUpdate(filter=flt, update=update, projection=projection)


def floor_guard(cfg: LedgerConfig, change: int) -> list[dict[str, Any]]:
    """``balance + change - held >= min_balance``, or no floor at all: the branches of an
    ``$or``. A missing ``held`` is zero, spelled out as its own branch (``$add`` with a missing
    field is null, which every number compares above)."""
    after = {"$add": [cfg.balance_path, change]}
    return [
        {MIN_BALANCE: None},  # matches a missing field too: an unguarded account
        {HELD: {"$exists": False}, "$expr": {"$gte": [after, _MIN_BALANCE_PATH]}},
        {
            HELD: {"$exists": True},
            "$expr": {"$gte": [after, {"$add": [_MIN_BALANCE_PATH, _HELD_PATH]}]},
        },
    ]


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
        attributes=_dates.deep_utc({k: v for k, v in doc.items() if k not in owned}),
        created_at=_dates.utc(doc.get(CREATED_AT)),
        held=int(doc.get(HELD) or 0),
        currency=doc.get(cfg.currency_field) if cfg.currency_field else None,
    )


# Extra data


def validate_data(
    cfg: LedgerConfig,
    data: object,
    *,
    what: str = "data",
    owned: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Return a deep copy of the extra data, or raise ``InvalidData`` naming the bad key/value.

    ``owned``: the fields the data may not use at top level (default: a transaction's).
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidData(f"{what} {data!r} is a {type(data).__name__}, not a mapping")
    out: dict[str, Any] = _check_keys(data, path="")
    if not out:
        return out
    if cfg.data_field is None:
        if owned is None:
            owned = cfg.owned_transaction_fields
        for key in out:
            if key in owned:
                raise InvalidData(
                    f"{what} key {key!r} is a field the ledger owns; rename it or set data_field"
                )
    try:
        bson.encode(out, codec_options=_CODEC)
    except (InvalidDocument, TypeError, OverflowError) as exc:
        path, value = _unencodable(out, "")
        raise InvalidData(
            f"{what} value {value!r} at {path or 'top level'} cannot be stored in MongoDB: {exc}"
        ) from None
    return out


def _unencodable(value: Any, path: str) -> tuple[str, Any]:
    """The path and value of the first leaf BSON cannot encode."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[str, Any]] = (
            (f"{path}.{k}" if path else k, v) for k, v in value.items()
        )
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return path, value
    for where, item in items:
        try:
            bson.encode({"v": item}, codec_options=_CODEC)
        except (InvalidDocument, TypeError, OverflowError):
            return _unencodable(item, where)
    return path, value


def _check_keys(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                raise InvalidData(f"data key {key!r} at {path or 'top level'} is not a string")
            if key.startswith("$") or "." in key or "\x00" in key:
                raise InvalidData(
                    f"data key {key!r} at {path or 'top level'} is not allowed "
                    "('$' prefix, '.' or NUL would be read as an operator or a path)"
                )
            out[key] = _check_keys(item, where)
        return out
    if isinstance(value, list | tuple):
        return [_check_keys(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


# Transaction documents


@dataclass(slots=True)
class Leg:
    """One planned transaction document of an operation."""

    account: AccountRef
    amount: int
    data: dict[str, Any]
    extra_account_id: Any = None  # the counterpart of a two-leg operation, when linked
    reverts: Any = None
    account_id: Any = None  # resolved _id, or None when the operation creates the account
    id: ObjectId = field(default_factory=ObjectId)
    balance_after: int | None = None
    account_seq: int | None = None
    held: int = 0  # the change of the account's held sum (a capture's source leg releases)
    hold_id: Any = None  # a capture's legs name the hold they settle
    currency: Any = None  # the account's currency_field value, as its guarded update returned
    # (the currency the account must have, the account it must match): a guard in the filter
    currency_guard: tuple[Any, Any] | None = None


def transaction_document(
    cfg: LedgerConfig,
    leg: Leg,
    *,
    index: int,
    count: int,
    kind: OperationKind,
    operation_id: ObjectId,
    date: Any,
    idempotency: tuple[str, str] | None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": leg.id,
        cfg.account_link_field: leg.account_id,
        cfg.amount_field: bson.Int64(leg.amount),
        cfg.date_field: date,
        OPERATION_ID: operation_id,
        KIND: kind,
        LEG: index,
        LEGS: count,
    }
    if leg.account_seq is not None:
        doc[ACCOUNT_SEQ] = leg.account_seq
    if leg.balance_after is not None:
        doc[BALANCE_AFTER] = bson.Int64(leg.balance_after)
    if cfg.extra_account_link_field and leg.extra_account_id is not None:
        doc[cfg.extra_account_link_field] = leg.extra_account_id
    if leg.reverts is not None:
        doc[REVERTS] = leg.reverts
    if leg.hold_id is not None:
        doc[HOLD_ID] = leg.hold_id
    if leg.currency is not None and cfg.currency_field is not None:
        doc[cfg.currency_field] = leg.currency
    if idempotency is not None:
        doc[IDEMPOTENCY_KEY], doc[IDEMPOTENCY_HASH] = idempotency
    if cfg.data_field is not None:
        if leg.data:
            doc[cfg.data_field] = leg.data
    else:
        doc.update(leg.data)
    if leg.data or not isinstance(leg.account_id, (ObjectId, int)):  # else far below 16 MiB
        size = len(bson.encode(doc, codec_options=_CODEC))
        if size > MAX_DOCUMENT_SIZE:
            raise InvalidData(
                f"transaction document for account {_preview(leg.account.describe())} would be "
                f"{size} bytes, over the ledger's {MAX_DOCUMENT_SIZE}-byte limit (MongoDB's "
                f"{MAX_BSON_SIZE} less {HEADROOM} kept for a revert mark and the change-stream "
                "event that carries the document)"
            )
    return doc


def check_sizes(
    cfg: LedgerConfig,
    legs: Sequence[Leg],
    *,
    kind: OperationKind,
    date: Any,
    idempotency: tuple[str, str] | None,
) -> None:
    """Refuse, before anything is written, a leg whose document would exceed 16 MiB.

    The values only known inside the DB transaction (balance, sequence, counterpart, and the
    date when the ledger picks it: ``date=None``) are stood in for by values of the same
    encoded size.
    """
    for index, leg in enumerate(legs):
        if not leg.data and isinstance(leg.account_id, ObjectId | int | None):
            continue  # far below the limit
        stand_in = Leg(
            account=leg.account,
            amount=leg.amount,
            data=leg.data,
            extra_account_id=(
                (legs[1 - index].account_id or ObjectId()) if len(legs) == 2 else None
            ),
            reverts=leg.reverts,
            account_id=leg.account_id if leg.account_id is not None else ObjectId(),
            id=leg.id,
            balance_after=0,
            account_seq=0,
            hold_id=leg.hold_id,
        )
        transaction_document(
            cfg,
            stand_in,
            index=index,
            count=len(legs),
            kind=kind,
            operation_id=ObjectId(),
            date=utcnow() if date is None else date,
            idempotency=idempotency,
        )


def transaction_to_model(cfg: LedgerConfig, doc: Mapping[str, Any]) -> Transaction:
    if cfg.data_field is not None:
        data = dict(doc.get(cfg.data_field) or {})
    else:
        owned = cfg.owned_transaction_fields
        data = {k: v for k, v in doc.items() if k not in owned}
    link = cfg.extra_account_link_field
    balance_after = doc.get(BALANCE_AFTER)
    return Transaction(
        id=doc["_id"],
        account_id=doc.get(cfg.account_link_field),
        amount=int(doc[cfg.amount_field]),
        date=_dates.utc(doc.get(cfg.date_field)),
        balance_after=None if balance_after is None else int(balance_after),
        operation_id=doc.get(OPERATION_ID),
        kind=doc.get(KIND, "increase"),
        extra_account_id=doc.get(link) if link else None,
        reverts=doc.get(REVERTS),
        reverted_by=doc.get(REVERTED_BY),
        idempotency_key=doc.get(IDEMPOTENCY_KEY),
        hold_id=doc.get(HOLD_ID),
        currency=doc.get(cfg.currency_field) if cfg.currency_field else None,
        account_seq=doc.get(ACCOUNT_SEQ),
        leg=int(doc.get(LEG, 0)),
        legs=int(doc.get(LEGS, 1)),
        data=_dates.deep_utc(data),
    )


def as_object_id(value: object) -> ObjectId | None:
    """An ObjectId, or one written as 24 hex digits (the CLI, JSON clients); else None."""
    if isinstance(value, ObjectId):
        return value
    if isinstance(value, str) and ObjectId.is_valid(value):
        return ObjectId(value)
    return None


def validate_transaction_id(value: object) -> ObjectId:
    """Transaction ids are ObjectIds; a 24-hex-digit string is accepted for the CLI."""
    oid = as_object_id(value)
    if oid is None:
        raise TransactionNotFound(value, "not a transaction id (an ObjectId or 24 hex digits)")
    return oid


# Currencies


def currency_field(cfg: LedgerConfig) -> str:
    """The configured currency field; filtering by currency needs one."""
    if cfg.currency_field is None:
        raise InvalidArgument(
            "filtering by currency needs currency_field "
            "(e.g. Ledger(db, currency_field='currency'))"
        )
    return cfg.currency_field


def validate_currency(value: object) -> Any:
    """A currency to filter on: a plain value, never an operator or a container."""
    if value is None or isinstance(value, Mapping | list | tuple | set | frozenset | bool):
        raise InvalidArgument(f"currency {value!r} is not a currency code such as 'EUR'")
    return value


def check_currencies(cfg: LedgerConfig, legs: Sequence[Leg]) -> None:
    """Raise ``CurrencyMismatch`` unless every leg's account has the same currency."""
    if cfg.currency_field is None or len(legs) < 2:
        return
    first = legs[0].currency
    if all(leg.currency == first for leg in legs[1:]):
        return
    seen: dict[Any, Any] = {}
    for leg in legs:
        seen.setdefault(leg.account_id, leg.currency)
    raise CurrencyMismatch(seen, cfg.currency_field)


# Idempotency


def fingerprint(kind: str, legs: Sequence[tuple[Any, int, Mapping[str, Any]]]) -> str:
    """A digest of an operation's arguments (accounts, amounts and each leg's data), before
    hooks: equal calls have equal digests."""
    canon = {
        "kind": kind,
        "legs": [[_canonical(account), amount, _canonical(data)] for account, amount, data in legs],
    }
    return hashlib.sha256(bson.encode(canon, codec_options=_CODEC)).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, AccountRef):  # one account, however its numbers are spelled
        if value.attributes:
            return {
                "attributes": {k: comparable(value.attributes[k]) for k in sorted(value.attributes)}
            }
        return {"id": comparable(value.id)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def idempotency_id(cfg: LedgerConfig, key: str) -> dict[str, str]:
    """The ``_id`` of a key's record: the key within its ledger (named by its transactions
    collection), so ledgers sharing an idempotency collection never see each other's keys."""
    return {"ledger": cfg.transactions_collection, "key": key}


def idempotency_document(
    cfg: LedgerConfig,
    key: str,
    fp: str,
    kind: str,
    operation_id: ObjectId,
    ids: Sequence[ObjectId],
) -> dict[str, Any]:
    """The record that makes a key's first operation the only one (unique by ``_id``)."""
    return {
        "_id": idempotency_id(cfg, key),
        "hash": fp,
        KIND: kind,
        OPERATION_ID: operation_id,
        "transaction_ids": list(ids),
        CREATED_AT: utcnow(),
    }


def checkpoint_id(cfg: LedgerConfig, name: str) -> dict[str, str]:
    """The ``_id`` of a ``listen`` checkpoint: its name within its ledger."""
    return {"ledger": cfg.transactions_collection, "name": name}


def validate_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > 512:
        raise InvalidData(
            f"idempotency_key {key!r} must be a non-empty string of at most 512 chars"
        )
    return key


# Revert

_MARK_SIZE = len(bson.encode({REVERTED_BY: ObjectId()})) - 5  # the element ``reverted_by`` adds


def reversal_legs(cfg: LedgerConfig, originals: Sequence[Mapping[str, Any]]) -> list[Leg]:
    """The compensating legs of an operation: same accounts, negated amounts, in leg order."""
    link = cfg.extra_account_link_field
    owned = cfg.owned_transaction_fields - {cfg.data_field}
    legs = []
    for doc in sorted(originals, key=lambda d: d.get(LEG, 0)):
        counterpart = doc.get(link) if link else None
        amount = -int(doc[cfg.amount_field])
        if not INT64_MIN <= amount <= INT64_MAX:
            raise InvalidAmount(
                f"transaction {doc['_id']!r} cannot be reverted: the negation of its amount "
                f"{doc[cfg.amount_field]!r} is outside the signed 64-bit range"
            )
        extra = any(k not in owned for k in doc)  # else far below the limit
        size = len(bson.encode(doc, codec_options=_CODEC)) if extra else 0
        if size + _MARK_SIZE > MAX_BSON_SIZE:
            raise InvalidData(
                f"transaction {doc['_id']!r} ({size} bytes) cannot be reverted: marking it "
                f"reverted_by would take it over MongoDB's {MAX_BSON_SIZE}-byte limit"
            )
        legs.append(
            Leg(
                account=AccountRef(id=doc[cfg.account_link_field]),
                amount=amount,
                data={},
                extra_account_id=counterpart,
                reverts=doc["_id"],
                account_id=doc[cfg.account_link_field],
            )
        )
    return legs


# Indexes and query shapes


@dataclass(frozen=True)
class IndexSpec:
    collection: str  # "accounts" | "transactions" | "idempotency" | "holds"
    keys: tuple[tuple[str, int | str], ...]
    name: str
    unique: bool = False
    partial: dict[str, Any] | None = None
    wildcard_projection: dict[str, int] | None = None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.unique:
            out["unique"] = True
        if self.partial is not None:
            out["partialFilterExpression"] = self.partial
        if self.wildcard_projection is not None:
            out["wildcardProjection"] = self.wildcard_projection
        return out


def index_matches(spec: IndexSpec, index: Mapping[str, Any]) -> bool:
    """Whether an index ``listIndexes`` returned is ``spec`` (keys and options; its name may
    differ): then ``ensure_indexes`` does not ask the server to create it."""
    keys = list(dict(index.get("key") or {}).items())
    return (
        len(keys) == len(spec.keys)
        and all(
            name == want_name and _same_direction(direction, want)
            for (name, direction), (want_name, want) in zip(keys, spec.keys, strict=True)
        )
        and bool(index.get("unique")) == spec.unique
        and index.get("partialFilterExpression") == spec.partial
        and (
            spec.wildcard_projection is None
            # A wildcard index over every field serves attribute lookups as well.
            or "wildcardProjection" not in index
            or _same_projection(index["wildcardProjection"], spec.wildcard_projection)
        )
    )


def _same_direction(got: Any, want: int | str) -> bool:
    if isinstance(want, str) or isinstance(got, str | bool):
        return bool(got == want)
    return isinstance(got, int | float) and got == want


def _same_projection(got: Any, want: Mapping[str, int]) -> bool:
    """A server may list a wildcard projection's 0s as ``false``."""
    return isinstance(got, Mapping) and {k: int(v) for k, v in got.items()} == dict(want)


def index_specs(cfg: LedgerConfig) -> list[IndexSpec]:
    """Every index the ledger's queries need (see ``QUERY_SHAPES``)."""
    acc, date = cfg.account_link_field, cfg.date_field
    specs = [
        IndexSpec("transactions", ((acc, 1), (ACCOUNT_SEQ, -1)), "ledger_account_seq"),
        IndexSpec("transactions", ((acc, 1), (date, 1)), "ledger_account_date"),
        IndexSpec("transactions", ((OPERATION_ID, 1), (LEG, 1)), "ledger_operation"),
        IndexSpec("transactions", ((date, 1),), "ledger_date"),
        # Keys live in their own collection, unique by _id: that works on a sharded cluster,
        # where a unique index on the transactions would need their shard key as its prefix.
        # This index also creates the collection before the first DB transaction inserts.
        IndexSpec("idempotency", ((CREATED_AT, 1),), "ledger_idempotency_created"),
        # verify() reads every revert link: sparse indexes keep that proportional to reverts.
        IndexSpec(
            "transactions", ((REVERTS, 1),), "ledger_reverts", partial={REVERTS: {"$exists": True}}
        ),
        IndexSpec(
            "transactions",
            ((REVERTED_BY, 1),),
            "ledger_reverted_by",
            partial={REVERTED_BY: {"$exists": True}},
        ),
        # Attribute-set lookups query arbitrary fields: one wildcard index serves them all.
        IndexSpec(
            "accounts",
            (("$**", 1),),
            "ledger_attributes",
            wildcard_projection=dict.fromkeys(sorted(cfg.owned_account_fields - {"_id"}), 0),
        ),
    ]
    if not cfg.sharded_accounts:
        specs.append(
            IndexSpec(
                "accounts",
                ((ATTRIBUTES_KEY, 1),),
                "ledger_attributes_key",
                unique=True,
                partial={ATTRIBUTES_KEY: {"$exists": True}},
            )
        )
    if cfg.balance_field:
        specs.append(IndexSpec("accounts", ((cfg.balance_field, 1), ("_id", 1)), "ledger_balance"))
    specs.append(IndexSpec("accounts", ((CREATED_AT, 1), ("_id", 1)), "ledger_created_at"))
    # A capture's legs name their hold: verify matches captured holds with their legs.
    specs.append(
        IndexSpec(
            "transactions",
            ((HOLD_ID, 1),),
            "ledger_hold_legs",
            partial={HOLD_ID: {"$exists": True}},
        )
    )
    if cfg.currency_field:
        specs.append(
            IndexSpec("transactions", ((cfg.currency_field, 1), (date, 1)), "ledger_currency_date")
        )
    # Holds: an account's holds (as source or target) by status, newest first; every hold of
    # a status; the expiry sweep (pending, oldest expires_at first) and verify's pending sums.
    page = ((STATUS, 1), (CREATED_AT, 1), ("_id", 1))
    specs += [
        IndexSpec("holds", ((FROM_ACCOUNT_ID, 1), *page), "ledger_holds_from"),
        IndexSpec("holds", ((TO_ACCOUNT_ID, 1), *page), "ledger_holds_to"),
        IndexSpec("holds", page, "ledger_holds_status"),
        IndexSpec("holds", ((STATUS, 1), (EXPIRES_AT, 1)), "ledger_holds_expiry"),
    ]
    return specs


@dataclass(frozen=True)
class QueryShape:
    """A query the ledger sends: equality fields, then range fields, then the sort."""

    name: str
    collection: str
    equality: tuple[str, ...]
    sort: tuple[str, ...] = ()
    range: tuple[str, ...] = ()
    attribute_lookup: bool = False


def query_shapes(cfg: LedgerConfig) -> list[QueryShape]:
    acc, date = cfg.account_link_field, cfg.date_field
    shapes = [
        QueryShape("history", "transactions", (acc,), sort=(ACCOUNT_SEQ,), range=(ACCOUNT_SEQ,)),
        QueryShape("history by date", "transactions", (acc,), sort=(ACCOUNT_SEQ,)),
        QueryShape("balance_at", "transactions", (acc,), sort=(ACCOUNT_SEQ,)),
        QueryShape("calculate_balance", "transactions", (acc,)),
        QueryShape("balance_at of a backdated account", "transactions", (acc,), range=(date,)),
        QueryShape("account statistics", "transactions", (acc,), range=(date,)),
        QueryShape("statistics", "transactions", (), range=(date,)),
        QueryShape("account statistics bounds", "transactions", (acc,), sort=(date,)),
        QueryShape("statistics bounds", "transactions", (), sort=(date,)),
        QueryShape("operation legs", "transactions", (OPERATION_ID,), sort=(LEG,)),
        QueryShape("idempotency", "idempotency", ("_id",)),
        QueryShape("revert links", "transactions", (), range=(REVERTS,)),
        QueryShape("reverted links", "transactions", (), range=(REVERTED_BY,)),
        QueryShape("account by id", "accounts", ("_id",)),
        QueryShape("account by attributes", "accounts", (), attribute_lookup=True),
    ]
    if not cfg.sharded_accounts:  # there the digest is the _id
        shapes.append(QueryShape("account by key", "accounts", (ATTRIBUTES_KEY,)))
    if cfg.balance_field:
        shapes.append(QueryShape("report by balance", "accounts", (), sort=(cfg.balance_field,)))
    shapes.append(QueryShape("report by creation", "accounts", (), sort=(CREATED_AT,)))
    shapes.append(QueryShape("capture legs", "transactions", (), range=(HOLD_ID,)))
    if cfg.currency_field:
        shapes.append(
            QueryShape(
                "statistics by currency", "transactions", (cfg.currency_field,), range=(date,)
            )
        )
    shapes += [
        QueryShape("hold by id", "holds", ("_id",)),
        QueryShape("holds from an account", "holds", (FROM_ACCOUNT_ID, STATUS), sort=(CREATED_AT,)),
        QueryShape("holds to an account", "holds", (TO_ACCOUNT_ID, STATUS), sort=(CREATED_AT,)),
        QueryShape("holds by status", "holds", (STATUS,), sort=(CREATED_AT,)),
        QueryShape("expiry sweep", "holds", (STATUS,), sort=(EXPIRES_AT,), range=(EXPIRES_AT,)),
        QueryShape("pending holds per account", "holds", (STATUS,)),
    ]
    return shapes


def index_serves(spec: IndexSpec, shape: QueryShape) -> bool:
    """Whether ``spec`` can serve ``shape`` (equality prefix, then a sort or range field)."""
    if spec.collection != shape.collection:
        return False
    fields = [k for k, _ in spec.keys]
    if shape.attribute_lookup:
        return fields == ["$**"]
    if shape.equality == ("_id",):
        return True  # the implicit _id index
    n = len(shape.equality)
    if set(fields[:n]) != set(shape.equality):
        return False
    rest = fields[n:]
    wanted = shape.sort or shape.range
    return not wanted or (bool(rest) and rest[0] == wanted[0])


# Queries

HISTORY_PAGE = 100  # history() rows when no limit is given: a page, never the whole account
REPORT_PAGE = 100  # report() accounts when no limit is given


def validate_page_limit(limit: object, *, default: int) -> int:
    """A page size: a positive integer, or None for ``default``."""
    if limit is None:
        return default
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument(
            f"limit {limit!r} must be a positive integer (the page size; default {default})"
        )
    return int(limit)


def validate_skip(skip: object) -> int:
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise InvalidArgument(f"skip {skip!r} must be an integer >= 0")
    return int(skip)


def validate_before_seq(before_seq: object) -> int | None:
    """The ``account_seq`` a history page starts below (an integer >= 1), or None."""
    if before_seq is None:
        return None
    if isinstance(before_seq, bool) or not isinstance(before_seq, int) or before_seq < 1:
        raise InvalidArgument(
            f"before_seq {before_seq!r} must be a positive integer: the account_seq of the "
            "last row of the previous page"
        )
    return int(before_seq)


def bson_sort_key(value: Any) -> tuple[Any, ...]:
    """A Python sort key that orders values of any BSON type as MongoDB sorts them (numbers,
    then strings, documents, arrays, binary, ObjectIds, booleans, dates)."""
    if value is None:
        return (2,)
    if isinstance(value, bool):
        return (9, value)
    if isinstance(value, bson.Decimal128):
        value = value.to_decimal()
    if isinstance(value, Decimal) and value.is_nan():
        return (3, 0)
    if isinstance(value, int | float | Decimal):
        if isinstance(value, float) and math.isnan(value):  # NaN sorts below every number
            return (3, 0)
        return (3, 1, value)
    if isinstance(value, str):
        return (4, value)
    if isinstance(value, Mapping):
        return (5, [(k, bson_sort_key(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (6, [bson_sort_key(v) for v in value])
    if isinstance(value, bytes):
        subtype = value.subtype if isinstance(value, bson.Binary) else 0
        return (7, len(value), subtype, bytes(value))
    if isinstance(value, ObjectId):
        return (8, value.binary)
    if isinstance(value, datetime):
        return (10, _dates.comparable(value))
    return (20, type(value).__name__, repr(value))


def history_filter(
    cfg: LedgerConfig,
    account_id: Any,
    *,
    start: Any = None,
    end: Any = None,
    before_seq: int | None = None,
) -> dict[str, Any]:
    flt: dict[str, Any] = {cfg.account_link_field: account_id}
    flt.update(_date_range(cfg, start, end))
    if before_seq is not None:
        flt[ACCOUNT_SEQ] = {"$lt": before_seq}
    return flt


def _date_range(cfg: LedgerConfig, start: Any, end: Any) -> dict[str, Any]:
    """The inclusive date condition, or nothing when neither bound is given."""
    dates = {op: bound for op, bound in (("$gte", start), ("$lte", end)) if bound is not None}
    return {cfg.date_field: dates} if dates else {}


STATISTICS_FORMATS = _dates.PERIOD_FORMATS


def validate_period(period: object) -> str:
    if not isinstance(period, str) or period not in STATISTICS_FORMATS:
        raise InvalidArgument(f"period {period!r} is not one of {sorted(STATISTICS_FORMATS)}")
    return period


def statistics_match(
    cfg: LedgerConfig,
    account_id: Any,
    *,
    start: Any = None,
    end: Any = None,
    currency: Any = None,
) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if currency is not None:
        match[currency_field(cfg)] = validate_currency(currency)
    if account_id is not None:
        match[cfg.account_link_field] = account_id
    match.update(_date_range(cfg, start, end))
    return match


def _totals(cfg: LedgerConfig) -> dict[str, Any]:
    amount = f"${cfg.amount_field}"
    return {
        "credit": {"$sum": {"$cond": [{"$gt": [amount, 0]}, amount, 0]}},
        "debit": {"$sum": {"$cond": [{"$lt": [amount, 0]}, {"$subtract": [0, amount]}, 0]}},
        "count": {"$sum": 1},
    }


def statistics_pipeline(
    cfg: LedgerConfig,
    account_id: Any,
    *,
    period: str,
    start: Any = None,
    end: Any = None,
    currency: Any = None,
) -> list[dict[str, Any]]:
    """Per-period totals in UTC: the server names each period (``$dateToString``)."""
    period = validate_period(period)
    return [
        {"$match": statistics_match(cfg, account_id, start=start, end=end, currency=currency)},
        {
            "$group": {
                "_id": {
                    "$dateToString": {
                        "format": STATISTICS_FORMATS[period],
                        "date": f"${cfg.date_field}",
                    }
                },
                **_totals(cfg),
            }
        },
        {"$sort": {"_id": 1}},
    ]


def bucket_pipeline(
    cfg: LedgerConfig, match: dict[str, Any], boundaries: Sequence[datetime]
) -> list[dict[str, Any]]:
    """Per-period totals in a time zone: ``$bucket`` on the periods' UTC boundaries (one
    pipeline for every server version and engine; ``_id`` is the period's start)."""
    edges = [_dates.naive_utc(b) for b in boundaries]
    return [
        {"$match": match},
        # Only what the boundaries cover: a transaction written since they were computed
        # would fall outside them (a server refuses $bucket input without a bucket).
        {"$match": {cfg.date_field: {"$gte": edges[0], "$lt": edges[-1]}}},
        {
            "$bucket": {
                "groupBy": f"${cfg.date_field}",
                "boundaries": edges,
                "output": _totals(cfg),
            }
        },
    ]


def checked_total(value: Any, *, what: str) -> int:
    """An int64 sum from the server, or ``InvalidAmount``: a ``$sum`` of int64 values that
    overflows comes back as a double (a server) or an integer outside int64 (an engine), and
    ``int()`` would silently truncate it."""
    if isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
        raise InvalidAmount(
            f"{what} is {value!r}, outside the signed 64-bit range: the amounts sum past int64 "
            "(possible with balance_field=None, where no cached balance guards it)"
        )
    return int(value)


def sum_pipeline(cfg: LedgerConfig, match: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"$match": match},
        {"$group": {"_id": None, "total": {"$sum": f"${cfg.amount_field}"}}},
    ]


def balances_pipeline(cfg: LedgerConfig) -> list[dict[str, Any]]:
    """Per-account totals and counts over the whole transactions collection (verify, rebuild),
    with the lowest and highest ``account_seq`` (a complete history numbers its legs 1..count)."""
    return [
        {
            "$group": {
                "_id": f"${cfg.account_link_field}",
                "total": {"$sum": f"${cfg.amount_field}"},
                "count": {"$sum": 1},
                "seq": {"$max": f"${ACCOUNT_SEQ}"},
                "first": {"$min": f"${ACCOUNT_SEQ}"},
            }
        }
    ]
