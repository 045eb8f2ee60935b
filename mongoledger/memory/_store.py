"""The embedded store: the in-memory engine's data kept durable in a directory.

``MemoryServer(path=DIR)`` (and ``MemoryClient(path=DIR)`` / ``AsyncMemoryClient(path=DIR)``)
loads ``DIR`` when it opens and, from then on, journals everything that becomes visible: the
change events a commit (or a write outside a transaction) publishes, and index and collection
changes. A commit returns once its journal record is on disk. The engine calls this module at
three points only: ``published`` (a commit's change events), ``catalog_changed`` /
``renamed`` (DDL), and ``wait`` / ``async_wait`` (after the operation, before it returns).

**On-disk format (version 1).** ``DIR`` holds ``lock`` (the pid of the process that has the
store open, under an OS lock), ``snapshot`` (optional) and ``journal.NNNNNN`` files. Both kinds
of file are sequences of records ``magic b"\\x89MLR" | length (uint32 LE) | crc32 of length and
payload (uint32 LE) | payload``, each payload one BSON document. A journal file opens with
``{mongoledger: "journal", version, server_id, generation}``; each later record carries the
next sequence number ``seq`` and either ``oplog`` (the change events of one commit, as the
engine's oplog entries: operation type, namespace, document key, the full post-image for an
insert, update or replace, cluster time, wall time, session and transaction number: replaying
them rebuilds both the documents and the change-stream history), ``catalog`` (a namespace's
whole index list and created flag after a DDL change) or ``rename``. The snapshot opens with
``{mongoledger: "snapshot", version, server_id, seq, journal, last_time, oplog_base}``, then per
namespace a ``ns`` record (its catalog) followed by ``docs`` records (chunks of concatenated
BSON documents), then ``oplog`` chunks (the kept change-stream history), and ends with an
``end`` record holding the counts. Opening loads the snapshot, then replays every journal file
from generation ``journal`` on, records with ``seq`` above the snapshot's. A record cut short at
the end of the last journal file (a crash mid-write; its commit never returned) is dropped with
a :class:`StoreRecoveryWarning`; any other invalid record, a missing sequence number or a
damaged snapshot refuses to open (:class:`StoreCorrupted`). When the journal outgrows
``max(COMPACT_MIN_BYTES, snapshot size / 4)`` the store compacts itself: later records go to a new
journal file, the snapshot is written to ``snapshot.tmp``, fsync'd and renamed over
``snapshot``, and the older journal files are deleted. Documents are copied into the snapshot
a chunk at a time while writes go on (each chunk consistent, committed data only); replaying
the journal from the snapshot's ``seq`` brings every document to its final state, and the new
snapshot is installed only once every record it may reflect is durable.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import gc
import os
import struct
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bson
from bson.int64 import Int64
from bson.timestamp import Timestamp
from pymongo.errors import InvalidOperation, PyMongoError

from ._journal import (
    CODEC,
    DamagedRecord,
    JournalWriter,
    Record,
    RecordReader,
    frame,
    iter_journal_files,
    journal_name,
    sync_directory,
    sync_file,
    write_all,
)
from ._lock import LOCK_NAME, StoreLock

if TYPE_CHECKING:
    from ._engine import MemoryServer, _CollectionStore, _Entry

__all__ = [
    "COMPACT_MIN_BYTES",
    "DEFAULT_OPLOG_SIZE",
    "Store",
    "StoreCorrupted",
    "StoreError",
    "StoreLocked",
    "StoreRecoveryWarning",
]

FORMAT_VERSION = 1
SNAPSHOT = "snapshot"
SNAPSHOT_TMP = "snapshot.tmp"
# The change events a new store keeps for resuming change streams (oplog_size= changes it,
# and the store remembers the change).
DEFAULT_OPLOG_SIZE = 100_000
# The journal is compacted into the snapshot once it is larger than this and a quarter of the
# snapshot (replaying a byte of journal costs several times loading a byte of snapshot).
COMPACT_MIN_BYTES = 8 * 1024 * 1024
_CHUNK = 2000  # documents per snapshot record (and per hold of the server's mutex)
_INT32 = struct.Struct("<i")


class StoreError(PyMongoError):
    """The embedded store cannot be opened, or can no longer be written."""


class StoreLocked(StoreError):
    """Another process (or another open ``MemoryServer`` of this one) has the store open."""

    def __init__(self, message: str, path: Path, holder_pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.holder_pid = holder_pid


class StoreCorrupted(StoreError):
    """The store's files are damaged somewhere a crash cannot explain; nothing was loaded."""


