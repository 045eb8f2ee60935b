"""``explain`` (queryPlanner): which index a server would use for a query shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongoledger.memory._bson import Document
from mongoledger.memory._session import SessionState

from . import _engine_api as engine
from ._common import (
    Handler,
    Next,
    Part,
    _bad_value,
    _collection_name,
    _doc_option,
    _sort_option,
    _type_mismatch,
)
from ._server_info import VERSION


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


class Explain(Part):
    """``explain``: the plan a server would choose."""

    def handlers(self) -> dict[str, Handler]:
        return {
            "explain": self._explain,
        }

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
        with engine.locked(self.server):
            indexes = [{"name": "_id_", "key": [("_id", 1)]}]
            if self._exists(db, coll):
                specs = engine.index_specs(self.server, db, coll)
                indexes += [{"name": n, **ix} for n, ix in specs.items()]
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
