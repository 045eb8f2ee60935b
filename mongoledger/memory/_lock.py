"""The embedded store's one-process lock: an OS file lock, released when its holder dies.

``DIR/lock`` is locked exclusively (``flock`` on POSIX, ``LockFileEx`` through ``msvcrt`` on
Windows) for as long as a store is open, and holds the holder's pid as text so a refused
opener can name it. The kernel drops the lock with the holder's last file descriptor, so a
process killed with ``kill -9`` leaves no stale lock behind: the pid in the file is only a
hint, never the lock itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["LOCK_NAME", "StoreLock"]

LOCK_NAME = "lock"


class StoreLock:
    """The exclusive lock of one store directory (``acquire`` or a ``BlockingIOError``)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path) -> StoreLock:
        """Lock ``directory``; ``BlockingIOError`` (with ``holder_pid``) when another
        process (or another open store of this process) holds it."""
        path = directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            error = BlockingIOError(exc.errno, f"{path} is locked")
            error.holder_pid = holder  # type: ignore[attr-defined]
            raise error from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (idempotent); the file stays, with no pid in it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            _unlock(fd)
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        # flock, not fcntl/lockf: a second open of the same file in this process conflicts
        # too, so one process cannot open a store twice by accident.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
