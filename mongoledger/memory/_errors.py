"""The errors the engine answers with: MongoDB's codes, code names, labels and messages."""

from __future__ import annotations

from typing import Any, TypeVar

from pymongo.errors import InvalidOperation, OperationFailure

__all__ = [
    "CODE_NAMES",
    "StrictModeError",
    "no_such_transaction",
    "not_in_transaction",
    "operation_failure",
    "rollback_marked",
    "write_conflict",
]


class StrictModeError(InvalidOperation):
    """An operation ran without ``session=`` while its thread/task has a transaction open."""


def operation_failure(
    code: int, code_name: str, message: str, labels: tuple[str, ...] | list[str] = ()
) -> OperationFailure:
    """The error PyMongo raises for a command the server answered with ``ok: 0``."""
    details: dict[str, Any] = {"ok": 0.0, "errmsg": message, "code": code, "codeName": code_name}
    if labels:
        details["errorLabels"] = list(labels)
    return OperationFailure(message, code, details)


def no_such_transaction(number: int) -> OperationFailure:
    return operation_failure(
        251,
        "NoSuchTransaction",
        f"Transaction with {{ txnNumber: {number} }} has been aborted.",
        labels=("TransientTransactionError",),
    )


def write_conflict() -> OperationFailure:
    exc = operation_failure(
        112,
        "WriteConflict",
        "Caused by :: Write conflict during plan execution and yielding is disabled. :: "
        "Please retry your operation or multi-document transaction.",
        ["TransientTransactionError"],
    )
    return rollback_marked(exc)


def not_in_transaction(command: str) -> OperationFailure:
    """A command the server refuses inside a multi-document transaction (263)."""
    return operation_failure(
        263,
        "OperationNotSupportedInTransaction",
        f"Cannot run '{command}' in a multi-document transaction.",
    )


E = TypeVar("E", bound=BaseException)


def rollback_marked(exc: E) -> E:
    """Mark an error raised mid-operation: the engine undoes the operation's partial writes."""
    exc._memory_rollback = True  # type: ignore[attr-defined]
    return exc


CODE_NAMES = {
    2: "BadValue",
    6: "HostUnreachable",
    7: "HostNotFound",
    11: "UserNotFound",
    26: "NamespaceNotFound",
    47: "NoMatchingDocument",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    64: "WriteConcernFailed",
    79: "UnknownReplWriteConcern",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    100: "UnsatisfiableWriteConcern",
    112: "WriteConflict",
    189: "PrimarySteppedDown",
    251: "NoSuchTransaction",
    262: "ExceededTimeLimit",
    263: "OperationNotSupportedInTransaction",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
}
