"""``MemoryServer``: the engine with its command dispatcher and its wire endpoint.

The engine (``_engine``) runs operations; the dispatcher (``_commands``) turns command
documents into them, for ``db.command(...)`` and for the wire protocol (``_wire``), which
serves the engine to real drivers. Both sit above the engine and import it; this class is
where the three meet, so the engine itself depends on neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._bson import Document
from ._commands import commands_for
from ._engine import Engine
from ._sync.commands import run_command
from ._wire import WireServer

__all__ = ["MemoryServer"]


class MemoryServer(Engine):
    """One in-process MongoDB "deployment": data, sessions, oplog, fail points, counters.

    Clients created with ``server=`` share it (and therefore their data, transactions and
    change streams). ``oplog_size`` caps the number of change events kept for resuming.
    ``transaction_lifetime_limit`` (seconds, the server's ``transactionLifetimeLimitSeconds``)
    bounds how long a write outside a transaction waits for a transaction holding its
    document: a transaction older than that is aborted by the server, as MongoDB does.
    ``listen()`` serves it over the MongoDB wire protocol.
    """

    _wire: WireServer | None = None

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
        """Stop the wire endpoint (if listening) and close its connections; idempotent."""
        wire = self._wire
        self._wire = None
        if wire is not None:
            wire.close()
