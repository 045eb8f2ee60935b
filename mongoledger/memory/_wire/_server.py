"""The TCP server: the MongoDB wire protocol in front of a ``MemoryServer``.

One asyncio event loop, on a thread of its own, serves every connection; a connection's
requests run one after another (as drivers send them), through the same command dispatcher
as ``db.command(...)`` in process. Operations that wait (for a transaction's lock, for change
events) await futures, so one slow connection never blocks another, and an idle server sleeps.

Limits: a message larger than ``max_message_size`` (the server's 48 MB), a frame that cannot be
parsed, an unknown opcode, or a compressed message closes that connection only; connections
beyond ``max_connections`` are closed as they are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

from pymongo.errors import AutoReconnect

from mongoledger.memory._async.commands import async_run_command
from mongoledger.memory._bson import Document
from mongoledger.memory._commands import (
    ConnectionInfo,
    cluster_time_fields,
    commands_for,
    error_reply,
)
from mongoledger.memory._engine import Engine

from ._protocol import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    OP_QUERY,
    ProtocolError,
    Request,
    encode_msg,
    encode_reply,
    parse_body,
    parse_header,
)

__all__ = ["NoAuthenticationWarning", "WireServer", "is_loopback"]

log = logging.getLogger("mongoledger.memory.wire")

DEFAULT_MAX_CONNECTIONS = 1000
_HELLO = frozenset({"hello", "isMaster", "ismaster"})
_CLOSE_SECONDS = 5.0
_STATE_CHANGE_CODES = frozenset({91, 189, 10107, 11600, 11602, 13435, 13436})
_RETRYABLE = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify"})


class NoAuthenticationWarning(UserWarning):
    """The wire endpoint listens beyond loopback, and it has no authentication."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Close(Exception):
    """Close this connection without a reply (a fail point's closeConnection)."""


