"""What the ledger stored, read directly in tests: the documents of its collections (the holds
collection has no property of its own), and a snapshot of all of them to assert that a refused
or failed call wrote nothing."""

from __future__ import annotations

from typing import Any

from mongoledger import AsyncLedger
from mongoledger._async._io import to_list

_IS_SYNC = False


def holds_of(ledger: AsyncLedger) -> Any:
    """The ledger's holds collection."""
    return ledger.database[ledger.config.holds_collection]


async def snapshot(ledger: AsyncLedger) -> tuple[list[Any], ...]:
    """Every account, transaction, hold and idempotency record, in ``_id`` order."""
    collections = (
        ledger.accounts,
        ledger.transactions,
        holds_of(ledger),
        ledger.database[ledger.config.idempotency_collection],
    )
    return tuple([await to_list(c.find({}).sort("_id", 1)) for c in collections])


async def account_doc(ledger: AsyncLedger, account: Any) -> dict[str, Any]:
    """The account document a query (an attribute set, or ``{"_id": ...}``) finds."""
    doc = await ledger.accounts.find_one(account)
    assert doc is not None
    return dict(doc)


async def hold_doc(ledger: AsyncLedger, hold_id: Any) -> dict[str, Any]:
    doc = await holds_of(ledger).find_one({"_id": hold_id})
    assert doc is not None
    return dict(doc)
