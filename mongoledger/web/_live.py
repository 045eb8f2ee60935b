"""The live balance: server-sent events from the ledger's change stream (``AsyncLedger.watch``).

The stream opens before the first balance is read, so no operation committed in between is
missed. Each committed operation that moves the account sends one ``balance`` event; while
pending holds reserve part of it, an ``available`` event follows each change of its held sum
or balance. A comment line every ``keepalive`` seconds keeps proxies from closing a quiet
connection.
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
    """``balance`` events for ``account_id``: first its current balance, then one per operation
    that moves it; ``available`` events when pending holds reserve part of it (its held sum
    and available balance, whenever either changes)."""
    stream = await ledger.watch(accounts=[account_id])
    try:
        balance, held = await ledger.balance_and_held(account_id)
        yield "retry: 3000\n\n"
        yield _event("balance", {"balance": balance, "formatted": money.format(balance)})
        if held:
            yield _available(balance, held, money)
        quiet_since = time.monotonic()
        while True:
            event = await stream.try_next()
            if event is None:
                if time.monotonic() - quiet_since >= keepalive:
                    quiet_since = time.monotonic()
                    yield ": keepalive\n\n"
                continue
            quiet_since = time.monotonic()
            was_held = held
            if event.hold_id is not None:  # a hold step or a capture: the held sum moved
                _, held = await ledger.balance_and_held(account_id)
            legs = [t for t in event.transactions if same_id(t.account_id, account_id)]
            if legs:
                last = legs[-1].balance_after
                balance = last if last is not None else await ledger.balance(account_id)
                amount = sum(t.amount for t in legs)
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
            if held != was_held or (held and legs):
                yield _available(balance, held, money)
    finally:
        await stream.close()


def _available(balance: int, held: int, money: CurrencyFormat) -> str:
    available = balance - held
    return _event(
        "available",
        {
            "held": held,
            "available": available,
            "formatted_held": money.format(held),
            "formatted_available": money.format(available),
        },
    )
