"""Helpers for tests where several callers race: each caller's lookup happens before any of
them writes (a ``before_write`` hook runs after the lookup, before the DB transaction)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from mongoledger import AsyncLedger

_IS_SYNC = False


def hold_writes_until_all_looked_up(ledger: AsyncLedger, callers: int) -> None:
    """Make ``callers`` operations wait for each other after resolving their accounts."""
    if _IS_SYNC:
        barrier = threading.Barrier(callers, timeout=10)
        ledger.before_write(lambda ctx: barrier.wait())
        return
    arrived: list[int] = []
    everyone = asyncio.Event()

    async def gate(ctx: Any) -> None:
        arrived.append(1)
        if len(arrived) == callers:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 10)

    ledger.before_write(gate)


async def race(call: Callable[[int], Any], callers: int) -> None:
    """Run ``call(n)`` for n in range(callers) at once: threads (sync) or tasks (async)."""
    if _IS_SYNC:
        errors: list[BaseException] = []

        def run(n: int) -> None:
            try:
                call(n)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
    else:
        await asyncio.gather(*(call(n) for n in range(callers)))
