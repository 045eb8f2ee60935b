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
    "BrokenLink",
    "FloorViolation",
    "HookContext",
    "LedgerEvent",
    "OperationKind",
    "PeriodStatistics",
    "RunningBalanceMismatch",
    "Transaction",
    "UnbalancedOperation",
    "VerifyReport",
]

OperationKind = Literal["increase", "decrease", "transfer", "post", "revert"]


class _Model(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)


class Transaction(_Model):
    """One movement on one account: a document of the transactions collection."""

    id: Any = Field(description="The document's `_id` (an ObjectId).")
    account_id: Any = Field(description="The account's `_id` (`account_link_field`).")
    amount: int = Field(
        description="Signed amount in the smallest unit: positive credits, negative debits."
    )
    date: Any = Field(
        description="The effective date (`date_field`): a timezone-aware UTC datetime, or the "
        "value a `date_value` gave. May be earlier than an entry recorded before it "
        "(a backdated entry)."
    )
    balance_after: int | None = Field(
        default=None,
        description="The account's running balance right after this entry, in recorded "
        "(commit) order.",
    )
    operation_id: Any = Field(description="Shared by every leg of one operation (one call).")
    kind: OperationKind = Field(
        description="`increase`, `decrease`, `transfer`, `post` or `revert`."
    )
    extra_account_id: Any = Field(
        default=None,
        description="The counterpart account of a two-leg operation (`extra_account_link_field`).",
    )
    reverts: Any = Field(default=None, description="On a reversal: the entry it compensates.")
    reverted_by: Any = Field(
        default=None, description="On a reverted entry: the reversal that compensates it."
    )
    idempotency_key: str | None = Field(
        default=None, description="The key of the call that wrote it, if one was given."
    )
    account_seq: int | None = Field(
        default=None, description="Position in the account's commit order (1, 2, ...)."
    )
    leg: int = Field(default=0, description="Position of this leg in its operation.")
    legs: int = Field(default=1, description="Number of legs of the operation.")
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="The extra data, as a dict, whichever storage `data_field` selects "
        "(datetimes in it are timezone-aware UTC).",
    )


class Account(_Model):
    """An account document with its identifying attributes and cached balance."""

    id: Any = Field(description="The account's `_id`.")
    balance: int = Field(
        description="The cached balance (`balance_field`), or the sum of its amounts when the "
        "ledger keeps none."
    )
    min_balance: int | None = Field(
        default=None,
        description="The floor no operation may take the balance below; None: no floor.",
    )
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="The identifying attributes (every field the ledger does not own).",
    )
    created_at: datetime | None = Field(
        default=None, description="When the account was created (timezone-aware UTC)."
    )


class LedgerEvent(_Model):
    """One committed operation, as seen on the change stream."""

    operation_id: Any = Field(description="The operation's id, shared by its legs.")
    kind: OperationKind = Field(description="The operation's kind.")
    transactions: list[Transaction] = Field(
        description="Every leg of the operation, in leg order (even legs an account filter hid)."
    )
    account_ids: list[Any] = Field(description="The accounts the operation moved, in leg order.")
    committed_at: Any = Field(description="The commit time (timezone-aware UTC).")
    resume_token: dict[str, Any] = Field(
        description="Resume a stream here to see every later operation (`resume_after`)."
    )


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


class RunningBalanceMismatch(_Model):
    """A leg whose ``balance_after`` (or ``account_seq``) is not its place in its account's
    history: e.g. a leg written while another operation's refused leg was being compensated
    on a deployment without DB transactions."""

    account_id: Any
    transaction_id: Any
    account_seq: int | None
    expected_seq: int
    balance_after: int | None
    expected_balance_after: int | None = Field(
        description="The running balance after the leg (None without cached balances)."
    )


class FloorViolation(_Model):
    """An account below its ``min_balance`` after a debit (written around the ledger's
    guards: by hand, or by threads on plain mongomock before writes were serialized)."""

    account_id: Any
    balance: int
    min_balance: int


class VerifyReport(_Model):
    """What :meth:`Ledger.verify` found; ``ok`` is True when everything is consistent."""

    accounts_checked: int
    transactions_checked: int
    operations_checked: int
    balance_mismatches: list[BalanceMismatch] = Field(default_factory=list)
    unbalanced_operations: list[UnbalancedOperation] = Field(default_factory=list)
    broken_links: list[BrokenLink] = Field(default_factory=list)
    missing_accounts: list[Any] = Field(default_factory=list)
    running_balance_mismatches: list[RunningBalanceMismatch] = Field(default_factory=list)
    floor_violations: list[FloorViolation] = Field(default_factory=list)
    repaired: list[Any] = Field(
        default_factory=list, description="Accounts whose cached balance was rebuilt."
    )
    repaired_histories: list[Any] = Field(
        default_factory=list,
        description="Accounts whose legs' running balances and sequence were rewritten.",
    )

    @property
    def ok(self) -> bool:
        """True when no discrepancy is left (repaired balances and histories count as fixed)."""
        repaired = {repr(a) for a in self.repaired}
        unrepaired = [m for m in self.balance_mismatches if repr(m.account_id) not in repaired]
        rewritten = {repr(a) for a in self.repaired_histories}
        running = [
            m for m in self.running_balance_mismatches if repr(m.account_id) not in rewritten
        ]
        return not (
            unrepaired
            or running
            or self.unbalanced_operations
            or self.broken_links
            or self.missing_accounts
            or self.floor_violations
        )


@dataclass
class HookContext:
    """What a ``before_write`` / ``after_write`` hook sees of one transaction document.

    Before the write, ``amount`` and ``data`` may be changed (``data`` is always a mutable
    dict) and raising vetoes the whole operation. ``account_id`` is None before the write when
    the operation is about to create the account. After the write ``transaction_id`` and
    ``balance_after`` are set.
    """

    kind: OperationKind
    account: Any
    account_id: Any
    amount: int
    data: dict[str, Any]
    operation_id: Any
    leg: int = 0
    transaction_id: Any = None
    balance_after: int | None = None