class StoreRecoveryWarning(UserWarning):
    """Opening the store dropped a journal record a crash cut short (never acknowledged)."""


# --------------------------------------------------------------------------- records


def _entry_fields() -> tuple[str, ...]:
    from ._engine import _Entry

    return tuple(f.name for f in dataclasses.fields(_Entry))


def _entry_raw(entry: _Entry, fields: tuple[str, ...]) -> bytes:
    """An oplog entry as BSON (every dataclass field that is set); a loaded entry that was
    never read is already that."""
    raw = entry.__dict__.get("_raw")
    if raw is not None:
        return raw  # type: ignore[no-any-return]
    doc = {}
    for name in fields:
        value = getattr(entry, name)
        if value is not None:
            doc[name] = value
    return bson.encode(doc, codec_options=CODEC)


def _split(raw: bytes) -> list[bytes]:
    """Concatenated BSON documents, each as its own bytes (without decoding them)."""
    out = []
    offset, end = 0, len(raw)
    while offset < end:
        (length,) = _INT32.unpack_from(raw, offset)
        if length < 5 or offset + length > end:
            raise ValueError(f"a BSON document of {length} bytes at byte {offset} of {end}")
        out.append(raw[offset : offset + length])
        offset += length
    return out


def _stored_entry_type() -> type:
    """``_Entry`` for history loaded from disk: it keeps its BSON and decodes it the first time
    a field is read (opening a store does not decode history nobody resumes from)."""
    from ._engine import _Entry

    fields = [f for f in _entry_fields() if f != "pos"]

    class _StoredEntry(_Entry):
        def __init__(self, raw: bytes, pos: int) -> None:  # not the dataclass __init__: lazy
            self.__dict__["_raw"] = raw
            self.__dict__["pos"] = pos

        def _decode(self) -> None:
            doc = bson.decode(self.__dict__["_raw"], codec_options=CODEC)
            for name in fields:
                self.__dict__[name] = doc.get(name)

    def field(name: str) -> property:
        def get(self: Any) -> Any:
            values = self.__dict__
            if name not in values:
                self._decode()
            return values[name]

        def set_(self: Any, value: Any) -> None:
            if name not in self.__dict__:
                self._decode()
            self.__dict__.pop("_raw", None)  # changed: encode it again when needed
            self.__dict__[name] = value

        return property(get, set_)

    for name in fields:
        setattr(_StoredEntry, name, field(name))
    return _StoredEntry


def _catalog_doc(db: str, coll: str, store: _CollectionStore) -> dict[str, Any]:
    return {
        "db": db,
        "coll": coll,
        "created": bool(store._is_force_created),
        "indexes": [[name, dict(spec)] for name, spec in store.indexes.items()],
    }


def _index_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """An index definition as the engine keeps it (the key as a list of pairs)."""
    out = dict(spec)
    out["key"] = [(name, direction) for name, direction in spec.get("key", ())]
    return out


# --------------------------------------------------------------------------- loading


