"""Transactions on the server: snapshots, write sets, write conflicts, commit and abort.

The store holds one version of each document, the newest: committed, or written by the one
open transaction that owns it (a second writer conflicts, so there is never more than one).
While transactions overlap, the other versions some operation must see live beside it, per
document, in an ``Overlay``: the committed version an open transaction's write hides, and the
versions later commits replaced that open snapshots still read. A ``View`` resolves, per
document and only for the documents an operation looks at, what that operation sees:

* outside a transaction, the latest committed data: a document an open transaction wrote is
  seen as that transaction found it;
* inside transaction T, T's snapshot (the commits up to T's first operation) plus T's own
  writes.

Overlays exist only while transactions overlap (``shared``): a transaction alone, the common
case, pays nothing for them; they are built from the open transactions' write logs at the
first operation that could see the difference, and dropped when the last transaction ends.

``check_write`` decides whether a write may go ahead: writing a document another open
transaction owns, or one a commit changed after T's snapshot, is a ``WriteConflict`` (112);
outside a transaction, the write must wait for the owner to end (``Blocked``) unless the
owner is a transaction of the waiting thread or task, which would deadlock (Decision 13).

``commit`` is the one place where a write set becomes the committed state, for a transaction
and for a single write outside one alike (``Engine._commit_writes`` calls it).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ._bson import Document
from ._errors import write_conflict
from ._index import IndexedDocuments

if TYPE_CHECKING:
    from ._oplog import Entry

__all__ = ["Blocked", "Ctx", "DocKey", "Ns", "Overlay", "Transactions", "Txn", "View"]

Ctx = tuple[int, int]  # (thread id, id of the asyncio task or 0)
Ns = tuple[str, str]  # (database, collection)
DocKey = tuple[str, str, Any]  # (database, collection, store key)


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


class Overlay:
    """The versions of one document besides the stored one that open transactions need."""

    __slots__ = ("committed", "owner", "past")

    def __init__(self) -> None:
        self.owner: Txn | None = None  # the open transaction whose write is stored
        self.committed: Document | None = None  # what it hides: the latest committed version
        # The versions later commits replaced: (number of that commit, the version before it).
        self.past: list[tuple[int, Document | None]] = []

    def __bool__(self) -> bool:
        return self.owner is not None or bool(self.past)

    def versions(self) -> Iterator[Document]:
        if self.owner is not None and self.committed is not None:
            yield self.committed
        for _, version in self.past:
            if version is not None:
                yield version


class View:
    """What one operation (of ``txn``; None: outside any) sees of one collection."""

    __slots__ = ("docs", "snapshot", "txn")

    def __init__(self, docs: IndexedDocuments, txn: Txn | None) -> None:
        self.docs = docs
        self.txn = txn
        self.snapshot = txn.snapshot if txn is not None else None

    def version(self, key: Any) -> Document | None:
        """The version of document ``key`` the operation sees (None: none)."""
        docs = self.docs
        overlay: Overlay | None = docs.overlay.get(key)
        version = docs.get(key)
        if overlay is None:
            return version
        owner = overlay.owner
        if owner is not None and owner is not self.txn:
            version = overlay.committed
        snapshot = self.snapshot
        if snapshot is not None:
            for number, older in overlay.past:
                if number > snapshot:
                    return older
        return version

    def unseen(self, key: Any) -> list[Document]:
        """The versions of ``key`` in a server's indexes now that the operation does not see
        (another transaction's committed one it hides, those a later commit replaced): a
        unique key colliding with one of them is a write conflict, not a duplicate."""
        overlay: Overlay | None = self.docs.overlay.get(key)
        if overlay is None:
            return []
        out = []
        stored = self.docs.get(key)
        if overlay.owner is not None and overlay.owner is not self.txn:
            out += [v for v in (stored, overlay.committed) if v is not None]
        if self.snapshot is not None and any(n > self.snapshot for n, _ in overlay.past):
            out += [v for n, v in overlay.past if n > self.snapshot and v is not None]
            if stored is not None:
                out.append(stored)
        return out

    def keys(
        self, flt: Mapping[str, Any], stored: list[Any] | None, indexed: Any
    ) -> list[Any] | None:
        """The keys of documents that may match ``flt``: ``stored`` (the stored documents'
        candidates; None: all) and those whose other versions may."""
        docs = self.docs
        shadow = docs.shadow
        extra = None if shadow is None else shadow.candidates(flt, indexed, ordered=False)
        if stored is None or extra is None:
            return None
        seen = set(stored)
        more = [k for k in dict.fromkeys(extra) if k not in seen]
        if not more:
            return stored
        order = docs.position
        last = len(order) + 1
        return sorted([*stored, *more], key=lambda k: order.get(k, last))

    def documents(self, keys: list[Any] | None) -> list[Document]:
        """The versions the operation sees of ``keys`` (None: of every document)."""
        docs = self.docs
        if keys is None:
            keys = [*docs, *(k for k in docs.overlay if k not in docs)]
        version = self.version
        return [v for v in map(version, keys) if v is not None]


class Transactions:
    """The open transactions, their snapshots, and the versions those snapshots need."""

    def __init__(self, docs_of: Callable[[Ns], IndexedDocuments]) -> None:
        self.docs_of = docs_of
        self.commits = 0  # the number of the latest commit
        self.open: dict[Txn, None] = {}
        self.created: dict[Ns, Txn] = {}  # collections created by open transactions
        self.shared = False  # overlays are kept (some operation may see other versions)
        # The commits whose replaced versions open snapshots keep: (number, their documents).
        self.history: collections.deque[tuple[int, list[tuple[IndexedDocuments, Any]]]] = (
            collections.deque()
        )
        self.overlaid: dict[int, IndexedDocuments] = {}  # the stores with overlays, by id

    def begin(self, txn: Txn) -> None:
        """Take ``txn``'s snapshot: it reads the commits made so far."""
        txn.snapshot = self.commits
        txn.started = time.monotonic()
        self.open[txn] = None

    def share(self) -> None:
        """Keep overlays from now on: an operation is about to run beside an open transaction
        of another (or beside its own from outside it), and may see other versions."""
        if self.shared:
            return
        self.shared = True
        for txn in self.open:
            for (db, coll, key), pre in txn.log.items():
                self._own(self.docs_of((db, coll)), key, txn, pre)

    def check_write(
        self, txn: Txn | None, ns: Ns, docs: IndexedDocuments, key: Any, ctx: Ctx
    ) -> None:
        """Raise unless an operation of ``txn`` (from ``ctx``) may write document ``key``."""
        overlay: Overlay | None = docs.overlay.get(key)
        if overlay is not None:
            owner = overlay.owner
            if owner is not None and owner is not txn:
                raise self.conflict(owner, txn, ctx)
            past = overlay.past
            if txn is not None and past and past[-1][0] > txn.snapshot:
                raise write_conflict()
        if self.created:
            self.check_namespace(txn, ns, ctx)

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

    def written(self, txn: Txn, docs: IndexedDocuments, key: Any, pre: Document | None) -> None:
        """``txn`` wrote document ``key`` for the first time (``pre``: its version before)."""
        if self.shared:
            self._own(docs, key, txn, pre)

    def unwritten(self, txn: Txn, docs: IndexedDocuments, key: Any) -> None:
        """Undo ``written`` (a failed statement's write, rolled back)."""
        overlay: Overlay | None = docs.overlay.get(key)
        if overlay is not None and overlay.owner is txn:
            overlay.owner = overlay.committed = None
            self._tidy(docs, key, overlay)

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
        if self.shared:
            kept: list[tuple[IndexedDocuments, Any]] = []
            for (db, coll, key), pre in writes.items():
                docs = self.docs_of((db, coll))
                overlay: Overlay | None = docs.overlay.get(key)
                if overlay is not None and overlay.owner is txn is not None:
                    overlay.owner = overlay.committed = None
                if self.open:  # open snapshots read the version this commit replaced
                    if overlay is None:
                        overlay = docs.overlay[key] = Overlay()
                        self.overlaid[id(docs)] = docs
                    overlay.past.append((number, pre))
                    kept.append((docs, key))
                if overlay is not None:
                    self._tidy(docs, key, overlay)
            if kept:
                self.history.append((number, kept))
            self._prune()
        return number

    def abort(self, txn: Txn) -> None:
        """Forget ``txn`` (the caller restores the stored versions from ``txn.log``)."""
        self._end(txn)
        if self.shared:
            for db, coll, key in txn.log:
                self.unwritten(txn, self.docs_of((db, coll)), key)
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

    def _own(self, docs: IndexedDocuments, key: Any, txn: Txn, pre: Document | None) -> None:
        overlay: Overlay | None = docs.overlay.get(key)
        if overlay is None:
            overlay = docs.overlay[key] = Overlay()
            self.overlaid[id(docs)] = docs
        overlay.owner = txn
        overlay.committed = pre
        _shadow(docs, key, overlay)

    def _tidy(self, docs: IndexedDocuments, key: Any, overlay: Overlay) -> None:
        if overlay:
            _shadow(docs, key, overlay)
            return
        del docs.overlay[key]
        if docs.shadow is not None:
            docs.shadow.pop(key, None)

    def _prune(self) -> None:
        """Drop the versions no open snapshot needs any more (all of them, and the overlays,
        once no transaction is open)."""
        if not self.open:
            for docs in self.overlaid.values():
                docs.overlay.clear()
                docs.shadow = None
            self.overlaid.clear()
            self.history.clear()
            self.shared = False
            return
        oldest = min(t.snapshot for t in self.open)
        history = self.history
        while history and history[0][0] <= oldest:
            _, kept = history.popleft()
            for docs, key in kept:
                overlay: Overlay | None = docs.overlay.get(key)
                if overlay is not None:
                    overlay.past = [(n, v) for n, v in overlay.past if n > oldest]
                    self._tidy(docs, key, overlay)


def _shadow(docs: IndexedDocuments, key: Any, overlay: Overlay) -> None:
    """Index ``key`` under every value its other versions hold (lookups find it by them)."""
    merged: Document = {}
    for version in overlay.versions():
        for name, value in version.items():
            merged.setdefault(name, []).append(value)
    if docs.shadow is None:
        docs.shadow = IndexedDocuments()
    docs.shadow[key] = merged
