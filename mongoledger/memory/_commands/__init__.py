"""Database commands over the engine, with the server's reply shapes: one dispatcher for
``db.command(...)`` in process and for the wire server.

One module per family of commands: ``_reads`` (cursors, change streams), ``_writes``,
``_catalog`` (collections, databases, indexes), ``_sessions`` (sessions, transactions and
retryable writes over the wire), ``_server_info`` (the handshake and what shells ask),
``_explain``; ``_common`` holds what they share. ``Commands`` composes them.

``Commands.start(db, body, ...)`` turns a command document into the work it needs: a reply
right away, an engine call (``EngineStep``: run under the engine's lock, by ``run_sync`` or
``run_async``), or a wait for change events (``WaitStep``). Each step says what comes next, so
the two runners (``_async/commands.py`` and its generated sync twin) are a short loop and all
command logic lives here, flavour-neutral. Errors are raised as PyMongo raises them
(``OperationFailure`` with the server's code, codeName and labels); the wire server turns them
into error replies.

Over the wire, sessions arrive as ``lsid``/``txnNumber``/``startTransaction``/``autocommit``
fields: ``WireSessions`` maps them onto the engine's session state machine, answers a retried
write (the same ``txnNumber``) with the first reply instead of applying it again, and aborts a
transaction left open longer than the server's transaction lifetime limit.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

from mongoledger.memory._bson import Document
from mongoledger.memory._engine import Engine
from mongoledger.memory._errors import operation_failure
from mongoledger.memory._session import SessionState

from . import _engine_api as engine
from ._catalog import Catalog
from ._common import (
    WRITE_CONCERN_COMMANDS,
    ConnectionInfo,
    EngineStep,
    Handler,
    Next,
    ReplyAfterAbort,
    WaitStep,
    _then,
    cluster_time_fields,
    error_reply,
    write_concern_error,
)
from ._explain import Explain, choose_index
from ._reads import Reads
from ._server_info import ServerInfo
from ._sessions import Sessions
from ._writes import Writes

__all__ = [
    "Commands",
    "ConnectionInfo",
    "EngineStep",
    "Next",
    "ReplyAfterAbort",
    "WaitStep",
    "choose_index",
    "cluster_time_fields",
    "commands_for",
    "error_reply",
]


class Commands:
    """The command dispatcher of one engine: cursors and wire sessions included."""

    def __init__(self, server: Engine) -> None:
        self.server = server
        self.lock = threading.Lock()  # the cursor and session tables
        self.sessions = Sessions(self)
        self.reads = Reads(self)
        self.explain = Explain(self)
        parts = [
            ServerInfo(self),
            self.reads,
            Writes(self),
            Catalog(self),
            self.sessions,
            self.explain,
        ]
        self.handlers: dict[str, Handler] = {}
        for part in parts:
            self.handlers.update(part.handlers())

    def start(
        self,
        db: str,
        body: Mapping[str, Any],
        session: SessionState | None = None,
        *,
        connection: ConnectionInfo | None = None,
    ) -> Next:
        """The first step of running ``body`` against database ``db``.

        In process, ``session`` is the caller's session (its transaction, if one is open);
        over the wire (``connection`` given) the session comes from the body's ``lsid``.
        """
        if not isinstance(db, str) or not db or any(c in db for c in '/\\. "$\x00'):
            raise operation_failure(73, "InvalidNamespace", f"Invalid database name: {db!r}")
        name = next(iter(body), None)
        if name is None:
            raise operation_failure(59, "CommandNotFound", "no such command: ''")
        handler = self.handlers.get(name)
        if handler is None:
            self._count_command(name)
            raise operation_failure(
                59,
                "CommandNotFound",
                f"no such command: '{name}' (not implemented by the mongoledger memory engine)",
            )
        if name not in _ENGINE_COUNTED:
            self._count_command(name)
        concern = write_concern_error(body) if name in WRITE_CONCERN_COMMANDS else None
        if connection is None:
            step = handler(db, body, session, None)
        else:
            step = self.sessions._wire(name, handler, db, body, connection)
        if concern is None:
            return step

        def unsatisfied(reply: Document) -> Document:
            # Applied, but not as durably as asked: the server says so beside the result.
            if reply.get("ok"):
                reply["writeConcernError"] = concern
            return reply

        return _then(step, unsatisfied)

    def _count_command(self, name: str) -> None:
        """Count a command the engine does not run as a call, and check the fail point."""
        quiet = name in ("configureFailPoint", "hello", "isMaster", "ismaster")
        engine.count_command(self.server, name, fail_point=not quiet)

    def reap(self) -> float:
        """Abort transactions past their lifetime, drop idle cursors and sessions; the
        seconds until the next deadline."""
        return min(self.sessions.reap(), self.reads.reap())


_ENGINE_COUNTED = frozenset(
    {
        "find",
        "aggregate",
        "count",
        "distinct",
        "insert",
        "update",
        "delete",
        "findAndModify",
        "findandmodify",
        "create",
        "drop",
        "dropDatabase",
        "collMod",
        "renameCollection",
        "listCollections",
        "listDatabases",
        "createIndexes",
        "listIndexes",
        "dropIndexes",
        "deleteIndexes",
        "dbStats",
        "collStats",
        "commitTransaction",
        "abortTransaction",
    }
)


_COMMANDS: weakref.WeakKeyDictionary[Engine, Commands] = weakref.WeakKeyDictionary()
_COMMANDS_LOCK = threading.Lock()


def commands_for(server: Engine) -> Commands:
    """The dispatcher of ``server`` (one per server: its cursors and sessions are shared by
    every client and connection)."""
    with _COMMANDS_LOCK:
        found = _COMMANDS.get(server)
        if found is None:
            found = _COMMANDS[server] = Commands(server)
        return found
