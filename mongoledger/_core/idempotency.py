"""Idempotency keys: the fingerprint of a call's arguments and the record (unique by ``_id``,
scoped to its ledger) that makes a key's first operation the only one."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import bson
from bson import ObjectId

from mongoledger._core import clock
from mongoledger._core.accounts import AccountRef, equality_key
from mongoledger._core.config import LedgerConfig
from mongoledger._core.schema import CODEC, CREATED_AT, KIND, OPERATION_ID
from mongoledger.errors import InvalidData

__all__ = [
    "fingerprint",
    "idempotency_document",
    "idempotency_id",
    "validate_idempotency_key",
]


def fingerprint(
    kind: str, legs: Sequence[tuple[Any, int, Mapping[str, Any]]], *, earlier: bool = False
) -> str:
    """A digest of an operation's arguments (accounts, amounts and each leg's data), before
    hooks: equal calls have equal digests.

    ``earlier``: the digest the previous version recorded, before account references compared
    numbers by value (each value as given). It is read only with a record of that version's
    layout (``_id`` the bare key), so a call it recorded and retried after an upgrade still
    gets its first result, not an ``IdempotencyConflict``.
    """
    canon = {
        "kind": kind,
        "legs": [
            [_canonical(account, earlier), amount, _canonical(data, earlier)]
            for account, amount, data in legs
        ],
    }
    return hashlib.sha256(bson.encode(canon, codec_options=CODEC)).hexdigest()


def _canonical(value: Any, earlier: bool) -> Any:
    if isinstance(value, AccountRef):  # one account, however its numbers are spelled
        if earlier:  # the previous version's: each value as given
            if value.attributes:
                return {"attributes": _canonical(value.attributes, earlier)}
            return {"id": value.id}
        if value.attributes:
            return {
                "attributes": {
                    k: equality_key(value.attributes[k]) for k in sorted(value.attributes)
                }
            }
        return {"id": equality_key(value.id)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(value[k], earlier) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_canonical(v, earlier) for v in value]
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
        CREATED_AT: clock.utcnow(),
    }


def validate_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > 512:
        raise InvalidData(
            f"idempotency_key {key!r} must be a non-empty string of at most 512 chars"
        )
    return key
