"""The oplog: what each commit changed, in commit order, for change streams to read.

A write becomes an ``Entry`` (what the server's oplog entry would let a change stream say:
the operation, the document, the update description, the pre- and post-images when the
collection records them, the collection's UUID); a commit publishes its entries under one
cluster time. ``StreamCore`` (``_changestream``) shapes entries into events. With the
embedded store, readers see entries only up to ``visible`` (what is on disk: MongoDB's
majority read point), which the store advances as commits become durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bson
from bson.timestamp import Timestamp

from ._bson import CODEC, IMMUTABLE, Document, same, same_value, unshared

__all__ = ["Entry", "Oplog", "Waiters", "change_entry"]


@dataclass
class Entry:
    """One oplog entry (a change event before it is shaped for a stream)."""

    op_type: str
    db: str
    coll: str | None
    doc_id: Any = None
    full_document: Document | None = None
    update_description: Document | None = None
    # Paths of the update description as lists of field names and array indexes.
    paths: dict[str, list[str | int]] | None = None
    # Pre- and post-images: recorded only when the collection has changeStreamPreAndPostImages.
    images: bool = False
    pre_image: Document | None = None
    uuid: bson.Binary | None = None
    # DDL events: operationDescription, the rename target, the options before a collMod.
    description: Document | None = None
    to: tuple[str, str] | None = None
    state_before: Document | None = None
    pos: int = 0
    cluster_time: Timestamp | None = None
    wall_time: datetime.datetime | None = None
    lsid: Document | None = None
    txn_number: int | None = None


class Waiters:
    """Wakes sync waiters (a Condition) and async waiters (futures on their loops)."""

    def __init__(self, mutex: threading.RLock) -> None:
        self.cond = threading.Condition(mutex)
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def future(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._futures.append((loop, fut))
        return fut

    def notify_all(self) -> None:
        self.cond.notify_all()
        futures, self._futures = self._futures, []
        for loop, fut in futures:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Oplog:
    """The entries of every commit, capped at ``size`` entries (None: unbounded)."""

    def __init__(self, mutex: threading.RLock, size: int | None) -> None:
        self.size = size
        self.entries: list[Entry] = []
        self.base = 0  # the position of entries[0]
        self.last_time = (0, 0)
        self.waiters = Waiters(mutex)
        # The end of what readers may see (None: everything published); the embedded store
        # keeps it at what is durable.
        self.visible: int | None = None

    @property
    def end(self) -> int:
        """The position after the last entry readers see."""
        end = self.base + len(self.entries)
        visible = self.visible
        return end if visible is None or visible > end else visible

    def show(self, end: int) -> None:
        """Let readers see the entries before position ``end`` (now durable) and wake them."""
        self.visible = end
        self.waiters.notify_all()

    @property
    def cluster_time(self) -> Timestamp:
        return Timestamp(*self.last_time)

    def next_cluster_time(self) -> Timestamp:
        secs = int(time.time())
        last_secs, last_inc = self.last_time
        self.last_time = (secs, 1) if secs > last_secs else (last_secs, last_inc + 1)
        return Timestamp(*self.last_time)

    def publish(
        self, entries: list[Entry], *, lsid: Document | None = None, txn_number: int | None = None
    ) -> None:
        """Append one commit's entries under one new cluster time and wake the streams."""
        if not entries:
            return
        ct = self.next_cluster_time()
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        wall = now.replace(microsecond=now.microsecond // 1000 * 1000)
        pos = self.base + len(self.entries)
        for entry in entries:
            entry.pos = pos
            pos += 1
            entry.cluster_time = ct
            entry.wall_time = wall
            entry.lsid = lsid
            entry.txn_number = txn_number
            self.entries.append(entry)
        if self.size is not None and len(self.entries) > self.size:
            drop = len(self.entries) - self.size
            del self.entries[:drop]
            self.base += drop
        self.waiters.notify_all()

    def read(self, start: int) -> Iterator[Entry]:
        """The entries readers see from position ``start`` on."""
        for i in range(max(start - self.base, 0), self.end - self.base):
            yield self.entries[i]


# -- entries of document writes ------------------------------------------------------------


def change_entry(
    kind: str,
    db: str,
    coll: str,
    pre: Document | None,
    post: Document | None,
    raw: bytes | None = None,
    *,
    images: bool = False,
    uuid: bson.Binary | None = None,
    inside: set[str] | None = None,
    touched: frozenset[str] | None = None,
) -> Entry | None:
    """The oplog entry of one write (None: it changed nothing). ``kind`` is the operation
    ("insert", "update", "pipeline" for an update by pipeline, "replace", "delete"); ``raw``
    is ``post`` encoded (decoding it is a cheaper private copy than ``deepcopy``); with
    ``images`` the entry keeps the document's pre-image (and an update's post-image);
    ``inside`` names the paths an update by operators reached inside of, ``touched`` the
    top-level fields it could change (None: any)."""
    if pre is None and post is None:
        return None

    def snapshot(doc: Document) -> Document:
        return copy.deepcopy(doc) if raw is None else bson.decode(raw, codec_options=CODEC)

    if pre is None:
        assert post is not None
        return Entry("insert", db, coll, post["_id"], full_document=snapshot(post), uuid=uuid)
    pre_image = copy.deepcopy(pre) if images else None
    if post is None:
        return Entry("delete", db, coll, pre["_id"], images=images, pre_image=pre_image, uuid=uuid)
    diff = _Diff(whole_arrays=kind != "pipeline", inside=inside)
    if kind != "replace":
        diff.walk(pre, post, "", None, touched)  # BSON-exact, so usually decides alone
    if diff.empty:
        same_doc = same(pre, post) if raw is None else bson.encode(pre, codec_options=CODEC) == raw
        if same_doc:
            return None  # a no-op update writes nothing and emits nothing
    if kind == "replace":
        return Entry(
            "replace",
            db,
            coll,
            post["_id"],
            full_document=snapshot(post),
            images=images,
            pre_image=pre_image,
            uuid=uuid,
        )
    return Entry(
        "update",
        db,
        coll,
        post["_id"],
        uuid=uuid,
        full_document=snapshot(post),
        images=images,
        pre_image=pre_image,
        update_description=diff.description(),
        paths=diff.paths,
    )


class _Diff:
    """An update's ``updateDescription`` computed from the document before and after, as the
    server's delta oplog entries describe it: changed fields of sub-documents one by one;
    arrays element by element (new or changed elements as ``a.<i>``, a shortened array in
    ``truncatedArrays``) for updates by pipeline, and for updates by operator only where
    their paths reach inside the array (``a.0.x``) or elements were appended (``$push``),
    else the whole array. ``paths`` keeps the parts of each ambiguous path (a field name
    holding a dot or made of digits)."""

    def __init__(self, *, whole_arrays: bool, inside: set[str] | None = None) -> None:
        self.whole_arrays = whole_arrays
        self.inside = inside
        self.updated: Document = {}
        self.removed: list[str] = []
        self.truncated: list[Document] = []
        self.paths: dict[str, list[str | int]] = {}

    @property
    def empty(self) -> bool:
        return not (self.updated or self.removed or self.truncated)

    def _child(
        self, prefix: str, parts: tuple[str | int, ...] | None, part: str | int
    ) -> tuple[str, tuple[str | int, ...] | None]:
        """The name of ``prefix``'s child ``part``, and its parts while it is ambiguous."""
        name = f"{prefix}.{part}" if prefix else str(part)
        if parts is not None:
            parts = (*parts, part)
        elif type(part) is str and ("." in part or part.isdigit()):
            parts = (*_parts(prefix), part)
        if parts is not None:
            self.paths[name] = list(parts)
        return name, parts

    def walk(
        self,
        pre: Any,
        post: Any,
        prefix: str,
        parts: tuple[str | int, ...] | None,
        only: frozenset[str] | None = None,
    ) -> None:
        """Describe the change from ``pre`` to ``post`` (``only``: the fields that can differ;
        None: any)."""
        if isinstance(pre, dict):
            child = self._child
            for k, v in post.items():
                if only is not None and k not in only:
                    continue
                if k not in pre:
                    self.updated[child(prefix, parts, k)[0]] = unshared(v)
                    continue
                old = pre[k]
                if same_value(old, v):
                    continue
                if prefix or parts is not None or "." in k or k.isdigit():
                    name, sub = child(prefix, parts, k)
                else:  # a plain top-level field (the usual case)
                    name, sub = k, None
                if type(v) in IMMUTABLE or type(old) in IMMUTABLE:  # nothing to descend into
                    self.updated[name] = unshared(v)
                else:
                    self._changed(old, v, name, sub)
            self.removed.extend(
                child(prefix, parts, k)[0]
                for k in pre
                if k not in post and (only is None or k in only)
            )
            return
        # Two lists.
        shared = min(len(pre), len(post))
        if len(post) < len(pre):
            self.truncated.append({"field": prefix, "newSize": len(post)})
        for i in range(shared):
            if not same_value(pre[i], post[i]):
                self._changed(pre[i], post[i], *self._child(prefix, parts, i))
        for i in range(shared, len(post)):
            self.updated[self._child(prefix, parts, i)[0]] = unshared(post[i])

    def _changed(self, old: Any, new: Any, name: str, parts: tuple[str | int, ...] | None) -> None:
        if self._descend(old, new, name):
            self.walk(old, new, name, parts)
        else:
            self.updated[name] = unshared(new)

    def _descend(self, old: Any, new: Any, name: str) -> bool:
        """Whether a change from ``old`` to ``new`` is described field by field."""
        if isinstance(old, dict) and isinstance(new, dict):
            return bool(new)
        if not (isinstance(old, list) and isinstance(new, list)):
            return False
        if not self.whole_arrays or (self.inside is not None and name in self.inside):
            return True
        prefix = zip(old, new, strict=False)
        return len(new) > len(old) and all(same_value(a, b) for a, b in prefix)

    def description(self) -> Document:
        return {
            "updatedFields": self.updated,
            "removedFields": self.removed,
            "truncatedArrays": self.truncated,
        }


def _parts(name: str) -> tuple[str | int, ...]:
    """The parts of a path with no ambiguous part (its digits are array indexes)."""
    if not name:
        return ()
    return tuple(int(part) if part.isdigit() else part for part in name.split("."))
