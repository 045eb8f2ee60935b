"""``mongoledger serve-db``: the in-memory engine (or the embedded store) as a MongoDB server.

Prints the ``mongodb://`` URI on stdout (one line, flushed), then serves until SIGINT or
SIGTERM, and stops cleanly (connections closed, the store flushed and unlocked).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from mongoledger.cli._values import UsageError

if TYPE_CHECKING:
    from mongoledger.cli._context import Context

# A server's oplog is capped; so is this one, or a long-running serve-db would keep every
# change event (each with its document) forever.
DEFAULT_OPLOG_SIZE = 100_000

SUMMARY = "serve the in-memory engine or the embedded store over the MongoDB wire protocol"
EXAMPLE = (
    "  mongoledger serve-db --memory --port 27018\n"
    '  mongosh "$(mongoledger serve-db --memory | head -1)"   # or any driver, with the URI'
)
DESCRIPTION = (
    "Serve the in-memory engine (--memory: empty at every start) or the embedded store "
    "(--store DIR) to real MongoDB drivers and tools (PyMongo, Motor, mongosh, Compass). "
    "Prints the URI, a one-member replica set, then serves until Ctrl-C or SIGTERM. There is "
    "no authentication: it listens on loopback only unless --allow-remote is given."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    if not any(action.dest == "store" for action in parser._actions):
        parser.add_argument(
            "--store",
            metavar="DIR",
            help="serve the embedded store in DIR (created if missing) instead of --memory",
        )
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
        default=DEFAULT_OPLOG_SIZE,
        metavar="N",
        help=f"change events kept for resuming change streams (default {DEFAULT_OPLOG_SIZE:,}; "
        "older resume tokens get ChangeStreamHistoryLost, as past a server's oplog window)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        metavar="N",
        help="close connections beyond N (default 1000)",
    )


def _server(args: argparse.Namespace) -> Any:
    from mongoledger.memory import MemoryServer

    store = getattr(args, "store", None)
    if store and args.memory:
        raise UsageError("give --store DIR or --memory, not both")
    if not store and not args.memory:
        raise UsageError("give --memory (an empty in-memory engine) or --store DIR")
    if args.oplog_size < 1:
        raise UsageError(f"--oplog-size must be at least 1, not {args.oplog_size}")
    if not store:
        return MemoryServer(oplog_size=args.oplog_size)
    try:
        return MemoryServer(path=store, oplog_size=args.oplog_size)  # type: ignore[call-arg]
    except TypeError:
        raise UsageError(
            f"--store {store}: this version of mongoledger has no embedded store "
            "(MemoryServer(path=...)); serve an in-memory engine with --memory instead"
        ) from None


def cmd_serve_db(args: argparse.Namespace, ctx: Context) -> int:
    server = _server(args)
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
        sys.stderr.write(f"mongoledger: serving {_what(args)} at {uri} (Ctrl-C stops)\n")
        sys.stderr.flush()
        while not stop.wait(3600):
            pass
        return 0
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _what(args: argparse.Namespace) -> str:
    store = getattr(args, "store", None)
    return f"the store {store}" if store else "an in-memory engine"


def register(sub: Any, command: Any, environ: Mapping[str, str]) -> None:
    parser = command(sub, "serve-db", SUMMARY, EXAMPLE, environ, description=DESCRIPTION)
    add_arguments(parser)
