"""Change streams over the engine's oplog: resume tokens, event shapes, stage application.

Events have the server's shapes (``change_stream_event_transform.cpp``): pre- and post-images
(``fullDocumentBeforeChange``, ``fullDocument: "whenAvailable" | "required"``) where the
collection records them, ``showExpandedEvents`` (``create``, ``createIndexes``,
``dropIndexes``, ``modify``; ``collectionUUID``, ``operationDescription``,
``updateDescription.disambiguatedPaths``), and the events that end a stream: ``drop`` and
``rename`` of its collection (either side of the rename) and ``dropDatabase``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bson.int64 import Int64
from bson.timestamp import Timestamp
from mongomock import aggregate as _mm_aggregate
from mongomock import filtering as _mm_filtering
from pymongo.errors import OperationFailure

from ._bson import Document
from ._errors import operation_failure
from ._oplog import Entry

if TYPE_CHECKING:
    from ._engine import Engine

mm_aggregate: Any = _mm_aggregate
mm_filtering: Any = _mm_filtering

_ALLOWED_STAGES = {
    "$match",
    "$project",
    "$addFields",
    "$set",
    "$unset",
    "$replaceRoot",
    "$replaceWith",
    "$redact",
}
_OTHER_KNOWN_STAGES = {
    "$changeStream",
    "$changeStreamSplitLargeEvent",
    "$densify",
    "$documents",
    "$fill",
    "$setWindowFields",
    "$unionWith",
    "$search",
    "$searchMeta",
    "$vectorSearch",
}
_FULL_DOCUMENT = {None, "default", "updateLookup", "whenAvailable", "required"}
_BEFORE_CHANGE = {None, "off", "whenAvailable", "required"}
# Events a stream shows only with showExpandedEvents.
_EXPANDED = frozenset({"create", "createIndexes", "dropIndexes", "modify", "shardCollection"})
_PRE_IMAGE_OPS = frozenset({"update", "replace", "delete"})
_TOKEN_LEN = 2 + 8 + 8 + 16 + 16 + 2


def make_token(
    server: Engine, pos: int, ct: Timestamp | None, invalidate: bool = False
) -> Document:
    """A resume token ``{"_data": <hex>}`` naming an oplog position ("resume before pos")."""
    t = ct or Timestamp(0, 0)
    flag = "01" if invalidate else "00"
    return {"_data": f"82{t.time:08X}{t.inc:08X}{server.server_id}{pos:016X}{flag}"}


def _parse_token(server: Engine, token: Any) -> tuple[int, bool]:
    data = token.get("_data") if isinstance(token, Mapping) else None
    try:
        if not isinstance(data, str) or len(data) != _TOKEN_LEN or not data.startswith("82"):
            raise ValueError(data)
        int(data, 16)
    except ValueError:
        raise operation_failure(9, "FailedToParse", f"Invalid resume token: {token!r}") from None
    if data[18:34] != server.server_id:
        raise _not_found(token)
    pos = int(data[34:50], 16)
    if pos > server.oplog_end:
        raise _not_found(token)
    return pos, data[50:] == "01"


def _no_image(which: str, ops: str, ev: Document) -> OperationFailure:
    return operation_failure(
        47,
        "NoMatchingDocument",
        f"Change stream was configured to require a {which} for all {ops} events, but the "
        f"{which} was not found for event: {{_id: {ev['_id']!r}, ns: {ev.get('ns')!r}}}",
    )


def _not_found(token: Any) -> OperationFailure:
    return operation_failure(
        280,
        "ChangeStreamFatalError",
        f"cannot resume stream; the resume token was not found. {token!r}",
        ["NonResumableChangeStreamError"],
    )


def history_lost() -> OperationFailure:
    return operation_failure(
        286,
        "ChangeStreamHistoryLost",
        "Resume of change stream was not possible, as the resume point may no longer be in "
        "the oplog.",
        ["NonResumableChangeStreamError"],
    )


def _apply_stage(name: str, spec: Any, docs: list[Document]) -> list[Document]:
    if name == "$match":
        return [d for d in docs if mm_filtering.filter_applies(spec, d)]
    if name == "$project":
        return list(mm_aggregate._handle_project_stage(docs, None, spec))
    if name in ("$addFields", "$set"):
        return list(mm_aggregate._handle_add_fields_stage(docs, None, spec))
    if name == "$unset":
        fields = [spec] if isinstance(spec, str) else list(spec)
        return list(mm_aggregate._handle_project_stage(docs, None, dict.fromkeys(fields, 0)))
    if name == "$replaceRoot":
        return list(mm_aggregate._handle_replace_root_stage(docs, None, spec))
    if name == "$replaceWith":
        return list(mm_aggregate._handle_replace_root_stage(docs, None, {"newRoot": spec}))
    raise AssertionError(name)  # pragma: no cover - validated at watch()


def validate_pipeline(pipeline: Any) -> list[tuple[str, Any]]:
    """Check every stage now, so a bad pipeline fails at ``watch()``, not at first event."""
    if pipeline is None:
        return []
    if not isinstance(pipeline, Sequence) or isinstance(pipeline, (str, Mapping)):
        raise TypeError("pipeline must be a list")
    stages: list[tuple[str, Any]] = []
    for stage in pipeline:
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise operation_failure(
                40323,
                "Location40323",
                f"A pipeline stage specification object must contain exactly one field: {stage!r}",
            )
        name, spec = next(iter(stage.items()))
        if name not in _ALLOWED_STAGES:
            if name in mm_aggregate._PIPELINE_HANDLERS or name in _OTHER_KNOWN_STAGES:
                raise operation_failure(
                    20, "IllegalOperation", f"{name} is not permitted in a $changeStream pipeline"
                )
            raise operation_failure(
                40324, "Location40324", f"Unrecognized pipeline stage name: '{name}'"
            )
        if name == "$redact":
            raise operation_failure(
                2, "BadValue", "$redact in a change stream is not emulated by the memory engine"
            )
        stages.append((name, spec))
    sample: Document = {
        "_id": {"_data": "00"},
        "operationType": "insert",
        "clusterTime": Timestamp(1, 1),
        "fullDocument": {"_id": 0},
        "ns": {"db": "db", "coll": "coll"},
        "documentKey": {"_id": 0},
    }
    docs = [sample]
    for name, spec in stages:
        try:
            docs = _apply_stage(name, spec, docs)
        except OperationFailure:
            raise
        except Exception as exc:
            raise operation_failure(
                2, "BadValue", f"invalid {name} stage in change stream pipeline: {exc}"
            ) from exc
    return stages


class StreamCore:
    """The position and filters of one change stream; every method runs under the mutex."""

    def __init__(
        self,
        server: Engine,
        db: str | None,
        coll: str | None,
        pipeline: Any,
        full_document: str | None,
        resume_after: Any,
        start_after: Any,
        start_at_operation_time: Timestamp | None,
        max_await_time_ms: int | None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> None:
        self.server = server
        self.db = db
        self.coll = coll
        self.stages = validate_pipeline(pipeline)
        if full_document not in _FULL_DOCUMENT:
            raise operation_failure(
                2, "BadValue", f"unknown full_document option: {full_document!r}"
            )
        if full_document_before_change not in _BEFORE_CHANGE:
            raise operation_failure(
                2,
                "BadValue",
                f"unknown fullDocumentBeforeChange option: {full_document_before_change!r}",
            )
        self.full_document = full_document
        self.before_change = full_document_before_change or "off"
        self.expanded = bool(show_expanded_events)
        self.max_await = 0.02 if max_await_time_ms is None else max_await_time_ms / 1000
        self.alive = True
        self._pending_invalidate: Entry | None = None
        oplog = server.oplog
        with server._mutex:
            if start_after is not None:
                self.pos, _ = _parse_token(server, start_after)
            elif resume_after is not None:
                self.pos, invalidate = _parse_token(server, resume_after)
                if invalidate:
                    raise operation_failure(
                        260,
                        "InvalidResumeToken",
                        "Attempting to resume a change stream using 'resumeAfter' is not allowed "
                        "from an invalidate notification.",
                    )
            elif start_at_operation_time is not None:
                self.pos = oplog.end
                for entry in oplog.read(0):
                    assert entry.cluster_time is not None
                    if entry.cluster_time >= start_at_operation_time:
                        self.pos = entry.pos
                        break
                if oplog.base and self.pos <= oplog.base and oplog.entries:
                    first = oplog.entries[0].cluster_time
                    assert first is not None
                    if start_at_operation_time < first:
                        raise history_lost()
            else:
                self.pos = oplog.end
            self._check_history()
            self.resume_token: Document = make_token(server, self.pos, server.cluster_time)

    def _check_history(self) -> None:
        if self.pos < self.server.oplog.base:
            raise history_lost()

    def _matches(self, entry: Entry) -> bool:
        if entry.op_type in _EXPANDED and not self.expanded:
            return False
        if self.db is None:
            return True
        if self.coll is None:
            return entry.db == self.db
        if entry.db == self.db and entry.coll == self.coll:
            return True
        return entry.op_type == "rename" and entry.to == (self.db, self.coll)

    def _ends_stream(self, entry: Entry) -> bool:
        """Whether ``entry`` invalidates this stream (after its own event)."""
        if self.coll is not None:
            return entry.op_type in ("drop", "rename")
        return self.db is not None and entry.op_type == "dropDatabase"

    def _event(self, entry: Entry) -> Document:
        op_type = entry.op_type
        ev: Document = {
            "_id": make_token(self.server, entry.pos + 1, entry.cluster_time),
            "operationType": op_type,
            "clusterTime": entry.cluster_time,
        }
        if self.expanded and entry.uuid is not None:
            ev["collectionUUID"] = entry.uuid
        ev["wallTime"] = entry.wall_time
        if op_type in ("insert", "replace"):
            ev["fullDocument"] = copy.deepcopy(entry.full_document)
        elif op_type == "update" and self.full_document not in (None, "default"):
            ev["fullDocument"] = self._post_image(entry, ev)
        ev["ns"] = {"db": entry.db} if entry.coll is None else {"db": entry.db, "coll": entry.coll}
        if op_type in ("insert", "update", "replace", "delete"):
            ev["documentKey"] = {"_id": copy.deepcopy(entry.doc_id)}
        if entry.to is not None:
            ev["to"] = {"db": entry.to[0], "coll": entry.to[1]}
        if self.expanded and entry.description is not None:
            ev["operationDescription"] = copy.deepcopy(entry.description)
        if entry.update_description is not None:
            description = copy.deepcopy(entry.update_description)
            if self.expanded:
                description["disambiguatedPaths"] = _disambiguated(description, entry.paths)
            ev["updateDescription"] = description
        if entry.state_before is not None:
            ev["stateBeforeChange"] = copy.deepcopy(entry.state_before)
        if self.expanded and op_type == "create":
            ev["nsType"] = "collection"
        if self.before_change != "off" and op_type in _PRE_IMAGE_OPS:
            if entry.images:
                ev["fullDocumentBeforeChange"] = copy.deepcopy(entry.pre_image)
            elif self.before_change == "required":
                self.alive = False
                raise _no_image("pre-image", "update, delete and replace", ev)
            else:
                ev["fullDocumentBeforeChange"] = None
        if entry.lsid is not None:
            ev["lsid"] = copy.deepcopy(entry.lsid)
            ev["txnNumber"] = Int64(entry.txn_number or 0)
        return ev

    def _post_image(self, entry: Entry, ev: Document) -> Document | None:
        """An update event's ``fullDocument``: ``updateLookup`` gives the document as this
        commit left it; ``whenAvailable``/``required`` the recorded post-image."""
        if self.full_document == "updateLookup" or entry.images:
            return copy.deepcopy(entry.full_document)
        if self.full_document == "required":
            self.alive = False
            raise _no_image("post-image", "update", ev)
        return None

    def _shape(self, ev: Document) -> Document | None:
        docs = [ev]
        for name, spec in self.stages:
            docs = _apply_stage(name, spec, docs)
            if not docs:
                return None
        out = docs[0]
        if out.get("_id") != ev["_id"]:
            self.alive = False
            raise operation_failure(
                280,
                "ChangeStreamFatalError",
                "Encountered an event whose _id field, which contains the resume token, was "
                "modified by the pipeline. Modifying the _id field of an event makes it "
                "impossible to resume the stream from that point. Only transformations that "
                "retain the unmodified _id field are allowed.",
                ["NonResumableChangeStreamError"],
            )
        return out

    def poll(self) -> Document | None:
        """The next event, or None when the stream is at the end of the oplog (or dead)."""
        if not self.alive:
            return None
        server = self.server
        if self._pending_invalidate is not None:
            entry = self._pending_invalidate
            token = make_token(server, entry.pos + 1, entry.cluster_time, invalidate=True)
            self.alive = False
            self.resume_token = token
            return {
                "_id": token,
                "operationType": "invalidate",
                "clusterTime": entry.cluster_time,
                "wallTime": entry.wall_time,
            }
        self._check_history()
        for entry in server.oplog.read(self.pos):
            self.pos = entry.pos + 1
            if not self._matches(entry):
                continue
            if self._ends_stream(entry):
                self._pending_invalidate = entry
            out = self._shape(self._event(entry))
            if out is not None:
                self.resume_token = out["_id"]
                return out
            if self._pending_invalidate is not None:
                return self.poll()
        self.pos = max(self.pos, server.oplog.end)
        self.resume_token = make_token(server, self.pos, server.cluster_time)
        return None


def _disambiguated(description: Document, paths: dict[str, list[str | int]] | None) -> Document:
    """``disambiguatedPaths``: each reported path that names a field holding a dot or made
    of digits (which a reader would take for a nested field or an array index), as the list
    of its parts (array indexes as numbers)."""
    if not paths:
        return {}
    names = list(description.get("updatedFields", {}))
    names += description.get("removedFields", [])
    names += [t["field"] for t in description.get("truncatedArrays", [])]
    return {name: list(paths[name]) for name in names if name in paths}
