"""Change-stream events, I/O-free: the server-side filter, the grouping of legs into operations,
the errors a stream ends with, and where a ``listen`` checkpoint is kept.

The stream watches the ledger's database, filtered on the server to two collections: inserts
into the transactions collection (the legs of every operation) and, in the holds collection,
inserts (a hold) and the status updates that close a hold (void, expiry, capture; looked up
with ``updateLookup``, so the event carries the hold as it was closed: a closed hold never
changes again). Every transaction document carries its ``operation_id``, its ``leg`` index
and the operation's leg count ``legs``, so an operation is complete once that many distinct
legs were seen. A capture's hold update comes first in its DB transaction and joins its legs
by ``operation_id``. This holds with and without DB transactions (a non-transactional
``insert_many`` may interleave with other writes: the grouper keeps partial operations apart
and never hands out a resume token that would skip the first event of an operation it has
not finished).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

from bson.timestamp import Timestamp

from mongoledger._core import schema
from mongoledger._core.config import LedgerConfig
from mongoledger._core.dates import utc
from mongoledger._core.holds import CLOSING_STATUS, hold_to_model
from mongoledger._core.transactions import transaction_to_model
from mongoledger.errors import (
    ChangeStreamError,
    ChangeStreamHistoryLost,
    ChangeStreamInvalidated,
    InvalidArgument,
)
from mongoledger.models import EventKind, LedgerEvent, OperationKind

__all__ = [
    "Grouper",
    "change_stream_pipeline",
    "checkpoint_id",
    "translate_error",
    "validate_kinds",
]

ENDING_EVENTS = ("drop", "rename", "dropDatabase", "invalidate")
OPERATION_KINDS: tuple[OperationKind, ...] = (
    "increase",
    "decrease",
    "transfer",
    "post",
    "revert",
    "capture",
)
KINDS: tuple[EventKind, ...] = (*OPERATION_KINDS, "hold", "void", "expire")
# The kind of event a closing update of a hold is, by the status it sets.
_CLOSING_KINDS: dict[str, EventKind] = {
    status: cast(EventKind, kind) for kind, status in CLOSING_STATUS.items()
}

# Server error codes a change stream can end with.
HISTORY_LOST = 286  # ChangeStreamHistoryLost: the resume point is no longer in the oplog
# ChangeStreamFatalError covers several fatal conditions; only this message is a lost resume
# point (servers before 4.4, and 8.x for a token the oplog does not hold).
FATAL = 280
FATAL_TOKEN_NOT_FOUND = "resume token was not found"
TOO_LARGE = 10334  # BSONObjectTooLarge: an event (document + metadata) over 16 MiB
INVALID_TOKEN_CODES = {260}  # InvalidResumeToken: e.g. from a dropped and re-created collection
UNSUPPORTED_CODES = {40573, 40324}  # "only supported on replica sets", unknown stage $changeStream


def validate_kinds(kinds: Sequence[str] | None) -> list[str] | None:
    if kinds is None:
        return None
    if isinstance(kinds, str):
        kinds = [kinds]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InvalidArgument(
            f"kinds {unknown!r} are not operation kinds; use some of {list(KINDS)}"
        )
    return list(kinds)


def change_stream_pipeline(
    cfg: LedgerConfig, *, account_ids: Sequence[Any] | None, kinds: Sequence[str] | None
) -> list[dict[str, Any]]:
    """The ``$match`` stages the server applies to the database's change stream.

    The first names the two collections only (and the events that end a database stream),
    so the server drops every other event, accounts' updates included, before it looks up a
    post-image. The second keeps inserted legs of these kinds, inserted holds and closing
    status updates of holds, of these accounts. An account filter matches a leg on the account
    or (for two-leg operations) its counterpart, a hold on either of its accounts; the grouper
    completes operations whose other legs were filtered out by reading them.
    """
    wanted = list(KINDS) if kinds is None else list(kinds)
    colls = [cfg.transactions_collection, cfg.holds_collection]
    branches: list[dict[str, Any]] = []
    leg_kinds = [k for k in wanted if k in OPERATION_KINDS]
    if leg_kinds:
        legs: dict[str, Any] = {"ns.coll": cfg.transactions_collection, "operationType": "insert"}
        if kinds is not None:
            legs[f"fullDocument.{schema.KIND}"] = {"$in": leg_kinds}
        if account_ids is not None:
            ids = list(account_ids)
            either = [{f"fullDocument.{cfg.account_link_field}": {"$in": ids}}]
            if cfg.extra_account_link_field:
                either.append({f"fullDocument.{cfg.extra_account_link_field}": {"$in": ids}})
            legs["$or"] = either
        branches.append(legs)
    hold_branches: list[dict[str, Any]] = []
    if "hold" in wanted:
        hold_branches.append({"ns.coll": cfg.holds_collection, "operationType": "insert"})
    statuses = [status for status, kind in _CLOSING_KINDS.items() if kind in wanted]
    if statuses:
        hold_branches.append(
            {
                "ns.coll": cfg.holds_collection,
                "operationType": "update",
                f"updateDescription.updatedFields.{schema.STATUS}": {"$in": statuses},
            }
        )
        # A capture's pipeline update may be logged as a replacement (a server's choice).
        hold_branches.append(
            {
                "ns.coll": cfg.holds_collection,
                "operationType": "replace",
                f"fullDocument.{schema.STATUS}": {"$in": statuses},
            }
        )
    for branch in hold_branches:
        if account_ids is not None:
            ids = list(account_ids)
            branch["$or"] = [
                {f"fullDocument.{schema.FROM_ACCOUNT_ID}": {"$in": ids}},
                {f"fullDocument.{schema.TO_ACCOUNT_ID}": {"$in": ids}},
            ]
        branches.append(branch)
    # Events that end the stream always pass, so the consumer learns why it ended.
    branches.append({"operationType": {"$in": ["drop", "rename"]}, "ns.coll": {"$in": colls}})
    branches.append({"operationType": {"$in": ["dropDatabase", "invalidate"]}})
    first = {
        "$or": [
            {"ns.coll": {"$in": colls}},
            {"operationType": {"$in": ["dropDatabase", "invalidate"]}},
        ]
    }
    return [{"$match": first}, {"$match": {"$or": branches}}]


@dataclass
class _Partial:
    first_token: Mapping[str, Any] | None  # the token before this operation's first event
    legs: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    expected: int = 0  # the operation's leg count, known from its first leg
    committed_at: Any = None
    operation_id: Any = None
    kind: EventKind | None = None  # a hold step without legs: hold, void, expire
    hold_id: Any = None
    hold: Mapping[str, Any] | None = None  # the hold document, as the step left it


class Grouper:
    """Turns inserted-leg change events into one ``LedgerEvent`` per operation."""

    def __init__(
        self,
        cfg: LedgerConfig,
        *,
        start_token: Mapping[str, Any] | None = None,
        remember: int = 10_000,
    ) -> None:
        self._cfg = cfg
        self._partial: OrderedDict[Any, _Partial] = OrderedDict()
        self._done: OrderedDict[Any, None] = OrderedDict()  # recently completed operations
        self._remember = remember
        # Where the stream opened: the token before the first event it will see.
        self._last_token: Mapping[str, Any] | None = start_token

    def safe_token(self, stream_token: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The resume token that loses nothing: before the oldest unfinished operation."""
        if self._partial:
            return next(iter(self._partial.values())).first_token
        return stream_token

    def feed(self, change: Mapping[str, Any]) -> tuple[Any, _Partial] | None:
        """Add one raw change event; returns ``(operation_id, partial)`` when it completes one."""
        kind = change.get("operationType")
        if kind in ENDING_EVENTS:
            coll = (change.get("ns") or {}).get("coll")
            what = f"the {coll!r} collection" if coll else "the database"
            raise ChangeStreamInvalidated(
                f"{what} saw {kind!r}: the change stream has ended; "
                "open a new one (resume with start_after to continue past the invalidation)"
            )
        if (change.get("ns") or {}).get("coll") == self._cfg.holds_collection:
            return self._feed_hold(change)
        doc = change.get("fullDocument")
        if kind != "insert" or not isinstance(doc, Mapping):
            self._last_token = change.get("_id")
            return None
        operation_id = doc.get(schema.OPERATION_ID)
        if operation_id in self._done:
            self._last_token = change.get("_id")
            return None
        partial = self._partial.get(operation_id)
        if partial is None:
            partial = _Partial(first_token=self._last_token, operation_id=operation_id)
            self._partial[operation_id] = partial
        if not partial.expected:
            partial.expected = int(doc.get(schema.LEGS, 1))
        partial.legs[int(doc.get(schema.LEG, 0))] = doc
        partial.committed_at = committed_at(change)
        self._last_token = change.get("_id")
        if len(partial.legs) >= partial.expected:
            return operation_id, self.finish(operation_id)
        return None

    def _feed_hold(self, change: Mapping[str, Any]) -> tuple[Any, _Partial] | None:
        """A hold inserted (kind ``hold``), or a closing status update: a void or an expiry is
        an event of its own; a capture's joins its legs (same ``operation_id``)."""
        token = change.get("_id")
        op = change.get("operationType")
        doc = change.get("fullDocument")
        hold = doc if isinstance(doc, Mapping) else None
        hold_id = (change.get("documentKey") or {}).get("_id")
        if op == "insert" and hold is not None:
            self._last_token = token
            step = _Partial(first_token=token, operation_id=hold_id, kind="hold")
        elif op in ("update", "replace"):
            fields = (change.get("updateDescription") or {}).get("updatedFields") or {}
            if op == "replace" and hold is not None:
                fields = hold
            kind = _CLOSING_KINDS.get(str(fields.get(schema.STATUS)))
            operation_id = fields.get(schema.OPERATION_ID)
            if operation_id is None and hold is not None:
                operation_id = hold.get(schema.OPERATION_ID)
            if kind is None:
                self._last_token = token
                return None
            if kind == "capture":
                if operation_id not in self._done:
                    partial = self._partial.get(operation_id)
                    if partial is None:
                        partial = _Partial(first_token=self._last_token, operation_id=operation_id)
                        self._partial[operation_id] = partial
                    partial.hold_id, partial.hold = hold_id, hold
                self._last_token = token
                return None
            self._last_token = token
            step = _Partial(first_token=token, operation_id=operation_id, kind=kind)
        else:
            self._last_token = token
            return None
        step.hold_id, step.hold = hold_id, hold
        step.committed_at = committed_at(change)
        return step.operation_id, step

    def finish(self, operation_id: Any) -> _Partial:
        partial = self._partial.pop(operation_id)
        self._done[operation_id] = None
        while len(self._done) > self._remember:
            self._done.popitem(last=False)
        return partial

    def oldest_incomplete(self) -> tuple[Any, _Partial] | None:
        if not self._partial:
            return None
        return next(iter(self._partial.items()))

    def complete_with(self, operation_id: Any, docs: Sequence[Mapping[str, Any]]) -> _Partial:
        """Complete an operation with legs read from the collection (account-filtered streams)."""
        partial = self._partial[operation_id]
        for doc in docs:
            partial.legs[int(doc.get(schema.LEG, 0))] = doc
        return self.finish(operation_id)

    def event(self, partial: _Partial, resume_token: Mapping[str, Any] | None) -> LedgerEvent:
        cfg = self._cfg
        hold = None if partial.hold is None else hold_to_model(cfg, partial.hold)
        transactions = [transaction_to_model(cfg, partial.legs[i]) for i in sorted(partial.legs)]
        account_ids: list[Any] = []
        if transactions:
            for tx in transactions:
                if tx.account_id not in account_ids:
                    account_ids.append(tx.account_id)
            first = transactions[0]
            kind: EventKind = first.kind
            operation_id = first.operation_id
            hold_id = first.hold_id
        else:  # a hold, void or expiry: no money moved
            assert partial.kind is not None
            kind, operation_id, hold_id = partial.kind, partial.operation_id, partial.hold_id
            if hold is not None:
                account_ids = [hold.from_account_id, hold.to_account_id]
        return LedgerEvent(
            operation_id=operation_id,
            kind=kind,
            transactions=transactions,
            account_ids=account_ids,
            committed_at=utc(partial.committed_at),
            resume_token=dict(resume_token or {}),
            hold_id=hold_id,
            hold=hold,
        )


