"""What the two client twins share: argument checks, write concern outcomes, the fail point
command, and the two ways to wait.

``_async/client.py`` calls ``async_wait_for_event``; ``scripts/unasync.py`` renames the call to
``wait_for_event`` in the generated ``_sync/client.py``. Waiting is the one place the twins
differ in kind (a thread blocks on a Condition, a task awaits a future), so both live here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from pymongo.errors import BulkWriteError, InvalidName
from pymongo.results import InsertManyResult
from pymongo.write_concern import WriteConcern

from ._bson import Document
from ._changestream import StreamCore
from ._options import raise_write_concern_error, write_concern_error

T = TypeVar("T")


def check_collection_name(name: Any) -> None:
    """PyMongo's checks of a collection name (``InvalidName``)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be an instance of str, not {type(name)}")
    if not name or ".." in name:
        raise InvalidName("collection names cannot be empty")
    if "$" in name and not name.startswith(("oplog.$main", "$cmd")):
        raise InvalidName(f"collection names must not contain '$': {name!r}")
    if name[0] == "." or name[-1] == ".":
        raise InvalidName(f"collection names must not start or end with '.': {name!r}")
    if "\x00" in name:
        raise InvalidName("collection names must not contain the null character")


def index_pairs(indexes: Sequence[Any]) -> list[tuple[Any, Document]]:
    """``create_indexes``' ``IndexModel`` list as (keys, options) pairs."""
    pairs = []
    for model in indexes:
        document = dict(model.document)
        keys = list(document.pop("key").items())
        pairs.append((keys, document))
    return pairs


def write_concern_checked(result: T, wc: WriteConcern | None, *, bulk: bool = False) -> T:
    """``result``, or the error a one-member replica set answers write concern ``wc`` with
    once the write is done (None: the write is part of a transaction)."""
    error = write_concern_error(wc)
    if error is None:
        return result
    if bulk:
        inserted = len(result.inserted_ids) if isinstance(result, InsertManyResult) else 0
        details: Document = {
            "writeErrors": [],
            "writeConcernErrors": [error],
            "nInserted": inserted,
            "nUpserted": 0,
            "nMatched": 0,
            "nModified": 0,
            "nRemoved": 0,
            "upserted": [],
        }
        raise BulkWriteError(details)
    raise_write_concern_error(error)
    return result  # pragma: no cover - raise_write_concern_error raised


def fail_command_spec(
    commands: Sequence[str] | str,
    *,
    times: int | None = 1,
    error_code: int | None = None,
    error_labels: Sequence[str] = (),
    close_connection: bool = False,
) -> Document:
    """The ``configureFailPoint`` command for :meth:`MemoryClient.fail_command`."""
    data: Document = {"failCommands": [commands] if isinstance(commands, str) else list(commands)}
    if error_code is not None:
        data["errorCode"] = error_code
    if error_labels:
        data["errorLabels"] = list(error_labels)
    if close_connection:
        data["closeConnection"] = True
    if error_code is None and not close_connection:
        raise ValueError("fail_command needs error_code= or close_connection=True")
    mode: Any = "alwaysOn" if times is None else {"times": times}
    return {"configureFailPoint": "failCommand", "mode": mode, "data": data}


def wait_for_event(core: StreamCore, timeout: float | None) -> Document | None:
    """The stream's next event, blocking the thread up to ``timeout`` seconds (None: forever).

    None when the time runs out, or once the stream is invalidated.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    cond = core.server._oplog_waiters.cond
    with cond:
        while True:
            event = core.poll()
            if event is not None or not core.alive:
                return event
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            cond.wait(remaining)


async def async_wait_for_event(core: StreamCore, timeout: float | None) -> Document | None:
    """:func:`wait_for_event` for a task: awaits a future, so the event loop is never blocked."""
    server = core.server
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with server._mutex:
            event = core.poll()
            if event is not None or not core.alive:
                return event
            fut = server._oplog_waiters.future()
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return None
        try:
            await asyncio.wait_for(fut, remaining)
        except asyncio.TimeoutError:
            with server._mutex:
                return core.poll()
