"""Reconciliation: ``verify`` checks cached balances, operation legs and revert links against
the transactions (the source of truth), and repairs what drifted."""

from __future__ import annotations

from typing import Any

import bson

from mongoledger._async._base import LedgerBase
from mongoledger._async._io import aggregate, to_list
from mongoledger._core import schema
from mongoledger._core.amounts import int64_total
from mongoledger._core.audit import (
    capture_legs_pipeline,
    check_captures,
    check_links,
    floor_candidate,
    floor_violation_filter,
    held_sums,
    history_is_contiguous,
    is_floor_violation,
    operation_anomalies_pipeline,
    operations_count_pipeline,
    rewritable,
    running_balance_mismatches,
)
from mongoledger._core.guards import held_of
from mongoledger._core.holds import pending_held_pipeline, reopen
from mongoledger._core.reads import balances_pipeline
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
        Balances below a floor and broken operations are reported, never changed; so are
        sums past int64 (the server returns a double, never silently truncated here).

        Every whole-collection aggregation runs with ``allowDiskUse``; the server returns one
        row of totals per account and, of the operations, only the broken ones.

        Holds: each account's ``held`` must equal the sum of its pending holds, and each
        captured hold must have its capture's legs; a repair rebuilds ``held`` from the holds
        and reopens a captured hold whose capture never posted. Floors are checked as the
        guards check them: on the available balance, the balance minus the pending holds.
        """
        cfg = self._cfg
        totals = {
            row["_id"]: row
            for row in await aggregate(
                self._transactions, balances_pipeline(cfg), allowDiskUse=True
            )
        }
        fields = [f for f in (cfg.balance_field, schema.SEQ, schema.MIN_BALANCE, schema.HELD) if f]
        accounts = await to_list(self._accounts.find({}, dict.fromkeys(fields, 1)))
        known = {repr(a["_id"]) for a in accounts}
        pending = await self._pending_holds()
        sums = held_sums(accounts, pending)
        running, rewritten = [], []
        for account_id, row in totals.items():
            if repr(account_id) in known and not history_is_contiguous(row):
                found, rewrote = await self._check_history(account_id, repair=repair)
                running += found
                if rewrote:
                    rewritten.append(account_id)
        mismatches, repaired, floors = [], [], []
        for doc in accounts:
            if cfg.balance_field is None:
                continue
            held = sums[repr(doc["_id"])]
            if held is not None and floor_candidate(cfg, doc, held):
                # The account and the holds were read apart: confirm on one view.
                violation = await self._confirm_floor(doc["_id"])
                if violation is not None:
                    floors.append(violation)
            calculated = int64_total(totals.get(doc["_id"], {}).get("total", 0))
            cached = doc.get(cfg.balance_field)
            top = int(totals.get(doc["_id"], {}).get("seq") or 0)
            if (
                cached is not None
                and calculated is not None
                and int(cached) == calculated
                and doc.get(schema.SEQ) == top
            ):
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
                self._transactions, operation_anomalies_pipeline(cfg), allowDiskUse=True
            )
        ]
        counted = await aggregate(
            self._transactions, operations_count_pipeline(), allowDiskUse=True
        )
        links = await to_list(
            self._transactions.find(
                {
                    "$or": [
                        {schema.REVERTS: {"$exists": True}},
                        {schema.REVERTED_BY: {"$exists": True}},
                    ]
                },
                {
                    schema.REVERTS: 1,
                    schema.REVERTED_BY: 1,
                    cfg.amount_field: 1,
                    cfg.account_link_field: 1,
                },
            )
        )
        if repair:
            await self._clear_stale_marks(links)
        broken = check_links(cfg, links)
        if not await self._has_transactions():
            broken += await self._orphan_keys(repair=repair)
        holds = await self._check_holds(accounts, pending, sums, repair=repair)
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
    ) -> tuple[list[RunningBalanceMismatch], bool]:
        """Read one account's legs in order and find those out of place; with ``repair``,
        renumber them and rewrite their running balances, in one DB transaction that also
        writes the account (so a concurrent write conflicts and one of the two runs again).
        Returns what it found, and whether it rewrote it (never a running balance past int64:
        that history is reported only)."""
        cfg = self._cfg
        found: list[RunningBalanceMismatch] = []
        rewrote: list[bool] = [False]

        async def body(session: Any) -> None:
            legs = await to_list(
                self._transactions.find(
                    {cfg.account_link_field: account_id},
                    {cfg.amount_field: 1, schema.ACCOUNT_SEQ: 1, schema.BALANCE_AFTER: 1},
                    session=session,
                ).sort(schema.ACCOUNT_SEQ, 1)
            )
            found[:] = running_balance_mismatches(cfg, account_id, legs)
            rewrote[0] = False
            if not (repair and found and rewritable(found)):
                return
            account = await self._accounts.find_one(
                {"_id": account_id}, {schema.SEQ: 1}, session=session
            )
            if account is None:
                return
            for mismatch in found:
                update: dict[str, Any] = {schema.ACCOUNT_SEQ: mismatch.expected_seq}
                if mismatch.expected_balance_after is not None:
                    update[schema.BALANCE_AFTER] = bson.Int64(mismatch.expected_balance_after)
                await self._transactions.update_one(
                    {
                        "_id": mismatch.transaction_id,
                        cfg.account_link_field: account_id,
                        schema.ACCOUNT_SEQ: mismatch.account_seq,
                    },
                    {"$set": update},
                    session=session,
                )
            # The account's sequence follows its renumbered legs (unless it moved meanwhile).
            await self._accounts.update_one(
                {"_id": account_id, schema.SEQ: account.get(schema.SEQ)},
                {"$set": {schema.SEQ: len(legs)}},
                session=session,
            )
            rewrote[0] = True

        if repair:
            await self._run(body)
        else:
            await body(None)
        return found, rewrote[0]

    async def _confirm_floor(self, account_id: Any) -> FloorViolation | None:
        """Whether an account is below its floor past the guards (see
        :func:`~mongoledger._core.audit.is_floor_violation`), on one consistent view of it and
        its pending holds: a snapshot DB transaction, or without one, two identical looks."""
        cfg = self._cfg
        assert cfg.balance_field is not None
        fields = {cfg.balance_field: 1, schema.MIN_BALANCE: 1}
        found: list[FloorViolation | None] = [None]

        async def body(session: Any) -> None:
            found[0] = None
            doc = await self._accounts.find_one({"_id": account_id}, fields, session=session)
            held = await self._held_sum(account_id, session)
            if doc is None or held is None or not floor_candidate(cfg, doc, held):
                return
            floor = doc[schema.MIN_BALANCE]
            below = await self._transactions.find_one(
                floor_violation_filter(cfg, account_id, floor), {"_id": 1}, session=session
            )
            if not is_floor_violation(held, below is not None):
                return
            if session is None:  # no snapshot: the account must not have moved meanwhile
                again = await self._accounts.find_one({"_id": account_id}, fields)
                if again != doc:
                    return
            found[0] = FloorViolation(
                account_id=account_id,
                balance=doc[cfg.balance_field],
                min_balance=floor,
                held=held,
            )

        await self._run(body)
        return found[0]

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
                    *balances_pipeline(cfg),
                ],
            )
            calculated = int64_total(rows[0]["total"]) if rows else 0
            top = int(rows[0]["seq"] or 0) if rows else 0
            cached = doc.get(cfg.balance_field)
            seq = doc.get(schema.SEQ)
            state = {"cached": cached, "seq": seq, "top": top, "calculated": calculated}
            if int(seq or 0) == top or state == previous:
                consistent = cached is not None and calculated is not None
                if int(seq or 0) == top and consistent and int(cached) == calculated:
                    return None
                mismatch = BalanceMismatch(
                    account_id=account_id, cached=cached, calculated=calculated
                )
                return mismatch, state
            previous = state
        return None

    async def _repair_balance(self, mismatch: BalanceMismatch, state: dict[str, Any]) -> bool:
        """Set the cached balance (and sequence) from the transactions, unless it moved (or
        the transactions sum past int64: no balance can hold that)."""
        cfg = self._cfg
        assert cfg.balance_field is not None
        if mismatch.calculated is None:
            return False
        result = await self._accounts.update_one(
            {
                "_id": mismatch.account_id,
                cfg.balance_field: state["cached"],
                schema.SEQ: state["seq"],
            },
            {
                "$set": {
                    cfg.balance_field: bson.Int64(mismatch.calculated),
                    schema.SEQ: state["top"],
                }
            },
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
                {"transaction_ids": 1, "operation_id": 1, schema.KIND: 1},
            )
        )
        for start in range(0, len(records), 1000):
            batch = records[start : start + 1000]
            firsts: dict[str, list[Any]] = {"transactions": [], "holds": []}
            for r in batch:
                if r.get("transaction_ids"):  # a hold's record names the hold
                    where = "holds" if r.get(schema.KIND) == "hold" else "transactions"
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
                        {"_id": record["_id"], schema.OPERATION_ID: record.get("operation_id")}
                    )
        return broken

    async def _clear_stale_marks(self, links: list[dict[str, Any]]) -> None:
        ids = {repr(d["_id"]) for d in links}
        for doc in links:
            mark = doc.get(schema.REVERTED_BY)
            if mark is None or repr(mark) in ids:
                continue
            if await self._transactions.find_one({"_id": mark}) is not None:
                continue  # the reversal was written after links were read
            link = self._cfg.account_link_field
            result = await self._transactions.update_one(
                {"_id": doc["_id"], link: doc.get(link), schema.REVERTED_BY: mark},
                {"$unset": {schema.REVERTED_BY: ""}},
            )
            if result.modified_count:
                del doc[schema.REVERTED_BY]

    async def _pending_holds(self) -> dict[str, dict[str, Any]]:
        """The sum and count of the pending holds of every account that has one, by ``repr``
        of its ``_id`` (one aggregation over the holds)."""
        rows = await aggregate(self._holds, pending_held_pipeline(), allowDiskUse=True)
        return {repr(row["_id"]): row for row in rows}

    async def _held_sum(self, account_id: Any, session: Any) -> int | None:
        """The sum of one account's pending holds (None past int64: see ``int64_total``)."""
        rows = await aggregate(self._holds, pending_held_pipeline(account_id), session=session)
        return int64_total(rows[0]["held"]) if rows else 0

    async def _check_holds(
        self,
        accounts: list[dict[str, Any]],
        pending: dict[str, dict[str, Any]],
        sums: dict[str, int | None],
        *,
        repair: bool,
    ) -> dict[str, Any]:
        """Holds: every captured hold against its capture's legs (a capture that failed midway
        without a DB transaction is reopened by a repair), then every account's ``held``
        against the sum of its ``pending`` holds, in ``sums`` (rebuilt by a repair)."""
        captured = await to_list(
            self._holds.find({schema.STATUS: "captured"}, {schema.OPERATION_ID: 1})
        )
        legs = await aggregate(self._transactions, capture_legs_pipeline(), allowDiskUse=True)
        broken = check_captures(captured, legs)
        reopened = []
        if repair:
            reopened = [b.hold_id for b in broken if await self._reopen_capture(b.hold_id)]
            if reopened:  # they are pending again
                pending = await self._pending_holds()
                sums = held_sums(accounts, pending)
        suspects = [
            doc["_id"]
            for doc in accounts
            if held_of(doc) != sums[repr(doc["_id"])]  # None (not an integer) never matches
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
            if key not in sums  # it has every account
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
                {"_id": account_id}, {schema.HELD: 1}, session=session
            )
            calculated = await self._held_sum(account_id, session)
            if doc is None:
                return
            cached = doc.get(schema.HELD)
            if held_of(doc) == calculated:
                return
            if session is None:  # no snapshot: the value must not have moved meanwhile
                again = await self._accounts.find_one({"_id": account_id}, {schema.HELD: 1})
                if again is None or again.get(schema.HELD) != cached:
                    return
            fixed = False
            if repair and calculated is not None:  # no held sum can be past int64
                result = await self._accounts.update_one(
                    {
                        "_id": account_id,
                        schema.HELD: cached if schema.HELD in doc else {"$exists": False},
                    },
                    {"$set": {schema.HELD: bson.Int64(calculated)}},
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
        hold = await self._holds.find_one({"_id": hold_id, schema.STATUS: "captured"})
        if hold is None:
            return False
        operation_id = hold.get(schema.OPERATION_ID)
        if await self._transactions.find_one({schema.OPERATION_ID: operation_id}) is not None:
            return False  # the legs exist: not a capture that never posted
        flt, update = reopen(hold_id, "captured", operation_id)
        result = await self._holds.update_one(flt, update)
        return bool(result.modified_count)

    async def rebuild_balances(self) -> VerifyReport:
        """Rebuild every drifted cached balance from the transactions: ``verify(repair=True)``."""
        return await self.verify(repair=True)
