"""Where a ``mongoledger`` command keeps its data: a MongoDB server, the embedded store, or memory.

Every command that opens a database goes through :func:`resolve` (the choice) and
:func:`connect` / :func:`connect_async` (the client), so ``serve`` and ``serve-db`` choose the
same way:

1. ``--memory``: a fresh in-memory engine, empty at every start;
2. ``--uri URI`` or ``--store DIR`` on the command line (not both);
3. ``MONGOLEDGER_URI``, then ``MONGOLEDGER_STORE`` in the environment;
4. otherwise the embedded store in the per-user default directory (:func:`default_store`):
   ``$XDG_DATA_HOME/mongoledger/store`` (``~/.local/share/mongoledger/store``) on Linux,
   ``~/Library/Application Support/mongoledger/store`` on macOS,
   ``%LOCALAPPDATA%\\mongoledger\\store`` on Windows.

A store is created on first use, and the command says once on stderr where it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mongoledger.cli._values import UsageError

__all__ = [
    "Target",
    "add_connection_defaults",
    "connect",
    "connect_async",
    "default_store",
    "open_server",
    "resolve",
]

SERVER_SELECTION_MS = 10_000


@dataclass(frozen=True)
class Target:
    """What a command connects to: ``kind`` is "uri", "store" or "memory"."""

    kind: str
    uri: str | None = None
    store: Path | None = None
    default: bool = False  # the store is the per-user default one

    def describe(self) -> str:
        if self.kind == "uri":
            return f"MongoDB at {self.uri}"
        if self.kind == "store":
            return f"the store {self.store}"
        return "a fresh in-memory engine"


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


def add_connection_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Record the environment's say on the parser, so :func:`resolve` can rank it below the
    command line."""
    parser.set_defaults(
        env_uri=environ.get("MONGOLEDGER_URI") or None,
        env_store=environ.get("MONGOLEDGER_STORE") or None,
        default_store=str(default_store(environ)),
    )


def resolve(args: argparse.Namespace) -> Target:
    """The target the parsed arguments (and the environment they carry) choose."""
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
    env_uri = getattr(args, "env_uri", None)
    if env_uri:
        return Target("uri", uri=env_uri)
    env_store = getattr(args, "env_store", None)
    if env_store:
        return Target("store", store=_directory(env_store))
    fallback = getattr(args, "default_store", None) or str(default_store())
    return Target("store", store=_directory(fallback), default=True)


def _directory(text: str) -> Path:
    return Path(text).expanduser().absolute()


def _is_new(directory: Path) -> bool:
    return not directory.exists() or (directory.is_dir() and not any(directory.iterdir()))


def _announce(target: Target, err: TextIO | None) -> None:
    out = sys.stderr if err is None else err
    if target.default:
        out.write(
            f"mongoledger: created the store {target.store} (the default: --store DIR or "
            "MONGOLEDGER_STORE picks another, --uri a MongoDB server)\n"
        )
    else:
        out.write(f"mongoledger: created the store {target.store}\n")


def connect(target: Target, *, err: TextIO | None = None, appname: str = "mongoledger-cli") -> Any:
    """A sync client for ``target`` (PyMongo's ``MongoClient`` or a ``MemoryClient``)."""
    if target.kind == "memory":
        from mongoledger.memory import MemoryClient

        return MemoryClient()
    if target.kind == "store":
        from mongoledger.memory import MemoryClient

        assert target.store is not None
        new = _is_new(target.store)
        client = MemoryClient(path=target.store)
        if new:
            _announce(target, err)
        return client
    from pymongo import MongoClient

    assert target.uri is not None
    return MongoClient(target.uri, **_client_options(target.uri, appname))


def connect_async(
    target: Target, *, err: TextIO | None = None, appname: str = "mongoledger-cli"
) -> Any:
    """An async client for ``target`` (``AsyncMongoClient`` or an ``AsyncMemoryClient``)."""
    if target.kind in ("memory", "store"):
        from mongoledger.memory import AsyncMemoryClient

        if target.kind == "memory":
            return AsyncMemoryClient()
        assert target.store is not None
        new = _is_new(target.store)
        client = AsyncMemoryClient(path=target.store)
        if new:
            _announce(target, err)
        return client
    from pymongo import AsyncMongoClient

    assert target.uri is not None
    return AsyncMongoClient(target.uri, **_client_options(target.uri, appname))


def _client_options(uri: str, appname: str) -> dict[str, Any]:
    options: dict[str, Any] = {"appname": appname}
    if "serverselectiontimeoutms" not in uri.lower():
        options["serverSelectionTimeoutMS"] = SERVER_SELECTION_MS
    return options


def open_server(target: Target, *, err: TextIO | None = None) -> Any:
    """A ``MemoryServer`` for ``target`` (the store's, or an in-memory one) to serve over the
    wire protocol; a URI names a server that already runs."""
    if target.kind == "uri":
        raise UsageError(
            f"{target.describe()} is already a server: serve the embedded store "
            "(--store DIR, MONGOLEDGER_STORE or the default) or --memory"
        )
    from mongoledger.memory import MemoryServer

    if target.kind == "memory":
        return MemoryServer()
    assert target.store is not None
    new = _is_new(target.store)
    server = MemoryServer(path=target.store)
    if new:
        _announce(target, err)
    return server
