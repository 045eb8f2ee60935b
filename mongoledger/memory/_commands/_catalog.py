"""The catalog: collections (``create``, ``drop``, ``collMod``, ``renameCollection``,
``listCollections``), databases (``dropDatabase``, ``listDatabases``, ``dbStats``) and indexes
(``createIndexes``, ``listIndexes``, ``dropIndexes``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bson
from bson.int64 import Int64

from mongoledger.memory._bson import Document
from mongoledger.memory._engine import Engine, Op
from mongoledger.memory._errors import operation_failure
from mongoledger.memory._ops import Call
from mongoledger.memory._session import SessionState
from mongoledger.memory._storage import mongomock

from . import _engine_api as engine
from ._common import (
    _GENERIC_FIELDS,
    EngineStep,
    Handler,
    Next,
    Part,
    _admin_only,
    _bad_value,
    _batch_size,
    _collection_name,
    _doc_option,
    _identity,
    _ns_not_found,
    _type_mismatch,
)


def _options_of(command: str, body: Mapping[str, Any]) -> Document:
    """The collection options of a ``create``/``collMod`` body (the engine checks them)."""
    return {k: v for k, v in body.items() if k not in _GENERIC_FIELDS and k != command}


def _database_size(server: Engine, db: str) -> int:
    return sum(
        len(bson.encode(doc))
        for name in engine.collection_names(server, db)
        for doc in engine.documents(server, db, name)
    )


class Catalog(Part):
    """Collections, databases and indexes."""

    def handlers(self) -> dict[str, Handler]:
        return {
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
            "dbStats": self._db_stats,
            "collStats": self._coll_stats,
        }

    def _create(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "create")
        options = _options_of("create", body)

        def fn(op: Op) -> Document:
            return engine.create_collection(self.server, op, db, coll, options)

        return EngineStep(
            Call("create", fn, f"create on {db}.{coll}", retryable=False), session, _identity
        )

    def _drop(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "drop")
        if session is None:
            self.commands.sessions._preempt(db, coll)
        ns = f"{db}.{coll}"
        ops = self._ops(db, coll)
        dropping = ops.drop()

        def fn(op: Op) -> Document:
            existed = self._exists(db, coll)
            count = 1 + len(engine.index_specs(self.server, db, coll)) if existed else 0
            dropping.fn(op)
            reply: Document = {"ok": 1.0}
            if existed:
                reply = {"nIndexesWas": count, "ns": ns, "ok": 1.0}
            return reply

        return EngineStep(Call("drop", fn, f"drop on {ns}", retryable=False), session, _identity)

    def _drop_database(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        if session is None:
            self.commands.sessions._preempt(db, None)

        def fn(op: Op) -> Document:
            engine.drop_database(self.server, op, db)
            return {"dropped": db, "ok": 1.0}

        call = Call("dropDatabase", fn, f"dropDatabase on {db}", retryable=False)
        return EngineStep(call, session, _identity)

    def _coll_mod(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "collMod")
        changes = _options_of("collMod", body)

        def fn(op: Op) -> Document:
            return engine.coll_mod(self.server, op, db, coll, changes)

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
        drop_target = bool(body.get("dropTarget"))

        def fn(op: Op) -> Document:
            source_ns, target_ns = (src_db, src_coll), (dst_db, dst_coll)
            return engine.rename_collection(self.server, op, source_ns, target_ns, drop_target)

        call = Call("renameCollection", fn, f"renameCollection of {source}", retryable=False)
        return EngineStep(call, session, _identity)

    def _list_collections(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        flt = _doc_option(body, "filter") or {}
        name_only = bool(body.get("nameOnly"))
        batch = _batch_size((body.get("cursor") or {}).get("batchSize"))

        def fn(_op: Op) -> list[Document]:
            out = []
            for name in sorted(engine.collection_names(self.server, db)):
                entry: Document = {"name": name, "type": "collection"}
                if not name_only:
                    entry["options"] = engine.collection_options(self.server, db, name)
                    uuid = engine.collection_uuid(self.server, db, name)
                    entry["info"] = {"readOnly": False, "uuid": uuid}
                    entry["idIndex"] = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
                if not flt or mongomock.filtering.filter_applies(flt, entry):
                    out.append(entry)
            return out

        ns = f"{db}.$cmd.listCollections"
        call = Call("listCollections", fn, f"listCollections on {db}", read=True)
        reads = self.commands.reads
        return EngineStep(
            call, session, lambda docs: reads._first_batch(ns, docs, batch, False, session)
        )

    def _list_databases(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        _admin_only(db, "listDatabases")
        name_only = bool(body.get("nameOnly"))
        flt = _doc_option(body, "filter") or {}

        def fn(_op: Op) -> Document:
            dbs = []
            for name in sorted(engine.database_names(self.server)):
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

        return EngineStep(Call("listDatabases", fn, "listDatabases", read=True), session, _identity)

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

        def fn(op: Op) -> Document:
            existed = self._exists(db, coll)
            before = 1 + len(engine.index_specs(self.server, db, coll)) if existed else 0
            wanted = [(keys, options) for keys, options in parsed if keys != [("_id", 1)]]
            engine.create_indexes(self.server, op, db, coll, wanted)
            if not wanted and not existed:  # only _id: the collection itself
                engine.create_collection(self.server, op, db, coll, {})
            after = 1 + len(engine.index_specs(self.server, db, coll))
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

        def fn(_op: Op) -> list[Document]:
            if not self._exists(db, coll):
                raise _ns_not_found(f"ns does not exist: {ns}")
            out = []
            for ix in engine.list_indexes(self.server, db, coll):
                entry: Document = {"v": 2, "key": dict(ix["key"]), "name": ix["name"]}
                for k, v in ix.items():
                    if k not in ("v", "key", "name"):
                        entry[k] = v
                out.append(entry)
            return out

        call = Call("listIndexes", fn, f"listIndexes on {ns}", read=True)
        reads = self.commands.reads
        return EngineStep(
            call, session, lambda docs: reads._first_batch(ns, docs, batch, False, session)
        )

    def _drop_indexes(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, next(iter(body)))
        which = body.get("index")

        def fn(op: Op) -> Document:
            if not self._exists(db, coll):
                raise _ns_not_found(f"ns not found {db}.{coll}")
            indexes = engine.index_specs(self.server, db, coll)
            count = 1 + len(indexes)
            if which == "*":
                for name in indexes:
                    engine.drop_index(self.server, op, db, coll, name)
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
                names = [n for n, ix in indexes.items() if list(ix["key"]) == keys]
                if not names:
                    raise operation_failure(
                        27, "IndexNotFound", f"can't find index with key: {dict(which)!r}"
                    )
            else:
                raise _type_mismatch("dropIndexes takes an index name, names, or key pattern")
            for name in names:
                if name == "_id_":
                    raise operation_failure(72, "InvalidOptions", "cannot drop _id index")
                if name not in indexes:
                    raise operation_failure(
                        27, "IndexNotFound", f"index not found with name [{name}]"
                    )
            for name in names:
                engine.drop_index(self.server, op, db, coll, name)
            return {"nIndexesWas": count, "ok": 1.0}

        call = Call("dropIndexes", fn, f"dropIndexes on {db}.{coll}", retryable=False)
        return EngineStep(call, session, _identity)

    def _db_stats(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        def fn(_op: Op) -> Document:
            names = engine.collection_names(self.server, db)
            objects = sum(engine.document_count(self.server, db, n) for n in names)
            size = _database_size(self.server, db)
            return {
                "db": db,
                "collections": len(names),
                "views": 0,
                "objects": objects,
                "dataSize": float(size),
                "storageSize": float(size),
                "indexes": sum(1 + len(engine.index_specs(self.server, db, n)) for n in names),
                "ok": 1.0,
            }

        return EngineStep(Call("dbStats", fn, f"dbStats on {db}", read=True), session, _identity)

    def _coll_stats(
        self, db: str, body: Mapping[str, Any], session: SessionState | None, conn: Any
    ) -> Next:
        coll = _collection_name(body, "collStats")

        def fn(_op: Op) -> Document:
            if not self._exists(db, coll):
                raise _ns_not_found(f"Collection [{db}.{coll}] not found.")
            return {
                "ns": f"{db}.{coll}",
                "count": engine.document_count(self.server, db, coll),
                "nindexes": 1 + len(engine.index_specs(self.server, db, coll)),
                "ok": 1.0,
            }

        return EngineStep(
            Call("collStats", fn, f"collStats on {db}.{coll}", read=True), session, _identity
        )