class _Loader:
    """Applies a snapshot's and the journal's records to a fresh ``MemoryServer``."""

    def __init__(self, server: MemoryServer, directory: Path) -> None:
        from ._engine import _store_key

        self.server = server
        self.directory = directory
        self.entry_type = _stored_entry_type()
        self.store_key = _store_key
        self.history: list[_Entry] = []
        self.stores: dict[tuple[str, str], _CollectionStore] = {}
        self.base = 0
        self.last_time = (0, 0)
        self.requested = server.oplog_size  # oplog_size= given now, else what the store says
        self.stored: int | None = None
        self.limit = self.requested or DEFAULT_OPLOG_SIZE

    def fail(self, where: str, message: str, salvage: str = "") -> StoreCorrupted:
        """The error that refuses to open the store; ``salvage`` says how to keep what
        precedes the damage, where that is possible."""
        advice = f" ({salvage})" if salvage else ""
        return StoreCorrupted(
            f"store {self.directory}: {where} {message}; refusing to open a partial store. "
            f"Restore the directory from a backup{advice}."
        )

    # -- state ----------------------------------------------------------------------------

    def catalog(self, cat: dict[str, Any]) -> _CollectionStore:
        store = self.server._store[cat["db"]][cat["coll"]]
        store._is_force_created = bool(cat["created"])
        store.indexes = {}
        store._ttl_indexes = {}
        for name, spec in cat["indexes"]:
            store.create_index(name, _index_spec(spec))
        return store

    def rename(self, spec: dict[str, Any]) -> None:
        self.server._store[spec["db"]].rename(spec["from"], spec["to"])
        self.stores.clear()

    def history_chunk(self, raws: list[bytes], first: int) -> None:
        """Append a snapshot's change events, left encoded until read."""
        expected = self.base + len(self.history)
        if first != expected:
            raise self.fail("the change history", f"jumps from event {expected} to {first}")
        make = self.entry_type
        self.history.extend(make(raw, expected + i) for i, raw in enumerate(raws))

    def split(self, raw: bytes, path: Path, record: Record) -> list[bytes]:
        try:
            return _split(raw)
        except ValueError as exc:  # in a record whose checksum held: written so by a bug
            raise self.fail(f"{path.name} at byte {record.offset}", f"holds {exc}") from None

    def replay(self, events: bytes, path: Path, record: Record) -> None:
        """Apply one commit's change events to the documents and append them to the history."""
        expected = self.base + len(self.history)
        make = self.entry_type
        raws = self.split(events, path, record)
        for raw, doc in zip(raws, bson.decode_all(events, CODEC), strict=True):
            if doc.get("pos") != expected:
                raise self.fail(
                    "the change history", f"jumps from event {expected} to {doc.get('pos')}"
                )
            ts = doc.get("cluster_time")
            if ts is not None and (ts.time, ts.inc) > self.last_time:
                self.last_time = (ts.time, ts.inc)
            self.apply(doc)
            self.history.append(make(raw, expected))
            expected += 1
        if len(self.history) > 2 * self.limit:
            drop = len(self.history) - self.limit
            del self.history[:drop]
            self.base += drop

    def apply(self, event: dict[str, Any]) -> None:
        """Apply one change event (a decoded oplog entry) to the documents."""
        ns = (event["db"], event["coll"])
        store = self.stores.get(ns)
        if store is None:
            store = self.stores[ns] = self.server._store[ns[0]][ns[1]]
        kind = event["op_type"]
        if kind in ("insert", "update", "replace"):
            document = event["full_document"]
            store._documents[self.store_key(document["_id"])] = document
        elif kind == "delete":
            store._documents.pop(self.store_key(event.get("doc_id")), None)
        elif kind == "drop":
            store.drop()
        # Other event types (invalidate, ...) change no document.

    def documents(self, store: _CollectionStore, raw: bytes) -> int:
        key = self.store_key
        found = bson.decode_all(raw, CODEC)
        store._documents.load((key(doc["_id"]), doc) for doc in found)
        return len(found)

    def configure(self, config: dict[str, Any]) -> None:
        if "oplog_size" in config:
            self.stored = int(config["oplog_size"])
            if self.requested is None:
                self.limit = self.stored

    def finish(self, server_id: str) -> None:
        server = self.server
        server.oplog_size = self.limit
        if len(self.history) > self.limit:
            drop = len(self.history) - self.limit
            del self.history[:drop]
            self.base += drop
        server._oplog = self.history
        server._oplog_base = self.base
        server._last_time = self.last_time
        server.server_id = server_id
        server._oplog_visible = server._oplog_base + len(server._oplog)

    # -- files ----------------------------------------------------------------------------

    def snapshot(self, path: Path) -> dict[str, Any]:
        """Load ``snapshot``; returns its header."""
        reader = RecordReader(path)
        records = self._records(reader, f"{path.name} is damaged:")
        header: dict[str, Any] | None = None
        trailer: Any = None
        store = None
        counts = {"namespaces": 0, "docs": 0, "oplog": 0}
        for record in records:
            doc = record.decode()
            if header is None:
                _check_header(self, doc, "snapshot", path)
                header = doc
                self.base = int(doc["oplog_base"])
                self.configure(doc)
                ts = doc["last_time"]
                self.last_time = (ts.time, ts.inc)
            elif trailer is not None:
                raise self.fail(
                    f"{path.name} holds", f"a record after its end at byte {record.offset}"
                )
            elif "ns" in doc:
                store = self.catalog(doc["ns"])
                counts["namespaces"] += 1
            elif "docs" in doc and store is not None:
                counts["docs"] += self.documents(store, doc["bson"])
            elif "oplog" in doc:
                raws = self.split(doc["bson"], path, record)
                self.history_chunk(raws, int(doc.get("first", -1)))
                counts["oplog"] += len(raws)
            elif "end" in doc:
                trailer = doc["end"]
            else:
                raise self.fail(f"{path.name} holds", f"an unknown record at byte {record.offset}")
        if reader.torn or header is None:
            why = reader.torn or "no header"
            raise self.fail(f"{path.name} is damaged:", f"byte {reader.end}: {why}")
        if not isinstance(trailer, dict) or any(trailer.get(k) != v for k, v in counts.items()):
            raise self.fail(f"{path.name} is incomplete:", f"end record {trailer!r}, read {counts}")
        return header

    def _records(
        self, reader: RecordReader, damaged: str, *, journal: bool = False
    ) -> Iterator[Record]:
        try:
            yield from reader
        except DamagedRecord as exc:
            name = reader.path.name
            salvage = (
                f"or, to open what precedes the damage, truncate {name} to {exc.offset} bytes "
                "and move any later journal files away, losing every write after it"
                if journal
                else ""
            )
            raise self.fail(
                f"{damaged} byte {exc.offset} ({exc.reason}), with valid records after it (at "
                f"byte {exc.valid_after}):",
                "this is not a crash's torn write",
                salvage,
            ) from None

    def journal(
        self, path: Path, generation: int, seq: int, server_id: str | None, last: bool
    ) -> tuple[int, str | None, int, str]:
        """Replay one journal file from sequence number ``seq``; returns the last sequence
        number, the server id, where the valid records end and why the rest is not valid."""
        reader = RecordReader(path)
        header: dict[str, Any] | None = None
        for record in self._records(reader, f"journal {path.name} is damaged at", journal=True):
            doc = record.decode()
            if header is None:
                _check_header(self, doc, "journal", path)
                if server_id is not None and doc["server_id"] != server_id:
                    raise self.fail(f"journal {path.name}", "belongs to another store")
                if doc.get("generation") != generation:
                    said = doc.get("generation")
                    raise self.fail(f"journal {path.name}", f"says it is generation {said}")
                header = doc
                server_id = doc["server_id"]
                continue
            number = doc.get("seq")
            if number != seq + 1:
                raise self.fail(
                    f"journal {path.name} at byte {record.offset}",
                    f"holds record {number} where record {seq + 1} was expected (a record is "
                    "missing)",
                )
            seq += 1
            if "oplog" in doc:
                self.replay(doc["oplog"], path, record)
            elif "catalog" in doc:
                self.catalog(doc["catalog"])
            elif "rename" in doc:
                self.rename(doc["rename"])
            elif "config" in doc:
                self.configure(doc["config"])
            else:
                raise self.fail(
                    f"journal {path.name} at byte {record.offset}",
                    "holds a record this version does not know (written by a newer mongoledger?)",
                )
        if reader.torn and not last:
            raise self.fail(
                f"journal {path.name} ends in an invalid record", f"at byte {reader.end}"
            )
        return seq, server_id, reader.end, reader.torn


