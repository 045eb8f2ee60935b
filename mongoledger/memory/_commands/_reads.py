"""Reads and cursors: ``find``, ``aggregate`` (a ``$changeStream`` is a tailable await
cursor), ``getMore``, ``killCursors``, ``count``, ``distinct``; the server-side cursor table."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import bson
from bson.int64 import Int64

from mongoledger.memory._bson import Document
from mongoledger.memory._changestream import StreamCore
from mongoledger.memory._engine import Op
from mongoledger.memory._errors import operation_failure
from mongoledger.memory._ops import Call
from mongoledger.memory._session import SessionState

from . import _engine_api as engine
from ._common import (
    _BATCH_BYTES,
    EngineStep,
    Handler,
    Next,
    Part,
    WaitStep,
    _bad_value,
    _batch_size,
    _collection_name,
    _doc_option,
    _int_option,
    _sort_option,
    _type_mismatch,
)

if TYPE_CHECKING:
    from . import Commands


DEFAULT_BATCH = 101


CURSOR_IDLE_SECONDS = 600  # the server's cursorTimeoutMillis


AWAIT_DEFAULT_MS = 1000  # a tailable await cursor's getMore wait without maxTimeMS


_STREAM_OPTIONS = frozenset(
    {
        "fullDocument",
        "fullDocumentBeforeChange",
        "resumeAfter",
        "startAfter",
        "startAtOperationTime",
        "allChangesForCluster",
        "showExpandedEvents",
        "allowToRunOnConfigDB",
        "allowToRunOnSystemNS",
        "showSystemEvents",
        "showRawUpdateDescription",
    }
)


@dataclass
class _Cursor:
    """A server-side cursor: the rest of a result, or a change stream."""

    id: int
    ns: str
    docs: Iterator[Document] | None
    core: StreamCore | None = None
    lsid: Any = None
    last_used: float = field(default_factory=time.monotonic)


def _take(docs: Iterator[Document], count: int | None) -> list[Document]:
    """The next batch: ``count`` documents (None: all), stopping once it reaches 16 MiB."""
    out: list[Document] = []
    size = 0
    for found in docs if count is None else itertools.islice(docs, count):
        doc = found
        try:
            raw = bson.encode(doc)
        except OverflowError:
            doc = _widened(found)
            raw = bson.encode(doc)
        out.append(doc)
        size += len(raw)
        if size >= _BATCH_BYTES:
            break
    return out


_INT64 = range(-(2**63), 2**63)


def _widened(value: Any) -> Any:
    """``value`` with integers past int64 as doubles, as a server's ``$sum`` (or ``$add``)
    answers when a 64-bit result would overflow; only an aggregation computes such values."""
    if type(value) is int and value not in _INT64:
        return float(value)
    if isinstance(value, dict):
        return {k: _widened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_widened(v) for v in value]
    return value


def _cursor_collection(body: Mapping[str, Any], name: str) -> str:
    """The collection a cursor command names: a collection, or a pseudo-collection such as
    ``$cmd.aggregate`` (a database's change stream) or ``$cmd.listCollections``."""
    value = body.get(name)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _type_mismatch(f"BSON field '{name}' must be a collection name, not {value!r}")
    return value


def _exhausted(cursor: _Cursor) -> bool:
    """Whether the cursor has nothing left (peeks one document and puts it back)."""
    assert cursor.docs is not None
    peek = next(cursor.docs, None)
    if peek is None:
        return True
    cursor.docs = itertools.chain((peek,), cursor.docs)
    return False


class Reads(Part):
    """Reads and the server-side cursor table."""

    def __init__(self, commands: Commands) -> None:
        super().__init__(commands)
        self._cursors: dict[int, _Cursor] = {}

    def handlers(self) -> dict[str, Handler]:
        return {
            "find": self._find,
            "getMore": self._get_more,
            "killCursors": self._kill_cursors,
            "aggregate": self._aggregate,
            "count": self._count,
            "distinct": self._distinct,
        }

    def reap(self, now: float | None = None) -> float:
        """Close cursors idle past their timeout; the seconds until the next one would be."""
        now = time.monotonic() if now is None else now
        upcoming = [now + CURSOR_IDLE_SECONDS]
        with self._lock:
            for cursor_id, cursor in list(self._cursors.items()):
                if now - cursor.last_used > CURSOR_IDLE_SECONDS:
                    del self._cursors[cursor_id]
                else:
                    upcoming.append(cursor.last_used + CURSOR_IDLE_SECONDS)
        return max(min(upcoming) - now, 0.01)

    def _find(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "find")
        flt = _doc_option(body, "filter") or {}
        sort = _sort_option(body)
        projection = _doc_option(body, "projection")
        skip = _int_option(body, "skip")
        limit = _int_option(body, "limit")
        batch = _batch_size(body.get("batchSize"))
        if skip < 0:
            raise _bad_value(f"skip value must be non-negative, but received: {skip}")
        if limit < 0:
            raise _bad_value(f"limit value must be non-negative, but received: {limit}")
        single = bool(body.get("singleBatch"))
        call = self._ops(db, coll).find(flt, projection, sort, skip, limit)
        ns = f"{db}.{coll}"
        return EngineStep(
            call,
            session,
            lambda docs: self._first_batch(ns, docs, batch, single, session),
        )

    def _first_batch(
        self,
        ns: str,
        docs: list[Document],
        batch: int | None,
        single: bool,
        session: SessionState | None,
    ) -> Document:
        it = iter(docs)
        first = _take(it, DEFAULT_BATCH if batch is None or batch == 0 else batch)
        cursor_id = 0
        if not single and len(first) < len(docs):
            cursor_id = self._register(ns, it, None, session)
        return {"cursor": {"firstBatch": first, "id": Int64(cursor_id), "ns": ns}, "ok": 1.0}

    def _register(
        self, ns: str, docs: Iterator[Document] | None, core: StreamCore | None, session: Any
    ) -> int:
        with self._lock:
            while True:
                cursor_id = int.from_bytes(os.urandom(8), "little") & 0x7FFF_FFFF_FFFF_FFFF
                if cursor_id and cursor_id not in self._cursors:
                    break
            lsid = None if session is None else session.session_id.get("id")
            self._cursors[cursor_id] = _Cursor(cursor_id, ns, docs, core, lsid)
            return cursor_id

    def _get_more(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        cursor_id = body.get("getMore")
        if not isinstance(cursor_id, int) or isinstance(cursor_id, bool):
            raise _type_mismatch(f"Field 'getMore' must be of type long in: {dict(body)!r}")
        coll = _cursor_collection(body, "collection")
        batch = _batch_size(body.get("batchSize"))
        ns = f"{db}.{coll}"
        with self._lock:
            cursor = self._cursors.get(int(cursor_id))
            if cursor is None:
                raise operation_failure(43, "CursorNotFound", f"cursor id {cursor_id} not found")
            if cursor.ns != ns:
                raise operation_failure(
                    13,
                    "Unauthorized",
                    f"Requested getMore on namespace '{ns}', but cursor belongs to a different "
                    f"namespace {cursor.ns}",
                )
            cursor.last_used = time.monotonic()
        if cursor.core is not None:
            max_time = _int_option(body, "maxTimeMS", AWAIT_DEFAULT_MS)
            return self._stream_batch(cursor, batch, max_time / 1000, "nextBatch")
        assert cursor.docs is not None
        docs = _take(cursor.docs, batch if batch else None)
        exhausted = batch is None or batch == 0 or _exhausted(cursor)
        if exhausted:
            self._forget(cursor.id)
        return {
            "cursor": {
                "nextBatch": docs,
                "id": Int64(0 if exhausted else cursor.id),
                "ns": ns,
            },
            "ok": 1.0,
        }

    def _forget(self, cursor_id: int) -> None:
        with self._lock:
            self._cursors.pop(cursor_id, None)

    def _kill_cursors(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        coll = _cursor_collection(body, "killCursors")
        ids = body.get("cursors")
        if not isinstance(ids, list):
            raise _type_mismatch("killCursors needs an array 'cursors'")
        killed, missing = [], []
        ns = f"{db}.{coll}"
        with self._lock:
            for cursor_id in ids:
                cursor = self._cursors.get(int(cursor_id))
                if cursor is not None and cursor.ns == ns:
                    del self._cursors[int(cursor_id)]
                    killed.append(Int64(cursor_id))
                else:
                    missing.append(Int64(cursor_id))
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": missing,
            "cursorsAlive": [],
            "cursorsUnknown": [],
            "ok": 1.0,
        }

    def _aggregate(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        target = body["aggregate"]
        pipeline = body.get("pipeline")
        if not isinstance(pipeline, list):
            raise _type_mismatch("'pipeline' option must be specified as an array")
        cursor_opts = body.get("cursor")
        if body.get("explain"):
            return self.commands.explain._explain_pipeline(db, target, pipeline)
        if not isinstance(cursor_opts, Mapping):
            raise operation_failure(
                9,
                "FailedToParse",
                "The 'cursor' option is required, except for aggregate with the explain argument",
            )
        batch = _batch_size(cursor_opts.get("batchSize"))
        first = pipeline[0] if pipeline else None
        if isinstance(first, Mapping) and "$changeStream" in first:
            return self._change_stream(
                db, target, first["$changeStream"], pipeline[1:], batch, session, body
            )
        if target == 1:
            raise _bad_value(
                "aggregate: 1 (a collectionless aggregation) is not implemented by the "
                "mongoledger memory engine"
            )
        coll = _collection_name(body, "aggregate")
        for stage in pipeline:
            if isinstance(stage, Mapping) and ("$out" in stage or "$merge" in stage):
                raise _bad_value(
                    "$out and $merge are not implemented by the mongoledger memory engine"
                )
        call = self._ops(db, coll).aggregate(pipeline)
        ns = f"{db}.{coll}"
        return EngineStep(
            call, session, lambda docs: self._first_batch(ns, docs, batch, False, session)
        )

    def _change_stream(
        self,
        db: str,
        target: Any,
        spec: Any,
        stages: list[Any],
        batch: int | None,
        session: SessionState | None,
        body: Mapping[str, Any],
    ) -> Next:
        if not isinstance(spec, Mapping):
            raise _type_mismatch("$changeStream takes an object")
        everything = bool(spec.get("allChangesForCluster"))
        if everything and (db != "admin" or target != 1):
            raise _bad_value(
                "allChangesForCluster may only be set to true on the 'admin' database with "
                "{aggregate: 1}"
            )
        if target == 1:
            coll_filter = None
            db_filter = None if everything else db
            ns_coll = "$cmd.aggregate"
        else:
            coll_filter = _collection_name(body, "aggregate")
            db_filter = db
            ns_coll = coll_filter
        unknown = set(spec) - _STREAM_OPTIONS
        if unknown:
            raise operation_failure(
                40415,
                "Location40415",
                f"BSON field '$changeStream.{sorted(unknown)[0]}' is an unknown field.",
            )
        for name in ("fullDocumentBeforeChange",):
            if spec.get(name) not in (None, "off"):
                raise _bad_value(
                    f"$changeStream {name}={spec[name]!r} is not implemented by the mongoledger "
                    "memory engine"
                )
        ns = f"{db}.{ns_coll}"

        def fn(_op: Op) -> StreamCore:
            return StreamCore(
                self.server,
                db_filter,
                coll_filter,
                stages,
                spec.get("fullDocument"),
                spec.get("resumeAfter"),
                spec.get("startAfter"),
                spec.get("startAtOperationTime"),
                None,
            )

        call = Call("aggregate", fn, f"aggregate on {ns}", read=True)

        def opened(core: StreamCore) -> Next:
            cursor_id = self._register(ns, None, core, session)
            with self._lock:
                cursor = self._cursors[cursor_id]
            return self._stream_batch(cursor, batch, 0.0, "firstBatch")

        return EngineStep(call, session, opened)

    def _stream_batch(self, cursor: _Cursor, batch: int | None, wait: float, key: str) -> Next:
        """Up to ``batch`` events: what is there now, else the first to come within ``wait``."""
        core = cursor.core
        assert core is not None
        limit = batch if batch else DEFAULT_BATCH
        events: list[Document] = []

        def collect() -> None:
            events.extend(engine.poll_events(self.server, core, limit - len(events)))

        def reply() -> Document:
            alive = core.alive
            if not alive:
                self._forget(cursor.id)
            return {
                "cursor": {
                    key: events,
                    "id": Int64(cursor.id if alive else 0),
                    "ns": cursor.ns,
                    "postBatchResumeToken": core.resume_token,
                },
                "ok": 1.0,
            }

        collect()
        if events or wait <= 0 or not core.alive:
            return reply()

        def woke(event: Document | None) -> Document:
            if event is not None:
                events.append(event)
                collect()
            with self._lock:
                cursor.last_used = time.monotonic()
            return reply()

        return WaitStep(core, wait, woke)

    def _count(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "count")
        flt = _doc_option(body, "query") or {}
        kwargs: Document = {}
        skip = _int_option(body, "skip")
        limit = abs(_int_option(body, "limit"))
        if skip < 0:
            raise _bad_value(f"skip value is negative in count query: {skip}")
        if skip:
            kwargs["skip"] = skip
        if limit:
            kwargs["limit"] = limit
        call = self._ops(db, coll).count_documents(flt, **kwargs)
        call.cmd = "count"
        return EngineStep(call, session, lambda n: {"n": int(n), "ok": 1.0})

    def _distinct(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "distinct")
        key = body.get("key")
        if not isinstance(key, str):
            raise _type_mismatch("BSON field 'distinct.key' is missing or not a string")
        flt = _doc_option(body, "query")
        call = self._ops(db, coll).distinct(key, flt)
        return EngineStep(call, session, lambda values: {"values": values, "ok": 1.0})
