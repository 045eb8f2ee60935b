"""Run a function beside the test: a thread in the sync twin, a task in the async source."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

_IS_SYNC = False


class Background:
    """One function running concurrently with the test; ``result`` waits for it."""

    def __init__(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        if _IS_SYNC:

            def target() -> None:
                try:
                    self._value = fn()
                except BaseException as exc:
                    self._error = exc

            self._thread = threading.Thread(target=target, daemon=True)
            self._thread.start()
        else:
            self._task = asyncio.ensure_future(fn())

    async def running_after(self, seconds: float) -> bool:
        """Whether it is still running after ``seconds`` (it is blocked on something)."""
        if _IS_SYNC:
            self._thread.join(seconds)
            return self._thread.is_alive()
        await asyncio.wait({self._task}, timeout=seconds)
        return not self._task.done()

    async def result(self, timeout: float = 10) -> Any:
        if _IS_SYNC:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "still running"
            if self._error is not None:
                raise self._error
            return self._value
        return await asyncio.wait_for(self._task, timeout)


async def run_together(fns: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run every function concurrently (threads released together, or tasks); their results."""
    if not _IS_SYNC:
        return list(await asyncio.gather(*(fn() for fn in fns)))
    barrier = threading.Barrier(len(fns))
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fns[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(len(fns))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
