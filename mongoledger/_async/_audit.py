"""Reconciliation: ``verify`` checks cached balances, operation legs and revert links against
the transactions (the source of truth), and repairs what drifted."""

from __future__ import annotations

from typing import Any

import bson

from mongoledger import _core, _holds, _reconcile
from mongoledger._async._base import LedgerBase
from mongoledger._async._io import aggregate, to_list
from mongoledger.models import (
    BalanceMismatch,
    BrokenHold,
    BrokenLink,
    FloorViolation,
    HeldMismatch,
    RunningBalanceMismatch,
    UnbalancedOperation,
    VerifyReport,
)

__all__ = ["Audit"]

_IS_SYNC = False
_MAX_ATTEMPTS = 5  # looks at an account that keeps moving before verify lets it be


class Audit(LedgerBase):
    """``verify`` and its repairs."""

    async def verify(self, *, repair: bool = False) -> VerifyReport:
        """Check cached balances, running balances, floors, operation legs and revert links
        against the transactions (the source of truth).

        ``repair=True`` rewrites the running balances (``balance_after``, ``account_seq``) of
        accounts whose history has a gap, rebuilds drifted cached balances from the
        transactions, each with a conditional update that leaves concurrent writes intact,
        and clears ``reverted_by`` marks whose reversal does not exist (left by a revert that
        failed midway without a DB transaction), so those transactions can be reverted again.
        Balances below a floor and broken operations are reported, never changed.

        Every whole-collection aggregation runs with ``allowDiskUse``; the server returns one
        row of totals per account and, of the operations, only the broken ones.

        Holds: each account's ``held`` must equal the sum of its pending holds, and each
        captured hold must have its capture's legs; a repair rebuilds ``held`` from the holds
        and reopens a captured hold whose capture never posted.
        """
        cfg = self._cfg
        totals = {
            row["_id"]: row
            for row in await aggregate(
                self._transactions, _core.balances_pipeline(cfg), allowDiskUse=True
            )
        }
        fields = [f for f in (cfg.balance_field, _core.SEQ, _core.MIN_BALANCE, _core.HELD) if f]
        accounts = await to_list(self._accounts.find({}, dict.fromkeys(fields, 1)))
        known = {repr(a["_id"]) for a in accounts}
        running, rewritten = [], []
        for account_id, row in totals.items():
            if repr(account_id) in known and not _reconcile.history_is_contiguous(row):
                found = await self._check_history(account_id, repair=repair)
                running += found
                if repair and found:
                    rewritten.append(account_id)
        mismatches, repaired, floors = [], [], []
        for doc in accounts:
            if cfg.balance_field is None:
                continue
            if _reconcile.below_floor(cfg, doc) and await self._transactions.find_one(
                _reconcile.floor_violation_filter(cfg, doc), {"_id": 1}
            ):
                floors.append(
                    FloorViolation(
                        account_id=doc["_id"],
                        balance=doc[cfg.balance_field],
                        min_balance=doc[_core.MIN_BALANCE],
                    )
                )
            calculated = int(totals.get(doc["_id"], {}).get("total", 0))
            cached = doc.get(cfg.balance_field)
            top = int(totals.get(doc["_id"], {}).get("seq") or 0)
            if cached is not None and int(cached) == calculated and doc.get(_core.SEQ) == top:
                continue
            # The two reads above are not one snapshot: confirm on this account alone.
            found_drift = await self._confirm_drift(doc["_id"])
            if found_drift is None:
                continue
            mismatch, state = found_drift
            mismatches.append(mismatch)
            if repair and await self._repair_balance(mismatch, state):
                repaired.append(doc["_id"])
        missing = [account_id for account_id in totals if repr(account_id) not in known]
        unbalanced = [
            UnbalancedOperation(
                operation_id=op["_id"],
                kind=op["kind"],
                problem=(
                    f"has {op['count']} legs, its documents say {op['legs']}"
                    if op["count"] != op["legs"]
                    else f"legs sum to {op['total']}"
                ),
            )
            for op in await aggregate(
                self._transactions, _reconcile.operation_anomalies_pipeline(cfg), allowDiskUse=True
            )
        ]
        counted = await aggregate(
            self._transactions, _reconcile.operations_count_pipeline(), allowDiskUse=True
        )
        links = await to_list(
            self._transactions.find(
                {
                    "$or": [
                        {_core.REVERTS: {"$exists": True}},
                        {_core.REVERTED_BY: {"$exists": True}},
                    ]
                },
                {
                    _core.REVERTS: 1,
                    _core.REVERTED_BY: 1,
                    cfg.amount_field: 1,
                    cfg.account_link_field: 1,
                },
            )
        )
        if repair:
            await self._clear_stale_marks(links)
        broken = _reconcile.check_links(cfg, links)
        if not await self._has_transactions():
            broken += await self._orphan_keys(repair=repair)
        holds = await self._check_holds(accounts, repair=repair)
        return VerifyReport(
            accounts_checked=len(accounts),
            transactions_checked=sum(int(row["count"]) for row in totals.values()),
            operations_checked=int(counted[0]["operations"]) if counted else 0,
            balance_mismatches=mismatches,
            unbalanced_operations=unbalanced,
            broken_links=broken,
            missing_accounts=missing,
            running_balance_mismatches=running,
            floor_violations=floors,
            repaired=repaired,
            repaired_histories=rewritten,
            **holds,
        )

    async def _check_history(
        self, account_id: Any, *, repair: bool
    ) -> list[RunningBalanceMismatch]:
        """Read one account's legs in order and find those out of place; with ``repair``,
        renumber them and rewrite their running balances, in one DB transaction that also
        writes the account (so a concurrent write conflicts and one of the two runs again)."""
        cfg = self._cfg
        found: list[RunningBalanceMismatch] = []

        async def body(session: Any) -> None:
            legs = await to_list(
                self._transactions.find(
                    {cfg.account_link_field: account_id},
                    {cfg.amount_field: 1, _core.ACCOUNT_SEQ: 1, _core.BALANCE_AFTER: 1},
                    session=session,
                ).sort(_core.ACCOUNT_SEQ, 1)
            )
            found[:] = _reconcile.running_balance_mismatches(cfg, account_id, legs)
            if not (repair and found):
                return
            account = await self._accounts.find_one(
                {"_id": account_id}, {_core.SEQ: 1}, session=session
            )
            if account is None:
                return
            for mismatch in found:
                update: dict[str, Any] = {_core.ACCOUNT_SEQ: mismatch.expected_seq}
                if mismatch.expected_balance_after is not None:
                    update[_core.BALANCE_AFTER] = bson.Int64(mismatch.expected_balance_after)
                await self._transactions.update_one(
                    {
                        "_id": mismatch.transaction_id,
                        cfg.account_link_field: account_id,
                        _core.ACCOUNT_SEQ: mismatch.account_seq,
                    },
                    {"$set": update},
                    session=session,
                )
            # The account's sequence follows its renumbered legs (unless it moved meanwhile).
            await self._accounts.update_one(
                {"_id": account_id, _core.SEQ: account.get(_core.SEQ)},
                {"$set": {_core.SEQ: len(legs)}},
                session=session,
            )

        if repair:
            await self._run(body)
        else:
            await body(None)
        return found

    async def _confirm_drift(
        self, account_id: Any
    ) -> tuple[BalanceMismatch, dict[str, Any]] | None:
        """Compare one account's cached balance with its transactions, consistently.

        The two reads describe the same moment when the account's ``seq`` equals the highest
        ``account_seq`` of its transactions, or when a second look finds nothing changed (a
        corrupted sequence, or an operation that failed midway without a DB transaction).
        Returns None when the account is consistent, or kept moving under concurrent writes.
        """
        cfg = self._cfg
        assert cfg.balance_field is not None
        previous = None
        for _attempt in range(_MAX_ATTEMPTS):
            doc = await self._accounts.find_one({"_id": account_id})
            if doc is None:
                return None
            rows = await aggregate(
                self._transactions,
                [
                    {"$match": {cfg.account_link_field: account_id}},
                    *_core.balances_pipeline(cfg),
                ],
            )
            calculated = int(rows[0]["total"]) if rows else 0
            top = int(rows[0]["seq"] or 0) if rows else 0
            cached = doc.get(cfg.balance_field)
            seq = doc.get(_core.SEQ)
            state = {"cached": cached, "seq": seq, "top": top, "calculated": calculated}
            if int(seq or 0) == top or state == previous:
                if int(seq or 0) == top and cached is not None and int(cached) == calculated:
                    return None
                mismatch = BalanceMismatch(
                    account_id=account_id, cached=cached, calculated=calculated
                )
                return mismatch, state
            previous = state
        return None

    async def _repair_balance(self, mismatch: BalanceMismatch, state: dict[str, Any]) -> bool:
        """Set the cached balance (and sequence) from the transactions, unless it moved."""
        cfg = self._cfg
        assert cfg.balance_field is not None
        result = await self._accounts.update_one(
            {
                "_id": mismatch.account_id,
                cfg.balance_field: state["cached"],
                _core.SEQ: state["seq"],
            },
            {"$set": {cfg.balance_field: bson.Int64(mismatch.calculated), _core.SEQ: state["top"]}},
        )
        return bool(result.modified_count)

    async def _orphan_keys(self, *, repair: bool) -> list[BrokenLink]:
        """Idempotency records whose operation never got written (a crash between the two
        writes, possible only without DB transactions); repair deletes them so the key can
        be used again."""
        broken = []
        # Only this ledger's records: another ledger may share the collection, and its
        # transactions are not in ours. (Unscoped records of an earlier version are left alone.)
        records = await to_list(
            self._idempotency.find(
                {"_id.ledger": self._cfg.transactions_collection},
                {"transaction_ids": 1, "operation_id": 1, _core.KIND: 1},
            )
        )
        for start in range(0, len(records), 1000):
            batch = records[start : start + 1000]
            firsts: dict[str, list[Any]] = {"transactions": [], "holds": []}
            for r in batch:
                if r.get("transaction_ids"):  # a hold's record names the hold
                    where = "holds" if r.get(_core.KIND) == "hold" else "transactions"
                    firsts[where].append(r["transaction_ids"][0])
            found = await to_list(
                self._transactions.find({"_id": {"$in": firsts["transactions"]}}, {"_id": 1})
            )
            found += await to_list(self._holds.find({"_id": {"$in": firsts["holds"]}}, {"_id": 1}))
            present = {repr(d["_id"]) for d in found}
            for record in batch:
                ids = record.get("transaction_ids") or [None]
                if repr(ids[0]) in present:
                    continue
                broken.append(
                    BrokenLink(
                        transaction_id=ids[0],
                        problem=f"idempotency key {record['_id'].get('key')!r} records "
                        "transactions that were never written",
                    )
                )
                if repair:
                    await self._idempotency.delete_one(
                        {"_id": record["_id"], _core.OPERATION_ID: record.get("operation_id")}
                    )
        return broken

    async def _clear_stale_marks(self, links: list[dict[str, Any]]) -> None:
        ids = {repr(d["_id"]) for d in links}
        for doc in links:
            mark = doc.get(_core.REVERTED_BY)
            if mark is None or repr(mark) in ids:
                continue
            if await self._transactions.find_one({"_id": mark}) is not None:
                continue  # the reversal was written after links were read
            link = self._cfg.account_link_field
            result = await self._transactions.update_one(
                {"_id": doc["_id"], link: doc.get(link), _core.REVERTED_BY: mark},
                {"$unset": {_core.REVERTED_BY: ""}},
            )
            if result.modified_count:
                del doc[_core.REVERTED_BY]

    async def _check_holds(self, accounts: list[dict[str, Any]], *, repair: bool) -> dict[str, Any]:
        """Holds: every captured hold against its capture's legs (a capture that failed midway
        without a DB transaction is reopened by a repair), then every account's ``held``
        against the sum of its pending holds (rebuilt by a repair)."""
        captured = await to_list(
            self._holds.find({_core.STATUS: "captured"}, {_core.OPERATION_ID: 1})
        )
        legs = await aggregate(
            self._transactions, _reconcile.capture_legs_pipeline(), allowDiskUse=True
        )
        broken = _reconcile.check_captures(captured, legs)
        reopened = []
        if repair:
            reopened = [b.hold_id for b in broken if await self._reopen_capture(b.hold_id)]
        pending = {
            repr(row["_id"]): row
            for row in await aggregate(
                self._holds, _holds.pending_held_pipeline(), allowDiskUse=True
            )
        }
        known = {repr(doc["_id"]) for doc in accounts}
        suspects = [
            doc["_id"]
            for doc in accounts
            if int(doc.get(_core.HELD) or 0)
            != int(pending.get(repr(doc["_id"]), {}).get("held", 0))
        ]
        mismatches, fixed = [], []
        for account_id in suspects:
            found = await self._confirm_held(account_id, repair=repair)
            if found is not None:
                mismatch, was_fixed = found
                mismatches.append(mismatch)
                if was_fixed:
                    fixed.append(account_id)
        broken += [
            BrokenHold(
                hold_id=None,
                problem=f"{row['count']} pending hold(s) reserve {row['held']} of account "
                f"{row['_id']!r}, which does not exist",
            )
            for key, row in pending.items()
            if key not in known
        ]
        return {
            "holds_checked": sum(int(row["count"]) for row in pending.values()) + len(captured),
            "held_mismatches": mismatches,
            "broken_holds": broken,
            "repaired_held": fixed,
            "repaired_holds": reopened,
        }

    async def _confirm_held(
        self, account_id: Any, *, repair: bool
    ) -> tuple[HeldMismatch, bool] | None:
        """Compare one account's ``held`` with its pending holds on one consistent view (a
        snapshot DB transaction; without DB transactions, two identical looks), and repair it
        there. Returns None when it is consistent after all."""
        outcome: list[tuple[HeldMismatch, bool] | None] = [None]

        async def body(session: Any) -> None:
            outcome[0] = None
            doc = await self._accounts.find_one(
                {"_id": account_id}, {_core.HELD: 1}, session=session
            )
            rows = await aggregate(
                self._holds, _holds.pending_held_pipeline(account_id), session=session
            )
            if doc is None:
                return
            cached = doc.get(_core.HELD)
            calculated = int(rows[0]["held"]) if rows else 0
            if int(cached or 0) == calculated:
                return
            if session is None:  # no snapshot: the value must not have moved meanwhile
                again = await self._accounts.find_one({"_id": account_id}, {_core.HELD: 1})
                if again is None or again.get(_core.HELD) != cached:
                    return
            fixed = False
            if repair:
                result = await self._accounts.update_one(
                    {
                        "_id": account_id,
                        _core.HELD: {"$exists": False} if cached is None else cached,
                    },
                    {"$set": {_core.HELD: bson.Int64(calculated)}},
                    session=session,
                )
                fixed = bool(result.modified_count)
            mismatch = HeldMismatch(account_id=account_id, cached=cached, calculated=calculated)
            outcome[0] = (mismatch, fixed)

        await self._run(body)
        return outcome[0]

    async def _reopen_capture(self, hold_id: Any) -> bool:
        """Reopen a captured hold whose capture has no transactions (the legs never posted)."""
        if hold_id is None:
            return False
        hold = await self._holds.find_one({"_id": hold_id, _core.STATUS: "captured"})
        if hold is None:
            return False
        operation_id = hold.get(_core.OPERATION_ID)
        if await self._transactions.find_one({_core.OPERATION_ID: operation_id}) is not None:
            return False  # the legs exist: not a capture that never posted
        flt, update = _holds.reopen(hold_id, "captured", operation_id)
        result = await self._holds.update_one(flt, update)
        return bool(result.modified_count)

    async def rebuild_balances(self) -> VerifyReport:
        """Rebuild every drifted cached balance from the transactions: ``verify(repair=True)``."""
        return await self.verify(repair=True)
