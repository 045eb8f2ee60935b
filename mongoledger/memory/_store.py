"""The embedded store: the in-memory engine's data kept durable in a directory.

``MemoryServer(path=DIR)`` (and ``MemoryClient(path=DIR)`` / ``AsyncMemoryClient(path=DIR)``)
loads ``DIR`` when it opens and, from then on, journals every commit: the oplog entries a
commit (a transaction's, or a write's outside one) publishes, document changes and collection
changes (DDL) alike. A commit returns once its journal record is on disk. The engine calls
this module at a few points only (``Engine.journal``): ``published`` (in ``_commit_writes``,
under the engine's mutex, so records follow commit order), ``check`` (an operation starts),
and ``wait`` / ``async_wait`` (after the operation or the commit, outside the mutex, so
concurrent committers share one fsync). The oplog's readers see entries only up to what is
durable (``Oplog.visible``, which ``_show`` advances).

**On-disk format (version 2).** ``DIR`` holds ``lock`` (the pid of the process that has the
store open, under an OS lock), ``snapshot`` (optional) and ``journal.NNNNNN`` files. Both kinds
of file are sequences of records ``magic b"\\x89MLR" | length (uint32 LE) | crc32 of length and
payload (uint32 LE) | payload``, each payload one BSON document. A journal file opens with
``{mongoledger: "journal", version, server_id, generation}``; each later record carries the
next sequence number ``seq`` and ``oplog`` (the entries of one commit, every field of the
engine's ``Entry``: operation type, namespace, collection UUID, document key, the full
post-image for an insert, update or replace, the update description, the pre-image where the
collection records images, a DDL event's description, rename target and options before, cluster
time, wall time, session and transaction number: replaying them rebuilds both the documents
and the change-stream history), with ``catalog`` when the commit changed collections (the
state after it of each namespace its DDL events name: created flag, UUID, options, whole index
list), or ``config`` (the kept history's bound). Replay applies document events, moves the
documents of a ``rename`` and empties a dropped collection, then sets the recorded catalogs;
other DDL events change no document. The snapshot opens with ``{mongoledger: "snapshot",
version, server_id, seq, journal, last_time, oplog_base, oplog_size}``, then per namespace a
``ns`` record (its catalog) followed by ``docs`` records (chunks of concatenated BSON
documents), then ``oplog`` chunks (the kept change-stream history), and ends with an ``end``
record holding the counts. Opening loads the snapshot, then replays every journal file from
generation ``journal`` on, records with ``seq`` above the snapshot's. A record cut short at the
end of the last journal file (a crash mid-write; its commit never returned) is dropped with a
:class:`StoreRecoveryWarning`; any other invalid record, a missing sequence number or a damaged
snapshot refuses to open (:class:`StoreCorrupted`). When the journal outgrows
``max(COMPACT_MIN_BYTES, snapshot size / 4)`` the store compacts itself: later records go to a
new journal file, the snapshot is written to ``snapshot.tmp``, fsync'd and renamed over
``snapshot``, and the older journal files are deleted. The catalog and the history are copied
at the switch; documents a chunk at a time while writes go on, committed versions only (an
open transaction's writes sit in the store's documents; its write log holds the committed
version each replaced), following a collection renamed meanwhile by its UUID. Replaying the
journal from the snapshot's ``seq`` brings every document to its final state, and the new
snapshot is installed only once every record it may reflect is durable.

**Version 1** (the first release: no collection UUIDs or options; DDL as separate ``catalog``
and ``rename`` records) opens too: its collections get new UUIDs (history written then keeps
none), and the store is rewritten in version 2 at once (records go to a new journal file, then
a compaction replaces the old files). A crash during that rewrite leaves files both versions
read. A newer version than this one reads refuses to open, naming both.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import gc
import os
import struct
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bson
from bson.int64 import Int64
from bson.timestamp import Timestamp
from pymongo.errors import InvalidOperation, PyMongoError

from ._bson import store_key
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
from ._oplog import Entry
from ._session import current_ctx

if TYPE_CHECKING:
    from ._engine import Engine
    from ._storage import CollectionStore

__all__ = [
    "COMPACT_MIN_BYTES",
    "DEFAULT_OPLOG_SIZE",
    "Store",
    "StoreCorrupted",
    "StoreError",
    "StoreLocked",
    "StoreRecoveryWarning",
]

FORMAT_VERSION = 2
# The versions this one opens: a version-1 store (written before collections had UUIDs and
# options) is read, then rewritten as version 2 at once (a compaction).
_READABLE = (1, 2)
# The change events that change a collection itself: a commit holding one also journals the
# catalog of the namespaces it names (their state after the commit).
_DDL = frozenset({"create", "createIndexes", "dropIndexes", "modify", "rename", "drop"})
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
    return tuple(f.name for f in dataclasses.fields(Entry))


def _entry_raw(entry: Entry, fields: tuple[str, ...]) -> bytes:
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
    """``Entry`` for history loaded from disk: it keeps its BSON and decodes it the first time
    a field is read (opening a store does not decode history nobody resumes from)."""
    fields = [f for f in _entry_fields() if f != "pos"]

    class _StoredEntry(Entry):
        def __init__(self, raw: bytes, pos: int) -> None:  # not the dataclass __init__: lazy
            self.__dict__["_raw"] = raw
            self.__dict__["pos"] = pos

        def _decode(self) -> None:
            doc = bson.decode(self.__dict__["_raw"], codec_options=CODEC)
            for name in fields:
                self.__dict__[name] = doc.get(name)
            values = self.__dict__
            values["images"] = bool(values["images"])
            if values["to"] is not None:  # a BSON array: the engine keeps a tuple
                values["to"] = tuple(values["to"])
            lsid = values["lsid"]
            if lsid is not None and type(lsid.get("uid")) is bytes:  # BSON binary subtype 0
                lsid["uid"] = bson.Binary(lsid["uid"], 0)

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


def _catalog_doc(db: str, coll: str, store: CollectionStore) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "db": db,
        "coll": coll,
        "created": bool(store._is_force_created),
        "indexes": [[name, dict(spec)] for name, spec in store.indexes.items()],
        "options": dict(store.options),
    }
    if store.uuid is not None:
        doc["uuid"] = store.uuid
    return doc


def _ddl_catalogs(server: Engine, entries: list[Entry]) -> list[dict[str, Any]]:
    """The catalog, after the commit, of each namespace the commit's DDL events name."""
    names: dict[tuple[str, str], None] = {}
    for entry in entries:
        if entry.op_type in _DDL and entry.coll is not None:
            names[(entry.db, entry.coll)] = None
            if entry.to is not None:
                names[(entry.to[0], entry.to[1])] = None
    return [_catalog_doc(db, coll, server._store[db][coll]) for db, coll in names]


