"""``MemoryServer``: the engine with its command dispatcher, its wire endpoint and its store.

The engine (``_engine``) runs operations; the dispatcher (``_commands``) turns command
documents into them, for ``db.command(...)`` and for the wire protocol (``_wire``), which
serves the engine to real drivers; the embedded store (``_store``, ``path=``) keeps the
engine's data on disk. All three sit above the engine and import it; this class is where they
meet, so the engine itself depends on none of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._bson import Document
from ._commands import commands_for
from ._engine import Engine
from ._sync.commands import run_command
from ._wire import WireServer

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["MemoryServer"]


class MemoryServer(Engine):
    """One in-process MongoDB "deployment": data, sessions, oplog, fail points, counters.

    Clients created with ``server=`` share it (and therefore their data, transactions and
    change streams). ``oplog_size`` caps the number of change events kept for resuming.
    ``transaction_lifetime_limit`` (seconds, the server's ``transactionLifetimeLimitSeconds``)
    bounds how long a write outside a transaction waits for a transaction holding its
    document: a transaction older than that is aborted by the server, as MongoDB does.
    ``listen()`` serves it over the MongoDB wire protocol.

    ``path`` keeps everything in that directory (the embedded store, see ``_store``): the
    server loads it now and holds it (one process at a time) until ``close()``; the store
    keeps ``oplog_size`` events (default 100,000).
    """

    _wire: WireServer | None = None
    _embedded: Store | None = None  # the embedded store (``path=``), also the engine's journal

    def __init__(
        self,
        *,
        oplog_size: int | None = None,
        transaction_lifetime_limit: float = 60.0,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            oplog_size=oplog_size, transaction_lifetime_limit=transaction_lifetime_limit
        )
        if path is not None:
            from ._store import Store

            self.journal = self._embedded = Store.open(self, path)

    # -- the embedded store (``path=``) -----------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The store's directory, or None for a server that keeps nothing."""
        return None if self._embedded is None else self._embedded.directory

    @property
    def store(self) -> Store | None:
        """The open embedded store (counters in ``store.stats``), or None."""
        return self._embedded

    def compact(self) -> None:
        """Snapshot the store now and drop the journal it replaces (the store also does
        this by itself as the journal grows); a no-op without ``path``."""
        if self._embedded is not None:
            self._embedded.compact()

    def command(self, db: str, command: Mapping[str, Any]) -> Document:
        """Run a database command outside any session (the dispatcher in ``_commands``)."""
        return run_command(commands_for(self), db, command)

    # -- the wire endpoint (``_wire``) ------------------------------------------------------

    def listen(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        max_connections: int = 1000,
    ) -> str:
        """Serve this engine over the MongoDB wire protocol; returns the ``mongodb://`` URI.

        ``port=0`` picks a free port. Only loopback addresses are accepted unless
        ``allow_remote=True`` (there is no authentication: a warning says so). Real drivers
        (PyMongo sync and async, Motor, mongosh) connect to the URI, which names a one-member
        replica set. ``close()`` stops it.
        """
        with self._mutex:
            if self._wire is not None:
                raise RuntimeError("this MemoryServer is already listening; close() it first")
            wire = WireServer(
                self, host, port, allow_remote=allow_remote, max_connections=max_connections
            )
            self._wire = wire
        try:
            return wire.start()
        except BaseException:
            self._wire = None
            raise

    def close(self) -> None:
        """Stop the wire endpoint (if listening) and close its connections; then flush and
        close the store, releasing its lock (with ``path``: the server refuses operations
        afterwards). Idempotent."""
        wire = self._wire
        self._wire = None
        if wire is not None:
            wire.close()
        if self._embedded is not None:
            self._embedded.close()
