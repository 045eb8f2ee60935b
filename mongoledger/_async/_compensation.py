"""Compensation: what a refused or failed write undoes on a deployment without DB transactions
(standalone ``mongod``, plain mongomock), where nothing rolls back by itself.

Each undo is a conditional update that touches only what this operation wrote (the account it
created, the sequence number it took, the dates it set, the marks and the key record it wrote),
so it never reverts a concurrent operation's write; what it cannot undo safely is left for
``verify(repair=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bson import ObjectId

from mongoledger._async._base import LedgerBase
from mongoledger._core import schema
from mongoledger._core.holds import reopen
from mongoledger._core.idempotency import idempotency_id
from mongoledger._core.transactions import Leg

__all__ = ["Compensation"]

_IS_SYNC = False


class _Posting:
    """What one attempt of an operation wrote: undone without DB transactions if it fails.

    Made at every attempt of every write, so ``__init__`` sets only the lists; the rest
    stays at the class's default until the attempt writes it.
    """

    dates: tuple[Any, Any] | None = None  # the first date tried, and the settled one
    key: tuple[str, str] | None = None  # the idempotency key (and fingerprint) it recorded
    created: Any = None  # an account it created besides its legs' (a hold's target)
    closed: tuple[Any, str] | None = None  # the hold it closed, and its closing status

    def __init__(self, marked: Sequence[Leg] = ()) -> None:
        self.applied: list[tuple[Leg, bool]] = []  # (leg, whether it created the account)
        self.flagged: list[tuple[Any, Any]] = []  # (account, its backdated_from before)
        self.marked = marked  # the legs whose originals a revert marks ``reverted_by``


class Compensation(LedgerBase):
    """Undoing a refused operation's writes without DB transactions."""

    async def _undo(self, posting: _Posting, operation_id: ObjectId) -> None:
        """Undo what a failed attempt of operation ``operation_id`` (a hold: the hold's id)
        wrote on a deployment without DB transactions, as ``posting`` recorded it."""
        await self._compensate(posting.applied, posting.marked)
        if posting.dates is not None:
            await self._restore_dates(posting.applied, posting.flagged, posting.dates)
        if posting.created is not None:
            await self._drop_account(posting.created)
        if posting.closed is not None:
            hold_id, status = posting.closed
            await self._holds.update_one(*reopen(hold_id, status, operation_id))
        if posting.key is not None:
            await self._drop_key(posting.key, operation_id)

    async def _compensate(self, applied: list[tuple[Leg, bool]], marked: Sequence[Leg]) -> None:
        """Undo the writes of a refused operation on a deployment without DB transactions."""
        cfg = self._cfg
        for leg, created in reversed(applied):
            if created:
                only_ours: dict[str, Any] = {
                    "_id": leg.account_id,
                    schema.SEQ: 1 if leg.amount else 0,
                }
                if leg.held:
                    only_ours[schema.HELD] = leg.held
                result = await self._accounts.delete_one(only_ours)
                if result.deleted_count:
                    continue
            undo: dict[str, Any] = {}
            if cfg.balance_field and leg.amount:
                undo[cfg.balance_field] = -leg.amount
            if leg.held:
                undo[schema.HELD] = -leg.held
            if leg.amount:
                # Give the sequence number back only if no other operation took the next one.
                result = await self._accounts.update_one(
                    {"_id": leg.account_id, schema.SEQ: leg.account_seq},
                    {"$inc": {**undo, schema.SEQ: -1}},
                )
                if result.modified_count:
                    continue
            if undo:
                await self._accounts.update_one({"_id": leg.account_id}, {"$inc": undo})
        if marked:
            await self._unmark(marked)

    async def _drop_account(self, account_id: Any) -> None:
        """Delete an account this operation created, unless an operation has moved it since."""
        await self._accounts.delete_one({"_id": account_id, schema.SEQ: 0})

    async def _unmark(self, legs: Sequence[Leg]) -> None:
        link = self._cfg.account_link_field
        for leg in legs:
            await self._transactions.update_one(
                {"_id": leg.reverts, link: leg.account_id, schema.REVERTED_BY: leg.id},
                {"$unset": {schema.REVERTED_BY: ""}},
            )

    async def _restore_dates(
        self,
        applied: list[tuple[Leg, bool]],
        flagged: list[tuple[Any, Any]],
        dates: tuple[Any, Any],
    ) -> None:
        """Without DB transactions, give a refused operation's accounts back the dates they
        had: ``last_date`` the latest of their transactions, ``backdated_from`` as it was."""
        cfg = self._cfg
        done: set[str] = set()
        for leg, _ in applied:
            if repr(leg.account_id) in done:
                continue
            done.add(repr(leg.account_id))
            top = await self._transactions.find_one(
                {cfg.account_link_field: leg.account_id},
                {cfg.date_field: 1},
                sort=[(cfg.date_field, -1)],
            )
            ours = {"_id": leg.account_id, schema.LAST_DATE: {"$in": list(dates)}}
            if top is None:
                await self._accounts.update_one(ours, {"$unset": {schema.LAST_DATE: ""}})
            else:
                await self._accounts.update_one(
                    ours, {"$set": {schema.LAST_DATE: top.get(cfg.date_field)}}
                )
        for account_id, previous in flagged:
            ours = {"_id": account_id, schema.BACKDATED_FROM: dates[1]}
            if previous is None:
                await self._accounts.update_one(ours, {"$unset": {schema.BACKDATED_FROM: ""}})
            else:
                await self._accounts.update_one(ours, {"$set": {schema.BACKDATED_FROM: previous}})

    async def _drop_key(self, idempotency: tuple[str, str], operation_id: ObjectId) -> None:
        await self._idempotency.delete_one(
            {
                "_id": idempotency_id(self._cfg, idempotency[0]),
                schema.OPERATION_ID: operation_id,
            }
        )