def _rename(server: Engine, source: tuple[str, str], target: tuple[str, str]) -> None:
    """Replay a rename: the source's documents, indexes, options and UUID move to the
    target (dropped first if it exists), as ``renameCollection`` moved them."""
    src = server._store[source[0]][source[1]]
    dst = server._store[target[0]][target[1]]
    if dst.is_created:
        dst.drop()
    src.move_to(dst)


def _index_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """An index definition as the engine keeps it (the key as a list of pairs)."""
    out = dict(spec)
    out["key"] = [(name, direction) for name, direction in spec.get("key", ())]
    return out


# --------------------------------------------------------------------------- loading


class _Loader:
    """Applies a snapshot's and the journal's records to a fresh engine."""

    def __init__(self, server: Engine, directory: Path) -> None:
        self.server = server
        self.directory = directory
        self.entry_type = _stored_entry_type()
        self.store_key = store_key
        self.history: list[Entry] = []
        self.stores: dict[tuple[str, str], CollectionStore] = {}
        self.versions: set[int] = set()  # the format versions of the files read
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

    def catalog(self, cat: dict[str, Any]) -> CollectionStore:
        """Set a namespace's catalog (created flag, UUID, options, indexes) as recorded."""
        store = self.server._store[cat["db"]][cat["coll"]]
        store.indexes = {}
        store._ttl_indexes = {}
        for name, spec in cat["indexes"]:
            store.create_index(name, _index_spec(spec))  # (creates the collection)
        created = bool(cat["created"])
        store._is_force_created = created
        store.uuid = cat.get("uuid") if created else None
        store.options = dict(cat.get("options") or {}) if created else {}
        return store

    def rename(self, spec: dict[str, Any]) -> None:
        """A version-1 ``rename`` record (a rename within one database)."""
        _rename(self.server, (spec["db"], spec["from"]), (spec["db"], spec["to"]))

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

    def replay(
        self, events: bytes, catalogs: list[dict[str, Any]], path: Path, record: Record
    ) -> None:
        """Apply one commit's change events to the documents, append them to the history, and
        set the catalogs the commit recorded (its DDL's result)."""
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
        for cat in catalogs:
            self.catalog(cat)
        if len(self.history) > 2 * self.limit:
            drop = len(self.history) - self.limit
            del self.history[:drop]
            self.base += drop

    def apply(self, event: dict[str, Any]) -> None:
        """Apply one change event (a decoded oplog entry) to the documents. DDL events move
        or drop documents where they did (rename, drop); the catalog itself comes with the
        commit's record."""
        if event.get("coll") is None:
            return  # dropDatabase: its collections' own drop events preceded it
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
        elif kind == "rename":
            to = event["to"]
            _rename(self.server, ns, (to[0], to[1]))
        # Other event types (create, createIndexes, modify, ...) change no document.

    def documents(self, store: CollectionStore, raw: bytes) -> int:
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
        oplog = server.oplog
        oplog.size = self.limit
        if len(self.history) > self.limit:
            drop = len(self.history) - self.limit
            del self.history[:drop]
            self.base += drop
        oplog.entries = self.history
        oplog.base = self.base
        oplog.last_time = self.last_time
        oplog.visible = oplog.base + len(oplog.entries)
        server.server_id = server_id
        # A version-1 store recorded no UUIDs, and a collection existed by holding documents
        # or indexes: such a collection exists now, under a new UUID.
        for db in server._store._databases.values():
            for store in db._collections.values():
                if store._documents or store.indexes:
                    store._is_force_created = True
                if store._is_force_created and store.uuid is None:
                    store.uuid = bson.Binary(uuid.uuid4().bytes, 4)

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
                self.replay(doc["oplog"], doc.get("catalog") or [], path, record)
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
    if version not in _READABLE:
        raise StoreError(
            f"store {loader.directory}: {path.name} has format version {version}, this "
            f"mongoledger reads versions {', '.join(map(str, _READABLE))}: open it with the "
            "version that wrote it"
        )
    loader.versions.add(version)


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
        server: Engine,
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
        self._closed = False
        self._compacting = threading.Lock()
        self._compactor: threading.Thread | None = None
        # The last background compaction's failure (e.g. a full disk): the next one waits
        # until the journal has doubled (``_retry_at``), and compact() raises it again.
        self.compaction_error: BaseException | None = None
        self._retry_at = 0
        self.compactions = 0
        self._journal = JournalWriter(fd, seq, size, self._on_durable, self._failure)

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, server: Engine, path: str | os.PathLike[str]) -> Store:
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
    def _load(cls, server: Engine, directory: Path, lock: StoreLock) -> Store:
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
        old_format = any(version < FORMAT_VERSION for version in loader.versions)
        if live and live[-1][1].stat().st_size > 0 and not old_format:
            generation, path = live[-1]
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            size = path.stat().st_size
        elif old_format:  # records of this version go to a file of this version
            generation = live[-1][0] + 1 if live else first
            fd, size = _new_journal(directory, server_id, generation)
        else:  # a new store, or a journal file whose very header a crash cut short
            generation = live[-1][0] if live else first
            fd, size = _new_journal(directory, server_id, generation)
        loader.finish(server_id)
        store = cls(server, directory, lock, fd, generation, seq, size, snapshot_bytes)
        try:
            if loader.stored != loader.limit:  # the bound is the store's, until changed again
                store._append({"config": {"oplog_size": loader.limit}})
                store.wait()
            if old_format:  # rewritten in this version: the older files go
                store.compact()
        except BaseException:
            store._journal.close()
            raise
        return store

    # -- the engine's hooks ---------------------------------------------------------------

    def published(self, entries: list[Entry]) -> None:
        """A commit published its change events (called under the server's mutex, from
        ``Engine._commit_writes``): one record holds them, and the catalog after the commit
        of each namespace its DDL events name."""
        fields = self._fields
        body: dict[str, Any] = {"oplog": b"".join(_entry_raw(e, fields) for e in entries)}
        catalogs = _ddl_catalogs(self.server, entries)
        if catalogs:
            body["catalog"] = catalogs
        seq = self._append(body)
        self._marks.append((seq, entries[-1].pos + 1))

    def _append(self, body: dict[str, Any]) -> int:
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
        seq = self._owed.pop(current_ctx(), 0)
        if seq:
            self._journal.wait(seq)
            self._show()

    async def async_wait(self) -> None:
        """Return once what this task wrote is durable, awaiting (async flavour)."""
        if not self._owed:
            return  # nothing written since (reads)
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
            server.oplog.show(pos)

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
    (taken under the server's mutex), the documents a chunk at a time afterwards, committed
    versions only (an open transaction's writes sit in the store's documents: its write log
    holds the committed version it replaced)."""

    def __init__(self, server: Engine, journal: JournalWriter) -> None:
        self.server = server
        self.journal = journal
        oplog = server.oplog
        self.last_time = oplog.last_time
        self.oplog_base = oplog.base
        self.oplog_size = oplog.size
        self.oplog = list(oplog.entries)
        self.high_water = journal.appended
        self.namespaces: list[tuple[dict[str, Any], list[Any]]] = []
        deleted: dict[tuple[str, str], list[Any]] = collections.defaultdict(list)
        for (db, coll, key), pre in _open_writes(server).items():
            if pre is not None:
                deleted[(db, coll)].append(key)
        uncommitted = server.transactions.created  # collections open transactions created
        for db_name, db in server._store._databases.items():
            for coll_name, store in db._collections.items():
                if (db_name, coll_name) in uncommitted:
                    continue
                docs = store._documents
                keys = list(docs.keys())
                keys += [k for k in deleted.get((db_name, coll_name), ()) if k not in docs]
                catalog = _catalog_doc(db_name, coll_name, store)
                if keys or catalog["created"] or catalog["indexes"]:
                    self.namespaces.append((catalog, keys))

    def records(self, fields: tuple[str, ...]) -> Iterator[tuple[bytes, str, int]]:
        server = self.server
        for catalog, keys in self.namespaces:
            yield frame({"ns": catalog}), "namespaces", 1
            ns = (catalog["db"], catalog["coll"])
            for start in range(0, len(keys), _CHUNK):
                with server._mutex:
                    raws = []
                    # Where the collection is now (a rename after the rotation moved it; the
                    # journal replays the rename after the snapshot).
                    store = _find(server, ns, catalog.get("uuid"))
                    if store is not None:
                        committed = _committed(server, store)
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


def _find(server: Engine, ns: tuple[str, str], uuid: Any) -> CollectionStore | None:
    """The collection of UUID ``uuid`` (None: it was dropped), looked for at ``ns`` first;
    with no UUID (a namespace with indexes alone), the collection at ``ns``."""
    store = server._store[ns[0]][ns[1]]
    if uuid is None or store.uuid == uuid:
        return store
    for db in server._store._databases.values():
        for other in db._collections.values():
            if other.uuid == uuid:
                found: CollectionStore = other
                return found
    return None


# The two functions below are the store's only knowledge of how the engine keeps uncommitted
# writes: in place in the store's documents (with overlays for other readers only while
# transactions overlap), the committed version each replaced in its transaction's write log.


def _open_writes(server: Engine) -> dict[tuple[str, str, Any], Any]:
    """Every document an open transaction wrote, with its committed version (None: absent).
    (One open transaction at most owns a document: a second writer conflicts.)"""
    found: dict[tuple[str, str, Any], Any] = {}
    for txn in server.transactions.open:
        for dk, pre in txn.log.items():
            found.setdefault(dk, pre)
    return found


def _committed(server: Engine, store: CollectionStore) -> Callable[[Any], Any]:
    """Look up a document's committed version in ``store`` (under the server's mutex)."""
    db, coll = store.ns
    written = {k[2]: pre for k, pre in _open_writes(server).items() if k[0] == db and k[1] == coll}
    docs = store._documents
    if not written:
        return docs.get

    def get(key: Any) -> Any:
        if key in written:
            return written[key]
        return docs.get(key)

    return get
