"""Transactions on the server: snapshots, write sets, write conflicts, commit and abort.

The store holds one version of each document: the newest, committed or written by the one
open transaction that owns it (a second writer conflicts, so there is never more than one).
What an operation must see instead is worked out per operation by ``versions``:

* outside a transaction, the latest committed data: a document an open transaction wrote is
  seen as that transaction found it (its pre-image);
* inside transaction T, T's snapshot (the commits up to T's first operation) plus T's own
  writes: additionally, a document a later commit changed is seen as it was before the first
  such commit (the commits after the oldest open snapshot keep their pre-images in
  ``history``; the history is empty whenever no transaction is open, so a single writer pays
  nothing for it).

``check_write`` decides whether a write may go ahead: writing a document another open
transaction owns, or one a commit changed after T's snapshot, is a ``WriteConflict`` (112);
outside a transaction, the write must wait for the owner to end (``Blocked``) unless the
owner is a transaction of the waiting thread or task, which would deadlock (Decision 13).

``commit`` is the one place where a write set becomes the committed state, for a transaction
and for a single write outside one alike (``MemoryServer._commit_writes`` calls it).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ._bson import Document
from ._errors import write_conflict

if TYPE_CHECKING:
    from ._oplog import Entry

__all__ = ["Blocked", "Ctx", "DocKey", "Ns", "Transactions", "Txn"]

Ctx = tuple[int, int]  # (thread id, id of the asyncio task or 0)
Ns = tuple[str, str]  # (database, collection)
DocKey = tuple[str, str, Any]  # (database, collection, store key)
Versions = dict[Ns, dict[Any, Document | None]]


class Session(Protocol):
    """The client session a transaction belongs to (``_session.SessionState``)."""

    session_id: Document
    txn: Txn | None


@dataclass(eq=False)
class Txn:
    """One server-side transaction."""

    session: Session
    number: int
    ctx: Ctx
    snapshot: int = -1  # the commit number it reads at; taken at its first operation
    started: float = 0.0
    # The version each document it wrote had before (None: it did not exist).
    log: dict[DocKey, Document | None] = field(default_factory=dict)
    events: list[Entry] = field(default_factory=list)
    created: list[Ns] = field(default_factory=list)  # collections it created
    aborted: bool = False  # by the server: a statement failed, or the lifetime ran out


class Blocked(Exception):
    """A write outside any transaction must wait for ``txn`` to end, then run again."""

    def __init__(self, txn: Txn) -> None:
        super().__init__(txn)
        self.txn = txn


class Transactions:
    """The open transactions, their snapshots, and the history those snapshots need.

    Which transaction owns a document is read from the open transactions' write logs (at
    most one has it): nothing is kept for it, so a writer alone pays nothing.
    """

    def __init__(self) -> None:
        self.commits = 0  # the number of the latest commit
        self.open: dict[Txn, None] = {}
        self.created: dict[Ns, Txn] = {}  # collections created by open transactions
        self.history: collections.deque[tuple[int, Versions]] = collections.deque()
        self.changed: dict[DocKey, int] = {}  # the last commit of each key in the history

    def begin(self, txn: Txn) -> None:
        """Take ``txn``'s snapshot: it reads the commits made so far."""
        txn.snapshot = self.commits
        txn.started = time.monotonic()
        self.open[txn] = None

    def others(self, txn: Txn | None) -> bool:
        """Whether a transaction other than ``txn`` is open."""
        return len(self.open) > (txn is not None and txn in self.open)

    def owner(self, dk: DocKey, txn: Txn | None = None) -> Txn | None:
        """The open transaction other than ``txn`` that wrote ``dk``, if any."""
        for other in self.open:
            if other is not txn and dk in other.log:
                return other
        return None

    def versions(self, txn: Txn | None, ns: Ns | None) -> Versions:
        """The documents an operation of ``txn`` (None: outside any transaction) sees in
        another version than the stored one, in namespace ``ns`` (None: every namespace)."""
        out: Versions = {}
        for other in self.open:
            if other is txn:
                continue
            for (db, coll, key), pre in other.log.items():
                if ns is None or (db == ns[0] and coll == ns[1]):
                    out.setdefault((db, coll), {})[key] = pre
        history = self.history
        if txn is not None and history and history[-1][0] > txn.snapshot:
            seen: set[tuple[Ns, Any]] = set()
            for number, writes in history:  # oldest first: the first later commit's pre-image
                if number <= txn.snapshot:
                    continue
                for n, pres in writes.items():
                    if ns is not None and n != ns:
                        continue
                    target = out.setdefault(n, {})
                    for key, pre in pres.items():
                        if (n, key) not in seen:
                            seen.add((n, key))
                            target[key] = pre
        return out

    def check_write(self, txn: Txn | None, dk: DocKey, ctx: Ctx) -> None:
        """Raise unless an operation of ``txn`` (from ``ctx``) may write document ``dk``."""
        if self.others(txn):
            owner = self.owner(dk, txn)
            if owner is not None:
                raise self.conflict(owner, txn, ctx)
        if self.created:
            self.check_namespace(txn, (dk[0], dk[1]), ctx)
        changed = self.changed
        if txn is not None and changed and changed.get(dk, -1) > txn.snapshot:
            raise write_conflict()

    def check_namespace(self, txn: Txn | None, ns: Ns, ctx: Ctx) -> None:
        """Raise unless ``txn`` may write to ``ns`` (not created by another open transaction)."""
        creator = self.created.get(ns)
        if creator is not None and creator is not txn:
            raise self.conflict(creator, txn, ctx)

    def check_ddl(self, txn: Txn | None, ns: Ns, ctx: Ctx) -> None:
        """Raise unless a command changing collection ``ns`` itself may run: no other open
        transaction wrote to it or created it."""
        for other in self.open:
            if other is not txn and any(db == ns[0] and c == ns[1] for db, c, _ in other.log):
                raise self.conflict(other, txn, ctx)
        self.check_namespace(txn, ns, ctx)

    @staticmethod
    def conflict(owner: Txn, txn: Txn | None, ctx: Ctx) -> Exception:
        """What a write colliding with ``owner``'s uncommitted write gets: a transaction a
        ``WriteConflict``; a write outside one waits, unless it would wait for itself."""
        if txn is None and owner.ctx != ctx:
            return Blocked(owner)
        return write_conflict()

    def create(self, txn: Txn, ns: Ns) -> None:
        txn.created.append(ns)
        self.created[ns] = txn

    def commit(self, writes: dict[DocKey, Document | None], txn: Txn | None = None) -> int:
        """Make ``writes`` (each document's version before) committed: the documents'
        stored versions become what every later snapshot reads. Returns the commit number."""
        self.commits += 1
        number = self.commits
        if txn is not None:
            self._end(txn)
        if self.open and writes:  # open snapshots need the versions this commit replaced
            grouped: Versions = {}
            changed = self.changed
            for dk, pre in writes.items():
                grouped.setdefault((dk[0], dk[1]), {})[dk[2]] = pre
                changed[dk] = number
            self.history.append((number, grouped))
        if self.history:
            self._prune()
        return number

    def abort(self, txn: Txn) -> None:
        """Forget ``txn`` (the caller restores the stored versions from ``txn.log``)."""
        self._end(txn)
        if self.history:
            self._prune()

    def expired(self, limit: float) -> list[Txn]:
        """The open transactions that started more than ``limit`` seconds ago."""
        now = time.monotonic()
        return [txn for txn in self.open if now - txn.started > limit]

    def _end(self, txn: Txn) -> None:
        self.open.pop(txn, None)
        for ns in txn.created:
            if self.created.get(ns) is txn:
                del self.created[ns]

    def _prune(self) -> None:
        """Drop the history no open snapshot needs any more."""
        history = self.history
        oldest = min((t.snapshot for t in self.open), default=None)
        changed = self.changed
        while history and (oldest is None or history[0][0] <= oldest):
            number, writes = history.popleft()
            for ns, pres in writes.items():
                for key in pres:
                    dk = (ns[0], ns[1], key)
                    if changed.get(dk) == number:
                        del changed[dk]
