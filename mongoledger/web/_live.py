"""The live balance: server-sent events from the ledger's change stream (``AsyncLedger.watch``).

The stream opens before the first balance is read, so no operation committed in between is
missed. Each committed operation on the account sends one ``balance`` event; a comment line
every ``keepalive`` seconds keeps proxies from closing a quiet connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from mongoledger._async.ledger import AsyncLedger
from mongoledger._format import CurrencyFormat
from mongoledger.web._permissions import same_id

__all__ = ["balance_events"]

KEEPALIVE_SECONDS = 15.0


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def balance_events(
    ledger: AsyncLedger,
    account_id: Any,
    money: CurrencyFormat,
    *,
    keepalive: float = KEEPALIVE_SECONDS,
) -> AsyncIterator[str]:
    """``balance`` events for ``account_id``: first its current balance, then one per operation."""
    stream = await ledger.watch(accounts=[account_id])
    try:
        balance = await ledger.balance(account_id)
        yield "retry: 3000\n\n"
        yield _event("balance", {"balance": balance, "formatted": money.format(balance)})
        quiet_since = time.monotonic()
        while True:
            event = await stream.try_next()
            if event is None:
                if time.monotonic() - quiet_since >= keepalive:
                    quiet_since = time.monotonic()
                    yield ": keepalive\n\n"
                continue
            legs = [t for t in event.transactions if same_id(t.account_id, account_id)]
            last = legs[-1].balance_after if legs else None
            balance = last if last is not None else await ledger.balance(account_id)
            amount = sum(t.amount for t in legs)
            quiet_since = time.monotonic()
            yield _event(
                "balance",
                {
                    "balance": balance,
                    "formatted": money.format(balance),
                    "kind": event.kind,
                    "amount": amount,
                    "formatted_amount": money.signed(amount),
                    "operation_id": str(event.operation_id),
                },
            )
    finally:
        await stream.close()
