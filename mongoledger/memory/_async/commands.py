"""Run a database command through the dispatcher (``_commands``): the async runner.

Written once here; ``scripts/unasync.py`` generates the sync twin ``_sync/commands.py``. The
dispatcher decides everything; the runner only runs its engine steps (``run_async``) and its
waits for change events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongoledger.memory._bson import Document
from mongoledger.memory._commands import (
    Commands,
    ConnectionInfo,
    EngineStep,
    ReplyAfterAbort,
    WaitStep,
)
from mongoledger.memory._commands import _engine_api as engine
from mongoledger.memory._session import SessionState
from mongoledger.memory._shared import async_wait_for_event

__all__ = ["async_run_command"]


async def async_run_command(
    commands: Commands,
    db: str,
    body: Mapping[str, Any],
    session: SessionState | None = None,
    *,
    connection: ConnectionInfo | None = None,
) -> Document:
    """The reply to ``body`` run on database ``db``; a failed command raises
    ``OperationFailure`` as PyMongo does (``error_reply`` makes the wire's error reply)."""
    step = commands.start(db, body, session, connection=connection)
    server = commands.server
    while not isinstance(step, dict):
        if isinstance(step, EngineStep):
            call = step.call
            try:
                if connection is not None and step.session is None and call.read:
                    # A read of no transaction never waits for one (on a server neither).
                    value = engine.run_outside_transactions(server, call.cmd, call.fn, call.kind)
                else:
                    value = await server.run_async(
                        call.cmd,
                        step.session,
                        call.fn,
                        strict=False,
                        what=call.what,
                        kind=call.kind,
                        retryable=False,
                    )
            except ReplyAfterAbort as exc:
                return exc.reply
            step = step.then(value)
        else:
            assert isinstance(step, WaitStep)
            event = await async_wait_for_event(step.core, step.timeout)
            step = step.then(event)
    # The embedded store: what a handler committed itself (commitTransaction) is on disk
    # before the reply goes out, as what run_async ran is.
    await server.async_wait_durable()
    return step
