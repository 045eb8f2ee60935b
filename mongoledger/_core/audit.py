"""The I/O-free checks of ``verify``: the pipelines it sends, and what it checks on the rows
they return (revert links, account histories, captured holds and their capture's legs).

On a server every whole-collection pipeline returns only what is wrong (a ``$match`` after
its ``$group``) or a count (``$count``), never one row per operation; per account it returns
one row of totals, which ``verify`` compares with the account documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mongoledger._core import schema
from mongoledger._core.amounts import int64_total
from mongoledger._core.config import LedgerConfig
from mongoledger._core.guards import below_floor
from mongoledger._core.schema import INT64_MAX, INT64_MIN
from mongoledger.models import BrokenHold, BrokenLink, RunningBalanceMismatch

__all__ = [
    "capture_legs_pipeline",
    "check_captures",
    "check_links",
    "floor_candidate",
    "floor_violation_filter",
    "held_sums",
    "history_is_contiguous",
    "is_floor_violation",
    "operation_anomalies_pipeline",
    "operations_count_pipeline",
    "rewritable",
    "running_balance_mismatches",
]


def operation_anomalies_pipeline(cfg: LedgerConfig) -> list[dict[str, Any]]:
    """The operations whose legs are missing (fewer documents than ``legs`` says) or whose
    transfer/post legs do not sum to zero; only those leave the server."""
    return [
        {
            "$group": {
                "_id": f"${schema.OPERATION_ID}",
                "kind": {"$first": f"${schema.KIND}"},
                "legs": {"$first": f"${schema.LEGS}"},
                "count": {"$sum": 1},
                "total": {"$sum": f"${cfg.amount_field}"},
            }
        },
        {
            "$match": {
                "$or": [
                    {"$expr": {"$ne": ["$count", "$legs"]}},
                    {"kind": {"$in": ["transfer", "post"]}, "total": {"$ne": 0}},
                ]
            }
        },
    ]


def operations_count_pipeline() -> list[dict[str, Any]]:
    return [{"$group": {"_id": f"${schema.OPERATION_ID}"}}, {"$count": "operations"}]


def history_is_contiguous(row: Mapping[str, Any]) -> bool:
    """Whether an account's legs are numbered 1..count (a row of ``reads.balances_pipeline``).

    A leg the ledger compensated while another operation took the next number (possible only
    without DB transactions) leaves a gap, and that operation's ``balance_after`` counted the
    compensated amount: a gap is where running balances are wrong.
    """
    return row.get("first") == 1 and row.get("seq") == row.get("count")


def running_balance_mismatches(
    cfg: LedgerConfig, account_id: Any, legs: Sequence[Mapping[str, Any]]
) -> list[RunningBalanceMismatch]:
    """The legs of one account (in ``account_seq`` order) whose number or running balance is
    not their place in its history."""
    out = []
    running = 0
    for position, doc in enumerate(legs, start=1):
        running += int(doc[cfg.amount_field])
        seq = doc.get(schema.ACCOUNT_SEQ)
        recorded = doc.get(schema.BALANCE_AFTER)
        expected = running if cfg.balance_field is not None else None
        if seq != position or (expected is not None and recorded != expected):
            out.append(
                RunningBalanceMismatch(
                    account_id=account_id,
                    transaction_id=doc["_id"],
                    account_seq=seq,
                    expected_seq=position,
                    balance_after=None if recorded is None else int(recorded),
                    expected_balance_after=expected,
                )
            )
    return out


def rewritable(mismatches: Sequence[RunningBalanceMismatch]) -> bool:
    """Whether a repair can write every expected running balance (each fits int64: a history
    written around the ledger may sum past it, and is then reported, not rewritten)."""
    return all(
        m.expected_balance_after is None or INT64_MIN <= m.expected_balance_after <= INT64_MAX
        for m in mismatches
    )


def floor_candidate(cfg: LedgerConfig, doc: Mapping[str, Any], held: int) -> bool:
    """Whether an account document is below its floor by the guards' measure: its available
    balance (its cached balance minus ``held``, the sum of its pending holds) is below its
    ``min_balance``. Not every such account is a violation (see :func:`is_floor_violation`)."""
    floor = doc.get(schema.MIN_BALANCE)
    balance = doc.get(cfg.balance_field) if cfg.balance_field else None
    return isinstance(floor, int) and isinstance(balance, int) and below_floor(balance, held, floor)


def is_floor_violation(held: int, debit_below: bool) -> bool:
    """Whether an account below its floor got there past the guards.

    A floor above the balance of a new account is allowed (it refuses debits and holds until
    money comes in). Every step that lowers the available balance is guarded: a pending hold
    was placed only where it fitted, and a legitimate debit never ends with its running
    balance (``balance_after``) below the floor, held money included. So an account below its
    floor with money held, or with a debit that ended below it (``debit_below``, see
    :func:`floor_violation_filter`), was taken there around the guards.
    """
    return held > 0 or debit_below


def floor_violation_filter(cfg: LedgerConfig, account_id: Any, floor: int) -> dict[str, Any]:
    """The debit legs of an account that ended below its floor, which its guard forbids."""
    return {
        cfg.account_link_field: account_id,
        cfg.amount_field: {"$lt": 0},
        schema.BALANCE_AFTER: {"$lt": floor},
    }


def check_links(cfg: LedgerConfig, docs: list[Mapping[str, Any]]) -> list[BrokenLink]:
    by_id = {repr(d["_id"]): d for d in docs}
    broken = []
    for doc in docs:
        reverts = doc.get(schema.REVERTS)
        if reverts is not None:
            target = by_id.get(repr(reverts))
            if target is None:
                broken.append(
                    BrokenLink(
                        transaction_id=doc["_id"],
                        problem=f"reverts {reverts!r}, which is missing or not marked",
                    )
                )
            elif target.get(schema.REVERTED_BY) != doc["_id"]:
                broken.append(
                    BrokenLink(
                        transaction_id=doc["_id"],
                        problem=(
                            f"reverts {reverts!r}, which is marked reverted_by "
                            f"{target.get(schema.REVERTED_BY)!r}"
                        ),
                    )
                )
            elif int(target[cfg.amount_field]) != -int(doc[cfg.amount_field]):
                broken.append(
                    BrokenLink(
                        transaction_id=doc["_id"],
                        problem=(
                            f"amount {doc[cfg.amount_field]} does not negate "
                            f"{target[cfg.amount_field]}"
                        ),
                    )
                )
        reverted_by = doc.get(schema.REVERTED_BY)
        if reverted_by is not None:
            reversal = by_id.get(repr(reverted_by))
            if reversal is None or reversal.get(schema.REVERTS) != doc["_id"]:
                broken.append(
                    BrokenLink(
                        transaction_id=doc["_id"],
                        problem=f"reverted_by {reverted_by!r}, which does not revert it",
                    )
                )
    return broken


# Holds


def capture_legs_pipeline() -> list[dict[str, Any]]:
    """Per hold, the operations whose legs name it (served by the partial ``hold_id`` index)."""
    return [
        {"$match": {schema.HOLD_ID: {"$exists": True}}},
        {"$group": {"_id": f"${schema.HOLD_ID}", "operations": {"$addToSet": "$operation_id"}}},
    ]


def held_sums(
    accounts: Sequence[Mapping[str, Any]], pending: Mapping[str, Mapping[str, Any]]
) -> dict[str, int | None]:
    """Every account's sum of its pending holds (``pending``: the rows of
    :func:`~mongoledger._core.holds.pending_held_pipeline` by ``repr`` of their ``_id``), by
    ``repr`` of its ``_id``: what its ``held`` must be (None: a sum past int64)."""
    sums: dict[str, int | None] = {}
    for doc in accounts:
        key = repr(doc["_id"])
        sums[key] = int64_total(pending[key]["held"]) if key in pending else 0
    return sums


def check_captures(
    captured: list[Mapping[str, Any]], legs: list[Mapping[str, Any]]
) -> list[BrokenHold]:
    """Every captured hold has its capture's legs, and every capture's legs name a hold that
    this capture closed. (A revert of a capture writes legs without ``hold_id``.)"""
    by_hold = {repr(row["_id"]): [repr(op) for op in row["operations"]] for row in legs}
    closed_by = {repr(h["_id"]): repr(h.get(schema.OPERATION_ID)) for h in captured}
    broken = [
        BrokenHold(
            hold_id=hold["_id"],
            problem=f"captured by operation {hold.get(schema.OPERATION_ID)!r}, which has no "
            "transactions (a capture that failed midway without a DB transaction)",
        )
        for hold in captured
        if closed_by[repr(hold["_id"])] not in by_hold.get(repr(hold["_id"]), [])
    ]
    broken += [
        BrokenHold(
            hold_id=row["_id"],
            problem=f"operation {op!r} captures it, but the hold is not captured by that operation",
        )
        for row in legs
        for op in row["operations"]
        if closed_by.get(repr(row["_id"])) != repr(op)
    ]
    return broken
