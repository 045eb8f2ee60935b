"""The guarded update: the one ``findAndModify`` that moves an account for one leg, with the
min_balance floor (on the available balance) and int64 overflow checks in its filter, so the
check and the move are one atomic step."""

from __future__ import annotations

from typing import Any, NamedTuple

import bson

from mongoledger._core.accounts import AccountRef, account_filter
from mongoledger._core.config import LedgerConfig
from mongoledger._core.schema import HELD, INT64_MAX, INT64_MIN, LAST_DATE, MIN_BALANCE, SEQ

__all__ = ["LegUpdate", "floor_guard", "leg_update"]

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
