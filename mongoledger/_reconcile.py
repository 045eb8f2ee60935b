"""The I/O-free checks of ``verify``: the per-operation pipeline and the revert links."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongoledger import _core
from mongoledger._core import LedgerConfig
from mongoledger.models import BrokenLink

__all__ = ["check_links", "operations_pipeline"]


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
