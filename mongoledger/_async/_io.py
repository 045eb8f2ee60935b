"""Driver adapters: one call shape for PyMongo async, Motor, PyMongo sync and the engines.

PyMongo's async API and Motor differ in which calls are coroutines (``start_session``,
``aggregate``, ``watch``); awaiting only what is awaitable serves both.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

_IS_SYNC = False
# The async class, named in the sync twin's refusals of awaitables (kept as is by unasync).
ASYNC_LEDGER = "AsyncLedger"  # unasync: keep


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


class AwaitableRefused(TypeError):
    """The sync ``Ledger`` was given an async hook or handler (a mistake, never retried)."""


def check_callback(fn: Any, what: str) -> None:
    """Refuse what cannot be called, and (in the sync ``Ledger``) an async callable."""
    if not callable(fn):
        raise TypeError(f"{what} {fn!r} is not callable")
    if _IS_SYNC and _is_async_callable(fn):
        raise AwaitableRefused(
            f"{what} {fn!r} is a coroutine function: the sync Ledger cannot await it, so it "
            f"would never run; use {ASYNC_LEDGER} for async {what}s"
        )


def _is_async_callable(fn: Any) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with ``async def __call__``
    return any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (fn, call))


async def call_back(fn: Any, arg: Any, what: str) -> Any:
    """Call a hook or handler; await what it returns, or (sync ``Ledger``) refuse it."""
    result = fn(arg)
    if _IS_SYNC and inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()  # a coroutine that is never awaited would warn at garbage collection
        raise AwaitableRefused(
            f"{what} {fn!r} returned an awaitable ({type(result).__name__}): the sync Ledger "
            f"cannot await it, so it would not run; use {ASYNC_LEDGER} for async {what}s"
        )
    return await maybe_await(result)


async def sleep(seconds: float) -> None:
    if _IS_SYNC:
        time.sleep(seconds)
    else:
        await asyncio.sleep(seconds)


def is_plain_mongomock(collection: Any) -> bool:
    """Plain mongomock: no sessions, no change streams, and a ``bulk_write`` that rejects the
    ``UpdateOne`` of PyMongo >= 4.11."""
    return type(collection).__module__.startswith("mongomock")


_MONGOMOCK_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


@contextlib.contextmanager
def mongomock_writes(collection: Any) -> Iterator[None]:
    """Serialize the ledger's writes on one plain-mongomock client; elsewhere, do nothing.

    mongomock's find-and-modify is a find, then an update: two threads can both pass a
    ``min_balance`` guard. A server (and the memory engine) apply it atomically; on plain
    mongomock every ledger write of the process holds this lock instead.
    """
    if not is_plain_mongomock(collection):
        yield
        return
    client = collection.database.client
    store = getattr(client, "_store", client)
    with _LOCKS_LOCK:
        lock = _MONGOMOCK_LOCKS.get(store)
        if lock is None:
            lock = _MONGOMOCK_LOCKS[store] = threading.RLock()
    with lock:
        yield
