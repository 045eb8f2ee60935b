"""Receipts: the transactions an operation wrote, for a caller that answers with them.

A write returns ids (SPEC); a caller that shows what was written (the web app's JSON answer
to a write) would read the documents back, one more round trip per write. Inside
``with recording() as receipt:`` every transaction document the ledger inserts in this task
(or thread) is kept, as a read would return it, so ``receipt.transactions(ids)`` answers
without I/O. Nothing is kept outside such a block.

A DB transaction that is retried inserts the same ids again: the last attempt, the one that
committed, is what the receipt holds. An operation that wrote nothing (an idempotent retry
answers with the first call's ids) leaves no documents: ``transactions`` returns None and the
caller reads them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import bson

from mongoledger._core.config import LedgerConfig
from mongoledger._core.transactions import transaction_to_model
from mongoledger.models import Transaction

__all__ = ["Receipt", "record", "recording"]

_CURRENT: ContextVar[Receipt | None] = ContextVar("mongoledger_receipt", default=None)


class Receipt:
    """The transactions the ledger inserted inside one :func:`recording` block, by id."""

    def __init__(self) -> None:
        # The documents as inserted, by reference (the caller's ``data`` inside them too):
        # ``transactions`` copies them, so call it right after the write, as run_write does.
        self._written: dict[Any, tuple[LedgerConfig, Mapping[str, Any]]] = {}

    def transactions(self, ids: Sequence[Any]) -> list[Transaction] | None:
        """The transactions of ``ids``, in that order; None unless all were written here."""
        found = [self._written.get(i) for i in ids]
        if not ids or any(f is None for f in found):
            return None
        return [_as_read(*f) for f in found if f is not None]


@contextmanager
def recording() -> Iterator[Receipt]:
    """Keep what the ledger writes in this task (or thread) until the block ends."""
    receipt = Receipt()
    token = _CURRENT.set(receipt)
    try:
        yield receipt
    finally:
        _CURRENT.reset(token)


def record(cfg: LedgerConfig, documents: Sequence[Mapping[str, Any]]) -> None:
    """Called by the write path with the documents it inserts, inside its DB transaction: it
    only keeps them (nothing outside a block); the work waits for ``transactions``."""
    receipt = _CURRENT.get()
    if receipt is not None:
        for doc in documents:
            receipt._written[doc["_id"]] = (cfg, doc)


def _as_read(cfg: LedgerConfig, doc: Mapping[str, Any]) -> Transaction:
    """The transaction as a read returns it: BSON keeps dates to the millisecond, tuples as
    arrays, aware datetimes as UTC."""
    return transaction_to_model(cfg, bson.decode(bson.encode(doc)))
