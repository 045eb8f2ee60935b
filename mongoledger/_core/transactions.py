"""Transaction documents: the legs an operation plans (:class:`Leg`), the document each one
becomes, the size check before anything is sent, reversal legs, transaction ids, and the
``Transaction`` model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import ObjectId

from mongoledger._core import clock
from mongoledger._core.accounts import AccountRef
from mongoledger._core.config import LedgerConfig
from mongoledger._core.data import extra_data, place_data
from mongoledger._core.dates import utc
from mongoledger._core.schema import (
    ACCOUNT_SEQ,
    BALANCE_AFTER,
    HEADROOM,
    HOLD_ID,
    IDEMPOTENCY_HASH,
    IDEMPOTENCY_KEY,
    INT64_MAX,
    INT64_MIN,
    KIND,
    LEG,
    LEGS,
    MAX_BSON_SIZE,
    MAX_DOCUMENT_SIZE,
    OPERATION_ID,
    REVERTED_BY,
    REVERTS,
    encoded_size,
    preview,
)
from mongoledger.errors import InvalidAmount, InvalidData, TransactionNotFound
from mongoledger.models import OperationKind, Transaction

__all__ = [
    "Leg",
    "as_object_id",
    "check_sizes",
    "reversal_legs",
    "transaction_document",
    "transaction_to_model",
    "validate_transaction_id",
]


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
    place_data(cfg, doc, leg.data)
    if leg.data or not isinstance(leg.account_id, (ObjectId, int)):  # else far below 16 MiB
        size = encoded_size(doc)
        if size > MAX_DOCUMENT_SIZE:
            raise InvalidData(
                f"transaction document for account {preview(leg.account.describe())} would be "
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
            date=clock.utcnow() if date is None else date,
            idempotency=idempotency,
        )


def transaction_to_model(cfg: LedgerConfig, doc: Mapping[str, Any]) -> Transaction:
    link = cfg.extra_account_link_field
    balance_after = doc.get(BALANCE_AFTER)
    return Transaction(
        id=doc["_id"],
        account_id=doc.get(cfg.account_link_field),
        amount=int(doc[cfg.amount_field]),
        date=utc(doc.get(cfg.date_field)),
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
        data=extra_data(cfg, doc, cfg.owned_transaction_fields),
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
        size = encoded_size(doc) if extra else 0
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
