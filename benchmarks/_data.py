"""The benchmark's data: a ledger's collections of any size, written as the ledger writes them
(``generate``), bulk-loaded without the ledger's per-operation path (``load``)."""

from __future__ import annotations

import datetime
import gc
import random
from collections.abc import Iterator
from typing import Any

from bson import Int64, ObjectId

from mongoledger import Ledger
from mongoledger._core import schema
from mongoledger._core.accounts import AccountRef, new_account_fields, validate_account
from mongoledger._core.config import LedgerConfig
from mongoledger._core.transactions import Leg, transaction_document

__all__ = ["BASE_DATE", "generate", "load"]

BASE_DATE = datetime.datetime(2024, 1, 1)


def generate(cfg: LedgerConfig, n: int, seed: int = 7) -> tuple[list[Any], Iterator[Any]]:
    """Accounts (about 100 transactions each) and a stream of transaction documents shaped
    exactly as the ledger writes them (half increases, half transfers)."""
    rng = random.Random(seed)
    n_accounts = max(n // 100, 10)
    refs = [validate_account({"user_id": i, "type": "wallet"}) for i in range(n_accounts)]
    accounts = []
    for ref in refs:
        doc = {"_id": ObjectId(), **new_account_fields(cfg, ref, None)}
        doc["balance"], doc[schema.SEQ] = 0, 0
        accounts.append(doc)

    def legs_of(doc: dict[str, Any], amount: int) -> Leg:
        doc[schema.SEQ] += 1
        doc["balance"] += amount
        return Leg(
            account=AccountRef(id=doc["_id"]),
            amount=amount,
            data={},
            account_id=doc["_id"],
            balance_after=doc["balance"],
            account_seq=doc[schema.SEQ],
        )

    def stream() -> Iterator[dict[str, Any]]:
        written, second = 0, 0
        while written < n:
            second += 1
            date = BASE_DATE + datetime.timedelta(seconds=second)
            op = ObjectId()
            if rng.random() < 0.5 or n - written < 2:
                legs = [legs_of(rng.choice(accounts), rng.randrange(1, 10_000))]
                kind = "increase"
            else:
                a, b = rng.sample(accounts, 2)
                amount = rng.randrange(1, 1_000)
                legs = [legs_of(a, -amount), legs_of(b, amount)]
                legs[0].extra_account_id = b["_id"]
                legs[1].extra_account_id = a["_id"]
                kind = "transfer"
            for i, leg in enumerate(legs):
                yield transaction_document(
                    cfg,
                    leg,
                    index=i,
                    count=len(legs),
                    kind=kind,  # type: ignore[arg-type]
                    operation_id=op,
                    date=date,
                    idempotency=None,
                )
            written += len(legs)

    return accounts, stream()


def load(ledger: Ledger, n: int) -> tuple[list[dict[str, Any]], datetime.datetime]:
    gc.disable()  # millions of new objects: the cyclic collector would rescan them all
    try:
        return _load(ledger, n)
    finally:
        gc.enable()
        gc.freeze()  # long-lived data: keep it out of later collections


def _load(ledger: Ledger, n: int) -> tuple[list[dict[str, Any]], datetime.datetime]:
    accounts, docs = generate(ledger.config, n)
    chunk: list[dict[str, Any]] = []
    last = BASE_DATE
    for doc in docs:
        chunk.append(doc)
        last = doc["date"]
        if len(chunk) == 5_000:
            ledger.transactions.insert_many(chunk, ordered=False)
            chunk = []
    if chunk:
        ledger.transactions.insert_many(chunk, ordered=False)
    # The cached balances and sequences the stream ended with, as the ledger keeps them.
    for doc in accounts:
        doc["balance"] = Int64(doc["balance"])
    ledger.accounts.insert_many(accounts, ordered=False)
    ledger.ensure_indexes()
    return accounts, last
