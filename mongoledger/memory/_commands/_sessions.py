"""Sessions over the wire: ``lsid``/``txnNumber``/``startTransaction``/``autocommit`` onto
the engine's session state machine; ``commitTransaction``, ``abortTransaction``,
``endSessions``; retryable writes answered once; transactions aborted at their lifetime limit
(and preempted by a drop that needs their collection)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import bson
from pymongo.errors import (
    OperationFailure,
)

from mongoledger.memory._bson import Document
from mongoledger.memory._errors import operation_failure
from mongoledger.memory._session import SessionState

from . import _engine_api as engine
from ._common import (
    ConnectionInfo,
    Handler,
    Next,
    Part,
    _admin_only,
    _bad_value,
    _then,
    _type_mismatch,
)

if TYPE_CHECKING:
    from . import Commands


TRANSACTION_LIFETIME_SECONDS = 60  # the server's transactionLifetimeLimitSeconds


SESSION_IDLE_SECONDS = 30 * 60  # the server's logicalSessionTimeoutMinutes


_RETRYABLE_WRITES = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify"})


@dataclass
class _WireSession:
    state: SessionState
    txn_number: int = 0
    retry_number: int | None = None  # the txnNumber of the last retryable write...
    retry_reply: Document | None = None  # ...and its reply
    txn_started: float = 0.0
    last_used: float = field(default_factory=time.monotonic)


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


class Sessions(Part):
    """The wire sessions table: transactions and retryable writes over the wire."""

    def __init__(self, commands: Commands) -> None:
        super().__init__(commands)
        self._sessions: dict[bytes, _WireSession] = {}
        # setParameter transactionLifetimeLimitSeconds changes it, as on a server.
        self.transaction_lifetime: float = TRANSACTION_LIFETIME_SECONDS

    def handlers(self) -> dict[str, Handler]:
        return {
            "commitTransaction": self._commit_transaction,
            "abortTransaction": self._abort_transaction,
            "endSessions": self._end_sessions,
            "killSessions": self._end_sessions,
            "refreshSessions": self.ok,
            "startSession": self._start_session,
        }

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
                ws = self._sessions[key] = _WireSession(engine.new_session(self.server, key))
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
                if number == ws.txn_number and engine.phase(state) != engine.NONE:
                    raise operation_failure(
                        225,
                        "TransactionTooOld",
                        f"Cannot start transaction {number} on session "
                        f"{engine.lsid_text(state)} because a newer transaction has already "
                        "started",
                    )
                engine.start_transaction(self.server, state, number)
                ws.txn_number = number
                ws.txn_started = time.monotonic()
                ws.retry_number = ws.retry_reply = None
                self.transaction_started()
                return state
            if body.get("startTransaction") is not None:
                raise _bad_value("startTransaction must be true when it is given")
            if number != ws.txn_number or engine.phase(state) == engine.NONE:
                raise _no_such_transaction(number, state)
            if name in ("commitTransaction", "abortTransaction"):
                return state
            if not state.in_transaction:
                if engine.phase(state) in (engine.COMMITTED, engine.COMMITTED_EMPTY):
                    raise operation_failure(
                        256,
                        "TransactionCommitted",
                        f"Transaction with {{ txnNumber: {number} }} has been committed.",
                    )
                raise _no_such_transaction(number, state)
            return state

    def _end_transaction(self, ws: _WireSession) -> None:
        """Abort what the session left open (a new txnNumber supersedes it, as on a server)."""
        engine.end_transaction(self.server, ws.state)

    def _commit_transaction(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        _admin_only(db, "commitTransaction")
        if session is None:
            raise operation_failure(
                50768, "Location50768", "commitTransaction must be run within a transaction"
            )
        if engine.phase(session) == engine.ABORTED:
            raise _no_such_transaction(session.txn_number, session)
        engine.commit(self.server, session)
        return {"ok": 1.0}

    def _abort_transaction(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        _admin_only(db, "abortTransaction")
        if session is None:
            raise operation_failure(
                50768, "Location50768", "abortTransaction must be run within a transaction"
            )
        if engine.phase(session) in (engine.COMMITTED, engine.COMMITTED_EMPTY):
            raise operation_failure(
                256,
                "TransactionCommitted",
                f"Transaction with {{ txnNumber: {session.txn_number} }} has been committed.",
            )
        if engine.phase(session) == engine.ABORTED:
            raise _no_such_transaction(session.txn_number, session)
        engine.abort(self.server, session)
        return {"ok": 1.0}

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
        """Abort transactions past the lifetime limit and forget sessions idle past theirs;
        returns the seconds until the next deadline."""
        now = time.monotonic() if now is None else now
        lifetime = self.transaction_lifetime
        upcoming = [now + SESSION_IDLE_SECONDS]
        with self._lock:
            for ws in list(self._sessions.values()):
                if ws.state.in_transaction:
                    if now - ws.txn_started >= lifetime:
                        self._end_transaction(ws)
                    else:
                        upcoming.append(ws.txn_started + lifetime)
                elif now - ws.last_used > SESSION_IDLE_SECONDS:
                    self._sessions.pop(engine.session_key(ws.state), None)
        return max(min(upcoming) - now, 0.01)

    def transaction_started(self) -> None:
        """A hook the wire server sets to wake its reaper (a new deadline exists)."""

    def _preempt(self, db: str, coll: str | None) -> None:
        """Abort the wire transactions holding writes in ``db`` (``coll``), as a server's
        DDL preempts idle transactions whose locks it needs instead of waiting for them."""
        with self._lock:
            for ws in self._sessions.values():
                if engine.transaction_touches(ws.state, db, coll):
                    self._end_transaction(ws)
