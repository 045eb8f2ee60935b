"""The errors mongoledger raises.

Every error derives from :class:`LedgerError`; lookup failures are also ``LookupError`` and bad
arguments also ``ValueError``, so callers can catch them by meaning as well as by class::

    LedgerError
    ├── AccountNotFound            (LookupError)
    ├── TransactionNotFound        (LookupError)
    ├── HoldNotFound               (LookupError)
    ├── InvalidAmount              (ValueError)
    ├── InvalidAccount             (ValueError)
    │   └── CurrencyMismatch
    ├── InvalidData                (ValueError)
    ├── InvalidConfiguration       (ValueError)
    ├── InvalidArgument            (ValueError)
    ├── InsufficientFunds
    ├── AlreadyReverted
    ├── HoldClosed                 (a capture, void or expiry of a hold that is closed)
    │   └── HoldExpired
    ├── IdempotencyConflict
    ├── TransactionsUnsupported
    ├── WriteRetriesExhausted      (PyMongoError: PyMongo stopped retrying a write's DB
    │                               transaction; says whether it may have committed)
    ├── AfterWriteError            (the operation committed; an after_write hook failed)
    └── ChangeStreamError
        ├── ChangeStreamsUnsupported
        ├── ChangeStreamInvalidated
        └── ChangeStreamHistoryLost

    NoTransactionsWarning (UserWarning): writing without DB transactions (standalone, mongomock)

Every message names the offending value, and says what to do where there is something to do.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import PyMongoError

__all__ = [
    "AccountNotFound",
    "AfterWriteError",
    "AlreadyReverted",
    "ChangeStreamError",
    "ChangeStreamHistoryLost",
    "ChangeStreamInvalidated",
    "ChangeStreamsUnsupported",
    "CurrencyMismatch",
    "HoldClosed",
    "HoldExpired",
    "HoldNotFound",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidAccount",
    "InvalidAmount",
    "InvalidArgument",
    "InvalidConfiguration",
    "InvalidData",
    "LedgerError",
    "NoTransactionsWarning",
    "TransactionNotFound",
    "TransactionsUnsupported",
    "WriteRetriesExhausted",
]


class LedgerError(Exception):
    """Root of every error mongoledger raises."""


# Lookups


class AccountNotFound(LedgerError, LookupError):
    """The account does not exist (and the call may not create it)."""

    def __init__(self, account: Any, reason: str = "") -> None:
        self.account = account
        message = f"account {account!r} does not exist"
        super().__init__(f"{message}: {reason}" if reason else message)


class TransactionNotFound(LedgerError, LookupError):
    """No transaction has this id."""

    def __init__(self, transaction_id: Any, reason: str = "") -> None:
        self.transaction_id = transaction_id
        message = f"transaction {transaction_id!r} does not exist"
        super().__init__(f"{message}: {reason}" if reason else message)


class HoldNotFound(LedgerError, LookupError):
    """No hold has this id."""

    def __init__(self, hold_id: Any, reason: str = "") -> None:
        self.hold_id = hold_id
        message = f"hold {hold_id!r} does not exist"
        super().__init__(f"{message}: {reason}" if reason else message)


# Bad arguments


class InvalidAmount(LedgerError, ValueError):
    """An amount is not a non-zero int64, legs do not balance, or a balance would overflow."""


class InvalidAccount(LedgerError, ValueError):
    """An account reference is malformed or ambiguous, or an account conflicts with a request."""


class CurrencyMismatch(InvalidAccount):
    """The accounts of one operation carry different currencies; nothing was written."""

    def __init__(self, currencies: dict[Any, Any], currency_field: str) -> None:
        self.currencies = dict(currencies)
        self.currency_field = currency_field
        listed = ", ".join(
            f"account {account!r} in {currency!r}"
            if currency is not None
            else f"account {account!r} with no {currency_field!r}"
            for account, currency in self.currencies.items()
        )
        super().__init__(
            f"currency mismatch: {listed}; an operation never mixes currencies (exchange "
            "through two operations and an exchange account per currency)"
        )


class InvalidData(LedgerError, ValueError):
    """Extra data cannot be stored: reserved or unsafe keys, unencodable values, too large."""


class InvalidArgument(LedgerError, ValueError):
    """Another argument is out of range: a page size, a sort key, a period, an event kind."""


class InvalidConfiguration(LedgerError, ValueError):
    """The ledger's options contradict each other or name unusable fields."""


# Refusals


class InsufficientFunds(LedgerError):
    """The operation would take an account's available balance (its balance minus its pending
    holds) below its ``min_balance``; nothing was written."""

    def __init__(
        self, account_id: Any, balance: int, amount: int, min_balance: int, held: int = 0
    ) -> None:
        self.account_id = account_id
        self.balance = balance
        self.held = held
        self.available = balance - held
        self.amount = amount
        self.min_balance = min_balance
        if held:
            where = f"available balance {self.available} (balance {balance}, held {held})"
        else:
            where = f"balance {balance}"
        super().__init__(
            f"insufficient funds on account {account_id!r}: {where} {amount:+d} "
            f"would be {self.available + amount}, below its min_balance {min_balance}"
        )


