"""Hooks given as async callables: ``AsyncLedger`` awaits them; the sync ``Ledger`` refuses them.

The sync twin is generated from this file, so the async callables below keep their ``async``
(``# unasync: keep``): the sync ``Ledger`` must never accept one and silently not run it.
"""

from __future__ import annotations

from typing import Any

import pytest

from mongoledger import AfterWriteError, AsyncLedger
from mongoledger._async._io import to_list

_IS_SYNC = False


class AsyncHook:
    """An object whose ``__call__`` is a coroutine function (a hook a framework might build)."""

    def __init__(self, veto: bool = False) -> None:
        self.veto = veto
        self.seen: list[int] = []

    async def __call__(self, ctx: Any) -> None:  # unasync: keep
        self.seen.append(ctx.amount)
        if self.veto:
            raise RuntimeError("vetoed")


async def coroutine_hook(ctx: Any) -> None:  # unasync: keep
    raise RuntimeError("vetoed")


@pytest.fixture
async def ledger(async_db: Any) -> AsyncLedger:
    ledger = AsyncLedger(async_db)
    await ledger.increase("a", 100)
    return ledger


async def written(ledger: AsyncLedger) -> int:
    return len(await to_list(ledger.transactions.find({})))


@pytest.mark.parametrize("register", ["before_write", "after_write"])
async def test_async_callable_object_as_hook(ledger: AsyncLedger, register: str) -> None:
    hook = AsyncHook()
    if _IS_SYNC:
        match = r"coroutine function.*use AsyncLedger for async hooks"  # unasync: keep
        with pytest.raises(TypeError, match=match):
            getattr(ledger, register)(hook)
        with pytest.raises(TypeError, match="coroutine function"):
            getattr(ledger, register)(coroutine_hook)
        await ledger.increase("a", 5)
        assert hook.seen == []
    else:
        getattr(ledger, register)(hook)
        await ledger.increase("a", 5)
        assert hook.seen == [5]


async def test_veto_by_an_awaitable_is_never_lost(ledger: AsyncLedger) -> None:
    """A plain function returning a coroutine: awaited by AsyncLedger, refused by Ledger."""
    hook = AsyncHook(veto=True)
    ledger.before_write(lambda ctx: hook(ctx))  # noqa: PLW0108 - returns a coroutine
    before = await written(ledger)
    if _IS_SYNC:
        match = r"returned an awaitable \(coroutine\).*use AsyncLedger"  # unasync: keep
        with pytest.raises(TypeError, match=match):
            await ledger.increase("a", 5)
    else:
        with pytest.raises(RuntimeError, match="vetoed"):
            await ledger.increase("a", 5)
    assert await written(ledger) == before  # vetoed or refused: nothing written
    assert await ledger.balance("a") == 100


async def test_after_write_returning_an_awaitable(ledger: AsyncLedger) -> None:
    hook = AsyncHook()
    ledger.after_write(lambda ctx: hook(ctx))  # noqa: PLW0108 - returns a coroutine
    if _IS_SYNC:
        with pytest.raises(AfterWriteError) as info:
            await ledger.increase("a", 5)
        assert isinstance(info.value.errors[0], TypeError)
        assert "AsyncLedger" in str(info.value.errors[0])  # unasync: keep
        assert await ledger.balance("a") == 105  # committed: the error says so
    else:
        await ledger.increase("a", 5)
        assert hook.seen == [5]


async def test_non_callable_hook(ledger: AsyncLedger) -> None:
    with pytest.raises(TypeError, match="not callable"):
        ledger.before_write(5)  # type: ignore[type-var]