class WireServer:
    """Serve ``memory`` on ``host:port`` (port 0: a free port) until ``close()``."""

    def __init__(
        self,
        memory: Engine,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a host name or address, not {host!r}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, not {port!r}")
        if not is_loopback(host):
            if not allow_remote:
                raise ValueError(
                    f"refusing to listen on {host!r}: the wire endpoint has no authentication, "
                    "so it binds loopback only unless allow_remote=True (serve-db: "
                    "--allow-remote) says to accept connections from other machines"
                )
            warnings.warn(
                f"the mongoledger wire endpoint listens on {host!r} WITHOUT AUTHENTICATION: "
                "anyone who can reach this port can read and change every database",
                NoAuthenticationWarning,
                stacklevel=3,
            )
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections!r}")
        if max_message_size < HEADER_SIZE + 5:
            raise ValueError(f"max_message_size is too small: {max_message_size!r}")
        self.memory = memory
        self.commands = commands_for(memory)
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.max_message_size = max_message_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._stopping: asyncio.Event | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> str:
        """Bind, serve on a background thread, and return the ``mongodb://`` URI."""
        if self._thread is not None:
            raise RuntimeError("the wire server is already running")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            threading.current_thread().name = f"mongoledger-wire:{self.port}"
            ready.set()
            try:
                loop.run_until_complete(self._serve_forever())
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="mongoledger-wire", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self.uri

    @property
    def uri(self) -> str:
        """The URI drivers connect with: this address, as the one-member replica set."""
        set_name = self.memory.hello()["setName"]
        return f"mongodb://{_host_port(self.host, self.port)}/?replicaSet={set_name}"

    async def _bind(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, limit=2**16, reuse_address=True
        )
        sockets = self._server.sockets
        if self.port == 0 and sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def _serve_forever(self) -> None:
        assert self._stopping is not None
        reaper = asyncio.ensure_future(self._reap())
        try:
            await self._stopping.wait()
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            if self._server is not None:
                self._server.close()  # accepts no more
            await asyncio.sleep(0)  # connections accepted just now register (or abort)
            # Abort every transport first (what is unsent is dropped: a graceful close would
            # wait for peers that may never read), so no connection stays blocked on I/O.
            for task, writer in list(self._connections.items()):
                writer.transport.abort()
                task.cancel()
            # What remains are connections accepted during shutdown, which abort themselves
            # as they start (cancelling them before they start would leak their sockets).
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            if pending:
                await asyncio.wait(pending, timeout=_CLOSE_SECONDS)
            if self._server is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._server.wait_closed(), _CLOSE_SECONDS)
            for _ in range(3):  # the aborted transports' connection_lost callbacks
                await asyncio.sleep(0)

    async def _reap(self) -> None:
        """Abort transactions past their lifetime and drop idle cursors, waking only at the
        next deadline (or when a transaction starts), so an idle server stays asleep."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        commands = self.commands
        due = [0.0]  # when the reaper wakes next (monotonic)

        def poke() -> None:
            if time.monotonic() + commands.sessions.transaction_lifetime < due[0]:
                due[0] = 0.0
                loop.call_soon_threadsafe(wake.set)

        commands.sessions.transaction_started = poke  # type: ignore[method-assign]
        while True:
            delay = commands.reap()
            due[0] = time.monotonic() + delay
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
            wake.clear()

    def close(self) -> None:
        """Stop accepting, close every connection, and stop the loop (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        stopping = self._stopping
        if stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already stopped
                loop.call_soon_threadsafe(stopping.set)
        thread.join(3 * _CLOSE_SECONDS)
        if thread.is_alive():  # a bug, not a state to wait in forever: say so
            log.error("the wire server thread did not stop within %s s", 3 * _CLOSE_SECONDS)
        self._thread = None
        self._loop = None

    # -- connections ----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        assert self._stopping is not None
        if self._stopping.is_set():  # accepted while shutting down
            writer.transport.abort()
            return
        if len(self._connections) >= self.max_connections:
            log.warning("connection refused: %d connections open", len(self._connections))
            writer.close()
            return
        self._connections[task] = writer
        sock = writer.get_extra_info("sockname")
        host, port = (sock[0], sock[1]) if isinstance(sock, tuple) else (self.host, self.port)
        info = ConnectionInfo(host if ":" not in host else f"[{host}]", port, next(self._ids))
        try:
            while True:
                head = await reader.readexactly(HEADER_SIZE)
                header = parse_header(head, self.max_message_size)
                data = await reader.readexactly(header.length - HEADER_SIZE)
                request = parse_body(header, data)
                reply = await self._handle(request, info)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, _Close):
            pass
        except ProtocolError as exc:
            log.info("closing connection %d: %s", info.connection_id, exc)
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug must not take the server down: log it, drop this connection
            log.exception("closing connection %d after an internal error", info.connection_id)
        finally:
            self._connections.pop(task, None)
            if self._stopping.is_set():  # shutting down (this may run before the sweep)
                writer.transport.abort()
            else:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), _CLOSE_SECONDS)

    async def _handle(self, request: Request, info: ConnectionInfo) -> bytes | None:
        body = request.body
        if request.op_code == OP_QUERY:
            return encode_reply(
                next(self._request_ids), request.request_id, await self._legacy(request, info)
            )
        db = body.pop("$db", None)
        name = next(iter(body), None)
        if not isinstance(db, str):
            reply = _error(40571, "Location40571", "OP_MSG requests require a $db argument")
        else:
            if name in _HELLO and "topologyVersion" in body and "maxAwaitTimeMS" in body:
                await self._await_topology_change(body)
            reply = await self._run(db, body, info)
        if request.more_to_come:
            return None
        return encode_msg(next(self._request_ids), request.request_id, reply)

    async def _legacy(self, request: Request, info: ConnectionInfo) -> Document:
        name = next(iter(request.body), None)
        if request.legacy_db is None or name not in _HELLO:
            return _error(
                352,
                "UnsupportedOpQueryCommand",
                f"Unsupported OP_QUERY command: {name}. The client driver may require an "
                "upgrade. For more details see https://dochub.mongodb.org/core/legacy-opcode-removal",
            )
        return await self._run(request.legacy_db, request.body, info)

    async def _await_topology_change(self, body: Mapping[str, Any]) -> None:
        """An awaitable hello: the topology never changes, so answer after maxAwaitTimeMS
        (or at shutdown) instead of at once, as a server does; the driver's monitor sleeps."""
        wait = body.get("maxAwaitTimeMS")
        if isinstance(wait, int) and not isinstance(wait, bool) and wait > 0:
            # A plain sleep: shutdown cancels it (asyncio.wait_for on Python 3.11 can swallow
            # a cancellation that races its inner future, which would leave this connection
            # serving after close()).
            await asyncio.sleep(min(wait, 60_000) / 1000)

    async def _run(self, db: str, body: Document, info: ConnectionInfo) -> Document:
        name = next(iter(body), "")
        try:
            reply = await async_run_command(self.commands, db, body, connection=info)
        except AutoReconnect as exc:  # a closeConnection fail point
            raise _Close from exc
        except Exception as exc:
            retryable = name in ("commitTransaction", "abortTransaction") or (
                name in _RETRYABLE and "txnNumber" in body and "autocommit" not in body
            )
            reply = error_reply(exc, retryable_write=retryable)
            if reply.get("code") == 1:
                log.error("command %r failed inside the engine", name, exc_info=exc)
            if reply.get("code") in _STATE_CHANGE_CODES:
                # As a server does: the driver sees the topology has not changed, so it keeps
                # the server selectable and its retry goes straight through.
                reply["topologyVersion"] = self.memory.hello()["topologyVersion"]
        if name not in _HELLO:
            reply.update(cluster_time_fields(self.memory))
        return reply


def _error(code: int, name: str, message: str) -> Document:
    return {"ok": 0.0, "errmsg": message, "code": code, "codeName": name}
