"""The I/O-free checks of ``verify``: the per-operation pipeline, the revert links, and the
links between captured holds and their capture's legs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongoledger import _core
from mongoledger._core import LedgerConfig
from mongoledger.models import BrokenHold, BrokenLink

__all__ = ["capture_legs_pipeline", "check_captures", "check_links", "operations_pipeline"]


def operations_pipeline(cfg: LedgerConfig) -> list[dict[str, Any]]:
    return [
        {
            "$group": {
                "_id": f"${_core.OPERATION_ID}",
                "kind": {"$first": f"${_core.KIND}"},
                "legs": {"$first": f"${_core.LEGS}"},
                "count": {"$sum": 1},
                "total": {"$sum": f"${cfg.amount_field}"},
            }
        }
    ]


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
