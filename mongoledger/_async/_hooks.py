"""Hooks (yii2tech's events, Drupal's ``hook_balance_prewrite`` / ``hook_balance_write``):
``before_write`` runs before an operation's DB transaction, once per transaction document, and
may change its amount and data or veto it; ``after_write`` runs after the commit, once per
document. A hold and a void run them once, with the hold."""

from __future__ import annotations

from typing import Any, TypeVar

from bson import ObjectId

from mongoledger._async._base import Hook, LedgerBase
from mongoledger._async._io import call_back, check_callback
from mongoledger._core.amounts import check_balanced, validate_amount
from mongoledger._core.data import validate_data
from mongoledger._core.transactions import Leg
from mongoledger.errors import AfterWriteError, InvalidAmount
from mongoledger.models import EventKind, HookContext

__all__ = ["Hooks"]

_IS_SYNC = False

F = TypeVar("F", bound=Hook)


class Hooks(LedgerBase):
    """Registering hooks, and running them around a write."""

    def before_write(self, fn: F) -> F:
        """Register ``fn(ctx)``: runs per transaction document before the write; may veto."""
        self._before.append(self._check_hook(fn))
        return fn

    def after_write(self, fn: F) -> F:
        """Register ``fn(ctx)``: runs per transaction document after the operation committed."""
        self._after.append(self._check_hook(fn))
        return fn

    @staticmethod
    def _check_hook(fn: Hook) -> Hook:
        check_callback(fn, "hook")
        return fn

    async def _run_before_hooks(
        self,
        kind: EventKind,
        legs: list[Leg],
        operation_id: ObjectId | None,
        *,
        revert: bool,
        owned: frozenset[str] | None = None,
    ) -> None:
        """``revert``: the amounts are fixed (a reversal, a void); ``owned``: the fields the
        hooks' data may not use (default: a transaction document's)."""
        cfg = self._cfg
        for index, leg in enumerate(legs):
            ctx = _context(kind, leg, index, operation_id)
            for fn in self._before:
                await call_back(fn, ctx, "hook")
            amount = validate_amount(ctx.amount, what="amount set by a before_write hook")
            if revert and amount != leg.amount:
                raise InvalidAmount(
                    f"a before_write hook changed the amount of a {kind} from {leg.amount} to "
                    f"{amount}; {kind} amounts are fixed"
                )
            leg.amount = amount
            leg.data = validate_data(
                cfg, ctx.data, what="data set by a before_write hook", owned=owned
            )
        if kind in ("transfer", "post", "capture"):
            check_balanced(kind, [leg.amount for leg in legs])

    async def _run_after_hooks(
        self,
        kind: EventKind,
        legs: list[Leg],
        operation_id: ObjectId | None,
        *,
        result: list[Any] | None = None,
    ) -> None:
        """``result``: what the call returns, carried by ``AfterWriteError`` (default: the
        legs' transaction ids)."""
        failures: list[BaseException] = []
        for index, leg in enumerate(legs):
            ctx = _context(kind, leg, index, operation_id)
            # A hold or a void writes no transaction document: only its hold_id names it.
            ctx.transaction_id = None if leg.hold_id is not None and kind != "capture" else leg.id
            ctx.balance_after = leg.balance_after
            for fn in self._after:
                try:
                    await call_back(fn, ctx, "hook")
                except Exception as exc:  # the operation is committed: run the other hooks
                    failures.append(exc)
        if failures:
            ids = [leg.id for leg in legs] if result is None else result
            raise AfterWriteError(ids, failures) from failures[0]


def _context(kind: EventKind, leg: Leg, index: int, operation_id: ObjectId | None) -> HookContext:
    """What a hook sees of one leg (``data`` a copy it may change before the write)."""
    return HookContext(
        kind=kind,
        account=leg.account.describe(),
        account_id=leg.account_id,
        amount=leg.amount,
        data=dict(leg.data),
        operation_id=operation_id,
        leg=index,
        hold_id=leg.hold_id,
    )