def _check_header(loader: _Loader, header: dict[str, Any], kind: str, path: Path) -> None:
    if header.get("mongoledger") != kind:
        raise loader.fail(f"{path.name}", f"is not a mongoledger {kind} file")
    version = header.get("version")
    if version != FORMAT_VERSION:
        raise StoreError(
            f"store {loader.directory}: {path.name} has format version {version}, this "
            f"mongoledger reads version {FORMAT_VERSION}: open it with the version that wrote it"
        )


def _new_journal(directory: Path, server_id: str, generation: int) -> tuple[int, int]:
    """Create journal file ``generation`` with its header durable; returns (fd, size)."""
    path = directory / journal_name(generation)
    header = frame(
        {
            "mongoledger": "journal",
            "version": FORMAT_VERSION,
            "server_id": server_id,
            "generation": generation,
        }
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        write_all(fd, header)
        sync_file(fd)
        sync_directory(directory)
    except BaseException:
        os.close(fd)
        raise
    return fd, len(header)


def _looks_like_store(directory: Path) -> bool:
    names = {p.name for p in directory.iterdir()}
    if not names:
        return True
    return bool(names & {LOCK_NAME, SNAPSHOT, SNAPSHOT_TMP}) or any(
        n.startswith("journal.") for n in names
    )


# --------------------------------------------------------------------------- the store


class Store:
    """One open store directory: its lock, journal and compaction (see the module doc)."""

    def __init__(
        self,
        server: MemoryServer,
        directory: Path,
        lock: StoreLock,
        fd: int,
        generation: int,
        seq: int,
        size: int,
        snapshot_bytes: int,
    ) -> None:
        self.server = server
        self.directory = directory
        self._lock = lock
        self._generation = generation
        self._snapshot_bytes = snapshot_bytes
        self._fields = _entry_fields()
        self._marks: collections.deque[tuple[int, int]] = collections.deque()
        self._owed: dict[Any, int] = {}
        self._catalog: dict[tuple[str, str], bytes] = {}
        self._closed = False
        self._compacting = threading.Lock()
        self._compactor: threading.Thread | None = None
        # The last background compaction's failure (e.g. a full disk): the next one waits
        # until the journal has doubled (``_retry_at``), and compact() raises it again.
        self.compaction_error: BaseException | None = None
        self._retry_at = 0
        self.compactions = 0
        for db_name, db in server._store._databases.items():
            for coll_name, store in db._collections.items():
                key = (db_name, coll_name)
                self._catalog[key] = bson.encode(_catalog_doc(db_name, coll_name, store))
        self._journal = JournalWriter(fd, seq, size, self._on_durable, self._failure)

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, server: MemoryServer, path: str | os.PathLike[str]) -> Store:
        """Open (or create) the store in ``path`` for ``server``, whose state it loads."""
        directory = Path(path).expanduser().absolute()
        if directory.exists() and not directory.is_dir():
            raise StoreError(f"store {directory}: not a directory")
        if directory.is_dir() and not _looks_like_store(directory):
            raise StoreError(
                f"{directory} is not a mongoledger store (it holds other files): give a new "
                "or empty directory"
            )
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"store {directory}: cannot create it ({exc})") from None
        try:
            lock = StoreLock.acquire(directory)
        except BlockingIOError as exc:
            holder = getattr(exc, "holder_pid", None)
            who = "this process" if holder == os.getpid() else f"process {holder}"
            if holder is None:
                who = "another process"
            raise StoreLocked(
                f"store {directory} is in use by {who}: one process opens a store at a time. "
                "Stop that process (or close its client), or use another directory.",
                directory,
                holder,
            ) from None
        except OSError as exc:
            raise StoreError(f"store {directory}: cannot lock it ({exc})") from None
        collecting = gc.isenabled()
        gc.disable()  # loading creates millions of objects and frees none: nothing to collect
        try:
            return cls._load(server, directory, lock)
        except BaseException:
            lock.release()
            raise
        finally:
            if collecting:
                gc.enable()

    @classmethod
    def _load(cls, server: MemoryServer, directory: Path, lock: StoreLock) -> Store:
        (directory / SNAPSHOT_TMP).unlink(missing_ok=True)  # a compaction that never finished
        if server.oplog_size is not None and server.oplog_size < 1:
            raise ValueError(f"oplog_size must be a positive number of events: {server.oplog_size}")
        loader = _Loader(server, directory)
        seq, first, server_id, snapshot_bytes = 0, 1, None, 0
        snapshot = directory / SNAPSHOT
        if snapshot.exists():
            header = loader.snapshot(snapshot)
            seq, first, server_id = int(header["seq"]), int(header["journal"]), header["server_id"]
            snapshot_bytes = snapshot.stat().st_size
        files = list(iter_journal_files(directory))
        for generation, path in files:
            if generation < first:  # compacted into the snapshot; a crash kept it
                path.unlink()
        live = [(g, p) for g, p in files if g >= first]
        for i, (generation, _) in enumerate(live):
            if generation != first + i:
                raise loader.fail(f"journal {journal_name(first + i)}", "is missing")
        torn: tuple[Path, int, int, str] | None = None
        for i, (generation, path) in enumerate(live):
            last = i == len(live) - 1
            seq, server_id, end, why = loader.journal(path, generation, seq, server_id, last)
            size = path.stat().st_size
            if end != size:
                torn = (path, end, size - end, why)
        if server_id is None:
            server_id = server.server_id
        if torn is not None:
            path, end, cut, why = torn
            with open(path, "r+b") as fh:
                fh.truncate(end)
                fh.flush()
                os.fsync(fh.fileno())
            warnings.warn(
                StoreRecoveryWarning(
                    f"store {directory}: dropped {cut} bytes at the end of {path.name} (byte "
                    f"{end}: {why}): a write a crash cut short, whose commit never returned"
                ),
                stacklevel=4,
            )
        if live and live[-1][1].stat().st_size > 0:
            generation, path = live[-1]
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            size = path.stat().st_size
        else:  # a new store, or a journal file whose very header a crash cut short
            generation = live[-1][0] if live else first
            fd, size = _new_journal(directory, server_id, generation)
        loader.finish(server_id)
        store = cls(server, directory, lock, fd, generation, seq, size, snapshot_bytes)
        if loader.stored != loader.limit:  # the bound is the store's, until changed again
            store._append({"config": {"oplog_size": loader.limit}})
            store.wait()
        return store

    # -- the engine's hooks ---------------------------------------------------------------

    def published(self, entries: list[_Entry]) -> None:
        """A commit's change events became visible (called under the server's mutex)."""
        fields = self._fields
        seq = self._append({"oplog": b"".join(_entry_raw(e, fields) for e in entries)})
        server = self.server
        self._marks.append((seq, server._oplog_base + len(server._oplog)))

    def catalog_changed(self, db: str, coll: str, store: _CollectionStore) -> None:
        """A namespace's indexes or created flag changed (journaled when they differ)."""
        doc = _catalog_doc(db, coll, store)
        encoded = bson.encode(doc)
        previous = self._catalog.get((db, coll))
        if previous == encoded or (previous is None and not doc["created"] and not doc["indexes"]):
            return  # unchanged (ensure_indexes re-creating an index), or a new empty namespace
        self._catalog[(db, coll)] = encoded
        self._append({"catalog": doc})

    def renamed(self, db: str, old: str, new: str) -> None:
        self._catalog.pop((db, new), None)
        encoded = self._catalog.pop((db, old), None)
        if encoded is not None:
            self._catalog[(db, new)] = encoded
        self._append({"rename": {"db": db, "from": old, "to": new}})

    def _append(self, body: dict[str, Any]) -> int:
        from ._engine import current_ctx

        seq = self._journal.append(lambda number: frame({"seq": Int64(number), **body}))
        self._owed[current_ctx()] = seq
        return seq

    def check(self) -> None:
        """Refuse operations once the store is closed or its journal failed."""
        if self._closed:
            raise InvalidOperation(
                f"Cannot use MongoClient after close: the store {self.directory} is closed "
                "(open it again with path=...)"
            )
        failed = self._journal.failed
        if failed is not None:
            raise self._failure(failed)

    def wait(self) -> None:
        """Return once what this thread/task wrote is durable (sync flavour)."""
        if not self._owed:
            return  # nothing written since (reads)
        from ._engine import current_ctx

        seq = self._owed.pop(current_ctx(), 0)
        if seq:
            self._journal.wait(seq)
            self._show()

    async def async_wait(self) -> None:
        """Return once what this task wrote is durable, awaiting (async flavour)."""
        if not self._owed:
            return  # nothing written since (reads)
        from ._engine import current_ctx

        seq = self._owed.pop(current_ctx(), 0)
        if seq:
            await self._journal.async_wait(seq)
            self._show()

    def _failure(self, exc: BaseException) -> StoreError:
        return StoreError(
            f"store {self.directory}: writing the journal failed ({exc}); the store refuses "
            "further operations: close it and open it again (writes not acknowledged are lost)"
        )

    def _on_durable(self, upto: int) -> None:
        """After a flush (in whichever thread did it; no lock of the server's taken)."""
        threshold = max(COMPACT_MIN_BYTES, self._snapshot_bytes // 4, self._retry_at)
        if self._journal_bytes() > threshold:
            self._compact_in_background()

    def _show(self) -> None:
        """Let change streams read the events of every durable commit. Run by a committer once
        its own record is durable (so a commit is visible to streams before its call
        returns), not by the journal thread: there, taking the server's mutex would make each
        flush wait for the running operation, and then for its turn to run again."""
        server = self.server
        durable = self._journal.durable
        with server._mutex:
            marks = self._marks
            if not marks or marks[0][0] > durable:
                return
            pos = marks.popleft()[1]
            while marks and marks[0][0] <= durable:
                pos = marks.popleft()[1]
            server._oplog_visible = pos
            server._oplog_waiters.notify_all()

    def _journal_bytes(self) -> int:
        return self._journal.bytes

    # -- statistics -----------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters: fsyncs, flushes, records, journal_bytes, snapshot_bytes, compactions."""
        journal = self._journal
        return {
            "fsyncs": journal.fsyncs,
            "flushes": journal.flushes,
            "records": journal.records,
            "journal_bytes": journal.bytes,
            "snapshot_bytes": self._snapshot_bytes,
            "compactions": self.compactions,
        }

    # -- compaction -----------------------------------------------------------------------

    def _compact_in_background(self) -> None:
        if self._closed:
            return
        if self._compactor is not None and self._compactor.is_alive():
            return
        thread = threading.Thread(
            target=self._compact_quietly, name="mongoledger-compact", daemon=True
        )
        self._compactor = thread
        thread.start()

    def _compact_quietly(self) -> None:
        try:
            self.compact()
        except Exception as exc:  # the journal keeps everything: retried as it grows
            self.compaction_error = exc
            self._retry_at = 2 * self._journal_bytes()

    def compact(self) -> None:
        """Write a snapshot of the store and drop the journal it replaces (writes go on)."""
        with self._compacting:
            if self._closed:
                return
            self._compact()
            self.compaction_error = None
            self._retry_at = 0
            self.compactions += 1

    def _compact(self) -> None:
        server = self.server
        directory = self.directory
        generation = self._generation + 1
        fd, size = _new_journal(directory, server.server_id, generation)
        with server._mutex:
            seq = self._journal.rotate(fd, size)
            self._generation = generation
            capture = _Capture(server, self._journal)
        tmp = directory / SNAPSHOT_TMP
        try:
            with open(tmp, "wb") as out:
                out.write(
                    frame(
                        {
                            "mongoledger": "snapshot",
                            "version": FORMAT_VERSION,
                            "server_id": server.server_id,
                            "seq": Int64(seq),
                            "journal": generation,
                            "last_time": Timestamp(*capture.last_time),
                            "oplog_base": Int64(capture.oplog_base),
                            "oplog_size": capture.oplog_size,
                            "written_at": datetime.datetime.now(datetime.timezone.utc),
                        }
                    )
                )
                counts = {"namespaces": 0, "docs": 0, "oplog": 0}
                for record, kind, n in capture.records(self._fields):
                    out.write(record)
                    counts[kind] += n
                out.write(frame({"end": counts}))
                out.flush()
                os.fsync(out.fileno())
            # Documents may reflect records written after ``seq``: install the snapshot only
            # once those are durable, so a crash never leaves half of a commit.
            self._journal.wait(capture.high_water)
            os.replace(tmp, directory / SNAPSHOT)
            sync_directory(directory)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._snapshot_bytes = (directory / SNAPSHOT).stat().st_size
        for old, path in iter_journal_files(directory):
            if old < generation:
                path.unlink(missing_ok=True)
        sync_directory(directory)

    # -- closing --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Flush, stop the journal thread and release the lock (idempotent)."""
        if self._closed:
            return
        with self._compacting:  # lets a running compaction finish
            self._closed = True
        self._journal.close()
        self._lock.release()


class _Capture:
    """What a compaction copies: the catalog and the change history exactly at the rotation
    (taken under the server's mutex), the documents a chunk at a time afterwards."""

    def __init__(self, server: MemoryServer, journal: JournalWriter) -> None:
        self.server = server
        self.journal = journal
        self.last_time = server._last_time
        self.oplog_base = server._oplog_base
        self.oplog_size = server.oplog_size
        self.oplog = list(server._oplog)
        self.high_water = journal.appended
        self.namespaces: list[tuple[dict[str, Any], _CollectionStore, list[Any]]] = []
        overlay = _open_writes(server)
        deleted: dict[tuple[str, str], list[Any]] = collections.defaultdict(list)
        for (db, coll, key), pre in overlay.items():
            if pre is not None:
                deleted[(db, coll)].append(key)
        for db_name, db in server._store._databases.items():
            for coll_name, store in db._collections.items():
                keys = list(store._documents.keys())
                docs = store._documents
                keys += [k for k in deleted.get((db_name, coll_name), ()) if k not in docs]
                catalog = _catalog_doc(db_name, coll_name, store)
                if keys or catalog["created"] or catalog["indexes"]:
                    self.namespaces.append((catalog, store, keys))

    def records(self, fields: tuple[str, ...]) -> Iterator[tuple[bytes, str, int]]:
        server = self.server
        for catalog, store, keys in self.namespaces:
            yield frame({"ns": catalog}), "namespaces", 1
            db, coll = catalog["db"], catalog["coll"]
            for start in range(0, len(keys), _CHUNK):
                with server._mutex:
                    committed = _committed(server, db, coll, store)
                    raws = []
                    for key in keys[start : start + _CHUNK]:
                        doc = committed(key)
                        if doc is not None:
                            raws.append(bson.encode(doc, codec_options=CODEC))
                    self.high_water = self.journal.appended
                if raws:
                    yield frame({"docs": len(raws), "bson": b"".join(raws)}), "docs", len(raws)
        for start in range(0, len(self.oplog), _CHUNK):
            chunk = self.oplog[start : start + _CHUNK]
            raw = b"".join(_entry_raw(e, fields) for e in chunk)
            first = self.oplog_base + start
            yield frame({"oplog": len(chunk), "first": first, "bson": raw}), "oplog", len(chunk)


# The two functions below are the store's only knowledge of how the engine keeps uncommitted
# writes (today: in place, with pre-images in each open transaction's undo log).


def _open_writes(server: MemoryServer) -> dict[tuple[str, str, Any], Any]:
    """Every document an open transaction wrote, with its committed version (None: absent)."""
    overlay: dict[tuple[str, str, Any], Any] = {}
    for txn in server._holding:
        for dk, pre in txn.log.items():
            overlay.setdefault(dk, pre)
    return overlay


def _committed(
    server: MemoryServer, db: str, coll: str, store: _CollectionStore
) -> Callable[[Any], Any]:
    """Look up a document's committed version in ``store`` (under the server's mutex)."""
    overlay = {k[2]: pre for k, pre in _open_writes(server).items() if k[0] == db and k[1] == coll}
    docs = store._documents
    if not overlay:
        return docs.get

    def get(key: Any) -> Any:
        if key in overlay:
            return overlay[key]
        return docs.get(key)

    return get
