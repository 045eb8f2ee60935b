"""Change-stream consumers: ``AsyncLedgerStream`` (``watch``) and the checkpointed ``listen``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pymongo.errors import OperationFailure, PyMongoError

from mongoledger._async._io import (
    AwaitableRefused,
    call_back,
    is_plain_mongomock,
    maybe_await,
    sleep,
    to_list,
)
from mongoledger._core import clock, schema
from mongoledger._core.config import LedgerConfig
from mongoledger._core.events import (
    UNSUPPORTED_CODES,
    Grouper,
    change_stream_pipeline,
    checkpoint_id,
    translate_error,
)
from mongoledger.errors import ChangeStreamError, ChangeStreamsUnsupported
from mongoledger.models import LedgerEvent

__all__ = [
    "AsyncLedgerStream",
    "Checkpoint",
    "handle",
    "load_checkpoint",
    "open_stream",
    "save_checkpoint",
]

_IS_SYNC = False
log = logging.getLogger("mongoledger.listen")


async def open_stream(
    cfg: LedgerConfig,
    database: Any,
    transactions: Any,
    *,
    account_ids: Sequence[Any] | None,
    kinds: Sequence[str] | None,
    resume_after: Mapping[str, Any] | None,
    start_after: Mapping[str, Any] | None,
    start_at_operation_time: Any,
    max_await_time_ms: int,
) -> AsyncLedgerStream:
    pipeline = change_stream_pipeline(cfg, account_ids=account_ids, kinds=kinds)
    # updateLookup: a hold's closing update carries the hold (a closed hold never changes).
    options: dict[str, Any] = {
        "max_await_time_ms": max_await_time_ms,
        "full_document": "updateLookup",
    }
    if resume_after is not None:
        options["resume_after"] = resume_after
    if start_after is not None:
        options["start_after"] = start_after
    if start_at_operation_time is not None:
        options["start_at_operation_time"] = start_at_operation_time
    if is_plain_mongomock(transactions):
        raise ChangeStreamsUnsupported(
            "this database has no change streams (plain mongomock); use a replica set, a "
            "sharded cluster or mongoledger.memory"
        )
    try:
        raw = await maybe_await(database.watch(pipeline, **options))
        # Motor opens its change stream lazily, at the first next() or on entering it: open it
        # now, so that every operation committed after watch() returns is seen.
        if hasattr(raw, "__aenter__"):
            raw = await raw.__aenter__()
    except OperationFailure as exc:
        _raise_translated(exc)
    return AsyncLedgerStream(
        cfg, transactions, raw, fetch_missing=account_ids is not None, start_token=resume_after
    )


def _raise_translated(exc: PyMongoError) -> NoReturn:
    translated = _translate(exc)
    if translated is exc:
        raise exc
    raise translated from exc


def _translate(exc: PyMongoError) -> Exception:
    translated = translate_error(exc)
    if translated is not None:
        return translated
    if getattr(exc, "code", None) in UNSUPPORTED_CODES:
        return ChangeStreamsUnsupported(
            f"this deployment has no change streams ({exc}): they need a replica set or a "
            "sharded cluster; a standalone mongod can be started as a one-member replica set"
        )
    return exc


class AsyncLedgerStream:
    """An open change stream of committed ledger operations: one ``LedgerEvent`` each.

    Iterate it (``async for event in stream``), poll it (``await stream.try_next()``), and
    close it (``await stream.close()`` or ``async with``). ``resume_token`` is where a new
    stream must resume to lose nothing.
    """

    def __init__(
        self,
        cfg: LedgerConfig,
        transactions: Any,
        raw: Any,
        *,
        fetch_missing: bool,
        start_token: Mapping[str, Any] | None = None,
    ) -> None:
        self._cfg = cfg
        self._transactions = transactions
        self._raw = raw
        # A token for "before the first event" even if no event arrives: the one resumed
        # from, else the stream's own opening (post-batch) token.
        self._grouper = Grouper(cfg, start_token=start_token or raw.resume_token)
        self._fetch_missing = fetch_missing
        self._closed = False

    @property
    def resume_token(self) -> dict[str, Any] | None:
        """Resume here to see every operation not yet returned (at least once)."""
        token = self._grouper.safe_token(self._raw.resume_token)
        return None if token is None else dict(token)

    @property
    def alive(self) -> bool:
        return not self._closed and bool(getattr(self._raw, "alive", True))

    async def try_next(self) -> LedgerEvent | None:
        """The next committed operation, or None when none is available right now."""
        while True:
            if self._closed:
                return None
            if not getattr(self._raw, "alive", True):  # the driver closed it (invalidated)
                self._closed = True
                return None
            try:
                change = await self._raw.try_next()
            except OperationFailure as exc:
                _raise_translated(exc)
            if change is None:
                return await self._complete_from_collection()
            done = self._grouper.feed(change)
            if done is not None:
                _, partial = done
                return self._grouper.event(partial, self.resume_token)
            if self._fetch_missing:
                event = await self._complete_from_collection()
                if event is not None:
                    return event

    async def _complete_from_collection(self) -> LedgerEvent | None:
        """Read the legs an account filter hid, once the operation has committed."""
        if not self._fetch_missing:
            return None
        oldest = self._grouper.oldest_incomplete()
        if oldest is None:
            return None
        operation_id, _ = oldest
        docs = await to_list(
            self._transactions.find({schema.OPERATION_ID: operation_id}).sort(schema.LEG, 1)
        )
        if not docs or len(docs) < int(docs[0].get(schema.LEGS, 1)):
            return None  # a non-transactional operation still being written
        finished = self._grouper.complete_with(operation_id, docs)
        return self._grouper.event(finished, self.resume_token)

    async def next(self) -> LedgerEvent:
        """Wait for the next committed operation."""
        while True:
            if self._closed:
                raise StopAsyncIteration
            event = await self.try_next()
            if event is not None:
                return event

    def __aiter__(self) -> AsyncLedgerStream:
        return self

    async def __anext__(self) -> LedgerEvent:
        return await self.next()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await maybe_await(self._raw.close())

    async def __aenter__(self) -> AsyncLedgerStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass(frozen=True)
class Checkpoint:
    """Where a ``listen`` consumer resumes: a resume token, or (when the stream opened on
    events and so had none yet) the operation time it started at."""

    resume_token: dict[str, Any] | None = None
    start_at_operation_time: Any = None


async def load_checkpoint(
    store: Any, cfg: LedgerConfig, name: str, transactions: Any
) -> Checkpoint | None:
    """The position stored under ``name`` for this ledger, if any.

    A checkpoint written before checkpoints were scoped to their ledger (``_id`` is the bare
    name) is adopted unless it names an operation of another ledger.
    """
    if not isinstance(name, str) or not name:
        raise ChangeStreamError(f"checkpoint {name!r} must be a non-empty name")
    scoped = checkpoint_id(cfg, name)
    saved = await to_list(store.find({"_id": {"$in": [scoped, name]}}))
    doc = next((d for d in saved if d["_id"] == scoped), None)
    if doc is None:
        doc = next((d for d in saved if d["_id"] == name), None)
        if doc is not None and doc.get("operation_id") is not None:
            mine = await transactions.find_one(
                {schema.OPERATION_ID: doc["operation_id"]}, {"_id": 1}
            )
            doc = doc if mine is not None else None
    if doc is None:
        return None
    token = doc.get("resume_token")
    if token:
        return Checkpoint(resume_token=dict(token))
    if doc.get("start_at_operation_time") is not None:
        return Checkpoint(start_at_operation_time=doc["start_at_operation_time"])
    return None


async def handle(
    handler: Callable[[LedgerEvent], Any], event: LedgerEvent, *, retries: int, backoff: float
) -> None:
    """Run the handler; retry with exponential backoff, then stop with its error."""
    attempt = 0
    while True:
        try:
            await call_back(handler, event, "handler")
            return
        except AwaitableRefused:
            raise  # a mistake, not a failure: retrying cannot help
        except Exception as exc:
            if attempt >= retries:
                log.error(
                    "handler failed on operation %s after %d attempts; stopping "
                    "(the checkpoint stays before it, so a restart delivers it again)",
                    event.operation_id,
                    attempt + 1,
                )
                raise
            delay = backoff * 2**attempt
            log.warning(
                "handler failed on operation %s (%r); retry %d/%d in %.2fs",
                event.operation_id,
                exc,
                attempt + 1,
                retries,
                delay,
            )
            attempt += 1
            await sleep(delay)


async def save_checkpoint(
    store: Any,
    cfg: LedgerConfig,
    name: str,
    token: Mapping[str, Any] | None,
    operation_id: Any,
    *,
    start_at_operation_time: Any = None,
) -> None:
    """Store a resume token (or, before a stream has one, its start time) under ``name``."""
    update: dict[str, Any] = {"updated_at": clock.utcnow()}
    if token:
        update["resume_token"] = dict(token)
    elif start_at_operation_time is not None:
        update["start_at_operation_time"] = start_at_operation_time
    else:
        return  # never store a position a restart could not resume from
    if operation_id is not None:
        update["operation_id"] = operation_id
    await store.update_one({"_id": checkpoint_id(cfg, name)}, {"$set": update}, upsert=True)
