"""Two-phase transfers (holds): the I/O-free side, shared by ``AsyncLedger`` and ``Ledger``.

A hold reserves part of an account's available balance (its balance minus its ``held`` sum)
for another account. It is a document of the holds collection::

    {_id, from_account_id, to_account_id, amount, status, created_at, expires_at?,
     captured_amount?, closed_at?, operation_id?, idempotency_key?, currency?, <extra data>}

``status`` starts ``pending`` and moves once, to ``captured``, ``voided`` or ``expired``: every
closing update matches only a pending hold (and, for a capture or void, one whose
``expires_at`` has not passed), so of several racing closers exactly one matches. The source
account's ``held`` moves by the hold's amount in the same DB transaction as the status.

Here: argument validation, the hold document, the guarded filters and updates of each step,
the diagnosis of a closing update that matched nothing, and the conversion to ``Hold``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import bson
from bson import ObjectId

from mongoledger._core import clock
from mongoledger._core.config import LedgerConfig
from mongoledger._core.data import extra_data, place_data
from mongoledger._core.dates import deep_utc, millis, utc
from mongoledger._core.schema import (
    AMOUNT,
    CAPTURED_AMOUNT,
    CLOSED_AT,
    CREATED_AT,
    EXPIRES_AT,
    FROM_ACCOUNT_ID,
    IDEMPOTENCY_HASH,
    IDEMPOTENCY_KEY,
    OPERATION_ID,
    STATUS,
    TO_ACCOUNT_ID,
    VOID_DATA,
)
from mongoledger._core.transactions import as_object_id
from mongoledger.errors import HoldClosed, HoldExpired, HoldNotFound, InvalidAmount, InvalidArgument
from mongoledger.models import Hold

__all__ = [
    "CLOSED_PROJECTION",
    "STATUSES",
    "capture_update",
    "closing_filter",
    "diagnose",
    "expire_filter",
    "expiry_fingerprint",
    "hold_document",
    "hold_to_model",
    "holds_query",
    "pending_held_pipeline",
    "reopen",
    "sweep_filter",
    "validate_expiry",
    "validate_hold_id",
    "validate_now",
    "validate_statuses",
    "void_update",
]

PENDING = "pending"
STATUSES = ("pending", "captured", "voided", "expired")
CLOSING_STATUS = {"capture": "captured", "void": "voided", "expire": "expired"}


# Arguments


def validate_hold_id(value: object) -> ObjectId:
    """Hold ids are ObjectIds; a 24-hex-digit string is accepted (the CLI, JSON clients)."""
    oid = as_object_id(value)
    if oid is None:
        raise HoldNotFound(value, "not a hold id (an ObjectId or 24 hex digits)")
    return oid


def validate_expiry(value: object, now: datetime) -> datetime | None:
    """``expires_at`` as stored: a datetime (naive means UTC) or a ``timedelta`` from now,
    in the future; None for a hold that never expires."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise InvalidArgument(f"expires_at {value!r} must be a positive duration")
        return millis(now + value)
    if not isinstance(value, datetime):
        raise InvalidArgument(
            f"expires_at {value!r} is a {type(value).__name__}; pass a datetime (naive means "
            "UTC) or a timedelta from now"
        )
    when = millis(utc(value))
    if when <= now:
        raise InvalidArgument(
            f"expires_at {value!r} is not in the future (now is {now.isoformat()}); a hold "
            "must be able to be captured"
        )
    return when


def expiry_fingerprint(value: object) -> Any:
    """How ``expires_at`` enters an idempotency fingerprint: as the caller gave it, so a
    retry with the same relative ``timedelta`` is the same call."""
    if isinstance(value, timedelta):
        return {"in_ms": int(value / timedelta(milliseconds=1))}
    if isinstance(value, datetime):
        return {"at": millis(utc(value))}
    return value


