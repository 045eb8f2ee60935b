"""Where a command (``mongoledger``, the notifier) keeps its data, and connecting to it.

**The choice** (:func:`resolve`), the same for every command, so ``serve`` and ``serve-db``
choose as the others do:

1. ``--memory``: a fresh in-memory engine, empty at every start;
2. ``--uri URI`` or ``--store DIR`` on the command line (not both);
3. ``MONGOLEDGER_URI``, then ``MONGOLEDGER_STORE`` in the environment;
4. otherwise the embedded store in the per-user default directory (:func:`default_store`):
   ``$XDG_DATA_HOME/mongoledger/store`` (``~/.local/share/mongoledger/store``) on Linux,
   ``~/Library/Application Support/mongoledger/store`` on macOS,
   ``%LOCALAPPDATA%\\mongoledger\\store`` on Windows (a long-running consumer such as the
   notifier asks for a server there instead: ``mongodb://localhost:27017``).

A store is created on first use, and the command says once on stderr where it is.

**Connecting** (:func:`connect`): every mistake is one line that names the value: a bad
``--uri`` (syntax, port, options) or ``--db`` (:func:`validate_db_name`, which the caller runs
once, first) is a usage error (exit 2) before anything is sent;
a server selection that takes more than a moment prints ``connecting to HOST...`` on stderr
(TTY or not); an unreachable server ends with one line naming the host and the reason (exit 1);
a store that cannot be opened (in use by another process, damaged) says which and what to do.
The user's ``serverSelectionTimeoutMS`` is honoured; without it the wait is 10 s, not
PyMongo's 30 s.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mongoledger._format import one_line
from mongoledger._text import UsageError
from mongoledger.errors import LedgerError

__all__ = [
    "NOTICE_AFTER",
    "SERVER_SELECTION_MS",
    "CannotConnect",
    "Target",
    "add_connection_defaults",
    "connect",
    "connect_async",
    "connect_server",
    "default_store",
    "hosts_of",
    "open_server",
    "redact",
    "resolve",
    "validate_db_name",
]

SERVER_SELECTION_MS = 10_000
NOTICE_AFTER = 0.5  # seconds of waiting before "connecting to HOST..." is printed
DEFAULT_URI = "mongodb://localhost:27017"
# MongoDB refuses these in database names (on every platform); a name is under 64 bytes.
_DB_FORBIDDEN = '/\\. "$\x00'
_CREDENTIALS = re.compile(r"^(mongodb(?:\+srv)?://)([^@/]*)@")
_TIMEOUTS = re.compile(r" \(configured timeouts: [^)]*\)")


class CannotConnect(LedgerError):
    """The server could not be reached, or refused the connection (exit status 1)."""


# --------------------------------------------------------------------------- the choice


@dataclass(frozen=True)
class Target:
    """What a command connects to: ``kind`` is "uri", "store" or "memory"."""

    kind: str
    uri: str | None = None
    store: Path | None = None
    default: bool = False  # the store is the per-user default one

    def describe(self) -> str:
        if self.kind == "uri":
            return f"MongoDB at {hosts_of(self.uri or DEFAULT_URI)}"
        if self.kind == "store":
            return f"the store {self.store}"
        return "an in-memory engine"


def default_store(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The per-user default store directory (see the module docstring)."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform == "win32":
        base = Path(env["LOCALAPPDATA"]) if env.get("LOCALAPPDATA") else home / "AppData/Local"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        xdg = env.get("XDG_DATA_HOME")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "share"
    return base / "mongoledger" / "store"


def add_connection_defaults(
    parser: argparse.ArgumentParser, environ: Mapping[str, str], store: Path | None = None
) -> None:
    """Record the environment's say on the parser, so :func:`resolve` can rank it below the
    command line (``store``: :func:`default_store`, if already known)."""
    parser.set_defaults(
        env_uri=environ.get("MONGOLEDGER_URI") or None,
        env_store=environ.get("MONGOLEDGER_STORE") or None,
        default_store=str(default_store(environ) if store is None else store),
    )


def resolve(args: argparse.Namespace, *, fallback: str = "store", serving: bool = False) -> Target:
    """The target the parsed arguments (and the environment they carry) choose; without any
    choice, the default store (``fallback="uri"``: the local server). ``serving`` (serve-db,
    which serves a store or an engine) passes over ``MONGOLEDGER_URI``: that names where the
    other commands connect, possibly this very endpoint."""
    uri = getattr(args, "uri", None)
    store = getattr(args, "store", None)
    if getattr(args, "memory", False):
        if uri or store:
            given = "--uri" if uri else "--store"
            raise UsageError(f"--memory and {given} exclude each other: --memory keeps nothing")
        return Target("memory")
    if uri and store:
        raise UsageError(
            "--uri and --store exclude each other: --uri names a MongoDB server, "
            "--store a directory the embedded store keeps its data in"
        )
    if uri:
        return Target("uri", uri=uri)
    if store:
        return Target("store", store=_directory(store))
    env_uri = None if serving else getattr(args, "env_uri", None)
    if env_uri:
        return Target("uri", uri=env_uri)
    env_store = getattr(args, "env_store", None)
    if env_store:
        return Target("store", store=_directory(env_store))
    if fallback == "uri":
        return Target("uri", uri=DEFAULT_URI)
    chosen = getattr(args, "default_store", None) or str(default_store())
    return Target("store", store=_directory(chosen), default=True)


def _directory(text: str) -> Path:
    return Path(text).expanduser().absolute()


# --------------------------------------------------------------------------- connecting


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


def redact(uri: str) -> str:
    """The URI with its password hidden, fit for an error message."""
    match = _CREDENTIALS.match(uri)
    if match is None:
        return uri
    user = match.group(2).split(":", 1)[0]
    return f"{match.group(1)}{user}:***@{uri[match.end() :]}"


def hosts_of(uri: str) -> str:
    """The host list of a MongoDB URI (``db0:27017,db1``), for messages."""
    rest = _CREDENTIALS.sub(r"\1", uri).split("://", 1)[-1]
    return re.split(r"[/?]", rest, maxsplit=1)[0] or "localhost"


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
