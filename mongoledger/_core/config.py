"""The ledger's options (:class:`LedgerConfig`), validated once at construction, and the check
that the ledger was given a database it can use."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from mongoledger._core import clock
from mongoledger._core.amounts import NoFloor, validate_min_balance
from mongoledger._core.dates import check_date_argument
from mongoledger._core.schema import (
    FIXED_ACCOUNT_FIELDS,
    FIXED_HOLD_FIELDS,
    FIXED_TRANSACTION_FIELDS,
)
from mongoledger.errors import InvalidAmount, InvalidConfiguration

__all__ = ["COLLECTION_OPTIONS", "LedgerConfig", "check_database"]


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
            return clock.utcnow()
        if callable(self.date_value):
            return self.date_value()
        return self.date_value

    def check_date(
        self, value: Any, *, what: str, written: Any = None, require: str | None = None
    ) -> Any:
        """A validated date argument ready for a query (Decision 8)."""
        return check_date_argument(
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
