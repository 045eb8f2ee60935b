"""The typed views of ledger documents, reports and events (pydantic v2).

The documents themselves stay plain MongoDB documents; these models are what the library returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Account",
    "BalanceMismatch",
    "BrokenHold",
    "BrokenLink",
    "EventKind",
    "HeldMismatch",
    "Hold",
    "HoldStatus",
    "HookContext",
    "LedgerEvent",
    "OperationKind",
    "PeriodStatistics",
    "Transaction",
    "UnbalancedOperation",
    "VerifyReport",
]

# The kind of an operation that writes transaction documents.
OperationKind = Literal["increase", "decrease", "transfer", "post", "revert", "capture"]
# What change-stream consumers and hooks see: the operations, and the hold's other steps.
EventKind = Literal[
    "increase", "decrease", "transfer", "post", "revert", "capture", "hold", "void", "expire"
]
HoldStatus = Literal["pending", "captured", "voided", "expired"]


class _Model(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)


class Transaction(_Model):
    """One movement on one account: a document of the transactions collection."""

    id: Any
    account_id: Any
    amount: int
    date: Any
    balance_after: int | None = None
    operation_id: Any
    kind: OperationKind
    extra_account_id: Any = None
    reverts: Any = None
    reverted_by: Any = None
    idempotency_key: str | None = None
    hold_id: Any = Field(default=None, description="The hold a capture's legs settle.")
    currency: Any = Field(default=None, description="The accounts' currency (currency_field).")
    account_seq: int | None = Field(
        default=None, description="Position in the account's commit order (1, 2, ...)."
    )
    leg: int = Field(default=0, description="Position of this leg in its operation.")
    legs: int = Field(default=1, description="Number of legs of the operation.")
    data: dict[str, Any] = Field(default_factory=dict)


class Account(_Model):
    """An account document with its identifying attributes and cached balance."""

    id: Any
    balance: int
    min_balance: int | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    held: int = Field(default=0, description="The sum of the account's pending holds.")
    currency: Any = Field(default=None, description="Its currency_field value, when set.")

    @property
    def available(self) -> int:
        """The balance minus the pending holds: what a debit may take down to the floor."""
        return self.balance - self.held


class Hold(_Model):
    """A reservation of ``amount`` of ``from_account_id``'s balance for ``to_account_id``."""

    id: Any
    from_account_id: Any
    to_account_id: Any
    amount: int
    status: HoldStatus
    captured_amount: int | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None
    operation_id: Any = Field(
        default=None,
        description="The operation that closed it (a capture's transactions share it).",
    )
    idempotency_key: str | None = None
    currency: Any = None
    data: dict[str, Any] = Field(default_factory=dict)
    void_data: dict[str, Any] = Field(
        default_factory=dict, description="The data the void call passed."
    )


class LedgerEvent(_Model):
    """One committed operation, as seen on the change stream.

    A ``hold``, ``void`` or ``expire`` moves no money: its ``transactions`` are empty and
    ``hold`` is the hold as that step left it. A ``capture`` carries its two legs and the
    hold. ``hold`` is None only when the hold document was deleted before the event was read.
    """

    operation_id: Any
    kind: EventKind
    transactions: list[Transaction]
    account_ids: list[Any]
    committed_at: Any
    resume_token: dict[str, Any]
    hold_id: Any = None
    hold: Hold | None = None


class PeriodStatistics(_Model):
    """Credit and debit totals of one period (``"2026-11"``, ``"2026-11-25"``, ``"2026"``)."""

    period: str
    credit: int
    debit: int
    net: int
    count: int


class BalanceMismatch(_Model):
    account_id: Any
    cached: int | None
    calculated: int


class UnbalancedOperation(_Model):
    operation_id: Any
    kind: str
    problem: str


class BrokenLink(_Model):
    transaction_id: Any
    problem: str


class HeldMismatch(_Model):
    """An account whose cached ``held`` differs from the sum of its pending holds."""

    account_id: Any
    cached: int | None
    calculated: int


class BrokenHold(_Model):
    """A captured hold without its capture's transactions (or the reverse)."""

    hold_id: Any
    problem: str


class VerifyReport(_Model):
    """What :meth:`Ledger.verify` found; ``ok`` is True when everything is consistent."""

    accounts_checked: int
    transactions_checked: int
    operations_checked: int
    balance_mismatches: list[BalanceMismatch] = Field(default_factory=list)
    unbalanced_operations: list[UnbalancedOperation] = Field(default_factory=list)
    broken_links: list[BrokenLink] = Field(default_factory=list)
    missing_accounts: list[Any] = Field(default_factory=list)
    repaired: list[Any] = Field(
        default_factory=list, description="Accounts whose cached balance was rebuilt."
    )
    holds_checked: int = 0
    held_mismatches: list[HeldMismatch] = Field(default_factory=list)
    broken_holds: list[BrokenHold] = Field(default_factory=list)
    repaired_held: list[Any] = Field(
        default_factory=list, description="Accounts whose held sum was rebuilt from the holds."
    )
    repaired_holds: list[Any] = Field(
        default_factory=list, description="Captured holds reopened: their capture never posted."
    )

    @property
    def ok(self) -> bool:
        """True when no discrepancy is left (repaired balances count as fixed)."""
        repaired = {repr(a) for a in self.repaired}
        unrepaired = [m for m in self.balance_mismatches if repr(m.account_id) not in repaired]
        fixed_held = {repr(a) for a in self.repaired_held}
        held = [m for m in self.held_mismatches if repr(m.account_id) not in fixed_held]
        fixed_holds = {repr(h) for h in self.repaired_holds}
        holds = [b for b in self.broken_holds if repr(b.hold_id) not in fixed_holds]
        return not (
            unrepaired
            or self.unbalanced_operations
            or self.broken_links
            or self.missing_accounts
            or held
            or holds
        )


@dataclass
class HookContext:
    """What a ``before_write`` / ``after_write`` hook sees of one transaction document.

    Before the write, ``amount`` and ``data`` may be changed (``data`` is always a mutable
    dict) and raising vetoes the whole operation. ``account_id`` is None before the write when
    the operation is about to create the account. After the write ``transaction_id`` and
    ``balance_after`` are set.

    A ``hold`` or ``void`` writes no transaction document: its hooks run once, with the
    source account, the hold's amount and ``hold_id``; a ``capture``'s run per leg, with
    ``hold_id`` too.
    """

    kind: EventKind
    account: Any
    account_id: Any
    amount: int
    data: dict[str, Any]
    operation_id: Any
    leg: int = 0
    transaction_id: Any = None
    balance_after: int | None = None
    hold_id: Any = None
