"""A spinner on stderr for long work, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["progress"]

_FRAMES = "|/-\\"
_INTERVAL = 0.1


@contextmanager
def progress(label: str, *, enabled: bool = True, stream: TextIO | None = None) -> Iterator[None]:
    """Show ``label`` with a spinner and elapsed seconds while the block runs.

    Quiet unless ``enabled`` and the stream (default stderr) is a TTY, so pipes, logs and
    tests see nothing. The line is erased when the block ends.
    """
    out = stream if stream is not None else sys.stderr
    if not enabled or not _isatty(out):
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def spin() -> None:
        frame = 0
        while not done.wait(_INTERVAL):
            elapsed = time.monotonic() - started
            out.write(f"\r{_FRAMES[frame % len(_FRAMES)]} {label} {elapsed:.1f}s")
            out.flush()
            frame += 1

    thread = threading.Thread(target=spin, name="mongoledger-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        out.write("\r" + " " * (len(label) + 12) + "\r")
        out.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False
