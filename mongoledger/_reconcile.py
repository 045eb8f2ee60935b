"""The I/O-free checks of ``verify``: the pipelines it sends, and what it checks on the rows
they return (revert links, account histories, captured holds and their capture's legs).

On a server every whole-collection pipeline returns only what is wrong (a ``$match`` after
its ``$group``) or a count (``$count``), never one row per operation; per account it returns
one row of totals, which ``verify`` compares with the account documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mongoledger import _core
from mongoledger._core import LedgerConfig
from mongoledger.models import BrokenHold, BrokenLink, RunningBalanceMismatch

__all__ = [
    "below_floor",
    "capture_legs_pipeline",
    "check_captures",
    "check_links",
    "floor_violation_filter",
    "history_is_contiguous",
    "operation_anomalies_pipeline",
    "operations_count_pipeline",
    "running_balance_mismatches",
]


def operation_anomalies_pipeline(cfg: LedgerConfig) -> list[dict[str, Any]]:
    """The operations whose legs are missing (fewer documents than ``legs`` says) or whose
    transfer/post legs do not sum to zero; only those leave the server."""
    return [
        {
            "$group": {
                "_id": f"${_core.OPERATION_ID}",
                "kind": {"$first": f"${_core.KIND}"},
                "legs": {"$first": f"${_core.LEGS}"},
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
    return [{"$group": {"_id": f"${_core.OPERATION_ID}"}}, {"$count": "operations"}]


def history_is_contiguous(row: Mapping[str, Any]) -> bool:
    """Whether an account's legs are numbered 1..count (a row of ``_core.balances_pipeline``).

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
        seq = doc.get(_core.ACCOUNT_SEQ)
        recorded = doc.get(_core.BALANCE_AFTER)
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


def below_floor(cfg: LedgerConfig, doc: Mapping[str, Any]) -> bool:
    """Whether the account's cached balance is below its ``min_balance``: a floor above the
    balance of a new account is allowed (it refuses debits), a debit that ended below it is
    not (see :func:`floor_violation_filter`)."""
    floor = doc.get(_core.MIN_BALANCE)
    balance = doc.get(cfg.balance_field) if cfg.balance_field else None
    return isinstance(floor, int) and isinstance(balance, int) and balance < floor


def floor_violation_filter(cfg: LedgerConfig, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The debit legs of an account that ended below its floor, which its guard forbids."""
    return {
        cfg.account_link_field: doc["_id"],
        cfg.amount_field: {"$lt": 0},
        _core.BALANCE_AFTER: {"$lt": doc[_core.MIN_BALANCE]},
    }


def check_links(cfg: LedgerConfig, docs: list[Mapping[str, Any]]) -> list[BrokenLink]:
    by_id = {repr(d["_id"]): d for d in docs}
    broken = []
    for doc in docs:
        reverts = doc.get(_core.REVERTS)
        if reverts is not None:
            target = by_id.get(repr(reverts))
            if target is None:
                broken.append(
                    BrokenLink(
                        transaction_id=doc["_id"],
                        problem=f"reverts {reverts!r}, which is missing or not marked",
                    )
                )
            elif target.get(_core.REVERTED_BY) != doc["_id"]:
                broken.append(
                    BrokenLink(
                        transaction_id=doc["_id"],
                        problem=(
                            f"reverts {reverts!r}, which is marked reverted_by "
                            f"{target.get(_core.REVERTED_BY)!r}"
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
        reverted_by = doc.get(_core.REVERTED_BY)
        if reverted_by is not None:
            reversal = by_id.get(repr(reverted_by))
            if reversal is None or reversal.get(_core.REVERTS) != doc["_id"]:
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
        {"$match": {_core.HOLD_ID: {"$exists": True}}},
        {"$group": {"_id": f"${_core.HOLD_ID}", "operations": {"$addToSet": "$operation_id"}}},
    ]


def check_captures(
    captured: list[Mapping[str, Any]], legs: list[Mapping[str, Any]]
) -> list[BrokenHold]:
    """Every captured hold has its capture's legs, and every capture's legs name a hold that
    this capture closed. (A revert of a capture writes legs without ``hold_id``.)"""
    by_hold = {repr(row["_id"]): [repr(op) for op in row["operations"]] for row in legs}
    closed_by = {repr(h["_id"]): repr(h.get(_core.OPERATION_ID)) for h in captured}
    broken = [
        BrokenHold(
            hold_id=hold["_id"],
            problem=f"captured by operation {hold.get(_core.OPERATION_ID)!r}, which has no "
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
