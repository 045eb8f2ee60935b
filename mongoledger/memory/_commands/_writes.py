"""Writes: ``insert``, ``update``, ``delete`` (ordered and unordered, ``writeErrors``) and
``findAndModify``, with the server's reply shapes; a write error inside a transaction aborts
it, as on a server."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import bson
from bson import ObjectId

from mongoledger.memory._bson import Document, encoded
from mongoledger.memory._engine import Engine, Op
from mongoledger.memory._errors import operation_failure
from mongoledger.memory._ops import Call, CollectionOps, each_statement
from mongoledger.memory._session import SessionState
from mongoledger.memory._storage import mongomock

from . import _engine_api as engine
from ._common import (
    _STATEMENT_ERRORS,
    EngineStep,
    Handler,
    Next,
    Part,
    ReplyAfterAbort,
    _bad_value,
    _collection_name,
    _doc_option,
    _identity,
    _sort_option,
    _type_mismatch,
    _write_error,
)

MAX_WRITE_BATCH = 100_000


def _counted_reply(
    op: Op, items: list[Any], ordered: bool, ns: str, apply: Callable[[int, Any], int]
) -> Document:
    """Apply each statement of an ``insert`` or ``delete`` command (``apply`` answers how
    many documents it wrote); the reply: their total ``n``, and a write error per statement
    that failed (an ordered command stops at its first)."""
    n = 0

    def count(index: int, item: Any) -> None:
        nonlocal n
        n += apply(index, item)

    def error(index: int, _item: Any, exc: Exception) -> Document:
        return _write_error(index, exc, ns)

    errors = each_statement(items, ordered, count, _STATEMENT_ERRORS, error)
    reply: Document = {"n": n}
    if errors:
        reply["writeErrors"] = errors
        if engine.in_transaction(op):
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
    ops._check_upsert(q, upsert)
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


def _upserted_id(server: Engine, op: Op, db: str, coll: str) -> Any:
    """The ``_id`` of the document the operation inserted into ``db.coll``."""
    for key, pre in engine.written(op, db, coll):
        if pre is None:
            doc = engine.stored_document(server, db, coll, key)
            return None if doc is None else doc["_id"]
    return None


class Writes(Part):
    """Write commands, one engine call per statement where a statement can fail alone."""

    def handlers(self) -> dict[str, Handler]:
        return {
            "insert": self._insert,
            "update": self._update,
            "delete": self._delete,
            "findAndModify": self._find_and_modify,
            "findandmodify": self._find_and_modify,
        }

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

        def insert_one(index: int, document: Any) -> int:
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
            mc_ops._mc.insert_encoded([(doc, raw)], many=False, ordered=True)
            return 1

        def fn(op: Op) -> Document:
            return _counted_reply(op, documents, ordered, ns, insert_one)

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

            def fn(op: Op) -> Document | None:
                try:
                    return _one_update(ops, stmt)
                except _STATEMENT_ERRORS as exc:
                    if getattr(exc, "_memory_rollback", False):
                        raise
                    error = _write_error(index, exc, ns)
                    if engine.in_transaction(op):
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

        def delete(_index: int, stmt: Any) -> int:
            if not isinstance(stmt, Mapping) or not isinstance(stmt.get("q"), Mapping):
                raise _type_mismatch("a delete statement needs a document 'q'")
            limit = stmt.get("limit", 0)
            if limit not in (0, 1):
                raise _bad_value(f"The limit field in delete objects must be 0 or 1. Got {limit}")
            mc = ops._mc
            return int(
                (mc.delete_one if limit == 1 else mc.delete_many)(dict(stmt["q"])).deleted_count
            )

        def fn(op: Op) -> Document:
            return _counted_reply(op, statements, ordered, ns, delete)

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

        def fn(op: Op) -> Document:
            mc = ops._mc
            order = mongomock.helpers.create_index_list(sort) if sort else None
            ops._check_upsert(flt, upsert)
            if method == "delete":
                value = mc.find_one_and_delete(flt, projection=fields, sort=order)
                last: Document = {"n": 0 if value is None else 1}
                return {"lastErrorObject": last, "value": value, "ok": 1.0}
            payload = update
            if method == "replace":
                payload = dict(update or {})
                mongomock.collection.validate_ok_for_replace(payload)
            with ops._translate():
                value = mc._find_and_modify(flt, fields, payload, upsert, order, new)
            # What the command did, from the operation's write log (this command's only):
            # a matched document is logged even when its update changed nothing.
            pres = [pre for _key, pre in engine.written(op, db, coll)]
            existed = any(pre is not None for pre in pres)
            inserted = any(pre is None for pre in pres)
            last = {"n": 1 if existed or inserted else 0, "updatedExisting": existed}
            if inserted:
                last["upserted"] = _upserted_id(self.server, op, db, coll)
            return {"lastErrorObject": last, "value": value, "ok": 1.0}

        call = Call("findAndModify", fn, f"findAndModify on {ns}", kind, retryable=False)
        return EngineStep(call, session, _identity)
