"""The guarded update: the one ``findAndModify`` that moves an account for one leg, with the
min_balance floor (on the available balance) and int64 overflow checks in its filter, so the
check and the move are one atomic step; and, when it matched nothing, why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import bson

from mongoledger._core.accounts import AccountRef, account_filter
from mongoledger._core.config import LedgerConfig
from mongoledger._core.schema import HELD, INT64_MAX, INT64_MIN, LAST_DATE, MIN_BALANCE, SEQ
from mongoledger._core.transactions import Leg
from mongoledger.errors import (
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAccount,
    InvalidAmount,
    LedgerError,
)

__all__ = [
    "LegUpdate",
    "below_floor",
    "explain_refusal",
    "floor_guard",
    "held_of",
    "kept_conflicting",
    "leg_update",
]

_MIN_BALANCE_PATH = f"${MIN_BALANCE}"
_HELD_PATH = f"${HELD}"


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
    # Built on every leg of every write: literals and few calls (see benchmarks/RESULTS.md).
    flt = {"_id": target.id} if target.attributes is None else account_filter(cfg, target)
    bal = cfg.balance_field
    inc: dict[str, Any]
    if amount:
        inc = {SEQ: 1}
        update: dict[str, Any] = {"$inc": inc, "$max": {LAST_DATE: date}}
        projection = {SEQ: 1, LAST_DATE: 1}
    else:
        inc = {}
        update = {"$inc": inc}
        projection = {SEQ: 1}
    if held:
        inc[HELD] = bson.Int64(held)
    if cfg.currency_field is not None:
        projection[cfg.currency_field] = 1
    floor = bal is not None and amount - held < 0  # the available balance goes down
    if bal is not None:
        projection[bal] = 1
        if amount > 0:
            flt[bal] = {"$lte": INT64_MAX - amount}
        elif amount < 0:
            flt[bal] = {"$gte": INT64_MIN - amount}
        if amount:
            inc[bal] = bson.Int64(amount)
    if held > 0:  # the held sum must not overflow int64 (a missing one is zero)
        room = {"$lte": INT64_MAX - held}
        if floor:  # a hold: each branch of the floor under its own held case
            without, with_held = _floor_expressions(cfg, amount - held)
            flt["$or"] = [
                {HELD: {"$exists": False}, "$or": [{MIN_BALANCE: None}, {"$expr": without}]},
                {HELD: room, "$or": [{MIN_BALANCE: None}, {"$expr": with_held}]},
            ]
        else:
            flt["$or"] = [{HELD: {"$exists": False}}, {HELD: room}]
    elif floor:
        flt["$or"] = floor_guard(cfg, amount - held)
    return LegUpdate(filter=flt, update=update, projection=projection)


def floor_guard(cfg: LedgerConfig, change: int) -> list[dict[str, Any]]:
    """``balance + change - held >= min_balance``, or no floor at all: the branches of an
    ``$or``. A missing ``held`` is zero, spelled out as its own branch (``$add`` with a missing
    field is null, which every number compares above). A ``held`` that is not a number (set
    outside the ledger: null would pass any floor, a string fail the ``$add``) matches no
    branch: the refusal names it (:func:`explain_refusal`)."""
    without, with_held = _floor_expressions(cfg, change)
    return [
        {MIN_BALANCE: None},  # matches a missing field too: an unguarded account
        {HELD: {"$exists": False}, "$expr": without},
        {HELD: {"$type": "number"}, "$expr": with_held},
    ]


def _floor_expressions(cfg: LedgerConfig, change: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The floor as ``$expr`` comparisons: without a held sum, and with one."""
    after = {"$add": [cfg.balance_path, change]}
    return (
        {"$gte": [after, _MIN_BALANCE_PATH]},
        {"$gte": [after, {"$add": [_MIN_BALANCE_PATH, _HELD_PATH]}]},
    )


def held_of(doc: Mapping[str, Any]) -> int | None:
    """An account's ``held`` sum: the field, zero when missing; None when it holds anything
    but an integer (null, a string, a float: changed outside the ledger)."""
    held = doc.get(HELD, 0)
    if isinstance(held, bool) or not isinstance(held, int):
        return None
    return int(held)


def below_floor(balance: int, held: int, floor: int | None) -> bool:
    """Whether the available balance (``balance - held``) is below ``floor``: the state every
    guard refuses to end in (``verify`` reports an account found in it)."""
    return floor is not None and balance - held < floor


def explain_refusal(cfg: LedgerConfig, leg: Leg, doc: Mapping[str, Any]) -> None:
    """Raise the reason the guarded update of ``leg`` did not match ``doc`` (the account as the
    guard saw it), or return when nothing in ``doc`` refuses the leg (the cause went away:
    the operation runs again)."""
    if leg.currency_guard is not None and cfg.currency_field is not None:
        currency, counterpart = leg.currency_guard
        if doc.get(cfg.currency_field) != currency:
            raise CurrencyMismatch(
                {doc["_id"]: doc.get(cfg.currency_field), counterpart: currency},
                cfg.currency_field,
            )
    held = held_of(doc)
    floored = leg.amount - leg.held < 0 and doc.get(MIN_BALANCE) is not None
    if held is None and (leg.held > 0 or floored):  # a guard that reads held refused
        raise InvalidAccount(
            f"account {doc['_id']!r} has no integer {HELD!r} field ({doc[HELD]!r}: changed "
            "outside the ledger?); verify(repair=True) rebuilds it from the pending holds"
        )
    held = held or 0  # a leg whose guard ignores it
    if leg.held > 0 and held + leg.held > INT64_MAX:
        raise InvalidAmount(
            f"amount {leg.held} would overflow the int64 held sum {held} of account {doc['_id']!r}"
        )
    if cfg.balance_field is None:
        return
    balance: Any = doc.get(cfg.balance_field)
    floor: Any = doc.get(MIN_BALANCE)
    for name, value in ((cfg.balance_field, balance), (MIN_BALANCE, floor)):
        if isinstance(value, bool) or not isinstance(value, int | None) or balance is None:
            raise InvalidAccount(
                f"account {doc['_id']!r} has no integer {name!r} field ({value!r}: created "
                "or changed outside the ledger?); verify(repair=True) rebuilds the balance"
            )
    result = int(balance) + leg.amount
    if not INT64_MIN <= result <= INT64_MAX:
        raise InvalidAmount(
            f"amount {leg.amount} would overflow the int64 balance {balance} of account "
            f"{doc['_id']!r}"
        )
    change = leg.amount - leg.held  # what the leg does to the available balance
    if change < 0 and below_floor(result, held + leg.held, floor):
        # An account this operation creates is named as the caller referenced it: its
        # _id goes away with the refused operation.
        named = doc["_id"] if leg.account_id is not None else leg.account.describe()
        raise InsufficientFunds(named, int(balance), change, int(floor), held=int(held))


def kept_conflicting(kind: str, target: str, attempts: int) -> LedgerError:
    """The error of an operation whose guarded update (of ``target``: "account X", "hold Y")
    was refused ``attempts`` times, each time for a cause that was gone when the ledger looked
    (a refusal whose cause is still there raises that cause instead)."""
    return LedgerError(
        f"{kind} kept conflicting with concurrent writes: the guarded update of {target} was "
        f"refused {attempts} times and each time its cause was gone when the ledger looked; "
        "try again"
    )
