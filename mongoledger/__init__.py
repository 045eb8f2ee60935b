"""mongoledger: a balance ledger in MongoDB.

Atomic increases, decreases, transfers, multi-leg posts and safe reverts, each one MongoDB
multi-document transaction; two-phase transfers (holds), currencies, idempotency keys,
overdraft guards, reconciliation and change-stream consumers. ``Ledger`` (sync) and
``AsyncLedger`` (async) share one behaviour.
"""

from mongoledger._async.ledger import AsyncLedger
from mongoledger._core.amounts import NO_FLOOR
from mongoledger._sync.ledger import Ledger
from mongoledger.errors import (
    AccountNotFound,
    AfterWriteError,
    AlreadyReverted,
    ChangeStreamError,
    ChangeStreamHistoryLost,
    ChangeStreamInvalidated,
    ChangeStreamsUnsupported,
    CurrencyMismatch,
    HoldClosed,
    HoldExpired,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidAmount,
    InvalidArgument,
    InvalidConfiguration,
    InvalidData,
    LedgerError,
    NoTransactionsWarning,
    TransactionNotFound,
    TransactionsUnsupported,
    WriteRetriesExhausted,
)
from mongoledger.models import (
    Account,
    BalanceMismatch,
    BrokenHold,
    BrokenLink,
    FloorViolation,
    HeldMismatch,
    Hold,
    HookContext,
    LedgerEvent,
    PeriodStatistics,
    RunningBalanceMismatch,
    Transaction,
    UnbalancedOperation,
    VerifyReport,
)

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 - one plain sorted() order, which tests/test_public_api.py checks
    "Account",
    "AccountNotFound",
    "AfterWriteError",
    "AlreadyReverted",
    "AsyncLedger",
    "BalanceMismatch",
    "BrokenHold",
    "BrokenLink",
    "ChangeStreamError",
    "ChangeStreamHistoryLost",
    "ChangeStreamInvalidated",
    "ChangeStreamsUnsupported",
    "CurrencyMismatch",
    "FloorViolation",
    "HeldMismatch",
    "Hold",
    "HoldClosed",
    "HoldExpired",
    "HoldNotFound",
    "HookContext",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidAccount",
    "InvalidAmount",
    "InvalidArgument",
    "InvalidConfiguration",
    "InvalidData",
    "Ledger",
    "LedgerError",
    "LedgerEvent",
    "NO_FLOOR",
    "NoTransactionsWarning",
    "PeriodStatistics",
    "RunningBalanceMismatch",
    "Transaction",
    "TransactionNotFound",
    "TransactionsUnsupported",
    "UnbalancedOperation",
    "VerifyReport",
    "WriteRetriesExhausted",
    "__version__",
]
