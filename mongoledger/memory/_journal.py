"""The embedded store's record framing and its journal writer (group commit).

A record is ``magic (4 bytes) | length (uint32 LE) | crc32 (uint32 LE) | payload``: the
payload is one BSON document of ``length`` bytes and the CRC-32 covers the length bytes and
the payload, so a torn or flipped record never reads as valid. Journal files and snapshots are
sequences of such records (see ``_store`` for what the payloads hold).

:func:`scan` reads a file's records and tells a torn tail (a record cut short by a crash,
with nothing valid after it: the write was never acknowledged) from damage (an invalid record
with a valid one after it, which no crash produces).

:class:`JournalWriter` appends records and makes them durable: whoever waits first writes and
fsyncs everything appended so far, so concurrent committers share one fsync (group commit). A
waiting thread leads the flush itself; a waiting task hands it to the writer's thread and
awaits a future, so the event loop keeps running the other tasks meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bson
from bson.codec_options import CodecOptions

__all__ = [
    "DamagedRecord",
    "JournalWriter",
    "Record",
    "RecordReader",
    "frame",
    "iter_journal_files",
    "journal_name",
    "scan",
    "sync_directory",
    "sync_file",
    "write_all",
]

MAGIC = b"\x89MLR"
_HEAD = struct.Struct("<4sII")
HEADER_SIZE = _HEAD.size
_MIN_BSON = 5
CODEC = CodecOptions(document_class=dict, tz_aware=False)
# Pending records left unwaited for (none of today's paths) are flushed this soon.
_IDLE_FLUSH = 0.02


def frame(document: Any) -> bytes:
    """One record holding ``document`` (a mapping, BSON-encoded here)."""
    payload = bson.encode(document, codec_options=CODEC)
    length = struct.pack("<I", len(payload))
    return MAGIC + length + struct.pack("<I", zlib.crc32(payload, zlib.crc32(length))) + payload


@dataclass
class Record:
    """A valid record: where it starts, its size on disk, and its payload (BSON bytes)."""

    offset: int
    size: int
    payload: bytes

    def decode(self) -> dict[str, Any]:
        return bson.decode(self.payload, codec_options=CODEC)


class DamagedRecord(Exception):
    """An invalid record at ``offset`` with a valid record after it (not a torn tail)."""

    def __init__(self, offset: int, index: int, reason: str, valid_after: int) -> None:
        super().__init__(f"record {index} at byte {offset}: {reason}")
        self.offset = offset
        self.index = index
        self.reason = reason
        self.valid_after = valid_after


def _record_at(data: bytes, offset: int) -> tuple[Record | None, str]:
    """The valid record at ``offset``, or None and why not."""
    end = len(data)
    if end - offset < HEADER_SIZE:
        return None, f"{end - offset} bytes, shorter than a record header"
    magic, length, crc = _HEAD.unpack_from(data, offset)
    if magic != MAGIC:
        return None, "no record marker"
    if length < _MIN_BSON:
        return None, f"impossible length {length}"
    start = offset + HEADER_SIZE
    if start + length > end:
        return None, f"cut short ({end - start} of {length} bytes)"
    payload = data[start : start + length]
    if zlib.crc32(payload, zlib.crc32(data[offset + 4 : offset + 8])) != crc:
        return None, "checksum mismatch"
    return Record(offset, HEADER_SIZE + length, payload), ""


def scan(data: bytes, start: int = 0) -> tuple[list[Record], int, str]:
    """The valid records of ``data`` from ``start``, the offset where they end, and why the
    bytes after that (if any) are not a record: a torn tail.

    Raises :class:`DamagedRecord` when an invalid record is followed by a valid one.
    """
    records: list[Record] = []
    offset = start
    while offset < len(data):
        record, reason = _record_at(data, offset)
        if record is None:
            after = _next_valid(data, offset + 1)
            if after is not None:
                raise DamagedRecord(offset, len(records), reason, after)
            return records, offset, reason
        records.append(record)
        offset += record.size
    return records, offset, ""


class RecordReader:
    """The records of the file at ``path``, read one at a time (a snapshot of any size is
    never in memory whole). After the iteration, ``end`` is where the valid records end and
    ``torn`` says why the bytes after them (if any) are not a record. An invalid record with
    a valid one after it raises :class:`DamagedRecord`, as :func:`scan` does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.end = 0
        self.torn = ""
        self.count = 0

    def __iter__(self) -> Iterator[Record]:
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            offset = 0
            while offset < size:
                record = None
                head = fh.read(HEADER_SIZE)
                if len(head) == HEADER_SIZE:
                    magic, length, crc = _HEAD.unpack(head)
                    fits = _MIN_BSON <= length <= size - offset - HEADER_SIZE
                    if magic == MAGIC and fits:
                        payload = fh.read(length)
                        if zlib.crc32(payload, zlib.crc32(head[4:8])) == crc:
                            record = Record(offset, HEADER_SIZE + length, payload)
                if record is None:  # a torn tail or damage: look at the rest to tell which
                    fh.seek(offset)
                    rest = fh.read()
                    reason = _record_at(rest, 0)[1]
                    after = _next_valid(rest, 1)
                    if after is not None:
                        raise DamagedRecord(offset, self.count, reason, offset + after)
                    self.end, self.torn = offset, reason
                    return
                yield record
                self.count += 1
                offset += record.size
            self.end = offset


