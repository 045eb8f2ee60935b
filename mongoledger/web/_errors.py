"""HTTP answers for the ledger's errors (the JSON API and the pages share them).

=========================================================  ======
error                                                      status
=========================================================  ======
AccountNotFound, TransactionNotFound (any ``LookupError``)   404
InvalidAmount, InvalidAccount, InvalidData, InvalidArgument  400
InsufficientFunds                                            409
AlreadyReverted, IdempotencyConflict (other state errors)    409
TransactionsUnsupported, ChangeStreamsUnsupported            503
AfterWriteError (committed; a hook failed), configuration    500
=========================================================  ======

``InsufficientFunds`` is 409 Conflict, not 402: the request is well-formed and would succeed
against another state of the account (402 is reserved for payment schemes).
"""

from __future__ import annotations

from typing import Any

from mongoledger._format import to_jsonable
from mongoledger.errors import (
    AfterWriteError,
    ChangeStreamsUnsupported,
    InvalidConfiguration,
    LedgerError,
    TransactionsUnsupported,
)

__all__ = ["error_body", "status_for"]


def status_for(exc: LedgerError) -> int:
    """The HTTP status of a ledger error."""
    if isinstance(exc, TransactionsUnsupported | ChangeStreamsUnsupported):
        return 503
    if isinstance(exc, AfterWriteError | InvalidConfiguration):
        return 500
    if isinstance(exc, LookupError):
        return 404
    if isinstance(exc, ValueError):
        return 400
    return 409  # InsufficientFunds, AlreadyReverted, IdempotencyConflict and later state errors


def error_body(exc: LedgerError) -> dict[str, Any]:
    """``{"error": class name, "message": text}`` (plus the committed ids of an AfterWriteError)."""
    body: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, AfterWriteError):
        body["transaction_ids"] = to_jsonable(exc.transaction_ids)
    return body
