"""Connecting a command (``mongoledger``, the notifier) to the target it chose
(:mod:`._target`: ``--memory``, ``--uri``, ``--store``, the environment, the default store).
A store is created on first use, and the command says once on stderr where it is.

:func:`connect`: every mistake is one line that names the value: a bad ``--uri`` (syntax,
port, options) or ``--db`` (:func:`validate_db_name`, which the caller runs once, first) is
a usage error (exit 2) before anything is sent; a server selection that takes more than a
moment prints ``connecting to HOST...`` on stderr (TTY or not); an unreachable server ends
with one line naming the host and the reason (exit 1); a store that cannot be opened (in use
by another process, damaged) says which and what to do. The user's
``serverSelectionTimeoutMS`` is honoured; without it the wait is 10 s, not PyMongo's 30 s.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any, TextIO

from mongoledger._format import one_line
from mongoledger._text import UsageError
from mongoledger.cli._target import DEFAULT_URI, Target, default_store, hosts_of, redact, resolve
from mongoledger.errors import LedgerError

# default_store and resolve are the choice's (._target), still importable from here.
__all__ = [
    "NOTICE_AFTER",
    "SERVER_SELECTION_MS",
    "CannotConnect",
    "connect",
    "connect_async",
    "connect_server",
    "default_store",
    "open_server",
    "resolve",
    "validate_db_name",
]

SERVER_SELECTION_MS = 10_000
NOTICE_AFTER = 0.5  # seconds of waiting before "connecting to HOST..." is printed
# MongoDB refuses these in database names (on every platform); a name is under 64 bytes.
_DB_FORBIDDEN = '/\\. "$\x00'
_TIMEOUTS = re.compile(r" \(configured timeouts: [^)]*\)")


class CannotConnect(LedgerError):
    """The server could not be reached, or refused the connection (exit status 1)."""


def connect(
    target: Target, db_name: str, err: TextIO, *, appname: str, prog: str = "mongoledger"
) -> tuple[Any, Any]:
    """A connected sync ``(client, database)`` for ``target``; ``db_name`` is one
    :func:`validate_db_name` accepted (the caller checks it first, so that a bad ``--db`` is
    reported before the command's other mistakes)."""
    if target.kind == "uri":
        assert target.uri is not None
        return connect_server(target.uri, db_name, err, appname=appname, prog=prog)
    from mongoledger.memory import MemoryClient

    if target.kind == "memory":
        client: Any = MemoryClient()
    else:
        client = _open_store(target, lambda path: MemoryClient(path=path), err, prog)
    return client, client[db_name]


def connect_async(target: Target, *, err: TextIO | None = None, appname: str) -> Any:
    """An async client for ``target`` (``AsyncMongoClient`` or an ``AsyncMemoryClient``)."""
    if target.kind in ("memory", "store"):
        from mongoledger.memory import AsyncMemoryClient

        if target.kind == "memory":
            return AsyncMemoryClient()
        return _open_store(target, lambda path: AsyncMemoryClient(path=path), err)
    from pymongo import AsyncMongoClient

    assert target.uri is not None
    options: dict[str, Any] = {"appname": appname}
    if "serverselectiontimeoutms" not in target.uri.lower():
        options["serverSelectionTimeoutMS"] = SERVER_SELECTION_MS
    return AsyncMongoClient(target.uri, **options)


def open_server(target: Target, *, err: TextIO | None = None, oplog_size: int | None = None) -> Any:
    """A ``MemoryServer`` for ``target`` (the store's, or an in-memory one) to serve over the
    wire protocol; a URI names a server that already runs. ``oplog_size`` (None: the store's
    own bound) caps the change events kept."""
    if target.kind == "uri":
        raise UsageError(
            f"--uri names a server that already runs ({target.describe()}): serve-db serves "
            "the embedded store (--store DIR, MONGOLEDGER_STORE or the default) or --memory"
        )
    from mongoledger.memory import MemoryServer

    if target.kind == "memory":
        return MemoryServer(oplog_size=oplog_size)
    return _open_store(target, lambda path: MemoryServer(path=path, oplog_size=oplog_size), err)


def _open_store(target: Target, opener: Any, err: TextIO | None, prog: str = "mongoledger") -> Any:
    """``opener(directory)``, saying on ``err`` where the store is when it creates it."""
    directory = target.store
    assert directory is not None
    new = not directory.exists() or (directory.is_dir() and not any(directory.iterdir()))
    opened = opener(directory)
    if new:
        _announce(target, sys.stderr if err is None else err, prog)
    return opened


def _announce(target: Target, err: TextIO, prog: str) -> None:
    if target.default:
        err.write(
            f"{prog}: created the store {target.store} (the default: --store DIR or "
            "MONGOLEDGER_STORE picks another, --uri a MongoDB server)\n"
        )
    else:
        err.write(f"{prog}: created the store {target.store}\n")


def validate_db_name(name: Any, *, option: str = "--db") -> str:
    """A database name MongoDB accepts, or a ``UsageError`` naming it."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"{option} {name!r} is not a database name: give a non-empty name")
    bad = sorted({c for c in name if c in _DB_FORBIDDEN})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise UsageError(f"{option} {name!r} is not a database name: it contains {shown}")
    if len(name.encode()) > 63:
        raise UsageError(f"{option} {name!r} is not a database name: longer than 63 bytes")
    return name


def connect_server(
    uri: str | None, db_name: str, err: TextIO, *, appname: str, prog: str = "mongoledger"
) -> tuple[Any, Any]:
    """A connected ``(client, database)`` (``db_name``: as for :func:`connect`); see the module
    docstring for the messages."""
    from pymongo import MongoClient, uri_parser
    from pymongo.errors import ConfigurationError, PyMongoError, ServerSelectionTimeoutError

    uri = uri or DEFAULT_URI
    shown = redact(uri)
    options: dict[str, Any] = {"appname": appname}
    if "serverselectiontimeoutms" not in uri.lower():
        options["serverSelectionTimeoutMS"] = SERVER_SELECTION_MS
    try:
        if not uri.startswith("mongodb+srv://"):  # (an SRV URI is resolved by the client)
            uri_parser.parse_uri(uri, warn=False)  # unknown options are errors, not warnings
        client: Any = MongoClient(uri, **options)
    except (ConfigurationError, ValueError, TypeError) as exc:  # InvalidURI is a ConfigurationError
        raise UsageError(f"--uri {shown!r} is not a usable MongoDB URI: {one_line(exc)}") from None
    host = hosts_of(uri)
    notice = threading.Timer(NOTICE_AFTER, _write, (err, f"{prog}: connecting to {host}..."))
    notice.daemon = True
    notice.start()
    try:
        client.admin.command("ping")
    except ServerSelectionTimeoutError as exc:
        client.close()
        other = (
            "without one, commands use the embedded store"
            if prog == "mongoledger"
            else ("or --store DIR for the embedded store")
        )
        raise CannotConnect(
            f"cannot reach MongoDB at {host} ({_reason(exc, host)}); check --uri or "
            f"MONGOLEDGER_URI ({other})"
        ) from None
    except PyMongoError as exc:  # e.g. authentication failed
        client.close()
        raise CannotConnect(f"MongoDB at {host} refused the connection: {one_line(exc)}") from None
    finally:
        notice.cancel()
    return client, client[db_name]


def _write(err: TextIO, text: str) -> None:
    err.write(f"{text}\n")
    err.flush()


def _reason(exc: BaseException, host: str) -> str:
    """The useful part of a server-selection error: what each host answered."""
    text = _TIMEOUTS.sub("", one_line(exc)).split(", Timeout:", 1)[0]
    return text[len(host) + 2 :] if text.startswith(f"{host}: ") else text
