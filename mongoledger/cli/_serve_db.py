"""``mongoledger serve-db``: the in-memory engine (or the embedded store) as a MongoDB server.

Prints the ``mongodb://`` URI on stdout (one line, flushed), then serves until SIGINT or
SIGTERM, and stops cleanly (connections closed, the store flushed and unlocked).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from mongoledger._text import UsageError

if TYPE_CHECKING:
    from mongoledger.cli._context import Context

# A server's oplog is capped; so is this one, or a long-running serve-db would keep every
# change event (each with its document) forever.
DEFAULT_OPLOG_SIZE = 100_000

SUMMARY = "serve the in-memory engine or the embedded store over the MongoDB wire protocol"
EXAMPLE = (
    "  mongoledger serve-db --port 27018     # the store the other commands use\n"
    "  mongoledger serve-db --memory --port 27018\n"
    '  mongosh "$(mongoledger serve-db --memory | head -1)"   # or any driver, with the URI'
)
DESCRIPTION = (
    "Serve the embedded store the other commands use (--store DIR, MONGOLEDGER_STORE, else "
    "the per-user default; MONGOLEDGER_URI is not consulted: it may name this endpoint) or "
    "the in-memory engine (--memory: empty at every start) to real MongoDB drivers and tools "
    "(PyMongo, Motor, mongosh, Compass), so several processes share one store. Prints the "
    "URI, a one-member replica set, then serves until Ctrl-C or SIGTERM. There is no "
    "authentication: it listens on loopback only unless --allow-remote is given."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1; another needs --allow-remote)",
    )
    parser.add_argument(
        "--port", type=int, default=27017, help="the port (default 27017; 0 picks a free one)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="accept a non-loopback --host: anyone who can reach it can read and write "
        "everything (no authentication)",
    )
    parser.add_argument(
        "--oplog-size",
        type=int,
        default=None,
        metavar="N",
        help=f"change events kept for resuming change streams (default {DEFAULT_OPLOG_SIZE:,}, "
        "or what the store was last given; older resume tokens get ChangeStreamHistoryLost, "
        "as past a server's oplog window)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        metavar="N",
        help="close connections beyond N (default 1000)",
    )


def _server(args: argparse.Namespace, err: Any) -> tuple[Any, str]:
    """The engine to serve, chosen as every command chooses (``_target.resolve``: --memory,
    --store, MONGOLEDGER_STORE, the default store), and what it is."""
    from mongoledger.cli._connection import open_server
    from mongoledger.cli._target import resolve

    if args.oplog_size is not None and args.oplog_size < 1:
        raise UsageError(f"--oplog-size must be at least 1, not {args.oplog_size}")
    target = resolve(args, serving=True)
    size = args.oplog_size
    if target.kind == "memory" and size is None:
        size = DEFAULT_OPLOG_SIZE
    server = open_server(target, err=err, oplog_size=size)
    return server, target.describe()


def cmd_serve_db(args: argparse.Namespace, ctx: Context) -> int:
    server, what = _server(args, sys.stderr)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {
        sig: signal.signal(sig, on_signal)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if threading.current_thread() is threading.main_thread()
    }
    try:
        try:
            uri = server.listen(
                args.host,
                args.port,
                allow_remote=args.allow_remote,
                max_connections=args.max_connections,
            )
        except (ValueError, OSError) as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
        ctx.out.write(uri + "\n")
        ctx.out.flush()
        sys.stderr.write(f"mongoledger: serving {what} at {uri} (Ctrl-C stops)\n")
        sys.stderr.flush()
        while not stop.wait(3600):
            pass
        return 0
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(sub: Any, command: Any, connection: Any) -> None:
    parser = command(sub, "serve-db", SUMMARY, EXAMPLE, connection, description=DESCRIPTION)
    add_arguments(parser)
