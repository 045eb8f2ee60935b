"""What the engine's tests share: a function run beside the test (a thread in the sync
twin, a task in the async source), and draining a change stream."""

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


async def drain(stream: Any) -> list[dict[str, Any]]:
    """Every event a change stream has now."""
    out = []
    while (event := await stream.try_next()) is not None:
        out.append(event)
    return out