def validate_now(value: object) -> datetime:
    """The instant ``expire_holds`` releases up to (default: now)."""
    if value is None:
        return clock.utcnow()
    if not isinstance(value, datetime):
        raise InvalidArgument(
            f"now {value!r} is a {type(value).__name__}, not a datetime (naive means UTC)"
        )
    return millis(utc(value))


def validate_statuses(status: object) -> list[str]:
    """``status`` of ``holds()``: one status, several, or None for all of them."""
    if status is None:
        return list(STATUSES)
    wanted = [status] if isinstance(status, str) else status
    if not isinstance(wanted, Sequence) or not wanted:
        raise InvalidArgument(f"status {status!r} is not one of {list(STATUSES)} (or None: all)")
    for item in wanted:
        if item not in STATUSES:
            raise InvalidArgument(f"status {item!r} is not one of {list(STATUSES)} (or None: all)")
    return list(dict.fromkeys(wanted))


# Documents


def hold_document(
    cfg: LedgerConfig,
    hold_id: ObjectId,
    *,
    from_account_id: Any,
    to_account_id: Any,
    amount: int,
    expires_at: datetime | None,
    created_at: datetime,
    data: Mapping[str, Any],
    idempotency: tuple[str, str] | None,
    currency: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": hold_id,
        FROM_ACCOUNT_ID: from_account_id,
        TO_ACCOUNT_ID: to_account_id,
        AMOUNT: bson.Int64(amount),
        STATUS: PENDING,
        CREATED_AT: created_at,
    }
    if expires_at is not None:
        doc[EXPIRES_AT] = expires_at
    if idempotency is not None:
        doc[IDEMPOTENCY_KEY], doc[IDEMPOTENCY_HASH] = idempotency
    if cfg.currency_field is not None and currency is not None:
        doc[cfg.currency_field] = currency
    place_data(cfg, doc, data)
    return doc


def hold_to_model(cfg: LedgerConfig, doc: Mapping[str, Any]) -> Hold:
    captured = doc.get(CAPTURED_AMOUNT)
    return Hold(
        id=doc["_id"],
        from_account_id=doc.get(FROM_ACCOUNT_ID),
        to_account_id=doc.get(TO_ACCOUNT_ID),
        amount=int(doc[AMOUNT]),
        status=doc.get(STATUS, PENDING),
        captured_amount=None if captured is None else int(captured),
        expires_at=utc(doc.get(EXPIRES_AT)),
        created_at=utc(doc.get(CREATED_AT)),
        closed_at=utc(doc.get(CLOSED_AT)),
        operation_id=doc.get(OPERATION_ID),
        idempotency_key=doc.get(IDEMPOTENCY_KEY),
        currency=doc.get(cfg.currency_field) if cfg.currency_field else None,
        data=extra_data(cfg, doc, cfg.owned_hold_fields),
        void_data=dict(deep_utc(doc.get(VOID_DATA) or {})),
    )


# The guarded steps


def closing_filter(
    hold_id: ObjectId, now: datetime, *, amount: int | None = None
) -> dict[str, Any]:
    """Matches the hold only while it is pending and unexpired (and, for a partial capture,
    holds at least ``amount``): the guard of a capture or void."""
    flt: dict[str, Any] = {
        "_id": hold_id,
        STATUS: PENDING,
        "$or": [{EXPIRES_AT: None}, {EXPIRES_AT: {"$gt": now}}],
    }
    if amount is not None:
        flt[AMOUNT] = {"$gte": amount}
    return flt


# What closing a hold needs back from its update: the legs it moves (not the hold's data).
CLOSED_PROJECTION = {FROM_ACCOUNT_ID: 1, TO_ACCOUNT_ID: 1, AMOUNT: 1, CAPTURED_AMOUNT: 1}


