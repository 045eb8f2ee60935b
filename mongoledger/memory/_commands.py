"""Database commands over the engine, with the server's reply shapes: one dispatcher for
``db.command(...)`` in process and for the wire server.

``Commands.start(db, body, ...)`` turns a command document into the work it needs: a reply
right away, an engine call (``EngineStep``: run under the engine's lock, by ``run_sync`` or
``run_async``), or a wait for change events (``WaitStep``). Each step says what comes next, so
the two runners (``_async/commands.py`` and its generated sync twin) are a short loop and all
command logic lives here, flavour-neutral. Errors are raised as PyMongo raises them
(``OperationFailure`` with the server's code, codeName and labels); the wire server turns them
into error replies.

Over the wire, sessions arrive as ``lsid``/``txnNumber``/``startTransaction``/``autocommit``
fields: ``WireSessions`` maps them onto the engine's session state machine, answers a retried
write (the same ``txnNumber``) with the first reply instead of applying it again, and aborts a
transaction left open longer than the server's transaction lifetime limit.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import bson
from bson import ObjectId
from bson.errors import InvalidDocument
from bson.int64 import Int64
from bson.timestamp import Timestamp
from pymongo.errors import (
    DocumentTooLarge,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteError,
)
from pymongo.helpers_shared import _RETRYABLE_ERROR_CODES

from ._changestream import StreamCore
from ._engine import (
    MAX_BSON_SIZE,
    Document,
    MemoryServer,
    SessionState,
    _Op,
    _TxnState,
    encoded,
    mongomock,
    operation_failure,
)
from ._ops import Call, CollectionOps, _mentions

__all__ = ["Commands", "ConnectionInfo", "EngineStep", "Next", "WaitStep", "commands_for"]

DEFAULT_BATCH = 101
CURSOR_IDLE_SECONDS = 600  # the server's cursorTimeoutMillis
TRANSACTION_LIFETIME_SECONDS = 60  # the server's transactionLifetimeLimitSeconds
SESSION_IDLE_SECONDS = 30 * 60  # the server's logicalSessionTimeoutMinutes
AWAIT_DEFAULT_MS = 1000  # a tailable await cursor's getMore wait without maxTimeMS
MAX_WRITE_BATCH = 100_000
_BATCH_BYTES = MAX_BSON_SIZE  # a batch stops once it reaches 16 MiB (at least one document)
WIRE_VERSION = 21  # MongoDB 7.0
VERSION = "7.0.0"


@dataclass
class EngineStep:
    """Run ``call`` under the engine lock (joining ``session``'s transaction), then ``then``."""

    call: Call
    session: SessionState | None
    then: Callable[[Any], Next]


@dataclass
class WaitStep:
    """Wait up to ``timeout`` seconds for the stream's next event, then ``then(event)``."""

    core: StreamCore
    timeout: float
    then: Callable[[Document | None], Next]


Next = Union[EngineStep, WaitStep, Document]  # noqa: UP007 - a runtime alias on Python 3.10


class ReplyAfterAbort(OperationFailure):
    """A write command inside a transaction hit a write error: the engine aborts the
    transaction (as the server does) and the command still answers with ``reply``."""

    def __init__(self, reply: Document) -> None:
        error = reply["writeErrors"][0]
        super().__init__(error["errmsg"], error["code"], reply)
        self.reply = reply


@dataclass
class ConnectionInfo:
    """What the wire server tells the dispatcher about the connection a command came on."""

    host: str
    port: int
    connection_id: int


def _then(step: Next, after: Callable[[Document], Document]) -> Next:
    """``step`` with ``after`` applied to the reply it finally produces."""
    if isinstance(step, EngineStep):
        inner = step.then
        return EngineStep(step.call, step.session, lambda v: _then(inner(v), after))
    if isinstance(step, WaitStep):
        wait_inner = step.then
        return WaitStep(step.core, step.timeout, lambda v: _then(wait_inner(v), after))
    return after(step)


def _bad_value(message: str) -> OperationFailure:
    return operation_failure(2, "BadValue", message)


def _type_mismatch(message: str) -> OperationFailure:
    return operation_failure(14, "TypeMismatch", message)


def _ns_not_found(message: str) -> OperationFailure:
    return operation_failure(26, "NamespaceNotFound", message)


def _collection_name(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not value:
        raise operation_failure(
            73,
            "InvalidNamespace",
            f"collection name has invalid type {type(value).__name__}: {value!r}",
        )
    if "$" in value or "\x00" in value:
        raise operation_failure(73, "InvalidNamespace", f"Invalid collection name: {value!r}")
    return value


def _int_option(body: Mapping[str, Any], name: str, default: int = 0) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_mismatch(f"BSON field '{name}' is the wrong type '{type(value).__name__}'")
    if isinstance(value, float) and not value.is_integer():
        raise _bad_value(f"BSON field '{name}' must be an integer, not {value!r}")
    return int(value)


def _doc_option(body: Mapping[str, Any], name: str) -> Document | None:
    value = body.get(name)
    if value is not None and not isinstance(value, Mapping):
        raise _type_mismatch(
            f"BSON field '{name}' is the wrong type '{type(value).__name__}', expected 'object'"
        )
    return None if value is None else dict(value)


def _sort_option(body: Mapping[str, Any], name: str = "sort") -> list[tuple[str, Any]] | None:
    value = _doc_option(body, name)
    return list(value.items()) if value else None


def _write_error(index: int, exc: BaseException, ns: str) -> Document:
    """One ``writeErrors`` entry for a statement's failure."""
    if isinstance(exc, DuplicateKeyError):
        msg = str(exc)
        if not msg.startswith("E11000 duplicate key error collection"):
            msg = f"E11000 duplicate key error collection: {ns}"
        return {"index": index, "code": 11000, "codeName": "DuplicateKey", "errmsg": msg}
    if isinstance(exc, DocumentTooLarge):
        return {
            "index": index,
            "code": 10334,
            "codeName": "BSONObjectTooLarge",
            "errmsg": str(exc),
        }
    if isinstance(exc, OperationFailure):
        details = exc.details or {}
        entry: Document = {
            "index": index,
            "code": exc.code if exc.code is not None else 2,
            "errmsg": details.get("errmsg") or str(exc),
        }
        name = details.get("codeName") or _CODE_NAMES.get(entry["code"])
        if name:
            entry["codeName"] = name
        return entry
    if isinstance(exc, (InvalidDocument, ValueError, TypeError)):
        return {"index": index, "code": 2, "codeName": "BadValue", "errmsg": str(exc)}
    raise exc


_CODE_NAMES = {2: "BadValue", 9: "FailedToParse", 66: "ImmutableField", 11000: "DuplicateKey"}
# Failures of a single statement that the server reports as a write error, not a command error.
_STATEMENT_ERRORS = (OperationFailure, DocumentTooLarge, InvalidDocument, ValueError, TypeError)


@dataclass
class _Cursor:
    """A server-side cursor: the rest of a result, or a change stream."""

    id: int
    ns: str
    docs: Iterator[Document] | None
    core: StreamCore | None = None
    lsid: Any = None
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class _WireSession:
    state: SessionState
    txn_number: int = 0
    retry_number: int | None = None  # the txnNumber of the last retryable write...
    retry_reply: Document | None = None  # ...and its reply
    txn_started: float = 0.0
    last_used: float = field(default_factory=time.monotonic)


class Commands:
    """The command dispatcher of one ``MemoryServer``: cursors and wire sessions included."""

    def __init__(self, server: MemoryServer) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._cursors: dict[int, _Cursor] = {}
        self._sessions: dict[bytes, _WireSession] = {}
        # setParameter transactionLifetimeLimitSeconds changes it, as on a server.
        self.transaction_lifetime: float = TRANSACTION_LIFETIME_SECONDS
        self._handlers: dict[str, Callable[..., Next]] = {
            "hello": self._hello,
            "isMaster": self._hello,
            "ismaster": self._hello,
            "ping": self._ok,
            "buildInfo": self._build_info,
            "buildinfo": self._build_info,
            "find": self._find,
            "getMore": self._get_more,
            "killCursors": self._kill_cursors,
            "aggregate": self._aggregate,
            "count": self._count,
            "distinct": self._distinct,
            "insert": self._insert,
            "update": self._update,
            "delete": self._delete,
            "findAndModify": self._find_and_modify,
            "findandmodify": self._find_and_modify,
            "create": self._create,
            "drop": self._drop,
            "dropDatabase": self._drop_database,
            "collMod": self._coll_mod,
            "renameCollection": self._rename_collection,
            "listCollections": self._list_collections,
            "listDatabases": self._list_databases,
            "createIndexes": self._create_indexes,
            "listIndexes": self._list_indexes,
            "dropIndexes": self._drop_indexes,
            "deleteIndexes": self._drop_indexes,
            "endSessions": self._end_sessions,
            "killSessions": self._end_sessions,
            "refreshSessions": self._ok,
            "startSession": self._start_session,
            "commitTransaction": self._commit_transaction,
            "abortTransaction": self._abort_transaction,
            "configureFailPoint": self._configure_fail_point,
            "explain": self._explain,
            "dbStats": self._db_stats,
            "collStats": self._coll_stats,
            "serverStatus": self._server_status,
            "hostInfo": self._host_info,
            "getCmdLineOpts": self._cmd_line_opts,
            "getParameter": self._get_parameter,
            "setParameter": self._set_parameter,
            "getLog": self._get_log,
            "connectionStatus": self._connection_status,
            "whatsmyuri": self._whatsmyuri,
            "listCommands": self._list_commands,
            "getLastError": self._ok,
            "replSetGetStatus": self._repl_status,
            "lockInfo": self._ok,
        }

    # -- entry ----------------------------------------------------------------------------

    def start(
        self,
        db: str,
        body: Mapping[str, Any],
        session: SessionState | None = None,
        *,
        connection: ConnectionInfo | None = None,
    ) -> Next:
        """The first step of running ``body`` against database ``db``.

        In process, ``session`` is the caller's session (its transaction, if one is open);
        over the wire (``connection`` given) the session comes from the body's ``lsid``.
        """
        if not isinstance(db, str) or not db or any(c in db for c in '/\\. "$\x00'):
            raise operation_failure(73, "InvalidNamespace", f"Invalid database name: {db!r}")
        name = next(iter(body), None)
        if name is None:
            raise operation_failure(59, "CommandNotFound", "no such command: ''")
        handler = self._handlers.get(name)
        if handler is None:
            self._count_command(name)
            raise operation_failure(
                59,
                "CommandNotFound",
                f"no such command: '{name}' (not implemented by the mongoledger memory engine)",
            )
        if name not in _ENGINE_COUNTED:
            self._count_command(name)
        if connection is None:
            return handler(db, body, session, None)
        return self._wire(name, handler, db, body, connection)

    def _count_command(self, name: str) -> None:
        server = self.server
        with server._mutex:
            server.command_counts[name] += 1
            if name not in ("configureFailPoint", "hello", "isMaster", "ismaster"):
                server._check_fail_point(name, False)

    def _ok(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        return {"ok": 1.0}

    # -- sessions over the wire -----------------------------------------------------------

    def _wire(
        self,
        name: str,
        handler: Callable[..., Next],
        db: str,
        body: Mapping[str, Any],
        conn: ConnectionInfo,
    ) -> Next:
        lsid = body.get("lsid")
        txn_number = body.get("txnNumber")
        if lsid is None or name in ("endSessions", "killSessions"):
            if txn_number is not None:
                raise operation_failure(
                    50768,
                    "Location50768",
                    "txnNumber may only be provided for multi-document transactions and "
                    "retryable write commands",
                )
            return handler(db, body, None, conn)
        ws = self._session(lsid)
        autocommit = body.get("autocommit")
        if txn_number is None:
            if autocommit is not None or body.get("startTransaction") is not None:
                raise operation_failure(
                    50768, "Location50768", "'autocommit' requires a 'txnNumber'"
                )
            if name in ("commitTransaction", "abortTransaction"):
                raise operation_failure(50768, "Location50768", f"'{name}' requires a 'txnNumber'")
            return handler(db, body, None, conn)
        if not isinstance(txn_number, int) or isinstance(txn_number, bool) or txn_number < 0:
            raise _bad_value(f"invalid txnNumber: {txn_number!r}")
        if autocommit is None:
            return self._retryable_write(ws, name, handler, db, body, conn, int(txn_number))
        if autocommit is not False:
            raise _bad_value("autocommit must be false when it is given")
        state = self._transaction(ws, name, body, int(txn_number))
        return handler(db, body, state, conn)

    def _session(self, lsid: Any) -> _WireSession:
        raw = lsid.get("id") if isinstance(lsid, Mapping) else None
        if not isinstance(raw, (bytes, uuid.UUID)):
            raise _bad_value(f"invalid lsid: {lsid!r}")
        key = raw.bytes if isinstance(raw, uuid.UUID) else bytes(raw)
        with self._lock:
            ws = self._sessions.get(key)
            if ws is None:
                state = SessionState(self.server)
                state.session_id = {"id": bson.Binary(key, 4)}
                ws = self._sessions[key] = _WireSession(state)
            ws.last_used = time.monotonic()
            return ws

    def _retryable_write(
        self,
        ws: _WireSession,
        name: str,
        handler: Callable[..., Next],
        db: str,
        body: Mapping[str, Any],
        conn: ConnectionInfo,
        number: int,
    ) -> Next:
        if name not in _RETRYABLE_WRITES:
            raise operation_failure(
                50768,
                "Location50768",
                f"txnNumber may only be provided for multi-document transactions and retryable "
                f"write commands; '{name}' is neither",
            )
        with self._lock:
            if number < ws.txn_number:
                raise _too_old(number, ws.txn_number)
            if number == ws.retry_number and ws.retry_reply is not None:
                return dict(ws.retry_reply)  # a retry: the first attempt's reply, not again
            if number > ws.txn_number:
                self._end_transaction(ws)
                ws.txn_number = number

        def remember(reply: Document) -> Document:
            with self._lock:
                if ws.txn_number == number:
                    ws.retry_number, ws.retry_reply = number, dict(reply)
            return reply

        return _then(handler(db, body, None, conn), remember)

    def _transaction(
        self, ws: _WireSession, name: str, body: Mapping[str, Any], number: int
    ) -> SessionState:
        state = ws.state
        with self._lock:
            if number < ws.txn_number:
                raise _too_old(number, ws.txn_number)
            if body.get("startTransaction") is True:
                if number == ws.txn_number and state.state != _TxnState.NONE:
                    raise operation_failure(
                        225,
                        "TransactionTooOld",
                        f"Cannot start transaction {number} on session "
                        f"{_lsid_text(state)} because a newer transaction has already started",
                    )
                self._end_transaction(ws)
                state.txn = None
                state.txn_number = number - 1
                state.start_transaction()
                ws.txn_number = number
                ws.txn_started = time.monotonic()
                ws.retry_number = ws.retry_reply = None
                self.transaction_started()
                return state
            if body.get("startTransaction") is not None:
                raise _bad_value("startTransaction must be true when it is given")
            if number != ws.txn_number or state.state == _TxnState.NONE:
                raise _no_such_transaction(number, state)
            if name in ("commitTransaction", "abortTransaction"):
                return state
            if not state.in_transaction:
                if state.state in (_TxnState.COMMITTED, _TxnState.COMMITTED_EMPTY):
                    raise operation_failure(
                        256,
                        "TransactionCommitted",
                        f"Transaction with {{ txnNumber: {number} }} has been committed.",
                    )
                raise _no_such_transaction(number, state)
            return state

    def _end_transaction(self, ws: _WireSession) -> None:
        """Abort what the session left open (a new txnNumber supersedes it, as on a server)."""
        state = ws.state
        txn = state.txn
        if state.in_transaction or (txn is not None and not txn.aborted):
            if txn is not None and not txn.aborted:
                self.server._abort(txn, count=False)
            state.txn = None
            state.state = _TxnState.ABORTED
            self.server._session_closed(state)

    def _commit_transaction(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        _admin_only(db, "commitTransaction")
        if session is None:
            raise operation_failure(
                50768, "Location50768", "commitTransaction must be run within a transaction"
            )
        state = session
        if state.state == _TxnState.ABORTED:
            raise _no_such_transaction(state.txn_number, state)
        if state.state in (_TxnState.STARTING, _TxnState.COMMITTED_EMPTY):
            self._counted_fail_point("commitTransaction", False)
            state.state = _TxnState.COMMITTED_EMPTY
            self.server._session_closed(state)
            return {"ok": 1.0}
        try:
            self.server._commit(state)
        except OperationFailure as exc:
            if exc.code == 251:
                state.state = _TxnState.ABORTED
                self.server._session_closed(state)
            raise
        state.state = _TxnState.COMMITTED
        self.server._session_closed(state)
        return {"ok": 1.0}

    def _abort_transaction(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        _admin_only(db, "abortTransaction")
        if session is None:
            raise operation_failure(
                50768, "Location50768", "abortTransaction must be run within a transaction"
            )
        state = session
        if state.state in (_TxnState.COMMITTED, _TxnState.COMMITTED_EMPTY):
            raise operation_failure(
                256,
                "TransactionCommitted",
                f"Transaction with {{ txnNumber: {state.txn_number} }} has been committed.",
            )
        if state.state == _TxnState.ABORTED:
            raise _no_such_transaction(state.txn_number, state)
        if state.state == _TxnState.STARTING:
            self._counted_fail_point("abortTransaction", False)
        else:
            self.server._abort_session(state)
        state.state = _TxnState.ABORTED
        self.server._session_closed(state)
        return {"ok": 1.0}

    def _counted_fail_point(self, name: str, in_txn: bool) -> None:
        server = self.server
        with server._mutex:
            server.command_counts[name] += 1
            server._check_fail_point(name, in_txn)

    def _end_sessions(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        name = next(iter(body))
        ids = body[name]
        if not isinstance(ids, list):
            raise _type_mismatch(f"{name} takes an array of session ids")
        for lsid in ids:
            raw = lsid.get("id") if isinstance(lsid, Mapping) else None
            if not isinstance(raw, (bytes, uuid.UUID)):
                continue
            key = raw.bytes if isinstance(raw, uuid.UUID) else bytes(raw)
            with self._lock:
                ws = self._sessions.pop(key, None)
                if ws is not None:
                    self._end_transaction(ws)
        return {"ok": 1.0}

    def _start_session(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        lsid = {"id": bson.Binary(uuid.uuid4().bytes, 4)}
        return {"id": lsid, "timeoutMinutes": 30, "ok": 1.0}

    def reap(self, now: float | None = None) -> float:
        """Abort transactions past the lifetime limit, close cursors idle past their timeout,
        forget sessions idle past theirs; returns the seconds until the next deadline."""
        now = time.monotonic() if now is None else now
        lifetime = self.transaction_lifetime
        upcoming = [now + CURSOR_IDLE_SECONDS]
        with self._lock:
            for ws in list(self._sessions.values()):
                if ws.state.in_transaction:
                    if now - ws.txn_started >= lifetime:
                        self._end_transaction(ws)
                    else:
                        upcoming.append(ws.txn_started + lifetime)
                elif now - ws.last_used > SESSION_IDLE_SECONDS:
                    self._sessions.pop(_session_key(ws), None)
            for cursor_id, cursor in list(self._cursors.items()):
                if now - cursor.last_used > CURSOR_IDLE_SECONDS:
                    del self._cursors[cursor_id]
                else:
                    upcoming.append(cursor.last_used + CURSOR_IDLE_SECONDS)
        return max(min(upcoming) - now, 0.01)

    def transaction_started(self) -> None:
        """A hook the wire server sets to wake its reaper (a new deadline exists)."""

    def open_transactions(self) -> int:
        with self._lock:
            return sum(1 for ws in self._sessions.values() if ws.state.in_transaction)

    # -- handshake and server information -------------------------------------------------

    def _hello(
        self, db: str, body: Mapping[str, Any], session: Any, conn: ConnectionInfo | None
    ) -> Next:
        name = next(iter(body))
        reply = self.server.hello(legacy=name != "hello")
        reply["maxWireVersion"] = WIRE_VERSION
        if conn is not None:
            me = f"{conn.host}:{conn.port}"
            reply["hosts"] = [me]
            reply["primary"] = reply["me"] = me
            reply["connectionId"] = conn.connection_id
        if body.get("helloOk"):
            reply["helloOk"] = True
        return reply

    def _build_info(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        return {
            "version": VERSION,
            "gitVersion": "mongoledger-memory",
            "versionArray": [7, 0, 0, 0],
            "modules": [],
            "allocator": "system",
            "javascriptEngine": "none",
            "sysInfo": "deprecated",
            "bits": 64,
            "debug": False,
            "maxBsonObjectSize": MAX_BSON_SIZE,
            "storageEngines": ["memory"],
            "openssl": {"running": "disabled", "compiled": "disabled"},
            "buildEnvironment": {},
            "ok": 1.0,
        }

    def _server_status(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        return {
            "host": "mongoledger-memory",
            "version": VERSION,
            "process": "mongod",
            "pid": Int64(os.getpid()),
            "uptime": time.monotonic(),
            "localTime": _now(),
            "storageEngine": {"name": "memory", "supportsCommittedReads": True},
            "ok": 1.0,
        }

    def _host_info(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        return {
            "system": {"currentTime": _now(), "hostname": "localhost", "cpuArch": "x86_64"},
            "os": {"type": "Linux", "name": "", "version": ""},
            "extra": {},
            "ok": 1.0,
        }

    def _cmd_line_opts(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        _admin_only(db, "getCmdLineOpts")
        return {"argv": ["mongoledger", "serve-db"], "parsed": {}, "ok": 1.0}

    def _get_parameter(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        _admin_only(db, "getParameter")
        reply: Document = {"ok": 1.0}
        known: Document = {
            "featureCompatibilityVersion": {"version": "7.0"},
            "transactionLifetimeLimitSeconds": int(self.transaction_lifetime),
            "cursorTimeoutMillis": Int64(CURSOR_IDLE_SECONDS * 1000),
        }
        everything = body.get("getParameter") == "*"
        for key, value in known.items():
            if everything or key in body:
                reply[key] = value
        return reply

    def _set_parameter(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        _admin_only(db, "setParameter")
        reply: Document = {"ok": 1.0}
        for key, value in body.items():
            if key in ("setParameter", *_GENERIC_FIELDS):
                continue
            if key != "transactionLifetimeLimitSeconds":
                raise _bad_value(
                    f"setParameter {key!r} is not implemented by the mongoledger memory engine"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
                raise _bad_value(f"transactionLifetimeLimitSeconds must be >= 1, not {value!r}")
            reply["was"] = int(self.transaction_lifetime)
            self.transaction_lifetime = float(value)
            self.transaction_started()  # the reaper's next deadline moved
        return reply

    def _get_log(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        _admin_only(db, "getLog")
        which = body.get("getLog")
        if which == "*":
            return {"names": ["global", "startupWarnings"], "ok": 1.0}
        return {"totalLinesWritten": 0, "log": [], "ok": 1.0}

    def _connection_status(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        return {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}, "ok": 1.0}

    def _whatsmyuri(
        self, db: str, body: Mapping[str, Any], session: Any, conn: ConnectionInfo | None
    ) -> Next:
        you = "in-process" if conn is None else f"{conn.host}:{conn.port}"
        return {"you": you, "ok": 1.0}

    def _list_commands(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        names = sorted(self._handlers)
        return {"commands": {n: {"help": ""} for n in names}, "ok": 1.0}

    def _repl_status(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        _admin_only(db, "replSetGetStatus")
        hello = self.server.hello()
        return {
            "set": hello["setName"],
            "date": _now(),
            "myState": 1,
            "members": [
                {"_id": 0, "name": hello["me"], "health": 1.0, "state": 1, "stateStr": "PRIMARY"}
            ],
            "ok": 1.0,
        }

    def _configure_fail_point(
        self, db: str, body: Mapping[str, Any], session: Any, conn: Any
    ) -> Next:
        _admin_only(db, "configureFailPoint")
        return self.server.configure_fail_point(body)

    # -- reads and cursors ----------------------------------------------------------------

    def _ops(self, db: str, coll: str) -> CollectionOps:
        return CollectionOps(self.server, db, coll)

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
        coll = _collection_name(body, "collection")
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
        coll = _collection_name(body, "killCursors")
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
            return self._explain_pipeline(db, target, pipeline)
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

        def fn(_op: _Op) -> StreamCore:
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

        call = Call("aggregate", fn, f"aggregate on {ns}")

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
            with self.server._mutex:
                while len(events) < limit:
                    event = core.poll()
                    if event is None:
                        break
                    events.append(event)

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

    # -- writes ---------------------------------------------------------------------------

    def _statements(self, body: Mapping[str, Any], name: str) -> list[Any]:
        items = body.get(name)
        if not isinstance(items, list):
            raise _type_mismatch(f"BSON field '{name}' is missing or not an array")
        if not 1 <= len(items) <= MAX_WRITE_BATCH:
            raise operation_failure(
                16,
                "InvalidLength",
                f"Write batch sizes must be between 1 and {MAX_WRITE_BATCH}. "
                f"Got {len(items)} operations.",
            )
        return items

    def _insert(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "insert")
        documents = self._statements(body, "documents")
        ordered = body.get("ordered", True) is not False
        ns = f"{db}.{coll}"
        mc_ops = self._ops(db, coll)

        def fn(op: _Op) -> Document:
            mc = mc_ops._mc
            errors: list[Document] = []
            n = 0
            for index, document in enumerate(documents):
                try:
                    if not isinstance(document, Mapping):
                        raise TypeError(f"documents[{index}] is not a document")
                    doc, raw = encoded(document)
                    if "_id" not in doc:
                        doc = {"_id": ObjectId(), **doc}
                        raw = bson.encode(doc)
                    elif isinstance(doc["_id"], list):
                        raise operation_failure(
                            53, "InvalidIdField", "The '_id' value cannot be of type array"
                        )
                    mc.insert_encoded([(doc, raw)], many=False, ordered=True)
                except _STATEMENT_ERRORS as exc:
                    errors.append(_write_error(index, exc, ns))
                    if ordered:
                        break
                    continue
                n += 1
            return _write_reply(op, {"n": n}, errors)

        call = Call("insert", fn, f"insert on {ns}", "insert", retryable=False)
        return EngineStep(call, session, _identity)

    def _update(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "update")
        statements = self._statements(body, "updates")
        ordered = body.get("ordered", True) is not False
        ns = f"{db}.{coll}"
        ops = self._ops(db, coll)
        total: Document = {"n": 0, "nModified": 0}
        upserted: list[Document] = []
        errors: list[Document] = []

        def step(index: int) -> Next:
            if index == len(statements) or (errors and ordered):
                reply: Document = dict(total)
                if upserted:
                    reply["upserted"] = upserted
                if errors:
                    reply["writeErrors"] = errors
                reply["ok"] = 1.0
                return reply
            stmt = statements[index]

            def fn(op: _Op) -> Document | None:
                try:
                    return _one_update(ops, stmt)
                except _STATEMENT_ERRORS as exc:
                    if getattr(exc, "_memory_rollback", False):
                        raise
                    error = _write_error(index, exc, ns)
                    if op.txn is not None:
                        raise ReplyAfterAbort(_after_abort(total, upserted, error)) from exc
                    errors.append(error)
                    return None

            def done(result: Document | None) -> Next:
                if result is not None:
                    total["n"] += result["n"]
                    total["nModified"] += result["nModified"]
                    if result.get("upserted") is not None:
                        upserted.append({"index": index, "_id": result["upserted"]})
                return step(index + 1)

            kind = "replace" if _is_replacement(stmt) else "update"
            # The command is counted (and a fail point checked) once, at its first statement.
            call = Call("update" if index == 0 else "", fn, f"update on {ns}", kind, False)
            return EngineStep(call, session, done)

        return step(0)

    def _delete(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "delete")
        statements = self._statements(body, "deletes")
        ordered = body.get("ordered", True) is not False
        ns = f"{db}.{coll}"
        ops = self._ops(db, coll)

        def fn(op: _Op) -> Document:
            mc = ops._mc
            n = 0
            errors: list[Document] = []
            for index, stmt in enumerate(statements):
                try:
                    if not isinstance(stmt, Mapping) or not isinstance(stmt.get("q"), Mapping):
                        raise _type_mismatch("a delete statement needs a document 'q'")
                    limit = stmt.get("limit", 0)
                    if limit not in (0, 1):
                        raise _bad_value(
                            f"The limit field in delete objects must be 0 or 1. Got {limit}"
                        )
                    flt = dict(stmt["q"])
                    res = (mc.delete_one if limit == 1 else mc.delete_many)(flt)
                    n += res.deleted_count
                except _STATEMENT_ERRORS as exc:
                    errors.append(_write_error(index, exc, ns))
                    if ordered:
                        break
            return _write_reply(op, {"n": n}, errors)

        call = Call("delete", fn, f"delete on {ns}", "delete", retryable=False)
        return EngineStep(call, session, _identity)

    def _find_and_modify(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, next(iter(body)))
        flt = _doc_option(body, "query") or {}
        sort = _sort_option(body)
        fields = _doc_option(body, "fields")
        remove = bool(body.get("remove"))
        update = body.get("update")
        new = bool(body.get("new"))
        upsert = bool(body.get("upsert"))
        if remove and (update is not None or new or upsert):
            raise operation_failure(
                9, "FailedToParse", "Cannot specify both an update and remove=true"
            )
        if not remove and update is None:
            raise operation_failure(
                9, "FailedToParse", "Either an update or remove=true must be specified"
            )
        if body.get("arrayFilters"):
            raise _bad_value("arrayFilters are not implemented by the mongoledger memory engine")
        ops = self._ops(db, coll)
        if remove:
            method, kind = "delete", "delete"
        elif isinstance(update, list) or _has_operators(update):
            method, kind = "update", "update"
        elif isinstance(update, Mapping):
            method, kind = "replace", "replace"
        else:
            raise _type_mismatch("findAndModify's update must be a document or a pipeline")
        ns = f"{db}.{coll}"

        def fn(op: _Op) -> Document:
            mc = ops._mc
            order = mongomock.helpers.create_index_list(sort) if sort else None
            existing = mc.find_one(flt, {"_id": 1}, sort=order)
            if upsert and _mentions(flt, "$expr"):
                raise operation_failure(
                    224,
                    "QueryFeatureNotAllowed",
                    "$expr is not allowed in the query predicate for an upsert",
                )
            if method == "delete":
                value = mc.find_one_and_delete(flt, projection=fields, sort=order)
                last: Document = {"n": 0 if value is None else 1}
                return {"lastErrorObject": last, "value": value, "ok": 1.0}
            target = flt if existing is None else {"_id": existing["_id"]}
            payload = update
            if method == "replace":
                payload = dict(update or {})
                mongomock.collection.validate_ok_for_replace(payload)
            with ops._translate():
                value = mc._find_and_modify(target, fields, payload, upsert, None, new)
            last = {"n": 1 if existing is not None or upsert else 0}
            if method != "delete":
                last["updatedExisting"] = existing is not None
            if existing is None and upsert:
                last["upserted"] = _upserted_id(op, db, coll)
            return {"lastErrorObject": last, "value": value, "ok": 1.0}

        call = Call("findAndModify", fn, f"findAndModify on {ns}", kind, retryable=False)
        return EngineStep(call, session, _identity)

    # -- collections, databases, indexes --------------------------------------------------

    def _exists(self, db: str, coll: str) -> bool:
        store = self.server._store[db]
        return coll in store._collections and bool(store[coll].is_created)

    def _create(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "create")
        unsupported = set(body) & _UNSUPPORTED_CREATE
        if unsupported:
            raise _bad_value(
                f"create option {sorted(unsupported)[0]!r} is not implemented by the mongoledger "
                "memory engine"
            )
        options = {k: v for k, v in body.items() if k not in _GENERIC_FIELDS and k != "create"}

        def fn(_op: _Op) -> Document:
            if self._exists(db, coll):
                raise operation_failure(
                    48, "NamespaceExists", f"Collection {db}.{coll} already exists."
                )
            store = self.server._store[db][coll]
            store.create()
            _set_options(store, options)
            return {"ok": 1.0}

        return EngineStep(
            Call("create", fn, f"create on {db}.{coll}", retryable=False), session, _identity
        )

    def _preempt(self, db: str, coll: str | None) -> None:
        """Abort the wire transactions holding writes in ``db`` (``coll``), as a server's
        DDL preempts idle transactions whose locks it needs instead of waiting for them."""
        with self._lock:
            for ws in self._sessions.values():
                txn = ws.state.txn
                if txn is None or txn.aborted:
                    continue
                if any(k[0] == db and (coll is None or k[1] == coll) for k in txn.log):
                    self._end_transaction(ws)

    def _drop(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "drop")
        if session is None:
            self._preempt(db, coll)
        ns = f"{db}.{coll}"
        ops = self._ops(db, coll)
        dropping = ops.drop()

        def fn(op: _Op) -> Document:
            existed = self._exists(db, coll)
            count = 1 + len(self.server._store[db][coll].indexes) if existed else 0
            dropping.fn(op)
            _set_options(self.server._store[db][coll], {})
            reply: Document = {"ok": 1.0}
            if existed:
                reply = {"nIndexesWas": count, "ns": ns, "ok": 1.0}
            return reply

        return EngineStep(Call("drop", fn, f"drop on {ns}", retryable=False), session, _identity)

    def _drop_database(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        if session is None:
            self._preempt(db, None)

        def fn(op: _Op) -> Document:
            for coll in list(self.server._mock[db].list_collection_names()):
                self._ops(db, coll).drop().fn(op)
            self.server._mock.drop_database(db)
            return {"dropped": db, "ok": 1.0}

        call = Call("dropDatabase", fn, f"dropDatabase on {db}", retryable=False)
        return EngineStep(call, session, _identity)

    def _coll_mod(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "collMod")
        changes = {k: v for k, v in body.items() if k not in _GENERIC_FIELDS and k != "collMod"}
        unknown = set(changes) - _COLLMOD_OPTIONS
        if unknown:
            raise operation_failure(
                40415,
                "Location40415",
                f"BSON field 'collMod.{sorted(unknown)[0]}' is an unknown field.",
            )

        def fn(_op: _Op) -> Document:
            if not self._exists(db, coll):
                raise _ns_not_found(f"ns does not exist: {db}.{coll}")
            store = self.server._store[db][coll]
            options = dict(_options(store))
            options.update(changes)
            _set_options(store, options)
            return {"ok": 1.0}

        call = Call("collMod", fn, f"collMod on {db}.{coll}", retryable=False)
        return EngineStep(call, session, _identity)

    def _rename_collection(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        _admin_only(db, "renameCollection")
        source, target = body.get("renameCollection"), body.get("to")
        if not isinstance(source, str) or not isinstance(target, str):
            raise _type_mismatch("renameCollection and to must be namespace strings")
        src_db, _, src_coll = source.partition(".")
        dst_db, _, dst_coll = target.partition(".")
        if not src_coll or not dst_coll:
            raise operation_failure(73, "InvalidNamespace", f"Invalid namespace: {source!r}")
        if src_db != dst_db:
            raise _bad_value(
                "renameCollection across databases is not implemented by the mongoledger "
                "memory engine"
            )
        drop_target = bool(body.get("dropTarget"))

        def fn(op: _Op) -> Document:
            if not self._exists(src_db, src_coll):
                raise _ns_not_found(f"Source collection {source} does not exist")
            if source == target:
                raise operation_failure(
                    20, "IllegalOperation", "Can't rename a collection to itself"
                )
            if self._exists(dst_db, dst_coll):
                if not drop_target:
                    raise operation_failure(48, "NamespaceExists", "target namespace exists")
                self._ops(dst_db, dst_coll).drop().fn(op)
            if any(k[0] == src_db and k[1] == src_coll for t in op.others for k in t.log):
                raise operation_failure(
                    112, "WriteConflict", "a transaction is writing to the collection"
                )
            store = self.server._store[src_db]
            moved = store._collections.pop(src_coll)
            moved.name = dst_coll
            store._collections[dst_coll] = moved
            self.server._mock_collections.pop((src_db, src_coll), None)
            self.server._mock_collections.pop((dst_db, dst_coll), None)
            self.server.publish_drop(src_db, src_coll)
            return {"ok": 1.0}

        call = Call("renameCollection", fn, f"renameCollection of {source}", retryable=False)
        return EngineStep(call, session, _identity)

    def _list_collections(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        flt = _doc_option(body, "filter") or {}
        name_only = bool(body.get("nameOnly"))
        batch = _batch_size((body.get("cursor") or {}).get("batchSize"))

        def fn(_op: _Op) -> list[Document]:
            out = []
            for name in sorted(self.server._mock[db].list_collection_names()):
                store = self.server._store[db][name]
                entry: Document = {"name": name, "type": "collection"}
                if not name_only:
                    entry["options"] = dict(_options(store))
                    entry["info"] = {"readOnly": False, "uuid": _collection_uuid(store)}
                    entry["idIndex"] = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
                if not flt or mongomock.filtering.filter_applies(flt, entry):
                    out.append(entry)
            return out

        ns = f"{db}.$cmd.listCollections"
        call = Call("listCollections", fn, f"listCollections on {db}")
        return EngineStep(
            call, session, lambda docs: self._first_batch(ns, docs, batch, False, session)
        )

    def _list_databases(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        _admin_only(db, "listDatabases")
        name_only = bool(body.get("nameOnly"))
        flt = _doc_option(body, "filter") or {}

        def fn(_op: _Op) -> Document:
            dbs = []
            for name in sorted(self.server._mock.list_database_names()):
                entry: Document = {"name": name}
                if not name_only:
                    entry["sizeOnDisk"] = Int64(_database_size(self.server, name))
                    entry["empty"] = False
                if not flt or mongomock.filtering.filter_applies(flt, entry):
                    dbs.append(entry)
            reply: Document = {"databases": dbs, "ok": 1.0}
            if not name_only:
                reply["totalSize"] = Int64(sum(d["sizeOnDisk"] for d in dbs))
                reply["totalSizeMb"] = Int64(reply["totalSize"] // (1024 * 1024))
            return reply

        return EngineStep(Call("listDatabases", fn, "listDatabases"), session, _identity)

    def _create_indexes(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "createIndexes")
        specs = body.get("indexes")
        if not isinstance(specs, list) or not specs:
            raise _bad_value("Must specify at least one index to create")
        parsed = []
        for spec in specs:
            if not isinstance(spec, Mapping) or not isinstance(spec.get("key"), Mapping):
                raise _bad_value(f"invalid index specification: {spec!r}")
            if not spec.get("name") or not isinstance(spec.get("name"), str):
                raise _bad_value(f"index specification needs a name: {spec!r}")
            options = {k: v for k, v in spec.items() if k not in ("key", "v", "ns")}
            parsed.append((list(spec["key"].items()), options))

        def fn(_op: _Op) -> Document:
            existed = self._exists(db, coll)
            store = self.server._store[db][coll]
            before = 1 + len(store.indexes) if existed else 0
            mc = self.server.mock_collection(db, coll)
            for keys, options in parsed:
                if keys == [("_id", 1)]:
                    continue
                mc.create_index(keys, **options)
            store.create()
            after = 1 + len(store.indexes)
            return {
                "numIndexesBefore": max(before, 1),
                "numIndexesAfter": after,
                "createdCollectionAutomatically": not existed,
                "ok": 1.0,
            }

        call = Call("createIndexes", fn, f"createIndexes on {db}.{coll}", retryable=False)
        return EngineStep(call, session, _identity)

    def _list_indexes(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "listIndexes")
        batch = _batch_size((body.get("cursor") or {}).get("batchSize"))
        ns = f"{db}.{coll}"

        def fn(_op: _Op) -> list[Document]:
            if not self._exists(db, coll):
                raise _ns_not_found(f"ns does not exist: {ns}")
            out = []
            for ix in self.server.mock_collection(db, coll).list_indexes():
                entry: Document = {"v": 2, "key": dict(ix["key"]), "name": ix["name"]}
                for k, v in ix.items():
                    if k not in ("v", "key", "name"):
                        entry[k] = v
                out.append(entry)
            return out

        call = Call("listIndexes", fn, f"listIndexes on {ns}")
        return EngineStep(
            call, session, lambda docs: self._first_batch(ns, docs, batch, False, session)
        )

    def _drop_indexes(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, next(iter(body)))
        which = body.get("index")

        def fn(_op: _Op) -> Document:
            if not self._exists(db, coll):
                raise _ns_not_found(f"ns not found {db}.{coll}")
            store = self.server._store[db][coll]
            mc = self.server.mock_collection(db, coll)
            count = 1 + len(store.indexes)
            if which == "*":
                for name in list(store.indexes):
                    mc.drop_index(name)
                return {
                    "nIndexesWas": count,
                    "msg": "non-_id indexes dropped for collection",
                    "ok": 1.0,
                }
            names: list[str]
            if isinstance(which, str):
                names = [which]
            elif isinstance(which, list):
                names = [str(n) for n in which]
            elif isinstance(which, Mapping):
                keys = list(which.items())
                names = [n for n, ix in store.indexes.items() if list(ix["key"]) == keys]
                if not names:
                    raise operation_failure(
                        27, "IndexNotFound", f"can't find index with key: {dict(which)!r}"
                    )
            else:
                raise _type_mismatch("dropIndexes takes an index name, names, or key pattern")
            for name in names:
                if name == "_id_":
                    raise operation_failure(72, "InvalidOptions", "cannot drop _id index")
                if name not in store.indexes:
                    raise operation_failure(
                        27, "IndexNotFound", f"index not found with name [{name}]"
                    )
            for name in names:
                mc.drop_index(name)
            return {"nIndexesWas": count, "ok": 1.0}

        call = Call("dropIndexes", fn, f"dropIndexes on {db}.{coll}", retryable=False)
        return EngineStep(call, session, _identity)

    def _db_stats(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        def fn(_op: _Op) -> Document:
            names = list(self.server._mock[db].list_collection_names())
            objects = sum(len(self.server._store[db][n]._documents) for n in names)
            size = _database_size(self.server, db)
            return {
                "db": db,
                "collections": len(names),
                "views": 0,
                "objects": objects,
                "dataSize": float(size),
                "storageSize": float(size),
                "indexes": sum(1 + len(self.server._store[db][n].indexes) for n in names),
                "ok": 1.0,
            }

        return EngineStep(Call("dbStats", fn, f"dbStats on {db}"), session, _identity)

    def _coll_stats(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "collStats")

        def fn(_op: _Op) -> Document:
            if not self._exists(db, coll):
                raise _ns_not_found(f"Collection [{db}.{coll}] not found.")
            store = self.server._store[db][coll]
            return {
                "ns": f"{db}.{coll}",
                "count": len(store._documents),
                "nindexes": 1 + len(store.indexes),
                "ok": 1.0,
            }

        return EngineStep(Call("collStats", fn, f"collStats on {db}.{coll}"), session, _identity)

    # -- explain ----------------------------------------------------------------------------

    def _explain(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        inner = body.get("explain")
        if not isinstance(inner, Mapping) or not inner:
            raise _type_mismatch("explain takes a command document")
        name = next(iter(inner))
        if name == "find":
            coll = _collection_name(inner, "find")
            return self._plan_reply(
                db, coll, _doc_option(inner, "filter") or {}, _sort_option(inner)
            )
        if name == "aggregate":
            return self._explain_pipeline(db, inner.get("aggregate"), inner.get("pipeline") or [])
        if name in ("count", "distinct"):
            coll = _collection_name(inner, name)
            return self._plan_reply(db, coll, _doc_option(inner, "query") or {}, None)
        if name in ("update", "delete"):
            key = "updates" if name == "update" else "deletes"
            stmts = inner.get(key) or [{}]
            return self._plan_reply(
                db, _collection_name(inner, name), stmts[0].get("q") or {}, None
            )
        if name in ("findAndModify", "findandmodify"):
            coll = _collection_name(inner, name)
            return self._plan_reply(
                db, coll, _doc_option(inner, "query") or {}, _sort_option(inner)
            )
        raise _bad_value(f"explain of {name!r} is not implemented by the mongoledger memory engine")

    def _explain_pipeline(self, db: str, target: Any, pipeline: Any) -> Next:
        if not isinstance(target, str):
            raise _bad_value("explain of a collectionless aggregate is not implemented")
        first = pipeline[0] if pipeline else {}
        flt = first.get("$match", {}) if isinstance(first, Mapping) else {}
        sort = None
        for stage in pipeline[1:2]:
            if isinstance(stage, Mapping) and "$sort" in stage:
                sort = list(stage["$sort"].items())
        return self._plan_reply(db, target, flt, sort)

    def _plan_reply(
        self, db: str, coll: str, flt: Mapping[str, Any], sort: list[tuple[str, Any]] | None
    ) -> Document:
        with self.server._mutex:
            indexes = [{"name": "_id_", "key": [("_id", 1)]}]
            if self._exists(db, coll):
                store = self.server._store[db][coll]
                indexes += [{"name": n, **ix} for n, ix in store.indexes.items()]
        plan = choose_index(indexes, flt, sort)
        ns = f"{db}.{coll}"
        if plan is None:
            winning: Document = {"stage": "COLLSCAN", "filter": dict(flt), "direction": "forward"}
        else:
            winning = {
                "stage": "FETCH",
                "inputStage": {
                    "stage": "IXSCAN",
                    "indexName": plan["name"],
                    "keyPattern": dict(plan["key"]),
                    "isMultiKey": False,
                    "direction": "forward",
                },
            }
        if sort and (plan is None or not _sort_served(plan, flt, sort)):
            winning = {"stage": "SORT", "sortPattern": dict(sort), "inputStage": winning}
        return {
            "queryPlanner": {
                "namespace": ns,
                "parsedQuery": dict(flt),
                "winningPlan": winning,
                "rejectedPlans": [],
            },
            "explainVersion": "1",
            "command": {"filter": dict(flt)},
            "serverInfo": {"host": "mongoledger-memory", "version": VERSION},
            "ok": 1.0,
        }


# -- index choice (explain) -----------------------------------------------------------------


def _key_fields(index: Mapping[str, Any]) -> list[tuple[str, Any]]:
    key = index.get("key") or []
    return list(key.items()) if isinstance(key, Mapping) else [tuple(k) for k in key]


def _filter_fields(flt: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The fields a filter pins by equality, and those it bounds by a range."""
    equal: set[str] = set()
    ranged: set[str] = set()
    for name, value in flt.items():
        if name == "$and" and isinstance(value, list):
            for part in value:
                if isinstance(part, Mapping):
                    e, r = _filter_fields(part)
                    equal |= e
                    ranged |= r
            continue
        if name.startswith("$"):
            continue
        if isinstance(value, Mapping) and value and all(str(k).startswith("$") for k in value):
            ops = set(value)
            if ops <= {"$eq", "$in"}:
                equal.add(name)
            elif ops & {"$gt", "$gte", "$lt", "$lte", "$exists", "$ne", "$nin"}:
                ranged.add(name)
        else:
            equal.add(name)
    return equal, ranged


def _partial_ok(index: Mapping[str, Any], flt: Mapping[str, Any]) -> bool:
    partial = index.get("partialFilterExpression")
    if not partial:
        return True
    equal, ranged = _filter_fields(flt)
    # The query must imply the partial filter; the simple sufficient check: it names the
    # same fields with the same conditions.
    return all(
        flt.get(k) == v or (k in equal | ranged and flt.get(k) == v) for k, v in partial.items()
    )


def choose_index(
    indexes: list[Document], flt: Mapping[str, Any], sort: list[tuple[str, Any]] | None
) -> Document | None:
    """The index a server would pick for ``flt`` (and ``sort``): the one whose key prefix the
    query pins the most fields of, preferring one that also serves the sort; None: a scan."""
    equal, ranged = _filter_fields(flt)
    best: tuple[int, int, int] | None = None
    chosen: Document | None = None
    for index in indexes:
        keys = _key_fields(index)
        if not keys or not _partial_ok(index, flt):
            continue
        first = keys[0][0]
        if first == "$**":
            wild_hit = any(not f.startswith("_") for f in equal | ranged)
            score = (1, 0, 0) if wild_hit else None
            if score and (best is None or score > best):
                best, chosen = score, index
            continue
        prefix = 0
        for name, _direction in keys:
            if name in equal:
                prefix += 1
                continue
            if name in ranged:
                prefix += 1
            break
        sorted_ok = int(bool(sort) and _sort_served(index, flt, sort or []))
        if prefix == 0 and not sorted_ok:
            continue
        score = (prefix, sorted_ok, -len(keys))
        if best is None or score > best:
            best, chosen = score, index
    return chosen


def _sort_served(
    index: Mapping[str, Any], flt: Mapping[str, Any], sort: list[tuple[str, Any]]
) -> bool:
    """Whether the index returns documents in ``sort`` order (forwards or backwards), once
    the fields the filter pins by equality are skipped."""
    equal, _ranged = _filter_fields(flt)
    keys = [(n, d) for n, d in _key_fields(index) if n not in equal or (n, d) in sort]
    keys = [(n, d) for n, d in keys if not any(n == s for s, _ in sort) or True]
    rest = [(n, d) for n, d in _key_fields(index) if n not in equal]
    if len(rest) < len(sort):
        return False
    want = [(n, 1 if float(d) > 0 else -1) for n, d in sort]
    have = [(n, 1 if float(d) > 0 else -1) for n, d in rest[: len(sort)]]
    flipped = [(n, -d) for n, d in have]
    return bool(keys) and (want in (have, flipped))


# -- helpers --------------------------------------------------------------------------------


_ENGINE_COUNTED = frozenset(
    {
        "find",
        "aggregate",
        "count",
        "distinct",
        "insert",
        "update",
        "delete",
        "findAndModify",
        "findandmodify",
        "create",
        "drop",
        "dropDatabase",
        "collMod",
        "renameCollection",
        "listCollections",
        "listDatabases",
        "createIndexes",
        "listIndexes",
        "dropIndexes",
        "deleteIndexes",
        "dbStats",
        "collStats",
        "commitTransaction",
        "abortTransaction",
    }
)
_RETRYABLE_WRITES = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify"})
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
_GENERIC_FIELDS = frozenset(
    {
        "lsid",
        "txnNumber",
        "autocommit",
        "startTransaction",
        "writeConcern",
        "readConcern",
        "$db",
        "$clusterTime",
        "$readPreference",
        "comment",
        "maxTimeMS",
        "apiVersion",
        "apiStrict",
        "apiDeprecationErrors",
    }
)
_UNSUPPORTED_CREATE = frozenset({"viewOn", "pipeline", "timeseries", "clusteredIndex", "collation"})
_COLLMOD_OPTIONS = frozenset(
    {
        "changeStreamPreAndPostImages",
        "validator",
        "validationLevel",
        "validationAction",
        "index",
        "expireAfterSeconds",
    }
)


def _identity(value: Document) -> Document:
    return value


def _take(docs: Iterator[Document], count: int | None) -> list[Document]:
    out: list[Document] = []
    size = 0
    for doc in docs if count is None else itertools.islice(docs, count):
        out.append(doc)
        size += len(bson.encode(doc))
        if size >= _BATCH_BYTES:
            break
    return out


def _exhausted(cursor: _Cursor) -> bool:
    """Whether the cursor has nothing left (peeks one document and puts it back)."""
    assert cursor.docs is not None
    peek = next(cursor.docs, None)
    if peek is None:
        return True
    cursor.docs = itertools.chain((peek,), cursor.docs)
    return False


def _batch_size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise _bad_value(f"batchSize must be a non-negative number, not {value!r}")
    return int(value)


def _admin_only(db: str, name: str) -> None:
    if db != "admin":
        raise operation_failure(
            13, "Unauthorized", f"{name} may only be run against the admin database."
        )


def _too_old(number: int, current: int) -> OperationFailure:
    return operation_failure(
        225,
        "TransactionTooOld",
        f"Cannot start transaction {number} on session because a newer transaction "
        f"{current} has already started.",
    )


def _no_such_transaction(number: int, state: SessionState) -> OperationFailure:
    return operation_failure(
        251,
        "NoSuchTransaction",
        f"Given transaction number {number} does not match any in-progress transactions. "
        f"The active transaction number is {state.txn_number}",
        ["TransientTransactionError"],
    )


def _lsid_text(state: SessionState) -> str:
    raw = state.session_id.get("id")
    return str(uuid.UUID(bytes=bytes(raw))) if isinstance(raw, bytes) and len(raw) == 16 else "?"


def _session_key(ws: _WireSession) -> bytes:
    return bytes(ws.state.session_id["id"])


def _now() -> Any:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _write_reply(op: _Op, counts: Document, errors: list[Document]) -> Document:
    reply: Document = dict(counts)
    if errors:
        reply["writeErrors"] = errors
        if op.txn is not None:
            reply["ok"] = 1.0
            raise ReplyAfterAbort(reply)
    reply["ok"] = 1.0
    return reply


def _after_abort(total: Document, upserted: list[Document], error: Document) -> Document:
    reply: Document = dict(total)
    if upserted:
        reply["upserted"] = list(upserted)
    reply["writeErrors"] = [error]
    reply["ok"] = 1.0
    return reply


def _has_operators(update: Any) -> bool:
    return isinstance(update, Mapping) and any(str(k).startswith("$") for k in update)


def _is_replacement(stmt: Any) -> bool:
    u = stmt.get("u") if isinstance(stmt, Mapping) else None
    return isinstance(u, Mapping) and not any(str(k).startswith("$") for k in u)


def _one_update(ops: CollectionOps, stmt: Any) -> Document:
    """Apply one update statement ``{q, u, upsert, multi, ...}``; mongomock's raw result."""
    if not isinstance(stmt, Mapping):
        raise _type_mismatch("an update statement must be a document")
    q, u = stmt.get("q"), stmt.get("u")
    if not isinstance(q, Mapping):
        raise _type_mismatch("an update statement needs a document 'q'")
    if not isinstance(u, (Mapping, list)):
        raise _type_mismatch("an update statement needs a document or pipeline 'u'")
    upsert = bool(stmt.get("upsert"))
    multi = bool(stmt.get("multi"))
    array_filters = stmt.get("arrayFilters")
    sort = stmt.get("sort")
    q = dict(q)
    if upsert and _mentions(q, "$expr"):
        raise operation_failure(
            224,
            "QueryFeatureNotAllowed",
            "$expr is not allowed in the query predicate for an upsert",
        )
    mc = ops._mc
    with ops._translate():
        if _is_replacement(stmt):
            if multi:
                raise operation_failure(
                    9, "FailedToParse", "multi update is not supported for replacement-style update"
                )
            assert isinstance(u, Mapping)
            stored = encoded(u)[0]
            flt = ops._by_sort(q, list(sort.items()) if isinstance(sort, Mapping) else None)
            raw = mc.replace_one(flt, stored, upsert=upsert).raw_result
        else:
            kwargs: Document = {"upsert": upsert}
            if array_filters:
                kwargs["array_filters"] = array_filters
            if multi:
                raw = mc.update_many(q, u, **kwargs).raw_result
            else:
                flt = ops._by_sort(q, list(sort.items()) if isinstance(sort, Mapping) else None)
                raw = mc.update_one(flt, u, **kwargs).raw_result
    result: Document = {"n": raw.get("n", 0), "nModified": raw.get("nModified", 0)}
    if raw.get("upserted") is not None:
        result["upserted"] = raw["upserted"]
        result["n"] = 1
        result["nModified"] = 0
    return result


def _upserted_id(op: _Op, db: str, coll: str) -> Any:
    for (d, c, _key), pre in op.log.items():
        if d == db and c == coll and pre is None:
            doc = op.encoded.get((d, c, _key))
            if doc is not None:
                return bson.decode(doc).get("_id")
            return _key
    return None


def _options(store: Any) -> Document:
    return getattr(store, "_mongoledger_options", None) or {}


def _set_options(store: Any, options: Document) -> None:
    store._mongoledger_options = dict(options)


_UUIDS: weakref.WeakKeyDictionary[Any, bson.Binary] = weakref.WeakKeyDictionary()


def _collection_uuid(store: Any) -> bson.Binary:
    value = _UUIDS.get(store)
    if value is None:
        value = _UUIDS[store] = bson.Binary(uuid.uuid4().bytes, 4)
    return value


def _database_size(server: MemoryServer, db: str) -> int:
    total = 0
    for name in server._mock[db].list_collection_names():
        for doc in server._store[db][name]._documents.values():
            total += len(bson.encode(doc))
    return total


def error_reply(exc: BaseException, *, retryable_write: bool = False) -> Document:
    """The server's error reply for ``exc`` (raised by a command)."""
    if isinstance(exc, ReplyAfterAbort):
        return exc.reply
    if isinstance(exc, OperationFailure):
        details = dict(exc.details or {})
        reply: Document = {
            "ok": 0.0,
            "errmsg": details.get("errmsg") or str(exc),
            "code": exc.code if exc.code is not None else 8000,
            "codeName": details.get("codeName") or "",
        }
        labels = list(details.get("errorLabels") or exc._error_labels or ())
        if retryable_write and not labels and (exc.code in _RETRYABLE_ERROR_CODES):
            labels.append("RetryableWriteError")
        if labels:
            reply["errorLabels"] = labels
        for key in ("writeConcernError", "keyPattern", "keyValue"):
            if key in details:
                reply[key] = details[key]
        return reply
    if isinstance(exc, DocumentTooLarge):
        return {"ok": 0.0, "errmsg": str(exc), "code": 10334, "codeName": "BSONObjectTooLarge"}
    if isinstance(exc, WriteError):  # pragma: no cover - WriteError is an OperationFailure
        return {"ok": 0.0, "errmsg": str(exc), "code": exc.code or 2, "codeName": "BadValue"}
    if isinstance(exc, NotImplementedError):
        return {
            "ok": 0.0,
            "errmsg": f"not implemented by the mongoledger memory engine: {exc}",
            "code": 115,
            "codeName": "CommandNotSupported",
        }
    if isinstance(exc, (InvalidDocument, ValueError, TypeError, KeyError, PyMongoError)):
        return {
            "ok": 0.0,
            "errmsg": str(exc) or type(exc).__name__,
            "code": 2,
            "codeName": "BadValue",
        }
    return {
        "ok": 0.0,
        "errmsg": f"{type(exc).__name__}: {exc}",
        "code": 1,
        "codeName": "InternalError",
    }


_COMMANDS: weakref.WeakKeyDictionary[MemoryServer, Commands] = weakref.WeakKeyDictionary()
_COMMANDS_LOCK = threading.Lock()


def commands_for(server: MemoryServer) -> Commands:
    """The dispatcher of ``server`` (one per server: its cursors and sessions are shared by
    every client and connection)."""
    with _COMMANDS_LOCK:
        found = _COMMANDS.get(server)
        if found is None:
            found = _COMMANDS[server] = Commands(server)
        return found


def cluster_time_fields(server: MemoryServer) -> Document:
    """``$clusterTime`` and ``operationTime``, which replica-set members add to replies."""
    ts = server.cluster_time
    if ts == Timestamp(0, 0):
        ts = Timestamp(1, 1)
    return {
        "$clusterTime": {
            "clusterTime": ts,
            "signature": {"hash": bson.Binary(b"\x00" * 20), "keyId": Int64(0)},
        },
        "operationTime": ts,
    }
