"""The engine: runs each operation against the view its transaction may see.

Both client flavours (sync and async) and the command dispatcher drive one ``Engine`` (the
public ``MemoryServer``, ``_server``, puts the dispatcher and the wire endpoint in front of
it). An operation runs whole under the engine's mutex (it is in-memory and short); nothing is
held between operations, so transactions of different threads and tasks overlap as on a
replica set. An operation reads through a ``View`` (``_transactions``): while transactions
overlap, it resolves per document the version the operation must see (not another
transaction's uncommitted write, not a commit after its snapshot); a write is checked (and
logged) before it happens (``_before_write``). An operation outside a transaction that must
wait for a transaction to end does so outside the mutex (a thread blocks on a condition, a
task awaits a future), and then runs again.

``_commit_writes`` is the one place where a write set becomes committed and visible: a
transaction's at ``commitTransaction``, a single write's at the end of its operation. The
embedded store (``_store``, ``MemoryServer(path=...)``) hooks in there: it journals each
commit's entries in commit order (``journal.published``), and an operation that committed
waits for its record to be on disk after it left the mutex (``journal.wait``), so concurrent
committers share fsyncs.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import bson
from bson.int64 import Int64
from bson.timestamp import Timestamp
from pymongo.errors import AutoReconnect, OperationFailure, PyMongoError, WriteError

from ._bson import CODEC, MAX_BSON_SIZE, Document, private_copy, too_large
from ._errors import (
    CODE_NAMES,
    StrictModeError,
    no_such_transaction,
    operation_failure,
    rollback_marked,
    write_conflict,
)
from ._oplog import Entry, Oplog, Waiters, change_entry
from ._options import raise_write_concern_error, write_concern_error
from ._session import SessionState, current_ctx, describe_ctx, is_retryable
from ._storage import CollectionStore, MockCollection, ServerStore, WorkingCopy, mongomock, put
from ._transactions import Blocked, Ctx, DocKey, Ns, Transactions, Txn, View

T = TypeVar("T")


class Journal(Protocol):
    """What the engine asks of a journal (the embedded store, ``_store.Store``): the engine
    calls it at these points only, and knows nothing else of it."""

    def check(self) -> None:
        """Refuse the operation about to run (the store is closed, or its journal failed)."""

    def published(self, entries: list[Entry]) -> None:
        """Journal one commit's entries (called under the engine's mutex, in commit order)."""

    def wait(self) -> None:
        """Return once what this thread committed is on disk."""

    async def async_wait(self) -> None:
        """Return once what this task committed is on disk."""


# The engine's own pause, taken once: a test that replaces ``time.sleep`` (to skip an
# application's waits) does not reach into the engine's scheduling.
_pause = time.sleep
# How long after another thread's command (or an open session beside one's own) commands keep
# pausing for the others: longer than the interpreter's switch interval (5 ms), so threads
# that take turns on the engine keep interleaving.
_OTHERS_WINDOW = 0.1

__all__ = ["Document", "Engine", "Op", "StrictModeError"]


class Op:
    """The operation now running: what it may see, and what it wrote."""

    __slots__ = (
        "ctx",
        "ddl",
        "encoded",
        "failed",
        "inside",
        "kind",
        "kinds",
        "log",
        "new_in_txn",
        "per_collection",
        "touched",
        "txn",
    )

    def __init__(self, txn: Txn | None, kind: str, ctx: Ctx) -> None:
        # Also how each statement of a multi-statement command starts afresh
        # (``Engine._statement_done``, which keeps ``failed`` and a dict's ``kinds``).
        self.txn = txn
        self.kind = kind
        self.ctx = ctx
        # The first version of each document it wrote (for the statement's rollback).
        self.log: dict[DocKey, Document | None] = {}
        self.per_collection: dict[Ns, int] = {}
        self.new_in_txn: set[DocKey] = set()
        self.encoded: dict[DocKey, bytes] = {}  # BSON of inserted documents
        # Per document updated in place: the top-level fields its update can change (None:
        # any).
        self.touched: dict[DocKey, frozenset[str] | None] = {}
        self.ddl: list[Entry] = []  # collection events, in statement order
        # The kind of each write, for an operation whose writes are of several kinds (one
        # that sets it to a dict: a client bulk write).
        self.kinds: dict[DocKey, str] | None = None
        self.failed = False  # a statement reported write errors: its transaction aborts
        # Per document updated by dotted paths: the paths they reach inside of.
        self.inside: dict[DocKey, set[str]] | None = None


class Engine:
    """One in-process MongoDB "deployment": data, sessions, oplog, fail points, counters
    (``MemoryServer`` adds the command dispatcher and the wire endpoint in front of it).

    Clients created with ``server=`` share it (and therefore their data, transactions and
    change streams). ``oplog_size`` caps the number of change events kept for resuming.
    ``transaction_lifetime_limit`` (seconds, the server's ``transactionLifetimeLimitSeconds``)
    bounds how long a write outside a transaction waits for a transaction holding its
    document: a transaction older than that is aborted by the server, as MongoDB does.
    """

    # The embedded store (``MemoryServer(path=...)``): journals every commit; None keeps
    # nothing on disk.
    journal: Journal | None = None

    def __init__(
        self, *, oplog_size: int | None = None, transaction_lifetime_limit: float = 60.0
    ) -> None:
        self._mutex = threading.RLock()
        self.oplog = Oplog(self._mutex, oplog_size)
        self._oplog_waiters = self.oplog.waiters
        self._ended = Waiters(self._mutex)  # transactions ending: wakes blocked writers
        self.transactions = Transactions(lambda ns: self._store[ns[0]][ns[1]]._documents)
        self.transaction_lifetime_limit = transaction_lifetime_limit
        self._store = ServerStore(self)
        self._mock: Any = mongomock.MongoClient(_store=self._store)
        self._mock_collections: dict[Ns, MockCollection] = {}
        self._open_sessions: set[SessionState] = set()
        self._last_thread = 0  # the thread of the latest command (see _others_use_me)
        self._others_seen = -_OTHERS_WINDOW  # when another engine thread was last seen
        self._op: Op | None = None
        self._dirty_stores: set[CollectionStore] = set()
        self.server_id = os.urandom(8).hex().upper()
        # Fault injection and statistics.
        self._fail_point: Document | None = None
        self._fail_times: int | None = None
        self.command_counts: collections.Counter[str] = collections.Counter()
        self.last_abort_restored = 0
        self.write_conflicts = 0  # WriteConflict errors answered so far

    # -- statistics ---------------------------------------------------------------------

    def reset_command_counts(self) -> None:
        """Forget every command counted so far."""
        with self._mutex:
            self.command_counts.clear()

    # -- fail points --------------------------------------------------------------------

    def configure_fail_point(self, command: Mapping[str, Any]) -> Document:
        """Apply ``{"configureFailPoint": "failCommand", "mode": ..., "data": {...}}``."""
        name = command.get("configureFailPoint")
        if name != "failCommand":
            raise operation_failure(
                2, "BadValue", f"memory engine: unsupported fail point {name!r} (failCommand only)"
            )
        mode = command.get("mode")
        with self._mutex:
            if mode == "off":
                self._fail_point, self._fail_times = None, None
            elif mode == "alwaysOn":
                self._fail_point, self._fail_times = dict(command.get("data") or {}), None
            elif isinstance(mode, Mapping) and "times" in mode:
                self._fail_point = dict(command.get("data") or {})
                self._fail_times = int(mode["times"])
            else:
                raise operation_failure(2, "BadValue", f"invalid fail point mode: {mode!r}")
        return {"count": 0, "ok": 1.0}

    def _check_fail_point(self, cmd: str, in_txn: bool) -> None:
        fp = self._fail_point
        if fp is None or cmd not in fp.get("failCommands", ()):
            return
        if self._fail_times is not None:
            self._fail_times -= 1
            if self._fail_times <= 0:
                self._fail_point, self._fail_times = None, None
        labels = list(fp.get("errorLabels", ()))
        if fp.get("closeConnection"):
            exc: PyMongoError = AutoReconnect(
                f"memory engine: connection closed by failCommand fail point ({cmd})"
            )
            if in_txn and cmd not in ("commitTransaction", "abortTransaction"):
                exc._add_error_label("TransientTransactionError")
            for label in labels:
                exc._add_error_label(label)
            raise exc
        code = fp.get("errorCode")
        if code is not None:
            msg = f"Failing command {cmd!r} via 'failCommand' failpoint"
            raise operation_failure(int(code), CODE_NAMES.get(int(code), ""), msg, labels)

    # -- sessions and strict mode -----------------------------------------------------------

    def _session_opened(self, session: SessionState) -> None:
        with self._mutex:
            self._open_sessions.add(session)

    def _session_closed(self, session: SessionState) -> None:
        with self._mutex:
            self._open_sessions.discard(session)

    def _check_strict(
        self, strict: bool, session: SessionState | None, ctx: Ctx, what: str
    ) -> None:
        if not strict or session is not None:
            return
        with self._mutex:
            for other in self._open_sessions:
                if other.txn_ctx == ctx and other.in_transaction:
                    raise StrictModeError(
                        f"{what} ran without session= while a transaction is open on this "
                        f"{describe_ctx(ctx)}; pass session= so the operation joins the "
                        "transaction (or use strict=False to read committed data outside it)"
                    )

    # -- running operations ---------------------------------------------------------------

    def run_sync(
        self,
        cmd: str,
        session: SessionState | None,
        fn: Callable[[Op], T],
        *,
        strict: bool,
        what: str,
        kind: str = "",
        retryable: bool = True,
        read: bool = False,
    ) -> T:
        """Run ``fn`` as command ``cmd``; a thread first lets other threads run (as a
        driver's round trip does) and blocks when it must wait."""
        ctx = current_ctx()
        self._check_strict(strict, session, ctx, what)
        txn = session.txn_for_op(read=read) if session is not None else None
        attempts = 2 if retryable and txn is None else 1
        if self._others_use_me(ctx[0]):
            _pause(0)  # let the other threads run, as a driver's round trip does
        try:
            for attempt in range(attempts):
                name = cmd
                try:
                    while True:
                        try:
                            return self._execute(name, session, txn, fn, kind, ctx)
                        except Blocked as blocked:
                            name = ""  # the same command, run again once the owner ended
                            self._wait_sync(blocked.txn)
                except PyMongoError as exc:
                    if attempt + 1 < attempts and is_retryable(exc):
                        continue
                    raise
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if self.journal is not None:  # what it committed is on disk before it returns
                self.journal.wait()

    def _others_use_me(self, thread: int) -> bool:
        """Whether other threads are using the engine: a command of another thread, or
        sessions open beside this one's, within the last ``_OTHERS_WINDOW`` seconds. Only
        then does a command pause to let them run. The pause is a real sleep (``sleep(0)``:
        about 80 us on our machines, more than a command), which threads that never call the
        engine (a driver's monitors, a web server's) must not cost a lone caller;
        ``os.sched_yield`` would be cheap but rarely hands the GIL over, and engine threads
        would stop interleaving as round trips make them."""
        if threading.active_count() == 1:
            return False
        now = time.monotonic()
        if thread != self._last_thread or len(self._open_sessions) > 1:
            self._others_seen = now
        self._last_thread = thread
        return now - self._others_seen < _OTHERS_WINDOW

    async def run_async(
        self,
        cmd: str,
        session: SessionState | None,
        fn: Callable[[Op], T],
        *,
        strict: bool,
        what: str,
        kind: str = "",
        retryable: bool = True,
        read: bool = False,
    ) -> T:
        """Run ``fn`` as command ``cmd``; a task yields to the loop first (as a driver's
        round trip does) and awaits, never blocks, when it must wait."""
        ctx = current_ctx()
        self._check_strict(strict, session, ctx, what)
        txn = session.txn_for_op(read=read) if session is not None else None
        attempts = 2 if retryable and txn is None else 1
        await asyncio.sleep(0)
        try:
            for attempt in range(attempts):
                name = cmd
                try:
                    while True:
                        try:
                            return self._execute(name, session, txn, fn, kind, ctx)
                        except Blocked as blocked:
                            name = ""
                            await self._wait_async(blocked.txn)
                except PyMongoError as exc:
                    if attempt + 1 < attempts and is_retryable(exc):
                        continue
                    raise
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if self.journal is not None:  # awaited: the loop runs the other committers
                await self.journal.async_wait()

    def _wait_sync(self, txn: Txn) -> None:
        """Block until ``txn`` ends (aborting it once it outlives its lifetime)."""
        cond = self._ended.cond
        with cond:
            while txn in self.transactions.open:
                remaining = txn.started + self.transaction_lifetime_limit - time.monotonic()
                if remaining <= 0:
                    self._expire(txn)
                    return
                cond.wait(remaining)

    async def _wait_async(self, txn: Txn) -> None:
        """``_wait_sync`` for a task: awaits a future, so the loop keeps running."""
        while True:
            with self._mutex:
                if txn not in self.transactions.open:
                    return
                remaining = txn.started + self.transaction_lifetime_limit - time.monotonic()
                if remaining <= 0:
                    self._expire(txn)
                    return
                fut = self._ended.future()
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                continue

    def _expire(self, txn: Txn) -> None:
        """Abort ``txn`` as the server does once it outlived ``transactionLifetimeLimit``:
        its next statement or commit gets NoSuchTransaction (251)."""
        with self._mutex:
            if txn in self.transactions.open:
                self._abort_for_good(txn)

    def _execute(
        self,
        cmd: str,
        session: SessionState | None,
        txn: Txn | None,
        fn: Callable[[Op], T],
        kind: str,
        ctx: Ctx,
    ) -> T:
        with self._mutex:
            if self.journal is not None:
                self.journal.check()  # closed, or its journal failed: refuse
            if cmd:
                self.command_counts[cmd] += 1
                self._check_fail_point(cmd, txn is not None)
            if txn is not None:
                if txn.aborted:
                    raise no_such_transaction(txn.number)
                if txn.snapshot < 0:
                    self._begin(txn)
            op = Op(txn, kind, ctx)
            transactions = self.transactions
            if not transactions.shared and len(transactions.open) > (txn is not None):
                transactions.share()  # beside another's transaction (txn is open: it began)
            self._op = op
            try:
                try:
                    result = fn(op)
                except BaseException as exc:
                    self._failed(op, exc)
                    raise
                if op.failed and txn is not None:
                    # Write errors in a transaction abort it, as on a server; the reply
                    # still reports them.
                    self._abort_failed(op, txn)
                elif op.log or op.ddl:
                    try:
                        self._finish_writes(op)
                    except BaseException as exc:
                        self._failed(op, exc)
                        raise
            finally:
                self._op = None
                self._reindex_dirty()
            if session is not None:
                session.operation_time = Timestamp(*self.oplog.last_time)
            return result

    def _begin(self, txn: Txn) -> None:
        """Take a transaction's snapshot at its first operation (and abort transactions that
        outlived their lifetime, as the server's periodic reaper does)."""
        transactions = self.transactions
        if transactions.open:
            for old in transactions.expired(self.transaction_lifetime_limit):
                self._expire(old)
        transactions.begin(txn)

    def _failed(self, op: Op, exc: BaseException) -> None:
        """Clean up after an operation that raised ``exc``: undo its partial writes where
        the server would (an error the engine raised mid-write, anything inside a
        transaction, which the failure aborts); keep and commit them otherwise (a multi-
        document write outside a transaction is not atomic on a server either)."""
        txn = op.txn
        if isinstance(exc, OperationFailure) and exc.code == 112:
            self.write_conflicts += 1
        marked = not isinstance(exc, PyMongoError) or getattr(exc, "_memory_rollback", False)
        if txn is not None and isinstance(exc, OperationFailure):
            self._abort_failed(op, txn)
            return
        if marked or txn is not None:
            self._rollback_op(op)
            return
        if op.log or op.ddl:
            try:
                self._finish_writes(op)
            except BaseException:
                self._rollback_op(op)

    def _abort_failed(self, op: Op, txn: Txn) -> None:
        """A failed statement aborts the whole transaction on the server: later statements
        and the commit get NoSuchTransaction (251)."""
        self._rollback_op(op)
        self._abort_for_good(txn)

    def _abort_for_good(self, txn: Txn) -> None:
        """Abort ``txn`` as the server does on its own (a failed statement, the lifetime
        limit): the session keeps it, aborted, so its next statement or commit gets
        NoSuchTransaction (251) instead of running outside it."""
        self._abort(txn, count=False)
        txn.aborted = True
        txn.session.txn = txn

    def _reindex_dirty(self) -> None:
        """Re-index the documents the operation changed in place (and store a plain dict for
        a working copy a write left behind when it failed part-way without a rollback)."""
        while self._dirty_stores:
            docs = self._dirty_stores.pop()._documents
            for key in list(docs.dirty):
                doc = docs.get(key)
                if type(doc) is WorkingCopy:
                    docs.swap(key, dict(doc))
                docs.reindex(key)

    def store_for(self, db: str, coll: str) -> CollectionStore:
        return self._store[db][coll]

    def mock_collection(self, db: str, coll: str) -> MockCollection:
        key = (db, coll)
        mc = self._mock_collections.get(key)
        if mc is None:
            mc = self._mock_collections[key] = MockCollection(self, self._mock[db], coll)
        return mc

    # -- hooks the storage calls ------------------------------------------------------------

    def _before_write(
        self, store: CollectionStore, key: Any, pre: Document | None, *, snapshot: bool = False
    ) -> None:
        """Check that the running operation may write ``key``, and record ``pre`` (its
        version before; copied when ``snapshot``: it is about to change in place)."""
        op = self._op
        if op is None:
            return
        dk: DocKey = (store.db_name, store.name, key)
        if dk in op.log:
            return
        transactions = self.transactions
        txn = op.txn
        docs = store._documents
        if docs.overlay or transactions.created:
            transactions.check_write(txn, store.ns, docs, key, op.ctx)
        if snapshot and pre is not None:
            pre = private_copy(pre)
        op.log[dk] = pre
        if op.kinds is not None:
            op.kinds[dk] = op.kind
        ns = store.ns
        op.per_collection[ns] = op.per_collection.get(ns, 0) + 1
        if txn is not None:
            log = txn.log
            if dk not in log:  # its version before the transaction's first write
                log[dk] = pre
                op.new_in_txn.add(dk)
                if transactions.shared:
                    transactions.written(txn, docs, key, pre)

    def _view(self, store: CollectionStore) -> View | None:
        """What the running operation sees of ``store`` where it differs from the stored
        documents (None: it does not)."""
        op = self._op
        docs = store._documents
        if op is None or not docs.overlay:
            return None
        return View(docs, op.txn)

    def _check_write(self, store: CollectionStore, key: Any) -> None:
        """Raise the conflict (or the wait) writing ``key`` would meet, writing nothing."""
        op = self._op
        if op is not None:
            self.transactions.check_write(op.txn, store.ns, store._documents, key, op.ctx)

    def _collision(self, store: CollectionStore, key: Any) -> None:
        """A unique index entry of the running operation collides with a version of
        document ``key`` it does not see: wait for that version's owner, or conflict."""
        op = self._op
        assert op is not None
        overlay = store._documents.overlay.get(key)
        owner = None if overlay is None else overlay.owner
        if owner is not None and owner is not op.txn:
            raise self.transactions.conflict(owner, op.txn, op.ctx)
        raise write_conflict()

    def _created(self, store: CollectionStore) -> None:
        """``store`` was just created by the running operation (explicitly or implicitly)."""
        op = self._op
        if op is None:
            return
        if op.txn is not None:
            self.transactions.create(op.txn, store.ns)
        description = {"idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
        op.ddl.append(
            Entry("create", store.db_name, store.name, uuid=store.uuid, description=description)
        )

    # -- commits ------------------------------------------------------------------------

    def _rollback_op(self, op: Op) -> None:
        for (db, coll, key), pre in reversed(list(op.log.items())):
            put(self._store[db][coll]._documents, key, pre)
        txn = op.txn
        if txn is not None:
            for dk in op.new_in_txn:
                txn.log.pop(dk, None)
                self.transactions.unwritten(txn, self._store[dk[0]][dk[1]]._documents, dk[2])
        op.log.clear()
        op.per_collection.clear()
        op.ddl.clear()

    def _finish_writes(self, op: Op) -> None:
        """Validate what the operation wrote, store BSON copies of it, and turn it into
        oplog entries: a transaction's wait for its commit; a single write commits now."""
        entries: list[Entry] = list(op.ddl)
        for dk, pre in op.log.items():
            db, coll, key = dk
            kind = op.kind if op.kinds is None else op.kinds.get(dk, op.kind)
            store = self._store[db][coll]
            docs = store._documents
            post = docs.get(key)
            raw = op.encoded.get(dk) if pre is None else None
            if raw is not None:
                pass  # inserted as encoded: checked and already a private copy
            elif post is not None:
                try:
                    raw = bson.encode(post, codec_options=CODEC)
                except OverflowError as exc:
                    err: Exception = WriteError(
                        "Failed to apply $inc operations to current value for document "
                        f"{{_id: {post.get('_id')!r}}}: the result overflows a 64-bit integer",
                        2,
                        {"code": 2, "codeName": "BadValue"},
                    )
                    raise rollback_marked(err) from exc
                if len(raw) > MAX_BSON_SIZE:
                    if pre is None and kind not in ("update", "pipeline"):
                        err = too_large(len(raw))
                    else:
                        msg = f"Resulting document after update is larger than {MAX_BSON_SIZE}"
                        err = WriteError(msg, 17419, {"code": 17419, "errmsg": msg})
                    raise rollback_marked(err)
                post = bson.decode(raw, codec_options=CODEC)
                if pre is None:
                    docs[key] = post
                else:  # indexes on fields the update cannot reach keep their entries
                    docs.replace(key, post, op.touched.get(dk))
            images = bool((store.options.get("changeStreamPreAndPostImages") or {}).get("enabled"))
            inside = None if op.inside is None else op.inside.get(dk)
            entry = change_entry(
                kind,
                db,
                coll,
                pre,
                post,
                raw,
                images=images,
                uuid=store.uuid,
                inside=inside,
                touched=op.touched.get(dk),
            )
            if entry is not None:
                entries.append(entry)
        if op.txn is not None:
            op.txn.events.extend(entries)
        else:
            self._commit_writes(op.log, entries)
            op.log = {}  # committed: nothing of it is the operation's to undo any more
            op.ddl = []

    def _statement_done(self, op: Op) -> None:
        """End one statement of a multi-statement command (a bulk write's request): its
        writes get their own events (and, outside a transaction, their own commit)."""
        if op.log or op.ddl:
            self._finish_writes(op)
        failed, kinds = op.failed, op.kinds
        Op.__init__(op, op.txn, op.kind, op.ctx)  # the state a statement starts with
        op.failed = failed
        if kinds is not None:
            op.kinds = {}  # a client bulk write's statements: writes of their own kinds

    def _commit_writes(
        self,
        writes: dict[DocKey, Document | None],
        entries: list[Entry],
        txn: Txn | None = None,
    ) -> None:
        """Make ``writes`` (each document's previous version; its new one is in the store)
        committed and visible, and publish their change events under one cluster time.

        The one place every commit passes: a transaction's at ``commitTransaction``, a
        write's outside a transaction at the end of its operation."""
        self.transactions.commit(writes, txn)
        if txn is None:
            self.oplog.publish(entries)
        else:
            lsid = {
                "id": txn.session.session_id["id"],
                "uid": bson.Binary(hashlib.sha256(b"").digest(), 0),
            }
            self.oplog.publish(entries, lsid=lsid, txn_number=txn.number)
            self._ended.notify_all()
        if self.journal is not None and entries:
            # Under the mutex: journal records follow commit order. The committer waits for
            # its record after leaving the mutex (run_sync/run_async, commit_transaction).
            self.journal.published(entries)

    def _commit(self, session: SessionState) -> None:
        with self._mutex:
            self.command_counts["commitTransaction"] += 1
            txn = session.txn
            self._check_fail_point("commitTransaction", txn is not None)
            if txn is None:
                return  # already committed: a retried commit succeeds
            if txn.aborted:
                raise no_such_transaction(txn.number)
            self._commit_writes(txn.log, txn.events, txn)
            txn.log = {}
            txn.events = []
            session.txn = None
            error = write_concern_error(session.txn_write_concern)
        if error is not None:  # committed, but the write concern cannot be satisfied
            raise_write_concern_error(error)

    def _abort_session(self, session: SessionState) -> None:
        with self._mutex:
            self.command_counts["abortTransaction"] += 1
            self._check_fail_point("abortTransaction", session.txn is not None)
            if session.txn is not None and not session.txn.aborted:
                self._abort(session.txn, count=False)
            session.txn = None

    def _abort(self, txn: Txn, *, count: bool = True) -> None:
        """Undo ``txn``'s writes (and the collections it created) and end it."""
        with self._mutex:
            if count:
                self.command_counts["abortTransaction"] += 1
            for (db, coll, key), pre in reversed(list(txn.log.items())):
                put(self._store[db][coll]._documents, key, pre)
            for db, coll in txn.created:
                self._store[db][coll].drop()
            self.last_abort_restored = len(txn.log)
            self.transactions.abort(txn)
            txn.log = {}
            txn.events = []
            txn.created = []
            if txn.session.txn is txn:
                txn.session.txn = None
            self._ended.notify_all()

    def wait_durable(self) -> None:
        """Return once what this thread committed is on disk (the embedded store; at once
        without one)."""
        if self.journal is not None:
            self.journal.wait()

    async def async_wait_durable(self) -> None:
        """Return once what this task committed is on disk, awaiting (the embedded store)."""
        if self.journal is not None:
            await self.journal.async_wait()

    # -- oplog ----------------------------------------------------------------------------

    @property
    def oplog_size(self) -> int | None:
        return self.oplog.size

    @property
    def cluster_time(self) -> Timestamp:
        """The cluster time of the latest write (``Timestamp(0, 0)`` before any)."""
        return self.oplog.cluster_time

    @property
    def oplog_end(self) -> int:
        return self.oplog.end

    def oplog_entries(self, start: int) -> Iterator[Entry]:
        return self.oplog.read(start)

    # -- commands -------------------------------------------------------------------------

    def hello(self, legacy: bool = False) -> Document:
        me = "memory:27017"
        reply: Document = {
            "topologyVersion": {
                "processId": bson.ObjectId(self.server_id[:24].ljust(24, "0")),
                "counter": Int64(0),
            },
            "hosts": [me],
            "setName": "memory",
            "setVersion": 1,
            "isWritablePrimary": True,
            "secondary": False,
            "primary": me,
            "me": me,
            "electionId": bson.ObjectId("7fffffff0000000000000001"),
            "lastWrite": {"opTime": {"ts": self.cluster_time, "t": Int64(1)}},
            "maxBsonObjectSize": MAX_BSON_SIZE,
            "maxMessageSizeBytes": 48000000,
            "maxWriteBatchSize": 100000,
            "localTime": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": False,
            "ok": 1.0,
        }
        if legacy:
            reply["ismaster"] = reply.pop("isWritablePrimary")
        return reply
