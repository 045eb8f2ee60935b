"""``MongoClient.bulk_write``: one command writing to any namespaces (MongoDB 8's ``bulkWrite``).

The models are PyMongo's ``InsertOne`` ... ``DeleteMany``, each naming its ``namespace``; the
result and errors are PyMongo's ``ClientBulkWriteResult`` and ``ClientBulkWriteException``
(built by PyMongo's own code from the reply the server would send). Inside a transaction
a write error aborts the transaction, as on a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import common
from pymongo._client_bulk_shared import _throw_client_bulk_write_exception
from pymongo.errors import InvalidOperation, OperationFailure
from pymongo.operations import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.results import ClientBulkWriteResult, DeleteResult, InsertOneResult, UpdateResult
from pymongo.write_concern import WriteConcern

from ._bson import Document
from ._engine import Engine, Op
from ._errors import CODE_NAMES
from ._ops import Call, CollectionOps, each_statement, errmsg, request_kind
from ._options import write_concern_error

__all__ = ["ClientBulk", "client_bulk_write"]

_MODELS = (InsertOne, ReplaceOne, UpdateOne, UpdateMany, DeleteOne, DeleteMany)


@dataclass
class ClientBulk:
    """A validated client bulk write: the engine call, and how to read its reply."""

    call: Call
    verbose: bool

    def result(self, full_result: Document, wc: WriteConcern | None) -> ClientBulkWriteResult:
        """PyMongo's answer to the reply (``wc``: None inside a transaction)."""
        error = write_concern_error(wc)
        if error is not None:
            full_result["writeConcernErrors"].append(error)
        if full_result["error"] or full_result["writeErrors"] or full_result["writeConcernErrors"]:
            _throw_client_bulk_write_exception(full_result, self.verbose)
        return ClientBulkWriteResult(full_result, True, self.verbose)


def client_bulk_write(
    server: Engine,
    models: Sequence[Any],
    ordered: bool,
    verbose: bool,
    write_concern: WriteConcern,
) -> ClientBulk:
    """Validate ``models`` as PyMongo does and build the engine call that runs them."""
    if not write_concern.acknowledged and verbose:
        raise InvalidOperation("Cannot request unacknowledged write concern and verbose results")
    if not write_concern.acknowledged and ordered:
        raise InvalidOperation("Cannot request unacknowledged write concern and ordered writes")
    common.validate_list("models", models)
    plan: list[tuple[str, CollectionOps, Any]] = []
    for model in models:
        if not isinstance(model, _MODELS):
            raise TypeError(f"{model!r} is not a valid request")
        namespace = model._namespace
        if not namespace:
            raise InvalidOperation(
                "MongoClient.bulk_write requires a namespace to be provided for each write "
                "operation"
            )
        _, kind = request_kind(model)
        db, _, coll = str(namespace).partition(".")
        plan.append((kind, CollectionOps(server, db, coll), model))
    if not plan:
        raise InvalidOperation("No operations to execute")

    def fn(op: Op) -> Document:
        op.kinds = {}  # each write is of its model's kind
        full: Document = {
            "anySuccessful": False,
            "error": None,
            "writeErrors": [],
            "writeConcernErrors": [],
            "nInserted": 0,
            "nUpserted": 0,
            "nMatched": 0,
            "nModified": 0,
            "nDeleted": 0,
            "insertResults": {},
            "updateResults": {},
            "deleteResults": {},
        }

        def run(idx: int, step: tuple[str, CollectionOps, Any]) -> None:
            kind, ops, model = step
            op.kind = kind
            reply = ops.apply(model)
            server._statement_done(op)
            full["anySuccessful"] = True
            _count(full, idx, kind, model, reply, verbose)

        full["writeErrors"] = each_statement(plan, ordered, run, OperationFailure, _write_error)
        if full["writeErrors"]:
            op.failed = True
        return full

    return ClientBulk(Call("bulkWrite", fn, "bulk_write", retryable=False), verbose)


def _write_error(idx: int, _step: object, exc: OperationFailure) -> Document:
    """The reply's entry for a statement that failed."""
    code = exc.code or 0
    return {
        "ok": 0.0,
        "idx": idx,
        "code": code,
        "codeName": CODE_NAMES.get(code, ""),
        "errmsg": errmsg(exc),
    }


def _count(full: Document, idx: int, kind: str, model: Any, reply: Document, verbose: bool) -> None:
    """Add one statement's reply to the summary (and to the verbose results)."""
    if kind == "insert":
        full["nInserted"] += 1
        if verbose:
            doc = model._doc
            full["insertResults"][idx] = InsertOneResult(doc.get("_id"), acknowledged=True)
        return
    if kind == "delete":
        full["nDeleted"] += reply["n"]
        if verbose:
            raw = {"ok": 1.0, "idx": idx, "n": reply["n"]}
            full["deleteResults"][idx] = DeleteResult(raw, acknowledged=True)
        return
    raw = {"ok": 1.0, "idx": idx, "n": reply["n"], "nModified": reply["nModified"]}
    if "upserted" in reply:
        full["nUpserted"] += 1
        raw["upserted"] = {"_id": reply["upserted"]}
    else:
        full["nMatched"] += reply["n"]
        full["nModified"] += reply["nModified"]
    if verbose:
        full["updateResults"][idx] = UpdateResult(raw, acknowledged=True, in_client_bulk=True)
