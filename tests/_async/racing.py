"""Helpers for tests where several callers race: threads in the sync twin, asyncio tasks in
the async source. Hooks make them interleave where a race matters: between an operation's
reads and its DB transaction (``yield_point``), or only once every caller has resolved its
accounts (``hold_writes_until_all_looked_up``)."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from mongoledger import AsyncLedger
from mongoledger._async._io import sleep

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


async def run_concurrently(workers: list[Callable[[], Awaitable[None]]]) -> None:
    """Run every worker at once: threads released together by a barrier (sync), or tasks
    (async). A worker's exception fails the test."""
    if _IS_SYNC:
        barrier = threading.Barrier(len(workers))
        crashed: list[BaseException] = []

        def target(work: Callable[[], Any]) -> None:
            try:
                barrier.wait()
                work()
            except BaseException as exc:
                crashed.append(exc)

        threads = [threading.Thread(target=target, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not crashed, crashed
    else:
        await asyncio.gather(*(w() for w in workers))


async def race(call: Callable[[int], Any], callers: int) -> None:
    """Run ``call(n)`` for n in range(callers) at once."""
    await run_concurrently([functools.partial(call, n) for n in range(callers)])


async def yield_point(ctx: Any) -> None:
    """A before_write hook that lets other workers run between an operation's reads and writes."""
    await sleep(0)