class AlreadyReverted(LedgerError):
    """The transaction (or its operation) has been reverted already."""

    def __init__(self, transaction_id: Any, reverted_by: Any) -> None:
        self.transaction_id = transaction_id
        self.reverted_by = reverted_by
        super().__init__(
            f"transaction {transaction_id!r} is already reverted by {reverted_by!r}; "
            "revert the reversal to re-apply it"
        )


class HoldClosed(LedgerError):
    """The hold was captured, voided or expired already (a hold closes exactly once)."""

    def __init__(self, hold_id: Any, status: str, reason: str = "") -> None:
        self.hold_id = hold_id
        self.status = status
        message = reason or f"hold {hold_id!r} is already {status}; a hold closes exactly once"
        super().__init__(message)


class HoldExpired(HoldClosed):
    """The hold's ``expires_at`` has passed (whether or not ``expire_holds`` released it)."""

    def __init__(self, hold_id: Any, expires_at: Any) -> None:
        self.expires_at = expires_at
        super().__init__(
            hold_id,
            "expired",
            f"hold {hold_id!r} expired at {expires_at!r}; an expired hold cannot be captured "
            "or voided (expire_holds() releases its reservation)",
        )


class IdempotencyConflict(LedgerError):
    """The idempotency key was used before with different arguments."""

    def __init__(self, key: str, first_ids: Any) -> None:
        self.key = key
        self.first_ids = first_ids
        super().__init__(
            f"idempotency key {key!r} was already used for a different operation "
            f"(transactions {first_ids!r}); use a new key for a new operation"
        )


class AfterWriteError(LedgerError):
    """The operation COMMITTED, but an ``after_write`` hook raised: do not retry the write.

    ``transaction_ids`` are the committed transactions; ``errors`` what the hooks raised
    (every hook ran, for every document).
    """

    def __init__(self, transaction_ids: list[Any], errors: list[BaseException]) -> None:
        self.transaction_ids = transaction_ids
        self.errors = errors
        super().__init__(
            f"the operation committed (transactions {transaction_ids!r}) but "
            f"{len(errors)} after_write hook call(s) failed, the first with {errors[0]!r}; "
            "do not retry the write"
        )


class TransactionsUnsupported(LedgerError):
    """The deployment cannot run multi-document transactions and the ledger requires them."""


class WriteRetriesExhausted(LedgerError, PyMongoError):
    """A write's DB transaction failed and PyMongo stopped retrying it (its ``with_transaction``
    retries transient errors for up to 120 seconds).

    ``may_have_committed`` is False when the last error aborted the DB transaction (nothing of
    the operation was written: retrying is safe) and True when the commit's outcome is unknown
    (``UnknownTransactionCommitResult``: it may have been applied). Either way a retry with the
    same ``idempotency_key`` is safe: it returns the original ids if the operation committed.
    The PyMongo error is ``__cause__``; ``code`` and the error labels are copied from it, so
    ``except PyMongoError`` still catches it.
    """

    def __init__(
        self, cause: PyMongoError, *, may_have_committed: bool, idempotency_key: str | None
    ) -> None:
        self.cause = cause
        self.may_have_committed = may_have_committed
        self.idempotency_key = idempotency_key
        self.code = getattr(cause, "code", None)
        labels = [
            label
            for label in ("TransientTransactionError", "UnknownTransactionCommitResult")
            if cause.has_error_label(label)
        ]
        if may_have_committed:
            outcome = "it may have committed"
        else:
            outcome = "it did not commit (the DB transaction was aborted)"
        if idempotency_key is not None:
            advice = f"retrying with idempotency_key {idempotency_key!r} is safe"
        elif may_have_committed:
            advice = (
                "check whether it was applied before retrying, and send writes that must "
                "happen once with an idempotency_key"
            )
        else:
            advice = "retrying is safe"
        super().__init__(
            f"the write failed after PyMongo's retries ({cause}): {outcome}; {advice}", labels
        )


# Change streams


class ChangeStreamError(LedgerError):
    """A change stream could not be opened or continued."""


class ChangeStreamsUnsupported(ChangeStreamError):
    """The deployment has no change streams (standalone mongod, plain mongomock)."""


class ChangeStreamInvalidated(ChangeStreamError):
    """The watched collection was dropped or renamed: the stream has ended."""


class ChangeStreamHistoryLost(ChangeStreamError):
    """The resume point is no longer in the oplog: events after it may be lost."""


# Warnings


class NoTransactionsWarning(UserWarning):
    """The deployment has no multi-document transactions: writes are not all-or-nothing."""
