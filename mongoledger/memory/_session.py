"""The client session: PyMongo's transaction state machine and the rules it enforces.

Shared by the sync and async sessions. The states, their transitions and every message are
PyMongo's (``pymongo/client_session_shared.py`` and ``client_session.py``): options inherit
from the call, then the session's ``default_transaction_options``, then the client; an
unacknowledged write concern cannot start a transaction; a read inside a transaction whose
read preference is not primary is refused before anything is sent; an operation on the
session after its transaction ended resets it, so a later ``commit_transaction`` answers "No
transaction started"; commit and abort are retried once after a retryable error, and a commit
whose outcome is unknown gets the ``UnknownTransactionCommitResult`` label.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import bson
from pymongo.client_session_shared import TransactionOptions
from pymongo.errors import (
    ConnectionFailure,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)
from pymongo.helpers_shared import _RETRYABLE_ERROR_CODES
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from ._bson import Document
from ._errors import no_such_transaction
from ._transactions import Ctx, Txn

if TYPE_CHECKING:
    from bson.timestamp import Timestamp


class Server(Protocol):
    """What a session asks of the server (``_engine``): to end its transaction, and to know
    which sessions have one open (for strict mode)."""

    def _commit(self, session: SessionState) -> None: ...

    def _abort_session(self, session: SessionState) -> None: ...

    def _abort(self, txn: Txn, *, count: bool = True) -> None: ...

    def _session_opened(self, session: SessionState) -> None: ...

    def _session_closed(self, session: SessionState) -> None: ...


__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "SessionState",
    "current_ctx",
    "describe_ctx",
    "is_retryable",
    "make_timeout_error",
    "max_time_expired_error",
    "within_time_limit",
]


def current_ctx() -> Ctx:
    """The owner context: the thread, plus the asyncio task when there is one."""
    # asyncio's own check (get_running_loop() is built on it): unlike current_task(), it
    # answers None in a thread without a loop instead of raising, which costs.
    loop = asyncio._get_running_loop()
    task = None if loop is None else asyncio.current_task(loop)
    return (threading.get_ident(), id(task) if task is not None else 0)


def describe_ctx(ctx: Ctx) -> str:
    return "task" if ctx[1] else "thread"


class TxnState:
    NONE = "none"
    STARTING = "starting"
    IN_PROGRESS = "in_progress"
    COMMITTED = "committed"
    COMMITTED_EMPTY = "committed_empty"
    ABORTED = "aborted"


_UNKNOWN_COMMIT_ERROR_CODES = _RETRYABLE_ERROR_CODES | frozenset([64, 50])


_SERVER_DEFAULTS: dict[str, Any] = {
    "read_concern": ReadConcern(),
    "write_concern": WriteConcern(),
    "read_preference": ReadPreference.PRIMARY,
}


class SessionState:
    """One logical session's state, shared by the sync and async sessions."""

    def __init__(
        self,
        server: Server,
        client: Any,  # None: a session the wire opened
        *,
        default_transaction_options: TransactionOptions | None = None,
        snapshot: bool = False,
    ) -> None:
        self.server = server
        self.client = client  # what transaction options inherit from last
        self.default_transaction_options = default_transaction_options
        self.snapshot = bool(snapshot)
        self.session_id: Document = {"id": bson.Binary(uuid.uuid4().bytes, 4)}
        self.txn_number = 0
        self.state = TxnState.NONE
        self.options: TransactionOptions | None = None
        self.txn: Txn | None = None
        self.txn_ctx: Ctx = current_ctx()
        self.ended = False
        self.operation_time: Timestamp | None = None

    @property
    def in_transaction(self) -> bool:
        return self.state in (TxnState.STARTING, TxnState.IN_PROGRESS)

    def check_ended(self) -> None:
        if self.ended:
            raise InvalidOperation("Cannot use ended session")

    def _inherit(self, name: str, value: Any) -> Any:
        if value:
            return value
        defaults = self.default_transaction_options
        parent = defaults and getattr(defaults, name)
        if parent:
            return parent
        if self.client is None:  # the wire's sessions: the server's defaults
            return _SERVER_DEFAULTS[name]
        return getattr(self.client, name)

    def start_transaction(
        self,
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> None:
        self.check_ended()
        if self.snapshot:
            raise InvalidOperation("Transactions are not supported in snapshot sessions")
        if self.in_transaction:
            raise InvalidOperation("Transaction already in progress")
        if max_commit_time_ms is None and self.default_transaction_options is not None:
            max_commit_time_ms = self.default_transaction_options.max_commit_time_ms
        self.options = _transaction_options(
            self._inherit("read_concern", read_concern),
            self._inherit("write_concern", write_concern),
            self._inherit("read_preference", read_preference),
            max_commit_time_ms,
        )
        if self.txn is not None and not self.txn.aborted:
            # A new txnNumber aborts the server-side transaction left open (e.g. failed commit).
            self.server._abort(self.txn, count=False)
        self.txn = None
        self.txn_number += 1
        self.state = TxnState.STARTING
        self.txn_ctx = current_ctx()
        self.server._session_opened(self)

    def txn_for_op(self, *, read: bool = False) -> Txn | None:
        """The server transaction an operation on this session joins (started lazily); an
        operation after the transaction ended resets the session (PyMongo's
        ``_select_server``); a read in a transaction needs a primary read preference."""
        self.check_ended()
        state = self.state
        if state is not TxnState.STARTING and state is not TxnState.IN_PROGRESS:
            self.state = TxnState.NONE  # not in a transaction
            return None
        if read:
            assert self.options is not None
            preference = self.options.read_preference
            if preference != ReadPreference.PRIMARY:
                raise InvalidOperation(
                    f"read preference in a transaction must be primary, not: {preference!r}"
                )
        if self.state == TxnState.STARTING:
            self.txn = Txn(self, self.txn_number, self.txn_ctx)
            self.state = TxnState.IN_PROGRESS
        if self.txn is not None and self.txn.aborted:
            raise no_such_transaction(self.txn_number)
        return self.txn

    @property
    def txn_write_concern(self) -> Any:
        return None if self.options is None else self.options.write_concern

    def commit_transaction(self) -> None:
        self.check_ended()
        state = self.state
        if state == TxnState.NONE:
            raise InvalidOperation("No transaction started")
        if state in (TxnState.STARTING, TxnState.COMMITTED_EMPTY):
            # Server transaction was never started, no need to send a command.
            self.state = TxnState.COMMITTED_EMPTY
            self.server._session_closed(self)
            return
        if state == TxnState.ABORTED:
            raise InvalidOperation("Cannot call commitTransaction after calling abortTransaction")
        # COMMITTED: an explicit retry of the commit; it is in progress again until it ends.
        self.state = TxnState.IN_PROGRESS
        try:
            self._finish_with_retry(commit=True)
        except ConnectionFailure as exc:
            exc._remove_error_label("TransientTransactionError")
            exc._add_error_label("UnknownTransactionCommitResult")
            raise
        except WTimeoutError as exc:
            exc._add_error_label("UnknownTransactionCommitResult")
            raise
        except OperationFailure as exc:
            if exc.code in _UNKNOWN_COMMIT_ERROR_CODES:
                exc._add_error_label("UnknownTransactionCommitResult")
            raise
        finally:
            self.state = TxnState.COMMITTED
            self.server._session_closed(self)

    def abort_transaction(self) -> None:
        self.check_ended()
        state = self.state
        if state == TxnState.NONE:
            raise InvalidOperation("No transaction started")
        if state == TxnState.STARTING:
            self.state = TxnState.ABORTED
            self.server._session_closed(self)
            return
        if state == TxnState.ABORTED:
            raise InvalidOperation("Cannot call abortTransaction twice")
        if state in (TxnState.COMMITTED, TxnState.COMMITTED_EMPTY):
            raise InvalidOperation("Cannot call abortTransaction after calling commitTransaction")
        try:
            self._finish_with_retry(commit=False)
        except (OperationFailure, ConnectionFailure):
            pass  # the transactions spec says to ignore abortTransaction errors
        finally:
            self.state = TxnState.ABORTED
            self.server._session_closed(self)

    def _finish_with_retry(self, *, commit: bool) -> None:
        # PyMongo retries commitTransaction/abortTransaction once after a retryable error.
        for attempt in range(2):
            try:
                if commit:
                    self.server._commit(self)
                else:
                    self.server._abort_session(self)
            except PyMongoError as exc:
                if attempt == 0 and is_retryable(exc):
                    continue
                raise
            return

    def end_session(self) -> None:
        if self.ended:
            return
        if self.in_transaction:
            self.abort_transaction()
        elif self.txn is not None and not self.txn.aborted:
            self.server._abort(self.txn, count=False)
        self.ended = True


_last_options: tuple[tuple[Any, ...], TransactionOptions] | None = None


def _transaction_options(*values: Any) -> TransactionOptions:
    """``TransactionOptions(*values)``, validated as PyMongo does (an unacknowledged write
    concern is a ConfigurationError naming it); the options of the last call are reused when
    the values are the same objects (a ledger starts every transaction with the same ones)."""
    global _last_options  # noqa: PLW0603 - a one-entry cache; a race only misses it
    last = _last_options
    if last is not None and all(a is b for a, b in zip(last[0], values, strict=True)):
        return last[1]
    options = TransactionOptions(*values)
    _last_options = (values, options)
    return options


# with_transaction's constants and helpers, as in PyMongo's client_session_shared.
WITH_TRANSACTION_RETRY_TIME_LIMIT = 120
BACKOFF_MAX = 0.500
BACKOFF_INITIAL = 0.005


def within_time_limit(start_time: float, backoff: float = 0) -> bool:
    return time.monotonic() + backoff - start_time < WITH_TRANSACTION_RETRY_TIME_LIMIT


def max_time_expired_error(exc: PyMongoError) -> bool:
    return isinstance(exc, OperationFailure) and exc.code == 50


def make_timeout_error(error: BaseException) -> PyMongoError:
    from pymongo.errors import NetworkTimeout

    timeout_error = NetworkTimeout(str(error))
    if isinstance(error, PyMongoError):
        for label in error._error_labels:
            timeout_error._add_error_label(label)
    return timeout_error


def is_retryable(exc: BaseException) -> bool:
    from pymongo.errors import AutoReconnect

    if isinstance(exc, AutoReconnect):
        return True
    if isinstance(exc, OperationFailure):
        return exc.code in _RETRYABLE_ERROR_CODES or exc.has_error_label("RetryableWriteError")
    return False
