"""What every command family shares: the steps a command runs as, argument parsing, the
error shapes, and ``Part`` (a family of commands of one dispatcher)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import bson
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

from mongoledger.memory._bson import MAX_BSON_SIZE, Document
from mongoledger.memory._changestream import StreamCore
from mongoledger.memory._engine import Engine
from mongoledger.memory._errors import operation_failure
from mongoledger.memory._ops import Call, CollectionOps
from mongoledger.memory._options import unsatisfied
from mongoledger.memory._session import SessionState

from . import _engine_api as engine

if TYPE_CHECKING:
    from . import Commands


_BATCH_BYTES = MAX_BSON_SIZE  # a batch stops once it reaches 16 MiB (at least one document)


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


def _identity(value: Document) -> Document:
    return value


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


def _now() -> Any:

    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


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


def cluster_time_fields(server: Engine) -> Document:
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


class Part:
    """A family of commands of one dispatcher: its handlers, and what they share."""

    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self.server: Engine = commands.server
        self._lock = commands.lock

    def handlers(self) -> dict[str, Handler]:
        raise NotImplementedError

    def ok(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        return {"ok": 1.0}

    def _ops(self, db: str, coll: str) -> CollectionOps:
        return CollectionOps(self.server, db, coll)

    def _exists(self, db: str, coll: str) -> bool:
        return engine.collection_exists(self.server, db, coll)


Handler = Callable[[str, Mapping[str, Any], Any, Any], Next]


# Commands that honour a write concern (a server answers writeConcernError when it cannot be met).
WRITE_CONCERN_COMMANDS = frozenset(
    {
        "insert",
        "update",
        "delete",
        "findAndModify",
        "findandmodify",
        "commitTransaction",
        "abortTransaction",
        "create",
        "drop",
        "dropDatabase",
        "collMod",
        "renameCollection",
        "createIndexes",
        "dropIndexes",
        "deleteIndexes",
    }
)


def write_concern_error(body: Mapping[str, Any]) -> Document | None:
    """The ``writeConcernError`` a one-member replica set answers for ``body``'s write concern
    (None: satisfiable; the rule is the clients' too). A malformed ``w`` fails the command
    instead, as on a server."""
    concern = body.get("writeConcern")
    if not isinstance(concern, Mapping) or "w" not in concern:
        return None
    w = concern["w"]
    if isinstance(w, bool) or not isinstance(w, (int, str)):
        raise operation_failure(9, "FailedToParse", f"w has to be a number or string: {w!r}")
    if isinstance(w, int) and w < 0:
        raise operation_failure(9, "FailedToParse", f"w has to be a non-negative number: {w}")
    return unsatisfied(concern)