def _next_valid(data: bytes, offset: int) -> int | None:
    """The offset of the first valid record at or after ``offset`` (None: there is none)."""
    while True:
        found = data.find(MAGIC, offset)
        if found < 0:
            return None
        if _record_at(data, found)[0] is not None:
            return found
        offset = found + 1


# --------------------------------------------------------------------------- durability


def sync_file(fd: int) -> None:
    """Make what was written to ``fd`` durable (its data and size)."""
    if sys.platform == "darwin":  # pragma: no cover - fsync does not reach the platters there
        import fcntl

        fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
    elif hasattr(os, "fdatasync"):
        os.fdatasync(fd)  # an append's size change is data, so this suffices
    else:  # pragma: no cover - Windows
        os.fsync(fd)


def sync_directory(directory: Path) -> None:
    """Make the directory's entries (a created, renamed or deleted file) durable."""
    if sys.platform == "win32":  # pragma: no cover - no directory handles to fsync there
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class JournalWriter:
    """Appends framed records to the current journal file and makes them durable.

    ``append`` (under the server's mutex, so records are in commit order) returns the record's
    sequence number; ``wait``/``async_wait`` return once that record is on disk, or raise the
    write's error (then every later wait raises it too: the store is failed). ``on_durable``
    runs after each flush with the highest durable sequence number, before any waiter wakes,
    in the thread that flushed: it must not wait for the server (its mutex).
    """

    def __init__(
        self,
        fd: int,
        seq: int,
        size: int,
        on_durable: Callable[[int], None],
        failure: Callable[[BaseException], BaseException],
    ) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # waiting threads
        self._wake = threading.Condition(self._lock)  # the journal thread: work for it
        self._fd = fd
        self._pending: list[tuple[int, bytes]] = []
        self._pending_since = 0.0
        self._retired: list[int] = []
        self._appended = seq
        self._durable = seq
        self._flushing = False
        self._failed: BaseException | None = None
        self._failure = failure
        self._async: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._kicks: set[asyncio.AbstractEventLoop] = set()
        self._on_durable = on_durable
        self._stopping = False
        self.bytes = size  # of the current file
        self.fsyncs = 0
        self.flushes = 0
        self.records = 0
        self._thread = threading.Thread(target=self._run, name="mongoledger-journal", daemon=True)
        self._thread.start()

    # -- appending ------------------------------------------------------------------------

    @property
    def appended(self) -> int:
        return self._appended

    @property
    def durable(self) -> int:
        return self._durable

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def append(self, build: Callable[[int], bytes]) -> int:
        """Queue the record ``build(seq)`` returns for the next sequence number; returns it."""
        with self._lock:
            if self._failed is not None:
                raise self._failure(self._failed)
            seq = self._appended + 1
            record = build(seq)
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append((self._fd, record))
            self._appended = seq
            self.records += 1
            self.bytes += len(record)
            return seq

    def rotate(self, fd: int, size: int) -> int:
        """Send later records to ``fd`` (a new file, its header durable already); returns the
        last sequence number appended to the old one. The old file is closed once flushed."""
        with self._lock:
            self._retired.append(self._fd)
            self._fd = fd
            self.bytes = size
            self._wake.notify()  # the old file's records are flushed promptly
            return self._appended

    # -- waiting --------------------------------------------------------------------------

    def wait(self, seq: int) -> None:
        """Block until record ``seq`` is durable (this thread flushes if nobody is)."""
        with self._lock:
            while self._durable < seq:
                if self._failed is not None:
                    raise self._failure(self._failed)
                if not self._flushing and self._pending:
                    self._flush_locked()
                    continue
                self._cond.wait()

    async def async_wait(self, seq: int) -> None:
        """Wait until record ``seq`` is durable without blocking the event loop: the writer's
        thread flushes while the loop runs other tasks (whose records join the next flush)."""
        with self._lock:
            if self._durable >= seq:
                return
            if self._failed is not None:
                raise self._failure(self._failed)
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            self._async.append((seq, loop, fut))
            if not self._flushing and loop not in self._kicks:
                # Wake the thread once the loop has run every task that is ready now: their
                # commits join this flush instead of each starting one.
                self._kicks.add(loop)
                loop.call_soon(self._kick, loop)
        await fut

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._kicks.discard(loop)
            self._wake.notify()

    # -- flushing -------------------------------------------------------------------------

    def _flush_locked(self) -> None:
        """Write and sync everything pending; called and returns with the lock held."""
        batch, self._pending = self._pending, []
        upto = self._appended
        self._flushing = True
        self._lock.release()
        error: BaseException | None = None
        try:
            try:
                order: list[int] = []
                chunks: dict[int, list[bytes]] = {}
                for fd, record in batch:
                    if fd not in chunks:
                        order.append(fd)
                        chunks[fd] = []
                    chunks[fd].append(record)
                for fd in order:  # an old file's records before the next file's
                    write_all(fd, b"".join(chunks[fd]))
                    sync_file(fd)
                    self.fsyncs += 1
                self.flushes += 1
            except OSError as exc:
                error = exc
            if error is None:
                self._on_durable(upto)
        finally:
            self._lock.acquire()
            self._flushing = False
        if error is not None:
            self._failed = error
        else:
            self._durable = upto
            self._close_retired()
        self._cond.notify_all()
        if self._async and self._pending:
            self._wake.notify()  # tasks wait for records this flush did not take
        self._settle()

    def _close_retired(self) -> None:
        keep = []
        for fd in self._retired:
            if any(p[0] == fd for p in self._pending):
                keep.append(fd)
            else:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._retired = keep

    def _settle(self) -> None:
        """Resolve the async waiters the last flush served (all of them on failure)."""
        if not self._async:
            return
        done: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        waiting = []
        for seq, loop, fut in self._async:
            if self._failed is not None or seq <= self._durable:
                done.setdefault(loop, []).append(fut)
            else:
                waiting.append((seq, loop, fut))
        self._async = waiting
        error = None if self._failed is None else self._failure(self._failed)
        for loop, futures in done.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(_resolve, futures, error)

    def _run(self) -> None:
        with self._lock:
            while True:
                if self._pending and not self._flushing and self._failed is None:
                    overdue = time.monotonic() - self._pending_since >= _IDLE_FLUSH
                    if self._async or self._retired or self._stopping or overdue:
                        self._flush_locked()
                        continue
                if self._stopping and not self._flushing:
                    return
                self._wake.wait(_IDLE_FLUSH if self._pending else None)

    def close(self) -> None:
        """Flush what is pending, stop the thread and close the files (idempotent)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._wake.notify()
        self._thread.join()
        with self._lock:
            for fd in [*self._retired, self._fd]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._retired = []
            if self._failed is None and self._async:
                self._failed = OSError("the journal was closed")
                self._settle()


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for fut in futures:
        if fut.done():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


def iter_journal_files(directory: Path) -> Iterator[tuple[int, Path]]:
    """``(generation, path)`` of every journal file, oldest first."""
    found = []
    for path in directory.glob("journal.*"):
        suffix = path.name.split(".", 1)[1]
        if suffix.isdigit():
            found.append((int(suffix), path))
    yield from sorted(found)


def journal_name(generation: int) -> str:
    return f"journal.{generation:06d}"
