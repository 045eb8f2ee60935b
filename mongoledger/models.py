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
    "FloorViolation",
    "HeldMismatch",
    "Hold",
    "HoldStatus",
    "HookContext",
    "LedgerEvent",
    "OperationKind",
    "PeriodStatistics",
    "RunningBalanceMismatch",
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
        description="`increase`, `decrease`, `transfer`, `post`, `revert` or `capture`."
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
    hold_id: Any = Field(default=None, description="On a capture's legs: the hold they settle.")
    currency: Any = Field(
        default=None, description="The accounts' currency (with `currency_field`)."
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
        description="The floor no operation may take the available balance (the balance "
        "minus `held`) below; None: no floor.",
    )
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="The identifying attributes (every field the ledger does not own).",
    )
    created_at: datetime | None = Field(
        default=None, description="When the account was created (timezone-aware UTC)."
    )
    held: int = Field(
        default=0,
        description="The sum of its pending holds: reserved, not yet spent (`held`).",
    )
    currency: Any = Field(
        default=None, description="Its currency (`currency_field`), when the ledger has one."
    )

    @property
    def available(self) -> int:
        """The balance minus the pending holds: what a debit may take down to the floor."""
        return self.balance - self.held


class Hold(_Model):
    """A reservation of part of an account's available balance for another account."""

    id: Any = Field(description="The hold's `_id` (an ObjectId).")
    from_account_id: Any = Field(description="The account whose available balance it reserves.")
    to_account_id: Any = Field(description="The account a capture credits.")
    amount: int = Field(description="The reserved amount, in the smallest unit (> 0).")
    status: HoldStatus = Field(
        description="`pending`, then once and for all `captured`, `voided` or `expired`."
    )
    captured_amount: int | None = Field(
        default=None, description="What the capture moved (at most `amount`; the rest released)."
    )
    expires_at: datetime | None = Field(
        default=None,
        description="After it the hold cannot be captured or voided (timezone-aware UTC).",
    )
    created_at: datetime | None = Field(
        default=None, description="When it was placed (timezone-aware UTC)."
    )
    closed_at: datetime | None = Field(
        default=None, description="When it was captured, voided or expired."
    )
    operation_id: Any = Field(
        default=None,
        description="The operation that closed it (a capture's transactions share it).",
    )
    idempotency_key: str | None = Field(
        default=None, description="The key of the call that placed it, if one was given."
    )
    currency: Any = Field(default=None, description="Its accounts' currency (`currency_field`).")
    data: dict[str, Any] = Field(
        default_factory=dict, description="The extra data the hold call passed."
    )
    void_data: dict[str, Any] = Field(
        default_factory=dict, description="The extra data the void call passed."
    )


class LedgerEvent(_Model):
    """One committed operation, as seen on the change stream.

    A ``hold``, ``void`` or ``expire`` moves no money: its ``transactions`` are empty and
    ``hold`` is the hold as that step left it. A ``capture`` carries its two legs and the
    hold. ``hold`` is None only when the hold document was deleted before the event was read.
    """

    operation_id: Any = Field(description="The operation's id, shared by its legs.")
    kind: EventKind = Field(
        description="The operation's kind, or the hold's step: `hold`, `void`, `expire`."
    )
    transactions: list[Transaction] = Field(
        description="Every leg of the operation, in leg order (even legs an account filter hid)."
    )
    account_ids: list[Any] = Field(
        description="The accounts the operation moved, in leg order (a hold step: its two)."
    )
    committed_at: Any = Field(description="The commit time (timezone-aware UTC).")
    resume_token: dict[str, Any] = Field(
        description="Resume a stream here to see every later operation (`resume_after`)."
    )
    hold_id: Any = Field(default=None, description="A hold step's or a capture's hold.")
    hold: Hold | None = Field(
        default=None,
        description="The hold as the step left it (None if it was deleted before the event "
        "was read).",
    )


class PeriodStatistics(_Model):
    """Credit and debit totals of one period (``"2026-11"``, ``"2026-11-25"``, ``"2026"``)."""

    period: str
    credit: int
    debit: int
    net: int
    count: int


class BalanceMismatch(_Model):
    """An account whose cached balance is not the sum of its transactions."""

    account_id: Any
    cached: int | None
    calculated: int | None = Field(
        description="The sum of its transactions; None when that sum is past int64 (written "
        "around the ledger): no balance can be rebuilt from it."
    )


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
    """An account whose available balance (its balance minus its pending holds) is below its
    ``min_balance``, which the guards forbid: a debit or a hold written around them (by hand,
    or by threads on plain mongomock before writes were serialized)."""

    account_id: Any
    balance: int
    min_balance: int
    held: int = Field(default=0, description="The sum of its pending holds.")

    @property
    def available(self) -> int:
        """The balance minus the pending holds: what the guards keep at or above the floor."""
        return self.balance - self.held


class HeldMismatch(_Model):
    """An account whose cached ``held`` differs from the sum of its pending holds."""

    account_id: Any
    cached: Any = Field(
        description="Its `held` field as found: None when missing or null; anything but an "
        "integer was set outside the ledger."
    )
    calculated: int | None = Field(
        description="The sum of its pending holds; None when that sum is past int64."
    )


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
    running_balance_mismatches: list[RunningBalanceMismatch] = Field(default_factory=list)
    floor_violations: list[FloorViolation] = Field(default_factory=list)
    repaired: list[Any] = Field(
        default_factory=list, description="Accounts whose cached balance was rebuilt."
    )
    repaired_histories: list[Any] = Field(
        default_factory=list,
        description="Accounts whose legs' running balances and sequence were rewritten.",
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
        """True when no discrepancy is left (repaired balances and histories count as fixed)."""
        repaired = {repr(a) for a in self.repaired}
        unrepaired = [m for m in self.balance_mismatches if repr(m.account_id) not in repaired]
        rewritten = {repr(a) for a in self.repaired_histories}
        running = [
            m for m in self.running_balance_mismatches if repr(m.account_id) not in rewritten
        ]
        fixed_held = {repr(a) for a in self.repaired_held}
        held = [m for m in self.held_mismatches if repr(m.account_id) not in fixed_held]
        fixed_holds = {repr(h) for h in self.repaired_holds}
        holds = [b for b in self.broken_holds if repr(b.hold_id) not in fixed_holds]
        return not (
            unrepaired
            or running
            or self.unbalanced_operations
            or self.broken_links
            or self.missing_accounts
            or self.floor_violations
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
