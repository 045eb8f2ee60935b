"""I/O-free change-stream logic: the server-side filter and the grouping of legs into operations.

Every transaction document carries its ``operation_id``, its ``leg`` index and the operation's
leg count ``legs``, so an operation is complete once that many distinct legs were seen. This
holds with and without DB transactions (a non-transactional ``insert_many`` may interleave with
other writes: the grouper keeps partial operations apart and never hands out a resume token that
would skip the first leg of an operation it has not finished).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from bson.timestamp import Timestamp

from . import _core, _dates
from ._core import LedgerConfig
from .errors import (
    ChangeStreamError,
    ChangeStreamHistoryLost,
    ChangeStreamInvalidated,
    InvalidArgument,
)
from .models import LedgerEvent, OperationKind

__all__ = ["Grouper", "change_stream_pipeline", "validate_kinds"]

ENDING_EVENTS = ("drop", "rename", "dropDatabase", "invalidate")
KINDS: tuple[OperationKind, ...] = ("increase", "decrease", "transfer", "post", "revert")

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
    """The ``$match`` the server applies: only inserted legs, of these kinds and accounts.

    An account filter matches a leg on the account or (for two-leg operations) its counterpart;
    the grouper completes operations whose other legs were filtered out by reading them.
    """
    match: dict[str, Any] = {"operationType": "insert"}
    if kinds is not None:
        match[f"fullDocument.{_core.KIND}"] = {"$in": list(kinds)}
    if account_ids is not None:
        ids = list(account_ids)
        branches = [{f"fullDocument.{cfg.account_link_field}": {"$in": ids}}]
        if cfg.extra_account_link_field:
            branches.append({f"fullDocument.{cfg.extra_account_link_field}": {"$in": ids}})
        match["$or"] = branches
    # Events that end the stream always pass, so the consumer learns why it ended.
    return [{"$match": {"$or": [match, {"operationType": {"$in": list(ENDING_EVENTS)}}]}}]


@dataclass
class _Partial:
    first_token: Mapping[str, Any] | None  # the token before this operation's first leg
    legs: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    expected: int = 1
    committed_at: Any = None


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
            raise ChangeStreamInvalidated(
                f"the transactions collection saw {kind!r}: the change stream has ended; "
                "open a new one (resume with start_after to continue past the invalidation)"
            )
        doc = change.get("fullDocument")
        if kind != "insert" or not isinstance(doc, Mapping):
            self._last_token = change.get("_id")
            return None
        operation_id = doc.get(_core.OPERATION_ID)
        if operation_id in self._done:
            self._last_token = change.get("_id")
            return None
        partial = self._partial.get(operation_id)
        if partial is None:
            partial = _Partial(first_token=self._last_token, expected=int(doc.get(_core.LEGS, 1)))
            self._partial[operation_id] = partial
        partial.legs[int(doc.get(_core.LEG, 0))] = doc
        partial.committed_at = committed_at(change)
        self._last_token = change.get("_id")
        if len(partial.legs) >= partial.expected:
            return operation_id, self.finish(operation_id)
        return None

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
            partial.legs[int(doc.get(_core.LEG, 0))] = doc
        return self.finish(operation_id)

    def event(self, partial: _Partial, resume_token: Mapping[str, Any] | None) -> LedgerEvent:
        cfg = self._cfg
        transactions = [
            _core.transaction_to_model(cfg, partial.legs[i]) for i in sorted(partial.legs)
        ]
        account_ids: list[Any] = []
        for tx in transactions:
            if tx.account_id not in account_ids:
                account_ids.append(tx.account_id)
        first = transactions[0]
        return LedgerEvent(
            operation_id=first.operation_id,
            kind=first.kind,
            transactions=transactions,
            account_ids=account_ids,
            committed_at=_dates.utc(partial.committed_at),
            resume_token=dict(resume_token or {}),
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
