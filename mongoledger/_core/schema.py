"""The documents the ledger writes: the fields it owns on accounts, transactions and holds,
and MongoDB's limits on them (int64 numbers, the document size).

Field names the caller configures (``balance_field``, ``amount_field``, ...) live in
:class:`~mongoledger._core.config.LedgerConfig`; the fixed ones are here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bson
from bson.codec_options import CodecOptions

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

# Fields of a hold document (holds_collection); see ``mongoledger._core.holds``.
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

# How the ledger encodes a document to measure it (datetimes as given, never converted).
CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=False)


def encoded_size(doc: Mapping[str, Any]) -> int:
    """The size of ``doc`` in BSON: what MongoDB's 16 MiB limit counts."""
    return len(bson.encode(doc, codec_options=CODEC))


def preview(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut short: a message names the value without copying megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