def committed_at(change: Mapping[str, Any]) -> Any:
    wall = change.get("wallTime")
    if isinstance(wall, datetime):
        return wall
    cluster = change.get("clusterTime")
    if isinstance(cluster, Timestamp):
        return cluster.as_datetime()
    return datetime.now(timezone.utc)


def translate_error(exc: Exception) -> Exception | None:
    """A ledger error for a driver/server error a change stream ends with, or None."""
    code = getattr(exc, "code", None)
    if code == HISTORY_LOST or (code == FATAL and FATAL_TOKEN_NOT_FOUND in str(exc)):
        return ChangeStreamHistoryLost(
            f"the resume point is no longer in the oplog ({exc}); events after it may be lost. "
            "Reconcile with verify() and history(), then restart the consumer without a "
            "checkpoint (or from a known time); size the oplog to cover the longest downtime"
        )
    if code == FATAL:
        return ChangeStreamError(f"the change stream failed and cannot be resumed here: {exc}")
    if code == TOO_LARGE:
        return ChangeStreamError(
            f"a change-stream event is larger than MongoDB's 16 MiB limit ({exc}): the stream "
            "cannot pass it (the ledger keeps its own documents 64 KiB below the limit, so "
            "something else wrote it). Resume after it with start_at_operation_time later "
            "than its commit, then reconcile the operations around it with history()"
        )
    if code in INVALID_TOKEN_CODES:
        return ChangeStreamInvalidated(
            f"the resume token cannot be used here ({exc}): it may belong to a dropped or "
            "re-created collection. Reconcile, then restart without a checkpoint (delete the "
            "checkpoint document) or from a known time"
        )
    return None


def checkpoint_id(cfg: LedgerConfig, name: str) -> dict[str, str]:
    """The ``_id`` of a ``listen`` checkpoint: its name within its ledger."""
    return {"ledger": cfg.transactions_collection, "name": name}