def capture_update(amount: int | None, now: datetime, operation_id: ObjectId) -> list[Any]:
    """Close as captured. A pipeline update, so a full capture records the hold's own amount
    without reading it first; every value is a ``$literal`` (never read as a field path)."""
    captured: Any = f"${AMOUNT}" if amount is None else {"$literal": bson.Int64(amount)}
    return [
        {
            "$set": {
                STATUS: {"$literal": "captured"},
                CAPTURED_AMOUNT: captured,
                CLOSED_AT: {"$literal": now},
                OPERATION_ID: {"$literal": operation_id},
            }
        }
    ]


def void_update(data: Mapping[str, Any], now: datetime, operation_id: ObjectId) -> dict[str, Any]:
    fields: dict[str, Any] = {STATUS: "voided", CLOSED_AT: now, OPERATION_ID: operation_id}
    if data:
        fields[VOID_DATA] = dict(data)
    return {"$set": fields}


def expire_filter(hold_id: Any, now: datetime) -> dict[str, Any]:
    return {"_id": hold_id, STATUS: PENDING, EXPIRES_AT: {"$lte": now}}


def expire_update(now: datetime, operation_id: ObjectId) -> dict[str, Any]:
    return {"$set": {STATUS: "expired", CLOSED_AT: now, OPERATION_ID: operation_id}}


def sweep_filter(now: datetime) -> dict[str, Any]:
    """Pending holds whose ``expires_at`` has passed (served by ``{status, expires_at}``)."""
    return {STATUS: PENDING, EXPIRES_AT: {"$lte": now}}


def reopen(hold_id: Any, status: str, operation_id: ObjectId) -> tuple[dict[str, Any], Any]:
    """Undo a closing update (without DB transactions, when the rest of the step failed)."""
    return (
        {"_id": hold_id, STATUS: status, OPERATION_ID: operation_id},
        {"$set": {STATUS: PENDING}, "$unset": dict.fromkeys(_CLOSING_FIELDS, "")},
    )


_CLOSING_FIELDS = (CAPTURED_AMOUNT, CLOSED_AT, OPERATION_ID, VOID_DATA)


def diagnose(
    doc: Mapping[str, Any] | None, hold_id: Any, now: datetime, amount: int | None = None
) -> None:
    """Why a closing update matched nothing: raise the error that says so, or return when the
    hold is pending after all (the caller retries)."""
    if doc is None:
        raise HoldNotFound(hold_id)
    status = doc.get(STATUS)
    expires = doc.get(EXPIRES_AT)
    if status == "expired" or (
        status == PENDING and isinstance(expires, datetime) and utc(expires) <= now
    ):
        raise HoldExpired(hold_id, utc(expires))
    if status != PENDING:
        raise HoldClosed(hold_id, str(status))
    held = int(doc[AMOUNT])
    if amount is not None and amount > held:
        raise InvalidAmount(
            f"capture amount {amount} exceeds hold {hold_id!r} of {held}; capture at most the "
            "held amount (the rest is released)"
        )


# Queries


def holds_query(account_id: Any, statuses: list[str]) -> dict[str, Any]:
    """An account's holds (as source or target) of these statuses, or every hold of them."""
    status: Any = statuses[0] if len(statuses) == 1 else {"$in": statuses}
    if account_id is None:
        return {STATUS: status}
    return {
        "$or": [
            {FROM_ACCOUNT_ID: account_id, STATUS: status},
            {TO_ACCOUNT_ID: account_id, STATUS: status},
        ]
    }


HOLDS_ORDER = [(CREATED_AT, -1), ("_id", -1)]


def pending_held_pipeline(account_id: Any = None) -> list[dict[str, Any]]:
    """The sum of pending holds per source account: what each account's ``held`` must be."""
    match: dict[str, Any] = {STATUS: PENDING}
    if account_id is not None:
        match[FROM_ACCOUNT_ID] = account_id
    return [
        {"$match": match},
        {
            "$group": {
                "_id": f"${FROM_ACCOUNT_ID}",
                "held": {"$sum": f"${AMOUNT}"},
                "count": {"$sum": 1},
            }
        },
    ]
