"""How the benchmark times a block of operations, and in which order the sides take turns:
shared by the main table (``bench``), the contention rows (``contention``), the store's
(``store``) and the web app's (``web``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["alternate", "time_async", "time_sync", "timed_block"]


@contextlib.contextmanager
def timed_block(collector: bool) -> Iterator[None]:
    """Around a timed block: first move what earlier blocks stored out of the cyclic garbage
    collector's reach, then (unless ``collector``) switch the collector off until the block
    ends, as ``timeit`` does.

    The engine's documents live in this process (with a server they would not): a block
    stores about a hundred thousand new tracked objects, and a full collection rescanning
    them lands on whichever side crosses the collector's threshold inside its block (the
    ledger, allocating a little more per operation, crosses it more often). Reference
    counting still frees each operation's own objects either way."""
    gc.collect()
    gc.freeze()
    paused = not collector and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def time_sync(
    fn: Callable[[int, Any], Any],
    args: Sequence[Any],
    collector: bool,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    with timed_block(collector):
        start = clock()
        for arg in args:
            fn(0, arg)
        elapsed = clock() - start
    return len(args) / elapsed


async def time_async(
    fn: Callable[[int, Any], Awaitable[Any]],
    args: Sequence[Sequence[Any]],
    collector: bool,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    async def worker(w: int) -> None:
        for arg in args[w]:
            await fn(w, arg)

    with timed_block(collector):
        start = clock()
        await asyncio.gather(*(worker(w) for w in range(len(args))))
        elapsed = clock() - start
    return sum(len(a) for a in args) / elapsed


def alternate(sides: list[T], round_number: int) -> list[T]:
    """The sides in the order of this round, rotated by one each round: each goes first as
    often as the others (two sides: every other round), so none always runs on the heap and
    caches another one left."""
    turn = round_number % len(sides)
    return sides[turn:] + sides[:turn]
