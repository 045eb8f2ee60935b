"""Driver adapters: one call shape for PyMongo async, Motor, PyMongo sync and the engines.

PyMongo's async API and Motor differ in which calls are coroutines (``start_session``,
``aggregate``, ``watch``); awaiting only what is awaitable serves both.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

_IS_SYNC = False


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if it is awaitable (Motor and PyMongo async disagree on which calls are)."""
    if not _IS_SYNC and inspect.isawaitable(value):
        return await value
    return value


async def to_list(cursor: Any) -> list[Any]:
    """Exhaust a cursor of any flavour (PyMongo, Motor, mongomock, the memory engine)."""
    if hasattr(cursor, "to_list"):
        return list(await maybe_await(cursor.to_list(None)))
    return list(cursor)


async def aggregate(collection: Any, pipeline: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    cursor = await maybe_await(collection.aggregate(pipeline, **kwargs))
    return await to_list(cursor)


async def call_hook(fn: Any, ctx: Any) -> None:
    await maybe_await(fn(ctx))


async def sleep(seconds: float) -> None:
    if _IS_SYNC:
        time.sleep(seconds)
    else:
        await asyncio.sleep(seconds)


def is_plain_mongomock(collection: Any) -> bool:
    """Plain mongomock: no sessions, no change streams, and a ``bulk_write`` that rejects the
    ``UpdateOne`` of PyMongo >= 4.11."""
    return type(collection).__module__.startswith("mongomock")
